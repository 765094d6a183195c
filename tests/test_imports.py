"""fusex's import graph: no cycles, and no fusex module imported from inside a function.

A function-level import of a fusex module is how a cycle is hidden: the
module graph looks acyclic while the package still cannot be imported in
every order.  The only function-level imports of fusex modules allowed are of
modules that import an optional third-party package at their top (numba,
cupy, ...), so that fusex imports without it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fusex

PACKAGE = Path(fusex.__file__).resolve().parent
OPTIONAL = frozenset(
    """cupy torch numba matplotlib mpl_toolkits dask distributed hyperspy exspy rsciio
    sparse skimage h5netcdf h5py zarr psutil multimodal_fusion""".split()
)
"""Optional third-party packages (extras in pyproject.toml): imported inside functions where used."""


@dataclass(frozen=True)
class Import:
    """One import statement's target: a fusex module, or a third-party top-level package."""

    source: str
    target: str
    line: int
    in_function: bool
    internal: bool


def module_name(path: Path) -> str:
    """Return the dotted name of a file under the package (``fusex.io.files``; ``fusex.io`` for its ``__init__``)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    """Return every module of fusex by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], in_function: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Yield the import statements that run, with whether they run inside a function (not under TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _statements(node.orelse, in_function)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _statements(node.body, True)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, []):
                    if isinstance(child, ast.stmt):
                        yield from _statements([child], in_function)
                    elif hasattr(child, "body"):  # except handlers, match cases
                        yield from _statements(child.body, in_function)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Return the imports of module ``name``: ``from a import b`` targets ``a.b`` when that is a module, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, in_function in _statements(ast.parse(path.read_text(encoding="utf-8")).body, False):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in dict.fromkeys(targets):
            internal = target == PACKAGE.name or target.startswith(PACKAGE.name + ".")
            if internal:
                while target not in modules:  # `import fusex.io.files` names the module; attributes go
                    target = target.rpartition(".")[0]
            target = target if internal else target.partition(".")[0]
            found.append(Import(name, target, node.lineno, in_function, internal))
    return found


def import_graph(*, function_level: bool = False) -> dict[str, set[str]]:
    """Return fusex's module graph: module -> the fusex modules it imports at its top (anywhere: ``function_level``)."""
    modules = all_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imp in imports_of(name, path, modules):
            if imp.internal and (function_level or not imp.in_function):
                graph[name].add(imp.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of ``graph`` that hold a cycle (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _heavy(name: str, modules: dict[str, Path]) -> bool:
    """True if fusex module ``name`` imports an optional third-party package at its top."""
    top = [i for i in imports_of(name, modules[name], modules) if not i.in_function]
    return any(not i.internal and i.target in OPTIONAL for i in top)


def test_graph_sees_relative_and_absolute_imports():
    graph = import_graph(function_level=True)
    assert "fusex.api" in graph["fusex"]
    assert "fusex.params" in graph["fusex.api"]
    assert "fusex.errors" in graph["fusex.io.files"]  # `from ..errors import ...`


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_function_level_imports_of_fusex_modules():
    modules = all_modules()
    hidden = [
        f"{i.source} line {i.line} imports {i.target}"
        for name, path in modules.items()
        for i in imports_of(name, path, modules)
        if i.internal and i.in_function and not _heavy(i.target, modules)
    ]
    assert hidden == [], "import these at the module's top (a cycle they hide must be broken, not hidden)"


def test_no_cycles_even_counting_function_level_imports():
    assert cycles(import_graph(function_level=True)) == []


def test_fusex_never_imports_its_deprecated_xarray_alias():
    importers = [name for name, targets in import_graph(function_level=True).items() if "fusex.xarray" in targets]
    assert importers == []
