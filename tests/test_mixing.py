"""Several training sources with token shares (replay): the schedule, the dataset, and a whole run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qckit.errors import RecipeError
from qckit.recipe import build_recipe
from qckit.testing import SAMPLE_SENTENCES, write_corpus
from qckit.train import TrainRun, TrainSettings
from qckit.train.mixing import MixedDataset, schedule
from qckit.train.packing import pack_texts
from qckit.train.settings import DataSource
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker

REPO = Path(__file__).resolve().parents[1]
FRENCH = REPO / "data" / "sample" / "standard_french.txt"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_prefix_of_the_schedule_keeps_the_token_shares():
    shares, means, windows = [0.8, 0.2], [60.0, 25.0], [100, 7]
    order = schedule(shares, means, windows, stop=[True, False])
    tokens = np.cumsum(np.stack([(order == s) * means[s] for s in range(2)], axis=1), axis=0)
    for prefix in range(1, len(order) + 1):
        got = tokens[prefix - 1] / tokens[prefix - 1].sum()
        # within one window of the larger source's tokens, at every point
        assert np.all(np.abs(got - shares) * tokens[prefix - 1].sum() <= max(means) + 1e-9)
    # the epoch ends when the "stop" source is used up; the small source repeats meanwhile
    assert (order == 0).sum() == 100 and (order == 1).sum() > 7


def test_epoch_end_rules():
    both_repeat = schedule([0.5, 0.5], [10.0, 10.0], [3, 9], stop=[False, False])
    assert (both_repeat == 1).sum() == 9 and (both_repeat == 0).sum() >= 8  # until both are drawn in full
    first_stops = schedule([0.5, 0.5], [10.0, 10.0], [3, 9], stop=[True, False])
    assert (first_stops == 0).sum() == 3 and (first_stops == 1).sum() == 3


@pytest.fixture(scope="module")
def two_sources(tiny_tokenizer):
    chunker = WindowChunker(max_length=32, stride=4, min_length=4)
    quebec = pack_texts(list(SAMPLE_SENTENCES) * 4, tiny_tokenizer, chunker)
    french = pack_texts(FRENCH.read_text(encoding="utf-8").splitlines()[:8], tiny_tokenizer, chunker)
    sources = [DataSource("qc.txt", 0.8, "stop"), DataSource("fr.txt", 0.2)]
    return sources, [quebec, french]


def test_mixed_dataset_orders_are_seeded_permutations_per_epoch(two_sources):
    sources, packed = two_sources
    mixed = MixedDataset(sources, packed, seed=42)
    first, again = mixed.epoch_order(0), MixedDataset(sources, packed, seed=42).epoch_order(0)
    assert np.array_equal(first, again)  # deterministic
    assert not np.array_equal(first, mixed.epoch_order(1))  # a new order each epoch …
    assert not np.array_equal(first, MixedDataset(sources, packed, seed=7).epoch_order(0))  # … and seed
    quebec = first[first < len(packed[0])]
    assert sorted(quebec.tolist()) == list(range(len(packed[0])))  # the "stop" source: each window once
    assert len(mixed) == len(first) and mixed.sampler().__len__() == len(first)
    sampler = mixed.sampler()
    sampler.set_epoch(1)
    assert list(sampler) == mixed.epoch_order(1).tolist()
    # items are padded to the longest window of all sources
    assert {tuple(mixed[int(i)]["input_ids"].shape) for i in first[:20]} == {(mixed.seq_length,)}


def test_realized_shares_stay_within_one_point(two_sources):
    sources, packed = two_sources
    mixed = MixedDataset(sources, packed, seed=1)
    longest = mixed.seq_length
    for windows in (5, 40, 120, len(mixed), 2 * len(mixed) + 17):
        rows = mixed.source_report(windows)
        assert sum(r["windows_drawn"] for r in rows) == windows
        total = sum(r["tokens_drawn"] for r in rows)
        for row in rows:
            error = abs(row["realized_share"] - row["requested_share"])
            assert error * total <= longest, (windows, row)  # at most about one window off, at any point
            if windows >= 120:  # so from ~100 windows on, within one percentage point
                assert error < 0.01, (windows, row)
    rows = mixed.source_report()
    assert [r["name"] for r in rows] == ["qc", "fr"] and "realized_share" not in rows[0]
    assert rows[0]["passes_per_epoch"] == 1.0 and rows[1]["passes_per_epoch"] > 1.0


def test_a_run_with_two_sources_reports_them(tmp_path, tiny_model_dir):
    quebec = write_corpus(tmp_path / "quebec.txt", list(SAMPLE_SENTENCES) * 3)
    val = write_corpus(tmp_path / "val.txt", SAMPLE_SENTENCES[::5])
    settings = TrainSettings(
        data=[DataSource(str(quebec), 0.8, "stop"), DataSource(str(FRENCH), 0.2, name="french")],
        val_file=str(val),
        output_dir=str(tmp_path / "out"),
        model=str(tiny_model_dir),
        max_steps=10,
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        save_steps=0,
        eval_steps=-1,
        inspect_samples=4,
        timing_warmup_steps=0,
    )
    from qckit.progress import RecordingObserver

    obs = RecordingObserver()
    run = TrainRun(
        settings, WindowChunker(max_length=64, stride=8, min_length=8), [LoraAdapter()], observer=obs
    )
    result = run.run()
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    rows = summary["sources"]
    assert [r["name"] for r in rows] == ["quebec", "french"]
    assert sum(r["windows_drawn"] for r in rows) == 10 * 4
    for row, share in zip(rows, (0.8, 0.2), strict=True):
        assert row["requested_share"] == pytest.approx(share)
        assert abs(row["realized_share"] - share) < 0.01
        assert row["documents"] > 0 and row["fertility"] > 1
    # the Trainer's own dataloader draws the windows in the mixed order the report counts
    order = run.train_ds.epoch_order(0)
    batch = next(iter(run.trainer.get_train_dataloader()))
    expected = torch.stack([run.train_ds[int(i)]["input_ids"] for i in order[:4]])
    assert torch.equal(batch["input_ids"].cpu(), expected)
    (inspection,) = [d for e, k, d in obs.events if e == "report" and k == "inspection"]
    assert [r["name"] for r in inspection["sources"]] == ["quebec", "french"]
    assert all(sample.startswith(("[quebec] ", "[french] ")) for sample in inspection["samples"])
    assert result.summary["train_file"] is None and result.global_step == 10


def test_recipes_list_sources_with_key_paths(tmp_path):
    recipe = build_recipe(
        {
            "train": {
                "data": [
                    {"path": "a.txt", "weight": 0.8, "exhausted": "stop"},
                    {"path": "b.txt", "weight": 0.2},
                ],
            }
        }
    )
    data = recipe.train.settings.data
    assert [(s.name, s.weight, s.exhausted) for s in data] == [("a", 0.8, "stop"), ("b", 0.2, "repeat")]
    assert recipe.data["train"]["data"][1] == {
        "path": "b.txt",
        "weight": 0.2,
        "exhausted": "repeat",
        "name": "b",
    }
    with pytest.raises(
        RecipeError, match=r"train\.data\[1\]\.weight: must be a finite number greater than 0"
    ):
        build_recipe({"train": {"data": [{"path": "a.txt"}, {"path": "b.txt", "weight": 0}]}})
    with pytest.raises(RecipeError, match=r"train\.data\[0\]\.exhausted: must be one of repeat, stop"):
        build_recipe({"train": {"data": [{"path": "a.txt", "exhausted": "loop"}]}})
    with pytest.raises(RecipeError, match=r"train\.data: set either train_file .* not both"):
        build_recipe({"train": {"train_file": "x.txt", "data": [{"path": "a.txt"}]}})
    with pytest.raises(RecipeError, match=r"train\.data: source names must differ"):
        build_recipe({"train": {"data": [{"path": "a/x.txt"}, {"path": "b/x.txt"}]}})
    # with a prepare stage, sources replace the prepared train file but its val file stays the default
    both = build_recipe(
        {
            "prepare": {"inputs": ["in.txt"], "output": "d", "merge": True},
            "train": {"data": [{"path": "a.txt"}]},
        }
    )
    assert both.train.settings.train_file == "" and both.train.settings.val_file == str(Path("d") / "val.txt")


def test_the_time_estimate_runs_on_a_one_window_repeat_source(tiny_tokenizer, tiny_model):
    from qckit.train.inspection import measure_pass_seconds

    chunker = WindowChunker(max_length=32, stride=0, min_length=4)
    quebec = pack_texts(list(SAMPLE_SENTENCES) * 2, tiny_tokenizer, chunker)
    one = pack_texts(["Une seule petite phrase pour une fenêtre."], tiny_tokenizer, chunker)
    assert len(one) == 1
    # a repeated one-window source draws more windows per epoch than the sources hold
    mixed = MixedDataset(
        [DataSource("qc.txt", 0.5, "stop"), DataSource("one.txt", 0.5)], [quebec, one], seed=0
    )
    assert len(mixed) > mixed.windows
    alone = MixedDataset([DataSource("one.txt", 1.0)], [one], seed=0)  # smaller than a batch
    for dataset in (mixed, alone):  # enough passes to reach the last draw of an epoch
        passes = len(dataset) // 4 + 1
        seconds = measure_pass_seconds(tiny_model, dataset, 4, passes, torch.device("cpu"), "fp32")
        assert seconds is not None and seconds > 0
