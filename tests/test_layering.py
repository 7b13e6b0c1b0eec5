"""The import graph of the house: imports flow one way (tests -> conformance -> litgpt_min) and no
module of ``conformance/`` imports, directly or through others, a module that imports it back.

Read from the source with ``ast`` (every import statement, at the top or inside a function or a
``TYPE_CHECKING`` block), so a cycle hidden in a lazy import counts as one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that the file at ``path`` imports (``a.b`` for ``from a import b``
    when ``a.b`` is a module of the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == package and _is_module(name))
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph(package: str) -> dict[str, set[str]]:
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in sorted((ROOT / package).glob("*.py"))}
    return {name: imports_of(path, package) - {name, package} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target] if target in path else [node, target]
            if target not in state:
                cycle = visit(target, [*path, target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


@pytest.mark.parametrize("package", ["conformance", "litgpt_min"])
def test_no_import_cycle(package: str) -> None:
    cycle = find_cycle(graph(package))
    assert cycle is None, " -> ".join(cycle or [])


def test_litgpt_min_imports_nothing_from_conformance() -> None:
    offenders = {p.name for p in (ROOT / "litgpt_min").glob("*.py") if imports_of(p, "conformance")}
    assert not offenders


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
