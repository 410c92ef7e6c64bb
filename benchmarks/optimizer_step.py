"""Optimizer step time: each optimizer beside Keras Adam, AdamW and Lamb.

One XLA-compiled `apply_gradients` per step on float32 variables; rounds are
interleaved across optimizers so machine noise hits all alike; the median of
the rounds is reported, with its ratio to Keras Adam measured in the same run.

    python benchmarks/optimizer_step.py --variable_set=50x1M     # also 50x1M_1d: vectors
    python benchmarks/optimizer_step.py --variable_set=bert_base --rounds=5
    python benchmarks/optimizer_step.py --first_call   # trace + compile cost
    python benchmarks/optimizer_step.py --first_call --first_call_model=bert_large
"""

import multiprocessing
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import throughput  # noqa: E402  (benchmarks/throughput.py)

FLAGS = flags.FLAGS
flags.DEFINE_enum("variable_set", "50x1M", ["50x1M", "50x1M_1d", "bert_base"],
                  "Shapes of the variables to update (50x1M: (1000, 1000) kernels; 50x1M_1d: "
                  "vectors of 1M, as flattened parameters are).")
flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds; the median is reported.")
flags.DEFINE_integer("steps_per_round", 10, "Optimizer steps timed per round.")
flags.DEFINE_list("optimizers", None, "Subset of optimizers to time (default: all).")
flags.DEFINE_bool("first_call", False, "Measure first-step trace + compile time on a ~400-variable model instead.")
flags.DEFINE_enum("first_call_model", "dense", ["dense", "bert_large"],
                  "--first_call model: 100 dense layers with LayerNorm (400 variables), or BERT-Large's 391 "
                  "variables with their shapes (335M parameters).")
flags.DEFINE_integer("first_call_rounds", 3, "--first_call: fresh processes per optimizer, in alternating "
                     "order; the median is reported.")
flags.DEFINE_integer("first_call_width", 64, "Width of the dense --first_call model's layers (256: kernels of "
                     "65,536 elements, which get the restructured XLA step).")

# In this order (Keras's Adam first: the baseline of the ratios).
OPTIMIZERS = ("adam", "keras_adamw", "keras_lamb", "lamb", "adamw", "lars", "lamb16")


def bert_shapes(layers=12, hidden=768, intermediate=3072, vocab=30522, positions=512):
    """(path, shape) of BERT's parameters, with its variable names (default:
    BERT-Base's 110M)."""
    shapes = [
        ("embeddings/word_embeddings", (vocab, hidden)),
        ("embeddings/position_embeddings", (positions, hidden)),
        ("embeddings/token_type_embeddings", (2, hidden)),
        ("embeddings/LayerNorm/gamma", (hidden,)),
        ("embeddings/LayerNorm/beta", (hidden,)),
    ]
    for i in range(layers):
        prefix = f"encoder/layer_{i}"
        for name in ("query", "key", "value", "attention_output"):
            shapes += [(f"{prefix}/{name}/kernel", (hidden, hidden)), (f"{prefix}/{name}/bias", (hidden,))]
        shapes += [
            (f"{prefix}/attention_LayerNorm/gamma", (hidden,)),
            (f"{prefix}/attention_LayerNorm/beta", (hidden,)),
            (f"{prefix}/intermediate/kernel", (hidden, intermediate)),
            (f"{prefix}/intermediate/bias", (intermediate,)),
            (f"{prefix}/output/kernel", (intermediate, hidden)),
            (f"{prefix}/output/bias", (hidden,)),
            (f"{prefix}/output_LayerNorm/gamma", (hidden,)),
            (f"{prefix}/output_LayerNorm/beta", (hidden,)),
        ]
    shapes += [("pooler/kernel", (hidden, hidden)), ("pooler/bias", (hidden,))]
    return shapes


def variable_shapes(variable_set):
    if variable_set == "50x1M":
        return [(f"layer_{i}/kernel", (1000, 1000)) for i in range(50)]
    if variable_set == "50x1M_1d":
        return [(f"layer_{i}/flat", (1_000_000,)) for i in range(50)]
    return bert_shapes()


def make_variables(shapes, rng):
    variables = []
    for path, shape in shapes:
        *scopes, name = path.split("/")
        with keras.name_scope(scopes[0] if scopes else "root"):
            # Nested scopes would give the full path; one level suffices for
            # the exclusion lists used here (LayerNorm, bias).
            variables.append(keras.Variable(
                rng.normal(scale=0.02, size=shape).astype("float32"), name="_".join(scopes[1:] + [name])))
    return variables


def time_steps(optimizers, variables, gradients):
    steps = {}
    for name, optimizer in optimizers.items():
        optimizer.build(variables)

        @tf.function(jit_compile=True)
        def step(grads, optimizer=optimizer):
            optimizer.apply_gradients(zip(grads, variables))

        step(gradients)  # trace + compile
        steps[name] = step
    samples = {name: [] for name in optimizers}
    for _ in range(FLAGS.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps_per_round):
                step(gradients)
            # The last step's outputs are variables: read one back to wait for it.
            float(keras.ops.reshape(variables[0], (-1,))[0])
            samples[name].append((time.perf_counter() - start) / FLAGS.steps_per_round)
    return {name: statistics.median(times) for name, times in samples.items()}


def dense_shapes(num_layers=100, width=64):
    """A Dense kernel and bias and a LayerNorm gamma and beta per layer: with
    100 layers, about as many variables as a 24-layer BERT-Large."""
    shapes = []
    for i in range(num_layers):
        shapes += [(f"layer_{i}/dense/kernel", (width, width)), (f"layer_{i}/dense/bias", (width,)),
                   (f"layer_{i}/LayerNorm/gamma", (width,)), (f"layer_{i}/LayerNorm/beta", (width,))]
    return shapes


def first_call_seconds(name, shapes):
    """Trace + compile + run time of the first XLA-compiled `apply_gradients`
    of optimizer `name` over variables of `shapes` (the optimizer is built
    inside it, as in a custom training loop), and the time of a later call."""
    rng = np.random.default_rng(0)
    variables = make_variables(shapes, rng)
    gradients = [tf.constant(rng.normal(size=v.shape).astype("float32")) for v in variables]
    optimizer = throughput.make_optimizer(name)

    @tf.function(jit_compile=True)
    def step(grads):
        optimizer.apply_gradients(zip(grads, variables))

    start = time.perf_counter()
    step(gradients)
    first = time.perf_counter() - start
    start = time.perf_counter()
    step(gradients)
    float(variables[0][0, 0])
    return first, time.perf_counter() - start


def first_call_medians(names, shapes, rounds):
    """{name: (median first call, median later call)}, each call in a fresh
    process (in one process, the second optimizer measured is slowed by the
    first's memory and sped up by its one-time initializations); the order
    of the optimizers alternates between rounds."""
    samples = {name: [] for name in names}
    context = multiprocessing.get_context("spawn")
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            with context.Pool(1) as pool:
                samples[name].append(pool.apply(first_call_seconds, (name, shapes)))
    return {
        name: tuple(statistics.median(column) for column in zip(*times))
        for name, times in samples.items()
    }


def main(argv):
    del argv
    names = FLAGS.optimizers or list(OPTIMIZERS)
    if FLAGS.first_call:
        if FLAGS.first_call_model == "bert_large":
            shapes = bert_shapes(layers=24, hidden=1024, intermediate=4096)
        else:
            shapes = dense_shapes(width=FLAGS.first_call_width)
        medians = first_call_medians(names, shapes, FLAGS.first_call_rounds)
        print(f"{FLAGS.first_call_model}: {len(shapes)} variables, median of {FLAGS.first_call_rounds} fresh "
              "processes per optimizer")
        print("optimizer           first step (s)  later step (s)")
        for name, (first, later) in medians.items():
            print(f"{name:<18}  {first:14.2f}  {later:14.4f}")
        return
    rng = np.random.default_rng(0)
    shapes = variable_shapes(FLAGS.variable_set)
    variables = make_variables(shapes, rng)
    gradients = [tf.constant(rng.normal(scale=1e-3, size=v.shape).astype("float32")) for v in variables]
    parameters = sum(int(np.prod(v.shape)) for v in variables)
    medians = time_steps({name: throughput.make_optimizer(name) for name in names}, variables, gradients)
    baseline = medians.get("adam")
    print(f"{FLAGS.variable_set}: {len(variables)} variables, {parameters / 1e6:.1f}M parameters, "
          f"median of {FLAGS.rounds} rounds x {FLAGS.steps_per_round} steps")
    print("optimizer           step (ms)  ratio to adam (Keras)")
    for name, seconds in medians.items():
        ratio = f"{seconds / baseline:.2f}" if baseline else "-"
        print(f"{name:<18}  {seconds * 1e3:9.2f}  {ratio}")


if __name__ == "__main__":
    app.run(main)
