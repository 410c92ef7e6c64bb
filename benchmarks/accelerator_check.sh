#!/usr/bin/env bash
# The optimizer step benchmarks under JAX on a machine with JAX (any device:
# written for one NVIDIA H200 with JAX, CUDA and optax), without TensorFlow,
# Keras or a network: Keras and its two missing dependencies come from a
# folder of wheels carried with the checkout (/work/shared/wheels-py312 on
# the development VM; see its README.md), installed into a temporary folder.
#
#     bash benchmarks/accelerator_check.sh WHEEL_DIR OUTPUT.md [ROUNDS] [STEPS_PER_ROUND]
#     bash benchmarks/accelerator_check.sh .wheels "$OUT/accelerator_check.md"
#
# Runs benchmarks/optimizer_step.py for 50x1M, 50x1M_1d and bert_base (every
# optimizer: Keras Adam, AdamW, Lamb, ours, optax adam and lamb), each set
# under its own time limit so that the whole takes under 8 minutes, and
# writes one Markdown file: versions, devices, a table per set (with each
# optimizer's state and the bytes per parameter a step must read and write,
# derived from its state) and the same-round ratios (LAMB against the two
# peer LAMBs, LAMB16 against LAMB). A set that runs out of time says so in
# the file; the others are still written (SET_LIMITS_S="120 120 200": the
# three limits in seconds). With BERT_LIMIT_S=SECONDS set, it then also
# trains BERT-Base and BERT-Large steps (benchmarks/bert_steps_jax.py: LAMB
# and Keras AdamW, sequence 128, mixed_bfloat16), each under that limit
# (keras_hub's wheel carried too; lower SET_LIMITS_S to stay in a budget).
set -uo pipefail

wheels=${1:?usage: accelerator_check.sh WHEEL_DIR OUTPUT.md [ROUNDS] [STEPS_PER_ROUND]}
output=${2:?usage: accelerator_check.sh WHEEL_DIR OUTPUT.md [ROUNDS] [STEPS_PER_ROUND]}
rounds=${3:-15}
steps=${4:-10}
# Seconds per set (50x1M, 50x1M_1d, bert_base: compiling BERT-Base's 199
# variables for nine optimizers takes most of its share): 440 s plus
# start-up stays under 8 minutes.
read -r -a set_limits <<< "${SET_LIMITS_S:-120 120 200}"

cd "$(dirname "$0")/.." || exit 1
wheels=$(cd "$wheels" && pwd) || { echo "accelerator_check.sh: no wheel folder $wheels" >&2; exit 1; }
mkdir -p "$(dirname "$output")"
output="$(cd "$(dirname "$output")" && pwd)/$(basename "$output")"

site=$(mktemp -d /tmp/lamb-site.XXXXXX)
trap 'rm -rf "$site"' EXIT
python3 -m pip install -q --no-index --no-deps --target "$site" "$wheels"/*.whl || exit 1
export PYTHONPATH="$site:$PWD" KERAS_BACKEND=jax
# What Keras 3, optax and the benchmark import: a missing one is named here,
# not in a traceback (optree needs typing_extensions, which some images lack:
# carry its wheel too).
python3 - <<'EOF' || exit 1
import importlib.util
import sys

modules = ["jax", "optax", "numpy", "h5py", "ml_dtypes", "rich", "absl", "packaging", "namex",
           "optree", "typing_extensions", "keras"]
missing = [name for name in modules if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"accelerator_check.sh: missing Python modules: {', '.join(missing)}; "
             "put their wheels in the wheel folder")
EOF

started=$(date +%s)
python3 - "$output" "$rounds" "$steps" <<'EOF' || exit 1
import sys

import jax
import keras
import optax

import lamb

path, rounds, steps = sys.argv[1:]
with open(path, "w", encoding="utf-8") as file:
    file.write("# Optimizer step under JAX (benchmarks/accelerator_check.sh)\n\n")
    file.write(f"Devices: {', '.join(f'{d.platform}:{d.device_kind}' for d in jax.devices())}. "
               f"jax {jax.__version__}, keras {keras.__version__} (backend {keras.backend.backend()}), "
               f"optax {optax.__version__}, lamb {lamb.__version__}, Python {sys.version.split()[0]}. "
               f"Median of {rounds} interleaved rounds x {steps} steps per optimizer, in one process per set. "
               "TensorFlow imported: " + str("tensorflow" in sys.modules) + ".\n\n")
    file.write("State: the optimizer's variables (Keras) or state leaves (optax) per parameter. "
               "Reads + writes: the least a step moves: every weight (4 B), gradient (4 B) and "
               "state byte read once, every weight and state byte written once; GB/s is that "
               "traffic over the median step.\n\n")
EOF

status=0
index=0
for variable_set in 50x1M 50x1M_1d bert_base; do
    set_limit=${set_limits[$index]}
    index=$((index + 1))
    echo "accelerator_check.sh: $variable_set ($(( $(date +%s) - started )) s so far)"
    timeout "$set_limit" python3 benchmarks/optimizer_step.py --variable_set="$variable_set" \
        --rounds="$rounds" --steps_per_round="$steps" --markdown="$output"
    code=$?
    if [ "$code" -ne 0 ]; then
        status=1
        if [ "$code" -eq 124 ]; then
            echo "### $variable_set: not measured: over the ${set_limit} s limit" >> "$output"
        else
            echo "### $variable_set: not measured: optimizer_step.py exited with $code" >> "$output"
        fi
        echo >> "$output"
    fi
done
if [ -n "${BERT_LIMIT_S:-}" ]; then
{
    echo "### BERT pre-training steps, sequence 128, mixed_bfloat16, XLA"
    echo
    echo "Published anchor, BERT-Large LAMB, sequence 128, mixed precision, one A100: 485.6"
    echo "sequences/s (NVIDIA, TensorFlow 2), about 580 (NVIDIA, PyTorch)."
    echo
} >> "$output"
for config in base large; do
    echo "accelerator_check.sh: BERT-$config steps ($(( $(date +%s) - started )) s so far)"
    log=$(timeout "$BERT_LIMIT_S" python3 benchmarks/bert_steps_jax.py \
        --bert_config="configs/bert_config_$config.json" 2>&1)
    code=$?
    if [ "$code" -eq 0 ]; then
        grep "sequences/s" <<< "$log" | sed 's/^/    /' >> "$output"
    else
        status=1
        echo "    BERT-$config: not measured: exit $code: $(tail -n 1 <<< "$log")" >> "$output"
    fi
done
echo >> "$output"
fi
echo "Total: $(( $(date +%s) - started )) s." >> "$output"
echo "accelerator_check.sh: wrote $output ($(( $(date +%s) - started )) s)"
exit "$status"
