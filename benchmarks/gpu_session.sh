#!/usr/bin/env bash
# One prepared device check for a session that is lent a GPU.
#
#   bash benchmarks/gpu_session.sh smoke                  # versions, nvidia-smi, tiny CUDA finetune + generate, cuBLAS's memory
#   bash benchmarks/gpu_session.sh rows -k 'llama2_7b and not 2gpu' [more pytest args...]
#   bash benchmarks/gpu_session.sh extrapolation [--model phi-1_5 ...]   # the protocol's 1k-iteration error on the GPU
#   bash benchmarks/gpu_session.sh --dry-run STAGE ...    # print each command (shell-quoted) instead of running it
#
# Arguments reach pytest and the scripts as separate words ("$@"): nothing given on the command line
# is ever evaluated by the shell, so a selector such as 'x; touch f' is a (non-matching) -k expression.
#
# The lent machine has torch (CUDA), lightning and transformers but not bitsandbytes or
# jsonschema: carry them as wheels in .whl/ and name .whl in the device tool's `carry`.
# Results and logs go to $OUT (the device tool brings them back).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out}"

dry_run=""
if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=1
    shift
fi

# run CMD ARGS...: the command, or in a dry run its shell-quoted form on stdout.
run() {
    if [[ -n "$dry_run" ]]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    run python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1

stage="${1:-smoke}"
shift || true
case "$stage" in
smoke)
    run nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version --format=csv
    run python3 -m conformance env | tee "$OUT/env.txt"
    run python3 -c "import bitsandbytes, jsonschema, torch; print('bnb', bitsandbytes.__version__, 'torch', torch.__version__, torch.cuda.is_available())"
    run python3 -m litgpt_min finetune lora --model tiny-llama --accelerator cuda --quantize bnb.nf4 \
        --micro-batch-size 2 --batch-size 4 --max-iters 5 --json | tail -n 1 | tee "$OUT/smoke-finetune.json"
    run python3 -m litgpt_min generate --model tiny-falcon --accelerator cuda --quantize bnb.nf4-dq --json \
        | tail -n 1 | tee "$OUT/smoke-generate.json"
    # cuBLAS's handle lives outside the allocator: the figure the 70B nf4 CUBLAS row turns on.
    run python3 benchmarks/cublas_init.py | tee "$OUT/cublas-init.json"
    ;;
rows)
    if [[ $# -eq 0 ]]; then
        echo "$0: rows needs pytest arguments, e.g. rows -k 'phi_1_5 and not 2gpu'" >&2
        exit 2
    fi
    # A file-name-safe label of the arguments (only [A-Za-z0-9_] survive).
    name="$(printf '%s_' "$@" | tr -c 'A-Za-z0-9_' '_' | tr -s '_' | cut -c1-40)"
    run python3 -m pytest conformance "$@" --row-timeout 240 --results "$OUT/results-$name.json" \
        --row-logs /tmp/row-logs -rA 2>&1 | tee "$OUT/pytest-$name.log" || true
    run tar -czf "$OUT/row-logs-$name.tgz" -C /tmp row-logs 2>/dev/null || true
    ;;
extrapolation)
    run python3 -m conformance env --json > "$OUT/env.json"
    run python3 benchmarks/extrapolation_error.py --accelerator cuda --model pythia-70m --short-iters 5 20 \
        --repeats 3 --out "$OUT/extrapolation_error-cuda.json" "$@" 2>&1 | tee "$OUT/extrapolation.log"
    ;;
*)
    echo "usage: $0 [--dry-run] smoke | rows PYTEST-ARGS... | extrapolation [args]" >&2
    exit 2
    ;;
esac
