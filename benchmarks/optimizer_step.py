"""Optimizer step time: each optimizer beside Keras Adam, AdamW and Lamb
(and, under JAX, optax's Adam and LAMB).

One XLA-compiled step per call on float32 variables, called as a user's
script calls it: under TensorFlow `tf.function(lambda grads:
optimizer.apply_gradients(zip(grads, variables)), jit_compile=True)`, the
optimizer built by its first call; under JAX (`KERAS_BACKEND=jax`)
`jax.jit(optimizer.stateless_apply)`, each step's new weights and state fed
to the next (`--harness=donated`: both donated, as Keras's JAX trainer does;
`jax_steps.py`). Rounds are interleaved across optimizers so machine noise
hits all alike; the median of the rounds is reported with their range, and
the ratio to Keras Adam is the median of the rounds' ratios (each measured
in the same round).

    python benchmarks/optimizer_step.py --variable_set=50x1M     # also 50x1M_1d: vectors
    python benchmarks/optimizer_step.py --variable_set=bert_base --rounds=5
    KERAS_BACKEND=jax python benchmarks/optimizer_step.py --variable_set=50x1M --rounds=15
    KERAS_BACKEND=jax python benchmarks/optimizer_step.py --harness=donated
    python benchmarks/optimizer_step.py --first_call   # trace + compile cost
    python benchmarks/optimizer_step.py --first_call --first_call_model=bert_large

Under JAX neither this script nor what it imports imports TensorFlow.
"""

import math
import multiprocessing
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from lamb.optimizers import registry  # noqa: E402

import throughput  # noqa: E402  (benchmarks/throughput.py)

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf
elif BACKEND == "jax":
    import jax

    import jax_steps  # benchmarks/jax_steps.py
else:
    raise SystemExit(f"optimizer_step.py: runs under KERAS_BACKEND=tensorflow or jax, not {BACKEND}")

FLAGS = flags.FLAGS
flags.DEFINE_enum("variable_set", "50x1M", ["50x1M", "50x1M_1d", "bert_base"],
                  "Shapes of the variables to update (50x1M: (1000, 1000) kernels; 50x1M_1d: "
                  "vectors of 1M, as flattened parameters are).")
flags.DEFINE_enum("harness", "user", ["user", "donated"],
                  "Under JAX: user: jax.jit(optimizer.stateless_apply), nothing donated; donated: the "
                  "weights and the state donated, as Keras's JAX trainer does. TensorFlow takes user only.")
flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds; the median is reported.")
flags.DEFINE_string("markdown", None, "Also append the table, in Markdown, to this file.")
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
OPTIMIZERS = ("adam", "keras_adamw", "keras_lamb", "lamb", "adamw", "lars", "lamb16", "lamb16_stochastic")
# Timed beside the registry's optimizers: (registry name, constructor keywords).
VARIANTS = {"lamb16_stochastic": ("lamb16", {"moment_rounding": "stochastic"})}
# Under JAX also optax's Adam and LAMB, configured to Keras Adam's and
# lamb.LAMB's math (`make_jax_step`).
OPTAX = ("optax_adam", "optax_lamb")
LABELS = {
    "adam": "Keras Adam", "keras_adamw": "Keras AdamW", "keras_lamb": "Keras Lamb",
    "lamb": "`lamb.LAMB`", "adamw": "`lamb.AdamWeightDecay`", "lars": "`lamb.LARS`",
    "lamb16": "`lamb.LAMB16`", "lamb16_stochastic": "`lamb.LAMB16`, v rounded stochastically",
    "optax_adam": "optax adam", "optax_lamb": "optax lamb",
}


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
    """`{name: [seconds per step, one per round]}` and `{name: optimizer
    state bytes}` of XLA-compiled `apply_gradients` under TensorFlow."""
    steps = {}
    for name, optimizer in optimizers.items():
        steps[name] = user_step(optimizer, variables)
        steps[name](gradients)  # build + trace + compile

    def wait(name):  # The last step's outputs are variables: read one back to wait for it.
        float(keras.ops.reshape(variables[0], (-1,))[0])

    samples = interleaved_rounds({name: lambda step=step: step(gradients) for name, step in steps.items()}, wait)
    return samples, {name: state_bytes(optimizer.variables) for name, optimizer in optimizers.items()}


def user_step(optimizer, variables):
    """`optimizer`'s XLA step over `variables` as a user writes it (the
    optimizer is built by the first call)."""
    return tf.function(lambda grads: optimizer.apply_gradients(zip(grads, variables)), jit_compile=True)


def make_jax_step(name, variables, donate=False):
    """`jax_steps.Step` of optimizer `name` over copies of `variables` (with
    `donate`, the weights and state donated): a
    registry optimizer as `throughput.make_optimizer` makes it, or optax's
    Adam / LAMB with the arguments and math of Keras Adam / lamb.LAMB there
    (learning rate 1e-3, weight decay 0.01 except on `BERT_EXCLUDE`)."""
    values = [v.value for v in variables]
    if name == "optax_adam":
        return jax_steps.optax_step(jax_steps.optax_adam(1e-3), values, donate)
    if name == "optax_lamb":
        transformation = jax_steps.optax_lamb(
            [v.path for v in variables], 1e-3, weight_decay=0.01,
            exclude_from_weight_decay=list(throughput.BERT_EXCLUDE))
        return jax_steps.optax_step(transformation, values, donate)
    return jax_steps.keras_step(make_optimizer(name), variables, donate)


def make_optimizer(name):
    """`throughput.make_optimizer(name)`, or that of a `VARIANTS` name."""
    registry_name, options = VARIANTS.get(name, (name, {}))
    return throughput.make_optimizer(registry_name, **options)


def time_steps_jax(names, variables, gradients):
    """As `time_steps`, under JAX: a jit-compiled step per optimizer (the
    weights and the state donated with `--harness=donated`); each round
    waits for its last step (`block_until_ready`)."""
    steps = {}
    for name in names:
        steps[name] = make_jax_step(name, variables, donate=FLAGS.harness == "donated")
        steps[name].run(gradients)  # trace + compile
        steps[name].wait()
    runs = {name: lambda step=step: step.run(gradients) for name, step in steps.items()}
    samples = interleaved_rounds(runs, lambda name: steps[name].wait())
    return samples, {name: step.state_bytes for name, step in steps.items()}


def interleaved_rounds(runs, wait):
    """`{name: [seconds per step of each round]}`: each round runs
    `--steps_per_round` steps of every optimizer in turn (`runs[name]()`,
    then `wait(name)` until the last is done)."""
    samples = {name: [] for name in runs}
    for _ in range(FLAGS.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps_per_round):
                run()
            wait(name)
            samples[name].append((time.perf_counter() - start) / FLAGS.steps_per_round)
    return samples


def state_bytes(variables):
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


def table_rows(samples, states, parameters, baseline="adam"):
    """Per optimizer: median step (s), fastest and slowest round, the median
    and range of the rounds' ratios to `baseline`'s step in the same round,
    and the bytes per parameter a step must at least read and write (every
    weight, gradient and state byte read once; every weight and state byte
    written once: float32 weights and gradients) with the rate they imply."""
    rows = []
    for name, times in samples.items():
        ratios = [t / b for t, b in zip(times, samples[baseline])] if baseline in samples else []
        state = states[name] / parameters
        reads, writes = 4 + 4 + state, 4 + state
        median = statistics.median(times)
        rows.append(dict(
            name=name, median=median, fastest=min(times), slowest=max(times),
            ratio=statistics.median(ratios) if ratios else None,
            ratio_range=(min(ratios), max(ratios)) if ratios else None,
            state=state, reads=reads, writes=writes,
            gb_per_s=(reads + writes) * parameters / median / 1e9,
        ))
    return rows


# (ours, peer): the median and range of the rounds' ratios of their steps.
PAIRS = (("lamb", "optax_lamb"), ("lamb", "keras_lamb"), ("lamb16", "lamb"),
         ("lamb16_stochastic", "lamb16"), ("lars", "adam"))


def pair_ratios(samples):
    """`[(ours, peer, median ratio, lowest, highest)]` of the rounds' ratios
    `ours / peer` (each in the same round) for the `PAIRS` both measured."""
    pairs = []
    for ours, peer in PAIRS:
        if ours in samples and peer in samples:
            ratios = [a / b for a, b in zip(samples[ours], samples[peer])]
            pairs.append((ours, peer, statistics.median(ratios), min(ratios), max(ratios)))
    return pairs


def print_table(rows):
    print(f"{'optimizer':<18} {'step (ms)':>10} {'fastest':>8} {'slowest':>8}  "
          f"{'ratio to adam (Keras)':>22} {'ratio range':>12}  {'B/param r+w':>11} {'GB/s':>6}")
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        spread = "{:.2f}-{:.2f}".format(*row["ratio_range"]) if row["ratio_range"] else "-"
        print(f"{row['name']:<18} {row['median'] * 1e3:10.2f} {row['fastest'] * 1e3:8.2f} "
              f"{row['slowest'] * 1e3:8.2f}  {ratio:>22} {spread:>12}  "
              f"{row['reads']:5.1f}+{row['writes']:<5.1f} {row['gb_per_s']:6.1f}")


def markdown_table(title, rows, pairs=()):
    lines = [f"### {title}", "",
             "| optimizer | step (ms), median | fastest-slowest round | ratio to Keras Adam | "
             "ratio range | state (B/param) | reads + writes (B/param) | GB/s at that traffic |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        spread = "{:.2f}-{:.2f}".format(*row["ratio_range"]) if row["ratio_range"] else "-"
        lines.append(
            f"| {LABELS.get(row['name'], row['name'])} | {row['median'] * 1e3:.2f} | "
            f"{row['fastest'] * 1e3:.2f}-{row['slowest'] * 1e3:.2f} | {ratio} | {spread} | "
            f"{row['state']:.2f} | {row['reads']:.2f} + {row['writes']:.2f} | {row['gb_per_s']:.1f} |")
    if pairs:
        lines += ["", "Same-round ratios (median, range): " + "; ".join(
            f"{LABELS[ours]} / {LABELS[peer]} {ratio:.2f} ({low:.2f}-{high:.2f})"
            for ours, peer, ratio, low, high in pairs)]
    return "\n".join(lines) + "\n\n"


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
    inside it, as in a custom training loop; under JAX just before it, as
    JAX needs), and the time of a later call."""
    rng = np.random.default_rng(0)
    variables = make_variables(shapes, rng)
    gradient_values = [rng.normal(size=v.shape).astype("float32") for v in variables]
    if BACKEND == "jax":
        gradients = [jax.numpy.asarray(g) for g in gradient_values]
        start = time.perf_counter()
        step = make_jax_step(name, variables, donate=True)
        step.run(gradients)
        step.wait()
        first = time.perf_counter() - start
        start = time.perf_counter()
        step.run(gradients)
        step.wait()
        return first, time.perf_counter() - start
    gradients = [tf.constant(g) for g in gradient_values]
    step = user_step(make_optimizer(name), variables)
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


def device_name():
    if BACKEND == "jax":
        return jax_steps.device_names()
    return ", ".join(sorted({d.device_type for d in tf.config.list_logical_devices()}))


def main(argv):
    del argv
    names = FLAGS.optimizers or list(OPTIMIZERS + (OPTAX if BACKEND == "jax" else ()))
    unknown = sorted(set(names) - set(OPTIMIZERS + OPTAX))
    if unknown or (BACKEND != "jax" and set(names) & set(OPTAX)):
        raise app.UsageError(f"--optimizers: unknown here: {', '.join(unknown or sorted(set(names) & set(OPTAX)))} "
                             f"(choose from {', '.join(OPTIMIZERS + (OPTAX if BACKEND == 'jax' else ()))})")
    if FLAGS.harness == "donated" and BACKEND != "jax":
        raise app.UsageError("--harness=donated: JAX only (run under KERAS_BACKEND=jax)")
    if FLAGS.first_call:
        if FLAGS.first_call_model == "bert_large":
            shapes = bert_shapes(layers=24, hidden=1024, intermediate=4096)
        else:
            shapes = dense_shapes(width=FLAGS.first_call_width)
        medians = first_call_medians(names, shapes, FLAGS.first_call_rounds)
        print(f"{FLAGS.first_call_model}: {len(shapes)} variables, median of {FLAGS.first_call_rounds} fresh "
              f"processes per optimizer ({BACKEND})")
        print("optimizer           first step (s)  later step (s)")
        for name, (first, later) in medians.items():
            print(f"{name:<18}  {first:14.2f}  {later:14.4f}")
        return
    rng = np.random.default_rng(0)
    shapes = variable_shapes(FLAGS.variable_set)
    variables = make_variables(shapes, rng)
    gradient_values = [rng.normal(scale=1e-3, size=v.shape).astype("float32") for v in variables]
    parameters = sum(int(np.prod(v.shape)) for v in variables)
    if BACKEND == "jax":
        gradients = [jax.numpy.asarray(g) for g in gradient_values]
        samples, states = time_steps_jax(names, variables, gradients)
    else:
        gradients = [tf.constant(g) for g in gradient_values]
        samples, states = time_steps({name: make_optimizer(name) for name in names}, variables, gradients)
    rows = table_rows(samples, states, parameters)
    title = (f"{FLAGS.variable_set}: {len(variables)} variables, {parameters / 1e6:.1f}M parameters, "
             f"{BACKEND} on {device_name()}, {FLAGS.harness} harness, median of {FLAGS.rounds} rounds x "
             f"{FLAGS.steps_per_round} steps")
    pairs = pair_ratios(samples)
    print(f"lamb imported from {os.path.dirname(registry.__file__)}")
    print(title)
    print_table(rows)
    for ours, peer, ratio, low, high in pairs:
        print(f"{ours} / {peer}: {ratio:.2f} ({low:.2f}-{high:.2f}), same-round ratios")
    if FLAGS.markdown:
        with open(FLAGS.markdown, "a", encoding="utf-8") as file:
            file.write(markdown_table(title, rows, pairs))


if __name__ == "__main__":
    app.run(main)
