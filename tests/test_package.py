"""Tests for the package's face: what ``import litgpt_min`` exports and costs, and the README's example."""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
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


def _unguarded_imports(path: Path) -> set[str]:
    """The top-level modules a file imports, but those imported inside a ``try`` whose handler
    catches ``ImportError`` (an optional module, with a fallback or a named refusal)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(name, ast.Name) and name.id in ("ImportError", "ModuleNotFoundError")
            for handler in node.handlers
            if handler.type is not None
            for name in ast.walk(handler.type)
        ):
            guarded.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    modules = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"__future__", "litgpt_min", "conformance"}


def test_every_module_the_packages_import_is_a_declared_dependency() -> None:
    """`pip install -e .` (the quick start) must bring what the commands import: a module imported
    without a fallback comes from a distribution pyproject.toml names, as a dependency or in an
    extra (the extras' modules are imported where their feature is asked for)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    declared = {normal(Requirement(r).name) for r in requirements}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for package in ("litgpt_min", "conformance"):
        for path in sorted((REPO / package).rglob("*.py")):
            for module in _unguarded_imports(path):
                if not {normal(d) for d in distributions.get(module, [])} & declared:
                    undeclared.setdefault(module, []).append(str(path.relative_to(REPO)))
    assert not undeclared, f"imported, but no distribution that pyproject.toml declares provides them: {undeclared}"


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


def _readme_section(readme: str, heading: str) -> str:
    start = readme.index(f"\n{heading}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end >= 0 else None]


def test_the_readme_layout_names_every_file_and_only_files_that_exist() -> None:
    """README's Layout (and, for the package's model, methods and runs, "The implementation under
    test") names every module, test helper, benchmark script and document of the checkout, and every
    file it names is there. Before, tests/huge_values.py and tests/side_by_side.py were missing."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = _readme_section(readme, "## Layout")
    text = layout + _readme_section(readme, "## The implementation under test: `litgpt_min`")
    words = set(re.findall(r"[\w./-]+", text)) | set(re.findall(r"\w+", text))
    files = [
        *(REPO / "litgpt_min").glob("*.py"),
        *(REPO / "conformance").glob("*.py"),
        *(REPO / "conformance").glob("*.json"),
        *(p for p in (REPO / "tests").glob("*.py") if not p.name.startswith("test_")),
        *(REPO / "tests" / "data").iterdir(),
        *(p for p in (REPO / "benchmarks").iterdir() if p.is_file()),
        *(REPO / "docs").iterdir(),
    ]
    unnamed = sorted(
        str(p.relative_to(REPO))
        for p in files
        if p.name != "__init__.py"
        and not {p.name, p.stem, f"{p.parent.name}/{p.name}", f"{p.parent.name}/{p.stem}"} & words
    )
    assert not unnamed, f"not in README's Layout: {unnamed}"
    folders = ("litgpt_min", "conformance", "tests", "benchmarks", "docs", "expectations", ".ci")
    here = {p.name for p in REPO.iterdir()} | {p.name for f in folders for p in (REPO / f).rglob("*")}
    # (The .json names it gives are formats too: lit_config.json, tokenizer.json.)
    named = {Path(w).name for w in re.findall(r"[\w./-]+\.(?:py|md|sh)\b", layout)}
    assert not named - here, f"named in README's Layout, but not in the checkout: {sorted(named - here)}"
