"""CONTRIBUTING's layout section names every module of the tree, and nothing that is not there; the
imports keep the layering (evaluation never imports the train stage, no import circle)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_block() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.split("## How the code is laid out", 1)[1]
    return section.split("```", 2)[1]


def _modules() -> list[Path]:
    found = []
    for top in (ROOT / "qckit", ROOT / "plugins" / "qckit_builtins"):
        for path in sorted(top.rglob("*.py")):
            if path.name != "__init__.py" and "__pycache__" not in path.parts:
                found.append(path.relative_to(ROOT))
    return found


def test_every_module_is_in_the_layout_section():
    block = _layout_block()
    named = set(re.findall(r"[\w]+\.py", block))
    missing = [str(p) for p in _modules() if p.name not in named]
    assert not missing, f"CONTRIBUTING.md's layout does not name: {missing}"
    # every package is named as a folder (qckit/train/, readers/ …)
    packages = {p.parent for p in _modules() if p.parent.name not in ("qckit", "qckit_builtins")}
    assert all(f"{pkg.name}/" in block for pkg in packages), packages


def test_the_layout_section_names_no_module_that_is_gone():
    block = _layout_block()
    present = {p.name for p in _modules()}
    gone = sorted(set(re.findall(r"[\w]+\.py", block)) - present)
    assert not gone, f"CONTRIBUTING.md's layout names modules that do not exist: {gone}"


def _imports() -> dict[str, set[str]]:
    """Each qckit module and the qckit modules it imports anywhere (function-level imports included, a
    package's lazy re-exports of its own submodules left out: importing those runs the package anyway)."""
    import ast

    names = {}
    for path in sorted((ROOT / "qckit").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    found: dict[str, set[str]] = {}
    for module, path in names.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                    ).strip(".")
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target not in names and "." in target:
                    target = target.rpartition(".")[0]
                if target in names and target != module and not target.startswith(module + "."):
                    deps.add(target)
        found[module] = deps
    return found


def test_evaluation_and_run_readers_never_import_the_train_stage():
    graph = _imports()
    readers = [m for m in graph if m.startswith("qckit.evaluate")] + ["qckit.outputs", "qckit.documents"]
    wrong = {m: sorted(d for d in graph[m] if d.startswith("qckit.train")) for m in readers}
    assert not any(wrong.values()), wrong


def test_qckit_has_no_import_circle():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " → ".join([*trail[trail.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*trail, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
