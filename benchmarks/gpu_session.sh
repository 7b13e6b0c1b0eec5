#!/usr/bin/env bash
# One prepared device check for a session that is lent a GPU (see ../shared/gpu-playbook.md).
#
#   bash benchmarks/gpu_session.sh smoke                 # versions, nvidia-smi, one tiny CUDA finetune + generate
#   bash benchmarks/gpu_session.sh rows "-k 'llama2_7b and not 2gpu'" [pytest args...]
#   bash benchmarks/gpu_session.sh extrapolation [--model phi-1_5 ...]   # the protocol's 1k-iteration error on the GPU
#
# The lent machine has torch (CUDA), lightning and transformers but not bitsandbytes or
# jsonschema: carry them as wheels in .whl/ (the playbook's pip download line) and name .whl in
# the device tool's `carry`. Results and logs go to $OUT (the device tool brings them back).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

stage="${1:-smoke}"
shift || true
case "$stage" in
smoke)
    nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv
    python3 -m conformance env | tee "$OUT/env.txt"
    python3 -c "import bitsandbytes, jsonschema, torch; print('bnb', bitsandbytes.__version__, 'torch', torch.__version__, torch.cuda.is_available())"
    python3 -m litgpt_min finetune lora --model tiny-llama --accelerator cuda --quantize bnb.nf4 \
        --micro-batch-size 2 --batch-size 4 --max-iters 5 --json | tail -n 1 | tee "$OUT/smoke-finetune.json"
    python3 -m litgpt_min generate --model tiny-falcon --accelerator cuda --quantize bnb.nf4-dq --json \
        | tail -n 1 | tee "$OUT/smoke-generate.json"
    ;;
rows)
    selector="${1:?rows needs a -k expression, e.g. \"-k 'phi_1_5 and not 2gpu'\"}"
    shift
    name="$(echo "$selector" | tr -c 'A-Za-z0-9_' '_' | tr -s '_' | cut -c1-40)"
    set -o pipefail
    eval "python3 -m pytest conformance $selector --row-timeout 240 --results $OUT/results-$name.json --row-logs /tmp/row-logs -rA $*" \
        2>&1 | tee "$OUT/pytest-$name.log" || true
    tar -czf "$OUT/row-logs-$name.tgz" -C /tmp row-logs 2>/dev/null || true
    ;;
extrapolation)
    python3 -m conformance env --json > "$OUT/env.json"
    python3 benchmarks/extrapolation_error.py --accelerator cuda --model pythia-70m --short-iters 5 20 \
        --repeats 3 --out "$OUT/extrapolation_error-cuda.json" "$@" 2>&1 | tee "$OUT/extrapolation.log"
    ;;
*)
    echo "usage: $0 smoke | rows \"-k EXPR\" [pytest args] | extrapolation [args]" >&2
    exit 2
    ;;
esac
