"""The import graph of ``src/dragkit`` (issue 22, item 3): built from the source with :mod:`ast`, every import
listed with where it runs — at module level (when the module is imported) or inside a function (when it is called).
Module-level imports must form no cycle: a circle works only as long as nobody reorders the import lines, and it
hides which module is the lower layer. Function-level imports are listed too (``lazy``) but may close a circle: that
is what they are for (heavy or optional dependencies, and the CLI's start-up time). Imports under
``if __name__ == "__main__":`` (``main``) run only in the program ``python -m`` starts, never in an importer, and
``if TYPE_CHECKING:`` imports never run: both are listed, neither closes a circle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "dragkit").rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _main_block(node: ast.If) -> bool:
    test = node.test
    return isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__" and \
        any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)


def _imports(tree: ast.Module):
    """(node, kind) for every import of a module: "module" (runs on import), "lazy" (inside a function, or under
    ``if TYPE_CHECKING:``, which never runs) or "main" (under ``if __name__ == "__main__":``)."""
    def walk(node, kind):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, "lazy" if kind == "module" else kind)
            elif isinstance(child, ast.If) and _type_checking(child):
                yield from walk(child, "lazy" if kind == "module" else kind)
            elif isinstance(child, ast.If) and _main_block(child):
                yield from walk(child, "main")
            else:
                yield from walk(child, kind)

    yield from walk(tree, "module")


_RANK = {"module": 0, "lazy": 1, "main": 2}


def import_graph() -> dict[str, dict[str, str]]:
    """module → {imported dragkit module: "module" | "lazy" | "main"} (the first of these wins when a module imports
    another in two ways)."""
    modules = _modules()
    graph: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, str] = {}
        for node, kind in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{stem}.{alias.name}"
                    targets.append(sub if sub in modules else stem)
            for target in targets:
                while target and target not in modules:  # `import dragkit.x.y as z` / a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name and _RANK[kind] < _RANK.get(edges.get(target), 3):
                    edges[target] = kind
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, str]], kinds=("module",)) -> list[list[str]]:
    """The strongly connected components (more than one module) of the graph restricted to edges of ``kinds``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, kind in graph.get(v, {}).items():
            if kind not in kinds:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_lists_module_and_function_level_imports():
    graph = import_graph()
    assert len(graph) > 50 and "dragkit.editor" in graph
    assert graph["dragkit.io"]["dragkit.errors"] == "module"
    assert graph["dragkit.io"]["dragkit.config"] == "lazy"  # edit_record imports the config inside the function
    assert any(kind == "lazy" for edges in graph.values() for kind in edges.values())


def test_no_cycle_among_module_level_imports():
    found = cycles(import_graph())
    assert not found, "import cycles among module-level imports in src/dragkit:\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_the_old_circles_stay_open():
    """Issue 22's two circles, by name: types ↔ io (↔ config) and shapes.train ↔ shapes.train_command — not even
    through a function-level import."""
    graph = import_graph()
    assert graph["dragkit.shapes.train"]["dragkit.shapes.train_command"] == "main"  # python -m dragkit.shapes.train
    for a, b in (("dragkit.types", "dragkit.io"), ("dragkit.shapes.train", "dragkit.shapes.train_command")):
        assert graph[a].get(b) in (None, "main") or a not in graph[b], f"{a} and {b} import each other"
    assert "dragkit.types" not in graph["dragkit.errors"]
    assert "dragkit.types" not in graph["dragkit.config"]
