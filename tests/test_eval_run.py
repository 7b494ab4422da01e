"""Several named eval sets through a real tiny training run, then ``qckit evaluate`` and ``qckit compare``
on its outputs (the CLI's plain one-line output and ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from qckit.cli import main
from qckit.testing import SAMPLE_SENTENCES, write_corpus

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "data" / "sample" / "quebec_minimal_pairs.jsonl"
CHOICE = REPO / "data" / "sample" / "quebec_choice.jsonl"
#: text the model never sees in training: specialising on French makes it less likely (a sure regression)
GREEK = ["Η γλώσσα είναι ένα σύστημα επικοινωνίας των ανθρώπων.", "Το πρωί πίνουμε καφέ στο μπαλκόνι."]


def run(argv, width=200):
    console = Console(width=width, record=True, force_terminal=False)
    status = main(argv, console=console)
    return status, console.export_text()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("eval_run")
    train = write_corpus(tmp / "train.txt", list(SAMPLE_SENTENCES) * 3)
    val = write_corpus(tmp / "val.txt", SAMPLE_SENTENCES[::4])
    seen = write_corpus(tmp / "seen.txt", SAMPLE_SENTENCES[1::5])
    greek = write_corpus(tmp / "greek.txt", GREEK)
    out = tmp / "model"
    recipe = tmp / "recipe.toml"
    recipe.write_text(
        f"""
[train]
model = "{tiny_model_dir}"
train_file = "{train}"
val_file = "{val}"
output_dir = "{out}"
max_steps = 12
eval_steps = 6
batch_size = 4
gradient_accumulation_steps = 1
learning_rate = 5e-3
logging_steps = 3
save_steps = 0
inspect_data = false

[train.chunker]
use = "window"
max_length = 64
stride = 8

[[train.adapters]]
use = "lora"
r = 8

[[train.eval]]
name = "seen"
kind = "bpb"
path = "{seen}"
role = "retain"
protocol = "stream"

[[train.eval]]
name = "forgotten"
kind = "bpb"
path = "{greek}"
role = "retain"
max_regression = 0.0

[[train.eval]]
name = "pairs"
kind = "minimal_pairs"
path = "{PAIRS}"

[[train.eval]]
name = "idioms"
kind = "choice"
path = "{CHOICE}"
metric = "macro_f1"
""",
        encoding="utf-8",
    )
    status, text = run(["run", str(recipe)])
    assert status == 0, text
    return tmp, out, recipe, text


def test_every_set_is_measured_before_during_and_after(trained):
    _, out, _, _ = trained
    summary = json.loads((out / "training_summary.json").read_text())
    names = ["val", "seen", "forgotten", "pairs", "idioms"]
    for key in ("eval_before", "eval_after"):
        assert list(summary[key]) == names
    assert [list(h) for h in summary["eval_history"]] == [names]
    assert [summary[k]["pairs"]["step"] for k in ("eval_before", "eval_after")] == [0, 12]
    sets = summary["eval_sets"]
    assert list(sets) == names
    assert [(sets[n]["kind"], sets[n]["protocol"], sets[n]["role"], sets[n]["metric"]) for n in names] == [
        ("bpb", "document", "target", "bits_per_byte"),
        ("bpb", "stream", "retain", "bits_per_byte"),
        ("bpb", "document", "retain", "bits_per_byte"),
        ("minimal_pairs", "", "target", "accuracy"),
        ("choice", "", "target", "macro_f1"),
    ]
    for name in names:
        entry, metric = sets[name], sets[name]["metric"]
        assert entry["before"] == summary["eval_before"][name][metric]
        assert entry["after"] == summary["eval_after"][name][metric]
        assert entry["delta"] == pytest.approx(entry["after"] - entry["before"])
    assert sets["val"]["gain"] > 0 and sets["seen"]["gain"] > 0  # trained text: both improve
    assert summary["eval_after"]["pairs"]["pairs"] == 43
    assert summary["eval_after"]["idioms"]["items"] == 12


def test_a_retain_set_that_regresses_is_flagged(trained):
    _, out, _, text = trained
    summary = json.loads((out / "training_summary.json").read_text())
    forgotten = summary["eval_sets"]["forgotten"]
    assert forgotten["regression"] > 0 and forgotten["breach"]
    assert not summary["eval_sets"]["seen"]["breach"]  # regression below the default 2 %
    assert summary["retain_breaches"] == ["forgotten"]
    assert any(w.startswith("retain set forgotten regressed by") for w in summary["warnings"])
    assert "Held-out evaluation" in text and "BREACH (>0 %)" in text


def test_tensorboard_has_one_group_per_set_and_trainer_state_the_curves(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, _, _ = trained
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {
        "eval_val/document/bits_per_byte",
        "eval_seen/stream/bits_per_byte",
        "eval_forgotten/document/bits_per_byte",
        "eval_pairs/accuracy",
        "eval_pairs/accuracy_norm",
        "eval_idioms/macro_f1",
    }
    assert expected <= tags
    assert [e.step for e in events.Scalars("eval_pairs/accuracy")] == [0, 6, 12]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "eval_idioms/macro_f1" in h] == [0, 6, 12]


def test_evaluate_recipe_measures_the_same_sets(trained, tiny_model_dir):
    _, out, recipe, _ = trained
    status, text = run(["evaluate", "--recipe", str(recipe), "--adapter", str(out), "--json"])
    assert status == 0, text
    data = json.loads(text[text.index("{") :])
    after = json.loads((out / "training_summary.json").read_text())["eval_after"]
    assert list(data["sets"]) == list(after) and data["model"] == str(tiny_model_dir)
    assert data["sets"]["val"]["bits_per_byte"] == pytest.approx(after["val"]["bits_per_byte"], rel=1e-4)
    assert data["sets"]["seen"]["protocol"] == "stream"
    assert data["sets"]["pairs"]["accuracy"] == after["pairs"]["accuracy"]
    assert data["sets"]["idioms"]["macro_f1"] == pytest.approx(after["idioms"]["macro_f1"])


def test_evaluate_plain_output_is_one_line_per_set_at_80_columns(trained):
    _, out, recipe, _ = trained
    status, text = run(["evaluate", "--recipe", str(recipe), "--adapter", str(out)], width=80)
    assert status == 0, text
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("warning")]
    assert [line.split(" ", 1)[0] for line in lines] == ["val", "seen", "forgotten", "pairs", "idioms"]
    assert lines[0].startswith("val [bpb/document]: bits/byte ") and "docs)" in lines[0]
    assert lines[1].startswith("seen [bpb/stream]: bits/byte ")
    assert lines[3].startswith("pairs [minimal_pairs]: acc ") and lines[3].endswith("(43 pairs)")
    assert lines[4].startswith("idioms [choice]: F1 ") and "(12 items)" in lines[4]


def test_compare_table_and_plot(trained, tmp_path):
    tmp, out, _, _ = trained
    plot = tmp_path / "curves.png"
    status, text = run(["compare", str(out), str(out), "--plot", str(plot)])
    assert status == 0, text
    label = tmp.name  # the run directory is called model: its parent names it
    assert "Eval sets by run" in text and f"forgot: {label}: forgotten" in text
    assert f"forgot: {label} (2): forgotten" in text  # the same run twice, numbered
    assert text.count("BREACH") == 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    status, text = run(["compare", str(out), "--json"])
    data = json.loads(text[text.index("{") :])
    assert [step for step, _ in data[str(out)]["curves"]["pairs"]] == [0, 6, 12]
    assert data[str(out)]["label"] == label and [step for step, _ in data[str(out)]["loss"]] == [
        1,
        3,
        6,
        9,
        12,
    ]
    status, text = run(["compare", str(tmp_path)])
    assert status != 0 and "not a finished run" in text


def test_compare_names_runs_by_their_recipes(trained, tmp_path):
    import shutil

    _, out, _, _ = trained
    copies = []
    for name in ("qc-lr5e-3", "qc-lr1e-3"):
        copy = shutil.copytree(out, tmp_path / name / "model", ignore=shutil.ignore_patterns("*.safetensors"))
        recipe = copy / "recipe.toml"
        recipe.write_text(f'name = "{name}"\n' + recipe.read_text(encoding="utf-8"), encoding="utf-8")
        copies.append(str(copy))
    status, text = run(["compare", *copies], width=80)
    assert status == 0, text
    assert "  qc-lr5e-3 " in text and "forgot: qc-lr1e-3: forgotten" in text


def test_compare_plot_draws_loss_retain_limits_and_confidence_bands(trained):
    from qckit.cli.compare import plot_figure
    from qckit.evaluate.runs import read_run
    from qckit.evaluate.sets import retain_limit

    _, out, _, _ = trained
    one = read_run(out)
    assert [step for step, _ in one.loss] == [1, 3, 6, 9, 12]  # the first step, then every logging_steps = 3
    assert [step for step, *_ in one.bands["pairs"]] == [0, 6, 12]  # the pairs' Wilson interval
    assert all(
        low <= value <= high
        for (_, low, high), (_, value) in zip(one.bands["pairs"], one.curves["pairs"], strict=True)
    )
    # bits per byte: the bootstrap over documents of the document protocol; the stream protocol has none
    assert [step for step, *_ in one.bands["val"]] == [0, 6, 12]
    assert all(
        low <= value <= high
        for (_, low, high), (_, value) in zip(one.bands["val"], one.curves["val"], strict=True)
    )
    assert one.bands["seen"] == []
    figure = plot_figure([one])
    axes = {a.get_title(): a for a in figure.axes}
    assert list(axes) == [
        "val [bpb/document] (target)",
        "seen [bpb/stream] (retain)",
        "forgotten [bpb/document] (retain)",
        "pairs [minimal_pairs] (target)",
        "idioms [choice] (target)",
        "training loss",
    ]
    assert [tuple(line.get_ydata()) for line in axes["training loss"].get_lines()] == [
        tuple(loss for _, loss in one.loss)
    ]
    limits = {t: [line for line in a.get_lines() if line.get_linestyle() == "--"] for t, a in axes.items()}
    [forgotten_limit] = limits["forgotten [bpb/document] (retain)"]
    assert forgotten_limit.get_ydata()[0] == pytest.approx(retain_limit(one.sets["forgotten"]))
    assert forgotten_limit.get_ydata()[0] == pytest.approx(one.sets["forgotten"]["before"])  # 0 % allowed
    [seen_limit] = limits["seen [bpb/stream] (retain)"]
    assert seen_limit.get_ydata()[0] == pytest.approx(one.sets["seen"]["before"] * 1.02)  # the default 2 %
    assert not limits["val [bpb/document] (target)"]  # a target set has no limit
    assert axes["pairs [minimal_pairs] (target)"].collections  # the band
    assert axes["val [bpb/document] (target)"].collections  # the bootstrap band
    assert not axes["seen [bpb/stream] (retain)"].collections
