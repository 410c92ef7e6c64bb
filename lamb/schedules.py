"""Learning-rate schedules for large-batch training.

- `WarmupPolynomialDecay`: BERT's linear warmup + polynomial decay.
- `MultiPhaseSchedule`: the LAMB paper's mixed-batch training; each phase
  re-warms from zero to its own peak, then decays.
- `scale_learning_rate`, `warmup_steps_from_epochs`: batch-size rules.
"""

import math

import keras
from keras import ops

from lamb._checks import check_float, check_int, check_range

SCALING_RULES = ("sqrt", "linear")


@keras.saving.register_keras_serializable(package="lamb")
class WarmupPolynomialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then polynomial decay, exactly as BERT's `create_optimizer`.

    At step `s` (the optimizer's iteration count, starting at 0):

        decayed = (peak − end) · (1 − min(s, decay_steps) / decay_steps)^power + end
        lr      = peak · s / warmup_steps   if s < warmup_steps   else decayed

    The decay is counted from step 0, not from the end of the warmup. A
    step below 0 counts as step 0.

    Args:
        initial_learning_rate: The peak learning rate, ≥ 0.
        decay_steps: Steps over which the rate decays to `end_learning_rate`, ≥ 1.
        warmup_steps: Steps of linear warmup from 0, in [0, decay_steps].
        end_learning_rate: The rate after `decay_steps`, ≥ 0.
        power: The polynomial's power, ≥ 0 (1 is linear decay).
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        warmup_steps=0,
        end_learning_rate=0.0,
        power=1.0,
    ):
        self.initial_learning_rate = check_float(
            "initial_learning_rate", initial_learning_rate, low=0.0
        )
        self.decay_steps = check_int("decay_steps", decay_steps, low=1)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, low=0, high=self.decay_steps)
        self.end_learning_rate = check_float("end_learning_rate", end_learning_rate, low=0.0)
        self.power = check_float("power", power, low=0.0)

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32"), 0.0)
        # (decay_steps - step) / decay_steps rather than 1 - step / decay_steps:
        # exact in float32 for integer steps, also near the end of the decay.
        remaining = (self.decay_steps - ops.minimum(step, float(self.decay_steps))) / self.decay_steps
        decayed = (
            self.initial_learning_rate - self.end_learning_rate
        ) * ops.power(remaining, self.power) + self.end_learning_rate
        if not self.warmup_steps:
            return decayed
        warmup = self.initial_learning_rate * step / self.warmup_steps
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
        }


@keras.saving.register_keras_serializable(package="lamb")
class MultiPhaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Consecutive `WarmupPolynomialDecay` phases, each re-warming from zero.

    The LAMB paper trains BERT in two phases (sequence length 128, then 512,
    with a new batch size); the second phase re-warms the learning rate from
    zero. Phase `p` starts at the sum of the earlier phases' `steps` and runs
    its own schedule on the step count since its start. After the last phase
    the rate stays at that phase's end value.

    Args:
        phases: A list of dicts, one per phase, with keys `steps` (its length),
            `learning_rate` (its peak), `warmup_steps`, and optionally
            `end_learning_rate` (default 0) and `power` (default 1).
    """

    def __init__(self, phases):
        if not isinstance(phases, (list, tuple)) or not all(
            isinstance(phase, dict) for phase in phases
        ):
            raise ValueError(
                f"`phases` must be a list of dicts, one per phase; received phases={phases!r}."
            )
        if not phases:
            raise ValueError("`phases` must hold at least one phase; received [].")
        self.phases = [_check_phase(i, dict(phase)) for i, phase in enumerate(phases)]
        self._schedules = [
            WarmupPolynomialDecay(
                initial_learning_rate=phase["learning_rate"],
                decay_steps=phase["steps"],
                warmup_steps=phase["warmup_steps"],
                end_learning_rate=phase["end_learning_rate"],
                power=phase["power"],
            )
            for phase in self.phases
        ]
        self.phase_starts = []
        start = 0
        for phase in self.phases:
            self.phase_starts.append(start)
            start += phase["steps"]
        self.total_steps = start

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32"), 0.0)
        learning_rate = self._schedules[0](step)
        for start, schedule in zip(self.phase_starts[1:], self._schedules[1:]):
            learning_rate = ops.where(
                step >= start, schedule(ops.maximum(step - start, 0.0)), learning_rate
            )
        return learning_rate

    def get_config(self):
        return {"phases": [dict(phase) for phase in self.phases]}


_PHASE_KEYS = {"steps", "learning_rate", "warmup_steps", "end_learning_rate", "power"}


def _check_phase(index, phase):
    unknown = set(phase) - _PHASE_KEYS
    missing = {"steps", "learning_rate", "warmup_steps"} - set(phase)
    if unknown or missing:
        raise ValueError(
            f"`phases[{index}]` must have keys steps, learning_rate, warmup_steps "
            "(and optionally end_learning_rate, power); "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}."
        )
    phase.setdefault("end_learning_rate", 0.0)
    phase.setdefault("power", 1.0)
    phase["steps"] = check_int(f"phases[{index}]['steps']", phase["steps"], low=1)
    phase["warmup_steps"] = check_int(
        f"phases[{index}]['warmup_steps']", phase["warmup_steps"], low=0, high=phase["steps"]
    )
    return phase


def scale_learning_rate(base_learning_rate, batch_size, base_batch_size, rule="sqrt"):
    """The learning rate for `batch_size`, tuned as `base_learning_rate` at `base_batch_size`.

    Args:
        base_learning_rate: The rate that works at `base_batch_size`.
        batch_size: The global batch size to train with.
        base_batch_size: The batch size `base_learning_rate` belongs to.
        rule: `"sqrt"` (the LAMB paper's rule: multiply by √(batch/base)) or
            `"linear"` (Goyal et al.: multiply by batch/base).
    """
    check_range("base_learning_rate", base_learning_rate, low=0.0)
    check_range("batch_size", batch_size, low=1)
    check_range("base_batch_size", base_batch_size, low=1)
    ratio = batch_size / base_batch_size
    if rule == "sqrt":
        return base_learning_rate * math.sqrt(ratio)
    if rule == "linear":
        return base_learning_rate * ratio
    raise ValueError(f"`rule` must be one of {SCALING_RULES}; received rule={rule!r}.")


def warmup_steps_from_epochs(warmup_epochs, num_examples, batch_size):
    """Warmup length in optimizer steps for `warmup_epochs` epochs (may be fractional).

    An epoch is `ceil(num_examples / batch_size)` steps; the result is rounded up.
    """
    check_range("warmup_epochs", warmup_epochs, low=0.0)
    check_range("num_examples", num_examples, low=1)
    check_range("batch_size", batch_size, low=1)
    steps_per_epoch = math.ceil(num_examples / batch_size)
    return math.ceil(round(warmup_epochs * steps_per_epoch, 9))
