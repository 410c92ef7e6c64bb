"""Peak memory and throughput of BERT pre-training with in-step gradient accumulation.

At a fixed micro-batch, an optimizer step of K micro-batches should need the
memory of one micro-batch (only one micro-batch's activations are alive at a
time) and train as many examples per second as K = 1. A third row trains the
whole K-micro-batch batch at once, for the memory that accumulation saves.
Each configuration runs in a fresh process; memory is the process's peak
resident set during training (Linux `VmHWM`, reset after the model is built),
or TensorFlow's peak GPU allocation when there is a GPU.

    python benchmarks/gradient_accumulation.py --bert_config_file=configs/bert_config_tiny.json
"""

import multiprocessing
import platform
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "bert_config_file", "configs/bert_config_tiny.json", "The BERT config to benchmark."
)
flags.DEFINE_integer("micro_batch_size", 32, "Examples per micro-batch.")
flags.DEFINE_integer("accumulation_steps", 8, "K, micro-batches per optimizer step.")
flags.DEFINE_integer("max_seq_length", 128, "Sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked-LM predictions per sequence.")
flags.DEFINE_integer("steps", 4, "Timed optimizer steps per configuration.")
flags.DEFINE_bool("jit_compile", True, "XLA-compile the training step.")


def _peak_rss_mib(reset=False):
    """The process's peak resident set (MiB); `reset` restarts it from now."""
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(settings, accumulation, batch_size, results):
    """In a fresh process: trains `settings["steps"]` optimizer steps of
    `batch_size` examples in `accumulation` micro-batches; puts
    (examples/s, peak MiB) into `results`."""
    import keras
    import tensorflow as tf

    import lamb
    from lamb.models import bert
    import throughput  # benchmarks/throughput.py

    config = bert.load_bert_config(settings["bert_config_file"])
    x, y = throughput.synthetic_batch(
        config, batch_size, settings["max_seq_length"], settings["max_predictions_per_seq"]
    )
    keras.utils.set_random_seed(0)
    model = bert.BertPretrainer(config, gradient_accumulation_steps=accumulation)
    model.compile(
        optimizer=lamb.create_optimizer(1e-3, 10000, 1000, optimizer_type="lamb"),
        jit_compile=settings["jit_compile"],
    )
    model.optimizer.build(model.trainable_variables)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    else:
        _peak_rss_mib(reset=True)
    model.train_on_batch(x, y)  # Trace and compile.
    start = time.perf_counter()
    for _ in range(settings["steps"]):
        model.train_on_batch(x, y)
    rate = settings["steps"] * batch_size / (time.perf_counter() - start)
    if gpu:
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    else:
        peak = _peak_rss_mib()
    results.put((rate, peak))


def main(argv):
    del argv
    settings = {name: FLAGS[name].value for name in (
        "bert_config_file", "max_seq_length", "max_predictions_per_seq", "steps", "jit_compile")}
    micro, k = FLAGS.micro_batch_size, FLAGS.accumulation_steps
    configurations = [
        (f"K=1, batch {micro}", 1, micro),
        (f"K={k}, batch {k * micro} ({k} x {micro})", k, k * micro),
        (f"K=1, batch {k * micro} (no accumulation)", 1, k * micro),
    ]
    context = multiprocessing.get_context("spawn")
    rows = []
    for label, accumulation, batch_size in configurations:
        results = context.Queue()
        process = context.Process(target=measure, args=(settings, accumulation, batch_size, results))
        process.start()
        process.join()
        if process.exitcode:
            raise RuntimeError(f"{label}: the measuring process failed (exit {process.exitcode}).")
        rate, peak = results.get()
        rows.append((label, rate, peak))
    import tensorflow as tf

    print(
        f"BERT {FLAGS.bert_config_file}, sequence {FLAGS.max_seq_length}, "
        f"{FLAGS.max_predictions_per_seq} predictions, LAMB, jit_compile={FLAGS.jit_compile}, "
        f"{FLAGS.steps} timed steps; TensorFlow {tf.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"{'configuration':<36} {'examples/s':>11} {'peak MiB':>9} {'ratio to K=1: speed':>20} "
          f"{'memory':>7}")
    for label, rate, peak in rows:
        print(f"{label:<36} {rate:>11.1f} {peak:>9.0f} {rate / rows[0][1]:>20.2f} "
              f"{peak / rows[0][2]:>7.2f}")


if __name__ == "__main__":
    app.run(main)
