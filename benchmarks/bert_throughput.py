"""Training throughput of BERT with LAMB, Keras AdamW and AdamWeightDecay, side by side.

One model per optimizer, all built from the same `bert_config.json` and
trained on the same fixed synthetic batch in BERT's pre-training format; the
timed rounds alternate between the optimizers so that load on the machine
affects all alike. Prints examples per second (median over rounds) and each
optimizer's ratio to the second (by default LAMB / Keras AdamW).

    python benchmarks/bert_throughput.py --bert_config_file=configs/bert_config_tiny.json
"""

import platform

from absl import app
from absl import flags
import keras
import tensorflow as tf

import lamb
from lamb.models import bert
import throughput  # benchmarks/throughput.py

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "bert_config_file", "configs/bert_config_tiny.json", "The BERT config to benchmark."
)
flags.DEFINE_integer("train_batch_size", 64, "Examples per step.")
flags.DEFINE_integer("max_seq_length", 128, "Sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked-LM predictions per sequence.")
flags.DEFINE_integer("steps", 10, "Timed steps per round.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per optimizer (alternating).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
flags.DEFINE_list(
    "optimizers", ["lamb", "keras_adamw", "adamw"],
    "Optimizers to compare (`create_optimizer` types: lamb.OPTIMIZER_TYPES); "
    "ratios are to the second.",
)


def build(config, optimizer_type):
    keras.utils.set_random_seed(0)
    model = bert.BertPretrainer(config)
    model.compile(
        optimizer=lamb.create_optimizer(1e-3, 10000, 1000, optimizer_type=optimizer_type),
        jit_compile=FLAGS.jit_compile,
    )
    return model


def main(argv):
    del argv
    config = bert.load_bert_config(FLAGS.bert_config_file)
    x, y = throughput.synthetic_batch(
        config, FLAGS.train_batch_size, FLAGS.max_seq_length, FLAGS.max_predictions_per_seq
    )
    models = {name: build(config, name) for name in FLAGS.optimizers}
    rates = throughput.examples_per_second(
        models, x, y, FLAGS.train_batch_size, FLAGS.steps, FLAGS.rounds
    )
    print(
        f"BERT {FLAGS.bert_config_file}: batch {FLAGS.train_batch_size}, sequence "
        f"{FLAGS.max_seq_length}, {FLAGS.max_predictions_per_seq} predictions, "
        f"jit_compile={FLAGS.jit_compile}; TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, {platform.processor() or platform.machine()}"
    )
    throughput.print_rates(rates, reference=FLAGS.optimizers[1])

if __name__ == "__main__":
    app.run(main)
