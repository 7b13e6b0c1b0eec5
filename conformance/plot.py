"""``conformance report FILE --plot out.png``: measured against expected, per row, with the bands.

One line per row with a memory or speed figure, two panels sharing the rows: peak memory and
speed, each as the deviation from the expected figure in percent, so that a 70 MB CPU row and a
40 GB A100 row read on one axis. The tolerance band is shaded: memory is two-sided (±tolerance);
speed is drawn as "slower than expected", the ``slowdown`` factor less one (time per 1k
iterations measured / expected, tokens per second expected / measured), so that right of the
band is a regression for both, and its band is the checks' factor: from (1 / (1 + r) - 1) to r
(15%: -13.0% to +15%; 4.0: -80% to +400%). Every dot's colour is ``conformance.compare.verdict``;
a speed timed on a busy machine, or whose check was skipped (a baseline that did not judge it), and a
figure whose check never ran (the session ended first), are grey, marked "not judged", as the
report marks them.
Rows that were not measured, or did not end ``ok``, say so in words where their dot would be.
matplotlib is an optional extra (``[plot]``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from conformance.compare import slowdown, verdict
from conformance.display import rows_text
from conformance.results import load_results, row_fingerprint, speed_check_skipped, speed_unjudged, verdict_counts
from conformance.targets import existing_head
from litgpt_min.files import atomic_write, check_output_file
from litgpt_min.usage import one_line

PLOT_EXTRA_MISSING = (
    "conformance report: --plot needs matplotlib: pip install 'litgpt-conformance[plot]' (or pip install matplotlib)"
)
# Deviations beyond this many percent are drawn at the edge with their value written beside.
CLIP_PCT = 60.0
ROW_HEIGHT_IN = 0.24
Status = Literal["within", "regression", "improvement", "not run", "outcome", "estimate", "unjudged"]
COLORS: Mapping[str, str] = {
    "within": "#2a9d3a",
    "regression": "#d62728",
    "improvement": "#1f77b4",
    "not run": "#9a9a9a",
    "outcome": "#d62728",
    "estimate": "#7a5195",  # a row that was not run, placed by its GPU-free estimate (hollow dot)
    "unjudged": "#9a9a9a",  # a speed timed on a busy machine, a figure whose check never ran: shown, not judged
}


@dataclass(frozen=True)
class Point:
    """One row in one panel: where its dot goes and what it says."""

    pct: float | None  # deviation in percent (speed: how much slower, less than 0 faster); None: no dot
    status: Status
    label: str  # "23.90 / 21.30 GB", "not run", "OOM (expected OOM)"
    tolerance_pct: float
    factor: bool = False  # speed: the band is the tolerance as a factor, from 1/(1+r) - 1 to r

    @property
    def band_pct(self) -> tuple[float, float]:
        """The shaded band, (left, right) in percent: where a dot is "within"."""
        if self.factor:
            return (100 / (1 + self.tolerance_pct / 100) - 100, self.tolerance_pct)
        return (-self.tolerance_pct, self.tolerance_pct)


def memory_point(row: Mapping[str, Any]) -> Point | None:
    expected = row.get("expected") or {}
    tol = float((row.get("tolerances") or {}).get("memory_rel", 0.1)) * 100
    point = _point(row, "max_memory_gb", expected.get("max_memory_gb"), "GB", tol)
    if point is not None and point.status == "not run":
        return _estimate_point(row.get("estimate"), expected.get("max_memory_gb"), point) or point
    if point is not None and "run" in (row.get("pending") or ()):
        # A run that ended as its session did, before its check judged it: shown, as the report shows it.
        point = dataclasses.replace(point, status="unjudged", label=f"{point.label} (not judged)")
    return point


def _estimate_point(estimate: Any, expected: Any, unrun: Point) -> Point | None:
    """An unrun row's GPU-free estimate against the expected figure (None: no estimate to show)."""
    if not isinstance(estimate, Mapping) or estimate.get("outcome") not in ("ok", "oom"):
        return None
    gb = estimate.get("max_memory_gb")
    if not isinstance(gb, (int, float)):
        return None
    if isinstance(expected, (int, float)) and expected > 0:
        pct = (gb - expected) / expected * 100
        return Point(pct, "estimate", f"estimate {_num(gb)} / {_num(expected)} GB", unrun.tolerance_pct)
    oom = ": OOM" if estimate["outcome"] == "oom" else ""
    return Point(None, "estimate", f"{unrun.label}; estimate {_num(gb)} GB{oom}", unrun.tolerance_pct)


def speed_point(row: Mapping[str, Any]) -> Point | None:
    expected = row.get("expected") or {}
    tol = float((row.get("tolerances") or {}).get("speed_rel", 0.15)) * 100
    if expected.get("time_1k_iters_min") is not None:
        point = _point(row, "time_1k_iters_min", expected["time_1k_iters_min"], "min", tol)
    else:
        point = _point(row, "tokens_per_sec", expected.get("tokens_per_sec"), "tok/s", tol)
    if point is not None and point.pct is not None and (speed_unjudged(row) is not None or speed_check_skipped(row)):
        point = dataclasses.replace(point, status="unjudged", label=f"{point.label} (not judged)")
    return None if point is None else dataclasses.replace(point, factor=True)


def _point(row: Mapping[str, Any], name: str, expected: Any, unit: str, tol: float) -> Point | None:
    want = (row.get("expected") or {}).get("outcome")
    run = row.get("measured")
    if expected is None:
        if want not in ("oom", "error", "unsupported"):
            return None
        if not run:
            return Point(None, "not run", f"not run (expected {_outcome(want)})", tol)
        got_outcome = run.get("outcome")
        # The verdict knows the row's rule (an "error" row also passes on an OOM).
        passed = row.get("verdict") in ("passed", "xfailed", "improved", "recorded")
        status: Status = "within" if passed or got_outcome == want else "outcome"
        return Point(None, status, f"{_outcome(got_outcome)} (expected {_outcome(want)})", tol)
    if not run:
        return Point(None, "not run", f"not run (expected {_num(expected)} {unit})", tol)
    if run.get("outcome") != "ok":
        return Point(None, "outcome", f"{_outcome(run.get('outcome'))} (expected {_num(expected)} {unit})", tol)
    got = run.get(name)
    if not isinstance(got, (int, float)) or not expected:
        return Point(None, "outcome", f"not measured (expected {_num(expected)} {unit})", tol)
    # compare.py's rule decides the colour. Memory: the deviation relative to the expected figure;
    # speed: how much slower (the factor less one), so right of the band is slower for both.
    pct = (got - expected) / expected * 100 if name == "max_memory_gb" else (slowdown(name, got, expected) - 1) * 100
    status = verdict(name, got, expected, tol / 100)
    return Point(pct, status, f"{_num(got)} / {_num(expected)} {unit}", tol)


def row_label(row: Mapping[str, Any], profiles: int) -> str:
    label = str(row.get("id"))
    return f"{row.get('profile')}:{label}" if profiles > 1 else label


def plot_results(results: Mapping[str, Any], out: Path) -> int:
    """Draw ``results`` into ``out`` (in the format its suffix names: ``plot_target_problem``); the rows drawn."""
    import matplotlib  # optional extra, heavy: imported only to draw

    matplotlib.use("Agg")  # no display needed, and none is wanted in CI
    import matplotlib.pyplot as plt

    rows = [r for r in results.get("rows") or [] if memory_point(r) is not None or speed_point(r) is not None]
    if not rows:
        raise ValueError("no row has a memory or speed figure to plot")
    n_profiles = len({r.get("profile") for r in rows})
    labels = [row_label(r, n_profiles) for r in rows]
    height = max(3.0, 1.6 + ROW_HEIGHT_IN * len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(18, height), sharey=True, gridspec_kw={"wspace": 0.6})
    panels = (
        (axes[0], [memory_point(r) for r in rows], "peak memory: measured vs expected (%)"),
        (axes[1], [speed_point(r) for r in rows], "speed: slower than expected (%)"),
    )
    for ax, points, title in panels:
        _panel(ax, points, title)
        # A rule between the published tables (one expectations file each).
        for y in range(1, len(rows)):
            if rows[y].get("file") != rows[y - 1].get("file"):
                ax.axhline(y - 0.5, color="#888888", lw=0.6)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)  # first row on top, as in the tables
    fig.suptitle(_title(results), fontsize=10, x=0.01, ha="left")
    fig.subplots_adjust(left=0.17, right=0.87, top=1 - 1.1 / height, bottom=0.6 / height)
    # savefig to a handle needs the format named; long row ids widen the page, never clip.
    with atomic_write(out) as handle:
        fig.savefig(handle, dpi=110, bbox_inches="tight", pad_inches=0.2, format=image_format(out))
    plt.close(fig)
    return len(rows)


def _panel(ax: Any, points: Sequence[Point | None], title: str) -> None:
    tol = max((p.tolerance_pct for p in points if p is not None), default=10.0)
    limit = max(CLIP_PCT, tol * 1.5)
    # A speed dot is never left of -100% (that would be infinitely faster): no room wasted there.
    drawn = [p for p in points if p is not None]
    low = -100.0 if drawn and all(p.factor for p in drawn) else -limit
    ax.set_xlim(low, limit)
    # Per-row bands (tolerances may differ between rows), one shaded rectangle each.
    for y, p in enumerate(points):
        if p is not None:
            left, right = p.band_pct
            ax.fill_betweenx([y - 0.5, y + 0.5], left, right, color="#dff0d8", lw=0)
    ax.axvline(0, color="#444444", lw=0.8)
    for y, p in enumerate(points):
        if p is None:
            continue
        if p.pct is None:
            ax.text(0, y, " " + p.label, va="center", ha="left", fontsize=6.5, color=COLORS[p.status], style="italic")
            continue
        x = max(low * 0.97, min(limit * 0.97, p.pct))
        clipped = x != p.pct
        marker = ">" if clipped and x > 0 else "<" if clipped else "o"
        hollow = {"mfc": "none"} if p.status == "estimate" else {}
        ax.plot(x, y, marker=marker, ms=5, color=COLORS[p.status], **hollow)
        ax.text(limit * 1.02, y, f"{p.pct:+.1f}%  {p.label}", va="center", ha="left", fontsize=6.5, clip_on=False)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", color="#e0e0e0", lw=0.5)
    ax.set_axisbelow(True)
    ax.tick_params(axis="x", labelsize=7)


def _machine(fp: Mapping[str, Any]) -> str:
    gpus = fp.get("gpus") or []
    return (
        ", ".join(sorted({str(g.get("name")) for g in gpus}))
        if gpus
        else f"CPU {((fp.get('cpu') or {}).get('model')) or '?'}"
    )


def _versions(fp: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {fp.get(k)}" for k in ("torch", "cuda", "bitsandbytes", "lightning") if fp.get(k))


def _title(results: Mapping[str, Any]) -> str:
    rows = results.get("rows") or []
    sources = (results.get("options") or {}).get("merged_from")
    # A merge's rows each keep their machine's fingerprint: named only where they agree, as the report does.
    fingerprints = [row_fingerprint(r, results) for r in rows] if sources else []
    fingerprints = fingerprints or [results.get("fingerprint") or {}]
    machines, versions = dict.fromkeys(map(_machine, fingerprints)), dict.fromkeys(map(_versions, fingerprints))
    machine = next(iter(machines)) if len(machines) == 1 else f"{len(machines)} machines"
    stack = next(iter(versions)) if len(versions) == 1 else "libraries differ by file"
    merged = f"merged from {rows_text(len(sources), 'results file')}, " if sources else ""
    summary = ", ".join(f"{n} {v}" for v, n in verdict_counts(rows).items())
    created = results.get("created") or ""
    # As the report's header says it: the file of a killed or stopped session holds rows not run.
    unfinished = "  The session did not finish." if results.get("finished") is False else ""
    return (
        f"Conformance: {machine}; {stack}\n{merged}{created}  verdicts: {summary}.{unfinished}"
        "  Green band: tolerance; red: regression; blue: improvement; grey: not run or not judged;"
        " hollow purple: not run, GPU-free estimate"
    )


def _outcome(outcome: Any) -> str:
    return {"oom": "OOM", "unsupported": "N/A", "error": "error"}.get(str(outcome), str(outcome))


def _num(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


# How each image format matplotlib writes begins, so that --plot replaces only an image of its own
# format (an earlier plot), never a results file or a text that happens to sit at the name.
_IMAGE_HEADS: Mapping[str, tuple[bytes, ...]] = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "pdf": (b"%PDF-",),
    "eps": (b"%!PS",),
    "ps": (b"%!PS",),
    "jpg": (b"\xff\xd8\xff",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
    "svgz": (b"\x1f\x8b",),
    "tif": (b"II*\x00", b"MM\x00*"),
    "tiff": (b"II*\x00", b"MM\x00*"),
}


def _is_image(head: bytes, suffix: str) -> bool:
    """Whether ``head`` (a file's first bytes) begins an image of format ``suffix``; False for a
    format with no signature (raw, rgba, pgf)."""
    if suffix == "svg":
        return b"<svg" in head
    if suffix == "webp":
        return head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if suffix == "avif":
        return head[4:12] == b"ftypavif"
    return suffix in _IMAGE_HEADS and head.startswith(_IMAGE_HEADS[suffix])


def _replaces_other_than_an_image(out: Path, suffix: str) -> str | None:
    """Why writing ``out`` would lose a file that is no image of format ``suffix`` (None: it would
    not: nothing there to keep, an empty file, or an earlier image)."""
    head = existing_head(out)
    if not head or _is_image(head, suffix):
        return None
    return (
        f"conformance report: --plot {out}: exists and is not a {suffix.upper()} image; refusing to replace it"
        " (pick another name, or remove it first)"
    )


def image_format(out: Path) -> str:
    """The image format a plot's file name asks for: its suffix ("" for none)."""
    return Path(out).suffix.lstrip(".").lower()


def plot_target_problem(out: Path) -> str | None:
    """Why ``out`` cannot take the plot (None: it can): matplotlib missing, a place no file can be
    written, no suffix or one matplotlib has no format for, or a file there that is no image of that
    format (an earlier plot is replaced). Checked before anything is drawn or printed. A name with
    no suffix was drawn as a PNG under that name (``--plot nan``: a PNG called ``nan``); like one
    whose suffix names no format (``x.pdf.txt``), it is refused now: the name says the format."""
    try:
        import matplotlib  # noqa: F401  (the extra itself, before any of its submodules)
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "matplotlib":
            return PLOT_EXTRA_MISSING
        # Installed but broken: matplotlib 3.7.0-3.7.2 under NumPy 2, say.
        return f"conformance report: --plot: matplotlib is installed but cannot be imported: {exc}"
    try:
        check_output_file(out, "--plot")
    except ValueError as exc:
        return f"conformance report: {exc}"
    suffix = image_format(out)
    formats = FigureCanvasBase.get_supported_filetypes()
    choices = ", ".join(sorted(formats))
    if not suffix:
        return f"conformance report: --plot {out}: no image format: the name has no suffix (choose one of {choices})"
    if suffix not in formats:
        return f"conformance report: --plot {out}: no image format {suffix!r} (choose one of {choices})"
    return _replaces_other_than_an_image(Path(out), suffix)


def cmd_plot(file: Path, out: Path) -> int:
    """Draw a results file; exit status 2 with one line for a bad file, a bad target or a missing matplotlib."""
    problem = plot_target_problem(out)
    if problem is not None:
        print(one_line(problem), file=sys.stderr)
        return 2
    try:
        results = load_results(file)  # its messages name the file
    except ValueError as exc:
        print(one_line(f"conformance report: {exc}"), file=sys.stderr)
        return 2
    return draw(results, out, str(file))


def draw(results: Mapping[str, Any], out: Path, source: str) -> int:
    """Draw loaded results (``source`` names them in a message); exit status as :func:`cmd_plot`."""
    try:
        n = plot_results(results, out)
    except ValueError as exc:  # nothing to plot in it
        print(one_line(f"conformance report: {source}: {exc}"), file=sys.stderr)
        return 2
    except OSError as exc:
        print(one_line(f"conformance report: --plot {out}: cannot write: {exc.strerror or exc}"), file=sys.stderr)
        return 2
    # stderr: stdout carries the Markdown report when both are asked for.
    print(f"conformance: plotted {rows_text(n)} into {out}", file=sys.stderr)
    return 0
