"""One row of LAMB16's second moment after a gradient spike, against float32.

    python benchmarks/lamb16_row_drift.py

A row of `--row_size` entries, each with its own gradient scale (log-normal
around 1e-3), takes `--steps` steps of v = β2·v + (1 − β2)·g² (β2 = 0.999);
at step `--spike_step` the first entry's gradient is `--spike` times its
scale. v is kept three ways: in float32; as LAMB16 stores it (e5m2 codes and
the row's absmax scale, `lamb.optimizers.float8.quantize`, rounding to
nearest); and with the same codes rounded stochastically (up with the
probability of the value's distance from the code below: a NumPy model, not
in the package). Prints, for the other entries, the fraction whose stored v
is below half of the float32 one (their r = m̂ / (√v̂ + ε) more than √2 too
large) and the median of float32 v / stored v, at a few steps.
"""

from absl import app, flags
import ml_dtypes
import numpy as np
from keras import ops

from lamb.optimizers.float8 import E5M2, dequantize, quantize

FLAGS = flags.FLAGS
flags.DEFINE_integer("row_size", 256, "Entries in the row.")
flags.DEFINE_integer("steps", 2000, "Steps.")
flags.DEFINE_integer("spike_step", 300, "The step of the spike.")
flags.DEFINE_float("spike", 1e5, "The spiked gradient, in multiples of its entry's scale.")
flags.DEFINE_integer("seed", 0, "Seed of the scales and the gradients.")

BETA_2 = np.float32(0.999)
E5M2_CODES = np.arange(0x7C, dtype=np.uint8).view(ml_dtypes.float8_e5m2).astype(np.float32)


def lamb16_storage(v):
    codes, scales = quantize(v[None], E5M2, keep_nonzero=True, per_row=True)
    return ops.convert_to_numpy(dequantize(codes, scales[:, None], E5M2))[0]


def stochastic_storage(v, rng):
    """e5m2 codes of v / scale (absmax scale), rounded up with probability
    (x − below) / (above − below); positive values never to 0."""
    scale = np.maximum(v.max() / E5M2.max_value, np.float32(2.0**-126))
    x = v / scale
    above_index = np.minimum(np.searchsorted(E5M2_CODES, x), len(E5M2_CODES) - 1)
    above = E5M2_CODES[above_index]
    below = E5M2_CODES[np.maximum(above_index - 1, 0)]
    below = np.where(above == x, above, below)
    up = rng.uniform(size=x.shape) * (above - below) < x - below
    stored = np.where(up, above, below)
    stored = np.where((x > 0) & (stored == 0), E5M2.smallest_subnormal, stored)
    return (stored * scale).astype(np.float32)


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    scales = (1e-3 * np.exp(rng.normal(size=FLAGS.row_size))).astype(np.float32)
    v32, nearest, stochastic = (np.zeros(FLAGS.row_size, np.float32) for _ in range(3))
    reported = sorted({FLAGS.spike_step - 1, FLAGS.spike_step + 100, FLAGS.spike_step + 300,
                       FLAGS.spike_step + 700, FLAGS.steps})
    print("| step | rounding | v below half of float32's | median float32 v / stored v |")
    print("|---:|---|---:|---:|")
    for step in range(1, FLAGS.steps + 1):
        gradient = scales * rng.normal(size=FLAGS.row_size).astype(np.float32)
        if step == FLAGS.spike_step:
            gradient[0] = FLAGS.spike * scales[0]
        square = gradient * gradient
        v32 = v32 + (square - v32) * (1 - BETA_2)
        nearest = lamb16_storage(nearest + (square - nearest) * (1 - BETA_2))
        stochastic = stochastic_storage(stochastic + (square - stochastic) * (1 - BETA_2), rng)
        if step in reported:
            for name, stored in (("nearest (LAMB16)", nearest), ("stochastic", stochastic)):
                ratio = v32[1:] / stored[1:]
                print(f"| {step} | {name} | {np.mean(ratio > 2):.3f} | {np.median(ratio):.2f} |")


if __name__ == "__main__":
    app.run(main)
