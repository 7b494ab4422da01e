"""``qckit select``: adapter strengths × checkpoints measured against the base, the best safe point written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console

from qckit.cli import main
from qckit.testing import SAMPLE_SENTENCES, write_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RETAIN = [
    "La Commission scolaire a publié son rapport annuel sur la réussite des élèves.",
    "Le gouvernement fédéral annonce un investissement dans les infrastructures routières.",
    "Les chercheurs de l'université ont présenté leurs résultats au congrès international.",
    "La météo prévoit des averses dispersées sur l'ensemble de la province demain.",
]


def _recipe(tmp: Path, model: Path, *, select: str = "", lora: str = "") -> Path:
    train = write_corpus(tmp / "train.txt", list(SAMPLE_SENTENCES) * 2)
    val = write_corpus(tmp / "val.txt", SAMPLE_SENTENCES[::4])
    retain = write_corpus(tmp / "retain.txt", RETAIN)
    text = f"""
name = "tiny-select"
[train]
train_file = "{train}"
val_file = "{val}"
output_dir = "{tmp / "run"}"
model = "{model}"
max_steps = 4
batch_size = 4
gradient_accumulation_steps = 1
learning_rate = 5e-3
logging_steps = 1
save_steps = 2
eval_steps = -1
inspect_data = false
report_to = []
{select}
[train.chunker]
use = "window"
max_length = 32
stride = 0
min_length = 8
[[train.adapters]]
use = "lora"
r = 4
{lora}
[[train.eval]]
name = "retain_fr"
kind = "bpb"
path = "{retain}"
role = "retain"
max_regression = 0.02
"""
    path = tmp / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(argv):
    console = Console(width=160, record=True, force_terminal=False)
    status = main(argv, console=console)
    return status, console.export_text()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("select")
    status, text = _run(["run", str(_recipe(tmp, tiny_model_dir))])
    assert status == 0, text
    return tmp / "run"


def test_every_point_is_measured_against_the_base_and_the_best_safe_one_chosen(run_dir):
    from qckit.select import select_run

    selection = select_run(run_dir, strengths=[0, 0.5, 1])
    assert selection["checkpoints"] == ["checkpoint-2", "checkpoint-4"]  # final = checkpoint-4's weights
    points = {(p["checkpoint"], p["strength"]): p for p in selection["points"]}
    assert len(points) == 6
    base_bpb = selection["base"]["val"]["bits_per_byte"]
    for checkpoint in ("checkpoint-2", "checkpoint-4"):  # strength 0 of a LoRA adapter is the base model
        assert points[(checkpoint, 0.0)]["sets"]["val"]["after"] == pytest.approx(base_bpb, abs=1e-9)
        assert points[(checkpoint, 0.0)]["target_gain"] == pytest.approx(0.0, abs=1e-9)
    summary = json.loads((run_dir / "training_summary.json").read_text())
    full = points[("checkpoint-4", 1.0)]["sets"]
    assert full["val"]["after"] == pytest.approx(summary["eval_after"]["val"]["bits_per_byte"], abs=1e-5)
    assert full["val"]["before"] == pytest.approx(summary["eval_before"]["val"]["bits_per_byte"], abs=1e-5)
    chosen = selection["chosen"]
    allowed = [p for p in selection["points"] if not p["breaches"]]
    best = max(p["target_gain"] for p in allowed)
    assert (
        chosen["target_gain"] == best and not points[(chosen["checkpoint"], chosen["strength"])]["breaches"]
    )
    assert all(p["strength"] >= chosen["strength"] for p in allowed if p["target_gain"] == best)
    frontier = [selection["points"][i] for i in selection["frontier"]]
    assert points[(chosen["checkpoint"], chosen["strength"])] in frontier

    again = select_run(run_dir, strengths=[0, 0.5, 1])  # every point from the cache
    assert (again["evaluations"], again["cached_evaluations"]) == (0, 7)
    assert again["chosen"] == chosen


def test_the_written_point_is_what_was_measured(run_dir, tiny_model_dir, tmp_path):
    from peft import PeftModel

    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model
    from qckit.select import _Strength, write_selected

    source = resolve_model(str(tiny_model_dir))
    tokenizer = load_tokenizer(source)
    ids = tokenizer(SAMPLE_SENTENCES[0], return_tensors="pt").input_ids
    base_state = load_model(source).state_dict()
    model = load_adapter(load_model(source), run_dir / "checkpoint-4")
    _Strength(model, base_state, True).set(0.5)
    written = write_selected(run_dir, "checkpoint-4", 0.5, tmp_path / "half")
    loaded = PeftModel.from_pretrained(load_model(source), str(written))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    # a plain LoRA adapter's strength is linear in its delta: the merged weights lie half-way between
    # the base's and the fully trained model's
    half = model.merge_and_unload().state_dict()
    full = load_adapter(load_model(source), run_dir / "checkpoint-4").merge_and_unload().state_dict()
    moved = [name for name in base_state if not torch.equal(full[name], base_state[name])]
    assert moved
    for name in moved:
        torch.testing.assert_close(half[name], (base_state[name] + full[name]) / 2, rtol=0, atol=1e-6)
    assert json.loads((written / "qckit_selection.json").read_text())["strength"] == 0.5


def test_a_full_fine_tune_is_interpolated_tensor_by_tensor(tiny_model):
    from qckit.select import _Strength

    base_state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with torch.no_grad():
        for param in tiny_model.parameters():
            param.add_(1.0)
    strength = _Strength(tiny_model, base_state, False)
    strength.set(0.25)
    for name, param in tiny_model.named_parameters():
        torch.testing.assert_close(param.detach(), base_state[name] + 0.25, rtol=0, atol=1e-6)
    strength.set(1.0)
    first = next(iter(tiny_model.named_parameters()))
    torch.testing.assert_close(first[1].detach(), base_state[first[0]] + 1.0, rtol=0, atol=1e-6)


def test_cli_select_prints_the_frontier_writes_the_choice_and_updates_the_card(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "frontier.png"
    status, text = _run(["select", str(run_dir), "--strengths", "0", "0.5", "1", "--plot", str(plot)])
    assert status == 0, text
    assert "Adapter strength × checkpoint" in text and "chosen:" in text and "from the cache" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run_dir / "training_summary.json").read_text())
    chosen = summary["selection"]["chosen"]
    assert summary["selection"]["written_to"] == str(run_dir / "selected")
    assert (
        json.loads((run_dir / "selected" / "qckit_selection.json").read_text())["strength"]
        == chosen["strength"]
    )
    card = (run_dir / "README.md").read_text()
    assert "## Selected trade-off" in card and f"strength {chosen['strength']:g}" in card
    status, out = _run(["select", str(run_dir), "--strengths", "-1"])
    assert status != 0 and "strengths" in out


def test_a_recipe_selects_after_training_also_with_trained_embeddings(tmp_path, tiny_model_dir):
    recipe = _recipe(
        tmp_path,
        tiny_model_dir,
        select='[train.select]\nstrengths = [0, 1]\ncheckpoints = "final"',
        lora="train_embeddings = true",
    )
    status, text = _run(["run", str(recipe)])
    assert status == 0, text
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    selection = summary["selection"]
    assert [p["strength"] for p in selection["points"]] == [0.0, 1.0]
    zero = selection["points"][0]["sets"]
    for name in ("val", "retain_fr"):  # strength 0 puts the trained embeddings back to the base's
        assert zero[name]["after"] == pytest.approx(selection["base"][name]["bits_per_byte"], abs=1e-9)
    assert (tmp_path / "run" / "selected" / "adapter_model.safetensors").is_file()


def test_intervals_follow_the_metric_and_its_direction():
    from qckit import report
    from qckit.select import _with_intervals

    outcomes = {
        "pairs": {
            "metric": "accuracy",
            "regression_unit": "points",
            "higher_is_better": True,
            "before": 0.6,
            "change": 0.1,
        },
        "val": {
            "metric": "bits_per_byte",
            "regression_unit": "relative",
            "higher_is_better": False,
            "before": 2.0,
            "change": -0.1,
        },
        "other": {
            "metric": "accuracy",
            "regression_unit": "points",
            "higher_is_better": True,
            "before": 0.5,
            "change": 0.0,
        },
    }
    numbers = {
        "pairs": {"accuracy_ci95": [0.62, 0.78]},
        "val": {"bits_per_byte_ci95": [1.7, 1.9]},
        "other": {},
    }
    out = _with_intervals(outcomes, numbers)
    assert out["pairs"]["change_ci95"] == pytest.approx([0.02, 0.18])
    assert out["val"]["change_ci95"] == pytest.approx([-0.15, -0.05])
    assert out["other"]["change_ci95"] is None
    assert report.change_with_interval(out["val"], gain=True) == "+10.0 % [+5.0, +15.0]"
    assert report.change_with_interval(out["pairs"]) == "+10.0 pts [+2.0, +18.0]"


def test_the_selected_output_never_replaces_something_else(run_dir, tmp_path):
    from qckit.errors import InputError
    from qckit.select import write_selected

    for bad in (run_dir, run_dir.parent):
        with pytest.raises(InputError, match="holds the run"):
            write_selected(run_dir, "checkpoint-4", 0.5, bad)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError, match="not an earlier selection"):
        write_selected(run_dir, "checkpoint-4", 0.5, other)
    assert (other / "keep.txt").read_text(encoding="utf-8") == "mine"
    first = write_selected(run_dir, "checkpoint-4", 0.5, tmp_path / "sel")
    assert write_selected(run_dir, "checkpoint-4", 0.25, first) == first  # an earlier selection is replaced
    config = json.loads((first / "adapter_config.json").read_text())
    assert (
        config["base_model_name_or_path"]
        == json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    )  # the run's shareable base reference, not the path a checkpoint was loaded from


def test_an_edited_card_is_kept_and_another_max_length_is_measured_again(run_dir):
    from qckit.select import record_selection, select_run

    card = run_dir / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\nLicence: CC-BY-4.0 (mine)\n", encoding="utf-8")
    selection = select_run(run_dir, strengths=[0, 1], checkpoints="final")
    record_selection(run_dir, selection, None)
    assert card.read_text(encoding="utf-8").endswith("Licence: CC-BY-4.0 (mine)\n")
    again = select_run(run_dir, strengths=[0, 1], checkpoints="final", max_length=16)
    assert again["evaluations"] == 3 and again["cached_evaluations"] == 0  # another window: new numbers


def test_a_full_fine_tune_selection_writes_the_interpolated_tied_model(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qckit.models import load_model, resolve_model
    from qckit.select import write_selected

    # a tied model (SmolLM2, Llama-3.2-1B/3B are): embed_tokens and lm_head are one tensor
    tied_dir = tmp_path / "tied"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.get_input_embeddings().weight
    model.save_pretrained(tied_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tied_dir)
    tiny_model_dir = tied_dir
    recipe = _recipe(tmp_path, tiny_model_dir)
    text = re.sub(
        r'\[\[train\.adapters\]\]\s*use = "lora"\s*r = 4\s*', "", recipe.read_text(encoding="utf-8")
    )
    text = text.replace("report_to = []\n", "report_to = []\nadapters = []\n")  # the whole model trains
    assert "lora" not in text
    recipe.write_text(text, encoding="utf-8")
    status, out = _run(["run", str(recipe)])
    assert status == 0, out
    run = tmp_path / "run"
    written = write_selected(run, "final", 0.5, tmp_path / "half")
    base = load_model(resolve_model(str(tiny_model_dir))).state_dict()
    tuned = load_model(resolve_model(str(run))).state_dict()
    half = load_model(resolve_model(str(written))).state_dict()
    assert any(not torch.equal(base[n], tuned[n]) for n in base)
    for name in base:
        torch.testing.assert_close(half[name], (base[name] + tuned[name]) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["dora", "rslora"])
def test_dora_and_rslora_strengths_are_written_as_measured(variant, tiny_model_dir, tmp_path):
    """Strength scales B·A inside DoRA's and rsLoRA's own formulas: the written adapter is the point measured."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from qckit.models import load_model, load_tokenizer, resolve_model
    from qckit.select import _Strength, write_selected

    source = resolve_model(str(tiny_model_dir))
    base_state = load_model(source).state_dict()
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        use_dora=variant == "dora",
        use_rslora=variant == "rslora",
    )
    tuned = get_peft_model(load_model(source), config)
    with torch.no_grad():
        torch.manual_seed(0)
        for name, param in tuned.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained-looking adapter: B is zero at initialisation
    run = tmp_path / "run"
    tuned.save_pretrained(run)
    (run / "training_summary.json").write_text(json.dumps({"model": str(tiny_model_dir), "global_step": 1}))
    ids = load_tokenizer(source)(SAMPLE_SENTENCES[1], return_tensors="pt").input_ids
    measured = PeftModel.from_pretrained(load_model(source), str(run))
    _Strength(measured, base_state, True).set(0.5)
    written = write_selected(run, "final", 0.5, tmp_path / "half")
    loaded = PeftModel.from_pretrained(load_model(source), str(written))
    full = PeftModel.from_pretrained(load_model(source), str(run))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, measured(ids).logits, rtol=0, atol=1e-5)
        assert not torch.allclose(
            loaded(ids).logits, full(ids).logits, atol=1e-3
        )  # half is not the whole delta


@pytest.mark.parametrize("grown", [False, True], ids=["same_vocab", "grown_vocab"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_trained_embeddings_strengths_are_written_as_measured(tied, grown, request, tmp_path):
    """The embeddings trained in full (a tied model's one matrix in place, an untied model's two copies) are
    interpolated once each, and the written adapter is the point measured; a grown matrix has no base value
    to move towards and stays as trained, in both."""
    from qckit.hardware import Environment
    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model
    from qckit.select import _Strength, write_selected
    from qckit_builtins.adapters import LoraAdapter

    base_dir = request.getfixturevalue("tiny_tied_model_dir" if tied else "tiny_model_dir")
    source = resolve_model(str(base_dir))
    base_state = load_model(source).state_dict()
    tuned = load_model(source)
    if grown:
        tuned.resize_token_embeddings(tuned.config.vocab_size + 3, mean_resizing=False)
    tuned = LoraAdapter(r=4, alpha=8, train_embeddings=True).wrap_model(tuned, Environment())
    with torch.no_grad():
        torch.manual_seed(0)
        for name, param in tuned.named_parameters():
            if param.requires_grad:  # a trained-looking adapter: B is zero at initialisation
                param.add_(torch.randn_like(param) * (0.5 if "lora_B" in name else 0.05))
    run = tmp_path / "run"
    tuned.save_pretrained(str(run))
    (run / "training_summary.json").write_text(json.dumps({"model": str(base_dir), "global_step": 1}))
    ids = load_tokenizer(source)(SAMPLE_SENTENCES[1], return_tensors="pt").input_ids
    measured = load_adapter(load_model(source), run)
    strength = _Strength(measured, base_state, True)
    vocab = measured.get_input_embeddings().weight.shape[0]
    embeddings = [p for p, _, _ in strength.full if p.shape[0] == vocab]
    assert len(embeddings) == (0 if grown else 1 if tied else 2)
    strength.set(0.5)
    written = write_selected(run, "final", 0.5, tmp_path / "half")
    loaded = load_adapter(load_model(source), written)  # grows the base as the adapter needs, then peft
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, measured(ids).logits, rtol=0, atol=1e-5)
    if tied:
        inner = measured.get_base_model()
        assert inner.lm_head.weight is inner.model.embed_tokens.weight
    if not grown:  # half-way between the base's matrix and the trained one
        trained = load_adapter(load_model(source), run).get_input_embeddings().weight
        torch.testing.assert_close(
            measured.get_input_embeddings().weight,
            (base_state["model.embed_tokens.weight"] + trained) / 2,
            rtol=0,
            atol=1e-6,
        )
