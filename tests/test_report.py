"""The prepare report on narrow consoles: nothing cut, no name broken inside a word."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from qckit.cli import main

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    import json

    out = tmp_path_factory.mktemp("report") / "out"
    argv = ["prepare", "--input", str(SAMPLE / "quebec_sample.txt"), str(SAMPLE / "quebec_sample.jsonl")]
    assert (
        main(
            [*argv, "--output", str(out), "--merge", "--workers", "1"],
            console=Console(file=io.StringIO()),
        )
        == 0
    )
    return json.loads((out / "prepare_stats.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("width", [60, 80, 120])
def test_prepare_report_fits_narrow_consoles_without_cutting_anything(stats, width):
    from qckit.report import prepare_report

    console = Console(width=width, record=True, force_terminal=False)
    console.print(prepare_report(stats))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text  # no cell was truncated
    words = set(text.replace("│", " ").split())
    for name, count in stats["normalizers"].items():
        if count:
            assert name in words, name  # a component name is never broken across lines
    for name, info in stats["filters"].items():
        if info["dropped"]:
            assert name in words, name
    kept_line = next(line for line in lines if " kept " in f" {line} ")
    share = f"{100 * stats['kept'] / stats['documents']:.1f} %"
    assert f"{stats['kept']:,}" in kept_line and share in kept_line
    s = stats["sets"][0]
    assert f"{s['train']:,} / {s['val']:,}" in text
