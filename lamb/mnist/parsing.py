"""How a setting's value is read: comma-separated lists, names in any case,
one value and/or `name=value` pairs, `optimizer.argument=value` options.
Errors name the setting (`name`) and what is allowed.
"""

from lamb._checks import closest


def _exclusions(name, value):
    """A tuple of regular expressions, or None (`'none'`: none)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    return tuple(_split(name, value))


def _optimizer_options(name, value, defaults, optimizers):
    """`{optimizer: {argument: value}}`: the protocol's, then `value`'s
    `optimizer.argument=value` pairs (a string) or `{optimizer: {...}}`."""
    options = {n: dict(defaults.get(n, {})) for n in optimizers}
    if value is None:
        return options
    if isinstance(value, dict):
        pairs = [(o, a, v) for o, arguments in value.items() for a, v in arguments.items()]
    else:
        pairs = []
        for item in _split(name, value):
            key, equals, text = item.partition("=")
            optimizer, dot, argument = key.strip().partition(".")
            if not (equals and dot and argument):
                raise ValueError(
                    f"`{name}` takes optimizer.argument=value pairs; received {item!r}."
                )
            pairs.append((optimizer, argument.strip(), _option_value(argument, text.strip())))
    for optimizer, argument, option in pairs:
        options[_named(name, optimizer, optimizers)][argument] = option
    return options


def _named(name, item, allowed, kind="optimizers"):
    """`item` (any case) as written in `allowed`, the sweep's `kind` (optimizers or
    models); else an error naming `name`."""
    chosen = {n.lower(): n for n in allowed}.get(str(item).strip().lower())
    if chosen is None:
        raise ValueError(
            f"`{name}` names {kind[:-1]} {_with_closest(item, allowed)}, which is not "
            f"in {kind}={list(allowed)}."
        )
    return chosen


def _option_value(argument, text):
    """An option's value from its text (see the `optimizer_options` setting)."""
    lower = text.lower()
    if lower in ("true", "false"):
        return lower == "true"
    if lower == "none":
        return None
    if text == "[]":
        return []
    if argument.startswith("exclude_"):
        return [text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split(name, value):
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    value = list(value)
    if not value:
        raise ValueError(f"`{name}` must not be empty.")
    return value


def _choices(name, value, allowed):
    """The names in `value` (any case) as they are written in `allowed`, once each."""
    by_lower = {item.lower(): item for item in allowed}
    chosen = tuple(by_lower.get(str(item).lower(), item) for item in _split(name, value))
    unknown = [item for item in chosen if item not in allowed]
    if unknown:
        described = ", ".join(_with_closest(item, allowed) for item in unknown)
        raise ValueError(
            f"`{name}` must be a comma-separated subset of {list(allowed)}; "
            f"received unknown {described}."
        )
    return tuple(dict.fromkeys(chosen))


def _with_closest(item, allowed):
    """`'lasr' (did you mean 'lars'?)`, or `'x'` if nothing is close."""
    choice = closest(item, allowed)
    return f"{item!r}" if choice is None else f"{item!r} (did you mean {choice!r}?)"


def _from_text(value, kind):
    """`kind(value)` for text that reads as a `kind` (int or float); anything else
    unchanged, for the checks to refuse with their message."""
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    return value


def _per_name(name, value, defaults, names, check, single_value_skips=(), kind="optimizers"):
    """Values per optimizer (or per model, `kind="models"`): the protocol's, then
    one value for all (but those in `single_value_skips`), then `name=value`
    pairs; each value passed through `check(label, value)`, label `name` or
    `name[optimizer]`."""
    values = {n: defaults[n] for n in names}
    if value is None:
        return values
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, str):
        items = (
            item.split("=", 1) if "=" in item else (None, item)
            for item in _split(name, value)
        )
    else:
        items = [(None, value)]
    for key, text in items:
        if key is not None:
            key = _named(name, key, names, kind)
        label = name if key is None else f"{name}[{key}]"
        number = check(label, text)
        if key is not None:
            values[key] = number
        else:
            for n in names:
                if n not in single_value_skips:
                    values[n] = number
    return values
