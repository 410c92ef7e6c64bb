"""BERT training steps on CPU: TensorFlow against JAX on one device, JAX on one
against two devices, peak host memory, and LAMB's state bytes per device
under model_parallel.

    python benchmarks/bert_steps_tf_jax.py --bert_config=configs/bert_config_tiny.json --rounds=5

Configurations, each step one XLA program of the same model
(`lamb.models.bert.BertPretrainer`) and optimizer (`lamb.LAMB`, as in
`bert_steps_jax.py`) on one synthetic batch, in float32:
- `tensorflow`: KERAS_BACKEND=tensorflow, `jit_compile=True`.
- `jax`: KERAS_BACKEND=jax, one CPU device.
- `jax_data_parallel_2`: KERAS_BACKEND=jax, two CPU devices
  (`--xla_force_host_platform_device_count=2`) on the same cores, the batch
  split over them (`--distribution=data_parallel`).
Each round runs every configuration in a fresh process (the order rotated
from round to round, so machine noise hits all alike): one compiling step,
then `--steps` timed steps. Reported: the median examples/s over the rounds
with their range, the median of each round's ratio to `jax`, and the peak
resident set of the process (`ru_maxrss`, from start-up to the last step).
Then one process with 4 CPU devices builds LAMB's state for the model on one
device and under `model_parallel` with mesh (2, 2) and `BERT_LAYOUTS`, and
prints its bytes per device (`lamb.jax_distribution.bytes_per_device`).
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGURATIONS = {  # name -> (KERAS_BACKEND, CPU devices, --distribution)
    "tensorflow": ("tensorflow", 1, "none"),
    "jax": ("jax", 1, "none"),
    "jax_data_parallel_2": ("jax", 2, "data_parallel"),
}
STATE_BYTES = "state_bytes"  # The child process that measures LAMB's state.
STATE_BYTES_DEVICES = 4
STATE_BYTES_MESH = (2, 2)


def child_environment(backend, devices):
    return dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run_child(args, configuration, backend, devices):
    """Runs this script as `--child=configuration`; returns its JSON result."""
    command = [sys.executable, os.path.abspath(__file__), f"--child={configuration}",
               f"--bert_config={args.bert_config}", f"--batch_size={args.batch_size}",
               f"--sequence={args.sequence}", f"--predictions={args.predictions}",
               f"--steps={args.steps}"]
    result = subprocess.run(command, env=child_environment(backend, devices),
                            capture_output=True, text=True, timeout=args.child_timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"bert_steps_tf_jax.py: {configuration} exited with {result.returncode}: {last}")
    return json.loads(lines[-1])


def peak_resident_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.


def measure_steps(args, distribution):
    """The child's work for a timed configuration: examples/s and peak memory."""
    import keras

    import bert_steps_jax  # benchmarks/bert_steps_jax.py
    from lamb import jax_distribution
    from lamb.models import bert

    if keras.backend.backend() == "jax":
        jax_distribution.configure(distribution)
    config = bert.load_bert_config(args.bert_config)
    keras.utils.set_random_seed(0)
    model = bert.BertPretrainer(config)
    model.compile(optimizer=bert_steps_jax.make_optimizer("lamb"), jit_compile=True)
    x, y = bert_steps_jax.synthetic_batch(config, args.batch_size, args.sequence, args.predictions)
    model.train_on_batch(x, y)  # Compiles.
    started = time.perf_counter()
    for _ in range(args.steps):
        logs = model.train_on_batch(x, y, return_dict=True)
    float(logs["masked_lm_loss"])  # Waits for the last step.
    seconds = time.perf_counter() - started
    return {"examples_per_s": args.batch_size * args.steps / seconds,
            "devices": jax_device_count() if keras.backend.backend() == "jax" else 1,
            "peak_resident_bytes": peak_resident_bytes()}


def jax_device_count():
    import jax

    return jax.device_count()


def measure_state_bytes(args):
    """The child's work for `STATE_BYTES`: LAMB's state bytes per device on one
    device and under model_parallel."""
    import keras

    import bert_steps_jax
    from lamb import jax_distribution
    from lamb.models import bert

    config = bert.load_bert_config(args.bert_config)
    result = {}
    for name, distribution in [
        ("one_device", None),
        ("model_parallel", jax_distribution.make_distribution(
            "model_parallel", STATE_BYTES_MESH, jax_distribution.BERT_LAYOUTS)),
    ]:
        with distribution.scope() if distribution else contextlib.nullcontext():
            model = bert.BertPretrainer(config)
            optimizer = bert_steps_jax.make_optimizer("lamb")
            optimizer.build(model.trainable_variables)
        result[name] = {
            key: sorted(jax_distribution.bytes_per_device(variables).values())
            for key, variables in [("optimizer", optimizer.variables),
                                   ("weights", model.trainable_variables)]
        }
        keras.backend.clear_session()
    return result


def mib(value):
    return value / 2**20


def spread(values, digits=1):
    """`median (min-max)`."""
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert_config", default="configs/bert_config_tiny.json")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--sequence", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help=f"comma-separated, of {', '.join(CONFIGURATIONS)}")
    parser.add_argument("--child_timeout", type=float, default=900,
                        help="seconds one process may take")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == STATE_BYTES:
        print(json.dumps(measure_state_bytes(args)))
        return
    if args.child:
        print(json.dumps(measure_steps(args, CONFIGURATIONS[args.child][2])))
        return
    names = args.configurations.split(",")
    unknown = [name for name in names if name not in CONFIGURATIONS]
    if unknown:
        parser.error(f"--configurations={args.configurations}: unknown {', '.join(unknown)}; "
                     f"allowed: {', '.join(CONFIGURATIONS)}.")

    load_before = os.getloadavg()
    results = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            backend, devices, _ = CONFIGURATIONS[name]
            result = run_child(args, name, backend, devices)
            if result["devices"] != devices:
                sys.exit(f"bert_steps_tf_jax.py: {name} ran on {result['devices']} devices, "
                         f"not {devices}.")
            results[name].append(result)
    load_after = os.getloadavg()

    print(f"{args.bert_config}, batch {args.batch_size} x sequence {args.sequence}, "
          f"{args.predictions} predictions, LAMB, float32; {args.rounds} rounds of {args.steps} "
          f"steps per configuration, each in a fresh process; {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.\n")
    reference = "jax" if "jax" in results else names[0]
    print(f"| configuration | examples/s | same-round ratio to {reference} | peak resident MiB |")
    print("|---|---:|---:|---:|")
    for name in names:
        rates = [r["examples_per_s"] for r in results[name]]
        ratios = [r["examples_per_s"] / ref["examples_per_s"]
                  for r, ref in zip(results[name], results[reference])]
        peaks = [mib(r["peak_resident_bytes"]) for r in results[name]]
        print(f"| {name} | {spread(rates)} | {spread(ratios, 2)} | {spread(peaks, 0)} |")
        print(json.dumps({"configuration": name, "examples_per_s": rates, "ratio_to": reference,
                          "ratios": ratios, "peak_resident_bytes":
                          [r["peak_resident_bytes"] for r in results[name]]}))

    state = run_child(args, STATE_BYTES, "jax", STATE_BYTES_DEVICES)
    one, sharded = state["one_device"], state["model_parallel"]
    print(f"\nLAMB's state (its variables) per device, {args.bert_config}: one device "
          f"{mib(one['optimizer'][0]):.2f} MiB; model_parallel mesh "
          f"{STATE_BYTES_MESH[0]}x{STATE_BYTES_MESH[1]} with BERT_LAYOUTS "
          f"{mib(max(sharded['optimizer'])):.2f} MiB on the fullest device "
          f"({max(sharded['optimizer']) / one['optimizer'][0]:.3f} of one device's; "
          f"weights {max(sharded['weights']) / one['weights'][0]:.3f}).")
    print(json.dumps({"state_bytes": state}))


if __name__ == "__main__":
    main()
