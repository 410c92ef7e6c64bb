"""Step time of `model.fit` with each optimizer beside Keras Adam's, on a
model of large Dense layers (kernels of 1M parameters, which take the
optimizers' CPU fast paths), compiled as users compile it: Keras's default
`jit_compile="auto"` (XLA under JAX, and under TensorFlow with an
accelerator; not under TensorFlow on CPUs). Each optimizer trains its own
copy of the model; rounds are interleaved across optimizers, and the ratio
to Keras Adam is the median of the rounds' ratios (each in the same round).

    python benchmarks/fit_step.py --rounds=7
    python benchmarks/fit_step.py --jit_compile=true   # TensorFlow on CPU with XLA
    KERAS_BACKEND=jax python benchmarks/fit_step.py --rounds=7
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import throughput  # noqa: E402  (benchmarks/throughput.py)

FLAGS = flags.FLAGS
flags.DEFINE_list("optimizers", ["adam", "keras_lamb", "lamb", "lars", "adamw"],
                  "Optimizers to time (registry names; adam, Keras's, is the baseline).")
flags.DEFINE_integer("layers", 8, "Dense layers of width --width.")
flags.DEFINE_integer("width", 1024, "Width of the Dense layers (1024: kernels of 1M parameters).")
flags.DEFINE_integer("batch_size", 32, "Examples per step.")
flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds; the median is reported.")
flags.DEFINE_integer("steps_per_round", 10, "Steps of one `fit` call per optimizer and round.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "`model.compile(jit_compile=...)`.")


def make_model(optimizer):
    """The Dense stack (the same initial weights for every optimizer), compiled."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((FLAGS.width,))]
        + [keras.layers.Dense(FLAGS.width, activation="relu") for _ in range(FLAGS.layers)]
        + [keras.layers.Dense(10)]
    )
    jit_compile = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    return model


def main(argv):
    del argv
    if FLAGS.optimizers[0] != "adam":
        raise app.UsageError(f"--optimizers must start with adam (the baseline); received {FLAGS.optimizers}")
    rng = np.random.default_rng(0)
    examples = FLAGS.batch_size * FLAGS.steps_per_round
    x = rng.normal(size=(examples, FLAGS.width)).astype("float32")
    y = rng.normal(size=(examples, 10)).astype("float32")
    models = {name: make_model(throughput.make_optimizer(name)) for name in FLAGS.optimizers}
    for model in models.values():  # build + trace + compile
        model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0)
    samples = {name: [] for name in models}
    for _ in range(FLAGS.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=FLAGS.batch_size, epochs=1, verbose=0)
            samples[name].append((time.perf_counter() - start) / FLAGS.steps_per_round)
    print(f"fit: {FLAGS.layers} x Dense({FLAGS.width}), batch {FLAGS.batch_size}, {keras.backend.backend()}, "
          f"jit_compile={models['adam'].jit_compile}, median of {FLAGS.rounds} rounds x "
          f"{FLAGS.steps_per_round} steps")
    print(f"{'optimizer':<12} {'step (ms)':>10} {'fastest':>8} {'slowest':>8}  {'ratio to adam':>13} {'range':>10}")
    for name, times in samples.items():
        ratios = [t / b for t, b in zip(times, samples["adam"])]
        print(f"{name:<12} {statistics.median(times) * 1e3:10.2f} {min(times) * 1e3:8.2f} "
              f"{max(times) * 1e3:8.2f}  {statistics.median(ratios):13.2f} "
              f"{min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    app.run(main)
