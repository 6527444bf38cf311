"""The import contract: a DAG of layers, read from the source (function-level imports included).

core (``stacker``, less ``stacker.apps``)  <-  satellites (``level1``, ``holdout``)  <-  applications
(``stacker.apps``, and the satellites' own ``cli`` modules).  No module imports one above its layer,
a satellite uses only public ``stacker`` modules (no ``_private`` path), and no import circle exists
anywhere.  A new edge that breaks it fails here with the offending import and its line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stacker", "level1", "holdout")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of a project module in ``path``, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            # "from a import b" imports the module a.b when there is one, else the name b of a.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out += [(t, node.lineno) for t in targets if t.split(".")[0] in PACKAGES]
    return out


def _layer(module: str) -> int:
    if (
        module in ("stacker.apps", "stacker.__main__")
        or module.startswith("stacker.apps.")
        or (module in ("level1.cli", "holdout.cli"))
    ):
        return 2
    return 1 if module.startswith(("level1", "holdout")) else 0


MODULES = _modules()
EDGES = {name: _imports(name, path, set(MODULES)) for name, path in MODULES.items()}


def test_the_source_tree_is_what_the_contract_reads():
    assert {"stacker.table", "stacker.apps.cli", "level1.run", "level1.oof", "holdout.scan"} <= set(MODULES)
    assert any(t == "stacker.files" for t, _ in EDGES["level1.train"])  # function- and module-level alike


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(name):
    bad = [(t, line) for t, line in EDGES[name] if _layer(t) > _layer(name)]
    assert not bad, f"{MODULES[name].relative_to(ROOT)} imports a higher layer: {bad}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _layer(n) >= 1 and not n.startswith("stacker")))
def test_satellites_use_only_the_public_stacker_api(name):
    private = [
        (t, line)
        for t, line in EDGES[name]
        if t.startswith("stacker") and any(part.startswith("_") for part in t.split("."))
    ]
    assert not private, f"{MODULES[name].relative_to(ROOT)} imports private stacker modules: {private}"


def test_no_import_circle():
    graph = {n: {t for t, _ in EDGES[n] if t in MODULES and t != n} for n in MODULES}
    # A package's __init__ runs before any of its modules: importing a.b imports a too.
    for n in MODULES:
        for t in list(graph[n]):
            parent = t.rpartition(".")[0]
            while parent:
                if parent in MODULES and parent != n and not n.startswith(parent + "."):
                    graph[n].add(parent)
                parent = parent.rpartition(".")[0]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"
