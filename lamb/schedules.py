"""Learning-rate schedules for large-batch training.

- `WarmupPolynomialDecay`: BERT's linear warmup + polynomial decay.
- `WarmupCosineDecay`: warmup + cosine decay to a floor.
- `MultiPhaseSchedule`: the LAMB paper's mixed-batch training; each phase
  re-warms from zero to its own peak, then decays.
- `scale_learning_rate`, `warmup_steps_from_epochs`: batch-size rules.
"""

import math

import keras
from keras import ops

from lamb._checks import check_bool, check_float, check_int, check_range

SCALING_RULES = ("sqrt", "linear")


class _WarmupThenDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warmup from 0 to the peak, then a decay (`_decayed`) over the progress
    `p` in [0, 1] of the decay; the options shared by the schedules below.

    At step `s`, with `t = max(s − start_warmup_step, 0)`:

        lr = peak · (t / warmup_steps)^warmup_power   if t < warmup_steps
        lr = decayed(p)                               otherwise, with
        p  = min(t, decay_steps) / decay_steps                    (BERT, default)
        p  = min(t − warmup_steps, D) / D, D = decay_steps − warmup_steps
                                                       (decay_after_warmup)
    """

    def __init__(self, initial_learning_rate, decay_steps, warmup_steps, warmup_power,
                 decay_after_warmup, start_warmup_step):
        self.initial_learning_rate = check_float(
            "initial_learning_rate", initial_learning_rate, low=0.0
        )
        self.decay_steps = check_int("decay_steps", decay_steps, low=1)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, low=0, high=self.decay_steps)
        self.warmup_power = check_float("warmup_power", warmup_power, low=0.0, low_inclusive=False)
        self.decay_after_warmup = check_bool("decay_after_warmup", decay_after_warmup)
        self.start_warmup_step = check_int("start_warmup_step", start_warmup_step, low=0)

    def _decayed(self, remaining):
        """The rate where a fraction `remaining` = 1 − p of the decay is left."""
        raise NotImplementedError

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32") - self.start_warmup_step, 0.0)
        decay_start = self.warmup_steps if self.decay_after_warmup else 0
        length = self.decay_steps - decay_start
        # (length - t) / length rather than 1 - t / length: exact in float32
        # for integer steps, also near the end of the decay.
        if length:
            since = ops.maximum(step - decay_start, 0.0)
            remaining = (length - ops.minimum(since, float(length))) / length
        else:  # the warmup takes all of `decay_steps`
            remaining = ops.zeros_like(step)
        decayed = self._decayed(remaining)
        if not self.warmup_steps:
            return decayed
        if self.warmup_power == 1.0:
            warmup = self.initial_learning_rate * step / self.warmup_steps
        else:
            warmup = self.initial_learning_rate * ops.power(
                step / self.warmup_steps, self.warmup_power
            )
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_power": self.warmup_power,
            "decay_after_warmup": self.decay_after_warmup,
            "start_warmup_step": self.start_warmup_step,
        }


@keras.saving.register_keras_serializable(package="lamb")
class WarmupPolynomialDecay(_WarmupThenDecay):
    """Linear warmup, then polynomial decay, exactly as BERT's `create_optimizer`.

    At step `s` (the optimizer's iteration count, starting at 0), by default:

        decayed = (peak − end) · (1 − min(s, decay_steps) / decay_steps)^power + end
        lr      = peak · s / warmup_steps   if s < warmup_steps   else decayed

    The decay is counted from step 0, not from the end of the warmup. A
    step below 0 counts as step 0.

    Args:
        initial_learning_rate: The peak learning rate, ≥ 0.
        decay_steps: The step at which the rate reaches `end_learning_rate`, ≥ 1.
        warmup_steps: Steps of warmup from 0, in [0, decay_steps].
        end_learning_rate: The rate after `decay_steps`, ≥ 0.
        power: The polynomial's power, ≥ 0 (1 is linear decay).
        warmup_power: The warmup's power, > 0 (HuggingFace's `power`;
            1: linear).
        decay_after_warmup: Whether the decay starts at the end of the
            warmup and lasts `decay_steps − warmup_steps` (HuggingFace),
            instead of being counted from step 0 (BERT).
        start_warmup_step: The step at which the schedule starts (MLPerf
            BERT's, for a run resumed from a checkpoint whose step count
            began earlier); steps before it count as 0.
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        warmup_steps=0,
        end_learning_rate=0.0,
        power=1.0,
        warmup_power=1.0,
        decay_after_warmup=False,
        start_warmup_step=0,
    ):
        super().__init__(initial_learning_rate, decay_steps, warmup_steps, warmup_power,
                         decay_after_warmup, start_warmup_step)
        self.end_learning_rate = check_float("end_learning_rate", end_learning_rate, low=0.0)
        self.power = check_float("power", power, low=0.0)

    def _decayed(self, remaining):
        return (
            self.initial_learning_rate - self.end_learning_rate
        ) * ops.power(remaining, self.power) + self.end_learning_rate

    def get_config(self):
        config = super().get_config()
        config.update(end_learning_rate=self.end_learning_rate, power=self.power)
        return config


@keras.saving.register_keras_serializable(package="lamb")
class WarmupCosineDecay(_WarmupThenDecay):
    """Warmup, then cosine decay to a floor (Keras's `CosineDecay` after a
    warmup; HuggingFace's `get_cosine_schedule_with_warmup` with
    `decay_after_warmup=True`):

        decayed = peak · ((1 − alpha) · (1 + cos(π · p)) / 2 + alpha)

    with `p` the progress of the decay (see `WarmupPolynomialDecay`, whose
    warmup and options this schedule shares).

    Args:
        initial_learning_rate: The peak learning rate, ≥ 0.
        decay_steps: The step at which the rate reaches `alpha · peak`, ≥ 1.
        warmup_steps: Steps of warmup from 0, in [0, decay_steps].
        alpha: The floor, as a fraction of the peak, in [0, 1].
        warmup_power: As in `WarmupPolynomialDecay`.
        decay_after_warmup: As in `WarmupPolynomialDecay`.
        start_warmup_step: As in `WarmupPolynomialDecay`.
    """

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        warmup_steps=0,
        alpha=0.0,
        warmup_power=1.0,
        decay_after_warmup=False,
        start_warmup_step=0,
    ):
        super().__init__(initial_learning_rate, decay_steps, warmup_steps, warmup_power,
                         decay_after_warmup, start_warmup_step)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0, high_inclusive=True)

    def _decayed(self, remaining):
        cosine = 0.5 * (1.0 + ops.cos(math.pi * (1.0 - remaining)))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha)
        return config


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
