"""Choose the trade-off after training: how much of the learned delta to keep, from which checkpoint.

WiSE-FT (Wortsman et al., CVPR 2022) interpolates between the base and the tuned weights: a fraction
``λ`` of the learned delta often gains most of the target while losing less of what the base knew. For a
LoRA run the *adapter strength* is that fraction: the low-rank update ``B·A`` is scaled by ``λ`` (DoRA,
rsLoRA alike: the scale multiplies ``B·A`` inside their formulas), and the tensors the run trained in
full (the embeddings and the output head, a tied pair as its one matrix; trained biases) are interpolated,
``W_base + λ (W_trained − W_base)``. For a full fine-tune every tensor is interpolated so.

:func:`select_run` measures every eval set of the run on each kept checkpoint (and the final weights)
at each strength, plus the base model, and picks the point with the largest gain on the first *target*
set whose *retain* sets all stay within their thresholds (ties: the smaller strength, then the earlier
checkpoint). Evaluations are cached per (weights, strength, eval sets) in the run folder, so a second
selection with more strengths only measures the new points. :func:`write_selected` writes the chosen
point as an adapter peft loads (``B`` scaled by ``λ``, full tensors interpolated) or a full model folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qckit._fs import atomic_write_json, replace_dir, staging_dir
from qckit.errors import InputError, QckitError
from qckit.outputs import (
    CARD_NAME,
    CHECKPOINT_PREFIX,
    RECIPE_NAME,
    SELECTION_CACHE_NAME,
    SELECTION_RECORD,
    SUMMARY_NAME,
)
from qckit.progress import NullObserver, Observer, phase
from qckit.train.settings import DEFAULT_STRENGTHS

__all__ = ["Candidate", "candidates", "record_selection", "select_run", "write_selected"]

_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LORA_FACTORS = re.compile(r"\.lora_(A|B|magnitude_vector|embedding_A|embedding_B)\b")


@dataclass(frozen=True)
class Candidate:
    """Weights a selection can start from: a kept checkpoint or the run's final weights."""

    name: str  # "checkpoint-15", "final"
    path: Path
    step: int
    digest: str  # sha256 of the weights file: two candidates with the same weights are one
    is_adapter: bool


def _weights_file(directory: Path) -> Path | None:
    for name in (_ADAPTER_WEIGHTS, "model.safetensors"):
        if (directory / name).is_file():
            return directory / name
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def candidates(run_dir: Path, which: str = "all") -> list[Candidate]:
    """The run's complete checkpoints (with qckit's marker) in step order, then its final weights; weights
    identical to an earlier candidate's are left out. ``which = "final"``: the final weights alone."""
    from qckit.train.checkpoints import read_marker

    found: list[Candidate] = []
    if which == "all":
        steps = []
        for path in run_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            marker = read_marker(path)
            weights = _weights_file(path)
            if marker is not None and weights is not None and path.is_dir() and not path.is_symlink():
                steps.append((int(marker.get("global_step", 0)), path, weights))
        for step, path, weights in sorted(steps):
            found.append(Candidate(path.name, path, step, _sha256(weights), weights.name == _ADAPTER_WEIGHTS))
    final = _weights_file(run_dir)
    if final is None:
        raise InputError(run_dir, "holds no trained weights (adapter_model.safetensors or model.safetensors)")
    summary = _summary(run_dir)
    digest = _sha256(final)
    if digest not in {c.digest for c in found}:
        step = int(summary.get("global_step", 0))
        found.append(Candidate("final", run_dir, step, digest, final.name == _ADAPTER_WEIGHTS))
    return found


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a finished qckit run ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "not a training summary")
    return data


# -- strength ------------------------------------------------------------------------------------


class _Strength:
    """Sets a loaded model to strength ``λ`` of one candidate (see the module docstring)."""

    def __init__(self, model: Any, base_state: dict[str, Any], is_adapter: bool) -> None:
        import torch

        self.model = model
        self.is_adapter = is_adapter
        self.scalings: list[tuple[Any, str, float]] = []
        self.full: list[tuple[Any, Any, Any]] = []  # (parameter, base value, trained value)
        with torch.no_grad():
            if is_adapter:
                from peft.tuners.lora import LoraLayer

                for module in model.modules():
                    if isinstance(module, LoraLayer):
                        for name, value in module.scaling.items():
                            self.scalings.append((module, name, float(value)))
                # the tensors trained in full (modules_to_save copies, a tied model's embeddings trained in
                # place, biases), each against the base's tensor of its name, as write_selected reads them (a
                # grown matrix has none there and stays as trained); parameters, so tied ones come once
                for name, param in model.named_parameters():
                    if _LORA_FACTORS.search(name) is None:
                        base = base_state.get(_base_name(name))
                        if base is not None and base.shape == param.shape and not torch.equal(base, param):
                            self.full.append((param, base, param.detach().clone()))
            else:
                for name, param in model.named_parameters():
                    base = base_state.get(name)
                    if base is not None and base.shape == param.shape:
                        self.full.append((param, base, param.detach().clone()))

    def set(self, strength: float) -> None:
        import torch

        for module, name, value in self.scalings:
            module.scaling[name] = value * strength
        with torch.no_grad():
            for param, base, trained in self.full:
                param.copy_(base + strength * (trained - base))


# -- selection -----------------------------------------------------------------------------------


def _point_key(candidate: Candidate, strength: float, eval_identity: str) -> str:
    return f"{candidate.digest[:16]}:{strength:g}:{eval_identity[:16]}"


def _with_intervals(
    outcomes: dict[str, dict[str, Any]], numbers: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each set's ``change_ci95``: the 95 % interval of its change, from the interval the evaluator gives for
    the point's headline metric (``<metric>_ci95``: Wilson for accuracies, a bootstrap over documents for
    bits per byte), the base model's number taken as fixed; ``None`` where the evaluator gives none."""
    for name, entry in outcomes.items():
        interval = numbers.get(name, {}).get(f"{entry['metric']}_ci95")
        before = entry.get("before")
        entry["change_ci95"] = None
        if isinstance(interval, (list, tuple)) and len(interval) == 2 and isinstance(before, (int, float)):
            if entry["regression_unit"] == "relative":
                ends = [(value - before) / before if before else 0.0 for value in interval]
            else:
                ends = [value - before for value in interval]
            entry["change_ci95"] = sorted(ends)
    return outcomes


def _primary_target(outcomes: dict[str, dict[str, Any]]) -> str:
    """The set whose gain a selection maximises: the first target set (the validation split's, when any)."""
    return next(name for name, entry in outcomes.items() if entry.get("role") == "target")


def select_run(
    run_dir: str | Path,
    *,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    checkpoints: str = "all",
    observer: Observer | None = None,
    max_length: int = 0,
    batch_size: int = 0,
    device: Any = None,
    host: Any = None,
) -> dict[str, Any]:
    """Measure the run in ``run_dir`` on its eval sets at every (candidate, strength) and choose a point.

    Returns the selection record (also saved in ``training_summary.json`` under ``selection``): the base
    model's numbers, every point's numbers and outcome (before = the base model), the frontier, the chosen
    point, the number of evaluations run and cached, and the seconds spent.
    """
    from qckit.evaluate.loglik import EvalContext
    from qckit.evaluate.sets import EvalSuite, breaches, outcome, plan_sets
    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model, tokenizer_source
    from qckit.recipe import load_recipe
    from qckit.train.checkpoints import digest, evaluation_identity

    started = time.perf_counter()
    obs = observer or NullObserver()
    run_dir = Path(run_dir)
    strengths = sorted({float(s) for s in strengths})
    if not strengths or any(not math.isfinite(s) or s < 0 for s in strengths):
        raise QckitError(f"strengths must be numbers of 0 or more, got {list(strengths)}")
    summary = _summary(run_dir)
    recipe_path = run_dir / RECIPE_NAME
    if not recipe_path.is_file():
        raise InputError(recipe_path, "missing: the run's recipe names its eval sets")
    recipe = load_recipe(recipe_path, host=host)
    if recipe.train is None:
        raise InputError(recipe_path, "has no [train] stage")
    sets = plan_sets(recipe.train, host)
    if not any(s.settings.role == "target" for s in sets):
        raise InputError(recipe_path, "names no target eval set: nothing to gain, nothing to choose")
    found = candidates(run_dir, checkpoints)
    settings = recipe.train.settings
    base_spec = str(summary.get("model") or settings.model)
    source = resolve_model(base_spec)
    tokenizer = load_tokenizer(
        tokenizer_source(source, run_dir), trust_remote_code=settings.trust_remote_code
    )
    window = getattr(recipe.train.chunker.instance, "max_length", 0) or 1024
    context = EvalContext(
        tokenizer,
        max_length=max_length or settings.eval_max_length or window,
        batch_size=batch_size or settings.eval_batch_size or settings.batch_size,
        device=device,
        observer=obs,
    )
    suite = EvalSuite(sets, context)
    # what makes two measurements of the same weights comparable: the sets, the base, the scoring window
    identity = digest(
        {"eval_sets": evaluation_identity(sets), "base": base_spec, "max_length": context.max_length}
    )
    cache_path = run_dir / SELECTION_CACHE_NAME
    cache = _read_cache(cache_path)
    measured = cached = 0

    def measure(model: Any, key: str) -> dict[str, Any]:
        nonlocal measured, cached
        if key in cache:
            cached += 1
            return cache[key]
        numbers = suite.measure(model, 0)
        for entry in numbers.values():
            entry.pop("step", None)
        cache[key] = numbers
        measured += 1
        atomic_write_json(cache_path, cache)
        return numbers

    with phase(obs, f"loading the base model {base_spec}"):
        base_model = load_model(source, trust_remote_code=settings.trust_remote_code)
        if device is not None:
            base_model.to(device)
    base_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    with phase(obs, "measuring the base model"):
        base_numbers = measure(base_model, f"base:{identity[:16]}")
    described = suite.describe()
    points: list[dict[str, Any]] = []
    del base_model
    for candidate in found:
        with phase(obs, f"loading {candidate.name}"):
            if candidate.is_adapter:  # on a fresh base: the adapter's layers and tensors go into it
                model = load_adapter(
                    load_model(source, trust_remote_code=settings.trust_remote_code), candidate.path
                )
            else:
                model = load_model(
                    resolve_model(str(candidate.path)), trust_remote_code=settings.trust_remote_code
                )
            if device is not None:
                model.to(device)  # the base's state (and so every interpolation) is on the device too
            strength = _Strength(model, base_state, candidate.is_adapter)
        for value in strengths:
            strength.set(value)
            with phase(obs, f"measuring {candidate.name} at strength {value:g}"):
                numbers = measure(model, _point_key(candidate, value, identity))
            outcomes = _with_intervals(outcome(described, base_numbers, numbers), numbers)
            target = _primary_target(outcomes)
            points.append(
                {
                    "checkpoint": candidate.name,
                    "step": candidate.step,
                    "strength": value,
                    "target": target,
                    "target_gain": outcomes[target]["gain"],
                    "breaches": breaches(outcomes),
                    "sets": outcomes,
                }
            )
        del model, strength
    allowed = [p for p in points if not p["breaches"] and p["target_gain"] is not None]
    order = {c.name: i for i, c in enumerate(found)}
    chosen = (
        max(allowed, key=lambda p: (p["target_gain"], -p["strength"], -order[p["checkpoint"]]))
        if allowed
        else None
    )
    return {
        "strengths": strengths,
        "checkpoints": [c.name for c in found],
        "base": base_numbers,
        "points": points,
        "frontier": _frontier(points),
        "chosen": None
        if chosen is None
        else {k: chosen[k] for k in ("checkpoint", "step", "strength", "target_gain")},
        "evaluations": measured,
        "cached_evaluations": cached,
        "seconds": time.perf_counter() - started,
    }


def _frontier(points: list[dict[str, Any]]) -> list[int]:
    """Indexes of the points no other point beats on the target gain and on every retain set at once."""

    def scores(p: dict[str, Any]) -> list[float]:
        retain = [-(e["regression"] or 0.0) for e in p["sets"].values() if e.get("role") == "retain"]
        return [p["target_gain"] if p["target_gain"] is not None else -math.inf, *retain]

    all_scores = [scores(p) for p in points]
    keep = []
    for i, mine in enumerate(all_scores):
        beaten = any(
            all(o >= m for o, m in zip(other, mine, strict=True))
            and any(o > m for o, m in zip(other, mine, strict=True))
            for j, other in enumerate(all_scores)
            if j != i
        )
        if not beaten:
            keep.append(i)
    return keep


def _read_cache(path: Path) -> dict[str, Any]:
    if path.is_symlink() or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged cache is measured again
    return data if isinstance(data, dict) else {}


# -- writing the chosen point ---------------------------------------------------------------------


def write_selected(run_dir: str | Path, checkpoint: str, strength: float, output: str | Path) -> Path:
    """Write the point (``checkpoint`` of the run at ``strength``) into ``output``, complete or not at all:
    an adapter folder peft loads (LoRA ``B`` factors scaled, full tensors interpolated with the base) or,
    for a full fine-tune, a model folder with the interpolated weights."""
    import torch
    from safetensors.torch import load_file, save_file

    run_dir = Path(run_dir)
    found = {c.name: c for c in [*candidates(run_dir, "all"), *candidates(run_dir, "final")]}
    if checkpoint not in found:
        raise InputError(run_dir, f"has no complete {checkpoint} (it has {', '.join(found)})")
    candidate = found[checkpoint]
    output = Path(output)
    _check_selected_output(run_dir, output)
    with staging_dir(output) as tmp:
        for item in candidate.path.iterdir():
            if (
                item.is_file()
                and not item.is_symlink()
                and item.suffix in (".json", ".jinja", ".txt", ".model")
            ):
                shutil.copy2(item, tmp / item.name)
        if candidate.is_adapter:
            tensors = load_file(str(candidate.path / _ADAPTER_WEIGHTS))
            base = _base_tensors(run_dir, tensors)
            scaled = {}
            for key, value in tensors.items():
                factor = _LORA_FACTORS.search(key)
                if factor is not None and factor.group(1) in ("B", "embedding_B"):
                    scaled[key] = value * strength
                elif factor is not None:
                    scaled[key] = value
                elif key in base:
                    scaled[key] = base[key] + strength * (value - base[key])
                else:
                    scaled[key] = value
            save_file({k: v.contiguous() for k, v in scaled.items()}, str(tmp / _ADAPTER_WEIGHTS))
            from qckit.export import run_base
            from qckit.models import set_adapter_base

            base_reference = run_base(run_dir)  # a checkpoint's copy names the path the run loaded
            if base_reference:
                set_adapter_base(tmp, base_reference)
        else:
            from qckit.models import load_merged

            summary = _summary(run_dir)
            tuned, tokenizer, _ = load_merged(str(candidate.path))
            base_model, _, _ = load_merged(str(summary["model"]))
            base_state = base_model.state_dict()
            with torch.no_grad():  # parameters, not the state dict: tied weights are interpolated once
                for name, param in tuned.named_parameters():
                    if name in base_state and base_state[name].shape == param.shape:
                        param.copy_(base_state[name] + strength * (param - base_state[name]))
            tuned.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        atomic_write_json(
            tmp / SELECTION_RECORD,
            {"run": str(run_dir), "checkpoint": checkpoint, "strength": strength},
        )
        replace_dir(tmp, output)
    return output


def _check_selected_output(run_dir: Path, output: Path) -> None:
    """Refuse an output that would destroy something else: the run folder, a folder holding it, or an
    existing path that is not an earlier selection."""
    run, out = run_dir.resolve(), output.resolve()
    if out == run or out in run.parents:
        raise InputError(output, f"holds the run {run_dir}: choose a new directory for the selected point")
    if output.is_symlink() or (output.exists() and not (output / SELECTION_RECORD).is_file()):
        raise InputError(output, "exists and is not an earlier selection: choose a new directory")


def clear_selected(run_dir: Path, output: Path) -> bool:
    """Remove an earlier selection at ``output`` (when a new selection writes none); whether there was one."""
    from qckit._fs import remove_entry

    if output.is_dir() and not output.is_symlink() and (output / SELECTION_RECORD).is_file():
        remove_entry(output.parent, output.name)
        return True
    return False


def _base_tensors(run_dir: Path, adapter_tensors: dict[str, Any]) -> dict[str, Any]:
    """The base model's values of the adapter's full tensors (embeddings, head, biases), by adapter key."""
    full = [k for k in adapter_tensors if _LORA_FACTORS.search(k) is None]
    if not full:
        return {}
    from qckit.models import load_model, resolve_model

    summary = _summary(run_dir)
    base = load_model(resolve_model(str(summary["model"]))).state_dict()
    out = {}
    for key in full:
        value = base.get(_base_name(key))
        if value is not None and value.shape == adapter_tensors[key].shape:
            out[key] = value.to(adapter_tensors[key].dtype)
    return out


def _base_name(name: str) -> str:
    """The base model's name of an adapter tensor: a key of the adapter file or a loaded model's parameter."""
    name = re.sub(r"\.modules_to_save\.[^.]+", "", name.removeprefix("base_model.model."))
    return name.replace(".base_layer", "")


def record_selection(
    run_dir: str | Path, selection: dict[str, Any], written: Path | None, observer: Observer | None = None
) -> None:
    """Keep ``selection`` in the run's ``training_summary.json`` (``selection``, with where the chosen point
    was written) and write the model card again, which then names the chosen strength -- unless the card
    was edited since qckit wrote it (``model_card.sha256`` in the summary): then it is left as it is, with a
    warning to ``observer``."""
    import hashlib

    from qckit._fs import atomic_write_text
    from qckit.model_card import model_card

    run_dir = Path(run_dir)
    summary = _summary(run_dir)
    summary["selection"] = {**selection, "written_to": str(written) if written else None}
    card_path = run_dir / CARD_NAME
    recorded = (summary.get("model_card") or {}).get("sha256")
    edited = card_path.is_file() and recorded not in (
        None,
        hashlib.sha256(card_path.read_bytes()).hexdigest(),
    )
    if not edited:
        recipe = run_dir / RECIPE_NAME
        recipe_text = recipe.read_text(encoding="utf-8") if recipe.is_file() else None
        is_peft = (run_dir / "adapter_config.json").is_file()
        card = model_card(summary, recipe_text, is_peft=is_peft)
        summary["model_card"] = {
            "file": CARD_NAME,
            "sha256": hashlib.sha256(card.encode("utf-8")).hexdigest(),
        }
        atomic_write_text(card_path, card)
    elif observer is not None:
        observer.warn(
            f"{card_path} was edited since qckit wrote it: left as it is (the selection is in the summary)"
        )
    atomic_write_json(run_dir / SUMMARY_NAME, summary)
