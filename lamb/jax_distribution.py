"""`keras.distribution` for the JAX backend, from the launchers' flags.

`--distribution=none|data_parallel|model_parallel` (JAX's counterpart of the
TensorFlow `--strategy`): every training step stays one XLA program on any
number of devices, and optimizer state is laid out like its variable.

- `data_parallel`: the batch split over all devices (`DataParallel`).
- `model_parallel`: a `(batch, model)` device mesh of `--mesh_shape=B,M`, the
  batch split on "batch" and the kernels and tables of a `LayoutMap` split
  on "model" (the `layouts`: `BERT_LAYOUTS`, `MNIST_MLP_LAYOUTS`).
- Several processes: `initialize_processes` (`jax.distributed.initialize`)
  first, with the coordinator's address, the number of processes and this
  process's id, or none of them where JAX reads them from its environment
  (Cloud TPU, SLURM, Open MPI). On CPU the processes talk through gloo.

Call order in an app: `initialize_processes` (if several processes), build
the distribution with `make_distribution`, `keras.distribution.set_distribution`
it (or `configure` for all of that at once), then build the model and
optimizer.
"""

import keras

from lamb import _checks

DISTRIBUTIONS = ("none", "data_parallel", "model_parallel")
MESH_AXES = ("batch", "model")

# Keys are regular expressions a variable's whole path must match (Keras's
# `LayoutMap` uses `re.fullmatch`).
# keras-hub's BertBackbone (and our BERT heads): variable path -> layout. The
# hidden dimension of the embedding tables, the attention heads of the
# query/key/value projections and of the output projection, and the inner
# dimension of the feed-forward block are split on "model" (Megatron-LM's
# split: each attention head and feed-forward column lives on one shard).
BERT_LAYOUTS = {
    r".*(token|position|segment)_embedding/embeddings$": (None, "model"),
    r".*self_attention_layer/(query|key|value)/kernel$": (None, "model", None),
    r".*self_attention_layer/attention_output/kernel$": ("model", None, None),
    r".*feedforward_intermediate_dense/kernel$": (None, "model"),
    r".*feedforward_output_dense/kernel$": ("model", None),
}
# The MNIST MLP (`lamb.models.mnist.build_model("mlp")`): the hidden layers'
# kernels split by output unit, the logits' kernel by input unit.
MNIST_MLP_LAYOUTS = {
    r".*dense(_\d+)?/kernel$": (None, "model"),
    r"(.*/)?logits/kernel$": ("model", None),
}


def check_backend(flag="--distribution"):
    """Raises ValueError unless Keras runs on JAX."""
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"{flag} needs the JAX backend (KERAS_BACKEND=jax); KERAS_BACKEND is "
            f"{keras.backend.backend()!r} (use --strategy there)."
        )


def parse_mesh_shape(mesh_shape, flag="--mesh_shape"):
    """`"B,M"` (or a pair of ints) -> `(B, M)`, both at least 1."""
    text = mesh_shape if isinstance(mesh_shape, str) else ",".join(map(str, mesh_shape))
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        shape = tuple(_checks.check_int(flag, int(part), low=1) for part in parts)
    except ValueError:
        raise ValueError(
            f"{flag} must be two positive integers BATCH,MODEL (e.g. 2,2); "
            f"received {flag}={text!r}."
        ) from None
    return shape


def initialize_processes(coordinator_address=None, num_processes=None, process_id=None):
    """`jax.distributed.initialize` for several processes; call it first.

    Give all three arguments, or none (JAX then reads its environment: Cloud
    TPU, SLURM, Open MPI). One process (`num_processes=1`) needs no call.
    """
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes,
        "--process_id": process_id,
    }
    missing = [flag for flag, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise ValueError(
            f"{', '.join(missing)} missing: give --coordinator_address, --num_processes and "
            "--process_id together, or none of them (JAX then reads its environment)."
        )
    if not missing:
        num_processes = _checks.check_int("--num_processes", num_processes, low=1)
        process_id = _checks.check_int(
            "--process_id", process_id, low=0, high=num_processes - 1
        )
    check_backend("--num_processes")
    import jax

    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )


def make_distribution(distribution, mesh_shape=None, layouts=None, devices=None):
    """The `keras.distribution` distribution for `--distribution`, or None.

    Args:
        distribution: One of `DISTRIBUTIONS`.
        mesh_shape: For `model_parallel`: `"B,M"` or `(B, M)` with `B * M`
            the number of devices (all processes' devices).
        layouts: For `model_parallel`: variable-path regular expression ->
            axis names (e.g. `BERT_LAYOUTS`); variables no key matches are
            replicated.
        devices: The devices (default: `jax.devices()`, all processes').
    """
    distribution = _checks.check_choice("--distribution", distribution, DISTRIBUTIONS)
    if distribution == "none":
        if mesh_shape is not None:
            raise ValueError(
                "--mesh_shape is for --distribution=model_parallel; received "
                "--distribution=none."
            )
        return None
    check_backend()
    import jax

    devices = list(jax.devices() if devices is None else devices)
    if distribution == "data_parallel":
        if mesh_shape is not None:
            raise ValueError(
                "--mesh_shape is for --distribution=model_parallel; received "
                "--distribution=data_parallel (which splits the batch over all devices)."
            )
        return keras.distribution.DataParallel(devices=devices)
    if mesh_shape is None:
        raise ValueError("--distribution=model_parallel needs --mesh_shape=BATCH,MODEL.")
    shape = parse_mesh_shape(mesh_shape)
    if shape[0] * shape[1] != len(devices):
        raise ValueError(
            f"--mesh_shape={shape[0]},{shape[1]} holds {shape[0] * shape[1]} devices; "
            f"there are {len(devices)} (BATCH x MODEL must equal the device count)."
        )
    mesh = keras.distribution.DeviceMesh(shape, MESH_AXES, devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in (layouts or {}).items():
        layout_map[pattern] = axes
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def configure(distribution, mesh_shape=None, layouts=None, coordinator_address=None,
              num_processes=None, process_id=None):
    """The launchers' one call: processes, then the distribution, set globally.

    Returns the distribution (None for `"none"`, which also unsets an earlier
    one). Processes are joined (`initialize_processes`) where
    `coordinator_address` is given or `num_processes` > 1; where JAX reads
    the cluster from its environment, call `initialize_processes()` first
    instead.
    """
    distribution = _checks.check_choice("--distribution", distribution, DISTRIBUTIONS)
    if distribution != "none":
        check_backend()
    if num_processes is not None and num_processes != 1 or coordinator_address is not None:
        initialize_processes(coordinator_address, num_processes, process_id)
    result = make_distribution(distribution, mesh_shape, layouts)
    keras.distribution.set_distribution(result)
    return result


def bytes_per_device(variables):
    """`{device: bytes}` that `variables` (Keras or JAX arrays) occupy, shard by shard."""
    totals = {}
    for variable in variables:
        array = getattr(variable, "value", variable)
        for shard in array.addressable_shards:
            totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return totals


def define_flags():
    """Defines the apps' --distribution, --mesh_shape, --coordinator_address,
    --num_processes and --process_id (absl flags), once per process (both
    apps' flag modules call it)."""
    from absl import flags

    if "distribution" in flags.FLAGS:
        return
    flags.DEFINE_enum(
        "distribution", "none", DISTRIBUTIONS,
        "JAX backend: none (one device), data_parallel (the batch split over all devices) or "
        "model_parallel (a BATCH x MODEL mesh of --mesh_shape, kernels split on MODEL).",
    )
    flags.DEFINE_string(
        "mesh_shape", None, "--distribution=model_parallel: BATCH,MODEL, e.g. 2,2."
    )
    flags.DEFINE_string(
        "coordinator_address", None,
        "Several processes (JAX): host:port of process 0; with --num_processes and --process_id.",
    )
    flags.DEFINE_integer("num_processes", None, "Several processes (JAX): how many.")
    flags.DEFINE_integer("process_id", None, "Several processes (JAX): this one's id, from 0.")


def configure_from_flags(layouts=None):
    """`configure` with the values of `define_flags`'s flags; returns the distribution."""
    from absl import flags

    values = flags.FLAGS
    return configure(
        values.distribution, values.mesh_shape, layouts, values.coordinator_address,
        values.num_processes, values.process_id,
    )
