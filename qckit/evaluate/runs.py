"""Reading finished runs back: their eval sets before/after and the curves over steps (``qckit compare``).

A run directory is a train stage's ``output_dir``: ``training_summary.json`` holds ``eval_sets`` (each
set's description and before / after / change / breach, see :func:`qckit.evaluate.sets.outcome`) and
every measurement (``eval_before``, ``eval_history``, ``eval_after``: with the accuracies' 95 % intervals),
``trainer_state.json`` the log history in which each measurement of a set is a row with ``step`` and
its numbers under :func:`qckit.outputs.scalar_key`, and the training loss (rows with ``loss``);
``recipe.toml`` the recipe, whose ``name`` names the run.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qckit.errors import InputError
from qckit.evaluate.sets import breaches
from qckit.outputs import RECIPE_NAME, SUMMARY_NAME, TRAINER_STATE_NAME, scalar_key

__all__ = ["Run", "read_run"]


@dataclass
class Run:
    """One finished run: its eval sets (``outcome`` entries), each set's metric over steps (with its 95 %
    interval where the metric has one: ``bands``), the training loss over steps, and the recipe's name."""

    path: Path
    sets: dict[str, dict[str, Any]]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    bands: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    loss: list[tuple[int, float]] = field(default_factory=list)
    recipe_name: str = ""

    @property
    def name(self) -> str:
        """The run directory as it was given (``runs/a/model``): run directories are often all ``model``."""
        return str(self.path)

    @property
    def breaches(self) -> list[str]:
        return breaches(self.sets)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read: {exc}") from None


def read_run(run_dir: str | Path) -> Run:
    """Read a run directory. Raises :class:`~qckit.errors.InputError` when it holds no summary with eval sets."""
    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(path, "not a run directory" if path.exists() else "run directory not found")
    summary_path = path / SUMMARY_NAME
    if not summary_path.is_file():
        raise InputError(path, f"not a finished run: no {SUMMARY_NAME}")
    summary = _read_json(summary_path)
    sets = summary.get("eval_sets") if isinstance(summary, dict) else None
    if not isinstance(sets, dict) or not sets:
        raise InputError(
            summary_path, "no eval sets in this summary (a run without val_file or [[train.eval]])"
        )
    run = Run(path, sets, recipe_name=_recipe_name(path / RECIPE_NAME))
    state_path = path / TRAINER_STATE_NAME
    history = _read_json(state_path).get("log_history", []) if state_path.is_file() else []
    history = [row for row in history if isinstance(row, dict) and "step" in row]
    run.loss = sorted(
        {int(row["step"]): float(row["loss"]) for row in history if _is_number(row.get("loss"))}.items()
    )
    sides = (summary.get("eval_before"), *(summary.get("eval_history") or []), summary.get("eval_after"))
    measured = [m for m in sides if isinstance(m, dict)]
    for name, entry in sets.items():
        metric = entry["metric"]
        key = scalar_key(name, entry.get("protocol") or "", metric)
        points = [(int(row["step"]), float(row[key])) for row in history if _is_number(row.get(key))]
        numbers = [m[name] for m in measured if isinstance(m.get(name), dict) and "step" in m[name]]
        if not points:  # no trainer_state.json: the summary's measurements
            points = [(int(n["step"]), float(n[metric])) for n in numbers if _is_number(n.get(metric))]
        run.curves[name] = sorted(dict(points).items())
        intervals = {
            int(n["step"]): (float(n[f"{metric}_ci95"][0]), float(n[f"{metric}_ci95"][1]))
            for n in numbers
            if isinstance(n.get(f"{metric}_ci95"), list) and len(n[f"{metric}_ci95"]) == 2
        }
        run.bands[name] = [(step, lo, hi) for step, (lo, hi) in sorted(intervals.items())]
    return run


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _recipe_name(path: Path) -> str:
    """The ``name`` of a run's saved recipe, or ``""`` (no recipe saved, none named, unreadable)."""
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    return name.strip() if isinstance(name, str) else ""
