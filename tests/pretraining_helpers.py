"""Small generated corpus, vocabulary, BERT config and app runner for the BERT tests."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests.subprocesses import REPO, app_env

SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
WORDS = [f"w{i}" for i in range(60)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NUM_DOCUMENTS = 30
SEQ_LENGTH = 32
PREDICTIONS = 5


def write_corpus(path, num_documents=NUM_DOCUMENTS, seed=0):
    """Documents of 4-8 sentences "dD sS w.. w.. ." (blank line between documents).

    Each sentence names its document and position, so a test can tell which
    sentence an example's segments came from.
    """
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for d in range(num_documents):
            for s in range(rng.randint(4, 8)):
                words = rng.choices(WORDS, k=rng.randint(3, 9))
                f.write(f"d{d} s{s} {' '.join(words)} .\n")
            f.write("\n")


def write_vocab(path, num_documents=NUM_DOCUMENTS):
    tokens = SPECIALS + [f"d{d}" for d in range(num_documents)] + [f"s{s}" for s in range(8)]
    tokens += WORDS + [".", ","]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return tokens


def write_bert_config(path, vocab_size, dropout=0.0, **overrides):
    config = {
        "attention_probs_dropout_prob": dropout,
        "hidden_act": "gelu",
        "hidden_dropout_prob": dropout,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
    }
    config.update(overrides)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return config


def tiny_bert_config(directory):
    """Writes `directory`/bert_config.json, a BERT of 1 layer of hidden 32 over
    a vocabulary of 64 (the benchmarks' tests); returns its path."""
    path = os.path.join(directory, "bert_config.json")
    write_bert_config(path, vocab_size=64, num_hidden_layers=1)
    return path


def make_pretraining_data(directory, dupe_factor=2):
    """Corpus, vocab, TFRecords (two files) and BERT configs in `directory`."""
    from lamb.data import pretraining

    corpus = os.path.join(directory, "corpus.txt")
    vocab_file = os.path.join(directory, "vocab.txt")
    write_corpus(corpus)
    vocab = write_vocab(vocab_file)
    documents = pretraining.read_documents([corpus], vocab, do_lower_case=True)
    instances = pretraining.create_training_instances(
        documents, vocab, SEQ_LENGTH, dupe_factor, 0.1, 0.15, PREDICTIONS, False, random.Random(1)
    )
    records = [os.path.join(directory, f"data-{i}.tfrecord") for i in range(2)]
    pretraining.write_instance_to_example_files(instances, vocab, SEQ_LENGTH, PREDICTIONS, records)
    write_bert_config(os.path.join(directory, "bert_config.json"), len(vocab))
    write_bert_config(os.path.join(directory, "bert_config_dropout.json"), len(vocab), dropout=0.1)
    return {"records": records, "vocab": vocab_file, "corpus": corpus, "dir": directory}


def app_args(data, output_dir, config="bert_config.json", **flags):
    """Flags of a small `lamb.run_pretraining` run on `data`."""
    values = {
        "bert_config_file": os.path.join(data["dir"], config),
        "input_file": os.path.join(data["dir"], "data-*.tfrecord"),
        "output_dir": output_dir,
        "max_seq_length": SEQ_LENGTH,
        "max_predictions_per_seq": PREDICTIONS,
        "train_batch_size": 16,
        "learning_rate": 1e-2,
        "num_train_steps": 12,
        "num_warmup_steps": 3,
        "save_checkpoints_steps": 4,
        "iterations_per_loop": 2,
        "optimizer": "lamb",
    }
    values.update(flags)
    return [f"--{name}={value}" for name, value in values.items()]


def run_app(args, timeout=240, **env):
    """Runs `python -m lamb.run_pretraining args`; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "lamb.run_pretraining", *args],
        env=app_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_app(args, log_path, **env):
    """Starts the app in the background, its output to `log_path`."""
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "lamb.run_pretraining", *args],
        env=app_env(**env),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def checkpoint_values(path):
    """`{name: array}` of every tensor in a checkpoint, read with TF's own reader."""
    reader = tf.train.load_checkpoint(path)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith("_CHECKPOINTABLE") and "save_counter" not in name
    }


def model_weights(path):
    """The model's variables in a checkpoint, by list index."""
    return {
        name: value for name, value in checkpoint_values(path).items() if name.startswith("model/")
    }


def assert_same_weights(a, b, rtol=0.0, atol=0.0):
    assert a.keys() == b.keys() and a
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def tensorboard_scalars(folder):
    """`{tag: {step: value}}` of the scalar summaries in the event files of `folder`."""
    values = {}
    for name in os.listdir(folder):
        for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    values.setdefault(value.tag, {})[event.step] = float(
                        tf.make_ndarray(value.tensor)
                    )
    return values
