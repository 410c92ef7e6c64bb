"""Where Adam-type optimizers keep m and v: float variables, or float8 codes.

A store's `update(index, gradient)` moves variable `index`'s moments to
this step's values and returns them:

    m = β1·m + (1 − β1)·g            v = β2·v + (1 − β2)·g²

The optimizers' scheduled steps (`lamb.optimizers.xla_cpu`) call
`scheduled_update(index, gradient, plan)` instead, which returns them as a
`StepMoments`: `times(k)` gives k·m and k²·v, from which every power of two
k gives the same update direction, so a fused plan can write its own copy
for each consumer.
"""

import math

from keras import ops

from lamb.optimizers.rules import variable_path
from lamb.optimizers.float8 import (
    E4M3FN,
    E5M2,
    Scaling,
    absmax_scale,
    dequantize,
    encode_scaled,
    quantize,
    rounding_bits,
)
from lamb.optimizers.xla_cpu import zero_after

ROUNDINGS = ("stochastic", "nearest")

# Squares of gradients saturate here instead of overflowing to inf (so the
# second moment stays finite for every finite gradient), with room for the
# power-of-two multiples (up to 8·m, 64·v) that the fused plans compute.
SQUARE_LIMIT = 2.0**121


def saturated_square(x):
    """x², or `SQUARE_LIMIT` where that is smaller."""
    return ops.minimum(ops.square(x), SQUARE_LIMIT)


def next_moments(m, v, gradient, beta_1, beta_2, multiple=1.0):
    """This step's m and v from the previous ones and the gradient; given
    `multiple`·m and `multiple`²·v, returns such multiples of the new ones."""
    square = saturated_square(gradient)
    if multiple != 1.0:
        gradient, square = gradient * multiple, square * multiple**2
    return m + (gradient - m) * (1.0 - beta_1), v + (square - v) * (1.0 - beta_2)


class StepMoments:
    """This step's moments of one variable.

    Args:
        times: `k -> (k·m, k²·v)`.
        finish: `variable -> zero or None`, run after the variable's update:
            writes what had to wait for it, and returns `zero_after(variable)`
            if it built one (for `plan.done`).
    """

    def __init__(self, times, finish=None):
        self.times = times
        self._finish = finish

    def finish(self, variable):
        return None if self._finish is None else self._finish(variable)


def _multiples(m, v):
    return lambda k: (m, v) if k == 1.0 else (k * m, k * k * v)


class _Moments:
    def __init__(self, optimizer, beta_1, beta_2):
        self._optimizer = optimizer
        self.beta_1, self.beta_2 = beta_1, beta_2

    def _float_update(self, m, v, gradient, m_rate, v_rate):
        """Updates the float variables `m` and `v` in place at the rates
        `m_rate`, `v_rate` (1 − β1, 1 − β2); returns them."""
        self._optimizer.assign_add(m, (gradient - m) * m_rate)
        self._optimizer.assign_add(v, (saturated_square(gradient) - v) * v_rate)
        return m, v

    def _float_scheduled_update(self, m, v, gradient, plan):
        """`_float_update`, waiting for the previous variable (`plan.ordered`)."""
        rates = plan.ordered(1.0 - self.beta_1), plan.ordered(1.0 - self.beta_2)
        return StepMoments(_multiples(*self._float_update(m, v, gradient, *rates)))


class FloatMoments(_Moments):
    """m and v as variables of each weight's dtype (named momentum, velocity)."""

    def __init__(self, optimizer, var_list, beta_1, beta_2):
        super().__init__(optimizer, beta_1, beta_2)
        self.momentums, self.velocities = optimizer.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update(self, index, gradient):
        return self._float_update(
            self.momentums[index], self.velocities[index], gradient,
            1.0 - self.beta_1, 1.0 - self.beta_2,
        )

    def scheduled_update(self, index, gradient, plan):
        return self._float_scheduled_update(
            self.momentums[index], self.velocities[index], gradient, plan
        )


class Float8Moments(_Moments):
    """m as float8_e4m3fn codes and v as float8_e5m2 codes (uint8 variables),
    with float32 absmax scales per row (`per_row`: `float8.Scaling`) or per
    tensor, for variables of at least `min_size` elements; float variables
    for the others. A variable's scales are one `(2,) + rows` variable: m's,
    then v's.

    Rounding applies only to what is kept for the next step: the step itself
    uses the float32 moments. Positive v entries never round to 0. m rounds
    to nearest; v too with `v_rounding="nearest"`, and with "stochastic" up
    or down with the probabilities that make it unbiased, so that it follows
    changes smaller than half a code's spacing (β2 = 0.999 moves v by 0.1 %
    a step, e5m2's codes are 12-25 % apart). Its random bits hash the
    optimizer's step, the element's index and the variable's index in
    `var_list` (`float8.rounding_bits`): no state, and a resumed run rounds
    as the uninterrupted one (paths are no seed: a model loaded from a
    `.keras` file has other ones).
    """

    def __init__(
        self, optimizer, var_list, beta_1, beta_2, min_size, per_row=False,
        v_rounding="nearest",
    ):
        super().__init__(optimizer, beta_1, beta_2)
        self.per_row = per_row
        self.v_rounding = v_rounding
        self.momentums, self.velocities, self.scales, self.scalings = [], [], [], []
        for variable in var_list:
            momentum = velocity = scales = scaling = None
            if optimizer._overwrite_variable_with_gradient(variable):
                pass  # It takes its gradient's value: no moments.
            elif math.prod(variable.shape) >= min_size:
                scaling = Scaling(variable.shape, per_row)
                momentum = self._add_codes(variable, "momentum")
                velocity = self._add_codes(variable, "velocity")
                scales = optimizer.add_variable(
                    shape=(2,) + scaling.shape,
                    dtype="float32",
                    name=_variable_name(variable) + "_moment_scales",
                )
            else:
                momentum = optimizer.add_variable_from_reference(variable, "momentum")
                velocity = optimizer.add_variable_from_reference(variable, "velocity")
            self.momentums.append(momentum)
            self.velocities.append(velocity)
            self.scales.append(scales)
            self.scalings.append(scaling)

    def _add_codes(self, variable, name):
        return self._optimizer.add_variable(
            shape=variable.shape,
            dtype="uint8",
            name=f"{_variable_name(variable)}_{name}",
            layout=getattr(variable, "_layout", None),
        )

    def _v_rounding_bits(self, index):
        """`rounding_bits` of variable `index`'s v this step, or None (nearest)."""
        if self.v_rounding == "nearest":
            return None
        return rounding_bits(
            self.velocities[index].shape, self._optimizer.iterations, index
        )

    def update(self, index, gradient):
        m, v, scales = self.momentums[index], self.velocities[index], self.scales[index]
        if scales is None:
            return self._float_update(m, v, gradient, 1.0 - self.beta_1, 1.0 - self.beta_2)
        expand = self.scalings[index].expand
        m, v = next_moments(
            dequantize(m, expand(scales[0]), E4M3FN, gradient.dtype),
            dequantize(v, expand(scales[1]), E5M2, gradient.dtype),
            gradient,
            self.beta_1,
            self.beta_2,
        )
        m_codes, m_scales = quantize(m, E4M3FN, per_row=self.per_row)
        v_codes, v_scales = quantize(
            v, E5M2, keep_nonzero=True, per_row=self.per_row,
            random_bits=self._v_rounding_bits(index),
        )
        self._optimizer.assign(self.momentums[index], m_codes)
        self._optimizer.assign(self.velocities[index], v_codes)
        self._optimizer.assign(scales, ops.stack([m_scales, v_scales]))
        return m, v

    def scheduled_update(self, index, gradient, plan):
        if self.scales[index] is None:
            return self._float_scheduled_update(
                self.momentums[index], self.velocities[index], gradient, plan
            )
        if plan.recomputes_moments:
            return self._recomputed_update(index, gradient, plan)
        return StepMoments(_multiples(*self.update(index, gradient)))

    def _recomputed_update(self, index, gradient, plan):
        """The moments for a fused plan: each consumer (the update, its norm,
        the new scales and codes) recomputes them from the stored codes and
        the gradient as its own power-of-two multiple (exact: the same
        values, barring overflow), so that XLA fuses each copy into its
        consumer instead of writing float32 moments to memory. All read the
        codes before `finish` overwrites them."""
        scaling = self.scalings[index]

        def times(k):
            scales = plan.ordered(self.scales[index])
            m = dequantize(
                self.momentums[index], scaling.expand(scales[0] * k), E4M3FN, gradient.dtype
            )
            v = dequantize(
                self.velocities[index], scaling.expand(scales[1] * k**2), E5M2, gradient.dtype
            )
            return next_moments(m, v, gradient, self.beta_1, self.beta_2, k)

        def finish(variable):
            m, v = times(4.0)
            m_scales = absmax_scale(scaling.absmax(m) * 0.25, E4M3FN)
            v_scales = absmax_scale(scaling.absmax(v) * (1.0 / 16.0), E5M2)
            m, v = times(8.0)
            # Depending on the updated variable, the encoding comes after every
            # read of the old codes: XLA overwrites them in place, not a copy.
            after_update = zero_after(variable)
            self._optimizer.assign(
                self.momentums[index],
                encode_scaled(m, scaling.expand((m_scales + after_update) * 8.0), E4M3FN),
            )
            self._optimizer.assign(
                self.velocities[index],
                encode_scaled(
                    v, scaling.expand((v_scales + after_update) * 64.0), E5M2,
                    keep_nonzero=True, random_bits=self._v_rounding_bits(index),
                ),
            )
            self._optimizer.assign(self.scales[index], ops.stack([m_scales, v_scales]))
            return after_update

        return StepMoments(times, finish)


def _variable_name(variable):
    """`variable`'s path (`variable_path`) as one name."""
    return variable_path(variable).replace("/", "_").replace(":", "_")
