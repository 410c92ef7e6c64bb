"""The checkpoints of the JAX backend, with the guarantees of TensorFlow's
(`lamb.pretraining.checkpoints.Checkpoints`), written by orbax-checkpoint.

Why orbax-checkpoint rather than Keras's own saving (`save_weights`): under
`keras.distribution` the variables are `jax.Array`s sharded over devices and
processes. Orbax writes each process's shards in parallel and reads each array
back straight into the layout of the live variable (so a run resumes under
another `--distribution`); it writes a checkpoint into a temporary folder,
renamed once every process is done (a run killed while saving leaves the
previous checkpoints intact). Keras's `.weights.h5` files gather every array
on one host and are written in place.

Orbax does not notice altered bytes: a flipped byte in an array's file
restores silently as another value (measured with orbax-checkpoint 0.12.8);
and a truncated file makes its reader threads print thousands of lines of
tracebacks, also at exit. So a restore first checks each file against its
SHA-256 in `FILE_DIGEST`, written last into the checkpoint's folder once
orbax has committed it (a checkpoint without it was not saved to the end),
and reads no damaged checkpoint with orbax. Then it checks the arrays it read
against their `checksums`, saved with them in the same atomic folder: that
also notices bytes altered before they reached the files.
"""

import functools
import hashlib
import json
import logging as python_logging
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import orbax.checkpoint as ocp
import tensorflow as tf

from lamb.pretraining.checkpoints import (
    ORBAX_STEP_PREFIX, first_line, none_readable, orbax_checkpoint_steps, read_newest_readable,
    refuse_checkpoints_of,
)

ITEMS = ("model", "optimizer")
FILE_DIGEST = "file_digest.json"  # In each checkpoint: {file's path in it: its SHA-256}.


class DamagedCheckpoint(Exception):
    """A checkpoint's files are missing, truncated or altered."""


def step_path(directory, step):
    return os.path.join(directory, f"{ORBAX_STEP_PREFIX}_{step}")


def sha256(path):
    """The SHA-256 hex digest of the file `path`'s bytes."""
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def write_file_digest(folder):
    """Writes `FILE_DIGEST` into the checkpoint `folder`: the SHA-256 of
    each of its files, whole or not at all (a temporary file renamed)."""
    digest = {
        os.path.relpath(os.path.join(root, name), folder): sha256(os.path.join(root, name))
        for root, _, names in tf.io.gfile.walk(folder) for name in names
    }
    temporary = os.path.join(folder, FILE_DIGEST + ".tmp")
    with tf.io.gfile.GFile(temporary, "w") as f:
        json.dump(digest, f, indent=0, sort_keys=True)
    tf.io.gfile.rename(temporary, os.path.join(folder, FILE_DIGEST), overwrite=True)


def check_files(folder, items):
    """Raises DamagedCheckpoint unless the files that a restore of `items`
    reads from the checkpoint `folder` (its metadata, digest and `items`)
    have their SHA-256 in its `FILE_DIGEST`."""
    try:
        with tf.io.gfile.GFile(os.path.join(folder, FILE_DIGEST)) as f:
            recorded = json.load(f)
    except tf.errors.NotFoundError:
        raise DamagedCheckpoint(f"no {FILE_DIGEST}: its save did not finish") from None
    except (tf.errors.OpError, ValueError) as error:
        raise DamagedCheckpoint(f"{FILE_DIGEST}: {first_line(error)}") from None
    for path, expected in sorted(recorded.items()):
        top = path.split(os.sep)[0]
        if top != path and top not in ("digest", *items):
            continue
        if not tf.io.gfile.exists(os.path.join(folder, path)):
            raise DamagedCheckpoint(f"{path} is missing")
        if sha256(os.path.join(folder, path)) != expected:
            raise DamagedCheckpoint(f"{path} differs from its SHA-256 in {FILE_DIGEST}")


@functools.cache
def hide_orbax_info_logs():
    """Drops orbax's INFO log records (dozens a save) from absl's handler."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__))) + os.sep

    def keep(record):
        return record.levelno >= python_logging.WARNING or not record.pathname.startswith(folder)

    logging.get_absl_handler().addFilter(keep)


@jax.jit
def checksums(arrays):
    """Per array, the sum of its bit patterns (as uint32) times 1, 3, 5, ...
    by element, mod 2**32: integer sums are exact in any order, so the value
    is the same on every device layout, and any one altered element changes it."""
    sums = []
    for array in arrays:
        bits = jax.lax.bitcast_convert_type(
            array, {1: jnp.uint8, 2: jnp.uint16}.get(array.dtype.itemsize, jnp.uint32)
        ).astype(jnp.uint32)
        weights = jnp.arange(bits.size, dtype=jnp.uint32).reshape(bits.shape) * 2 + 1
        sums.append(jnp.sum(bits * weights, dtype=jnp.uint32))
    return sums


def describe(variables, values):
    """The digest entries of `variables` (with these `values`): path, shape,
    dtype and checksum of each."""
    return [
        {"path": variable.path, "shape": list(value.shape), "dtype": str(value.dtype),
         "checksum": int(checksum)}
        for variable, value, checksum in zip(variables, values, checksums(values))
    ]


class JaxCheckpoints:
    """Step-numbered orbax checkpoints `<output_dir>/ckpt_<step>` of the
    weights, the optimizer state (iterations, moments, accumulators), the
    dropout RNG state (the seed generators' variables are model variables)
    and the step (in the digest).

    Every process saves and restores (its own shards); only process 0 writes
    the summaries and metrics (`chief`).

    Args:
        output_dir: The run's folder.
        model: The compiled model, its optimizer built.
        max_to_keep: How many recent checkpoints to keep.
        model_description: What `model` is made of (flags, files), for the
            error when a checkpoint does not fit it.
    """

    def __init__(self, output_dir, model, max_to_keep, model_description):
        self.output_dir = output_dir
        self.model = model
        self.max_to_keep = max_to_keep
        self.model_description = model_description
        self.chief = jax.process_index() == 0
        hide_orbax_info_logs()
        self.manager = None  # Opened at the first save.
        self.saved_step = None
        self.damaged_steps = []  # Newer than the one restored; removed at the first save.

    def _variables(self):
        return {"model": self.model.variables, "optimizer": self.model.optimizer.variables}

    def restore(self, init_checkpoint, weights_only=False):
        """Restores the newest readable checkpoint of the output folder (else
        `init_checkpoint`'s weights); returns the step: the restored one, or
        0 for `init_checkpoint`. With `weights_only` (to evaluate), only the
        weights are read, the folder is left as it is, and an
        `init_checkpoint`'s step is returned."""
        items = ("model",) if weights_only else ITEMS
        steps = orbax_checkpoint_steps(self.output_dir)
        step = read_newest_readable(
            self.output_dir, {s: step_path(self.output_dir, s) for s in steps},
            lambda path: self._damage(path, items), init_checkpoint, weights_only,
        )
        if step is not None:
            self.damaged_steps = [s for s in steps if s > step]
            self.saved_step = step
            return step
        if steps:
            raise none_readable(self.output_dir, f"steps {steps}")
        refuse_checkpoints_of("tensorflow", self.output_dir, init_checkpoint)
        if not init_checkpoint:
            return 0
        init_steps = orbax_checkpoint_steps(init_checkpoint)
        path = step_path(init_checkpoint, init_steps[-1]) if init_steps else init_checkpoint
        logging.info("Initializing the weights from %s", path)
        try:
            step = self._read(path, ("model",))
        except DamagedCheckpoint as damage:
            raise ValueError(
                f"--init_checkpoint: {path} is missing or damaged ({damage})."
            ) from None
        return step if weights_only else 0

    def _damage(self, path, items):
        """Reads the checkpoint `path` as `_read` does; returns None, or why it is damaged."""
        try:
            self._read(path, items)
        except DamagedCheckpoint as damage:
            return str(damage)
        return None

    def _read(self, path, items):
        """Reads the `items` of the checkpoint `path` into the variables, laid
        out like them, and returns its step. Raises DamagedCheckpoint (then no
        variable changes), or ValueError if it does not fit the model."""
        check_files(path, items)
        checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        # Orbax and TensorStore raise many types (bare Exceptions among them)
        # for missing and unreadable files: any error of a read is damage.
        try:
            digest = checkpointer.restore(
                path, args=ocp.args.Composite(digest=ocp.args.JsonRestore())
            )["digest"]
        except Exception as error:  # noqa: BLE001
            raise DamagedCheckpoint(
                f"digest: {type(error).__name__}: {first_line(error)}"
            ) from None
        variables = self._variables()
        for item in items:
            self._check_fits(path, item, digest[item], variables[item])
        targets = {
            item: [jax.ShapeDtypeStruct(v.shape, v.value.dtype, sharding=v.value.sharding)
                   for v in variables[item]]
            for item in items
        }
        try:
            restored = checkpointer.restore(
                path,
                args=ocp.args.Composite(
                    **{item: ocp.args.StandardRestore(targets[item]) for item in items}
                ),
            )
        except Exception as error:  # noqa: BLE001
            raise DamagedCheckpoint(f"{type(error).__name__}: {first_line(error)}") from None
        for item in items:
            for entry, checksum in zip(digest[item], checksums(list(restored[item]))):
                if int(checksum) != entry["checksum"]:
                    raise DamagedCheckpoint(
                        f"{item} variable {entry['path']} differs from its checksum"
                    )
        for item in items:
            for variable, value in zip(variables[item], restored[item]):
                variable.assign(value)
        return digest["global_step"]

    def _check_fits(self, path, item, entries, variables):
        """Raises ValueError unless the `entries` of a digest describe `variables`."""
        found = [(tuple(e["shape"]), e["dtype"]) for e in entries]
        wanted = [(tuple(v.shape), str(v.value.dtype)) for v in variables]
        if found != wanted:
            first = next(
                (f"{e['path']} {a} in the checkpoint, {v.path} {b} in the model"
                 for e, a, v, b in zip(entries, found, variables, wanted) if a != b),
                f"{len(found)} variables in the checkpoint, {len(wanted)} in the model",
            )
            raise ValueError(
                f"{path}: cannot restore this checkpoint into the model of "
                f"{self.model_description} ({item}: {first})."
            )

    def save(self, step):
        """Saves the checkpoint of `step` unless it was restored or saved already."""
        if step == self.saved_step:
            return
        self.model.jax_state_sync()  # fit holds the newest values apart until synced.
        if self.manager is None:
            self.manager = ocp.CheckpointManager(
                self.output_dir,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.max_to_keep,
                    step_prefix=ORBAX_STEP_PREFIX,
                    enable_async_checkpointing=False,
                ),
            )
            for damaged in self.damaged_steps:
                logging.warning("Removing the damaged checkpoint %s.",
                                step_path(self.output_dir, damaged))
                self.manager.delete(damaged)
        values = {item: [v.value for v in variables]
                  for item, variables in self._variables().items()}
        digest = {"global_step": step}
        digest.update({item: describe(self._variables()[item], values[item]) for item in ITEMS})
        self.manager.save(
            step,
            args=ocp.args.Composite(
                digest=ocp.args.JsonSave(digest),
                **{item: ocp.args.StandardSave(values[item]) for item in ITEMS},
            ),
            force=True,
        )
        self.manager.wait_until_finished()
        if self.chief:
            write_file_digest(step_path(self.output_dir, step))
        if jax.process_count() > 1:  # Every process returns once the checkpoint is whole.
            multihost_utils.sync_global_devices(f"file digest of checkpoint {step} written")
        self.saved_step = step
