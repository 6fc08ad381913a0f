"""The layering, checked on the source: adapters never import the domain or the console; the domain's
services never import the worker (the worker depends on services, not the reverse); and no module
imports, however indirectly, a module that imports it back."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("adapters", "writeback", "console")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every project module `path` imports, at any depth of the file (local imports count too), except
    under `if TYPE_CHECKING:`, which never runs."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import submodule` imports the submodule (the package is only its parent).
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            found.update(submodules or {base})
            if len(submodules) < len(node.names):
                found.add(base)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {
        _module_name(p): p
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if "migrations" not in p.parts
    }
    names = set(files)
    return {
        module: {m for m in _imports(path, module, names) if m != module} & names
        for module, path in files.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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


def _importers(graph: dict[str, set[str]], of: str, into: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module.startswith(of)
        for target in targets
        if target.startswith(into)
    )


def test_adapters_never_import_the_domain_or_the_console():
    assert _importers(_graph(), "adapters", ("writeback", "console")) == []


def test_services_never_import_the_worker_the_api_or_the_console():
    graph = _graph()
    assert _importers(graph, "writeback.services", ("writeback.sync", "writeback.api", "console")) == []


def test_the_domain_never_imports_the_console():
    assert _importers(_graph(), "writeback", ("console",)) == []


def test_no_module_imports_a_module_that_imports_it_back():
    assert _cycles(_graph()) == []
