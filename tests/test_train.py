"""The train stage end to end on a tiny in-process Llama (CPU, offline, a few seconds per run)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest

from qckit.errors import HardwareError, InputError, RecipeError
from qckit.progress import RecordingObserver
from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus
from qckit.train import TrainSettings, estimate_optimizer_steps, run_train
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker


def _reports(obs: RecordingObserver, kind: str) -> list:
    return [data for event, name, data in obs.events if event == "report" and name == kind]


def _warnings(obs: RecordingObserver) -> list[str]:
    return [data for event, _, data in obs.events if event == "warn"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small repeated training corpus and a held-out file drawn from the same sentences."""
    root = tmp_path_factory.mktemp("corpus")
    train = write_corpus(root / "train.txt", list(SAMPLE_SENTENCES) * 3)
    val = write_corpus(root / "val.txt", SAMPLE_SENTENCES[::4])
    return train, val


def _settings(out: Path, model_dir: Path, corpus: tuple[Path, Path], **overrides) -> TrainSettings:
    return tiny_train_settings(corpus, out, model_dir, **overrides)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir, corpus):
    """One LoRA run shared by several tests: 24 steps, eval every 12, checkpoints every 12."""
    out = tmp_path_factory.mktemp("lora_run") / "cpt_model"
    obs = RecordingObserver()
    settings = _settings(
        out, tiny_model_dir, corpus, max_steps=24, eval_steps=12, save_steps=12, inspect_samples=3
    )
    result = run_train(
        settings,
        WindowChunker(max_length=64, stride=8, min_length=8),
        [LoraAdapter()],
        observer=obs,
        recipe_text='[train]\nmodel = "tiny"\n',
    )
    return out, obs, result


def test_lora_run_writes_the_seed_layout(lora_run):
    out, _, result = lora_run
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.json",
        "training_args.bin",
        "training_summary.json",
        "recipe.toml",
    ):
        assert (out / name).is_file(), name
    assert (out / "checkpoint-12").is_dir() and (out / "checkpoint-24").is_dir()
    assert list((out / "logs").glob("events.out.tfevents.*"))
    assert not (out / "model.safetensors").exists()  # LoRA saves the adapter, not a second copy of the base
    assert (out / "recipe.toml").read_text(encoding="utf-8") == '[train]\nmodel = "tiny"\n'
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["use_cache"] is True
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 24 == result.global_step
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))


def test_summary_numbers_are_consistent_and_training_helps(lora_run):
    _, _, result = lora_run
    s = result.summary
    assert set(s["eval_before"]) == set(s["eval_after"]) == {"val"}  # one named set: the val_file
    before, after = s["eval_before"]["val"], s["eval_after"]["val"]
    for ev in (before, after):
        assert math.isclose(ev["perplexity"], math.exp(ev["loss"]), rel_tol=1e-9)
        assert math.isclose(
            ev["bits_per_byte"], ev["loss"] * ev["tokens"] / math.log(2) / ev["bytes"], rel_tol=1e-9
        )
    assert before["step"] == 0 and after["step"] == 24
    assert after["perplexity"] < before["perplexity"] and after["bits_per_byte"] < before["bits_per_byte"]
    delta = s["eval_delta"]["val"]["bits_per_byte"]
    assert math.isclose(delta, after["bits_per_byte"] - before["bits_per_byte"])
    assert [h["val"]["step"] for h in s["eval_history"]] == [12]  # the step-24 evaluation is the "after" one
    assert s["precision"] == "fp32" and s["world_size"] == 1
    assert s["adapters"] == ["lora"] and s["global_step"] == 24
    assert math.isfinite(s["train_loss"]) and s["train_loss_ppl"] == pytest.approx(math.exp(s["train_loss"]))
    assert 0 < s["trainable_parameters"] < s["total_parameters"]
    # 24 steps x 4 windows of 64 tokens (the last window of the corpus may be shorter)
    assert 0 < s["tokens_seen"] <= 24 * 4 * 64 and s["tokens_per_s"] > 0
    assert s["packing"]["windows"] == s["windows"] > 0


def test_inspection_and_progress_reach_the_observer(lora_run):
    _, obs, result = lora_run
    (inspection,) = _reports(obs, "inspection")
    assert len(inspection["samples"]) == 3 and all(isinstance(t, str) and t for t in inspection["samples"])
    assert inspection["optimizer_steps"] == 24 and inspection["precision"] == "fp32"
    assert inspection["tokens_kept"] <= inspection["tokens_total"]
    assert 0 < inspection["tokens_kept_pct"] <= 100
    assert inspection["fertility_tokens_per_word"] > 1
    assert inspection["windows"] == result.summary["windows"]
    assert inspection["estimated_train_time_s"] > 0 and "estimate" in inspection["estimated_train_time"]
    assert inspection["trainable_parameters"] == result.summary["trainable_parameters"]
    assert inspection["adapter_notes"].startswith("lora: adapting ")  # the adapters' notes, in the report
    assert result.summary["adapter_notes"] == inspection["adapter_notes"].split("; ")  # and the summary
    kinds = [name for event, name, _ in obs.events if event == "report"]
    assert (
        kinds.index("inspection")
        < kinds.index("eval_before")
        < kinds.index("eval")
        < kinds.index("eval_after")
    )
    assert kinds[-1] == "summary"
    assert ("start", "train", 24) in obs.events
    advances = [data for event, name, data in obs.events if event == "advance" and name == "train"]
    assert [amount for amount, _ in advances if amount] == [1] * 24
    # each logging step (logging_steps = 1) reports its own numbers at once, as an advance of 0
    logged = [fields for amount, fields in advances if not amount]
    assert len(logged) == 24 and all({"loss", "lr", "tokens_per_s"} <= set(f) for f in logged)
    history = json.loads((result.output_dir / "trainer_state.json").read_text())["log_history"]
    assert [f["loss"] for f in logged] == [e["loss"] for e in history if "loss" in e]  # no lag of one log
    assert ("finish", "train", None) in obs.events


def test_tensorboard_and_trainer_state_hold_held_out_metrics(lora_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, result = lora_run
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    # one scalar group per eval set (eval_val), the protocol in the tag
    held_out = {"eval_val/document/bits_per_byte", "eval_val/document/perplexity", "eval_val/document/loss"}
    assert held_out | {"train/loss", "train/learning_rate"} <= tags
    assert not any(tag.startswith("eval/") for tag in tags)
    bpb = events.Scalars("eval_val/document/bits_per_byte")
    assert [e.step for e in bpb] == [0, 12, 24]
    assert bpb[-1].value == pytest.approx(result.summary["eval_after"]["val"]["bits_per_byte"], rel=1e-6)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "eval_val/document/perplexity" in h] == [0, 12, 24]
    # an evaluation step still logs its training loss
    train_logs = [h for h in history if "loss" in h]
    assert [h["step"] for h in train_logs] == list(range(1, 25))
    # the seed's schedule: 3 % linear warmup (one step here), then cosine decay from the peak
    rates = [h["learning_rate"] for h in train_logs]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-3)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:], strict=False)) and rates[-1] < 1e-3


def test_trainer_gets_the_seed_optimizer_settings(lora_run):
    import torch

    out, _, _ = lora_run
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert (args.optim, args.lr_scheduler_type, args.warmup_steps) == ("adamw_torch", "cosine", 0.03)
    assert (args.weight_decay, args.max_grad_norm, args.seed) == (0.0, 1.0, 42)
    assert (
        args.report_to == [] and not args.fp16 and not args.bf16
    )  # fp32 on CPU, TensorBoard attached by qckit


def test_full_finetune_without_lora_and_without_val_file(tmp_path, tiny_model_dir, corpus):
    obs = RecordingObserver()
    settings = _settings(
        tmp_path / "out",
        tiny_model_dir,
        corpus,
        val_file=None,
        num_epochs=1,
        batch_size=8,
        learning_rate=1e-4,
        timing_warmup_steps=0,
        export_merged=True,
    )
    chunker = WindowChunker(max_length=64, stride=8, min_length=8)
    result = run_train(settings, chunker, [], observer=obs)
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    assert not list(out.glob("checkpoint-*"))  # save_steps = 0
    s = result.summary
    assert s["trainable_parameters"] == s["total_parameters"]
    assert s["eval_before"] is None and s["eval_after"] is None
    assert "perplexity" not in s and "no val_file" in s["note"]
    assert any("no validation file" in w for w in _warnings(obs))
    assert any("export_merged" in w and "full model" in w for w in _warnings(obs))
    assert s["warnings"] == _warnings(obs)  # kept in training_summary.json too
    assert not (out / "merged").exists()
    (inspection,) = _reports(obs, "inspection")
    expected = estimate_optimizer_steps(inspection["windows"], 8, 1, 1.0)
    assert inspection["optimizer_steps"] == expected == s["max_steps"] == s["global_step"]
    assert inspection["estimated_train_time"] == "not measured"


def test_resume_without_checkpoints_starts_from_the_beginning(tmp_path, tiny_model_dir, corpus):
    out = tmp_path / "out"
    obs = RecordingObserver()
    first = run_train(
        _settings(out, tiny_model_dir, corpus, val_file=None, max_steps=2, resume=True, inspect_data=False),
        WindowChunker(max_length=64, stride=8, min_length=8),
        [LoraAdapter()],
        observer=obs,
    )
    assert any("no checkpoint" in w for w in _warnings(obs))  # resume without checkpoints starts fresh
    assert first.global_step == 2 and first.summary["resumed_from"] is None


def test_fp16_is_refused_on_cpu_before_loading(tmp_path, corpus):
    settings = _settings(tmp_path / "out", tmp_path / "no-such-model", corpus, precision="fp16")
    with pytest.raises(HardwareError, match="fp16"):
        run_train(settings, WindowChunker(), [LoraAdapter()])
    assert not (tmp_path / "out").exists()


def test_missing_files_are_named(tmp_path, tiny_model_dir, corpus):
    with pytest.raises(RecipeError, match="train_file"):
        run_train(TrainSettings(model=str(tiny_model_dir)), WindowChunker(), [])
    settings = _settings(tmp_path / "out", tiny_model_dir, (tmp_path / "missing.txt", corpus[1]))
    with pytest.raises(InputError, match="missing.txt"):
        run_train(settings, WindowChunker(), [])
    settings = _settings(tmp_path / "out", tiny_model_dir, (corpus[0], tmp_path / "val-missing.txt"))
    with pytest.raises(InputError, match="val-missing.txt"):
        run_train(settings, WindowChunker(), [])


def test_a_corpus_too_small_for_one_window_says_what_to_change(tmp_path, tiny_model_dir):
    train = write_corpus(tmp_path / "small.txt", ["Bonjour, comment ça va?"])
    settings = TrainSettings(
        train_file=str(train), output_dir=str(tmp_path / "out"), model=str(tiny_model_dir)
    )
    with pytest.raises(InputError, match=r"small\.txt.*no training windows.*max_length \(now 256\)"):
        run_train(settings, WindowChunker(max_length=256, stride=0, min_length=64), [])


def test_windows_longer_than_the_model_context_are_refused(tmp_path, tiny_model_dir, corpus):
    settings = _settings(tmp_path / "out", tiny_model_dir, corpus)  # the tiny model has 512 positions
    with pytest.raises(RecipeError, match="max_position_embeddings = 512"):
        run_train(settings, WindowChunker(max_length=1024, stride=128), [])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"num_epochs": 0.0}, "num_epochs"),
        ({"max_steps": 0}, "max_steps"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"lr_scheduler": "cosine-ish"}, "lr_scheduler"),
        ({"precision": "fp8"}, "precision"),
        ({"eval_steps": -2}, "eval_steps"),
        ({"eval_max_length": 64, "eval_stride": 64}, "eval_stride"),
        ({"logging_steps": 0}, "logging_steps"),
    ],
)
def test_settings_range_checks_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        TrainSettings(**kwargs)


def test_defaults_are_the_seed_script_defaults():
    s = TrainSettings()
    assert (s.output_dir, s.model, s.num_epochs, s.batch_size, s.gradient_accumulation_steps) == (
        "./cpt_model",
        "meta-llama/Llama-3.2-1B",
        3,
        8,
        8,
    )
    assert (s.learning_rate, s.lr_scheduler, s.warmup_ratio, s.weight_decay, s.max_grad_norm, s.seed) == (
        1e-5,
        "cosine",
        0.03,
        0.0,
        1.0,
        42,
    )
    assert (
        s.optimizer == "adamw_torch"
        and s.gradient_checkpointing == "auto"
        and s.inspect_data
        and s.inspect_samples == 5
    )
    assert s.precision == "auto" and not s.trust_remote_code


def test_estimate_optimizer_steps_follows_the_trainer():
    assert estimate_optimizer_steps(100, 8, 8, 3) == 6  # 13 batches -> 2 steps per epoch
    assert estimate_optimizer_steps(100, 8, 1, 1.5) == 20
    assert estimate_optimizer_steps(100, 8, 8, 3, world_size=2) == 3  # 7 batches per rank -> 1 step per epoch
    assert estimate_optimizer_steps(5, 8, 8, 3) == 3
    assert estimate_optimizer_steps(100, 8, 8, 3, max_steps=11) == 11


def test_runs_are_reproducible_and_inspection_does_not_change_training(tmp_path, tiny_model_dir, corpus):
    chunker = WindowChunker(max_length=64, stride=8, min_length=8)

    def losses(out: Path) -> list[float]:
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        return [h["loss"] for h in history if "loss" in h]

    common = dict(num_epochs=2, batch_size=16)
    a = run_train(
        _settings(tmp_path / "a", tiny_model_dir, corpus, eval_max_documents=3, **common),
        chunker,
        [LoraAdapter()],
    )
    b = run_train(
        _settings(tmp_path / "b", tiny_model_dir, corpus, inspect_data=False, export_merged=True, **common),
        chunker,
        [LoraAdapter()],
    )
    per_epoch = estimate_optimizer_steps(a.summary["windows"], 16, 1, 1)
    assert a.global_step == 2 * per_epoch and len(losses(tmp_path / "a")) == 2 * per_epoch
    assert losses(tmp_path / "a") == losses(tmp_path / "b")  # the timed inspection passes leave no trace
    # eval_steps = 0: one held-out evaluation at the end of each epoch but the last (that one is "after")
    assert [h["val"]["step"] for h in a.summary["eval_history"]] == [per_epoch]
    assert a.summary["eval_before"]["val"]["documents"] == 3
    assert b.summary["eval_before"]["val"]["documents"] == len(SAMPLE_SENTENCES[::4])

    # export_merged: a standalone model (no peft) that scores exactly like base + adapter
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qckit.evaluate import evaluate_lm

    merged_dir = tmp_path / "b" / "merged"
    assert b.merged_dir == merged_dir and (merged_dir / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    after = b.summary["eval_after"]["val"]
    again = evaluate_lm(
        merged, AutoTokenizer.from_pretrained(merged_dir), corpus[1], max_length=after["max_length"]
    )
    assert again.bits_per_byte == pytest.approx(after["bits_per_byte"], rel=1e-4)


def test_4bit_lora_trains_and_saves_a_clean_base_config(tmp_path, tiny_model_dir, corpus):
    pytest.importorskip("bitsandbytes")
    from qckit_builtins.adapters import FourBitAdapter

    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_train(
            _settings(out, tiny_model_dir, corpus, max_steps=2, inspect_data=False),
            WindowChunker(max_length=64, stride=8, min_length=8),
            [FourBitAdapter(), LoraAdapter()],
        )
    # the held-out evaluation runs in eval mode first; the 4-bit weights must stay differentiable after it
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    assert result.global_step == 2 and result.summary["adapters"] == ["4bit", "lora"]
    assert (out / "adapter_model.safetensors").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())


def test_a_run_shows_a_phase_result_only_once_it_got_there(tmp_path, tiny_model_dir, corpus):
    from qckit.train import TrainRun

    out = tmp_path / "out"
    chunker = WindowChunker(max_length=32, stride=0, min_length=8)
    run = TrainRun(_settings(out, tiny_model_dir, corpus, max_steps=1), chunker, [])
    with pytest.raises(AttributeError, match=r"call run\(\) first"):
        run.trainer  # noqa: B018
    checked = run.check()  # the phases can be run one by one, each given what it reads
    data = run.data(checked)
    assert len(data.train_ds) > 0 and data.suite.names == ["val"] and data.vocabulary() is None
    assert checked.resume.resume_from is None and not (out / "training_summary.json").exists()


def test_tokens_per_s_counts_trained_tokens_and_the_summary_names_the_context_count(
    tmp_path, tiny_model_dir, corpus
):
    import numpy as np

    from qckit.train import TrainRun

    settings = _settings(tmp_path / "out", tiny_model_dir, corpus, max_steps=5, save_steps=0, val_file="")
    run = TrainRun(settings, WindowChunker(max_length=32, stride=8, min_length=8), [LoraAdapter(r=4)])
    s = run.run().summary
    drawn = run.train_ds.epoch_order(0)[: run.plan.windows_drawn(5)]  # 5 steps x 4 windows, one epoch
    assert len(drawn) == 20 < len(run.train_ds)
    items = [run.train_ds[int(i)] for i in drawn]
    context = sum(int(item["attention_mask"].sum()) for item in items)
    trained = sum(int((item["labels"] != -100).sum()) for item in items)
    assert s["tokens_seen_this_run"] == context  # the Trainer's count: every window token
    assert s["trained_tokens_this_run"] == trained < context  # the overlap context is not trained
    assert np.isclose(s["tokens_per_s"] / s["context_tokens_per_s"], trained / context)
    # gradient checkpointing "auto" (the default) is off on the CPU, and the run says why
    assert s["gradient_checkpointing"].startswith("off (auto: on cpu")
    assert run.plan.inspection["gradient_checkpointing"] == s["gradient_checkpointing"]
    from qckit.models import is_gradient_checkpointing

    assert not is_gradient_checkpointing(run.model)
