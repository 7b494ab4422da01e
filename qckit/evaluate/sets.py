"""Named eval sets: what a run measures before, during and after training, and the forgetting report.

An :class:`EvalSet` is an evaluator (an eval-set kind: ``bpb``, ``minimal_pairs``, ``choice`` or a
plugin's, see :class:`~qckit.components.Evaluator`) with its :class:`~qckit.components.EvalSetSettings`
(``name``, ``path``, ``role``, ``max_regression``). A recipe's sets are the validation file (named
``val``, kind ``bpb``, role ``target``, settings from ``train.eval_*``) followed by its
``[[train.eval]]`` tables. :class:`EvalSuite` loads every set once and measures a model on all of them:
``measure(model, step)`` returns ``{set name: numbers}``, each set's numbers carrying its ``kind``,
``protocol``, ``metric`` (the name of the headline number) and ``step``.

Before / after / delta of a set (:func:`outcome`) read the evaluator's ``metric``:

* ``delta = after − before``;
* ``change`` = ``delta / before`` for a ``relative`` metric (bits per byte), ``delta`` for a ``points``
  metric (accuracy);
* ``regression`` = ``change`` for a smaller-is-better metric and ``−change`` for a larger-is-better one
  (positive = worse), ``gain = −regression``;
* a ``retain`` set is *breached* when ``regression > max_regression`` (default 0.02: bits per byte
  more than 2 % higher, or accuracy more than 0.02 lower). ``target`` sets are never breached: their
  gain is what the run is for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qckit import defaults
from qckit.components import EvalSetSettings
from qckit.outputs import scalar_key
from qckit.progress import NullObserver, phase

__all__ = [
    "EvalSet",
    "EvalSuite",
    "validation_set",
    "plan_sets",
    "outcome",
    "breaches",
    "logged_scalars",
]


@dataclass
class EvalSet:
    """One named eval set: its settings and the evaluator that scores it."""

    settings: EvalSetSettings
    evaluator: Any

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def kind(self) -> str:
        return str(self.evaluator.name)

    @property
    def protocol(self) -> str:
        return str(getattr(self.evaluator, "protocol", "") or "")

    def describe(self) -> dict[str, Any]:
        """What a report needs to read this set's numbers: kind, protocol, role, metric and its direction."""
        ev = self.evaluator
        return {
            "path": self.settings.path,
            "kind": self.kind,
            "protocol": self.protocol,
            "role": self.settings.role,
            "metric": ev.metric,
            "higher_is_better": bool(ev.higher_is_better),
            "regression_unit": ev.regression,
            "max_regression": self.settings.allowed_regression,
        }


def validation_set(settings: Any, host: Any = None) -> EvalSet | None:
    """The default set of a train stage: ``val_file`` scored as the ``train.eval_*`` settings say, or
    ``None`` without a validation file. ``host`` defaults to the installed plugins."""
    if not settings.val_file:
        return None
    from qckit.host import PluginHost
    from qckit.recipe import build_component

    spec = build_component(
        host or PluginHost.from_entry_points(),
        "evaluator",
        defaults.validation_set_table(settings),
        "train.val_file",
        "[train] eval settings",
    )
    return EvalSet(spec.entry, spec.instance)


def plan_sets(plan: Any, host: Any = None) -> list[EvalSet]:
    """Every eval set of a recipe's train plan: the validation file's first, then ``[[train.eval]]``."""
    found = validation_set(plan.settings, host)
    return ([found] if found is not None else []) + [EvalSet(spec.entry, spec.instance) for spec in plan.eval]


class EvalSuite:
    """Measures a model on named eval sets (the train stage's held-out seam, and ``qckit evaluate``).

    Every set is loaded once here, so a missing or unusable file fails before training starts; a set's
    bad rows are reported to the context's observer as a warning. ``seconds`` adds up the time of every
    measurement.
    """

    def __init__(self, sets: Sequence[EvalSet], context: Any) -> None:
        self.sets = list(sets)
        self.context = context
        self.seconds = 0.0
        observer = getattr(context, "observer", None) or NullObserver()
        self.data: dict[str, Any] = {}
        for s in self.sets:
            data = s.evaluator.load(Path(s.settings.path), context.tokenizer)
            issues = getattr(data, "issues", None)
            if issues:
                observer.warn(
                    f"eval set {s.name}: {issues.total()} bad row(s) in {s.settings.path} skipped; "
                    f"first: {issues.first_example()}"
                )
            self.data[s.name] = data

    @property
    def enabled(self) -> bool:
        return bool(self.sets)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sets]

    def describe(self) -> dict[str, dict[str, Any]]:
        return {s.name: s.describe() for s in self.sets}

    def measure(self, model: Any, step: int) -> dict[str, dict[str, Any]]:
        """Each set's numbers for ``model`` at optimizer step ``step``: ``{name: {kind, protocol, …, step}}``.
        Safe during training: evaluators restore train/eval modes."""
        out: dict[str, dict[str, Any]] = {}
        observer = getattr(self.context, "observer", None) or NullObserver()
        for s in self.sets:
            started = time.perf_counter()
            with phase(observer, f"evaluate {s.name}"):
                numbers = s.evaluator.measure(model, self.data[s.name], self.context)
            self.seconds += time.perf_counter() - started
            out[s.name] = {
                "kind": s.kind,
                "protocol": s.protocol,
                "metric": s.evaluator.metric,
                **numbers,
                "step": step,
            }
        return out


def outcome(
    described: dict[str, dict[str, Any]],
    before: dict[str, dict[str, Any]] | None,
    after: dict[str, dict[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    """Per set: its description plus ``before``, ``after``, ``delta``, ``change``, ``regression``, ``gain``
    and ``breach`` (see the module docstring); the numbers are ``None`` where a side is missing."""
    out: dict[str, dict[str, Any]] = {}
    for name, info in described.items():
        metric = info["metric"]
        b = (before or {}).get(name, {}).get(metric)
        a = (after or {}).get(name, {}).get(metric)
        entry = {**info, "before": b, "after": a, "delta": None, "change": None, "regression": None}
        entry.update(gain=None, breach=False)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            delta = a - b
            relative = info["regression_unit"] == "relative"
            change = (delta / b if b else 0.0) if relative else delta
            regression = -change if info["higher_is_better"] else change
            allowed = info.get("max_regression")
            entry.update(
                delta=delta,
                change=change,
                regression=regression,
                gain=-regression,
                breach=info["role"] == "retain" and allowed is not None and regression > allowed,
            )
        out[name] = entry
    return out


def retain_limit(entry: dict[str, Any]) -> float | None:
    """The worst value a retain set's metric may reach without a breach (an :func:`outcome` entry: its
    ``before`` moved by ``max_regression``, relative or in points, in the worse direction); ``None`` for a
    target set, or without a ``before``."""
    before, allowed = entry.get("before"), entry.get("max_regression")
    if entry.get("role") != "retain" or not isinstance(before, (int, float)) or allowed is None:
        return None
    worse = -1.0 if entry.get("higher_is_better") else 1.0
    step = before * allowed if entry.get("regression_unit") == "relative" else allowed
    return float(before + worse * step)


def breaches(outcomes: dict[str, dict[str, Any]]) -> list[str]:
    """The retain sets whose regression is beyond what they allow."""
    return [name for name, entry in outcomes.items() if entry.get("breach")]


def logged_scalars(measurement: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The scalars of a measurement for the Trainer's log: every top-level float of each set except
    ``seconds``, under :func:`qckit.outputs.scalar_key`."""
    out: dict[str, float] = {}
    for name, numbers in measurement.items():
        protocol = numbers.get("protocol") or ""
        for key, value in numbers.items():
            if isinstance(value, float) and key != "seconds":
                out[scalar_key(name, protocol, key)] = value
    return out
