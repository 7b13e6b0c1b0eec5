"""How the conformance suite prints paths and numbers: one rule each, used by the failure
messages (``compare``, ``checks``), the results file, the report, the record diff and
``conformance diff``'s table cells."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from litgpt_min.files import real_path
from litgpt_min.quoting import as_given

# The suite's folder, which a printed command gives pytest: "conformance" from the checkout's root.
SUITE = Path(__file__).resolve().parent


def suite_command() -> str:
    """``pytest conformance`` as the working directory needs it (``pytest walkM/conformance``, say):
    a command printed for a session started elsewhere runs from where it was started."""
    return f"pytest {shlex.quote(display(SUITE))}"


def display(path: Path | str) -> str:
    """``path`` relative to the working directory when below it (as pytest prints paths)."""
    try:
        return str(real_path(path).relative_to(real_path(Path.cwd())))
    except (ValueError, OSError):
        return str(path)


def number_text(value: float) -> str:
    """Two decimals, as the published tables print them; three significant digits below 0.1 (the
    CPU profile's peaks are a few MB)."""
    return f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"


def count_text(value: int) -> str:
    """A parameter count with thousands separators, as the tables print them."""
    return f"{value:,}"


def rows_text(n: int, noun: str = "row") -> str:
    """``1 row``, ``2 rows`` (``noun``: ``1 file``, ``2 files``)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def pct_text(rel: float) -> str:
    """0.1 -> "10", 0.125 -> "12.5": a relative figure as a percentage without trailing zeros (a
    million percent or more in three significant digits)."""
    if abs(rel) >= 1e4:
        return f"{rel * 100:.3g}"
    return f"{rel * 100:.6f}".rstrip("0").rstrip(".")


def significant(value: float | None, digits: int = 4) -> float | None:
    """``value`` rounded to ``digits`` significant digits (how recorded figures are written)."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def cap_text(cap_gb: float | None) -> str:
    """A memory cap a row ran under (``--emulate-memory-gb``), in words."""
    return "no memory cap" if cap_gb is None else f"a {cap_figure(cap_gb)} GB memory cap"


def cap_figure(cap_gb: float) -> str:
    """A memory cap in GB as it was given: ``40``, not ``40.0``; ``0.1448849``, not ``:g``'s
    ``0.144885`` (another cap, in a command to rerun); ``0.00000001``, not ``1e-08``."""
    return as_given(cap_gb, lambda value: f"{value:g}")


def cell_text(text: str, limit: int) -> str:
    """The first line of ``text`` in at most ``limit`` characters, cut at a word's end when it has
    to be cut (a word cut in two reads as another word), with a table's ``|`` escaped."""
    line = text.splitlines()[0] if text else ""
    if len(line) > limit:
        cut = line[: limit - 3]
        words = cut.rsplit(" ", 1)[0] if line[limit - 3] != " " else cut
        line = (words if len(words) >= limit // 2 else cut).rstrip(" ,;:(|-") + "..."
    return line.replace("|", "\\|")
