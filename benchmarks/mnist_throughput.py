"""Training throughput of an MNIST model with LAMB and with Keras AdamW, side by side.

One model per optimizer, built with the same initialization and trained on the
same fixed batch of MNIST-shaped inputs; the timed rounds alternate between the
optimizers so that load on the machine affects all alike. Prints examples per
second (median over rounds) and each optimizer's ratio to the first.

    python benchmarks/mnist_throughput.py --model=cnn
    python benchmarks/mnist_throughput.py --model=mlp --batch_size=8192
"""

import os
import platform

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from lamb.models import mnist as mnist_models  # noqa: E402
import throughput  # noqa: E402  (benchmarks/throughput.py)

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "cnn", list(mnist_models.MODELS), "Model of `lamb.models.mnist`.")
flags.DEFINE_integer("batch_size", 1024, "Examples per step.")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per optimizer (alternating).")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the training step.")
flags.DEFINE_list(
    "optimizers", ["keras_adamw", "lamb", "adamw"],
    "Optimizers to compare (names of lamb.optimizers.registry); ratios are to the first.",
)


def build(optimizer_name):
    keras.utils.set_random_seed(0)
    model = mnist_models.build_model(FLAGS.model)
    model.compile(
        optimizer=throughput.make_optimizer(optimizer_name, ["bias"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=FLAGS.jit_compile,
    )
    return model


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    x = rng.random((FLAGS.batch_size, *mnist_models.IMAGE_SHAPE), dtype=np.float32)
    y = rng.integers(0, 10, FLAGS.batch_size)
    models = {name: build(name) for name in FLAGS.optimizers}
    rates = throughput.examples_per_second(
        models, x, y, FLAGS.batch_size, FLAGS.steps, FLAGS.rounds
    )
    print(
        f"MNIST {FLAGS.model}: batch {FLAGS.batch_size}, jit_compile={FLAGS.jit_compile}, "
        f"{FLAGS.rounds} rounds x {FLAGS.steps} steps; Keras {keras.__version__} "
        f"({keras.backend.backend()}), {platform.processor() or platform.machine()}"
    )
    throughput.print_rates(rates, reference=FLAGS.optimizers[0])

if __name__ == "__main__":
    app.run(main)
