"""MNIST from tensorflow-datasets, held in memory, served through `tf.data`.

Offline, tensorflow-datasets prepares `mnist` from the four canonical IDX
files (`train-images-idx3-ubyte.gz`, ...) found in `manual_dir`; online it
downloads them. The prepared dataset is kept in `data_dir` (tfds' default,
`~/tensorflow_datasets` or `$TFDS_DATA_DIR`, when `None`).

Before tensorflow-datasets downloads (the dataset not prepared, no
`manual_dir`), one request with a short timeout checks that the files can be
reached: without a network tfds would retry for minutes and end in a
traceback; here `MnistUnavailable` says in a few seconds what to do. A
`manual_dir` is checked whenever it is given, also when the dataset is
prepared already: its four files must be the canonical ones (the sizes and
SHA-256 sums tensorflow-datasets registers), so the prepared copy holds the
same images. tensorflow-datasets' log lines and progress bars are held back;
`prepare_mnist` says in one line which data is used.
"""

import contextlib
import hashlib
import io
import logging
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
    """Raises `MnistUnavailable` unless `manual_dir` is a folder with the four
    canonical IDX files: naming the missing ones, or the first damaged or other one."""
    where = f"{manual_dir} (--mnist_manual_dir or $MNIST_MANUAL_DIR)"
    if not os.path.isdir(manual_dir):
        raise MnistUnavailable(f"MNIST: {where} is not a folder.")
    missing = [name for name in IDX_FILES if not os.path.isfile(os.path.join(manual_dir, name))]
    if missing:
        raise MnistUnavailable(
            f"MNIST: {where} lacks {', '.join(missing)} (of the four IDX files "
            f"{', '.join(IDX_FILES)})."
        )
    expected = {info.filename: info for info in tfds.builder_cls("mnist").url_infos.values()}
    for name in IDX_FILES:
        path = os.path.join(manual_dir, name)
        size, sha256 = os.path.getsize(path), _sha256(path)
        if (size, sha256) != (expected[name].size, expected[name].checksum):
            raise MnistUnavailable(
                f"MNIST: {path} is not the canonical {name} ({size:,} bytes, SHA-256 "
                f"{sha256[:12]}...; expected {expected[name].size:,} bytes, "
                f"{expected[name].checksum[:12]}...): damaged or another dataset's; replace it "
                f"with the file from {tfds.builder_cls('mnist').URL}{name}."
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


def prepare_mnist(data_dir=None, manual_dir=None, log=None):
    """Makes sure MNIST is prepared in `data_dir`, quietly.

    Checks `manual_dir` whenever it is given (see `check_manual_dir`);
    prepares from it, or downloads, only if the dataset is not prepared yet.
    `log`, if given, gets one line saying which data is used (the prepared
    copy, or the files it is being prepared from), before any preparation.
    Raises `MnistUnavailable` as `load_mnist` does.
    """
    log = log or (lambda line: None)
    with _quiet_tfds():
        builder = tfds.builder("mnist", data_dir=data_dir)
    if manual_dir:
        check_manual_dir(manual_dir)
    # (is_prepared warns about a folder that is not there: ask only if it is.)
    if builder.data_path.exists() and builder.is_prepared():
        same_files = f" (the same files as {manual_dir})" if manual_dir else ""
        log(f"MNIST: tensorflow-datasets' prepared copy in {builder.data_path}{same_files}")
        return
    if manual_dir:
        source = f"the IDX files in {manual_dir}"
    else:
        check_download(type(builder).URL + IDX_FILES[0])
        source = f"files downloaded from {urllib.parse.urlparse(type(builder).URL).netloc}"
    log(f"MNIST: preparing tensorflow-datasets' copy in {builder.data_path} from {source} (once)")
    try:
        with _quiet_tfds():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
            )
    except requests.RequestException as error:
        if manual_dir:
            raise
        raise MnistUnavailable(
            f"MNIST could not be downloaded ({type(error).__name__}); {REMEDY}."
        ) from error


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
            cannot be downloaded (found in seconds), or `manual_dir` is not a
            folder with the four canonical IDX files.

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
    prepare_mnist(data_dir, manual_dir)
    with _quiet_tfds():
        images, labels = tfds.as_numpy(
            tfds.load(
                "mnist",
                split=split if num_examples is None else f"{split}[:{num_examples}]",
                batch_size=-1,
                as_supervised=True,
                data_dir=data_dir,
                download=False,
            )
        )
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


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_tfds():
    """tensorflow-datasets' log records below errors (it logs through absl's
    logger), progress bars and printed lines held back."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        absl_logger.setLevel(level)
