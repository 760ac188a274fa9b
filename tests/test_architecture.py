"""The package's shape: no import cycle anywhere, counting function-level and type-checking
imports (the layer contract itself is checked by `lint-imports` in CI)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import chunkstore

PACKAGE = Path(chunkstore.__file__).parent


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module import graph: components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle_in_the_package():
    graph = grimp.build_graph("chunkstore", include_external_packages=False)
    assert len(graph.modules) > 40  # the whole package was read
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.b", imported="p.c")
    assert strongly_connected(graph) == [{"p.a", "p.b"}]


MAX_MODULE_LINES = 420  # "no module over ~400 lines"
MAX_FUNCTION_LINES = 60  # code lines of one function, its docstring not counted


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = fn.body[0]
    doc = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
           and isinstance(first.value.value, str))
    start = fn.body[1].lineno if doc and len(fn.body) > 1 else fn.lineno
    return (fn.end_lineno or fn.lineno) - start + 1


def test_modules_and_functions_stay_small():
    too_big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _code_lines(node)
                if n > MAX_FUNCTION_LINES:
                    too_big.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}() "
                                   f"{n} lines")
    assert too_big == [], "\n".join(too_big)
