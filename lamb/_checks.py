"""Argument checks shared by the optimizers, schedules, factory and training:
each returns the value or raises `ValueError` naming the argument and the
allowed range."""

import numbers


def check_range(
    name, value, low=None, high=None, low_inclusive=True, high_inclusive=False
):
    """Returns `value`, or raises `ValueError` naming `name` and the allowed range."""
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        lower = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        upper = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise ValueError(
            f"`{name}` must be in {lower}, {upper}; received {name}={value!r}."
        )
    return value


def check_learning_rate(learning_rate):
    """Accepts a schedule, a callable, or a non-negative number (as a float)."""
    if isinstance(learning_rate, numbers.Real):
        return float(check_range("learning_rate", learning_rate, low=0.0))
    return learning_rate


def check_int(name, value, low=None):
    """Returns `value` as an int, or raises `ValueError` unless it is a whole
    number (not a bool) of at least `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer; received {name}={value!r}.")
    return int(check_range(name, value, low=low))
