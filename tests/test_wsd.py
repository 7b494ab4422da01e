"""The warmup-stable-decay schedule: its learning-rate curve, the decay phase's own mix of sources, the
keys' validation and their part in the run's identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qckit.errors import InputError, QckitError, RecipeError
from qckit.progress import RecordingObserver
from qckit.recipe import build_recipe
from qckit.testing import SAMPLE_SENTENCES, Crash, crash_at_step, write_corpus
from qckit.train import TrainRun, TrainSettings
from qckit.train.checkpoints import choose_checkpoint, fingerprint, write_marker
from qckit.train.mixing import MixedDataset, decay_schedule, decay_shares
from qckit.train.packing import pack_texts
from qckit.train.settings import WSD_KEYS, DataSource
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker

REPO = Path(__file__).resolve().parents[1]
FRENCH = REPO / "data" / "sample" / "standard_french.txt"
WSD = "warmup_stable_decay"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def expected_lr(step: int, steps: int, warmup: int, decay: int, peak: float, floor: float) -> float:
    """The learning rate after ``step`` optimizer steps of a linear-warmup, linear-decay WSD run, written
    out independently of transformers: from floor x peak up to peak, flat, then down to floor x peak."""
    if step < warmup:
        return peak * (floor + (1 - floor) * step / warmup)
    if step < steps - decay:
        return peak
    if step < steps:
        return peak * (floor + (1 - floor) * (1 - (step - (steps - decay)) / decay))
    return peak * floor


# -- the learning-rate curve and the source switch in a real run -------------------------------------


@pytest.fixture(scope="module")
def wsd_run(tmp_path_factory, tiny_model_dir):
    """A 20-step LoRA run: 2 warmup, 13 stable, 5 decay steps (linear, down to 0.1 x 5e-3); during the
    decay, the french source is 3/4 of the tokens (1/4 before)."""
    root = tmp_path_factory.mktemp("wsd")
    quebec = write_corpus(root / "quebec.txt", list(SAMPLE_SENTENCES) * 3)
    settings = TrainSettings(
        data=[DataSource(str(quebec), 0.75), DataSource(str(FRENCH), 0.25, name="french")],
        output_dir=str(root / "out"),
        model=str(tiny_model_dir),
        max_steps=20,
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        lr_scheduler=WSD,
        warmup_ratio=0.1,
        decay_fraction=0.25,
        min_lr_ratio=0.1,
        decay_type="linear",
        decay_source="french",
        decay_share=0.75,
        logging_steps=1,
        save_steps=0,
        eval_steps=-1,
        timing_warmup_steps=0,
    )
    obs = RecordingObserver()
    run = TrainRun(
        settings, WindowChunker(max_length=64, stride=8, min_length=8), [LoraAdapter()], observer=obs
    )
    result = run.run()
    return run, result, obs


def test_the_learning_rate_warms_up_stays_flat_and_decays_to_its_floor(wsd_run):
    run, result, _ = wsd_run
    logged = {h["step"]: h["learning_rate"] for h in run.trainer.state.log_history if "learning_rate" in h}
    assert sorted(logged) == list(range(1, 21))
    for step, lr in logged.items():
        # the Trainer logs the rate step `step` trained with: the schedule's value after step - 1 steps
        assert lr == pytest.approx(expected_lr(step - 1, 20, 2, 5, 5e-3, 0.1), rel=1e-9, abs=0), step
    assert logged[1] == pytest.approx(5e-4, rel=1e-9)  # the warmup starts at min_lr_ratio x learning_rate
    assert len({logged[s] for s in range(3, 17)}) == 1  # the stable phase is flat (steps 3-16) …
    assert logged[16] == 5e-3 and logged[17] < logged[16]  # … and the decay's first rate is below it
    assert logged[20] == pytest.approx(5e-4 + 4.5e-3 / 5, rel=1e-9)  # the last step: one decay step above …
    # … the floor, which the schedule reaches at the end of the run
    assert run.trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(5e-4, rel=1e-9)
    assert result.global_step == 20


def test_the_decay_phase_draws_its_own_mix_in_the_trainers_order(wsd_run):
    run, result, obs = wsd_run
    ds = run.train_ds
    assert ds.decay_window == (15 * 4, 20 * 4)  # the windows of steps 16-20 (4 per step)
    rows = {r["name"]: r for r in result.summary["sources"]}
    assert rows["french"]["decay_share"] == pytest.approx(0.75)
    assert rows["quebec"]["decay_share"] == pytest.approx(0.25)
    assert rows["french"]["decay_windows"] + rows["quebec"]["decay_windows"] == 5 * 4
    assert abs(rows["french"]["decay_planned_share"] - 0.75) < 0.1  # 20 windows: about one window off
    # the Trainer's own dataloader yields the windows of the order with the decay phase
    loader = run.trainer.get_train_dataloader()
    order = ds.epoch_order(0)
    for b, batch in zip(range(20), loader, strict=False):
        expected = torch.stack([ds[int(i)]["input_ids"] for i in order[b * 4 : (b + 1) * 4]])
        assert torch.equal(batch["input_ids"].cpu(), expected), b
    (inspection,) = [d for e, k, d in obs.events if e == "report" and k == "inspection"]
    assert inspection["lr_schedule"] == (
        "warmup_stable_decay: 2 warmup, 13 stable, 5 decay steps (linear down to 0.1 x learning_rate); "
        "from step 16 on, french is 75 % of the tokens"
    )
    assert "decay_planned_share" in inspection["sources"][0]
    from rich.console import Console

    from qckit.report import inspection_report

    console = Console(width=160, record=True, force_terminal=False)
    console.print(inspection_report(inspection))
    text = console.export_text()
    assert "lr schedule" in text and "decay requested" in text and "decay planned" in text
    french = next(line for line in text.splitlines() if line.replace("│", " ").split()[:1] == ["french"])
    assert "75.0" in french.split()  # its requested share of the decay phase (the table's shares are in %)


def test_a_trainer_counting_other_steps_than_the_decay_was_placed_in_is_refused(tmp_path, tiny_model):
    from transformers import TrainingArguments

    from qckit.train.trainer import QckitTrainer

    settings = TrainSettings(lr_scheduler=WSD)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        lr_scheduler_type=WSD,
        lr_scheduler_kwargs=settings.scheduler_kwargs(20),
    )
    trainer = QckitTrainer(model=tiny_model, args=args, planned_steps=20)
    trainer.create_optimizer()
    with pytest.raises(QckitError, match=r"counts 21 optimizer steps where qckit planned 20"):
        trainer.create_scheduler(21)
    assert trainer.create_scheduler(20) is trainer.lr_scheduler is not None  # the planned count is accepted


def test_a_run_resumed_in_the_decay_phase_equals_the_uninterrupted_run(tmp_path, tiny_model_dir):
    quebec = write_corpus(tmp_path / "quebec.txt", list(SAMPLE_SENTENCES) * 3)

    def settings(out: Path, **changes) -> TrainSettings:
        return TrainSettings(
            data=[DataSource(str(quebec), 0.8), DataSource(str(FRENCH), 0.2, name="french")],
            output_dir=str(out),
            model=str(tiny_model_dir),
            max_steps=8,
            batch_size=4,
            gradient_accumulation_steps=1,
            learning_rate=5e-3,
            lr_scheduler=WSD,
            decay_fraction=0.5,  # steps 5-8, drawing french at 0.9
            decay_source="french",
            decay_share=0.9,
            logging_steps=1,
            save_steps=6,
            eval_steps=-1,
            inspect_data=False,
            **changes,
        )

    def history(out: Path) -> list[tuple[int, float, float]]:
        logs = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
        return [(h["step"], h["loss"], h["learning_rate"]) for h in logs if "loss" in h]

    chunker = WindowChunker(max_length=64, stride=8, min_length=8)
    TrainRun(settings(tmp_path / "straight"), chunker, [LoraAdapter()]).run()
    with pytest.raises(Crash):  # dies during step 7, in the decay phase, after checkpoint-6
        TrainRun(settings(tmp_path / "out"), chunker, [LoraAdapter()], observer=crash_at_step(7)).run()
    resumed = TrainRun(settings(tmp_path / "out", resume=True), chunker, [LoraAdapter()]).run()
    assert resumed.summary["resumed_from"].endswith("checkpoint-6")
    assert history(tmp_path / "out") == history(tmp_path / "straight") and len(history(tmp_path / "out")) == 8


# -- the decay phase's mix, on packed sources --------------------------------------------------------


@pytest.fixture(scope="module")
def two_sources(tiny_tokenizer):
    chunker = WindowChunker(max_length=32, stride=4, min_length=4)
    quebec = pack_texts(list(SAMPLE_SENTENCES) * 4, tiny_tokenizer, chunker)
    french = pack_texts(FRENCH.read_text(encoding="utf-8").splitlines()[:8], tiny_tokenizer, chunker)
    sources = [DataSource("qc.txt", 0.8, "stop"), DataSource("fr.txt", 0.2)]
    return sources, [quebec, french]


def _token_shares(ds: MixedDataset, ids: np.ndarray) -> np.ndarray:
    """Cumulative trained tokens per source over the global window ids ``ids``, one row per prefix."""
    src = np.searchsorted(ds.offsets, ids, side="right") - 1
    tokens = np.zeros((len(ids), len(ds.sources)))
    for s, p in enumerate(ds.packed):
        where = src == s
        tokens[where, s] = np.asarray(p.trained)[ids[where] - ds.offsets[s]]
    return np.cumsum(tokens, axis=0)


def test_decay_shares_give_the_named_source_its_share_and_split_the_rest_by_weight():
    assert decay_shares([0.6, 0.3, 0.1], 0, 0.5) == pytest.approx([0.5, 0.375, 0.125])
    assert decay_shares([0.6, 0.3, 0.1], 2, 1.0) == pytest.approx([0.0, 0.0, 1.0])
    only = decay_schedule([0.0, 1.0], [10.0, 10.0], 7)
    assert only.tolist() == [1] * 7  # a source of share 0 is never drawn


def test_before_the_decay_the_mix_is_unchanged_and_after_it_follows_the_decay_shares(two_sources):
    sources, packed = two_sources
    plain = MixedDataset(sources, packed, seed=3)
    mixed = MixedDataset(sources, packed, seed=3, decay=("fr", 0.6))
    length = len(mixed)
    start, end = length - 30, 3 * length  # the decay begins near the end of epoch 0, runs two epochs on
    mixed.set_decay(start, end)
    assert len(mixed) == len(plain)  # an epoch keeps its length
    run = np.concatenate([mixed.epoch_order(e) for e in range(3)])
    before = np.concatenate([plain.epoch_order(e) for e in range(3)])
    assert np.array_equal(run[:start], before[:start])
    assert not np.array_equal(run[start:], before[start:])
    # every prefix of the decay phase, across the epoch boundaries, within one window of its shares (in the
    # schedule's unit: mean trained tokens per window) …
    src = np.searchsorted(mixed.offsets, run[start:end], side="right") - 1
    planned = np.cumsum(np.stack([(src == s) * mixed.means[s] for s in range(2)], axis=1), axis=0)
    error = np.abs(planned[:, 1] / planned.sum(axis=1) - 0.6) * planned.sum(axis=1)
    assert np.all(error <= max(mixed.means) + 1e-9)
    # … and in trained tokens, within one percentage point over the phase
    tokens = _token_shares(mixed, run[start:end])
    got = tokens[-1, 1] / tokens[-1].sum()
    assert abs(got - 0.6) < 0.01
    # each epoch still draws every source's windows as seeded passes: no window twice within a pass
    for e in range(3):
        order = mixed.epoch_order(e)
        fr = order[order >= mixed.offsets[1]] - mixed.offsets[1]
        n = mixed.window_counts[1]
        for p in range(0, len(fr), n):
            assert len(set(fr[p : p + n].tolist())) == len(fr[p : p + n])
    # the sampler the Trainer iterates gives the same order
    sampler = mixed.sampler()
    sampler.set_epoch(1)
    assert list(sampler) == mixed.epoch_order(1).tolist()
    rows = {r["name"]: r for r in mixed.source_report(end)}
    assert rows["fr"]["decay_share"] == pytest.approx(0.6) and rows["qc"]["decay_share"] == pytest.approx(0.4)
    assert rows["fr"]["decay_windows"] + rows["qc"]["decay_windows"] == end - start
    assert rows["fr"]["decay_planned_share"] == pytest.approx(got)
    assert rows["qc"]["planned_share"] == plain.source_report()[0]["planned_share"]  # the main mix's plan


def test_a_decay_share_of_one_draws_only_the_named_source(two_sources):
    sources, packed = two_sources
    mixed = MixedDataset(sources, packed, seed=0, decay=("qc", 1.0))
    mixed.set_decay(10, 200)
    order = np.concatenate([mixed.epoch_order(e) for e in range(-(-200 // len(mixed)))])
    assert np.all(order[10:200] < mixed.offsets[1])  # the "stop" source: drawn again past its windows
    assert np.any(order[:10] >= mixed.offsets[1])


# -- keys, validation and identity --------------------------------------------------------------------


def _recipe(**train):
    data = [{"path": "qc.txt"}, {"path": "wiki_fr.txt", "weight": 0.3}]
    return build_recipe({"train": {"data": data, **train}})


def test_wsd_keys_are_read_from_recipes():
    settings = _recipe(
        lr_scheduler=WSD, decay_fraction=0.2, min_lr_ratio=0.05, decay_source="wiki_fr", decay_share=0.6
    ).train.settings
    assert (settings.decay_fraction, settings.min_lr_ratio, settings.decay_source, settings.decay_share) == (
        0.2,
        0.05,
        "wiki_fr",
        0.6,
    )
    # 30 steps: ceil(0.03 x 30) = 1 warmup step, 20 % = 6 decay steps
    assert settings.warmup_steps(30) == 1 and settings.decay_steps(30) == 6
    # 7 % of 100 is 7 decay steps, not 8 from 0.07 x 100 = 7.000000000000001 in floating point
    assert TrainSettings(lr_scheduler=WSD, decay_fraction=0.07).decay_steps(100) == 7
    assert settings.scheduler_kwargs(30) == {
        "num_decay_steps": 6,
        "decay_type": "1-sqrt",
        "min_lr_ratio": 0.05,
    }
    tight = TrainSettings(lr_scheduler=WSD, warmup_ratio=0.5, decay_fraction=0.5)
    assert tight.decay_steps(3) == 1  # never more than the steps left after the warmup
    assert TrainSettings().decay_steps(30) == 0 and TrainSettings().scheduler_kwargs(30) == {}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            {"decay_fraction": 0.2},
            r'train\.decay_fraction: applies to lr_scheduler = "warmup_stable_decay" only',
        ),
        ({"decay_source": "wiki_fr"}, r"train\.decay_source: applies to lr_scheduler = "),
        ({"lr_scheduler": "wsd"}, r"train\.lr_scheduler: must be one of .*warmup_stable_decay"),
        ({"lr_scheduler": WSD, "decay_fraction": 0}, r"train\.decay_fraction: must be in \(0, 1\], got 0"),
        ({"lr_scheduler": WSD, "min_lr_ratio": 1.5}, r"train\.min_lr_ratio: must be in \[0, 1\]"),
        (
            {"lr_scheduler": WSD, "decay_type": "exp"},
            r"train\.decay_type: must be one of linear, cosine, 1-sqrt",
        ),
        (
            {"lr_scheduler": WSD, "warmup_ratio": 0.5, "decay_fraction": 0.6},
            r"train\.decay_fraction: warmup_ratio \+ decay_fraction must be at most 1",
        ),
        ({"lr_scheduler": WSD, "decay_share": 0.3}, r"train\.decay_share: applies with decay_source only"),
        (
            {"lr_scheduler": WSD, "decay_source": "wiki", "decay_share": 0.3},
            r"train\.decay_source: no \[\[train\.data\]\] source named 'wiki'; did you mean 'wiki_fr'\?",
        ),
        (
            {"lr_scheduler": WSD, "decay_source": "wiki_fr", "decay_share": 0},
            r"train\.decay_share: must be in \(0, 1\]",
        ),
    ],
)
def test_wsd_keys_are_checked_with_their_key_path(train, message):
    with pytest.raises(RecipeError, match=message):
        _recipe(**train)


def test_a_decay_source_needs_several_sources():
    with pytest.raises(RecipeError, match=r"train\.decay_source: needs several \[\[train\.data\]\] sources"):
        build_recipe({"train": {"train_file": "qc.txt", "lr_scheduler": WSD, "decay_source": "qc"}})


def test_another_schedule_or_decay_mix_refuses_to_resume(tmp_path, tiny_model_dir):
    qc = write_corpus(tmp_path / "qc.txt", SAMPLE_SENTENCES)
    fr = write_corpus(tmp_path / "fr.txt", SAMPLE_SENTENCES[::2])
    base = dict(
        data=[DataSource(str(qc)), DataSource(str(fr))],
        model=str(tiny_model_dir),
        lr_scheduler=WSD,
        decay_source="fr",
    )

    def identity(**changes):
        settings = TrainSettings(**{**base, **changes})
        return fingerprint(settings, settings.sources(), {}, [], [])

    checkpoint = tmp_path / "out" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    write_marker(checkpoint, identity(), None, 4)
    for changes, differs in (
        ({"decay_fraction": 0.2}, "decay_fraction 0.1 → 0.2"),
        ({"decay_share": 0.9}, "decay_share 0.5 → 0.9"),
        ({"min_lr_ratio": 0.1}, "min_lr_ratio 0.0 → 0.1"),
        ({"decay_type": "linear"}, "decay_type '1-sqrt' → 'linear'"),
        ({"decay_source": "", "lr_scheduler": "cosine"}, "lr_scheduler"),
    ):
        with pytest.raises(
            InputError, match=rf"checkpoint-4: this checkpoint belongs to another run \(.*{differs}"
        ):
            choose_checkpoint(tmp_path / "out", identity(**changes), allow_pickle=False, warn=lambda _: None)
    # under another schedule the keys (at their defaults) stay out: checkpoints written before they
    # existed still resume
    cosine = identity(decay_source="", lr_scheduler="cosine")["settings"]
    assert not set(WSD_KEYS) & set(cosine) and set(WSD_KEYS) <= set(identity()["settings"])


def test_the_summary_records_the_decay_phase(wsd_run):
    run, result, _ = wsd_run
    summary = json.loads((run.output_dir / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["settings"]["lr_scheduler"] == WSD and summary["settings"]["decay_source"] == "french"
    assert [r["decay_windows"] for r in summary["sources"]] == [
        r["decay_windows"] for r in result.summary["sources"]
    ]
