"""How large a step each layer of BERT took, per optimizer: the relative
change ‖w_b − w_a‖ / ‖w_a‖ of each trainable variable between two
checkpoints of a `lamb.run_pretraining` run, and, for a run trained with
`--log_trust_ratios`, LAMB's trust ratio per layer at the logged steps.

LAMB scales each layer's Adam direction to ‖w‖; AdamW (BERT's) does not, so
its layers' relative steps differ by as much as their ‖u‖ / ‖w‖ do. This
prints, per run, each variable's relative step and the spread over the
layers that take the trust ratio (largest / smallest, and the ratio of the
90th to the 10th percentile).

    python benchmarks/bert_layer_steps.py --bert_config_file=configs/bert_config_tiny.json \\
        --run=adamw=RUN_DIR --run=lamb=RUN_DIR --from_step=960 --to_step=1024
"""

import os
import re

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import bert_demo_curves  # benchmarks/bert_demo_curves.py

from lamb.factory import BERT_EXCLUDE_FROM_WEIGHT_DECAY
from lamb.models import bert

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_config_file", None, "The runs' BERT config.", required=True)
flags.DEFINE_multi_string("run", None, "label=output_dir of a lamb.run_pretraining run.",
                          required=True)
flags.DEFINE_integer("from_step", None, "The earlier checkpoint's step (with --to_step).")
flags.DEFINE_integer("to_step", None, "The later checkpoint's step (without: trust ratios only).")
flags.DEFINE_list("trust_ratio_steps", [],
                  "Steps at which to print the trust ratios a --log_trust_ratios run logged.")


def excluded(path):
    """Whether the app's optimizers give `path` no weight decay and no trust
    ratio (BERT's rules: LayerNorm and bias)."""
    return any(re.search(pattern, path) for pattern in BERT_EXCLUDE_FROM_WEIGHT_DECAY)


def checkpoint_weights(output_dir, step, variables):
    """`{path: array}` of `variables` (the model's, in the app's checkpoint
    order: `model/<index>`) in `<output_dir>/ckpt-<step>`."""
    path = os.path.join(output_dir, f"ckpt-{step}")
    reader = tf.train.load_checkpoint(path)
    weights = {}
    for index, variable in enumerate(variables):
        weights[variable.path] = reader.get_tensor(f"model/{index}/.ATTRIBUTES/VARIABLE_VALUE")
        if weights[variable.path].shape != tuple(variable.shape):
            raise ValueError(f"{path} does not hold this --bert_config_file's model: its "
                             f"variable {index} has shape {weights[variable.path].shape}, "
                             f"{variable.path} {tuple(variable.shape)}.")
    return weights


def spread(values):
    """(largest / smallest, 90th / 10th percentile) of positive `values`."""
    values = np.asarray(values)
    return values.max() / values.min(), np.percentile(values, 90) / np.percentile(values, 10)


def print_relative_steps(variables, paths, adapted, runs):
    """Each variable's relative step from --from_step to --to_step, per run,
    and their spread over the `adapted` variables."""
    steps = {}
    for label, output_dir in runs.items():
        before = checkpoint_weights(output_dir, FLAGS.from_step, variables)
        after = checkpoint_weights(output_dir, FLAGS.to_step, variables)
        steps[label] = {
            path: np.linalg.norm(after[path] - before[path]) / np.linalg.norm(before[path])
            for path in paths
        }
    print(f"relative step ‖w_{FLAGS.to_step} − w_{FLAGS.from_step}‖ / ‖w_{FLAGS.from_step}‖ "
          "per variable (* : LayerNorm and bias, no trust ratio)")
    print(f"{'variable':64s}" + "".join(f"{label:>14s}" for label in runs))
    for path in paths:
        mark = "*" if excluded(path) else " "
        print(f"{mark}{path[-63:]:63s}" + "".join(f"{steps[label][path]:14.3e}" for label in runs))
    for label in runs:
        largest, percentiles = spread([steps[label][path] for path in adapted])
        print(f"{label}: over the {len(adapted)} variables with a trust ratio, largest / "
              f"smallest relative step {largest:.1f}, 90th / 10th percentile {percentiles:.1f}")


def print_trust_ratios(label, output_dir, adapted):
    """The spread of the trust ratios a --log_trust_ratios run logged for the
    `adapted` variables at each of --trust_ratio_steps (nothing without logs)."""
    tags = tuple(f"trust_ratio/{path}" for path in adapted)
    try:
        logged = {tag: dict(points) for tag, points in
                  bert_demo_curves.read_scalars(output_dir, tags).items()}
    except FileNotFoundError:
        return
    for step in map(int, FLAGS.trust_ratio_steps):
        ratios = {tag[len("trust_ratio/"):]: points[step]
                  for tag, points in logged.items() if step in points}
        if not ratios:
            continue
        values = list(ratios.values())
        largest, percentiles = spread(values)
        print(f"{label} at step {step}: trust ratio over {len(values)} variables from "
              f"{min(values):.3g} ({min(ratios, key=ratios.get)}) to {max(values):.3g} "
              f"({max(ratios, key=ratios.get)}), median {np.median(values):.3g}; "
              f"largest / smallest {largest:.1f}, 90th / 10th percentile {percentiles:.1f}")


def main(argv):
    del argv
    model = bert.BertPretrainer(bert.load_bert_config(FLAGS.bert_config_file))
    trainable = {variable.path for variable in model.trainable_variables}
    paths = [variable.path for variable in model.variables if variable.path in trainable]
    runs = dict(run.split("=", 1) for run in FLAGS.run)
    adapted = [path for path in paths if not excluded(path)]
    if FLAGS.to_step is not None:
        print_relative_steps(model.variables, paths, adapted, runs)
    for label, output_dir in runs.items():
        print_trust_ratios(label, output_dir, adapted)


if __name__ == "__main__":
    app.run(main)
