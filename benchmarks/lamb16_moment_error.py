"""LAMB16's 8-bit moments against float32 moments of the same gradients, step by step.

    python benchmarks/lamb16_moment_error.py --learning_rate=0.08 --seed=1

Trains the MNIST MLP (`lamb.models.mnist`) with `--optimizer` (LAMB16, with
either moment rounding, or LAMB) at batch 1024 with BERT's schedule (linear warmup over the first epoch,
linear decay to 0; weight decay 0.01 except on biases; 10 epochs), the
settings of `lamb16_mnist_accuracy.py --decay` (with its own data order),
and keeps beside it float32 m and v
of every kernel that LAMB16 stores in 8 bits, updated with the same
gradients. After every step it records the loss and, per kernel, the
gradient norm, the weight norm and the trust ratio; for LAMB16 also how far
its stored moments (decoded with ml_dtypes, not the package's codec) are from
the float32 ones:

- `cosine`, `norm_ratio`: cos(r16, r32) and ‖r16‖ / ‖r32‖ of LAMB's
  direction r = m̂ / (√v̂ + ε) from either pair of moments;
- `v_below_half`, `v_above_2`: the fractions of the entries with float32
  v > 0 whose stored v is below half of it (r more than √2 too large) or
  above twice it;
- `v_floor`: the fraction of those whose stored v sits at e5m2's smallest
  subnormal times the row's scale (where LAMB16 keeps values that would
  round to 0);
- `m_zero`: the fraction of the entries with float32 m ≠ 0 whose stored m is 0;
- `v_max`: the largest float32 v (a gradient spike raises it, and with it
  its row's scale).

Prints every `--print_every`-th step's record and the test accuracy after
each epoch, writes every step's record to `--output_csv`, and ends with one
line (`summary`): the spike (the loss's first return above its first step's
value after it had halved), the steps in which a kernel's gradient is
exactly 0 (every ReLU of a layer dead), and for LAMB16 the extremes of the
moment errors before the spike, from it to the first zero gradient, and over
the run.
"""

import csv
import math
import os
import time

from absl import app, flags
import keras
import ml_dtypes
import numpy as np
import tensorflow as tf

from lamb.models import mnist as mnist_models
from lamb16_mnist_setup import load_data, make_optimizer

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "optimizer", "lamb16", ["lamb16", "lamb16_nearest", "lamb16_stochastic", "lamb"],
    "The optimizer that trains (`lamb16_mnist_setup.OPTIMIZERS`).",
)
flags.DEFINE_integer("seed", 1, "Seed of initialization and data order.")
flags.DEFINE_integer("batch_size", 1024, "Batch size.")
flags.DEFINE_float("learning_rate", 0.08, "Peak learning rate.")
flags.DEFINE_float("weight_decay", 0.01, "Weight decay (not on biases).")
flags.DEFINE_integer("epochs", 10, "Epochs.")
flags.DEFINE_integer("print_every", 10, "Print every this many steps.")
flags.DEFINE_string(
    "mnist_manual_dir", os.environ.get("MNIST_MANUAL_DIR"),
    "Directory with the MNIST IDX .gz files (default $MNIST_MANUAL_DIR; download if unset).",
)
flags.DEFINE_string("output_csv", "results/lamb16_moment_error.csv", "Every step's record.")

MOMENT_FIELDS = ("cosine", "norm_ratio", "v_below_half", "v_above_2", "v_floor", "m_zero", "v_max")
MIN_8BIT_SIZE = 4096  # LAMB16's min_8bit_size: the MLP's three hidden kernels
E5M2_SMALLEST_SUBNORMAL = 2.0**-16


def decode(codes, scales, dtype):
    """Stored moments: the codes as float8 `dtype` times their row's scale."""
    values = codes.view(dtype).astype(np.float32)
    return values * scales.reshape(scales.shape + (1,) * (codes.ndim - scales.ndim)), values


def moment_error(m16, v16, v16_normalized, m32, v32, step, epsilon=1e-6, beta_1=0.9, beta_2=0.999):
    """The `MOMENT_FIELDS` of stored moments (m16, v16; v16 also divided by
    its scales) against float32 ones, after `step` steps."""
    m_correction, v_correction = 1 - beta_1**step, 1 - beta_2**step
    r16 = (m16 / m_correction) / (np.sqrt(v16 / v_correction) + epsilon)
    r32 = (m32 / m_correction) / (np.sqrt(v32 / v_correction) + epsilon)
    norm16, norm32 = np.linalg.norm(r16), np.linalg.norm(r32)
    positive = v32 > 0
    nonzero_m = m32 != 0
    return dict(
        cosine=float(np.sum(r16 * r32) / (norm16 * norm32)) if norm16 * norm32 > 0 else 1.0,
        norm_ratio=float(norm16 / norm32) if norm32 > 0 else 1.0,
        v_below_half=float(np.mean(v16[positive] < 0.5 * v32[positive])) if positive.any() else 0.0,
        v_above_2=float(np.mean(v16[positive] > 2.0 * v32[positive])) if positive.any() else 0.0,
        v_floor=(
            float(np.mean(v16_normalized[positive] == E5M2_SMALLEST_SUBNORMAL))
            if positive.any() else 0.0
        ),
        m_zero=float(np.mean(m16[nonzero_m] == 0)) if nonzero_m.any() else 0.0,
        v_max=float(v32.max()),
    )


def summary(rows, layers):
    """One line: the spike (the loss's first return above its first step's
    value after it had halved), the loss's peak, the steps with a zero kernel
    gradient (every ReLU of a layer dead), and for LAMB16 the moment errors'
    extremes before the spike, from the spike to the first zero gradient,
    and over the run."""
    first_loss = rows[0]["loss"]
    halved = next((r["step"] for r in rows if r["loss"] < first_loss / 2), math.inf)
    spike = next((r["step"] for r in rows if r["step"] > halved and r["loss"] > first_loss), None)
    peak = max(rows, key=lambda r: r["loss"])
    dead = [r["step"] for r in rows if any(r[f"{k}_gradient_norm"] == 0 for k in layers)]
    text = (
        f"spike (loss above the first step's {first_loss:.3g}) at step {spike}, peak loss "
        f"{peak['loss']:.3g} at step {peak['step']}; a kernel's gradient exactly 0 in "
        f"{len(dead)} of {len(rows)} steps (first: {dead[0] if dead else None})"
    )
    if f"{layers[0]}_cosine" not in rows[0]:
        return text
    spike, first_dead = spike or math.inf, dead[0] if dead else math.inf
    phases = {
        "before the spike": [r for r in rows if r["step"] < spike],
        "from the spike to the first zero gradient": [
            r for r in rows if spike <= r["step"] < first_dead
        ],
        "over the run": rows,
    }
    for name, part in phases.items():
        if not part:
            continue

        def extreme(field, pick, part=part):
            return pick(r[f"{k}_{field}"] for r in part for k in layers)

        text += (
            f"; {name}: cosine >= {extreme('cosine', min):.3f}, norm_ratio "
            f"{extreme('norm_ratio', min):.3f}-{extreme('norm_ratio', max):.3f}, v_below_half <= "
            f"{extreme('v_below_half', max):.2g}, v_above_2 <= {extreme('v_above_2', max):.2g}, "
            f"v_floor <= {extreme('v_floor', max):.2g}, m_zero <= {extreme('m_zero', max):.2g}, "
            f"v_max <= {extreme('v_max', max):.2g}"
        )
    return text


def main(argv):
    del argv
    (x_train, y_train), (x_test, y_test) = load_data(FLAGS.mnist_manual_dir)
    steps_per_epoch = math.ceil(len(x_train) / FLAGS.batch_size)
    keras.utils.set_random_seed(FLAGS.seed)
    model = mnist_models.build_model("mlp")
    optimizer = make_optimizer(
        FLAGS.optimizer, FLAGS.learning_rate, FLAGS.weight_decay, True, FLAGS.epochs,
        len(x_train), FLAGS.batch_size,
    )
    is_lamb16 = FLAGS.optimizer.startswith("lamb16")
    variables = model.trainable_variables
    optimizer.build(variables)
    kernels = [  # the variables LAMB16 keeps in 8 bits
        i for i, v in enumerate(variables) if math.prod(v.shape) >= MIN_8BIT_SIZE
    ]
    layers = [variables[i].path.split("/")[-2] for i in kernels]
    m32 = {i: np.zeros(variables[i].shape, np.float32) for i in kernels}
    v32 = {i: np.zeros(variables[i].shape, np.float32) for i in kernels}
    state = {v.name: v for v in optimizer.variables}
    loss_function = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=True)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_function(labels, model(images, training=True))
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss, [gradients[i] for i in kernels]

    def stored_moments(path):
        prefix = path.replace("/", "_")
        scales = state[prefix + "_moment_scales"].numpy()
        m16, _ = decode(state[prefix + "_momentum"].numpy(), scales[0], ml_dtypes.float8_e4m3fn)
        v16, v16_normalized = decode(
            state[prefix + "_velocity"].numpy(), scales[1], ml_dtypes.float8_e5m2
        )
        return m16, v16, v16_normalized

    rows = []
    rng = np.random.default_rng(FLAGS.seed)
    start = time.perf_counter()
    for epoch in range(1, FLAGS.epochs + 1):
        order = rng.permutation(len(x_train))
        for batch in range(steps_per_epoch):
            chosen = order[batch * FLAGS.batch_size:(batch + 1) * FLAGS.batch_size]
            learning_rate = float(optimizer.learning_rate)
            loss, gradients = train_step(x_train[chosen], y_train[chosen])
            step = int(optimizer.iterations)
            statistics = optimizer.layer_statistics()
            row = dict(step=step, epoch=epoch, learning_rate=learning_rate, loss=float(loss))
            for i, layer, gradient in zip(kernels, layers, gradients):
                gradient = gradient.numpy()
                m32[i] += (gradient - m32[i]) * np.float32(1 - optimizer.beta_1)
                v32[i] += (gradient * gradient - v32[i]) * np.float32(1 - optimizer.beta_2)
                weight_norm, _, trust_ratio = statistics[variables[i].path]
                row[f"{layer}_gradient_norm"] = float(np.linalg.norm(gradient))
                row[f"{layer}_weight_norm"] = weight_norm
                row[f"{layer}_trust_ratio"] = trust_ratio
                if is_lamb16:
                    errors = moment_error(*stored_moments(variables[i].path), m32[i], v32[i], step)
                    row.update({f"{layer}_{name}": value for name, value in errors.items()})
            rows.append(row)
            if step % FLAGS.print_every == 0:
                print(" ".join(f"{k}={v:.3g}" for k, v in row.items()), flush=True)
        logits = model.predict(x_test, batch_size=1000, verbose=0)
        accuracy = np.mean(np.argmax(logits, axis=-1) == y_test)
        print(
            f"epoch {epoch}: test accuracy {100 * accuracy:.2f}% "
            f"({time.perf_counter() - start:.0f} s)", flush=True,
        )
    os.makedirs(os.path.dirname(FLAGS.output_csv) or ".", exist_ok=True)
    with open(FLAGS.output_csv, "w", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"{FLAGS.optimizer}, learning rate {FLAGS.learning_rate}, seed {FLAGS.seed}: test accuracy "
        f"{100 * accuracy:.2f}%; {summary(rows, layers)}"
    )


if __name__ == "__main__":
    app.run(main)
