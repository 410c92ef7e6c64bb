"""google-research/bert's own code, run from a checkout under TensorFlow 2.

BERT's `tokenization.py` and `create_pretraining_data.py` are TF1 code
(`tf.flags`, `tf.gfile`, `tf.python_io`, `tf.logging`): while they are
imported, `tensorflow` resolves to `tensorflow.compat.v1`, which has them.

    python benchmarks/bert_reference.py --bert_dir=../bert -- --input_file=... (BERT's flags)

runs BERT's `create_pretraining_data.py` with those flags.
"""

import importlib
import os
import sys


def load_bert_module(bert_dir, name):
    """The module `name` (e.g. "tokenization") of the checkout at `bert_dir`."""
    if not os.path.exists(os.path.join(bert_dir, "tokenization.py")):
        raise FileNotFoundError(f"--bert_dir={bert_dir} is not a google-research/bert checkout.")
    import tensorflow.compat.v1 as tf1

    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = tf1
    sys.path.insert(0, os.path.abspath(bert_dir))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
        sys.modules["tensorflow"] = saved


def main():
    args = sys.argv[1:]
    if len(args) < 2 or not args[0].startswith("--bert_dir=") or args[1] != "--":
        sys.exit(__doc__)
    bert_dir = args[0].split("=", 1)[1]
    tool = load_bert_module(bert_dir, "create_pretraining_data")
    tool.tf.app.run(tool.main, argv=[os.path.join(bert_dir, "create_pretraining_data.py")] + args[2:])


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
