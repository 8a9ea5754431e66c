"""The layout shows the architecture: who may import whom, no cycles, and the README's table.

``mouse/`` is the core library and never imports ``actors/`` or ``learner/`` (the
command and the local launcher, the one composition root, excepted); the two
sides never import each other. Every import counts, function-level ones too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mouse", "actors", "learner")
COMPOSITION_ROOT = {"mouse.cli", "mouse.launch", "mouse.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (absolute and relative, at any depth of the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:  # `from x import y` names a module or something in x
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def side(module: str) -> str:
    return module.split(".")[0]


def test_core_imports_neither_side_except_the_composition_root():
    bad = {m: sorted(d for d in deps if side(d) in ("actors", "learner"))
           for m, deps in graph().items() if side(m) == "mouse" and m not in COMPOSITION_ROOT}
    assert not {m: d for m, d in bad.items() if d}, bad


def test_actors_and_learner_never_import_each_other_or_the_command():
    g = graph()
    for m, deps in g.items():
        if side(m) in ("actors", "learner"):
            other = "learner" if side(m) == "actors" else "actors"
            assert not [d for d in deps if side(d) == other], (m, deps)
            assert not deps & COMPOSITION_ROOT, (m, deps & COMPOSITION_ROOT)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            # a package's __init__ re-exporting its own submodules is not a cycle
            if d.startswith(m + ".") or m.startswith(d + "."):
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


def test_the_graph_sees_real_imports():
    """Guards the checks above: the walker finds known edges, relative and function-level ones too."""
    g = graph()
    assert "learner.ingest" in g["learner.learner"]  # from .ingest import IngestServer
    assert "learner.main" in g["mouse.launch"]  # imported inside a function
    assert "mouse.wire" in g["actors.actor"]  # from mouse import wire


def readme_layout_paths() -> list[str]:
    text = (REPO / "README.md").read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [p for row in re.findall(r"^\| (.+?) \|", table, re.M) for p in re.findall(r"`([^`]+)`", row)]


def test_readme_layout_table_matches_the_tree():
    paths = readme_layout_paths()
    assert paths, "README.md has no ## Layout table"
    missing = [p for p in paths if not (REPO / p).exists()]
    assert not missing, f"README's layout names paths that do not exist: {missing}"
    listed = {p.rstrip("/") for p in paths}
    for pkg in PACKAGES:  # every module and subpackage of the three packages has a row
        for p in sorted((REPO / pkg).iterdir()):
            rel = str(p.relative_to(REPO))
            if p.name.startswith("__") or p.suffix not in (".py", "") or p.name == "__pycache__":
                continue
            assert rel in listed or rel.rstrip("/") in listed, f"README's layout table lacks {rel}"
