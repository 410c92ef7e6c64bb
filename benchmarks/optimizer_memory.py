"""Optimizer-state memory per parameter for BERT-Base's variables.

    python benchmarks/optimizer_memory.py [--bert_config=configs/bert_config_base.json]

Creates the 110M float32 variables of BERT pre-training (the encoder of
`--bert_config`, the pooler, the masked-LM and next-sentence heads), builds
each optimizer on them, and counts the bytes of every variable the optimizer
created (moments, scales, step counter, learning rate, per-layer statistics)
from its shape and dtype. Prints bytes per parameter and the ratio to LAMB.
"""

import contextlib
import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import throughput  # noqa: E402  (benchmarks/throughput.py)

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "bert_config",
    os.path.join(os.path.dirname(__file__), "..", "configs", "bert_config_base.json"),
    "A BERT config (BERT's JSON format).",
)

OPTIMIZERS = ("lamb", "lamb16", "adamw", "lars", "adam", "keras_adamw", "keras_lamb")


def bert_pretraining_shapes(config):
    """`(path, shape)` of BERT pre-training's variables, with BERT's names."""
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    intermediate = config["intermediate_size"]
    layer_norm = [("LayerNorm/gamma", (hidden,)), ("LayerNorm/beta", (hidden,))]

    def dense(path, inputs, outputs):
        return [(f"{path}/kernel", (inputs, outputs)), (f"{path}/bias", (outputs,))]

    shapes = [
        ("bert/embeddings/word_embeddings", (vocab, hidden)),
        ("bert/embeddings/position_embeddings", (config["max_position_embeddings"], hidden)),
        ("bert/embeddings/token_type_embeddings", (config["type_vocab_size"], hidden)),
    ] + [(f"bert/embeddings/{path}", shape) for path, shape in layer_norm]
    for i in range(config["num_hidden_layers"]):
        layer = f"bert/encoder/layer_{i}"
        for name in ("query", "key", "value"):
            shapes += dense(f"{layer}/attention/self/{name}", hidden, hidden)
        shapes += dense(f"{layer}/attention/output/dense", hidden, hidden)
        shapes += [(f"{layer}/attention/output/{p}", s) for p, s in layer_norm]
        shapes += dense(f"{layer}/intermediate/dense", hidden, intermediate)
        shapes += dense(f"{layer}/output/dense", intermediate, hidden)
        shapes += [(f"{layer}/output/{p}", s) for p, s in layer_norm]
    shapes += dense("bert/pooler/dense", hidden, hidden)
    # Masked LM: a transform, and an output bias (its weights are the embeddings).
    shapes += dense("cls/predictions/transform/dense", hidden, hidden)
    shapes += [(f"cls/predictions/transform/{p}", s) for p, s in layer_norm]
    shapes += [("cls/predictions/output_bias", (vocab,))]
    shapes += dense("cls/seq_relationship", hidden, 2)
    return shapes


def make_variables(shapes):
    variables = []
    for path, shape in shapes:
        *scopes, name = path.split("/")
        with contextlib.ExitStack() as stack:
            for scope in scopes:
                stack.enter_context(keras.name_scope(scope))
            variables.append(keras.Variable(initializer="zeros", shape=shape, dtype="float32", name=name))
    return variables


def state_bytes(optimizer):
    return sum(
        math.prod(v.shape) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
        for v in optimizer.variables
    )


def main(argv):
    del argv
    with open(FLAGS.bert_config) as file:
        config = json.load(file)
    variables = make_variables(bert_pretraining_shapes(config))
    parameters = sum(math.prod(v.shape) for v in variables)
    print(f"{len(variables)} variables, {parameters:,} parameters (float32, "
          f"{4 * parameters / 2**20:,.0f} MiB), backend {keras.backend.backend()}")
    results = {}
    for name in OPTIMIZERS:
        optimizer = throughput.make_optimizer(name, ["LayerNorm", "bias"])
        optimizer.build(variables)
        results[name] = state_bytes(optimizer)
        del optimizer
    print()
    print("| optimizer | state (MiB) | bytes / parameter | ratio to lamb |")
    print("|---|---:|---:|---:|")
    for name, size in results.items():
        print(f"| {name} | {size / 2**20:,.1f} | {size / parameters:.3f} | {size / results['lamb']:.3f} |")


if __name__ == "__main__":
    app.run(main)
