"""The estimate of every row of a profile, its table and its verdict (the command that prints them
is :mod:`conformance.estimate_command`).

Each row becomes a :class:`litgpt_min.estimate.EstimateRequest` (the row's model, workload,
method, quantization, micro-batch and devices; the runner options that move memory: precision,
batch size, lm_head chunk size, LoRA/Adapter settings, prompt and new tokens), is estimated without a GPU, and is compared with
the row's published figure. Rows are estimated in order, so rows of the same model share the
fake-tensor machinery's warm caches (see the README for what a row costs).

Output: ``--json`` prints one object per row (``id``, ``outcome``, ``max_memory_gb``, ``stack``,
plus the expected outcome and figure and the relative error); otherwise a table (``--markdown``
for the README) with the expected figure and the error beside each estimate. ``--reserved`` adds
what the caching allocator reserves (one-device rows, modelled at full depth):
``max_memory_reserved_gb`` and ``reserved_at_first_gemm_gb`` (null otherwise).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import signal
import statistics
import textwrap
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conformance.display import pct_text
from conformance.expectations import PRECISION, Case, Profile, load_profile
from litgpt_min.config import Config
from litgpt_min.estimate import (
    Estimate,
    EstimateRequest,
    Outcome,
    Reserve,
    Stack,
    estimate,
    request_from_run,
    stack_for,
)
from litgpt_min.launch import die_with_parent
from litgpt_min.options import build_request

StackChoice = str  # "current" | "profile"


# Rows -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowEstimate:
    """One row's estimate beside its expected outcome and figure."""

    id: str
    outcome: Outcome
    max_memory_gb: float | None
    stack: Stack
    how: str
    expected_outcome: str
    expected_gb: float | None
    capacity_gb: float | None
    unsupported: str | None = None
    reserve: Reserve | None = None

    @property
    def error_rel(self) -> float | None:
        """(estimate - expected) / expected, when both are figures (None where it overflows: an
        expected figure of 1e-320 GB gives no ratio JSON can write)."""
        if self.max_memory_gb is None or not self.expected_gb:
            return None
        rel = (self.max_memory_gb - self.expected_gb) / self.expected_gb
        return rel if math.isfinite(rel) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "outcome": self.outcome,
            "max_memory_gb": self.max_memory_gb,
            "stack": self.stack,
            "how": self.how,
            "capacity_gb": self.capacity_gb,
            "expected_outcome": self.expected_outcome,
            "expected_max_memory_gb": self.expected_gb,
            "error_rel": None if self.error_rel is None else round(self.error_rel, 4),
            "unsupported": self.unsupported,
            **reserve_json(self.reserve),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RowEstimate:
        """The estimate back from :meth:`to_json` (a pytest-xdist worker sends it so)."""
        reserved, at_gemm = data["max_memory_reserved_gb"], data["reserved_at_first_gemm_gb"]
        return cls(
            id=data["id"],
            outcome=data["outcome"],
            max_memory_gb=data["max_memory_gb"],
            stack=data["stack"],
            how=data["how"],
            expected_outcome=data["expected_outcome"],
            expected_gb=data["expected_max_memory_gb"],
            capacity_gb=data["capacity_gb"],
            unsupported=data["unsupported"],
            reserve=None
            if reserved is None
            else Reserve(round(reserved * 1e9), None if at_gemm is None else round(at_gemm * 1e9)),
        )


def reserve_json(reserve: Reserve | None) -> dict[str, float | None]:
    """The caching allocator's reserve (``--reserved``; null when not modelled)."""
    return {
        "max_memory_reserved_gb": None if reserve is None else reserve.max_memory_reserved_gb,
        "reserved_at_first_gemm_gb": None if reserve is None else reserve.at_first_gemm_gb,
    }


def request_for_case(case: Case, stack: Stack) -> EstimateRequest:
    """The estimate request of a profile row: the run the suite's runner would ask for (the same
    flat options, typed by ``litgpt_min.options.build_request``), for the row's devices."""
    values: dict[str, Any] = {"model": case.model, "quantize": case.quantize, "precision": PRECISION}
    if case.workload == "finetune":
        values.update(method=case.method, micro_batch_size=case.micro_batch_size)
    values.update(case.runner_options)
    if case.devices > 1 and case.quantize is not None:
        # RunRequest refuses it: built for one device, unquantized, so that it still yields a
        # request; the estimate for the row's devices reproduces the refusal as "unsupported".
        values.update(devices=1, quantize=None)
    else:  # as the runner builds it (Adapter's default batch divided by the devices, floored)
        values["devices"] = case.devices
    run = build_request(case.workload, values)
    request = request_from_run(run, stack=stack, devices=case.devices)
    return dataclasses.replace(request, quantize=case.quantize) if case.devices > 1 else request


def profile_stack(profile: Profile, choice: StackChoice) -> Stack:
    """``current``, or the stack of the profile's recorded bitsandbytes version (``profile``)."""
    if choice == "current":
        return "current"
    return stack_for(profile.software.get("bitsandbytes"))


def profile_capacity_gb(profile: Profile) -> float:
    """What the profile's card can allocate: its usable memory, else its nominal memory."""
    return float(profile.hardware.get("usable_memory_gb") or profile.hardware["memory_gb"])


def estimate_case(case: Case, stack: Stack, capacity_gb: float | None, reserve: bool = False) -> RowEstimate:
    """``reserve``: also model the caching allocator (one-device rows; full depth, slower)."""
    result: Estimate = estimate(request_for_case(case, stack), reserve=reserve)
    return RowEstimate(
        id=case.id,
        outcome=result.outcome(capacity_gb),
        max_memory_gb=result.max_memory_gb,
        stack=result.stack,
        how=result.how,
        expected_outcome=case.outcome,
        expected_gb=case.max_memory_gb,
        capacity_gb=capacity_gb,
        unsupported=result.unsupported,
        reserve=result.reserve,
    )


def estimate_profile(
    profile: Profile,
    *,
    stack: Stack,
    capacity_gb: float | None,
    jobs: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    reserve: bool = False,
) -> list[RowEstimate]:
    """Every row's estimate, in the profile's order; ``jobs`` > 1 spreads rows over processes."""
    cases = profile.cases
    if jobs <= 1 or len(cases) < 2:
        rows = []
        for i, case in enumerate(cases):
            if progress is not None:
                progress(i, len(cases), case.id)
            rows.append(estimate_case(case, stack, capacity_gb, reserve))
        return rows
    # Forked from a warmed-up parent, so that no worker pays the imports and the fake-tensor
    # machinery's first-call set-up again. Workers only run fake tensors (no OpenMP compute, which
    # a forked child of a parent that used it can hang in).
    _warm_up()
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    jobs = min(jobs, len(cases))
    pieces = share_rows(cases, jobs)
    done: dict[int, RowEstimate] = {}
    # Each row's index as a worker finishes it, for the progress: a piece's rows come back together,
    # at its end (a worker's whole share, once, left the A100 profile's progress blank for a minute).
    finished = context.SimpleQueue()
    # Workers ignore Ctrl-C: the parent alone answers it (one line, no worker's traceback) and
    # ends them, rather than waiting for their shares. They die with the parent too (a `kill` of
    # it alone left them computing, then waiting forever on the pool's pipes). SIGINT is held while
    # they start, so that none takes one before its initializer ignores it; the parent gets its
    # own once they are started. (The pool starts them at the first submit, not when it is made: a
    # pool that cannot be made, out of file descriptors, raises with nothing held.)
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(pieces)),
        mp_context=context,
        initializer=_worker_init,
        initargs=(os.getpid(), finished),
    )
    try:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            # Costliest first, each to the next worker that comes free.
            futures = [
                pool.submit(
                    _estimate_rows,
                    profile.name,
                    profile.directory.parent,
                    {i: cases[i].id for i in piece},
                    stack,
                    capacity_gb,
                    reserve,
                )
                for piece in pieces
            ]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        pending, shown = set(futures), 0
        while pending:
            completed, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in completed:
                done.update(future.result())  # a worker's error is raised here
            while not finished.empty():
                index = finished.get()
                if progress is not None:
                    progress(shown, len(cases), cases[index].id)
                shown += 1
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return [done[i] for i in range(len(cases))]


# A worker's end of estimate_profile's queue of finished rows (None outside a worker).
_FINISHED: Any = None


def _worker_init(parent: int, finished: Any = None) -> None:
    global _FINISHED
    _FINISHED = finished
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held while the pool started it
    die_with_parent(parent)


def share_rows(cases: list[Case], jobs: int) -> list[list[int]]:
    """Row indices in pieces, costliest first, for ``jobs`` workers that each take the next piece
    when they come free: a piece is one model's rows (the fake-tensor dispatch cache is per process
    and fills once per model), or a part of them for a model that costs more than a worker's even
    share, so that at most ``jobs - 1`` models are split. Costs, measured on one core: an
    inference row 1 (about 0.3 s), a finetune row 3, a multi-device one 10 (two steps at two depths
    each, with recomputation), a row the estimate refuses (N/A) nothing."""

    def cost(i: int) -> int:
        case = cases[i]
        if case.outcome == "unsupported":
            return 0
        return 10 if case.devices > 1 else 3 if case.workload == "finetune" else 1

    whole = max(1, sum(cost(i) for i in range(len(cases))))
    models: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        models.setdefault(case.model, []).append(i)
    pieces: list[list[int]] = []
    for rows in models.values():
        total = sum(cost(i) for i in rows)
        parts = max(1, min(len(rows), -(-total * jobs // whole)))  # (parts - 1 < this model's shares)
        piece: list[int] = []
        done = cuts = 0
        for i in rows:
            piece.append(i)
            done += cost(i)
            if cuts < parts - 1 and done * parts >= total * (cuts + 1):
                pieces.append(piece)
                piece, cuts = [], cuts + 1
        if piece:
            pieces.append(piece)
    return sorted(pieces, key=lambda piece: -sum(cost(i) for i in piece))


def _warm_up() -> None:
    estimate(
        EstimateRequest(Config.from_name("tiny-llama"), "finetune", "lora", precision="32-true", seq_len=8),
        extrapolate=False,
    )


def _estimate_rows(
    name: str, root: Path, ids: dict[int, str], stack: Stack, capacity_gb: float | None, reserve: bool
) -> list[tuple[int, RowEstimate]]:
    """A piece of the rows, each by its index in the parent's list and its id (the profile is loaded
    again here: its rows do not pickle; the parent's may be some of them, ``-k``'s). One thread:
    fake tensors compute nothing, and the workers already share the cores."""
    torch.set_num_threads(1)
    cases = {case.id: case for case in load_profile(name, root).cases}
    rows = []
    for i, case_id in ids.items():
        rows.append((i, estimate_case(cases[case_id], stack, capacity_gb, reserve)))
        if _FINISHED is not None:
            _FINISHED.put(i)
    return rows


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# Rendering --------------------------------------------------------------------------------------
def _gb(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"


def _expected(row: RowEstimate) -> str:
    if row.expected_outcome == "ok":
        return _gb(row.expected_gb)
    return {"oom": "OOM", "unsupported": "N/A"}.get(row.expected_outcome, row.expected_outcome)


def _estimated(row: RowEstimate) -> str:
    if row.outcome == "unsupported":
        return "N/A"
    text = _gb(row.max_memory_gb)
    return f"{text} (OOM)" if row.outcome == "oom" else text


def estimate_problem(row: RowEstimate, tolerance: float | None) -> str | None:
    """Why the estimate disagrees with the row, or None: an ``ok`` row must be predicted to fit
    with its figure within ``tolerance`` (None: the figure is not compared), an ``oom`` or
    ``error`` row predicted not to fit, an ``unsupported`` row predicted unsupported."""
    at = _at(row)
    if row.expected_outcome == "ok":
        if row.outcome != "ok":
            return f"{_prediction(row, at)}, the profile says ok ({_expected(row)} GB)"
        err = row.error_rel
        if tolerance is not None and (err is None or abs(err) > tolerance):
            # -0.11% beside ±0.1%, not -0.1%; an error too large for a ratio (an expected 1e-320 GB)
            shown = (
                ("no figure" if row.max_memory_gb is None else "off by more than any ratio")
                if err is None
                else f"{err:+.2%}"
            )
            return _figures(row, shown, tolerance)
        return None
    if row.expected_outcome in ("oom", "error"):
        if row.outcome == "oom":
            return None
        return f"{_prediction(row, at)}, the profile says {row.expected_outcome}"
    if row.outcome != row.expected_outcome:
        return f"{_prediction(row)}, the profile says {row.expected_outcome}"
    return None


def estimate_agreement(row: RowEstimate, tolerance: float | None) -> str:
    """What an estimate that agrees with its row predicted (``estimate_problem`` is None), in the
    words of a disagreement: the row's ``estimate_miss`` says it misses, and it no longer does."""
    if row.expected_outcome != "ok" or row.error_rel is None or tolerance is None:  # the outcome alone is judged
        return f"{_prediction(row, _at(row))}, the profile says {row.expected_outcome}"
    return _figures(row, f"{row.error_rel:+.2%}", tolerance)


def _at(row: RowEstimate) -> str:
    return f"at {_gb(row.capacity_gb)} GB" if row.capacity_gb is not None else "without a capacity"


def _figures(row: RowEstimate, shown: str, tolerance: float) -> str:
    """The estimate beside the profile's figure, ``shown`` the error between them."""
    return (
        f"estimated {_gb(row.max_memory_gb)} GB, the profile says {_expected(row)} GB "
        f"({shown}, tolerance ±{pct_text(tolerance)}%, stack {row.stack})"
    )


def _prediction(row: RowEstimate, at: str = "") -> str:
    if row.outcome == "unsupported":
        return "predicted unsupported"
    return f"predicted {row.outcome} ({_gb(row.max_memory_gb)} GB{' ' + at if at else ''})"


def _verdict(row: RowEstimate, tolerance: float | None) -> str:
    return "ok" if estimate_problem(row, tolerance) is None else "miss"


def render_table(
    rows: list[RowEstimate], tolerance: float | None, markdown: bool, reserved: bool = False, width: int | None = None
) -> str:
    """The per-row table; ``reserved`` adds the allocator's reserve: its peak, and at the first GEMM.
    ``width``: the summary under it is wrapped at it (a terminal's), else one line."""
    header: tuple[str, ...] = ("row", "table GB", "estimate GB", "error", "agrees")
    body: list[tuple[str, ...]] = [
        (
            r.id,
            _expected(r),
            _estimated(r),
            "" if r.error_rel is None else f"{r.error_rel:+.1%}",
            _verdict(r, tolerance),
        )
        for r in rows
    ]
    if reserved:
        header = (*header[:4], "reserved GB", "at 1st GEMM", header[4])
        body = [(*cells[:4], *_reserved_cells(r.reserve), cells[4]) for cells, r in zip(body, rows)]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + [":---:"]) + "|")
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
    else:
        widths = [max(len(str(c[i])) for c in [header, *body]) for i in range(len(header))]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in body]
    lines.append("")
    text = summary(rows, tolerance)
    lines += [text] if width is None else wrap_words(text, width)
    return "\n".join(lines) + "\n"


def wrap_words(text: str, width: int, **kwargs: Any) -> list[str]:
    """``text`` in lines of at most ``width`` columns, its words whole ("micro-steps",
    "torch.cuda.max_memory_allocated"): one longer than a line overflows it rather than be cut.
    ``kwargs``: ``textwrap.wrap``'s indents."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False, **kwargs)


def _reserved_cells(reserve: Reserve | None) -> tuple[str, str]:
    if reserve is None:
        return ("", "")
    return (_gb(reserve.max_memory_reserved_gb), _gb(reserve.at_first_gemm_gb))


def summary(rows: list[RowEstimate], tolerance: float | None) -> str:
    errors = sorted(abs(r.error_rel) for r in rows if r.error_rel is not None and r.expected_outcome == "ok")
    agree = sum(_verdict(r, tolerance) == "ok" for r in rows)
    median = statistics.median(errors) if errors else math.nan  # of an even count: the middle two's mean
    stacks = sorted({r.stack for r in rows})
    capacity = rows[0].capacity_gb if rows else None
    judged = (
        f"figures within ±{pct_text(tolerance)}%, outcomes at {_gb(capacity)} GB"
        if tolerance is not None
        else f"outcomes at {_gb(capacity)} GB; figures not compared: the profile sets no estimate_rel"
    )
    return (
        f"{agree}/{len(rows)} rows agree ({judged}); "
        f"|error| median {median:.1%}, max {errors[-1] if errors else math.nan:.1%} over {len(errors)} figures; "
        f"stack: {', '.join(stacks)}"
    )
