"""Tests for conformance.report (Markdown in the resource tables' layout) and the conformance CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from huge_values import HUGE
from hypothesis import given, settings
from hypothesis import strategies as st
from results_files import default_checks

from conformance import cli, expectations
from conformance.cli import main
from conformance.report import render
from conformance.results import FORMAT, MAX_RESULTS_BYTES, load_results, verdict_counts
from litgpt_min.quoting import SHOWN_CHARS, clipped
from litgpt_min.result import Result

REPO = Path(__file__).resolve().parent.parent
FINETUNE_HEADER = "| Size | Model | Quantization | Microbatch size | Trainable parameters | Max GPU RAM | Time 1k iterations | Verdict |"
INFERENCE_HEADER = "| Size | Model | Quantization | GPU | Max GPU RAM | Token/sec | Verdict |"


def row(
    case_id: str, expected: dict[str, Any], measured: dict[str, Any] | None, verdict: str, **extra: Any
) -> dict[str, Any]:
    finetune = case_id.startswith("finetune")
    parts = case_id.split("-")
    base = {
        "profile": "a100-sxm4-40gb", "id": case_id, "workload": "finetune" if finetune else "inference",
        "method": parts[1] if finetune else None, "model": extra.pop("model", "Llama-2-7b-hf"),
        "quantize": extra.pop("quantize", None), "micro_batch_size": int(parts[-2].removeprefix("mb")) if finetune else None,
        "devices": extra.pop("devices", 1), "params": extra.pop("params", None),
        "expected": {"outcome": "ok", "trainable_params": None, "total_params": None, "max_memory_gb": None,
                     "time_1k_iters_min": None, "tokens_per_sec": None, "error": None, **expected},
        "measured": None, "verdict": verdict, **default_checks(verdict),
        "reasons": extra.pop("reasons", {}), "findings": extra.pop("findings", []),
        "command": extra.pop("command", None),
    }  # fmt: skip
    if measured is not None:
        identity = {k: base[k] for k in ("workload", "method", "model", "quantize", "micro_batch_size", "devices")}
        base["measured"] = Result(**identity, **measured).to_json()
    return base


# fmt: off
RESULTS: dict[str, Any] = {
    "format": FORMAT,
    "created": "2023-10-01T12:00:00+00:00",
    "finished": True,
    "options": {},
    "command": "pytest conformance --results r.json",
    "fingerprint": {
        "gpus": [{"name": "NVIDIA A100-SXM4-40GB"}], "driver": "525.125.06", "cuda": "12.1", "torch": "2.1.0+cu121",
        "bitsandbytes": "0.41.1", "lightning": "2.1.0", "python": "3.11.7", "os": "Ubuntu 22.04.3 LTS",
    },
    "profiles": [{"name": "a100-sxm4-40gb", "mode": "native", "memory_cap_gb": None, "hardware": {"sku": "a100-sxm4-40gb"}}],
    "summary": {"failed": 1, "passed": 3, "skipped": 1, "xfailed": 1},
    "rows": [
        row("finetune-lora-llama2_7b-noquant-mb1-1gpu",
            {"trainable_params": 4194304, "max_memory_gb": 21.3, "time_1k_iters_min": 2.36},
            {"outcome": "ok", "max_memory_gb": 21.45, "time_1k_iters_min": 2.4}, "passed",
            params={"trainable": 4194304, "total": 6742609920}),
        row("finetune-lora-llama2_7b-noquant-mb4-1gpu", {"outcome": "oom", "trainable_params": 4194304},
            {"outcome": "ok", "max_memory_gb": 38.2, "time_1k_iters_min": 2.9}, "failed",
            findings=[{"text": "outcome: measured ok, expected oom (tolerance exact): mismatch — fits now (peak 38.20 GB)"}],
            command="python -m litgpt_min finetune lora --model Llama-2-7b-hf --micro-batch-size 4 --json"),
        row("finetune-lora-llama2_13b-noquant-mb2-1gpu", {"outcome": "oom"}, {"outcome": "oom", "error": "CUDA out of memory."},
            "xfailed", model="Llama-2-13b-hf"),
        row("finetune-lora-llama2_13b-nf4-mb1-2gpu", {"outcome": "unsupported", "error": "quantization ..."},
            {"outcome": "unsupported", "error": "litgpt-min: unsupported: ..."}, "passed", model="Llama-2-13b-hf",
            quantize="bnb.nf4", devices=2),
        row("inference-llama2_70b-nf4-1gpu", {"outcome": "error", "error": "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED"},
            None, "skipped", model="Llama-2-70b-hf", quantize="bnb.nf4",
            reasons={"run": "needs a CUDA GPU (none found: torch.cuda.is_available() is False)"}),
        row("inference-llama2_7b-noquant-1gpu", {"max_memory_gb": 13.52, "tokens_per_sec": 30.97},
            {"outcome": "ok", "max_memory_gb": 13.5, "tokens_per_sec": 29.0}, "passed"),
    ],
}
# fmt: on


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_tables_keep_the_published_layout_with_measured_values_and_deltas() -> None:
    text = render(RESULTS)
    out = lines(text)
    assert out[0] == "# Conformance report"
    assert "- Hardware: 1 x NVIDIA A100-SXM4-40GB" in out and "  - PyTorch 2.1.0+cu121" in out
    assert "### Finetuning with LoRA on 1 GPU" in out
    assert FINETUNE_HEADER in out
    assert "| 7 B | Llama 2 | None | 1 | 4,194,304 | 21.45 GB (+0.7%) | 2.40 min (+1.7%) | pass |" in out
    assert (
        "| 7 B | Llama 2 | None | 4 | 4,194,304 (not counted) | 38.20 GB (expected OOM) | 2.90 min | **FAIL** |" in out
    )
    assert "| 13 B | Llama 2 | None | 2 | - | OOM | - | pass (OOM as expected) |" in out
    # A blank separator row between model groups, as in the published tables.
    first = out.index(FINETUNE_HEADER)
    assert out[first + 4] == "| | | | | | | | |"


def test_a_trainable_count_says_it_was_counted_and_checked_exactly_not_measured() -> None:
    """A CPU session's A100 rows showed '4,194,304' beside 'Cells: measured value (deviation ...)',
    with nothing saying the count is the params check's (exact, on the meta device, no run), and a
    row no check counted showed the profile's count the same way."""
    out = lines(render(RESULTS))
    legend = (
        "- Trainable parameters: counted on the model built on the meta device, not by the run, and checked"
        " exactly against the profile's count; `(not counted)`: no check of this session counted them."
    )
    assert legend in out
    first, uncounted = RESULTS["rows"][0], RESULTS["rows"][1]
    assert first["params"] is not None and uncounted["params"] is None
    assert (
        "| 7 B | Llama 2 | None | 4 | 4,194,304 (not counted) | 38.20 GB (expected OOM) | 2.90 min | **FAIL** |" in out
    )
    # A profile of inference rows alone has no such column, and no such line.
    inference = [r for r in RESULTS["rows"] if r["workload"] == "inference"]
    assert legend not in lines(render({**RESULTS, "rows": inference}))


def test_a_speed_whose_check_was_skipped_is_marked_not_judged() -> None:
    busy = "speed inconclusive: the CPU was busy: the run's threads waited 28% of their runnable time"
    first = RESULTS["rows"][0]
    document = {**RESULTS, "rows": [{**first, "checks": {"speed": "skipped"}, "reasons": {"speed": busy}}]}
    assert "| 21.45 GB (+0.7%) | 2.40 min (+1.7%, not judged: the CPU was busy [1]) | pass |" in render(document)
    assert f"- [1] {busy}" in lines(render(document))  # the whole reason, under the table
    assert "not judged" not in render({**RESULTS, "rows": [first]})
    # A decided check's reason (a failure, an improvement) is no "not judged".
    failed = {**first, "verdict": "failed", "checks": {"speed": "failed"}, "reasons": {"speed": "slower: 2.0x"}}
    assert "not judged" not in render({**RESULTS, "rows": [failed]})


def test_a_long_skip_reason_is_cut_at_a_word_end_and_keeps_the_table_whole() -> None:
    reason = "no GPU: this row needs a CUDA device with bitsandbytes | the cpu-tiny profile runs without one"
    first = RESULTS["rows"][0]
    skipped = {**first, "verdict": "skipped", "checks": {"run": "skipped"}, "reasons": {"run": reason}}
    line = next(x for x in render({**RESULTS, "rows": [skipped]}).splitlines() if "skipped:" in x)
    cell = line.rstrip(" |").rsplit("| ", 1)[1]
    assert cell == "skipped: no GPU: this row needs a CUDA device with bitsandbytes... [1]"
    assert line.count("|") - line.count("\\|") == FINETUNE_HEADER.count("|")


def test_every_reason_a_cell_cuts_is_given_in_full_in_a_note_under_its_table() -> None:
    """A gating report cut a speed's "not judged" reason at 40 characters ("not judged: the baseline
    before.json measured...") and a skip's at 60, and said the rest nowhere. Each cut reason is now a
    numbered note under the table, one per reason however many cells refer to it."""
    machine = (
        "the baseline before.json measured this row on CPU Intel(R) Xeon(R) Platinum 8480+, 2 cores,"
        " this machine has CPU AMD EPYC, 2 cores"
    )
    gpu = "needs a CUDA GPU (none found: torch.cuda.is_available() is False)"
    first, second, _, _, skipped, inference = RESULTS["rows"]
    unjudged = {"checks": {**first["checks"], "speed": "skipped"}, "reasons": {"speed": machine}}
    document = {**RESULTS, "rows": [{**first, **unjudged}, {**second, "verdict": "passed", **unjudged}]}
    out = lines(render(document))
    cells = [line for line in out if "not judged: " in line]
    assert len(cells) == 2 and all("not judged: the baseline before.json measured... [1])" in c for c in cells)
    assert out[out.index(cells[-1]) + 1 :] == ["", f"- [1] {machine}"]  # once, under the table
    # A skip reason too, numbered in its own table; one a cell shows whole has no note.
    out = lines(render({**RESULTS, "rows": [skipped, {**inference, **unjudged, "reasons": {"speed": "its check"}}]}))
    assert out[-5].endswith("| skipped: needs a CUDA GPU (none found: torch.cuda.is_available()... [1] |")
    assert out[-3].endswith("| 29.00 (-6.4%, not judged: its check) | pass |") and out[-2:] == ["", f"- [1] {gpu}"]


def test_multi_gpu_and_inference_tables() -> None:
    out = lines(render(RESULTS))
    assert "### Finetuning with LoRA on Multiple GPUs" in out
    assert "| 13 B | Llama 2 | bnb.nf4 | 1 | - | 2 x A100 | N/A | - | pass |" in out
    assert "### Single-GPU Inference" in out and INFERENCE_HEADER in out
    assert "| 7 B | Llama 2 | None | 1 x A100 | 13.50 GB (-0.1%) | 29.00 (-6.4%) | pass |" in out
    skipped = next(line for line in out if line.startswith("| 70 B"))
    assert "CUDA error: CUBLAS_STATUS_NOT_INITIALIZED (not run)" in skipped
    assert "skipped: needs a CUDA GPU" in skipped


def test_an_unrun_row_shows_its_gpu_free_estimate_beside_the_expected_figure() -> None:
    fits = row("finetune-lora-llama2_7b-noquant-mb1-1gpu", {"max_memory_gb": 20.0}, None, "skipped")
    fits["estimate"] = {"outcome": "ok", "max_memory_gb": 19.0, "capacity_gb": 42.0, "stack": "current"}
    oom = row("finetune-lora-llama2_7b-noquant-mb4-1gpu", {"outcome": "oom"}, None, "skipped")
    oom["estimate"] = {"outcome": "oom", "max_memory_gb": 50.5, "capacity_gb": 42.0, "stack": "current"}
    out = render({**RESULTS, "rows": [fits, oom]})
    assert "| 20.00 GB (not run; estimate 19.00 GB, -5.0%) |" in out
    assert "| OOM (not run; estimate 50.50 GB: OOM at 42.00 GB) |" in out


def test_findings_section_lists_failures_with_the_reproducing_command() -> None:
    text = render(RESULTS)
    section = text[text.index("## Findings") :]
    assert "- `a100-sxm4-40gb:finetune-lora-llama2_7b-noquant-mb4-1gpu` (failed)" in section
    assert "fits now (peak 38.20 GB)" in section
    assert "reproduce: `python -m litgpt_min finetune lora --model Llama-2-7b-hf" in section


def test_a_cpu_profile_reads_as_ranks_and_host_memory() -> None:
    lora = row(
        "finetune-lora-llama2_7b-noquant-mb1-2gpu", {}, {"outcome": "ok", "max_memory_gb": 0.01}, "passed", devices=2
    )
    infer = row("inference-llama2_7b-noquant-1gpu", {}, {"outcome": "ok", "max_memory_gb": 0.01}, "passed")
    profile = {"name": "cpu-tiny", "mode": "native", "memory_cap_gb": None, "hardware": {"sku": "cpu"}}
    cpu = [{**r, "profile": "cpu-tiny"} for r in (lora, infer)]
    out = lines(render({**RESULTS, "profiles": [profile], "rows": cpu}))
    assert "### Finetuning with LoRA on Several CPU Ranks" in out and "### Inference on the CPU" in out
    assert "| Size | Model | Quantization | Ranks | Max RAM | Token/sec | Verdict |" in out
    assert not [line for line in out if "GPU" in line and line.startswith(("|", "#"))]


def test_a_profile_whose_rows_the_session_left_out_has_no_section() -> None:
    cpu = {"name": "cpu-tiny", "mode": "native", "memory_cap_gb": None, "hardware": {"sku": "cpu"}}
    infer = row("inference-llama2_7b-noquant-1gpu", {}, {"outcome": "ok", "max_memory_gb": 0.01}, "passed")
    both = [*RESULTS["profiles"], cpu]
    out = lines(render({**RESULTS, "profiles": both, "rows": [{**infer, "profile": "cpu-tiny"}]}))
    assert "## Profile cpu-tiny" in out and "## Profile a100-sxm4-40gb" not in out
    assert "## Profile a100-sxm4-40gb" in lines(render({**RESULTS, "profiles": both})), "rows of its own: a section"


def test_a_finding_two_checks_share_is_listed_once() -> None:
    count = {"text": "trainable_params: measured 1,288, expected 1,290 (tolerance exact): mismatch"}
    failed = row("finetune-lora-llama2_7b-noquant-mb1-1gpu", {}, {"outcome": "ok"}, "failed", findings=[count, count])
    section = render({**RESULTS, "rows": [failed]}).split("## Findings")[1]
    assert section.count(count["text"]) == 1


# The command line ---------------------------------------------------------------------------------------
def test_cli_report_renders_a_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULTS))
    assert main(["report", str(path)]) == 0
    assert FINETUNE_HEADER in capsys.readouterr().out
    out = tmp_path / "r.md"
    assert main(["report", str(path), "-o", str(out)]) == 0
    assert out.read_text() == render(RESULTS)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"format": "other", "rows": []}', "not a conformance results file"),
        # json keeps the last of a key given twice: a hand-edited baseline read as not written
        (
            '{"rows": [{"id": "r", "verdict": "failed", "verdict": "passed"}]}',
            "duplicate key 'verdict' at /rows/0/verdict (the object with id 'r')",
        ),
    ],
)
def test_cli_report_refuses_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "r.json"
    path.write_text(content)
    assert main(["report", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: p.symlink_to("/dev/zero"), "not a regular file (a FIFO or a device", id="dev-zero"),
        pytest.param(os.mkfifo, "not a regular file (a FIFO or a device", id="fifo"),
        pytest.param(lambda p: os.truncate(_made(p), MAX_RESULTS_BYTES + 1), "larger than any results file", id="big"),
        pytest.param(lambda p: p.write_bytes(b'{"rows": "\xff"}'), "not UTF-8 text: byte 10", id="latin-1"),
        pytest.param(os.mkdir, "cannot read: Is a directory", id="folder"),
    ],
)
def test_a_results_path_that_is_no_file_to_read_whole_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    """``/dev/zero`` given as a results file filled the host's memory until the kernel killed the
    command (24 GB), and a FIFO blocked it forever: both are refused before a byte is read, as
    a larger file than any session writes is, unread."""
    path = tmp_path / "r.json"
    make(path)
    for argv in (["report", str(path)], ["diff", str(path), str(path.with_name("other.json"))]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"conformance {argv[0]}: {path}: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{results}", "-o", "{long}"],
        ["report", "{results}", "{results}2", "--merged", "{long}"],
        ["report", "{results}", "--plot", "{long}"],
        ["diff", "{results}", "{results}2", "-o", "{long}"],
        ["validate", "--expectations", "{long}"],
        ["estimate", "--config", "{long}", "--workload", "inference"],
    ],
    ids=lambda argv: "-".join(argv[:1] + [a for a in argv if a.startswith("-")]),
)
def test_a_path_too_long_for_the_file_system_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Before: an OSError traceback ("File name too long") from the first check of the path."""
    long = tmp_path / ("x" * 300)
    argv = [a.format(results=_results_file(tmp_path), long=long) for a in argv]
    with pytest.raises(SystemExit) as refused:  # argparse's refusal, from the option's type
        main(argv)
    assert refused.value.code == 2
    err = capsys.readouterr().err
    # (a name no file can have: cut short, as any value longer than SHOWN_CHARS)
    assert err.endswith(f"{clipped(str(long))}: File name too long\n") and err.count("\n") == 1, err


# Where the line names the value by what it is rather than by its option.
SAID = {
    "profiles": "unknown profile",
    "--profile": "unknown profile",
    "--model": "unknown model",
    "--precision": "unknown precision",
    "--quantize": "unknown quantize mode",
}


def _huge_values() -> list[Any]:
    """``pytest.param(argv, what the line names)`` for every value each subcommand takes, given
    each of HUGE, the other arguments valid (the results files are read only after every option)."""
    bases = {
        "report": ("report", "r.json"),
        "diff": ("diff", "r.json", "r.json"),
        "validate": ("validate",),
        "estimate": ("estimate", "--model", "tiny-llama", "--workload", "inference"),
    }
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    for command, parser in sub.choices.items():
        positionals = 0
        for action in parser._actions:
            if action.nargs == 0 or command not in bases:  # switches, --help; env takes no value
                continue
            positionals += not action.option_strings
            name = action.option_strings[-1] if action.option_strings else action.dest
            for kind, value in HUGE.items():
                argv = list(bases[command])
                if name == "--profile":  # what estimate estimates: a profile's rows, or one configuration
                    argv = ["estimate", name, value]
                elif name == "--config":
                    argv[1:3] = [name, value]
                elif not action.option_strings:
                    argv[positionals : positionals + 1] = [value]
                elif name in argv:
                    argv[argv.index(name) + 1] = value
                else:
                    argv += [name, value]
                said = SAID.get(name, action.metavar if not action.option_strings and action.metavar else name)
                cases.append(pytest.param(argv, said, id=f"{command}-{name}-{kind}"))
    text = HUGE["text"]
    return [
        *cases,
        pytest.param([text], "argument command: invalid choice", id="subcommand"),
        pytest.param(["env", text], "unrecognized arguments", id="extra-argument"),
        pytest.param(["env", "--" + text], "unrecognized arguments", id="unknown-option"),
    ]


@pytest.mark.parametrize(("argv", "said"), _huge_values())
def test_a_huge_value_is_quoted_cut_short_on_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as refused:  # argparse's refusal, from the option's type or choices
        code = refused.code
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and len(err) < 1_000, err[:200]
    value = next(a for a in argv if len(a) >= len(HUGE["number"])).removeprefix("--")
    assert said in err and value[:SHOWN_CHARS] not in err, err


def test_a_run_without_cpu_wait_figures_loads(tmp_path: Path) -> None:
    """Where /proc/self/task/*/schedstat cannot be read, the runner writes cpu_wait as null."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_edited(lambda d: d["rows"][0]["measured"].update(details={"cpu_wait": None}))))
    assert load_results(path)["rows"][0]["measured"]["details"] == {"cpu_wait": None}


def _made(path: Path) -> Path:
    path.touch()
    return path


def _edited(edit: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(RESULTS))
    edit(data)
    return data


def _results_file(folder: Path) -> Path:
    """``folder``/r.json: a valid results file (the module's ``RESULTS``)."""
    path = folder / "r.json"
    path.write_text(json.dumps(_edited(lambda d: None)))
    return path


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d.update(rows=[1, "x"]), "/rows/0: 1 is not of type 'object'"),
        (lambda d: d.update(rows=[{}]), "/rows/0: 'checks' is a required property"),
        (lambda d: d.update(fingerprint=5), "/fingerprint: 5 is not of type 'object'"),
        (lambda d: d.update(format="litgpt-conformance-results/1"), "/format: not a conformance results file of this version"),
        (lambda d: d.pop("format"), "/format: not a conformance results file of this version (no format field, expected"),
        (lambda d: d.pop("rows"), "/: 'rows' is a required property"),
        (lambda d: d["rows"][0].update(verdict="great"), "/rows/0/verdict: 'great' is not one of"),
        (lambda d: d["rows"][0].update(devices="2"), "/rows/0/devices: '2' is not of type 'integer'"),
        (lambda d: d["rows"][0]["measured"].update(max_memory_gb="lots"), "/rows/0/measured: field 'max_memory_gb'"),
        (lambda d: d["rows"][0]["measured"].update(version=7), "/rows/0/measured: field 'version'"),
        (lambda d: d["profiles"][0].pop("name"), "/profiles/0: 'name' is a required property"),
        # A measurement's absence, or a wait share that is no share, under checks that judged it
        (lambda d: d["rows"][0].update(measured=None), "/rows/0/measured: null, where its run check is 'passed'"),
        (lambda d: d["rows"][0]["measured"].update(details={"cpu_wait": {"wait_share": "0.9"}}),
         "/rows/0/measured/details/cpu_wait/wait_share: '0.9' is not of type 'number', 'null'"),
        (lambda d: d["rows"][0]["measured"].update(details={"cpu_wait": {"wait_share": -5}}),
         "/rows/0/measured/details/cpu_wait/wait_share: -5 is less than the minimum of 0"),
        (lambda d: d["fingerprint"].update(cpu={"model": "AMD EPYC", "cores": "2"}), "/fingerprint/cpu/cores: '2' is not valid under any"),
        (lambda d: d["rows"].append(dict(d["rows"][0])), "/rows/6/id: row 'finetune-lora-llama2_7b-noquant-mb1-1gpu' of profile 'a100-sxm4-40gb' is already at /rows/0"),
        # An id of the scheme that its fields do not make: a reader matching rows by id would judge
        # one configuration's figures as another's
        (lambda d: d["rows"][0].update(model="phi-1_5"), "/rows/0/model: row 'finetune-lora-llama2_7b-noquant-mb1-1gpu': model 'phi-1_5' is not the id's 'llama2_7b' (the row's fields make the id 'finetune-lora-phi_1_5-noquant-mb1-1gpu')"),
        (lambda d: d["rows"][0].update(micro_batch_size=4), "/rows/0/micro_batch_size: row 'finetune-lora-llama2_7b-noquant-mb1-1gpu': micro_batch_size 4 is not the id's 'mb1'"),
        (lambda d: d["rows"][0].update(id="finetune-lora-llama2_7b-noquant-mb1-2gpu"), "/rows/0/devices: row 'finetune-lora-llama2_7b-noquant-mb1-2gpu': devices 1 is not the id's '2gpu'"),
        (lambda d: d["rows"][5].update(workload="finetune", method="lora", micro_batch_size=1), "/rows/5/workload: row 'inference-llama2_7b-noquant-1gpu': workload 'finetune' is not the id's 'inference'"),
    ],
)  # fmt: skip
def test_cli_report_names_the_file_and_the_field_of_a_malformed_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, where: str
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_edited(edit)))
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"conformance report: {path}: {where}") and err.count("\n") == 1, err


def test_cli_report_names_an_expectations_table_given_for_a_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = expectations.DEFAULT_ROOT / "cpu-tiny" / "finetune.json"
    assert main(["report", str(table)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"conformance report: {table}: /format: no format field: an expectations table (profile 'cpu-tiny'),"
        " not a results file (pytest conformance --results FILE writes one)\n"
    )


def test_cli_report_refuses_an_output_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULTS))
    for output, problem in ((tmp_path / "missing" / "r.md", "does not exist"), (tmp_path, "is a directory")):
        assert main(["report", str(path), "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert problem in err and err.count("\n") == 1, err
    assert not (tmp_path / "missing").exists()


def test_cli_report_and_diff_never_write_over_a_file_they_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _results_file(tmp_path)
    before = source.read_bytes()
    for argv in (
        ["report", str(source), "-o", str(source)],
        ["report", str(source), "--merged", str(tmp_path / "." / "r.json")],
        ["diff", str(source), str(source), "-o", str(source)],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert "is a results file it reads; writing it would replace that input" in captured.err, argv
        assert captured.out == "" and captured.err.count("\n") == 1
    assert source.read_bytes() == before


def test_cli_report_and_diff_never_replace_a_profile_table_kept_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a copy of a profile kept for ``--expectations`` (outside the project's expectations
    folder) was replaced by Markdown (``report -o``), a merged results file (``--merged``) or a
    diff, without a word: a table is known by its content now, as a results file is."""
    kept = tmp_path / "mine" / "cpu-tiny"
    kept.mkdir(parents=True)
    table = kept / "finetune.json"
    table.write_bytes((expectations.DEFAULT_ROOT / "cpu-tiny" / "finetune.json").read_bytes())
    before = table.read_bytes()
    source = _results_file(tmp_path)
    for argv in (
        ["report", str(source), "-o", str(table)],
        ["report", str(source), "--merged", str(table)],
        ["diff", str(source), str(source), "-o", str(table)],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert f"{table}: is an expectations table (profile 'cpu-tiny'); refusing to replace it" in captured.err, argv
        assert captured.out == "" and captured.err.count("\n") == 1
    assert table.read_bytes() == before


def test_cli_report_and_diff_never_write_into_the_expectations_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `-o expectations/cpu-tiny/finetune.json` replaced a profile's table with Markdown
    (and `-o expectations/schema.json` the schema), and every later session stopped at it."""
    import conformance.targets

    root = tmp_path / "expectations"
    (root / "a-profile").mkdir(parents=True)
    table, schema = root / "a-profile" / "finetune.json", root / "schema.json"
    table.write_text('{"cases": []}\n')
    schema.write_text("{}\n")
    monkeypatch.setattr(conformance.targets, "DEFAULT_ROOT", root)
    source = _results_file(tmp_path)
    for argv in (
        ["report", str(source), "-o", str(table)],
        ["report", str(source), "-o", str(schema)],
        ["report", str(source), "--merged", str(root / "a-profile" / "merged.json")],
        ["report", str(source), "--plot", str(root / "rows.png")],
        ["diff", str(source), str(source), "-o", str(table)],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert "is inside the expectations folder" in captured.err and "write it elsewhere" in captured.err, argv
        assert captured.out == "" and captured.err.count("\n") == 1
    assert table.read_text() == '{"cases": []}\n' and schema.read_text() == "{}\n"
    assert sorted(p.name for p in root.rglob("*")) == ["a-profile", "finetune.json", "schema.json"]


def test_cli_report_and_diff_never_write_a_report_over_another_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _results_file(tmp_path)
    other = tmp_path / "before.json"
    other.write_text(source.read_text())
    kept = other.read_bytes()
    merged = tmp_path / "all.json"
    for argv, problem in (
        (["report", str(source), "-o", str(other)], f"-o {other}: is a conformance results file"),
        (["diff", str(source), str(source), "-o", str(other)], f"-o {other}: is a conformance results file"),
        (["report", str(source), "--merged", str(merged), "-o", str(merged)], f"-o {merged}: is the --merged file too"),
        (
            ["report", str(source), "--merged", str(other)],
            f"--merged {other}: is a session's results file, not an earlier merge; refusing to replace it",
        ),
        (
            ["report", str(source), "--merged", str(merged), "--plot", str(merged)],
            f"--merged {merged}: is the --plot file too; one would replace the other",
        ),
        (
            ["report", str(source), "-o", str(tmp_path / "x.png"), "--plot", str(tmp_path / "x.png")],
            "-o " + str(tmp_path / "x.png") + ": is the --plot file too",
        ),
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert problem in captured.err and captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert other.read_bytes() == kept and not merged.exists() and not (tmp_path / "x.png").exists()


def test_a_report_of_a_baseline_session_says_what_its_figures_are_measured_against() -> None:
    assert "Expected figures" not in render(RESULTS)
    text = render({**RESULTS, "options": {"baseline": "before.json"}})
    assert "- Expected figures: what the baseline `before.json` measured (`--baseline`), not the profile's" in text


def test_a_device_as_the_output_is_refused_without_being_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, -o /dev/full was read to see whether it held results: the read never ended."""
    source = tmp_path / "r.json"
    source.write_text(json.dumps(RESULTS))
    assert main(["report", str(source), "-o", "/dev/full"]) == 2
    assert capsys.readouterr().err == "conformance report: -o /dev/full: exists and is not a regular file\n"


def test_a_results_file_that_links_to_itself_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop.name)
    assert main(["report", str(loop)]) == 2
    err = capsys.readouterr().err
    assert err == f"conformance report: {loop}: cannot read: Too many levels of symbolic links\n"


def test_cli_report_never_writes_through_a_symlink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULTS))
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "r.md").symlink_to(victim)
    assert main(["report", str(path), "-o", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert "r.md: is a symbolic link; refusing to write through it" in err and err.count("\n") == 1, err
    assert victim.read_text() == "keep"


def test_rows_that_did_not_finish_are_not_run_never_pass(tmp_path: Path) -> None:
    data = _edited(lambda d: d.update(finished=False))
    data["rows"][0].update(verdict="not run", checks={"params": "passed"}, pending=["run", "speed"], measured=None)
    data["summary"] = verdict_counts(data["rows"])
    (tmp_path / "r.json").write_text(json.dumps(data))
    assert load_results(tmp_path / "r.json") == data  # the schema knows "not run" and "pending"
    text = render(data)
    assert "**The session did not finish** (killed, interrupted, or stopped by -x or --maxfail): 1 row not run" in text
    [line] = [x for x in lines(text) if x.startswith("| 7 B | Llama 2 | None | 1 | 4,194,304 |")][:1]
    assert line.endswith("| not run: run, speed |") and "(not run)" in line
    # Cut off after its run: measured, and the checks it lacks are named.
    data["rows"][0].update(
        checks={"params": "passed", "run": "passed"}, pending=["speed"], measured=RESULTS["rows"][0]["measured"]
    )
    text = render(data)
    assert "(killed, interrupted, or stopped by -x or --maxfail): 1 row measured but not every check finished\n" in text
    [line] = [x for x in lines(text) if x.startswith("| 7 B | Llama 2 | None | 1 | 4,194,304 |")][:1]
    assert line.endswith("| not run: speed |") and "(not run)" not in line
    assert "2.40 min (+1.7%, not judged: its check did not run)" in line  # before: read as a judged figure
    # A row that failed before the session was cut off (-x) names the checks it left too.
    data["rows"][0].update(verdict="failed", checks={"params": "passed", "run": "failed"})
    [line] = [x for x in lines(render(data)) if x.startswith("| 7 B | Llama 2 | None | 1 | 4,194,304 |")][:1]
    assert line.endswith("| **FAIL** (not run: speed) |")
    assert "1 row measured but not every check finished" in render(data)


def test_a_run_that_ended_before_its_check_judged_it_is_marked_not_judged(tmp_path: Path) -> None:
    """A session killed between a row's run and its run check: the memory read "(+0.7%)" as if the
    check had passed it, beside a speed marked "its check did not run" (``conformance diff`` does not
    compare the row)."""
    data = _edited(lambda d: d.update(finished=False))
    data["rows"][0].update(verdict="not run", checks={"params": "passed"}, pending=["run", "speed"])
    data["summary"] = verdict_counts(data["rows"])
    (tmp_path / "r.json").write_text(json.dumps(data))
    assert load_results(tmp_path / "r.json") == data
    [line] = [x for x in lines(render(data)) if x.startswith("| 7 B | Llama 2 | None | 1 | 4,194,304 |")][:1]
    assert "| 21.45 GB (+0.7%, not judged: its check did not run) |" in line
    assert "| 2.40 min (+1.7%, not judged: its check did not run) |" in line
    assert line.endswith("| not run: run, speed |")


def test_cli_env_prints_the_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "conformance: torch " in out and "conformance profile " in out
    assert main(["env", "--json"]) == 0
    assert "gpu_count" in json.loads(capsys.readouterr().out)


def test_a_lone_double_dash_after_a_command_without_a_list_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a TypeError traceback (``conformance env --``, ``conformance estimate ... --``), where
    argparse accepts a "--" with nothing after it."""
    assert main(["env", "--json", "--"]) == 0
    assert "gpu_count" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evn"], "conformance: error: argument command: invalid choice: 'evn'; did you mean 'env'? (choose from "),
        (["env", "--jsn"], "conformance env: error: unrecognized arguments: --jsn; did you mean --json?\n"),
        (["validate", "--bogus"], "conformance validate: error: unrecognized arguments: --bogus\n"),
        (  # before: "did you mean --tolerance for --toleranse?", as if 0.1 were a second misspelling
            ["estimate", "--profile", "cpu-tiny", "--toleranse", "0.1"],
            "conformance estimate: error: unrecognized arguments: --toleranse 0.1; did you mean --tolerance?\n",
        ),
    ],
    ids=["subcommand", "option", "nothing-close", "option-and-its-value"],
)
def test_a_misspelled_subcommand_or_option_names_the_closest(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: "invalid choice: 'evn' (choose from ...)", "unrecognized arguments: --jsn", no hint."""
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert capsys.readouterr().err.startswith(message)


@pytest.mark.parametrize("command", ["env", "report", "validate", "estimate", "diff"])
def test_each_subcommands_help_states_its_exit_status(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: only diff's --help did; validate's 1 (an invalid profile) and estimate's 0 for any
    outcome (oom included) were in the READMEs alone, and validate's --expectations had no help."""
    with pytest.raises(SystemExit) as shown:
        main([command, "--help"])
    assert shown.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0" in text
    if command == "validate":
        assert "1 one is not" in text and f"--expectations DIR default: {expectations.DEFAULT_ROOT}" in text


def test_diffs_help_names_the_speed_tolerance_as_an_excess_and_states_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: "--speed-tolerance FRACTION", though 0.15 is a factor of 1.15x, and the tolerances'
    default (each row's, the tighter of the two files') was not said."""
    with pytest.raises(SystemExit) as shown:
        main(["diff", "--help"])
    assert shown.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--speed-tolerance FRACTION" not in text and "--speed-tolerance EXCESS" in text
    assert "--memory-tolerance FRACTION" in text
    assert text.count("default: each row's, the tighter of the two files'") == 2


@pytest.mark.parametrize("command", ["validate", "estimate"])
def test_help_shows_a_checkout_path_with_a_percent_sign(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse formats help text with %: a checkout under "100%/" made --help raise."""
    from conformance import estimate_command

    root = Path("/work/100%/expectations")
    monkeypatch.setattr(cli, "DEFAULT_ROOT", root)
    monkeypatch.setattr(estimate_command, "DEFAULT_ROOT", root)
    with pytest.raises(SystemExit) as shown:
        main([command, "--help"])
    assert shown.value.code == 0
    assert f"default: {root}" in " ".join(capsys.readouterr().out.split())


def test_a_bad_results_path_is_named_as_the_usage_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    """Named as the usage names the files (RESULTS.json; before: "file"), before or after ``-o``."""
    for argv in (["report", ""], ["report", "a.json", "-o", "x.md", ""]):
        with pytest.raises(SystemExit):
            main(argv)
        assert capsys.readouterr().err == (
            "conformance report: error: argument RESULTS.json: expected a path, got an empty value\n"
        )


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 0
    assert "a100-sxm4-40gb: ok (5 files, 72 rows)" in capsys.readouterr().out
    bad = tmp_path / "exp" / "broken"
    bad.mkdir(parents=True)
    (bad / "t.json").write_text('{"profile": "broken"}')
    assert main(["validate", "--expectations", str(tmp_path / "exp")]) == 1
    assert "t.json: field 'cases': missing required field" in capsys.readouterr().err
    (tmp_path / "exp" / "mine").mkdir()
    (tmp_path / "exp" / "mine" / "t.yaml").write_text("cases: []\n")
    (tmp_path / "only" / "mine").mkdir(parents=True)
    # Bad input, not an invalid profile: exit status 2, one line naming it
    cases = {
        # A hand-written profile's folder without a *.json table: before, only "unknown profile 'mine'".
        ("validate", "--expectations", str(tmp_path / "exp"), "mine"): "mine holds no profile table (*.json)",
        # A profile's folder where its name is asked: before, only "unknown profile 'expectations/cpu-tiny'".
        ("validate", str(expectations.DEFAULT_ROOT / "cpu-tiny")): (
            f"{expectations.DEFAULT_ROOT / 'cpu-tiny'} is the folder of profile cpu-tiny: give its name"
            " (conformance validate --expectations "
        ),
        ("validate", "nope"): "unknown profile 'nope' (available in ",
        # Before: "unknown profile ''; did you mean 'a100-sxm4-40gb'?"
        ("validate", ""): "conformance validate: expected a profile name, got an empty value",
        ("validate", "--expectations", str(bad / "t.json")): "t.json: not a directory",
        ("validate", "--expectations", str(tmp_path)): "no profiles in ",
        # The same folder where it is the only one: before, only "no profiles in .../only".
        ("validate", "--expectations", str(tmp_path / "only"), "mine"): (
            f"no profiles in {tmp_path / 'only'}; {tmp_path / 'only' / 'mine'} holds no profile table (*.json)"
        ),
        # A profile's own folder: the command's own arguments for the folder that holds it.
        ("validate", "--expectations", str(REPO / "expectations" / "cpu-tiny")): (
            "is the folder of profile cpu-tiny: give the folder that holds it (conformance validate --expectations "
        ),
    }
    for argv, fragment in cases.items():
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1, err
    # A shortened name is hinted; a folder name as the shell completes it (trailing /) is the profile.
    assert main(["validate", "a100"]) == 2
    assert "unknown profile 'a100'; did you mean 'a100-sxm4-40gb'?" in capsys.readouterr().err
    assert main(["validate", "cpu-tiny/"]) == 0
    assert "cpu-tiny: ok (2 files, 11 rows)" in capsys.readouterr().out
    # A profile named twice (cpu-tiny/ too) is validated once: before, its line was printed twice.
    assert main(["validate", "cpu-tiny", "a100-sxm4-40gb", "cpu-tiny/", "cpu-tiny"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["cpu-tiny", "a100-sxm4-40gb"]


@pytest.mark.parametrize(
    ("schema_text", "fragment"),
    [
        ('{"type": "objet"}', "not a valid JSON Schema at /type: 'objet' is not valid"),
        ("{", "cannot load the schema: Expecting property name"),
    ],
)
def test_cli_validate_names_an_edited_schema_that_cannot_be_used_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], schema_text: str, fragment: str
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(schema_text)
    monkeypatch.setattr(expectations, "SCHEMA_PATH", schema)
    monkeypatch.setattr(cli, "SCHEMA_PATH", schema)
    expectations._validator.cache_clear()
    try:
        assert main(["validate"]) == 1
    finally:
        expectations._validator.cache_clear()  # the shipped schema for the tests after this one
    err = capsys.readouterr().err
    assert err == f"{schema}: {fragment}" + err.split(fragment, 1)[1] and err.count("\n") == 1, err


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document (as key/index paths)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_edit_of_a_results_file_renders_or_is_one_line_naming_the_field(data: st.DataObject) -> None:
    document = json.loads(json.dumps(RESULTS))
    path = data.draw(st.sampled_from(_paths(document)[1:]))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), "delete") and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES, "value")
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "r.json"
        file.write_text(json.dumps(document))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["report", str(file)])
    assert status in (0, 2)
    if status == 2:
        # A field by its JSON pointer, or a number JSON cannot hold by its line and column.
        named = (f"conformance report: {file}: /", f"conformance report: {file}: not valid JSON: ")
        assert err.getvalue().startswith(named) and err.getvalue().count("\n") == 1
    else:
        assert out.getvalue().startswith("# Conformance report") and not err.getvalue()


def test_a_row_whose_verdict_contradicts_its_checks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand edit to "passed" over a failed run passed the schema and every reader."""
    path = tmp_path / "r.json"
    edited = json.loads(json.dumps(RESULTS))
    edited["rows"][0].update(checks={"params": "passed", "run": "failed"}, verdict="passed")
    path.write_text(json.dumps(edited))
    assert main(["report", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"conformance report: {path}: /rows/0/verdict: 'passed' does not follow from the row's checks (params"
        " passed, run failed), which give 'failed'\n"
    )
    edited["rows"][0].update(checks={"params": "passed"}, pending=["run"])  # a killed session's row
    path.write_text(json.dumps(edited))
    assert main(["report", str(path)]) == 2
    assert "(params passed; run not finished), which give 'not run'" in capsys.readouterr().err
    # A row stripped of its checks (before: read as it said, "passed" over no check at all).
    edited["rows"][0].update(checks={}, pending=[], verdict="passed")
    path.write_text(json.dumps(edited))
    assert main(["report", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"conformance report: {path}: /rows/0/checks: the row lists no check, so nothing gives its verdict 'passed'\n"
    )


def test_a_results_file_whose_summary_or_profiles_disagree_with_its_rows_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, a hand-edited verdict left the header at "10 passed" beside a FAIL row, and a row of a
    profile the file did not list vanished from the report."""
    path = tmp_path / "r.json"
    failed = json.loads(json.dumps(RESULTS))
    failed["rows"][0].update(verdict="failed", checks={"run": "failed"})
    path.write_text(json.dumps(failed))
    assert main(["report", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"conformance report: {path}: /summary: 1 failed, 3 passed, 1 skipped, 1 xfailed does not match the rows'"
        " verdicts (2 failed, 2 passed, 1 skipped, 1 xfailed)\n"
    )
    assert "- Verdicts: 2 failed, 2 passed, 1 skipped, 1 xfailed" in render(failed), "the header counts the rows"
    stray = json.loads(json.dumps(RESULTS))
    stray["rows"][0]["profile"] = "h100"
    path.write_text(json.dumps(stray))
    assert main(["report", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"conformance report: {path}: /rows/0/profile: row 'finetune-lora-llama2_7b-noquant-mb1-1gpu' names profile"
        " 'h100', which /profiles does not list (a100-sxm4-40gb)\n"
    )


def test_a_results_file_that_lists_no_profile_for_its_rows_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, `"profiles": []` was read as "no list to check the rows against": report, diff and
    --baseline took a file whose rows name a profile it does not list, exit status 0."""
    from conformance.baseline import Baseline

    path = tmp_path / "r.json"
    path.write_text(json.dumps({**RESULTS, "profiles": []}))
    problem = (
        f"{path}: /profiles: lists no profile, where row 'finetune-lora-llama2_7b-noquant-mb1-1gpu' (/rows/0) names"
        " profile 'a100-sxm4-40gb'; a results file lists the profile of each of its rows"
    )
    assert main(["report", str(path)]) == 2
    assert capsys.readouterr().err == f"conformance report: {problem}\n"
    (tmp_path / "old").mkdir()
    assert main(["diff", str(_results_file(tmp_path / "old")), str(path)]) == 2
    assert capsys.readouterr().err == f"conformance diff: {problem}\n"
    with pytest.raises(ValueError) as refused:
        Baseline.load(path)
    assert str(refused.value) == problem
    # A file without rows lists what its session had active, or nothing: no row to contradict it.
    path.write_text(json.dumps({**RESULTS, "profiles": [], "summary": {}, "rows": []}))
    assert load_results(path)["profiles"] == []


def test_rows_kept_from_an_earlier_session_name_its_machine_where_it_differs() -> None:
    """An early-stopped session keeps the earlier file's rows it did not reach: the report names
    that session, and its libraries where they are not this session's (the header is this one's)."""
    from results_files import FINGERPRINT, measured, results, row

    earlier = {**FINGERPRINT, "torch": "2.11.0+cu124"}
    kept = {
        **row("inference-llama2_7b-noquant-1gpu", measured(method=None, micro_batch_size=None, tokens_per_sec=30.0)),
        "fingerprint": earlier, "source": "r.json", "created": "2026-11-30T00:00:00+00:00", "baseline": None,
    }  # fmt: skip
    own = row("finetune-lora-llama2_7b-nf4-mb1-1gpu", None, verdict="not run")
    doc = {**results([own, kept]), "finished": False}
    lines = render(doc).splitlines()
    assert "  - PyTorch 2.12.0+cu124" in lines  # this session's
    assert (
        "- 1 row this session did not reach: the measurement of the earlier session (created"
        " 2026-11-30T00:00:00+00:00; Relevant libraries: PyTorch 2.11.0+cu124, CUDA 12.4, Bitsandbytes 0.50.2,"
        " Lightning 2.6.6, Python 3.11.7) that this file replaced"
    ) in lines
    assert (
        "- **The session did not finish** (killed, interrupted, or stopped by -x or --maxfail): 1 row not run,"
        " 1 row not reached, the earlier file's measurement kept"
    ) in lines


def test_report_and_diff_replace_their_own_output_and_no_other_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, `conformance report r.json -o README.md` replaced the README, exit status 0."""
    source = _results_file(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# My project\n")
    for argv in (
        ["report", str(source)],
        ["diff", str(source), str(source)],
        ["diff", str(source), str(source), "--json"],
    ):
        assert main([*argv, "-o", str(readme)]) == 2
        assert (
            f"-o {readme}: exists and is not conformance {argv[0]} output; refusing to replace it (pick another name,"
            " or remove it first)"
        ) in capsys.readouterr().err
        assert readme.read_text() == "# My project\n"
    out = tmp_path / "r.md"
    out.write_text("")  # an empty file holds nothing to keep
    for _ in range(2):  # then its own report, replaced again
        assert main(["report", str(source), "-o", str(out)]) == 0
    assert out.read_text() == render(load_results(source))
