"""The package layout the design card promises: modules small enough to read, no import
cycles (not even through imports inside functions), no backend switching, a README folder
table that matches the tree, and the GAN side free of Pyro."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {
    "ppl_gen": ROOT / "ppl_gen",
    "ppl_gen.models": ROOT / "models",
    "ppl_gen.guides": ROOT / "guides",
}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for prefix, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if prefix == "ppl_gen" and parts and parts[0] in ("models", "guides"):
                continue
            mods[".".join([prefix, *parts])] = path
    return mods


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            # ``from pkg import sub`` depends on the submodule; ``from mod import name`` on mod
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_module_is_too_long() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycles() -> None:
    """Module-level and function-level imports together form no cycle (package
    ``__init__`` re-exports count as edges too, except the lazy top-level API table)."""
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(p, m, known) for m, p in mods.items()}
    # An import of a submodule ``a.b.c`` also runs ``a.b``'s __init__; __init__ files that
    # only document (no imports) add no edges, so parents are not added as edges here.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])


def test_library_never_selects_a_matplotlib_backend() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in _modules().values()
        if re.search(r"matplotlib\.use\(|\bplt\.switch_backend\(", p.read_text(encoding="utf-8"))
    ]
    assert not offenders


def test_readme_folder_table_matches_the_tree() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## What is in the box", 1)[1].split("\n## ", 1)[0]
    folders = sorted(
        p.relative_to(ROOT).as_posix() + "/"
        for p in (ROOT / "ppl_gen").iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    )
    missing = [f for f in folders if f"`{f}" not in table]
    assert not missing, f"README folder table lacks {missing}"
    named = set(re.findall(r"`(ppl_gen/[\w/]+\.py)`", table))
    absent = sorted(n for n in named if not (ROOT / n).exists())
    assert not absent, f"README folder table names files that do not exist: {absent}"


@pytest.mark.parametrize(
    "module",
    ["ppl_gen.gan.trainer", "ppl_gen.gan.cycle_trainer", "ppl_gen.viz.gan", "ppl_gen.engine"],
)
def test_gan_side_does_not_import_pyro(module: str) -> None:
    code = f"import sys, {module}; sys.exit(int('pyro' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
