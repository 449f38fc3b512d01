"""The arrows between avstm's modules (docs/ARCHITECTURE.md): read from the source with ``ast``,
every import counted, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "avstm"

# importer prefix -> prefixes it must never import (docs/ARCHITECTURE.md, "arrows that must never exist")
FORBIDDEN = {
    "avstm.memnet": ("avstm.extract", "avstm.localize", "avstm.evaluate", "avstm.cli", "avstm.demo"),
    "avstm.cache": ("avstm.memnet", "avstm.extract", "avstm.localize", "avstm.evaluate", "avstm.cli"),
    "avstm.media": ("avstm.memnet", "avstm.cache", "avstm.extract", "avstm.localize", "avstm.evaluate"),
    "avstm.extract": ("avstm.memnet", "avstm.localize", "avstm.evaluate", "avstm.cli"),
    # localize runs the backbones (extract.features), not the batch pipeline of datasets
    "avstm.localize": ("avstm.evaluate", "avstm.cli", "avstm.extract.pipeline"),
    "avstm.extract.features": ("avstm.extract.pipeline",),
    "avstm.evaluate": ("avstm.cli",),
    # map geometry and the maps file, shared by localize and evaluate, know neither
    "avstm.maps": ("avstm.memnet", "avstm.cache", "avstm.extract", "avstm.localize", "avstm.evaluate",
                   "avstm.cli"),
    # the dataset listings are below evaluate (whose annotation readers read AVE files with them)
    "avstm.datasets": ("avstm.evaluate", "avstm.extract", "avstm.memnet", "avstm.localize", "avstm.cli"),
    "avstm.io": ("avstm.",), "avstm.errors": ("avstm.",), "avstm.config": ("avstm.",),
    "avstm._version": ("avstm",),
}
ALLOWED = {"avstm.io": ("avstm.errors",)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported avstm module, at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found += [(n, id(node) in top) for n in names if n == "avstm" or n.startswith("avstm.")]
    return found


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_graph_is_read():
    assert len(GRAPH) > 40 and ("avstm.memnet.config", True) in GRAPH["avstm.memnet.checkpoint"]


def test_no_forbidden_arrow():
    bad = [f"{m} -> {i}" for m, found in GRAPH.items() for i, _ in found
           for src, targets in FORBIDDEN.items()
           if (m == src or m.startswith(src + ".")) and i.startswith(targets)
           and not i.startswith(ALLOWED.get(src, ())) and not i.startswith(src)]
    assert not bad


def test_no_import_cycle_even_through_imports_inside_functions():
    edges = {m: {i for i, _ in found if i in GRAPH and i != m} for m, found in GRAPH.items()}
    # a package's own __init__ is lazy (avstm/_lazy.py) and names its modules only as strings
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles


def test_no_test_skips_when_one_of_our_modules_fails_to_import():
    # pytest.importorskip("avstm...") turns an import bug into a skip
    tests = Path(__file__).resolve().parent
    calls = [(p.name, node.lineno) for p in tests.glob("*.py")
             for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip"
             and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("avstm")]
    assert not calls
