"""CONTRIBUTING's layout section names every module of the tree, and nothing that is not there."""

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
