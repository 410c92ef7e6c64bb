"""BERT for pre-training: keras-hub's BERT encoder with BERT's two heads and losses.

The encoder is `keras_hub.models.BertBackbone`, sized by a `bert_config.json`
in google-research/bert's format. On top, as in BERT's `run_pretraining.py`:
the masked-LM head (dense + LayerNorm, output tied to the token embeddings,
plus an output bias) and the next-sentence head (a dense layer of 2 logits
on the pooled [CLS] output). The loss is BERT's: the masked-LM cross-entropy
averaged over the real (weight 1) predictions plus the next-sentence
cross-entropy averaged over the examples. Both averages are taken over the
whole optimizer step's batch (all replicas, all accumulated micro-batches), so
a step gives the same result on any number of replicas and micro-batches.
"""

import contextlib
import json

import keras
from keras import ops

from lamb import training

# A label of each micro-batch under Keras's optimizer-side gradient
# accumulation (JAX): its optimizer step's counts of masked-LM predictions
# and of examples, one row per example, for the loss's averages over the
# whole step (`lamb.pretraining.train.split_into_micro_batches`).
STEP_COUNTS = "step_counts"

BERT_CONFIG_KEYS = {
    "vocab_size": int,
    "hidden_size": int,
    "num_hidden_layers": int,
    "num_attention_heads": int,
    "intermediate_size": int,
    "hidden_act": str,
    "hidden_dropout_prob": float,
    "attention_probs_dropout_prob": float,
    "max_position_embeddings": int,
    "type_vocab_size": int,
    "initializer_range": float,
}
# keras-hub's BertBackbone fixes what BERT's configs make settable.
BACKBONE_HIDDEN_ACT = "gelu"  # BERT's tanh approximation, as keras-hub's.
BACKBONE_INITIALIZER_RANGE = 0.02


def validate_bert_config(config, source):
    """Raises ValueError naming `source` and the key if `config` is not usable."""
    unknown = sorted(set(config) - set(BERT_CONFIG_KEYS))
    missing = sorted(set(BERT_CONFIG_KEYS) - set(config))
    if unknown or missing:
        raise ValueError(
            f"{source}: unknown keys {unknown}, missing keys {missing}; a BERT "
            f"config has exactly {sorted(BERT_CONFIG_KEYS)}."
        )
    for key, kind in BERT_CONFIG_KEYS.items():
        value = config[key]
        ok = isinstance(value, str) if kind is str else (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            and (kind is float or float(value).is_integer())
        )
        if not ok:
            raise ValueError(f"{source}: {key}={value!r} must be a {kind.__name__}.")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size"):
        if config[key] < 1:
            raise ValueError(f"{source}: {key}={config[key]} must be at least 1.")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ValueError(
            f"{source}: hidden_size={config['hidden_size']} is not a multiple of "
            f"num_attention_heads={config['num_attention_heads']}."
        )
    if config["hidden_act"] != BACKBONE_HIDDEN_ACT:
        raise ValueError(
            f"{source}: hidden_act={config['hidden_act']!r}; keras-hub's BertBackbone "
            f"supports only {BACKBONE_HIDDEN_ACT!r}."
        )
    if config["hidden_dropout_prob"] != config["attention_probs_dropout_prob"]:
        raise ValueError(
            f"{source}: hidden_dropout_prob={config['hidden_dropout_prob']} and "
            f"attention_probs_dropout_prob={config['attention_probs_dropout_prob']} "
            "differ; keras-hub's BertBackbone has one dropout rate for both."
        )
    if not 0.0 <= config["hidden_dropout_prob"] < 1.0:
        raise ValueError(
            f"{source}: hidden_dropout_prob={config['hidden_dropout_prob']} must be in [0, 1)."
        )
    if config["initializer_range"] != BACKBONE_INITIALIZER_RANGE:
        raise ValueError(
            f"{source}: initializer_range={config['initializer_range']}; keras-hub's "
            f"BertBackbone initializes with stddev {BACKBONE_INITIALIZER_RANGE}."
        )


def load_bert_config(path):
    """Reads and validates a `bert_config.json`."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--bert_config_file={path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a BERT config is a JSON object.")
    validate_bert_config(config, path)
    return config


def gelu_approximate(x):
    """BERT's GELU (the tanh approximation)."""
    return keras.activations.gelu(x, approximate=True)


class BertPretrainer(training.GradientAccumulation, keras.Model):
    """BERT with the masked-LM and next-sentence heads, trained with BERT's loss.

    Inputs are BERT's feature names (`input_ids`, `input_mask`, `segment_ids`,
    `masked_lm_positions`); labels are `masked_lm_ids`, `masked_lm_weights`
    and `next_sentence_labels`. Outputs: `masked_lm_logits` of shape
    `(batch, max_predictions_per_seq, vocab_size)` and `next_sentence_logits`
    of shape `(batch, 2)`.

    Args:
        bert_config: A dict in BERT's `bert_config.json` format.
        gradient_accumulation_steps: Micro-batches per optimizer step (see
            `lamb.training.GradientAccumulation`).
    """

    def __init__(self, bert_config, gradient_accumulation_steps=1, **kwargs):
        import keras_hub  # An extra: pip install .[bert]

        validate_bert_config(bert_config, "bert_config")
        initializer = keras.initializers.TruncatedNormal(
            stddev=bert_config["initializer_range"]
        )
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=bert_config["vocab_size"],
            num_layers=bert_config["num_hidden_layers"],
            num_heads=bert_config["num_attention_heads"],
            hidden_dim=bert_config["hidden_size"],
            intermediate_dim=bert_config["intermediate_size"],
            dropout=bert_config["hidden_dropout_prob"],
            max_sequence_length=bert_config["max_position_embeddings"],
            num_segments=bert_config["type_vocab_size"],
            name="bert",
        )
        masked_lm_head = keras_hub.layers.MaskedLMHead(
            token_embedding=backbone.token_embedding,
            intermediate_activation=gelu_approximate,
            layer_norm_epsilon=1e-12,
            kernel_initializer=initializer,
            name="masked_lm_head",
        )
        next_sentence_head = keras.layers.Dense(
            2, kernel_initializer=initializer, name="next_sentence_head"
        )

        inputs = {
            name: keras.Input(shape=(None,), dtype="int32", name=name)
            for name in ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")
        }
        encoded = backbone(
            {
                "token_ids": inputs["input_ids"],
                "segment_ids": inputs["segment_ids"],
                "padding_mask": inputs["input_mask"],
            }
        )
        outputs = {
            "masked_lm_logits": masked_lm_head(
                encoded["sequence_output"], inputs["masked_lm_positions"]
            ),
            "next_sentence_logits": next_sentence_head(encoded["pooled_output"]),
        }
        super().__init__(
            inputs=inputs,
            outputs=outputs,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.bert_config = dict(bert_config)
        self._step_counts = None
        self.backbone = backbone
        self.masked_lm_loss = keras.metrics.Mean(name="masked_lm_loss")
        self.masked_lm_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="masked_lm_accuracy"
        )
        self.next_sentence_loss = keras.metrics.Mean(name="next_sentence_loss")
        self.next_sentence_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="next_sentence_accuracy"
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Skips Keras's TF-trainer peek at a batch when there is nothing to build.

        Keras 3.15 reduces the peeked batch with `strategy.reduce`, which
        `MultiWorkerMirroredStrategy` cannot do for a dict of inputs. This
        model is built in `__init__` and has no compiled loss or metrics, so
        once its optimizer is built the batch is not needed.
        """
        if self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @staticmethod
    def _per_example_losses(y, y_pred):
        masked_lm_losses = keras.losses.sparse_categorical_crossentropy(
            y["masked_lm_ids"], ops.cast(y_pred["masked_lm_logits"], "float32"), from_logits=True
        )
        next_sentence_losses = keras.losses.sparse_categorical_crossentropy(
            y["next_sentence_labels"],
            ops.cast(y_pred["next_sentence_logits"], "float32"),
            from_logits=True,
        )
        return masked_lm_losses, next_sentence_losses

    @contextlib.contextmanager
    def step_context(self, x, y, sample_weight):
        """Counts the step's predictions and examples once (one sum over the
        replicas, whatever the number of micro-batches)."""
        del x, sample_weight
        self._step_counts = _counts(y)
        try:
            yield
        finally:
            self._step_counts = None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """BERT's loss; this replica's share of the step's averages.

        Within a training step of `GradientAccumulation`, or for a
        micro-batch labelled with its step's counts (`STEP_COUNTS`), on the
        scale of accumulation: the mean over the micro-batches of their
        losses is the step's loss."""
        del x, sample_weight, training
        masked_lm_losses, next_sentence_losses = self._per_example_losses(y, y_pred)
        weights = ops.cast(y["masked_lm_weights"], "float32")
        if self._step_counts is not None:
            num_predictions, num_examples = self._step_counts
            micro_batches = float(self.gradient_accumulation_steps)
        elif STEP_COUNTS in y:
            step_counts = ops.cast(y[STEP_COUNTS], "float32")
            num_predictions, num_examples = step_counts[0, 0], step_counts[0, 1]
            micro_batches = num_examples / ops.cast(ops.shape(weights)[0], "float32")
        else:
            num_predictions, num_examples = _counts(y)
            micro_batches = 1.0
        masked_lm_loss = ops.sum(masked_lm_losses * weights) / (num_predictions + 1e-5)
        next_sentence_loss = ops.sum(next_sentence_losses) / num_examples
        return micro_batches * (masked_lm_loss + next_sentence_loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the masked-LM and next-sentence losses and accuracies."""
        del x, sample_weight
        masked_lm_losses, next_sentence_losses = self._per_example_losses(y, y_pred)
        weights = y["masked_lm_weights"]
        self.masked_lm_loss.update_state(masked_lm_losses, sample_weight=weights)
        self.masked_lm_accuracy.update_state(
            y["masked_lm_ids"], y_pred["masked_lm_logits"], sample_weight=weights
        )
        self.next_sentence_loss.update_state(next_sentence_losses)
        self.next_sentence_accuracy.update_state(
            y["next_sentence_labels"], y_pred["next_sentence_logits"]
        )
        return self.get_metrics_result()


def _counts(y):
    """The masked-LM predictions (weight 1) and the examples of `y`, summed
    over the replicas of a `tf.distribute` strategy."""
    weights = ops.cast(y["masked_lm_weights"], "float32")
    counts = ops.stack([ops.sum(weights), ops.cast(ops.shape(weights)[0], "float32")])
    counts = training.sum_over_replicas(counts)
    return counts[0], counts[1]
