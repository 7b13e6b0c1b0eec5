#!/usr/bin/env bash
# One prepared device check for a session that is lent a GPU.
#
#   bash benchmarks/gpu_session.sh smoke                  # versions, nvidia-smi, tiny CUDA finetune + generate, cuBLAS's memory
#   bash benchmarks/gpu_session.sh rows -k 'llama2_7b and not 2gpu' [more pytest args...]
#   bash benchmarks/gpu_session.sh extrapolation [--model phi-1_5 ...]   # the protocol's 1k-iteration error on the GPU
#   bash benchmarks/gpu_session.sh lease [SELECTOR ...]   # a whole short lease in one command: smoke, then one row
#                                                         # group per -k expression, in order, each in the time
#                                                         # left (LEASE_SECONDS)
#                                                         # (LEASE_SMOKE=0: no smoke stage, for a second call
#                                                         # on a machine whose smoke stage already passed)
#   bash benchmarks/gpu_session.sh --dry-run STAGE ...    # print each command (shell-quoted) instead of running it;
#                                                         # writes nothing to $OUT
#
# Arguments reach pytest and the scripts as separate words ("$@"): nothing given on the command line
# is ever evaluated by the shell, so a selector such as 'x; touch f' is a (non-matching) -k expression.
#
# The lent machine has torch (CUDA), lightning and transformers but not bitsandbytes or
# jsonschema: carry them as wheels in .whl/ and name .whl in the device tool's `carry`.
# Results and logs go to $OUT (the device tool brings them back).
set -euo pipefail
# This script by an absolute path: `lease` starts its stages as new runs of it, after the cd below
# (a relative "$0", such as gpu_session.sh from inside benchmarks/, would no longer resolve).
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")/.."
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

# keep [-a] FILE: standard input to FILE (-a: appended) and to standard output, or in a dry run to
# standard output only (a dry run writes nothing to $OUT).
keep() {
    if [[ -n "$dry_run" ]]; then
        cat
    else
        tee "$@"
    fi
}

usage="usage: $0 [--dry-run] smoke | rows PYTEST-ARGS... | extrapolation [args] | lease [SELECTOR...]"
# Bad input ends here, in one line, before anything is installed or run.
case "${1:-smoke}" in
smoke | rows | extrapolation | lease) ;;
-h | --help)
    # The usage line, then the header comment above (the description), without its '#'.
    echo "$usage"
    echo
    awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$self"
    exit 0
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
for arg in "$@"; do
    if [[ "$arg" == "--dry-run" ]]; then
        # Later, it would be a pytest argument or a selector and the stage would run for real.
        echo "$0: --dry-run goes before the stage: $0 --dry-run ${1:-smoke} ..." >&2
        exit 2
    fi
done
if [[ "${1:-}" == "rows" && $# -lt 2 ]]; then
    echo "$0: rows needs pytest arguments, e.g. rows -k 'phi_1_5 and not 2gpu'" >&2
    exit 2
fi
# (Unset: the default; set but empty is a mistake, such as an unset shell variable.)
if [[ "${1:-}" == "lease" && ! "${LEASE_SECONDS-540}" =~ ^[1-9][0-9]{0,5}$ ]]; then
    echo "$0: LEASE_SECONDS must be a whole number of seconds from 1 to 999999, got '${LEASE_SECONDS}'" >&2
    exit 2
fi
if [[ "${1:-}" == "lease" && ! "${LEASE_SMOKE-1}" =~ ^[01]$ ]]; then
    echo "$0: LEASE_SMOKE must be 1 (run the smoke stage first, the default) or 0, got '${LEASE_SMOKE}'" >&2
    exit 2
fi
if [[ "${1:-}" == "lease" ]]; then
    for selector in "${@:2}"; do
        if [[ -z "${selector// /}" ]]; then
            # pytest's -k '' selects every row, the several-GPU ones too.
            echo "$0: lease: an empty selector would select every row; give -k expressions" >&2
            exit 2
        fi
        if [[ "$selector" == -* ]]; then
            # `lease -k EXPR` (as `rows` takes it) would run a group `-k -k`, a pytest usage error,
            # in the lease's time; pytest cannot take an expression that starts with - after -k anyway.
            echo "$0: lease: '$selector' is an option, not a -k expression; give the expressions alone: lease 'llama2_7b and 1gpu' ..." >&2
            exit 2
        fi
    done
fi
if [[ -z "$dry_run" ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
    # A machine without the NVIDIA driver: every stage measures a GPU (before: "nvidia-smi: command
    # not found", exit 127, after an empty $OUT was made).
    echo "$0: needs an NVIDIA GPU and its driver (nvidia-smi is not on PATH); --dry-run prints the commands" >&2
    exit 2
fi

[[ -n "$dry_run" ]] || mkdir -p "$OUT"
if [[ -n "${GPU_SESSION_INSTALLED:-}" ]]; then
    :  # a stage started by `lease`: the wheels are installed and PYTHONPATH is set
elif compgen -G ".whl/*.whl" >/dev/null; then
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
    # The carried wheels first: without jsonschema even the fingerprint below is a traceback.
    run python3 -c "import bitsandbytes, jsonschema, torch; print('bnb', bitsandbytes.__version__, 'torch', torch.__version__, torch.cuda.is_available())"
    run python3 -m conformance env | keep "$OUT/env.txt"
    run python3 -m litgpt_min finetune lora --model tiny-llama --accelerator cuda --quantize bnb.nf4 \
        --micro-batch-size 2 --batch-size 4 --max-iters 5 --json | tail -n 1 | keep "$OUT/smoke-finetune.json" || true
    run python3 -m litgpt_min generate --model tiny-falcon --accelerator cuda --quantize bnb.nf4-dq --json \
        | tail -n 1 | keep "$OUT/smoke-generate.json" || true
    # cuBLAS's handle lives outside the allocator: the figure the 70B nf4 CUBLAS row turns on.
    run python3 benchmarks/cublas_init.py | keep "$OUT/cublas-init.json"
    ;;
rows)
    # A file-name-safe label of the arguments (only [A-Za-z0-9_] survive), cut short, and a checksum
    # of them whole: two selectors that begin alike never share (and overwrite) their files.
    label="$(printf '%s_' "$@" | tr -c 'A-Za-z0-9_' '_' | tr -s '_' | cut -c1-40)"
    name="${label}$(printf '%s\0' "$@" | cksum | cut -d' ' -f1)"
    # tee ignores SIGINT: a lease stops a stage with SIGINT to the whole process group, and pytest's
    # last words (which rows did not finish, its summary) must still reach the log.
    run python3 -m pytest conformance "$@" --row-timeout 240 --results "$OUT/results-$name.json" \
        --row-logs "/tmp/row-logs-$name" -rA 2>&1 | (trap '' INT && keep "$OUT/pytest-$name.log") || true
    run tar -czf "$OUT/row-logs-$name.tgz" -C /tmp "row-logs-$name" 2>/dev/null || true
    ;;
extrapolation)
    # The GPU's defaults, each left out where the arguments give that option: the script refuses an
    # option given twice (`extrapolation --model phi-1_5` stopped at "argument --model: given twice").
    defaults=()
    default() {
        local arg
        for arg in "${args[@]}"; do
            [[ "$arg" == "$1" || "$arg" == "$1="* ]] && return
        done
        defaults+=("$@")
    }
    args=("$@")
    default --accelerator cuda
    default --model pythia-70m
    default --short-iters 5 20
    default --repeats 3
    default --out "$OUT/extrapolation_error-cuda.json"
    run python3 -m conformance env --json | keep "$OUT/env.json"
    run python3 benchmarks/extrapolation_error.py "${defaults[@]}" "$@" 2>&1 | keep "$OUT/extrapolation.log"
    ;;
lease)
    # The device tool runs one command for at most 10 minutes, and a session's device time (15
    # minutes) includes the machine's start: one call should do the whole plan. The smoke checks
    # first (what breaks there breaks everything), then each group of rows, most informative first,
    # given the time that is left of LEASE_SECONDS (default 540: a 600 s call with a margin for the
    # results to be written). Groups: -k expressions, one per argument; by default the rows no
    # session has measured yet (below). A single-GPU 7B finetune row takes about 40 s on an H200.
    end=$((SECONDS + ${LEASE_SECONDS:-540}))
    groups=("$@")
    if [[ ${#groups[@]} -eq 0 ]]; then
        # The rows no GPU session has measured yet, most informative first (2026-12-04, an H200:
        # 70B inference and 11 of Llama 2 7B's 14 single-GPU rows; benchmarks/results/h200-2026-12-04).
        groups=(
            "inference and (codellama_34b or falcon_40b)"
            "llama2_13b and 1gpu"
            "llama2_7b and lora and 1gpu and (nf4_dq or mb2 or mb4)"
            "(phi_1_5 or stablelm_3b) and 1gpu"
        )
    fi
    export GPU_SESSION_INSTALLED=1
    # Each stage runs as its own process under `timeout`: SIGINT first (pytest then writes its
    # results file, marked unfinished), SIGKILL 20 s later. A dry run prints the stages' commands and
    # the plan, and writes nothing to $OUT.
    # The device tool brings back at most 8 files from $OUT: the stages write into a work folder,
    # packed into $OUT/lease.tgz after each stage (replaced whole, so a cut-off call still returns
    # the stages that finished), beside $OUT/lease.txt, the plan as it went.
    results="$OUT"
    work="$(mktemp -d "${TMPDIR:-/tmp}/lease.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    again=(env OUT="$work" bash "$self")
    [[ -n "$dry_run" ]] && again+=(--dry-run)
    note() { echo "lease: $*" | keep -a "$results/lease.txt"; }
    pack() {
        [[ -n "$dry_run" ]] && return
        tar -czf "$results/lease.tgz.part" -C "$work" . && mv "$results/lease.tgz.part" "$results/lease.tgz"
    }
    # (`timeout` handles SIGINT itself, so a stage has it at its default even where the lease was
    # started ignoring it, as a script's background job is.)
    stage_under() { timeout --signal=INT --kill-after=20 "$@"; }
    ran=0 failed=0  # stages started, and those that ended with a failure (the rows stage's pytest verdicts aside)
    if [[ "${LEASE_SMOKE-1}" == 1 ]]; then
        smoke_s=$((end - SECONDS < 240 ? end - SECONDS : 240))
        ((smoke_s > 0)) || smoke_s=1  # `timeout 0` would mean no limit at all
        note "smoke, at most ${smoke_s}s"
        ran=$((ran + 1))
        stage_under "$smoke_s" "${again[@]}" smoke || {
            failed=$((failed + 1))
            note "the smoke stage failed; going on with the rows"
        }
        pack
    else
        note "no smoke stage (LEASE_SMOKE=0)"
    fi
    for selector in "${groups[@]}"; do
        left=$((end - SECONDS))
        if ((left < 60)); then
            note "${left}s left, not enough for -k '$selector' and the rest"
            break
        fi
        note "-k '$selector' with ${left}s left"
        ran=$((ran + 1))
        stage_under "$left" "${again[@]}" rows -k "$selector" || {
            failed=$((failed + 1))
            note "the stage for -k '$selector' failed"
        }
        pack
    done
    note "done in ${SECONDS}s; unpack with: tar -xzf lease.tgz"
    if ((ran > 0 && failed == ran)); then
        note "every stage failed"
        exit 1
    fi
    ;;
esac
