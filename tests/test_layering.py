"""The package's import graph: no cycle, and every module imports only modules declared below it.

An AST walk of ``gv3lite/*.py`` and of its sub-packages (``gv3lite/data/``: one node for all its files) collects every import of a ``gv3lite`` module, at module level and inside
functions (an import hidden in a function still makes the module depend on the other). ``LAYERS`` is the declared
order, lowest first: a module may import only modules that come earlier in it.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gv3lite"

LAYERS = [
    "utils", "fingerprint", "checkpoint", "paper", "stats", "schemas",   # no gv3lite imports
    "layers", "reparam", "ghost", "ghostnetv3",           # the paper's network
    "add_branches", "models", "counting",                 # branches for other models, the registry, counting
    "data", "distributed",                                # data, DDP helpers
    "teacher", "teacher_outputs", "distill",              # teachers, their outputs for crops, the objective
    "recipe", "train", "callbacks",                       # recipe, the loop, what happens around it
    "figures", "show",                                    # figures and notebook display helpers
    "launch",                                             # scale-out: run locks, GPUs per worker, submitit
    "experiment", "export", "ablation", "cli",            # composition root, deployment, ablation engine, CLI
]
TOP = "__init__"  # the package's public API re-exports from any module; nothing imports it


def modules_and_files() -> dict[str, list[Path]]:
    """Every module of the package and its files: ``x.py`` is ``x``; a sub-package ``x/`` is one node ``x``."""
    found = {p.stem: [p] for p in PACKAGE.glob("*.py")}
    found.update({d.name: sorted(d.rglob("*.py")) for d in PACKAGE.iterdir() if (d / "__init__.py").is_file()})
    return found


def gv3lite_imports(path: Path) -> set[str]:
    """Names of the ``gv3lite`` modules ``path`` imports anywhere in it (``import gv3lite.x``, ``from gv3lite
    import x``, ``from gv3lite.x import y``; ``import gv3lite`` / ``from gv3lite import name`` count as ``__init__``)."""
    modules = set(modules_and_files())
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "gv3lite":
                    found.add(parts[1] if len(parts) > 1 else TOP)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "gv3lite":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(a.name if a.name in modules else TOP for a in node.names)
    found.discard(path.parent.name if path.parent != PACKAGE else path.stem)
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: set().union(*(gv3lite_imports(p) for p in files))
            for name, files in sorted(modules_and_files().items())}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list ``[a, b, ..., a]``, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_violations(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Every import of a module that is not declared below the importer (or a module missing from ``layers``)."""
    rank = {name: i for i, name in enumerate(layers)}
    problems = [f"gv3lite/{m}.py is not in LAYERS; add it where it belongs" for m in graph
                if m not in rank and m != TOP]
    for module, imports in graph.items():
        for imported in sorted(imports):
            if imported == TOP or (module != TOP and rank.get(imported, len(layers)) >= rank.get(module, -1)):
                problems.append(f"gv3lite.{module} imports gv3lite.{imported}, which is not below it")
    return problems


def function_level_imports(path: Path) -> list[str]:
    """``gv3lite`` imports inside functions of ``path`` (as ``"function: module"``): none are allowed, so that the
    module-level imports alone show what a module depends on."""
    found = []
    for func in ast.walk(ast.parse(path.read_text())):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    found += [f"{func.name}: {a.name}" for a in node.names if a.name.split(".")[0] == "gv3lite"]
                elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gv3lite":
                    found.append(f"{func.name}: {node.module}")
    return found


def test_package_has_no_import_cycle_and_respects_the_layers():
    graph = import_graph()
    assert set(graph) == set(LAYERS) | {TOP}, "LAYERS must list every module of gv3lite/"
    assert find_cycle(graph) is None, find_cycle(graph)
    assert layer_violations(graph, LAYERS) == []
    hidden = {p.name: function_level_imports(p) for p in PACKAGE.rglob("*.py") if function_level_imports(p)}
    assert hidden == {}, "import gv3lite modules at module level, not inside functions"


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"a"}, "c": set()}, ["a", "b", "a"]),
    ({"a": {"a"}}, ["a", "a"]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),
])
def test_cycle_finder_on_synthetic_graphs(graph, cycle):
    assert find_cycle(graph) == cycle


def test_layer_check_fails_on_an_upward_import_or_a_cycle():
    layers = ["low", "mid", "high"]
    assert layer_violations({"low": set(), "mid": {"low"}, "high": {"mid", "low"}}, layers) == []
    assert layer_violations({"low": {"high"}, "mid": set(), "high": set()}, layers) == \
        ["gv3lite.low imports gv3lite.high, which is not below it"]
    cyclic = {"low": {"mid"}, "mid": {"low"}, "high": set()}  # any cycle has at least one upward edge
    assert layer_violations(cyclic, layers) and find_cycle(cyclic) == ["low", "mid", "low"]
    assert layer_violations({"new": set(), "low": set()}, ["low"]) == \
        ["gv3lite/new.py is not in LAYERS; add it where it belongs"]


def test_import_walk_sees_function_level_imports(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_text("import os\n\ndef f():\n    from gv3lite.b import x\n    import gv3lite.c\n"
                                   "    from gv3lite import d, name\n")
    for name in "bcd":
        (tmp_path / f"{name}.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert gv3lite_imports(tmp_path / "a.py") == {"b", "c", "d", TOP}
    assert function_level_imports(tmp_path / "a.py") == ["f: gv3lite.b", "f: gv3lite.c", "f: gv3lite"]
