#!/usr/bin/env bash
# The optimizer step and BERT step benchmarks under JAX on a machine with JAX
# (any device: written for one NVIDIA H200 with JAX, CUDA and optax), without
# TensorFlow, Keras or a network: Keras, keras-hub and what they lack come
# from a folder of wheels carried with the checkout (Keras's in
# /work/shared/wheels-py312 on the development VM, see its README.md; the
# rest in docs/reports/performance.md), installed into a temporary folder.
#
#     bash benchmarks/accelerator_check.sh WHEEL_DIR OUTPUT.md [ROUNDS] [STEPS_PER_ROUND]
#     bash benchmarks/accelerator_check.sh .wheels "$OUT/accelerator_check.md"
#
# Runs benchmarks/optimizer_step.py --harness=donated (weights and state donated,
# as Keras's JAX trainer does) for 50x1M, 50x1M_1d and bert_base (every
# optimizer: Keras Adam, AdamW, Lamb, ours, optax adam and lamb), each set
# under its own time limit, and writes one Markdown file: versions, devices,
# a table per set (with each optimizer's state and the bytes per parameter a
# step must read and write, derived from its state) and the same-round ratios
# (LAMB against the two peer LAMBs, LAMB16 against LAMB). Then it trains
# BERT-Base and BERT-Large steps (benchmarks/bert_steps_jax.py: sequence 128,
# mixed_bfloat16, XLA), LAMB and Keras AdamW each in its own process (the
# peak device memory is the process's), and writes sequences/s and peak
# memory beside NVIDIA's published BERT-Large figures. Anything that runs out
# of time or fails says so in the file; the rest is still written.
# Limits in seconds: SET_LIMITS_S="80 80 120" (one per set), BERT_LIMIT_S=55
# (per BERT process); a limit of 0 skips that part. BERT_BATCH_SIZE=64;
# BERT_CONFIGS="configs/bert_config_base.json configs/bert_config_large.json".
# With the defaults the whole takes at most about 8.5 minutes. The BERT part
# needs keras-hub and the two modules it imports whatever it is used for
# (regex, tokenizers); neither TensorFlow nor its other dependencies.
set -uo pipefail

wheels=${1:?usage: accelerator_check.sh WHEEL_DIR OUTPUT.md [ROUNDS] [STEPS_PER_ROUND]}
output=${2:?usage: accelerator_check.sh WHEEL_DIR OUTPUT.md [ROUNDS] [STEPS_PER_ROUND]}
rounds=${3:-15}
steps=${4:-10}
# Seconds per set (50x1M, 50x1M_1d, bert_base: compiling BERT-Base's 199
# variables for nine optimizers takes most of its share) and per BERT
# process (2 configurations x 2 optimizers): 280 + 220 s plus start-up.
read -r -a set_limits <<< "${SET_LIMITS_S:-80 80 120}"
bert_limit=${BERT_LIMIT_S:-55}
bert_batch_size=${BERT_BATCH_SIZE:-64}
default_bert_configs="configs/bert_config_base.json configs/bert_config_large.json"
read -r -a bert_configs <<< "${BERT_CONFIGS:-$default_bert_configs}"

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
python3 - "$bert_limit" <<'EOF' || exit 1
import importlib.util
import sys

modules = ["jax", "optax", "numpy", "h5py", "ml_dtypes", "rich", "absl", "packaging", "namex",
           "optree", "typing_extensions", "keras"]
if sys.argv[1] != "0":
    modules += ["keras_hub", "regex", "tokenizers"]  # What `import keras_hub` needs.
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
    [ "$set_limit" = 0 ] && continue
    echo "accelerator_check.sh: $variable_set ($(( $(date +%s) - started )) s so far)"
    timeout "$set_limit" python3 benchmarks/optimizer_step.py --variable_set="$variable_set" --harness=donated \
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
if [ "$bert_limit" != 0 ]; then
    {
        echo "### BERT pre-training steps, sequence 128, mixed_bfloat16, XLA"
        echo
        echo "Synthetic batch of $bert_batch_size, 20 masked-LM predictions per sequence;"
        echo "median of 3 rounds of 5 steps after a compiling step; one process per line."
        echo
    } >> "$output"
    for config in "${bert_configs[@]}"; do
        for optimizer in lamb adamw; do
            echo "accelerator_check.sh: $config $optimizer ($(( $(date +%s) - started )) s so far)"
            log=$(timeout "$bert_limit" python3 benchmarks/bert_steps_jax.py \
                --bert_config="$config" --optimizer="$optimizer" \
                --batch_size="$bert_batch_size" 2>&1)
            code=$?
            if [ "$code" -eq 0 ]; then
                grep "sequences/s" <<< "$log" | sed 's/^/    /' >> "$output"
            else
                status=1
                reason="exit $code: $(tail -n 1 <<< "$log")"
                [ "$code" -eq 124 ] && reason="over the ${bert_limit} s limit"
                echo "    $config $optimizer: not measured: $reason" >> "$output"
            fi
        done
    done
    {
        echo "    published, BERT-Large LAMB pre-training, sequence 128, mixed precision, one A100:"
        echo "    485.6 sequences/s (NVIDIA, TensorFlow 2), about 580 (NVIDIA, PyTorch)"
        echo
    } >> "$output"
fi
echo "Total: $(( $(date +%s) - started )) s." >> "$output"
echo "accelerator_check.sh: wrote $output ($(( $(date +%s) - started )) s)"
exit "$status"
