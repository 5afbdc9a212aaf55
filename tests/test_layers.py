"""The package's import graph: no cycles, and the library never imports the command-line tools.

Every import counts, those inside functions too (a function-level import hides a cycle from
Python, not from a reader), except those under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sapt_lightning"
#: The command-line tools: they may import the library, never the other way round.
TOOLS = (
    "sapt_lightning.__main__",
    "sapt_lightning.cli",
    "sapt_lightning.plan",
    "sapt_lightning.evaluate",
    "sapt_lightning.bench",
    "sapt_lightning.bench_stream",
    "sapt_lightning.padding",
    "sapt_lightning.build_backbone",
    "sapt_lightning.import_release",
    "sapt_lightning.tables",
    "sapt_lightning.report",
    "sapt_lightning.reporting.tables",
    "sapt_lightning.reporting.compare",
    "sapt_lightning.reporting.sweep",  # the sweep summary: a Hydra callback of the `sapt` command
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from . import generator` names a module
    # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are imports too.
    found |= {".".join(m.split(".")[:i]) for m in set(found) for i in range(2, m.count(".") + 1)}
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_only_the_tools_import_the_tools():
    """The library (and run, settings, reporting) never reaches for a command-line tool."""
    wrong = [(m, t) for m, deps in import_graph().items() if m not in TOOLS for t in deps if t in TOOLS]
    assert wrong == []
