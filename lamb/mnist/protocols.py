"""The sweep's protocols: the settings each one defaults to, and the names
tables and plots show for optimizers and models.

See `lamb.mnist_compare` for what the protocols are.
"""

from lamb.optimizers.registry import OPTIMIZERS, WITHOUT_WEIGHT_DECAY

PROTOCOLS = ("modern", "reference2019")

DISPLAY_NAMES = {
    "adam": "Adam",
    "adamw": "AdamW",
    "lamb": "LAMB",
    "lars": "LARS",
    "lamb16": "LAMB16",
    "keras_adamw": "Keras AdamW",
    "keras_lamb": "Keras Lamb",
    "mlp": "MLP",
    "cnn": "CNN",
    "birnn": "Bi-RNN",
    "bigru": "Bi-GRU",
    "bilstm": "Bi-LSTM",
}

# Rates at batch size 64, from a small search on the MLP (3 epochs, 1e-3 to 2e-2
# for LAMB, 0.3e-3 to 3e-3 for Adam, 1 to 4 for LARS).
_MODERN_LEARNING_RATES = {
    "adam": 1e-3,
    "adamw": 1e-3,
    "keras_adamw": 1e-3,
    "lamb": 5e-3,
    "lamb16": 5e-3,
    "keras_lamb": 5e-3,
    "lars": 1.0,
}
PROTOCOL_DEFAULTS = {
    "modern": {
        "epochs": 10,
        "learning_rates": _MODERN_LEARNING_RATES,
        "weight_decays": {
            name: 0.0 if name in WITHOUT_WEIGHT_DECAY else 0.01 for name in OPTIMIZERS
        },
        "lr_scaling": "sqrt",
        "base_batch_size": 64,
        "warmup_epochs": 1.0,
        "lr_decay_power": 1.0,
        "exclude_from_weight_decay": ("bias",),
        "optimizer_options": {},
        "model_variant": "modern",
        "train_examples": 60_000,
        "test_examples": 10_000,
        "seed": 12345,
    },
    "reference2019": {
        "epochs": 100,
        "learning_rates": {name: 1e-3 for name in OPTIMIZERS},
        "weight_decays": {
            name: 0.0 if name in ("adam", "adamw", "keras_adamw") else 0.01 for name in OPTIMIZERS
        },
        "lr_scaling": "none",
        "base_batch_size": 64,
        "warmup_epochs": 0.0,
        "lr_decay_power": 0.0,
        "exclude_from_weight_decay": None,
        "optimizer_options": {
            "adam": {"epsilon": 1e-8},
            "lamb": {"bias_correction": False},
            "lamb16": {"bias_correction": False},
        },
        "model_variant": "reference2019",
        "train_examples": 55_000,
        "test_examples": 10_000,
        "seed": 12345,
    },
}


def display(name):
    """The name tables and plots show for an optimizer or model."""
    return DISPLAY_NAMES.get(name, name)
