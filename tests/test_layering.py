"""The package's import layers (DESIGN.md): faces -> stages -> libraries -> foundation; no cycles.

Every ``import`` and ``from ... import`` in ``src/gags`` counts, at module level or inside a
function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gags"

FOUNDATION = {"errors", "io", "devices", "distributed", "runfolder", "models"}
LIBRARIES = {
    "scene",
    "splats",
    "segment",
    "features",
    "distill",
    "query",
    "evaluate",
    "baselines",
    "synthetic",
}
FACES = {"cli", "viewer", "__main__"}


def _unit(module: str) -> str:
    """``gags.distill.train`` -> ``distill``; ``gags.cli`` -> ``cli``; ``gags`` -> ``gags``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    """Names of the ``gags`` modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(("gags", *path.relative_to(SRC).with_suffix("").parts[:-1]))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gags"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "gags":
                found.add(module)
                found |= {
                    f"{module}.{a.name}"
                    for a in node.names
                    if (SRC / module[5:].replace(".", "/") / a.name).with_suffix(".py").exists()
                }
    return found


def _graph() -> dict[str, set[str]]:
    """unit -> the units it imports (self-imports dropped)."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        deps = {_unit(m) for m in _imports(path)} - {unit, "gags"}
        graph.setdefault(unit, set()).update(deps)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_unit_is_in_a_layer():
    known = FOUNDATION | LIBRARIES | FACES | {"stages", "__init__"}
    assert set(_graph()) <= known, set(_graph()) - known


def test_no_import_cycles_between_packages():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


@pytest.mark.parametrize("unit", sorted(FOUNDATION | LIBRARIES))
def test_libraries_never_import_stages_or_faces(unit):
    assert not (_graph().get(unit, set()) & ({"stages"} | FACES))


@pytest.mark.parametrize("unit", sorted(FOUNDATION))
def test_foundation_imports_only_foundation(unit):
    assert _graph().get(unit, set()) <= FOUNDATION, _graph()[unit] - FOUNDATION


def test_stages_never_import_faces():
    assert not (_graph().get("stages", set()) & FACES)


def test_cli_imports_no_stage_at_import_time():
    """``gags --help`` must not import torch: cli.py names its stages as strings only."""
    tree = ast.parse((SRC / "cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.startswith("gags")}, names


def test_module_level_cycle_detector_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_walker_sees_lazy_and_relative_imports():
    graph = _graph()
    assert "distill" in graph["stages"]  # module-level imports
    assert "distill" in graph["query"]  # function-level (lazy) import in query/maps.py
    assert "models" in graph["synthetic"]
