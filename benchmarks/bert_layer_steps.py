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

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import bert_demo_curves  # benchmarks/bert_demo_curves.py

from lamb.factory import BERT_EXCLUDE_FROM_WEIGHT_DECAY
from lamb.models import bert
from lamb.optimizers.rules import compile_rules, matches_any

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_config_file", None, "The runs' BERT config.", required=True)
flags.DEFINE_multi_string("run", None, "label=output_dir of a lamb.run_pretraining run.",
                          required=True)
flags.DEFINE_integer("from_step", None, "The earlier checkpoint's step (with --to_step).")
flags.DEFINE_integer("to_step", None, "The later checkpoint's step (without: trust ratios only).")
flags.DEFINE_list("trust_ratio_steps", [],
                  "Steps at which to print the trust ratios a --log_trust_ratios run logged.")
# The variables the app's optimizers give no weight decay and no trust ratio.
EXCLUDED = compile_rules("exclude_from_weight_decay", BERT_EXCLUDE_FROM_WEIGHT_DECAY)


def checkpoint_weights(model, output_dir, step):
    """`{path: array}` of `model`'s trainable variables in
    `<output_dir>/ckpt-<step>`, read into the model as the app writes them
    (`model=list(model.variables)`)."""
    tf.train.Checkpoint(model=list(model.variables)).read(
        os.path.join(output_dir, f"ckpt-{step}")).expect_partial()
    return {variable.path: variable.numpy() for variable in model.trainable_variables}


def spread(values):
    """(largest / smallest, 90th / 10th percentile) of positive `values`."""
    values = np.asarray(values)
    return values.max() / values.min(), np.percentile(values, 90) / np.percentile(values, 10)


def print_relative_steps(model, paths, adapted, runs):
    """Each variable's relative step from --from_step to --to_step, per run,
    and their spread over the `adapted` variables."""
    steps = {}
    for label, output_dir in runs.items():
        before = checkpoint_weights(model, output_dir, FLAGS.from_step)
        after = checkpoint_weights(model, output_dir, FLAGS.to_step)
        steps[label] = {
            path: np.linalg.norm(after[path] - before[path]) / np.linalg.norm(before[path])
            for path in paths
        }
    print(f"relative step ‖w_{FLAGS.to_step} − w_{FLAGS.from_step}‖ / ‖w_{FLAGS.from_step}‖ "
          "per variable (* : LayerNorm and bias, no trust ratio)")
    print(f"{'variable':64s}" + "".join(f"{label:>14s}" for label in runs))
    for path in paths:
        mark = " " if path in adapted else "*"
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
    paths = [variable.path for variable in model.trainable_variables]
    adapted = [variable.path for variable in model.trainable_variables
               if not matches_any(EXCLUDED, variable)]
    runs = dict(run.split("=", 1) for run in FLAGS.run)
    if FLAGS.to_step is not None:
        print_relative_steps(model, paths, adapted, runs)
    for label, output_dir in runs.items():
        print_trust_ratios(label, output_dir, adapted)


if __name__ == "__main__":
    app.run(main)
