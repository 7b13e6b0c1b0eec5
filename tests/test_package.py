"""Tests for the package's face: what ``import litgpt_min`` exports and costs, and the README's example."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import litgpt_min

REPO = Path(__file__).resolve().parents[1]


def test_import_costs_no_torch_bitsandbytes_or_lightning() -> None:
    # A fresh interpreter: this one has imported everything already.
    code = (
        "import sys, litgpt_min\n"
        "heavy = [m for m in ('torch', 'bitsandbytes', 'lightning', 'lightning_fabric') if m in sys.modules]\n"
        "from litgpt_min import GPT, Config, Result, build_model, quantize_model, apply_method\n"
        "heavy += [m for m in ('bitsandbytes', 'lightning', 'lightning_fabric') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_export_resolves_to_its_home() -> None:
    from litgpt_min.config import Config
    from litgpt_min.model import GPT
    from litgpt_min.result import Result

    assert (litgpt_min.GPT, litgpt_min.Config, litgpt_min.Result) == (GPT, Config, Result)
    for name in litgpt_min.__all__:
        assert getattr(litgpt_min, name) is not None
    assert set(litgpt_min.__all__) <= set(dir(litgpt_min))
    with pytest.raises(AttributeError, match="has no attribute 'Trainer'"):
        _ = litgpt_min.Trainer  # type: ignore[attr-defined]


def test_the_readme_example_runs_and_prints_what_it_says() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "from litgpt_min import GPT" in b)
    lines = [line for line in example.splitlines() if line.strip()]
    assert len(lines) == 5
    promised = lines[-1].split("#", 1)[1].strip()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {})
    assert out.getvalue().strip() == promised
