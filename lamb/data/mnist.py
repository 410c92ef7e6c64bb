"""MNIST from tensorflow-datasets, held in memory, served through `tf.data`.

Offline, tensorflow-datasets prepares `mnist` from the four canonical IDX
files (`train-images-idx3-ubyte.gz`, ...) found in `manual_dir`; online it
downloads them. The prepared dataset is kept in `data_dir` (tfds' default,
`~/tensorflow_datasets` or `$TFDS_DATA_DIR`, when `None`).

Before tensorflow-datasets downloads (the dataset not prepared, no
`manual_dir`), one request with a short timeout checks that the files can be
reached: without a network tfds would retry for minutes and end in a
traceback; here `MnistUnavailable` says in a few seconds what to do.
"""

import os
import urllib.parse

import numpy as np
import requests
import tensorflow as tf
import tensorflow_datasets as tfds

SPLIT_SIZES = {"train": 60_000, "test": 10_000}
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
PROBE_TIMEOUT_SECONDS = 5.0
REMEDY = (
    "pass --mnist_manual_dir (or set MNIST_MANUAL_DIR) to a folder with the four IDX "
    f"files {', '.join(IDX_FILES)}"
)


class MnistUnavailable(RuntimeError):
    """MNIST is neither prepared, nor downloadable, nor in the manual folder."""


def check_manual_dir(manual_dir):
    """Raises `MnistUnavailable` naming the IDX files missing from `manual_dir`."""
    missing = [name for name in IDX_FILES if not os.path.isfile(os.path.join(manual_dir, name))]
    if missing:
        raise MnistUnavailable(
            f"MNIST: {manual_dir} (--mnist_manual_dir or $MNIST_MANUAL_DIR) lacks "
            f"{', '.join(missing)} (of the four IDX files {', '.join(IDX_FILES)})."
        )


def check_download(url, timeout=PROBE_TIMEOUT_SECONDS):
    """Raises `MnistUnavailable` unless one HEAD request to `url` (no
    retries, the environment's proxies) is answered within `timeout` s."""
    try:
        requests.head(url, timeout=timeout, allow_redirects=True).raise_for_status()
    except requests.RequestException as error:
        host = urllib.parse.urlparse(url).netloc
        raise MnistUnavailable(
            f"MNIST could not be downloaded from {host} ({type(error).__name__}; "
            f"{timeout:g} s timeout); {REMEDY}."
        ) from None


def load_mnist(split, num_examples=None, data_dir=None, manual_dir=None):
    """The first `num_examples` images and labels of an MNIST split.

    "First" is in tensorflow-datasets' stored order, which is fixed but not
    the order of the IDX files.

    Args:
        split: `"train"` or `"test"`.
        num_examples: How many examples, 1 to the split's size; `None` for all.
        data_dir: tensorflow-datasets' data directory (`None`: its default).
        manual_dir: A directory holding the MNIST IDX files, used instead of
            downloading them (`None`: download if not yet prepared).

    Raises:
        MnistUnavailable: The dataset is not prepared in `data_dir` and
            cannot be downloaded (found in seconds), or `manual_dir` lacks
            IDX files.

    Returns:
        `(images, labels)`: uint8 `[n, 28, 28]` and int32 `[n]` NumPy arrays.
    """
    if split not in SPLIT_SIZES:
        raise ValueError(f"`split` must be one of {sorted(SPLIT_SIZES)}; received split={split!r}.")
    size = SPLIT_SIZES[split]
    if num_examples is not None and not 1 <= num_examples <= size:
        raise ValueError(
            f"`num_examples` for the {split} split must be in [1, {size}]; "
            f"received num_examples={num_examples!r}."
        )
    builder = tfds.builder("mnist", data_dir=data_dir)
    downloads = False
    # (is_prepared warns about a folder that is not there: ask only if it is.)
    if not (builder.data_path.exists() and builder.is_prepared()):
        if manual_dir:
            check_manual_dir(manual_dir)
        else:
            check_download(type(builder).URL + IDX_FILES[0])
            downloads = True
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    try:
        images, labels = tfds.as_numpy(
            tfds.load(
                "mnist",
                split=split if num_examples is None else f"{split}[:{num_examples}]",
                batch_size=-1,
                as_supervised=True,
                data_dir=data_dir,
                download_and_prepare_kwargs={"download_config": download_config},
            )
        )
    except requests.RequestException as error:
        if not downloads:
            raise
        raise MnistUnavailable(
            f"MNIST could not be downloaded ({type(error).__name__}); {REMEDY}."
        ) from error
    return images[..., 0], labels.astype(np.int32)


def train_dataset(images, labels, batch_size, seed):
    """An endless stream of shuffled `(float images in [0, 1], labels)` batches.

    The examples are reshuffled on every pass and a batch may straddle two
    passes, as TF1's `mnist.train.next_batch` did; train with
    `steps_per_epoch`.
    """
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size)
        .map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_dataset(images, labels, batch_size):
    """All examples once, in order, as `(float images in [0, 1], labels)` batches."""
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size)
        .map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _to_float(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels
