"""Step-numbered checkpoints of everything a resume needs: weights, optimizer
state, dropout RNG state and the step; damaged ones reported and skipped."""

import os
import re
import time

from absl import logging
import keras
import tensorflow as tf

from lamb import distribute

CHECKPOINT_STATE = "checkpoint"
ORBAX_STEP_PREFIX = "ckpt"  # The JAX backend's checkpoints: folders ckpt_<step>.


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def checkpoint_steps(directory):
    """The steps of the `ckpt-<step>` checkpoints with files in `directory`."""
    if not tf.io.gfile.isdir(directory):
        return []
    steps = set()
    for name in tf.io.gfile.listdir(directory):
        match = re.fullmatch(r"ckpt-(\d+)\.(index|data-\d{5}-of-\d{5})", name)
        if match:
            steps.add(int(match.group(1)))
    return sorted(steps)


def orbax_checkpoint_steps(directory):
    """The steps of the JAX backend's `ckpt_<step>` checkpoint folders in
    `directory` (orbax's whole ones: not its temporary folders)."""
    if not tf.io.gfile.isdir(directory):
        return []
    steps = []
    for name in tf.io.gfile.listdir(directory):
        match = re.fullmatch(rf"{ORBAX_STEP_PREFIX}_(\d+)/?", name)
        if match:
            steps.append(int(match.group(1)))
    return sorted(steps)


def holds_checkpoints(directory):
    """Whether `directory` has checkpoints (TensorFlow's files, their state
    file, or the JAX backend's folders)."""
    return bool(checkpoint_steps(directory) or orbax_checkpoint_steps(directory)) or (
        tf.io.gfile.exists(os.path.join(directory, CHECKPOINT_STATE))
    )


def remove_stale_temp_folders(output_dir):
    """Removes the folders of checkpoints being written, left only by a run
    killed while saving: TensorFlow's `ckpt-<step>_temp` (merged into
    `ckpt-<step>.*` when whole; it "can be safely removed") and orbax's
    `ckpt_<step>.orbax-checkpoint-tmp*` (renamed `ckpt_<step>` when whole)."""
    for name in tf.io.gfile.listdir(output_dir):
        if re.fullmatch(rf"ckpt-\d+_temp|{ORBAX_STEP_PREFIX}_\d+\.orbax-checkpoint-tmp.*",
                        name.rstrip("/")):
            path = os.path.join(output_dir, name.rstrip("/"))
            logging.warning("Removing %s, left by a run killed while saving a checkpoint.", path)
            tf.io.gfile.rmtree(path)



def checkpoint_damage(path):
    """Why the checkpoint `path` cannot be read (missing, truncated or altered
    files), or None if all its tensors read back with their checksums."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as error:
        return f"{type(error).__name__}: {first_line(error)}"
    return None


def read_newest_readable(output_dir, paths, read, init_checkpoint, weights_only):
    """Reads the newest of the checkpoints `paths` (`{step: path}`) of
    `output_dir` that `read(path)` finds whole (it returns None, or why the
    files are damaged), warning about each damaged one and about
    `init_checkpoint`, unused then; returns its step, or None if none is whole."""
    for step in sorted(paths, reverse=True):
        damage = read(paths[step])
        if damage:
            logging.warning("Checkpoint %s is damaged (%s); trying the previous one.",
                            paths[step], damage)
            continue
        logging.info("%s %s", "Evaluating" if weights_only else "Resuming from", paths[step])
        if init_checkpoint:
            logging.warning(
                "--init_checkpoint=%s has no effect: --output_dir=%s holds checkpoints "
                "of its own, resumed instead.", init_checkpoint, output_dir,
            )
        return step
    return None


def none_readable(output_dir, held):
    """The error for an `output_dir` that holds checkpoints (`held` says
    which), none of them readable."""
    return ValueError(
        f"--output_dir={output_dir} holds checkpoints ({held}) but none is readable (see the "
        "warnings). Move them away to start from step 0, or use another --output_dir."
    )


# Each backend's checkpoints: its name, what they look like, their steps in a folder.
BACKEND_CHECKPOINTS = {
    "tensorflow": ("TensorFlow", "ckpt-<step>.index files", checkpoint_steps),
    "jax": ("JAX", f"{ORBAX_STEP_PREFIX}_<step> folders", orbax_checkpoint_steps),
}


def refuse_checkpoints_of(backend, output_dir, init_checkpoint):
    """Raises ValueError if --output_dir or --init_checkpoint holds checkpoints
    of `backend`, which the other backend cannot read."""
    name, files, steps = BACKEND_CHECKPOINTS[backend]
    other, (other_name, _, _) = next(
        (b, entry) for b, entry in BACKEND_CHECKPOINTS.items() if b != backend
    )
    for flag, folder in (("--output_dir", output_dir), ("--init_checkpoint", init_checkpoint)):
        if folder and steps(folder):
            raise ValueError(
                f"{flag}={folder} holds checkpoints of the {name} backend ({files}), which the "
                f"{other_name} backend cannot read: use KERAS_BACKEND={backend}, or another "
                "folder."
            )


def make_checkpoints(output_dir, model, strategy, max_to_keep, model_description):
    """The checkpoints of the backend: TensorFlow's (`Checkpoints`), or under
    JAX orbax's (`jax_checkpoints.JaxCheckpoints`, imported only there)."""
    if keras.backend.backend() == "jax":
        try:
            from lamb.pretraining.jax_checkpoints import JaxCheckpoints
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("orbax"):
                raise
            raise RuntimeError(
                "Checkpoints under KERAS_BACKEND=jax need orbax-checkpoint, which is not "
                'installed: pip install "lamb-keras[jax]" (or ".[jax]" in a checkout).'
            ) from None
        return JaxCheckpoints(output_dir, model, max_to_keep, model_description)
    return Checkpoints(output_dir, model, strategy, max_to_keep, model_description)


class Checkpoints:
    """Step-numbered checkpoints `<output_dir>/ckpt-<step>` of everything a resume needs.

    TensorFlow checkpoints are written whole before `<output_dir>/checkpoint`
    names them, so a process killed while saving leaves the previous one
    intact. A checkpoint damaged afterwards is reported and the previous one
    used; a damaged or missing state file is rebuilt from the checkpoints
    present. Under multi-worker training every worker saves (the variables may
    need collective reads); only the chief's copy is kept.

    Args:
        output_dir: The run's folder.
        model: The compiled model, its optimizer built.
        strategy: The distribution strategy.
        max_to_keep: How many recent checkpoints to keep.
        model_description: What `model` is made of (flags, files), for the
            error when a checkpoint does not fit it.
    """

    def __init__(self, output_dir, model, strategy, max_to_keep, model_description):
        self.max_to_keep = max_to_keep
        self.model_description = model_description
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = tf.train.Checkpoint(
            global_step=self.global_step,
            model=list(model.variables),
            optimizer=list(model.optimizer.variables),
        )
        self.model_variables = list(model.variables)
        self.output_dir = output_dir
        self.chief = distribute.is_chief(strategy)
        self.worker_dir = os.path.join(
            output_dir, f"worker_{getattr(strategy.cluster_resolver, 'task_id', 0)}_tmp"
        ) if not self.chief else None
        self.manager = None  # Opened at the first save, once `restore` has mended the state file.
        self.saved_step = None

    def restore(self, init_checkpoint, weights_only=False):
        """Restores the newest readable checkpoint of the output folder (else
        `init_checkpoint`'s weights); returns the step: the restored one, or
        0 for `init_checkpoint`. With `weights_only` (to evaluate), only the
        weights and the step are read, the folder is left as it is, and an
        `init_checkpoint`'s step is returned."""
        weights = tf.train.Checkpoint(global_step=self.global_step, model=self.model_variables)
        steps = checkpoint_steps(self.output_dir)
        state_path = os.path.join(self.output_dir, CHECKPOINT_STATE)
        state_readable = self._state_readable(state_path)
        step = read_newest_readable(
            self.output_dir,
            {s: os.path.join(self.output_dir, f"ckpt-{s}") for s in steps},
            lambda path: self._read(weights if weights_only else self.checkpoint, path),
            init_checkpoint,
            weights_only,
        )
        if step is not None:
            if not state_readable and self.chief and not weights_only:
                self._write_state([s for s in steps if s <= step])
            self.saved_step = step
            return int(self.global_step.numpy())
        if steps or tf.io.gfile.exists(state_path):
            raise none_readable(
                self.output_dir,
                f"{CHECKPOINT_STATE} state file: "
                f"{'readable' if state_readable else 'damaged or absent'}; steps {steps}",
            )
        refuse_checkpoints_of("jax", self.output_dir, init_checkpoint)
        if init_checkpoint:
            path = tf.train.latest_checkpoint(init_checkpoint) or init_checkpoint
            logging.info("Initializing the weights from %s", path)
            damage = self._read(
                weights if weights_only else tf.train.Checkpoint(model=self.model_variables), path
            )
            if damage:
                raise ValueError(f"--init_checkpoint: {path} is missing or damaged ({damage}).")
            if weights_only:
                return int(self.global_step.numpy())
        return 0

    @staticmethod
    def _state_readable(state_path):
        """Whether the state file exists and parses (logs a warning if it is damaged)."""
        if not tf.io.gfile.exists(state_path):
            return False
        try:
            if tf.train.get_checkpoint_state(os.path.dirname(state_path)) is not None:
                return True
        except ValueError:  # An empty file.
            pass
        logging.warning("%s is damaged; looking for the checkpoints themselves.", state_path)
        return False

    def _write_state(self, steps):
        """Writes a state file naming the checkpoints of `steps` (the last one
        latest), so that the CheckpointManager keeps only the newest ones."""
        paths = [os.path.join(self.output_dir, f"ckpt-{step}") for step in steps]
        now = time.time()
        tf.compat.v1.train.update_checkpoint_state(
            self.output_dir,
            paths[-1],
            all_model_checkpoint_paths=paths,
            all_model_checkpoint_timestamps=[now] * len(paths),
            last_preserved_timestamp=now - 1,
        )
        logging.info("Rewrote the state file %s (latest: %s).",
                     os.path.join(self.output_dir, CHECKPOINT_STATE), paths[-1])

    def _read(self, checkpoint, path):
        """Reads `path` into `checkpoint`; returns None, or why its files are
        damaged. Raises ValueError if it is whole but does not fit the model."""
        try:
            # Values without an object here are no error: the CheckpointManager's
            # save_counter, and the optimizer state of an --init_checkpoint
            # (expect_partial keeps TensorFlow from warning about them at exit).
            status = checkpoint.read(path).expect_partial()
            status.assert_existing_objects_matched()
            return None
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as error:
            damage = checkpoint_damage(path)
            if damage:
                return damage
            raise ValueError(
                f"{path}: cannot restore this checkpoint into the model of "
                f"{self.model_description} ({first_line(error)})."
            ) from None

    def save(self, step):
        """Saves the checkpoint of `step` unless it was restored or saved already."""
        if step == self.saved_step:
            return
        self.global_step.assign(step)
        if self.chief:
            if self.manager is None:
                self.manager = tf.train.CheckpointManager(
                    self.checkpoint,
                    self.output_dir,
                    max_to_keep=self.max_to_keep,
                    checkpoint_name="ckpt",
                )
            self.manager.save(checkpoint_number=step)
        else:
            self.checkpoint.write(os.path.join(self.worker_dir, "ckpt"))
            tf.io.gfile.rmtree(self.worker_dir)
        self.saved_step = step

