"""Argument checks shared by the optimizers, schedules, factory and the
command-line apps: each returns the value (converted) or raises `ValueError`
naming the argument (or flag: pass `"--name"`) and what is allowed.

Numbers must be real numbers (not bools, strings or NaN) and finite, so that
a NaN or infinite setting stops at once instead of training a NaN model.
"""

import difflib
import math
import numbers


def _is_bool(value):
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def check_range(
    name, value, low=None, high=None, low_inclusive=True, high_inclusive=False,
    kind="a finite number",
):
    """`value` if it is a finite real number in the range, else `ValueError`
    naming `name` and the allowed range (`None` bounds are open)."""
    lower = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
    upper = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
    allowed = f"{kind} in {lower}, {upper}"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be {allowed}; received {name}={value!r}.")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high or not math.isfinite(value):
        raise ValueError(f"`{name}` must be {allowed}; received {name}={value!r}.")
    return value


def check_float(name, value, low=None, high=None, low_inclusive=True, high_inclusive=False):
    """`check_range`, returned as a Python float."""
    return float(check_range(name, value, low, high, low_inclusive, high_inclusive))


def check_learning_rate(learning_rate, name="learning_rate"):
    """Accepts a schedule, a callable, a variable or tensor (checked when the
    optimizer uses it), or a finite non-negative number (as a float)."""
    if callable(learning_rate) or hasattr(learning_rate, "dtype") and not isinstance(
        learning_rate, numbers.Real
    ):
        return learning_rate
    return check_float(name, learning_rate, low=0.0)


def check_int(name, value, low=None, high=None):
    """`value` as an int, or `ValueError` unless it is a whole number (not a
    bool, not a float such as 2.5) in [low, high]."""
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer; received {name}={value!r}.")
    return int(
        check_range(name, value, low=low, high=high, high_inclusive=True, kind="an integer")
    )


def check_bool(name, value):
    """`value` as a bool, or `ValueError` unless it is `True` or `False`
    (a string such as "no" is an error, not `True`)."""
    if not _is_bool(value):
        raise ValueError(f"`{name}` must be True or False; received {name}={value!r}.")
    return bool(value)


def check_bounds(name, bounds):
    """`None`, or `bounds` as a `(lower, upper)` pair of floats with
    `0 <= lower <= upper` and `upper > 0`, else `ValueError` naming `name`."""
    if bounds is None:
        return None
    if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__") or len(bounds) != 2:
        raise ValueError(
            f"`{name}` must be None or a pair (lower, upper); received {name}={bounds!r}."
        )
    lower, upper = bounds
    lower = check_float(f"{name}[0]", lower, low=0.0)
    upper = check_float(f"{name}[1]", upper, low=0.0, low_inclusive=False)
    if lower > upper:
        raise ValueError(
            f"`{name}` must satisfy 0 <= lower <= upper with upper > 0; "
            f"received {name}={bounds!r}."
        )
    return (lower, upper)


def closest(value, choices):
    """The choice closest to `value` (compared in lower case), or None if none is close."""
    by_lower = {str(choice).lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def did_you_mean(value, choices):
    """" Did you mean 'x'?" for the choice `closest` to `value`, or ""."""
    choice = closest(value, choices)
    return "" if choice is None else f" Did you mean {choice!r}?"


def check_choice(name, value, choices, ignore_case=False):
    """`value` if it is one of `choices` (with `ignore_case`, the choice that
    equals it in lower case), else `ValueError` listing them and the closest."""
    if value in choices:
        return value
    if ignore_case and isinstance(value, str):
        for choice in choices:
            if isinstance(choice, str) and choice.lower() == value.lower():
                return choice
    raise ValueError(
        f"`{name}` must be one of {sorted(choices)}; received {name}={value!r}."
        + did_you_mean(value, choices)
    )
