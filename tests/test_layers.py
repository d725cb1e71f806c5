"""The package's shape: every module imports alone, the import graph has no cycle, and each
layer imports only the layers below it. Pure logic: no cluster needed."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "radosfs"

# Lowest first: a module may import from its own layer and from layers before it.
LAYERS = ["errors", "metrics", "options", "cache", "client", "store", "tree", "operations", "command", "mount",
          "dev", "cli"]
# Node kinds: none imports another (kinds.py builds them all).
KINDS = {"root", "pooldir", "object_file", "image_pool", "image_file", "snapshots", "stats"}


def modules() -> list[str]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def imports_of(module: str) -> set[str]:
    """radosfs modules `module` imports, anywhere in it (TYPE_CHECKING blocks and function
    bodies included: a cycle held together by either is still a cycle)."""
    parts = module.split(".")
    path = PKG.parent.joinpath(*parts)
    is_pkg = path.is_dir()
    src = (path / "__init__.py") if is_pkg else path.with_suffix(".py")
    package = parts if is_pkg else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(src.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n in ALL)
    found.discard(module)
    return found


ALL = set(modules())


def layer(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    return LAYERS.index(first) if first in LAYERS else -1


@pytest.mark.parametrize("module", sorted(ALL))
def test_module_imports_alone(module):
    """In a fresh interpreter: no module needs another to have been imported first."""
    res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                         text=True, cwd=PKG.parent, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (as a path that ends where it started), or None."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return path + [m, n]
            if n not in state and (cycle := visit(n, path + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [])):
            return cycle
    return None


def test_import_graph_has_no_cycle():
    cycle = find_cycle({m: imports_of(m) for m in ALL})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_only_below():
    wrong = []
    for m in sorted(ALL):
        if layer(m) < 0:
            continue
        for n in imports_of(m):
            if 0 <= layer(m) < layer(n):
                wrong.append(f"{m} imports {n}")
    assert not wrong, "\n".join(wrong)


def test_kinds_never_import_kinds():
    wrong = []
    for m in sorted(ALL):
        if m.startswith("radosfs.tree.") and m.rsplit(".", 1)[1] in KINDS:
            for n in imports_of(m):
                if n.startswith("radosfs.tree.") and n.rsplit(".", 1)[1] in KINDS:
                    wrong.append(f"{m} imports {n}")
    assert not wrong, "\n".join(wrong)


def test_cache_knows_nothing_of_rados():
    for m in sorted(ALL):
        if m.startswith("radosfs.cache"):
            src = PKG.parent.joinpath(*m.split(".")).with_suffix(".py")
            if not src.exists():
                src = PKG.parent.joinpath(*m.split("."), "__init__.py")
            tree = ast.parse(src.read_text())
            mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names} | {n.module for n in ast.walk(tree)
                                         if isinstance(n, ast.ImportFrom) and n.module}
            assert not mods & {"rados", "rbd"}, f"{m} imports {mods & {'rados', 'rbd'}}"
