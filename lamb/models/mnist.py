"""The MNIST models of the 2019 TensorFlow LAMB comparison (ymcui/LAMB_Optimizer_TF).

Every model maps `(batch, 28, 28)` float images in [0, 1] to 10 logits:

- `mlp`: 784-256-256-256-10, ReLU.
- `cnn`: conv 5×5×32 → max-pool 2 → conv 5×5×64 → max-pool 2 → dense 1024
  (ReLU) → dropout 0.2 → 10 ("same" padding, as in the 2019 notebook).
- `birnn`, `bigru`, `bilstm`: a bidirectional simple RNN / GRU / LSTM that
  reads the 28 image rows as 28 time steps, 128 units per direction, → 10.
  The GRU is TF1's `GRUCell` formulation (`reset_after=False`).

Two variants (`build_model(name, variant)`):

- `"modern"`: Keras' default initializers (Glorot-uniform kernels, orthogonal
  recurrent kernels, zero biases, LSTM forget-gate bias 1); the RNNs classify
  the final states of both directions.
- `"reference2019"`: what the 2019 notebook built in TF1. Every weight and
  bias it created itself (all of the MLP and CNN, the RNNs' output layer) is
  drawn from N(0, 1). The recurrent cells keep TF1's own defaults: a
  Glorot-uniform limit computed over the concatenated [input; state] kernel,
  zero biases, GRU gate biases 1, LSTM forget-gate bias 1. The RNNs classify
  `outputs[-1]`, the last step of the bidirectional output sequence (where
  the backward direction has read only the last row).
"""

import math

import keras
from keras import layers, ops

MODELS = ("mlp", "cnn", "birnn", "bigru", "bilstm")
VARIANTS = ("modern", "reference2019")
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
RNN_UNITS = 128

_RNN_LAYERS = {"birnn": layers.SimpleRNN, "bigru": layers.GRU, "bilstm": layers.LSTM}
_RNN_GATES = {"birnn": 1, "bigru": 3, "bilstm": 4}


def build_model(name, variant="modern"):
    """A `keras.Sequential` MNIST classifier returning logits.

    Args:
        name: One of `MODELS`.
        variant: One of `VARIANTS` (initialization and RNN read-out; the
            architecture and parameter count are the same).
    """
    if name not in MODELS:
        raise ValueError(f"`name` must be one of {MODELS}; received name={name!r}.")
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}; received variant={variant!r}.")
    reference = variant == "reference2019"
    dense_init = _normal_init if reference else dict
    if name == "mlp":
        body = [layers.Flatten()] + [
            layers.Dense(256, activation="relu", **dense_init()) for _ in range(3)
        ]
    elif name == "cnn":
        body = [
            layers.Reshape(IMAGE_SHAPE + (1,)),
            layers.Conv2D(32, 5, padding="same", activation="relu", **dense_init()),
            layers.MaxPooling2D(2, padding="same"),
            layers.Conv2D(64, 5, padding="same", activation="relu", **dense_init()),
            layers.MaxPooling2D(2, padding="same"),
            layers.Flatten(),
            layers.Dense(1024, activation="relu", **dense_init()),
            layers.Dropout(0.2),
        ]
    else:
        body = _bidirectional_rnn(name, reference)
    return keras.Sequential(
        [keras.Input(IMAGE_SHAPE)]
        + body
        + [layers.Dense(NUM_CLASSES, name="logits", **dense_init())],
        name=name,
    )


def _bidirectional_rnn(name, reference):
    rnn_kwargs = {"return_sequences": reference}
    if name == "bigru":
        rnn_kwargs["reset_after"] = False
    if reference:
        rnn_kwargs.update(_tf1_cell_init(name))
    rnn = layers.Bidirectional(_RNN_LAYERS[name](RNN_UNITS, **rnn_kwargs))
    if not reference:
        return [rnn]
    return [rnn, layers.Lambda(lambda sequence: sequence[:, -1, :], name="last_step")]


def _normal_init():
    """Fresh N(0, 1) initializers (an instance reused across layers repeats its draws)."""
    return {
        "kernel_initializer": keras.initializers.RandomNormal(stddev=1.0),
        "bias_initializer": keras.initializers.RandomNormal(stddev=1.0),
    }


def _tf1_cell_init(name):
    """TF1's `BasicRNNCell` / `GRUCell` / `LSTMCell` default initialization.

    TF1 keeps one kernel of shape [input + units, gates·units], initialized
    Glorot-uniform as a whole; Keras splits it into `kernel` and
    `recurrent_kernel`, so both get that one uniform limit.
    """
    fan_in = IMAGE_SHAPE[1] + RNN_UNITS
    fan_out = _RNN_GATES[name] * RNN_UNITS
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    init = {
        "kernel_initializer": keras.initializers.RandomUniform(-limit, limit),
        "recurrent_initializer": keras.initializers.RandomUniform(-limit, limit),
        "bias_initializer": "zeros",
    }
    if name == "bigru":
        init["bias_initializer"] = Tf1GruBias()
    return init


@keras.saving.register_keras_serializable(package="lamb")
class Tf1GruBias(keras.initializers.Initializer):
    """TF1 `GRUCell` biases: 1 for the update and reset gates, 0 for the candidate.

    Keras' GRU bias with `reset_after=False` has shape `(3·units,)`, ordered
    update gate, reset gate, candidate.
    """

    def __call__(self, shape, dtype=None):
        units = shape[0] // 3
        return ops.concatenate(
            [ops.ones((2 * units,), dtype=dtype), ops.zeros((units,), dtype=dtype)]
        )
