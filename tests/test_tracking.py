"""Experiment tracking: held-out numbers and training logs reach MLflow (a real local store, offline)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from qckit.errors import RecipeError, TrainingError
from qckit.recipe import build_recipe
from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus
from qckit.train import TrainSettings, run_train
from qckit.train.tracking import tracker_metrics
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker

mlflow = pytest.importorskip("mlflow")  # qckit[tracking], part of qckit[all]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tracking_corpus")
    return (
        write_corpus(root / "train.txt", list(SAMPLE_SENTENCES) * 2),
        write_corpus(root / "val.txt", SAMPLE_SENTENCES[::5]),
    )


def _settings(out: Path, model: Path, corpus, **overrides) -> TrainSettings:
    defaults = {
        "max_steps": 6,
        "eval_steps": 3,
        "inspect_data": False,
        "report_to": ["tensorboard", "mlflow"],
    }
    return tiny_train_settings(corpus, out, model, **{**defaults, **overrides})


def _client(out: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlruns' / 'mlflow.db').resolve()}")


def test_mlflow_gets_the_held_out_sets_the_losses_and_the_settings(tmp_path, tiny_model_dir, corpus):
    out = tmp_path / "out"
    result = run_train(
        _settings(out, tiny_model_dir, corpus), WindowChunker(max_length=64, stride=8), [LoraAdapter()]
    )
    client = _client(out)
    experiment = client.get_experiment_by_name("qckit")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "out"
    bpb = client.get_metric_history(run.info.run_id, "eval_val/document/bits_per_byte")
    assert [m.step for m in bpb] == [0, 3, 6]  # baseline, during, after
    assert bpb[0].value == pytest.approx(result.summary["eval_before"]["val"]["bits_per_byte"])
    assert bpb[-1].value == pytest.approx(result.summary["eval_after"]["val"]["bits_per_byte"])
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2, 3, 4, 5, 6]
    assert run.data.params["settings.learning_rate"] == "0.005"
    assert run.data.params["adapters.0.use"] == "lora" and run.data.tags["model"] == str(tiny_model_dir)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_summary.json", "recipe.toml"} & artifacts == {
        "training_summary.json"
    }  # no recipe text here
    assert list((out / "logs").glob("events.out.tfevents.*"))  # TensorBoard alongside


def test_sample_completions_at_each_evaluation_reach_the_report_the_trackers_and_the_summary(
    tmp_path, tiny_model_dir, corpus
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from qckit.generate import GenerationSettings, complete, load_for_generation
    from qckit.progress import RecordingObserver

    out = tmp_path / "out"
    prompts = ["Le chat", "Y fait | frette"]
    obs = RecordingObserver()
    settings = _settings(out, tiny_model_dir, corpus, sample_prompts=prompts, sample_max_new_tokens=4)
    result = run_train(settings, WindowChunker(max_length=64, stride=8), [LoraAdapter()], observer=obs)
    samples = result.summary["samples"]
    assert [(s["step"], s["when"]) for s in samples] == [(0, "before"), (3, "during"), (6, "after")]
    assert [r["prompt"] for r in samples[-1]["completions"]] == prompts
    assert [data for event, kind, data in obs.events if event == "report" and kind == "samples"] == samples
    # the last completions are the trained model's own: the saved run folder writes the same
    trained = load_for_generation(str(out))
    again = complete(trained.model, trained.tokenizer, prompts, GenerationSettings(max_new_tokens=4))
    assert [r["text"] for r in samples[-1]["completions"]] == again

    client = _client(out)
    (run,) = client.search_runs([client.get_experiment_by_name("qckit").experiment_id])
    logged = sorted(a.path for a in client.list_artifacts(run.info.run_id, "samples"))
    assert logged == ["samples/step_0000000.md", "samples/step_0000003.md", "samples/step_0000006.md"]
    assert "README.md" in {a.path for a in client.list_artifacts(run.info.run_id)}  # the model card
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    assert [e.step for e in events.Tensors("samples/text_summary")] == [0, 3, 6]


class NanAtStep(LoraAdapter):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.seen = step, 0

    def wrap_model(self, model, env):
        model = super().wrap_model(model, env)

        def poison(module, args, output):
            if module.training:
                self.seen += 1
                if self.seen == self.step:
                    return output * float("nan")
            return output

        model.get_output_embeddings().register_forward_hook(poison)
        return model


def test_a_failed_run_is_marked_failed(tmp_path, tiny_model_dir, corpus):
    out = tmp_path / "out"
    with pytest.raises(TrainingError):
        run_train(
            _settings(out, tiny_model_dir, corpus, report_to=["mlflow"]),
            WindowChunker(max_length=64, stride=8),
            [NanAtStep(2)],
        )
    client = _client(out)
    (run,) = client.search_runs([client.get_experiment_by_name("qckit").experiment_id])
    assert run.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_val/document/loss")] == [0]
    assert not (out / "logs").exists()  # report_to without tensorboard writes no event files


def test_trackers_are_checked_before_anything_runs(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match=r"train\.report_to: unknown tracker 'comet'"):
        build_recipe({"train": {"train_file": "t.txt", "report_to": ["comet"]}})
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an environment without wandb looks like to imports
    settings = TrainSettings(
        train_file=str(tmp_path / "t.txt"), output_dir=str(tmp_path / "o"), report_to=["wandb"]
    )
    with pytest.raises(
        RecipeError,
        match=r"train\.report_to: report_to 'wandb' needs the wandb package: pip install 'qckit\[wandb\]'",
    ):
        run_train(settings, WindowChunker(), [])
    assert not (tmp_path / "o").exists()


def test_log_entries_are_named_like_tensorboard():
    logs = {
        "loss": 2.5,
        "learning_rate": 1e-3,
        "eval_val/document/bits_per_byte": 1.9,
        "epoch": 0.5,
        "note": "x",
        "flag": True,
    }
    assert tracker_metrics(logs) == {
        "train/loss": 2.5,
        "train/learning_rate": 1e-3,
        "eval_val/document/bits_per_byte": 1.9,
        "train/epoch": 0.5,
    }


def test_wandb_runs_offline_and_gets_the_same_names(tmp_path, tiny_model_dir, corpus, monkeypatch):
    pytest.importorskip("wandb")  # qckit[wandb], part of qckit[all]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "out"
    run_train(
        _settings(
            out,
            tiny_model_dir,
            corpus,
            report_to=["wandb"],
            max_steps=2,
            eval_steps=-1,
            sample_prompts=["Le"],
        ),
        WindowChunker(max_length=64, stride=8),
        [LoraAdapter()],
    )
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")  # offline: nothing left the machine
    keys = [k.encode() for k in ("train/loss", "train/learning_rate", "eval_val/document/bits_per_byte")]
    # W&B's own service process writes the file; on a busy machine it may still be flushing when finish()
    # returns, so wait for it (bounded) before reading
    deadline = time.monotonic() + 60
    records = run_file.read_bytes()  # protobuf records: the history keys are stored as UTF-8 strings
    while not all(key in records for key in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
        records = run_file.read_bytes()
    for key in keys:
        assert key in records, key
    assert list(run_file.parent.glob("files/media/table/samples_*.table.json"))  # the sample completions


class BrokenTracker:
    """A second tracker whose constructor fails (a W&B that cannot start)."""

    def __init__(self, *args, **kwargs) -> None:
        raise OSError("wandb could not start")


def test_a_tracker_that_fails_to_start_leaves_no_run_open(tmp_path, tiny_model_dir, corpus, monkeypatch):
    import qckit.train.tracking as tracking

    monkeypatch.setattr(tracking, "WandbTracker", BrokenTracker)
    monkeypatch.delitem(tracking._PACKAGES, "wandb")  # installed or not, the fake stands in for it
    out = tmp_path / "out"
    with pytest.raises(OSError, match="wandb could not start"):
        run_train(
            _settings(out, tiny_model_dir, corpus, report_to=["mlflow", "wandb"]),
            WindowChunker(max_length=64, stride=8),
            [LoraAdapter()],
        )
    client = _client(out)
    (run,) = client.search_runs([client.get_experiment_by_name("qckit").experiment_id])
    assert run.info.status == "FAILED"  # the MLflow run built first was closed, not left RUNNING


def test_a_finish_that_raises_does_not_hide_the_error_that_ended_the_run(
    tmp_path, tiny_model_dir, corpus, monkeypatch
):
    from qckit.progress import RecordingObserver
    from qckit.train.tracking import MlflowTracker

    def finish(self, status, artifacts=()):
        raise ConnectionError("tracking server gone")

    monkeypatch.setattr(MlflowTracker, "finish", finish)
    obs = RecordingObserver()
    with pytest.raises(TrainingError):
        run_train(
            _settings(tmp_path / "out", tiny_model_dir, corpus, report_to=["mlflow"]),
            WindowChunker(max_length=64, stride=8),
            [NanAtStep(2)],
            observer=obs,
        )
    warnings = [m for event, _, m in obs.events if event == "warn" and "could not end its run" in m]
    assert warnings == [
        "MlflowTracker: could not end its run as FAILED (ConnectionError: tracking server gone)"
    ]
