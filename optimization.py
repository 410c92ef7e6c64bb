"""BERT-compatible names for the lamb package.

Code written against google-research/bert's `optimization.py` (and the LAMB
and LARS optimizers that followed its conventions) can import these names;
each returns a Keras 3 optimizer from `lamb`, taking the original argument
names (`weight_decay_rate`, `use_nesterov`).
"""

from lamb import LAMB, LAMB16, LARS, AdamWeightDecay, create_optimizer

__all__ = [
    "create_optimizer",
    "AdamWeightDecayOptimizer",
    "LAMBOptimizer",
    "LAMB16Optimizer",
    "LARSOptimizer",
]


def AdamWeightDecayOptimizer(
    learning_rate,
    weight_decay_rate=0.0,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    exclude_from_weight_decay=None,
    name="AdamWeightDecayOptimizer",
    **kwargs,
):
    """BERT's AdamWeightDecayOptimizer: a `lamb.AdamWeightDecay`."""
    return AdamWeightDecay(
        learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay=weight_decay_rate,
        exclude_from_weight_decay=exclude_from_weight_decay,
        name=name,
        **kwargs,
    )


def LAMBOptimizer(
    learning_rate,
    weight_decay_rate=0.0,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    exclude_from_weight_decay=None,
    exclude_from_layer_adaptation=None,
    name="LAMBOptimizer",
    **kwargs,
):
    """The LAMB optimizer in BERT's conventions: a `lamb.LAMB`."""
    return LAMB(
        learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        weight_decay=weight_decay_rate,
        exclude_from_weight_decay=exclude_from_weight_decay,
        exclude_from_layer_adaptation=exclude_from_layer_adaptation,
        name=name,
        **kwargs,
    )


def LAMB16Optimizer(
    learning_rate,
    weight_decay_rate=0.0,
    exclude_from_weight_decay=None,
    exclude_from_layer_adaptation=None,
    name="LAMB16Optimizer",
    **kwargs,
):
    """LAMB with 8-bit-float moments, in BERT's conventions: a `lamb.LAMB16`."""
    return LAMB16(
        learning_rate,
        weight_decay=weight_decay_rate,
        exclude_from_weight_decay=exclude_from_weight_decay,
        exclude_from_layer_adaptation=exclude_from_layer_adaptation,
        name=name,
        **kwargs,
    )


def LARSOptimizer(
    learning_rate,
    momentum=0.9,
    use_nesterov=False,
    weight_decay=0.0,
    exclude_from_weight_decay=None,
    exclude_from_layer_adaptation=None,
    eeta=0.001,
    name="LARSOptimizer",
    **kwargs,
):
    """The TPU reference LARSOptimizer (classic momentum): a `lamb.LARS`."""
    return LARS(
        learning_rate,
        momentum=momentum,
        nesterov=use_nesterov,
        weight_decay=weight_decay,
        eeta=eeta,
        exclude_from_weight_decay=exclude_from_weight_decay,
        exclude_from_layer_adaptation=exclude_from_layer_adaptation,
        name=name,
        **kwargs,
    )
