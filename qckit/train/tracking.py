"""Experiment tracking: TensorBoard, MLflow and Weights & Biases, chosen by ``report_to``.

Every tracker receives the same numbers, named as in TensorBoard: the Trainer's log entries
(``train/loss``, ``train/learning_rate``, ``train/grad_norm`` …) and the held-out numbers of every eval
set (``eval_<set>/<protocol>/<key>``, e.g. ``eval_val/document/bits_per_byte``, at step 0 for the
baseline, during and after training), at the optimizer step they belong to. MLflow and W&B also get
the run's settings as parameters, and MLflow the summary and the recipe as artifacts.

* ``tensorboard`` (default): event files in ``<output_dir>/logs``.
* ``mlflow``: the tracking URI of ``tracking_uri``; by default a local store in
  ``<output_dir>/mlruns`` (an SQLite database ``mlflow.db`` and an ``artifacts/`` folder; MLflow 3
  keeps its plain-file store in maintenance mode), experiment ``tracking_project``, one MLflow run per
  qckit run (a resumed run is a new MLflow run tagged ``resumed_from``). Needs ``qckit[tracking]``.
* ``wandb``: offline (files under ``<output_dir>/wandb``, ``wandb sync`` uploads them) unless the
  user configured W&B (``WANDB_MODE`` or ``WANDB_API_KEY`` set), project ``tracking_project``. Needs
  ``qckit[wandb]`` (its own extra, in ``all``).

Trackers are created on the main process only, before training begins, and closed when it ends
(``FINISHED``, or ``FAILED`` when training raised). No global state: MLflow is driven through an
explicit ``MlflowClient``; W&B through the run object ``wandb.init`` returns.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from qckit.errors import RecipeError
from qckit.outputs import MLRUNS_DIR, is_scalar_key

__all__ = [
    "check_trackers",
    "tracker_metrics",
    "MlflowTracker",
    "WandbTracker",
]

_PACKAGES = {
    "mlflow": ("mlflow", "pip install 'qckit[tracking]'"),
    "wandb": ("wandb", "pip install 'qckit[wandb]'"),
}


def check_trackers(report_to: Iterable[str]) -> None:
    """Refuse (``RecipeError`` at ``train.report_to``) a tracker whose package is not installed."""
    for name in report_to:
        if name in _PACKAGES:
            module, how = _PACKAGES[name]
            if importlib.util.find_spec(module) is None:
                raise RecipeError(
                    f"report_to {name!r} needs the {module} package: {how}", key="train.report_to"
                )


def tracker_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """Trainer log entries as tracker metrics, under the names TensorBoard shows: an eval set's number keeps
    its name (``eval_<set>/<protocol>/<key>``, :func:`qckit.outputs.scalar_key`), any other entry
    becomes ``train/<key>``; numbers only, no text."""
    out: dict[str, float] = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key if is_scalar_key(key) else "train/" + key] = float(value)
    return out


def flat_params(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as ``{"key.sub.0.x": "value"}`` strings (tracker parameters; MLflow allows no brackets)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flat_params(value, name))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flat_params(item, f"{name}.{i}"))
        else:
            out[name] = str(value)[:500]
    return out


class MlflowTracker:
    """One MLflow run, through an explicit client (see the module docstring)."""

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        params: dict[str, str],
        tags: dict[str, str],
        artifact_location: str | None = None,
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per request
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def log_samples(self, step: int, rows: list[dict[str, str]]) -> None:
        from qckit.train.samples import samples_markdown

        self.client.log_text(self.run_id, samples_markdown(rows), f"samples/step_{step:07d}.md")

    def finish(self, status: str, artifacts: Iterable[Path] = ()) -> None:
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker:
    """One W&B run, offline unless the user configured W&B (see the module docstring)."""

    name = "wandb"

    def __init__(self, project: str, run_name: str, directory: Path, params: dict[str, str]) -> None:
        import wandb

        configured = bool(os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"))
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            name=run_name,
            dir=str(directory),
            config=params,
            mode=None if configured else "offline",
            reinit="create_new",
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_samples(self, step: int, rows: list[dict[str, str]]) -> None:
        import wandb

        table = wandb.Table(columns=["prompt", "completion"], data=[[r["prompt"], r["text"]] for r in rows])
        self.run.log({"samples": table}, step=step)

    def finish(self, status: str, artifacts: Iterable[Path] = ()) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def make_trackers(
    report_to: Iterable[str],
    *,
    output_dir: Path,
    tracking_uri: str,
    project: str,
    run_name: str,
    params: dict[str, str],
    tags: dict[str, str],
) -> Iterator[Any]:
    """The MLflow / W&B trackers ``report_to`` asks for (TensorBoard is the Trainer's own callback),
    yielded one by one as each is built: the caller keeps (and so can close) every open run, also when
    building a later one raises."""
    for name in report_to:
        if name == "mlflow":
            store = output_dir / MLRUNS_DIR
            if not tracking_uri:
                store.mkdir(parents=True, exist_ok=True)
            yield MlflowTracker(
                tracking_uri or f"sqlite:///{(store / 'mlflow.db').resolve()}",
                project,
                run_name,
                params,
                tags,
                artifact_location=None if tracking_uri else (store / "artifacts").resolve().as_uri(),
            )
        elif name == "wandb":
            yield WandbTracker(project, run_name, output_dir, params)


def tracker_callback(trackers: list[Any]) -> Any:
    """A Trainer callback that sends every log entry to ``trackers`` at its optimizer step."""
    from transformers import TrainerCallback

    class TrackerCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            metrics = tracker_metrics(logs or {})
            if metrics:
                for tracker in trackers:
                    tracker.log(metrics, state.global_step)

    return TrackerCallback()
