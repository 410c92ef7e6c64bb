"""One row of LAMB16's second moment after a gradient spike, against float32.

    python benchmarks/lamb16_row_drift.py

A row of `--row_size` entries, each with its own gradient scale (log-normal
around 1e-3), takes `--steps` steps of v = β2·v + (1 − β2)·g² (β2 = 0.999);
at step `--spike_step` the first entry's gradient is `--spike` times its
scale. v is kept three ways: in float32, and as LAMB16 stores it (e5m2 codes
and the row's absmax scale, `lamb.optimizers.float8.quantize`) with either
`moment_rounding`: to nearest, or stochastically (up with the probability of
the value's position between the codes below and above, with the step's
`rounding_bits`). Prints, for the other entries, the fraction whose stored v
is below half of the float32 one (their r = m̂ / (√v̂ + ε) more than √2 too
large) and the median of float32 v / stored v, at a few steps.
"""

from absl import app, flags
import numpy as np
from keras import ops

from lamb.optimizers.float8 import E5M2, dequantize, quantize, rounding_bits

FLAGS = flags.FLAGS
flags.DEFINE_integer("row_size", 256, "Entries in the row.")
flags.DEFINE_integer("steps", 2000, "Steps.")
flags.DEFINE_integer("spike_step", 300, "The step of the spike.")
flags.DEFINE_float("spike", 1e5, "The spiked gradient, in multiples of its entry's scale.")
flags.DEFINE_integer("seed", 0, "Seed of the scales and the gradients.")

BETA_2 = np.float32(0.999)


def lamb16_storage(v, step=None):
    """v as LAMB16 stores it: rounded to nearest, or stochastically with the
    random bits of `step`."""
    bits = None if step is None else rounding_bits((1, v.size), ops.convert_to_tensor(step), 0)
    codes, scales = quantize(v[None], E5M2, keep_nonzero=True, per_row=True, random_bits=bits)
    return ops.convert_to_numpy(dequantize(codes, scales[:, None], E5M2))[0]


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
        stochastic = lamb16_storage(stochastic + (square - stochastic) * (1 - BETA_2), step)
        if step in reported:
            for name, stored in (("nearest", nearest), ("stochastic", stochastic)):
                ratio = v32[1:] / stored[1:]
                print(f"| {step} | {name} | {np.mean(ratio > 2):.3f} | {np.median(ratio):.2f} |")


if __name__ == "__main__":
    app.run(main)
