"""`benchmarks/bert_layer_steps.py` on a short LAMB run with two checkpoints
and its trust ratios logged."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("keras_hub")

from tests import pretraining_helpers as helpers  # noqa: E402


@pytest.mark.tensorflow_only
def test_relative_steps_match_the_checkpoints_and_trust_ratios_the_logs(tmp_path):
    import tensorflow as tf

    from lamb.models import bert

    (tmp_path / "data").mkdir()
    data = helpers.make_pretraining_data(str(tmp_path / "data"))
    run_dir = str(tmp_path / "run")
    result = helpers.run_app(helpers.app_args(
        data, run_dir, num_train_steps=8, save_checkpoints_steps=4, iterations_per_loop=4,
        log_trust_ratios=True))
    assert result.returncode == 0, result.stderr[-2000:]
    config = os.path.join(data["dir"], "bert_config.json")
    result = subprocess.run(
        [sys.executable, "benchmarks/bert_layer_steps.py", f"--bert_config_file={config}",
         f"--run=lamb={run_dir}", "--from_step=4", "--to_step=8", "--trust_ratio_steps=8"],
        env=helpers.app_env(), cwd=helpers.REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = {line[1:64].strip(): float(line[64:]) for line in result.stdout.splitlines()
               if line[:1] in " *" and line[64:].strip()}

    # The same variables read by TensorFlow's object graph, not by the script's key names.
    model = bert.BertPretrainer(bert.load_bert_config(config))
    variables = list(model.variables)
    weights = {}
    for step in (4, 8):
        tf.train.Checkpoint(model=variables).read(os.path.join(run_dir, f"ckpt-{step}")).expect_partial()
        weights[step] = {variable.path: variable.numpy() for variable in model.trainable_variables}
    assert len(printed) == len(weights[4]) > 10
    for path, before in weights[4].items():
        expected = np.linalg.norm(weights[8][path] - before) / np.linalg.norm(before)
        assert printed[path[-63:]] == pytest.approx(expected, rel=1e-3), path

    logged = helpers.tensorboard_scalars(os.path.join(run_dir, "train"))
    ratios = [steps[8] for tag, steps in logged.items() if tag.startswith("trust_ratio/")
              and not re.search("layer_norm|bias", tag)]
    line = next(line for line in result.stdout.splitlines() if line.startswith("lamb at step 8"))
    assert f"over {len(ratios)} variables from {min(ratios):.3g} (" in line
    assert f") to {max(ratios):.3g} (" in line and f"median {np.median(ratios):.3g};" in line
