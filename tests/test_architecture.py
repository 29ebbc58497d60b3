"""The shape of the code base (issue 16): small modules, short functions, no import cycles.

Scans ``src/healforge`` with :mod:`ast`; an import inside a function counts like one at the top,
since it ties the two modules together all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "healforge"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 150


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """healforge modules imported anywhere in a module (``from pkg import mod`` resolves to mod)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("healforge"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("healforge"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != name}


def test_no_module_over_the_line_limit():
    long = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > MAX_MODULE_LINES} == {}


def test_no_function_over_the_line_limit():
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = lines
    assert long == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    # A package's __init__ that re-exports its modules is not a cycle with them.
    graph = {
        n: {m for m in _imports(n, p) if not (p.name == "__init__.py" and m.startswith(n + "."))}
        for n, p in MODULES.items()
    }
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    assert _cycles(graph) == []


@pytest.mark.parametrize(
    "graph, expected", [({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]), ({"a": {"b"}, "b": set()}, [])]
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _cycles(graph) == expected


def test_only_the_pixel_package_does_healpix_arithmetic():
    """cdshealpix and healpix-geo are imported by healforge.pixel alone, and no other module shifts an order-29
    index by hand (``>> 2 * (29 - k)``): they call pixel's index_to_order / index29_range."""
    import re

    shift = re.compile(r"2 \* \((29|SPATIAL_INDEX_ORDER|MAX_ORDER) - ")
    outside = [n for n in MODULES if not n.startswith("healforge.pixel")]
    importers = [
        n
        for n in outside
        if re.search(r"^\s*(import|from) (cdshealpix|healpix_geo)", MODULES[n].read_text(), re.M)
    ]
    assert importers == []
    assert [n for n in outside if shift.search(MODULES[n].read_text())] == []
