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


# -- every report at 80 columns: headers and names whole, numbers never split -------------------------

SOURCES = [
    {"name": "quebec_forums", "exhausted": "repeat", "documents": 123_456, "tokens": 98_765_432}
    | {"fertility": 1.734, "windows": 96_456, "requested_share": 0.8, "planned_share": 0.7981}
    | {"realized_share": 0.8012},
    {"name": "standard_french", "exhausted": "stop", "documents": 23_456, "tokens": 8_765_432}
    | {"fertility": 1.534, "windows": 9_456, "requested_share": 0.2, "planned_share": 0.2019}
    | {"realized_share": 0.1988},
]


def render(renderable, width=80) -> str:
    console = Console(width=width, record=True, force_terminal=False)
    console.print(renderable)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text  # nothing cut
    return text


def test_sources_table_keeps_headers_names_and_numbers_whole_at_80_columns():
    from qckit.report import sources_table

    text = render(sources_table(SOURCES))
    words = set(text.split())
    for header in (
        "source",
        "docs",
        "tokens",
        "windows",
        "requested",
        "planned",
        "realized",
        "tok",
        "per",
        "word",
    ):
        assert header in words, header
    for cell in ("quebec_forums", "standard_french", "(repeat)", "123,456", "98.8", "96,456", "80.0", "19.9"):
        assert cell in words, cell


def test_a_long_value_gets_a_line_of_its_own_instead_of_being_split():
    from qckit.report import key_values

    model = "/scratch/project/def-someone/models/meta-llama/Llama-3.2-1B-Instruct"  # 68 characters
    text = render(key_values("Run", {"gradient_accumulation_steps": 8, "model": model, "train_loss": 1.5}))
    assert any(line.strip() == model for line in text.splitlines())
    assert any(line.split() == ["gradient", "accumulation", "steps", "8"] for line in text.splitlines())
    wide = render(key_values("Run", {"model": model}), width=160)
    assert [line.split() for line in wide.splitlines() if model in line] == [["model", model]]


def test_an_eval_line_wraps_between_its_parts_never_inside_a_number():
    from qckit.report import eval_line

    numbers = {
        "metric": "bits_per_byte",
        "bits_per_byte": 0.912345,
        "perplexity": 12.345,
        "documents": 12_345,
    }
    numbers |= {"step": 1200, "seconds": 123.4, "kind": "bpb", "protocol": "document"}
    line = eval_line("after", numbers, "quebec_validation_set")
    assert render(line, width=200).strip() == (
        "after quebec_validation_set [bpb/document] (step 1200): bits/byte 0.9123  ppl 12.35  (12,345 docs, 123.4 s)"
    )
    lines = render(line).splitlines()
    assert lines[0].rstrip().endswith("bits/byte 0.9123")
    assert [part.strip() for part in lines[1].split("  ") if part.strip()] == [
        "ppl 12.35",
        "(12,345 docs, 123.4 s)",
    ]
    pairs = {
        "metric": "accuracy",
        "accuracy": 0.7123,
        "accuracy_ci95": [0.6523, 0.7712],
        "pairs": 4321,
        "step": 0,
    }
    pairs |= {"kind": "minimal_pairs", "bad_rows": 3, "seconds": 12.4}
    text = render(eval_line("before", pairs, "quebec_minimal_pairs"))
    assert "acc 0.712 [0.65-0.77]" in text and "(4,321 pairs, 3 bad rows, 12.4 s)" in text


def test_prepare_funnel_keeps_each_stage_label_on_one_line_at_80_columns():
    from qckit.report import prepare_report

    stats = {"documents": 100_000, "records": 100_500, "inputs": ["a", "b"], "kept": 94_445}
    stats["normalizers"] = {"unicode_form": 1_234, "control_chars": 345, "whitespace": 56_789}
    stats["filters"] = {
        "exact_dedup": {"dropped": 4_321, "reasons": {"duplicate": 4_321}, "examples": {}},
        "length": {"dropped": 1_234, "reasons": {"too_short": 1_000, "too_long": 234}, "examples": {}},
    }
    text = render(prepare_report(stats))
    for label in ("changed by control_chars", "changed by unicode_form", "dropped by exact_dedup"):
        assert label in text, label


def test_eval_tables_keep_a_retain_limit_whole_at_80_columns():
    from qckit.evaluate.runs import Run
    from qckit.report import compare_report, eval_sets_table

    def entry(role, metric, before, after, change, **more):
        bpb = metric == "bits_per_byte"
        return (
            {"role": role, "metric": metric, "before": before, "after": after, "change": change}
            | {
                "gain": -change if bpb else change,
                "breach": False,
                "regression_unit": "relative" if bpb else "points",
                "max_regression": 0.02,
                "higher_is_better": not bpb,
                "protocol": "document" if bpb else None,
            }
            | more
        )

    sets = {
        "quebec_validation": entry("target", "bits_per_byte", 1.2345, 1.1234, -0.09),
        "standard_french_retain": entry("retain", "bits_per_byte", 1.0123, 1.0456, 0.033, breach=True),
        "quebec_pairs": entry("retain", "accuracy", 0.712, 0.745, 0.033, max_regression=0.1),
    }
    runs = [Run(Path(f"/scratch/me/runs/{name}/model"), sets) for name in ("lr1e-4", "lr3e-4")]
    for renderable in (eval_sets_table(sets), compare_report(runs)):
        text = render(renderable)
        for whole in (
            "BREACH",
            "(>2 %)",
            "retained",
            "(≤10 pts)",
            "-9.0 %",
            "+3.3 pts",
            "standard_french_retain",
        ):
            assert whole in text, whole
        for header in ("before", "after", "change", "check"):
            assert header in text.split(), header
    text = render(compare_report(runs))
    assert "  lr1e-4 " in text and "forgot: lr3e-4: standard_french_retain" in text
    assert "/scratch/me/runs/lr1e-4/model" in text  # the legend names each run's directory


def test_reports_written_to_a_log_are_wide(monkeypatch):
    from qckit.cli.common import LOG_WIDTH, new_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert new_console().width == LOG_WIDTH  # pytest's stdout is not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert new_console().width == 100


def test_the_check_plan_keeps_settings_and_names_whole_at_80_columns():
    from qckit.recipe import load_recipe
    from qckit.report import plan_report

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")
    text = render(plan_report(recipe))
    words = set(text.split())
    for whole in ("collapse_punctuation", "check_only_flagged=True", "merge_threshold=262144", "(qckit)"):
        assert whole in words or f"{whole}," in words, whole
    assert any(line.split() == ["inputs"] for line in text.splitlines())  # too long: the value goes under


def test_prepare_report_counts_near_duplicates_kept_beside_their_cluster(stats):
    from qckit.report import prepare_report

    tagged = {**stats, "sets": [{**stats["sets"][0], "clustered": 1234}]}
    console = Console(width=120, record=True, force_terminal=False)
    console.print(prepare_report(tagged))
    assert "1,234 near-duplicates beside their first" in " ".join(console.export_text().split())
