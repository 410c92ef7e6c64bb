"""A `tf.distribute` strategy from the launcher flags: tpu, multi_worker, mirrored, default.

Call `make_strategy` first thing in `main`: a multi-worker or TPU strategy
must be created before any other TensorFlow op runs.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(num_devices):
    """Splits the host CPU into `num_devices` logical devices (for tests without GPUs)."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices
    )


def tpu_strategy(tpu_name=None, tpu_zone=None, gcp_project=None):
    """TensorFlow's documented Cloud TPU set-up; fails at once if no TPU answers.

    Args:
        tpu_name: The TPU's name or grpc:// address; `None` or "local" for the
            TPU of a TPU VM.
        tpu_zone, gcp_project: Where to look the name up (else from the
            GCE metadata).
    """
    tpu = tpu_name or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu, zone=tpu_zone, project=gcp_project
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"--strategy=tpu: no TPU reachable with --tpu_name={tpu!r} "
            f"(--tpu_zone={tpu_zone!r}, --gcp_project={gcp_project!r}): {detail}. "
            "On a TPU VM run with --tpu_name=local and TensorFlow built for TPU; "
            "elsewhere use --strategy=mirrored, multi_worker or default."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def multi_worker_strategy():
    """MultiWorkerMirroredStrategy over the cluster that `TF_CONFIG` describes."""
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable, e.g. "
            '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        )
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        workers = config["cluster"]["worker"]
        task = config["task"]
        if task["type"] not in ("worker", "chief") or not 0 <= task["index"] < len(workers):
            raise KeyError("task")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG={os.environ['TF_CONFIG']!r} is not a cluster of workers with "
            f"this task's type and index ({error})."
        ) from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def mirrored_strategy():
    """MirroredStrategy over all GPUs, or over all logical CPUs if there is no GPU."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(devices=[device.name for device in cpus])


def make_strategy(strategy, tpu_name=None, tpu_zone=None, gcp_project=None, num_cpu_devices=1):
    """The strategy named by `--strategy`.

    Args:
        strategy: One of `STRATEGIES`.
        tpu_name, tpu_zone, gcp_project: As BERT's flags, for `tpu`.
        num_cpu_devices: Logical CPU devices to make first (> 1 only to test
            `mirrored` or `multi_worker` on a machine without GPUs).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"--strategy={strategy!r} must be one of {list(STRATEGIES)}.")
    if num_cpu_devices < 1:
        raise ValueError(f"--num_cpu_devices={num_cpu_devices} must be at least 1.")
    if num_cpu_devices > 1:
        split_cpu(num_cpu_devices)
    if strategy == "tpu":
        return tpu_strategy(tpu_name, tpu_zone, gcp_project)
    if strategy == "multi_worker":
        return multi_worker_strategy()
    if strategy == "mirrored":
        return mirrored_strategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Whether this task writes checkpoints, summaries and metrics (worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )
