#!/usr/bin/env bash
# The CUDA checks, as one script for a lent GPU machine that has torch and transformers but
# cannot install anything: `measure bench` on the GPU (decode tokens/s at batch 1, 8 and 32,
# engine time) in float32 and bfloat16, the condition suite with its invariants on CUDA in both
# dtypes (observed deviations land in the records), and `measure run` end to end with a report.
#
# usage: benchmarks/gpu_check.sh MODEL OUTDIR [DEVICE]
#   MODEL   a .gguf file, a model folder or an HF id (the embedded model's package may be absent)
#   OUTDIR  receives gpu_check.log, samples-<dtype>.jsonl and report.html
#   DEVICE  cuda (default); cpu only to try the script itself on a machine without a GPU
set -u
model=${1:?usage: gpu_check.sh MODEL OUTDIR [DEVICE]}
out=${2:?usage: gpu_check.sh MODEL OUTDIR [DEVICE]}
device=${3:-cuda}
quick=${GPU_CHECK_QUICK:-}  # set: a small workload, to try the script on a CPU
mkdir -p "$out"
work=$(mktemp -d)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MEASURE_CACHE_DIR=${MEASURE_CACHE_DIR:-$work/cache}
log="$out/gpu_check.log"
problems=8; tokens=128; limit=3
if [ -n "$quick" ]; then problems=1; tokens=16; limit=1; fi

step() {  # step SECONDS TITLE COMMAND...: run with a time limit, log the output and the exit status
    local seconds=$1 title=$2; shift 2
    echo "=== $title" | tee -a "$log"
    local start=$SECONDS
    timeout "$seconds" "$@" 2>&1 | grep -v --line-buffered "^Loading weights" | tee -a "$log"
    echo "=== $title: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$log"
}

suite() {  # suite DTYPE SECONDS: the condition suite with its invariants; records kept whatever the verdict
    # Autoload off: the image's own pytest plugins stay out, ours is named (it is not pip-installed there).
    step "$2" "condition suite $1" env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -m pytest -p measure.pytest_plugin \
        suites/test_conditions.py -q --measure-model "$model" --measure-device "$device" --measure-dtype "$1" \
        --measure-limit "$limit" --measure-out "$work/suite-$1"
    cp "$work/suite-$1/samples.jsonl" "$out/samples-$1.jsonl" 2>/dev/null
}
bench() {  # bench DTYPE SECONDS: the issue-7 workload without the naive way; on CUDA also batch 1/8/32 rates.
    # It prints where the engine's time goes (prefill, decode steps, step metrics, ...): run in both
    # dtypes, the two breakdowns show which part makes bfloat16 slower than float32.
    step "$2" "bench $1" python3 -m measure.cli bench --model "$model" --device "$device" --dtype "$1" \
        --problems "$problems" --max-new-tokens "$tokens" --skip-naive --skip-long
}

# Most wanted first: a lease may end before the last step.
step 30 environment bash -c 'nvidia-smi -L 2>/dev/null; python3 -c "
import sys, torch, transformers
print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no GPU\", \"transformers\", transformers.__version__)"'
bench float32 150
suite float32 120
suite bfloat16 120
bench bfloat16 90
# The per-step profile of float32 against bfloat16 (kernels and operators by name); needs a folder.
if [ -d "$model" ]; then
    step 120 "dtype profile" python3 benchmarks/gpu_dtype_profile.py "$model" --device "$device" --steps 32
fi
step 90 "measure run" python3 -m measure.cli run --model "$model" --device "$device" --no-semantic \
    --limit "$limit" --out "$work/run"
cp "$work/run/report.html" "$out/report.html" 2>/dev/null
grep "^=== .*exit" "$log"
