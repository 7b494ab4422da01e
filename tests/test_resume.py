"""Resume and run identity: a run only ever continues its own complete checkpoints, exactly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qckit.errors import InputError, RecipeError, TrainingError
from qckit.progress import RecordingObserver
from qckit.recipe import build_recipe
from qckit.testing import SAMPLE_SENTENCES, Crash, crash_at_step, tiny_train_settings, write_corpus
from qckit.train import TrainSettings, run_train
from qckit.train.checkpoints import read_marker
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume_corpus")
    return (
        write_corpus(root / "train.txt", list(SAMPLE_SENTENCES) * 3),
        write_corpus(root / "val.txt", SAMPLE_SENTENCES[::4]),
    )


def _settings(out: Path, model: Path, corpus, **overrides) -> TrainSettings:
    return tiny_train_settings(
        corpus,
        out,
        model,
        **{"max_steps": 8, "save_steps": 4, "eval_steps": -1, "inspect_data": False, **overrides},
    )


def _chunker() -> WindowChunker:
    return WindowChunker(max_length=64, stride=8, min_length=8)


def _losses(out: Path) -> list[tuple[int, float]]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def _numbers(measurement: dict) -> dict:
    """A held-out measurement without its timing."""
    return {
        name: {k: v for k, v in numbers.items() if k != "seconds"} for name, numbers in measurement.items()
    }


def _warnings(obs: RecordingObserver) -> list[str]:
    return [data for event, _, data in obs.events if event == "warn"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir, corpus):
    out = tmp_path_factory.mktemp("straight") / "out"
    result = run_train(_settings(out, tiny_model_dir, corpus), _chunker(), [LoraAdapter()])
    return out, result


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, tiny_model_dir, corpus, uninterrupted):
    straight, reference = uninterrupted
    out = tmp_path / "out"
    settings = _settings(out, tiny_model_dir, corpus)
    with pytest.raises(Crash):  # dies during step 5, after checkpoint-4 was written
        run_train(settings, _chunker(), [LoraAdapter()], observer=crash_at_step(5))
    marker = read_marker(out / "checkpoint-4")
    assert marker is not None and marker["global_step"] == 4
    assert _numbers(marker["baseline"]) == _numbers(
        reference.summary["eval_before"]
    )  # the base model's numbers, recorded
    assert not (out / "training_summary.json").exists()

    # debris of a save killed half-way (kill -9 while writing): an empty directory and a truncated file
    (out / "checkpoint-6").mkdir()
    shutil.copytree(out / "checkpoint-4", out / "checkpoint-5")
    weights = out / "checkpoint-5" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    obs = RecordingObserver()
    resumed = run_train(
        _settings(out, tiny_model_dir, corpus, resume=True), _chunker(), [LoraAdapter()], observer=obs
    )
    warnings = _warnings(obs)
    assert any("checkpoint-6" in w and "incomplete" in w for w in warnings)
    assert any("checkpoint-5" in w and "adapter_model.safetensors is unreadable" in w for w in warnings)
    assert resumed.summary["resumed_from"].endswith("checkpoint-4")
    assert resumed.summary["tokens_seen"] > resumed.summary["tokens_seen_this_run"] > 0
    steps = [data for event, name, data in obs.events if event == "advance" and name == "train" and data[0]]
    assert steps[0] == (4, {"resumed": True}) and len(steps) == 1 + 4  # progress starts at the checkpoint
    assert not (out / "checkpoint-5").exists() and not (out / "checkpoint-6").exists()  # replaced, not mixed
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]

    # per-step losses and final adapter weights: those of the run that was never interrupted
    assert _losses(out) == _losses(straight) and len(_losses(out)) == 8
    mine, theirs = (
        load_file(out / "adapter_model.safetensors"),
        load_file(straight / "adapter_model.safetensors"),
    )
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # the true baseline: before/after compare against the base model, not against checkpoint-4
    assert _numbers(resumed.summary["eval_before"]) == _numbers(reference.summary["eval_before"])
    assert _numbers(resumed.summary["eval_after"]) == _numbers(reference.summary["eval_after"])
    assert resumed.summary["eval_delta"] == reference.summary["eval_delta"]


def test_checkpoints_of_another_run_are_refused_with_what_differs(
    tmp_path, tiny_model_dir, corpus, uninterrupted
):
    straight, _ = uninterrupted
    out = tmp_path / "out"
    shutil.copytree(straight, out)
    with pytest.raises(
        InputError,
        match=r"checkpoint-8: this checkpoint belongs to another run \(learning_rate 0\.005 → 0\.001\)",
    ):
        run_train(
            _settings(out, tiny_model_dir, corpus, learning_rate=1e-3, resume=True),
            _chunker(),
            [LoraAdapter()],
        )
    other = write_corpus(tmp_path / "other" / "train.txt", list(SAMPLE_SENTENCES[:20]) * 4)
    with pytest.raises(InputError, match=r"belongs to another run \(data\[0\]\.sha256 changed\)"):
        run_train(
            _settings(out, tiny_model_dir, (other, corpus[1]), resume=True), _chunker(), [LoraAdapter()]
        )
    with pytest.raises(InputError, match=r"belongs to another run \(.*adapters\[0\]\.r 16 → 8"):
        run_train(_settings(out, tiny_model_dir, corpus, resume=True), _chunker(), [LoraAdapter(r=8)])
    # output-only settings are not part of the identity: a resume with other logging settings is accepted
    done = run_train(
        _settings(out, tiny_model_dir, corpus, resume=True, logging_steps=3, inspect_samples=1),
        _chunker(),
        [LoraAdapter()],
    )
    assert done.summary["resumed_from"].endswith("checkpoint-8")


def test_a_fresh_run_over_old_checkpoints_stops_unless_told_to_overwrite(
    tmp_path, tiny_model_dir, corpus, uninterrupted
):
    straight, _ = uninterrupted
    out = tmp_path / "out"
    shutil.copytree(straight, out)
    with pytest.raises(
        RecipeError,
        match=r"train\.output_dir: .*checkpoint-8, checkpoint-4.*`qckit run RECIPE --resume`.*"
        r"train\.resume=true.*--overwrite-output-dir",
    ):
        run_train(_settings(out, tiny_model_dir, corpus, learning_rate=1e-3), _chunker(), [LoraAdapter()])
    (out / "logs" / "stale-event-file").write_text("old run")
    obs = RecordingObserver()
    result = run_train(
        _settings(
            out,
            tiny_model_dir,
            corpus,
            learning_rate=1e-3,
            max_steps=2,
            save_steps=0,
            overwrite_output_dir=True,
        ),
        _chunker(),
        [LoraAdapter()],
        observer=obs,
    )
    assert result.global_step == 2 and not list(out.glob("checkpoint-*"))
    assert not (out / "logs" / "stale-event-file").exists()
    assert any("overwrite_output_dir: removed checkpoint-8, checkpoint-4" in w for w in _warnings(obs))
    assert json.loads((out / "training_summary.json").read_text())["settings"]["learning_rate"] == 1e-3


def test_a_tied_model_with_new_tokens_resumes_exactly(tmp_path, tiny_tied_model_dir, corpus):
    """The tied embeddings trained in place (and grown by add_tokens) come back from the checkpoint's
    adapter, where they are stored once: the resumed run is the uninterrupted one."""

    def run(out: Path, observer=None, **overrides):
        lora = LoraAdapter(r=4, alpha=8, train_embeddings=True)
        settings = _settings(
            out, tiny_tied_model_dir, corpus, add_tokens=["pantoute", "magasiner"], **overrides
        )
        return run_train(settings, _chunker(), [lora], observer=observer)

    straight, out = tmp_path / "straight", tmp_path / "out"
    run(straight)
    with pytest.raises(Crash):  # dies during step 5, after checkpoint-4 was written
        run(out, observer=crash_at_step(5))
    checkpoint = load_file(out / "checkpoint-4" / "adapter_model.safetensors")
    assert [k for k in checkpoint if "lora_" not in k] == ["base_model.model.model.embed_tokens.weight"]
    resumed = run(out, resume=True)
    assert resumed.summary["resumed_from"].endswith("checkpoint-4")
    assert _losses(out) == _losses(straight) and len(_losses(out)) == 8
    mine, theirs = (
        load_file(out / "adapter_model.safetensors"),
        load_file(straight / "adapter_model.safetensors"),
    )
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_resume_with_only_broken_checkpoints_says_how_to_start_afresh(tmp_path, tiny_model_dir, corpus):
    out = tmp_path / "out"
    (out / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(
        InputError,
        match=r"no complete, loadable checkpoint to resume from \(checkpoint-3 incomplete\).*--overwrite-output-dir",
    ):
        run_train(_settings(out, tiny_model_dir, corpus, resume=True), _chunker(), [LoraAdapter()])


class PoisonAt(LoraAdapter):
    """LoRA, plus NaN injected on purpose at one training forward (``where="loss"``) or into one step's
    gradients (``where="grad"``): what a diverging run looks like to the train loop."""

    def __init__(self, step: int, where: str) -> None:
        super().__init__()
        self.step, self.where, self.forwards = step, where, 0

    def wrap_model(self, model, env):
        model = super().wrap_model(model, env)
        head = model.get_output_embeddings()

        def poison(module, args, output):
            if not module.training:
                return output
            self.forwards += 1
            if self.forwards != self.step:
                return output
            if self.where == "loss":
                return output * float("nan")
            output.register_hook(lambda grad: grad * float("nan"))
            return output

        head.register_forward_hook(poison)
        return model


@pytest.mark.parametrize(
    ("where", "message"), [("loss", "the training loss is nan"), ("grad", "the gradient norm is nan")]
)
def test_a_non_finite_step_stops_training_naming_the_step(tmp_path, tiny_model_dir, corpus, where, message):
    out = tmp_path / "out"
    settings = _settings(out, tiny_model_dir, corpus, save_steps=2)
    with pytest.raises(TrainingError, match=rf"optimizer step 5: {message} .*checkpoint-4, is kept") as err:
        run_train(settings, _chunker(), [PoisonAt(5, where)])
    assert err.value.exit_code == 7
    assert read_marker(out / "checkpoint-4") is not None and not (out / "checkpoint-5").exists()
    assert not (out / "training_summary.json").exists()
    weights = load_file(out / "checkpoint-4" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("weight_decay", math.inf),
        ("weight_decay", 2.0),
        ("max_grad_norm", math.inf),
        ("learning_rate", math.nan),
        ("warmup_ratio", math.nan),
        ("num_epochs", math.inf),
    ],
)
def test_non_finite_or_out_of_range_settings_are_recipe_errors(key, value):
    with pytest.raises(RecipeError, match=rf"^<recipe>:train\.{key}: must"):
        build_recipe({"train": {"train_file": "t.txt", key: value}})


def test_resume_and_overwrite_together_are_refused():
    with pytest.raises(RecipeError, match=r"train\.overwrite_output_dir: cannot be combined with resume"):
        build_recipe({"train": {"train_file": "t.txt", "resume": True, "overwrite_output_dir": True}})


def test_pickle_weights_are_refused_unless_allowed_and_remote_code_is_announced(
    tmp_path, tiny_model_dir, corpus
):
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "bin_model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "model.safetensors").unlink()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.save(model.state_dict(), model_dir / "pytorch_model.bin")
    settings = _settings(tmp_path / "a", model_dir, corpus, max_steps=1, save_steps=0, val_file=None)
    with pytest.raises(InputError, match=r"pickle-format files \(\*\.bin\).*allow_pickle_weights = true"):
        run_train(settings, _chunker(), [LoraAdapter()])
    assert not (tmp_path / "a").exists()  # refused before anything was written
    obs = RecordingObserver()
    allowed = _settings(
        tmp_path / "b",
        model_dir,
        corpus,
        max_steps=1,
        save_steps=0,
        val_file=None,
        allow_pickle_weights=True,
        trust_remote_code=True,
    )
    assert run_train(allowed, _chunker(), [LoraAdapter()], observer=obs).global_step == 1
    assert any(f"code shipped with the model {model_dir} will run" in w for w in _warnings(obs))


@pytest.mark.parametrize("evaluate_before", [True, False])
def test_resuming_a_checkpoint_without_baseline_says_so_for_recipe_eval_sets(
    tmp_path, tiny_model_dir, corpus, evaluate_before
):
    from qckit.evaluate.sets import plan_sets
    from qckit.train import TrainRun

    train, val = corpus
    recipe = build_recipe(
        {"train": {"train_file": str(train), "eval": [{"kind": "bpb", "name": "held", "path": str(val)}]}}
    )
    sets = plan_sets(recipe.train)
    assert [s.name for s in sets] == ["held"]  # no validation file: the [[train.eval]] set alone
    out = tmp_path / "out"
    first = _settings(out, tiny_model_dir, [train], max_steps=2, save_steps=2, evaluate_before=False)
    run_train(first, _chunker(), [LoraAdapter()], eval_sets=sets)
    assert read_marker(out / "checkpoint-2")["baseline"] is None
    obs = RecordingObserver()
    again = _settings(out, tiny_model_dir, [train], max_steps=2, resume=True, evaluate_before=evaluate_before)
    TrainRun(
        again, _chunker(), [LoraAdapter()], eval_sets=sets, observer=obs
    ).check()  # resume_point is in check
    said = [w for w in _warnings(obs) if "records no baseline held-out numbers" in w]
    assert len(said) == (1 if evaluate_before else 0)
