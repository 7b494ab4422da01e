"""Mixed precision that trains: fp32 trainable weights under bf16/fp16 autocast, fp16 overflow skipped
and counted, ``auto`` choosing bf16 only where it is native.

The CPU has no fp16 loss scaler in accelerate (it creates one for GPUs only), so the fp16 runs give the
Trainer torch's CPU ``GradScaler`` and fp16 autocast by hand after ``build_trainer``; everything else
(loading, wrapping, upcasting, ``TrainingArguments(fp16=True)``, the Trainer loop, qckit's step
accounting and summary) is the run's own. bf16 is likewise forced past ``choose_precision`` (this CPU
may lack native bf16): the Trainer autocasts to bf16 on the CPU itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from qckit.errors import HardwareError, TrainingError
from qckit.hardware import Environment, choose_precision, precision_warnings
from qckit.models import upcast_trainable
from qckit.progress import RecordingObserver
from qckit.testing import SAMPLE_SENTENCES, crash_at_step, tiny_train_settings, write_corpus
from qckit.train import TrainRun
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: each several tokens of the tiny tokenizer, each in the corpus
NEW_WORDS = ["après", "aller", "Saint", "Jean"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return [write_corpus(tmp_path_factory.mktemp("prec") / "train.txt", list(SAMPLE_SENTENCES) * 2)]


class OverflowAt(LoraAdapter):
    """LoRA with ``train_embeddings``, plus an infinite gradient injected at the listed training forwards
    (1-based; one forward per optimizer step here): what an fp16 overflow looks like to the scaler."""

    def __init__(self, *forwards: int, **kwargs) -> None:
        super().__init__(train_embeddings=True, **kwargs)
        self.poisoned, self.forwards = set(forwards), 0

    def wrap_model(self, model, env):
        model = super().wrap_model(model, env)

        def poison(module, args, output):
            if module.training:
                self.forwards += 1
                if self.forwards in self.poisoned:
                    output.register_hook(lambda grad: grad * float("inf"))
            return output

        model.get_output_embeddings().register_forward_hook(poison)
        return model


def _run(out: Path, model: Path, corpus, adapter, precision: str, observer=None, **overrides):
    """A whole run, phase by phase, in ``precision`` (fp16: with torch's CPU ``GradScaler``)."""
    settings = tiny_train_settings(
        corpus,
        out,
        model,
        **{"max_steps": 6, "eval_steps": -1, "inspect_data": False, "report_to": [], **overrides},
    )
    obs = observer or RecordingObserver()
    run = TrainRun(settings, WindowChunker(max_length=64, stride=8, min_length=8), [adapter], observer=obs)
    checked = dataclasses.replace(run.check(), precision=precision)
    data = run.data(checked)
    loaded = run.load_model(checked, data)
    initial = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if p.requires_grad}
    arguments = run.arguments(checked, loaded)
    plan = run.inspect(checked, data, loaded, arguments)
    built = run.build_trainer(checked, data, loaded, arguments, plan)
    if precision == "fp16":  # what accelerate sets up on a GPU: fp16 autocast and a loss scaler
        built.trainer.accelerator.native_amp = True
        built.trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    output = run.train(built, checked.resume)
    result = run.summary(checked, data, loaded, arguments, plan, built, output)
    return result, built.trainer, data, initial, obs


def _new_rows(trainer, data, initial) -> tuple[torch.Tensor, torch.Tensor]:
    """The input-embedding rows of the added tokens: before training and after."""
    ids = [t.id for t in data.vocab_growth.added]
    name, param = next(
        (n, p)
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and "embed_tokens" in n and ".modules_to_save." in n
    )
    return initial[name][ids].float(), param.detach()[ids].float()


def test_bf16_trains_new_token_rows_in_fp32(tmp_path, tiny_model_dir, corpus):
    lr = 1e-5  # AdamW moves each entry by about lr per step: far below a bf16 weight's rounding step
    result, trainer, data, initial, _ = _run(
        tmp_path / "out", tiny_model_dir, corpus, LoraAdapter(train_embeddings=True, bias="all"), "bf16",
        learning_rate=lr, add_tokens=NEW_WORDS, max_steps=4, sample_prompts=["On a"], sample_max_new_tokens=4,
    )  # fmt: skip
    assert trainer.accelerator.native_amp and trainer.accelerator.mixed_precision == "bf16"
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    frozen = [p for p in trainer.model.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in frozen if p.is_floating_point())
    assert data.vocab_growth.added
    before, after = _new_rows(trainer, data, initial)
    seen = (after != before).any(dim=1)  # the rows of the new tokens the drawn windows held
    assert int(seen.sum()) >= 2
    changed = after[seen] != before[seen]
    assert changed.float().mean().item() > 0.9  # nearly every entry of those rows took the updates
    # a bf16 weight near 0.02 moves only in steps of 2^-14 (6e-5), six times lr: updates this small vanish
    assert (after[seen] - before[seen]).abs().mean().item() > 0.1 * lr
    # the same optimizer on the rows held in bf16 (the old behaviour) rounds nearly every update away
    rows = before.bfloat16().requires_grad_()
    optimizer = torch.optim.AdamW([rows], lr=lr, weight_decay=0.0)
    for _ in range(4):
        rows.grad = torch.randn_like(rows)
        optimizer.step()
    assert (rows.detach() != before.bfloat16()).float().mean().item() < 0.2
    assert result.summary["skipped_steps"] == 0
    assert result.summary["samples"]  # generation outside the Trainer: fp32 head on a bf16 base, autocast


def test_fp16_overflow_is_skipped_and_counted(tmp_path, tiny_model_dir, corpus):
    result, trainer, data, initial, obs = _run(
        tmp_path / "out", tiny_model_dir, corpus, OverflowAt(3), "fp16", add_tokens=NEW_WORDS
    )
    assert trainer.scales_loss and trainer.accelerator.mixed_precision == "fp16"
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
    summary = result.summary
    assert summary["global_step"] == 6 and summary["skipped_steps"] == 1
    assert any("the loss scaler skipped 1 of 6 optimizer steps" in w for w in summary["warnings"])
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["skipped_steps"] for h in logged] == [0, 0, 1, 1, 1, 1]
    assert logged[2]["loss_scale"] == logged[1]["loss_scale"] / 2  # the skip halved the scale
    before, after = _new_rows(trainer, data, initial)
    assert torch.isfinite(after).all() and (after != before).any(dim=1).sum() >= 2


def test_a_resumed_fp16_run_goes_on_counting_skipped_steps(tmp_path, tiny_model_dir, corpus):
    out, overrides = tmp_path / "out", {"save_steps": 4}
    with pytest.raises(KeyboardInterrupt):  # skips step 2, checkpoint-4, dies at step 5
        _run(
            out,
            tiny_model_dir,
            corpus,
            OverflowAt(2),
            "fp16",
            observer=crash_at_step(5, KeyboardInterrupt),
            **overrides,
        )
    # the resumed process counts its own forwards: its 2nd is step 6
    result, *_ = _run(out, tiny_model_dir, corpus, OverflowAt(2), "fp16", resume=True, **overrides)
    assert result.summary["resumed_from"] and result.summary["skipped_steps"] == 2


def test_fp16_overflow_in_a_row_stops_the_run_naming_the_step(tmp_path, tiny_model_dir, corpus):
    out = tmp_path / "out"
    with pytest.raises(TrainingError, match=r"optimizer step 4: the gradients overflowed fp16 at 2 optimizer "
                       r"steps in a row .*max_skipped_steps = 2\)") as err:  # fmt: skip
        # step 2 is applied and resets the count: 3 and 4 are the two in a row
        _run(out, tiny_model_dir, corpus, OverflowAt(1, 3, 4), "fp16", max_skipped_steps=2)
    assert err.value.exit_code == 7
    assert not (out / "training_summary.json").exists()


def test_bf16_non_finite_gradient_still_stops_the_run(tmp_path, tiny_model_dir, corpus):
    with pytest.raises(
        TrainingError, match=r"optimizer step 2: the gradient norm is (inf|nan) \(non-finite\)"
    ):
        _run(tmp_path / "out", tiny_model_dir, corpus, OverflowAt(2), "bf16")


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_upcast_trainable_casts_only_what_trains(request, tied: bool):
    from transformers import AutoModelForCausalLM

    model_dir = request.getfixturevalue("tiny_tied_model_dir" if tied else "tiny_model_dir")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16)
    model = LoraAdapter(train_embeddings=True, bias="all").wrap_model(model, Environment())
    half = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype == torch.float16]
    # peft's trainable copies, or a tied model's own matrix trained in place, keep the base's dtype
    assert any(("embed_tokens.weight" if tied else "modules_to_save") in n for n in half)
    assert upcast_trainable(model) == len(half)
    inner = model.get_base_model()
    assert (inner.lm_head.weight is inner.model.embed_tokens.weight) == tied  # still one matrix, in fp32
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert all(p.dtype == torch.float16 for p in model.parameters() if not p.requires_grad)
    ids = torch.tensor([[0, 5, 9, 14]])
    with torch.no_grad():  # a plain forward (evaluation) runs under the wrapped autocast: no dtype clash
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    assert upcast_trainable(model) == 0


T4 = Environment(device="cuda", gpu_count=1, gpu_names=("Tesla T4",), bf16_emulated=True, fp16_supported=True)
H100 = Environment(
    device="cuda", gpu_count=1, gpu_names=("NVIDIA H100",), bf16_supported=True, fp16_supported=True
)


def test_auto_precision_chooses_bf16_only_where_native():
    assert choose_precision(H100, "auto") == "bf16" and precision_warnings(H100, "bf16") == []
    assert choose_precision(T4, "auto") == "fp16"
    assert choose_precision(T4, "bf16") == "bf16"  # allowed, with a warning
    (warning,) = precision_warnings(T4, "bf16")
    assert "Tesla T4 has no native bf16 and emulates it" in warning and "fp16" in warning
    assert precision_warnings(T4, "fp16") == []
    assert "bf16 emulated" in T4.describe()
    no_bf16 = dataclasses.replace(T4, bf16_emulated=False)
    with pytest.raises(HardwareError, match="'bf16' is not supported by Tesla T4"):
        choose_precision(no_bf16, "bf16")


def test_the_run_warns_about_emulated_bf16(tmp_path, tiny_model_dir, corpus, monkeypatch):
    import qckit.hardware

    monkeypatch.setattr(qckit.hardware, "detect_environment", lambda device="auto": T4)  # a fabricated T4
    obs = RecordingObserver()
    settings = tiny_train_settings(corpus, tmp_path / "out", tiny_model_dir, precision="bf16")
    run = TrainRun(
        settings, WindowChunker(max_length=64, stride=8, min_length=8), [LoraAdapter()], observer=obs
    )
    assert run.check().precision == "bf16"
    assert any("emulates it" in data for event, _, data in obs.events if event == "warn")
    auto = TrainRun(dataclasses.replace(settings, precision="auto"), run.chunker, [LoraAdapter()])
    assert auto.check().precision == "fp16"
