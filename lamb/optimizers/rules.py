"""Rules that select variables: lists of regular expressions on
`variable.path` and callables (the exclusion and inclusion lists), and the
ready rules `fewer_than_2_dimensions` and `bert_layer_index`."""

import re

import keras


@keras.saving.register_keras_serializable(package="lamb")
def fewer_than_2_dimensions(variable):
    """A ready exclusion rule: true for variables of fewer than 2 dimensions
    (biases, LayerNorm and BatchNorm scales and offsets), whatever their names."""
    return len(variable.shape) < 2


@keras.saving.register_keras_serializable(package="lamb")
def bert_layer_index(variable):
    """A ready `layer_index` rule for keras-hub's BERT (and this package's
    `lamb.models.bert`): 0 for the embeddings and their LayerNorm, i + 1 for
    `transformer_layer_i`, `None` (the top) for the pooler and the heads."""
    path = variable_path(variable)
    layer = re.search(r"transformer_layer_(\d+)/", path)
    if layer:
        return int(layer.group(1)) + 1
    return 0 if "embedding" in path else None


def variable_path(variable):
    """`variable.path`, or the name of a variable without one (a raw `tf.Variable`)."""
    return getattr(variable, "path", None) or variable.name



def compile_rules(name, rules):
    """Rules selecting variables: `None`, a callable `variable -> bool`, or a
    list of regular expressions (matched by `re.search` against
    `variable.path`) and callables; serialized callables (from a config)
    are deserialized. Raises `ValueError` naming `name` and the bad entry."""
    if rules is None:
        return None
    if callable(rules) or isinstance(rules, dict):
        rules = [rules]
    if isinstance(rules, str):
        raise ValueError(
            f"`{name}` must be a list of regular expressions, not a single "
            f"string; received {name}={rules!r}. Did you mean [{rules!r}]?"
        )
    try:
        rules = list(rules)
    except TypeError:
        raise ValueError(
            f"`{name}` must be None, a callable `variable -> bool` or a list of "
            f"regular expressions and callables; received {name}={rules!r}."
        ) from None
    return tuple(_compile_rule(name, rule) for rule in rules)


def _compile_rule(name, rule):
    if isinstance(rule, dict):
        rule = keras.saving.deserialize_keras_object(rule)
    if callable(rule):
        return rule
    try:
        return re.compile(rule)
    except (re.error, TypeError) as error:
        raise ValueError(
            f"`{name}` holds an invalid regular expression {rule!r}: {error}"
        ) from None


def matches_any(rules, variable):
    """Whether one of `rules` (`compile_rules`) selects `variable`."""
    return any(
        rule.search(variable_path(variable)) if isinstance(rule, re.Pattern) else rule(variable)
        for rule in rules or ()
    )


def rules_config(rules):
    """`rules` for `get_config`: patterns as strings, callables serialized."""
    if rules is None:
        return None
    return [
        rule.pattern if isinstance(rule, re.Pattern) else keras.saving.serialize_keras_object(rule)
        for rule in rules
    ]

