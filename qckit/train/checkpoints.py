"""Run identity and checkpoints: a run only ever resumes its own, complete work.

* The **fingerprint** of a run (:func:`fingerprint`) is what decides the trained weights: the resolved
  settings minus the output-only keys (:data:`NOT_IDENTITY`) and, unless the schedule is
  warmup_stable_decay, minus its keys, the chunker's and adapters' settings,
  each training source's name, weight, ``exhausted`` and content hash, the base model's identity
  (its config and the headers of its weight files, never its path) and the eval sets' identity
  (:func:`evaluation_identity`: the baseline must stay comparable), and the batch geometry
  (:func:`batch_geometry`: processes, windows per micro-batch, accumulation, the global batch), which
  decides the epoch position of a step: a resume with another geometry would repeat or skip windows,
  so it is refused naming both.
* Every ``checkpoint-N/`` gets ``qckit_run.json`` (:data:`MARKER`) once the Trainer has written
  everything else into it: the fingerprint and the baseline held-out numbers. A checkpoint without
  it was interrupted while saving (or was not written by qckit).
* :func:`choose_checkpoint` picks, newest first, the first checkpoint that is complete, of the same
  run and loadable (weights with a readable safetensors header, optimizer, scheduler and trainer state
  present; the RNG state is optional, as the Trainer treats it); incomplete or unloadable ones are skipped with a warning naming them; one of
  another run is refused with what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qckit._fs import atomic_write_json, file_sha256, jsonable, path_error, refuse_link, remove_entry
from qckit.errors import InputError, RecipeError
from qckit.outputs import (
    CACHE_DIR,
    CHECKPOINT_PREFIX,
    MARKER,
    RUN_OUTPUT_DIRS,
    RUN_OUTPUTS,
    SUMMARY_NAME,
    TRAINER_STATE_NAME,
)
from qckit.train.settings import WSD, WSD_KEYS

__all__ = [
    "NOT_IDENTITY",
    "batch_geometry",
    "check_output_dir",
    "choose_checkpoint",
    "checkpoints",
    "clear_output_dir",
    "component_settings",
    "differences",
    "evaluation_identity",
    "fingerprint",
    "is_run_output",
    "model_identity",
    "read_marker",
    "write_marker",
]

MARKER_FORMAT = 1
#: settings that change what a run writes or shows, never the weights it trains (not part of its identity);
#: train_file / data / val_file / model enter the fingerprint by content instead of by path
NOT_IDENTITY = frozenset(
    {
        "output_dir",
        "resume",
        "overwrite_output_dir",
        "cache_dir",
        "inspect_data",
        "inspect_samples",
        "select",
        "sample_prompts",
        "sample_max_new_tokens",
        "timing_warmup_steps",
        "eval_steps",
        "evaluate_before",
        "eval_batch_size",
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "export_merged",
        "dataloader_workers",
        "report_to",
        "tracking_uri",
        "tracking_project",
        "torch_compile",
        "allow_pickle_weights",
        "train_file",
        "data",
        "val_file",
        "model",
    }
)
_CHECKPOINT = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
#: the weight files of a model saved in several parts
_SHARDED_WEIGHTS = re.compile(r"^model-\d+-of-\d+\.safetensors$")
#: what the Trainer needs besides the weights and the optimizer to continue exactly where it stopped
_STATE_FILES = (TRAINER_STATE_NAME, "scheduler.pt")
#: the optimizer state as ``Trainer._load_optimizer_and_scheduler`` finds it: ``optimizer.pt`` (plain),
#: ``optimizer.bin`` (accelerate's FSDP FULL_STATE_DICT) or a directory named ``optimizer*`` (FSDP sharded)
_OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
_OPTIMIZER_DIR = "optimizer"
_HEAD_BYTES = 1 << 20


def _head_digest(path: Path, head: int = _HEAD_BYTES) -> str:
    """sha256 of a file's size and first ``head`` bytes (a weights file's header and the start of its data)."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(head))
    return digest.hexdigest()


def model_identity(spec: str) -> dict[str, Any]:
    """The base model's identity: for a local model its config and the header digest of each weights
    file (moving or renaming the directory changes nothing); for a hub id, the id."""
    from qckit.models import resolve_model

    source = resolve_model(spec)
    if source.kind == "hub":
        return {"hub": source.path_or_id}
    if source.gguf_file:
        # the metadata (architecture, vocabulary) and the tensor index are at the start of the file
        return {"gguf": _head_digest(Path(source.gguf_file), 16 * _HEAD_BYTES)}
    root = Path(source.path_or_id)
    weights = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt"))
    tokenizer = sorted(p for p in root.glob("tokenizer*") if p.is_file())
    return {
        "config": file_sha256(root / "config.json"),
        "tokenizer": {p.name: file_sha256(p) for p in tokenizer},
        "weights": {p.name: _head_digest(p) for p in weights},
    }


def batch_geometry(settings: Any, env: Any) -> dict[str, int]:
    """How one optimizer step draws its windows: ``world_size`` processes, each a micro-batch of
    ``micro_batch`` windows (``batch_size`` per GPU: one process drives all visible GPUs under DataParallel),
    ``gradient_accumulation_steps`` micro-batches per step, ``global_batch`` windows in all."""
    data_parallel = env.gpu_count if env.device == "cuda" and not env.distributed else 1
    micro_batch = settings.batch_size * max(data_parallel, 1)
    world_size = max(int(env.world_size), 1)
    accumulation = settings.gradient_accumulation_steps
    return {
        "world_size": world_size,
        "micro_batch": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "global_batch": world_size * micro_batch * accumulation,
    }


def _geometry_line(geometry: dict[str, Any]) -> str:
    """``"2 processes x 4 windows x 2 accumulation = 16 windows per step"``."""
    return (
        f"{geometry.get('world_size')} process(es) x {geometry.get('micro_batch')} windows x "
        f"{geometry.get('gradient_accumulation_steps')} accumulation = {geometry.get('global_batch')} windows per step"
    )


def fingerprint(
    settings: Any,
    sources: list[Any],
    chunker: dict[str, Any],
    adapters: list[dict[str, Any]],
    evaluation: list[dict[str, Any]],
    geometry: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The run's identity (see the module docstring), as plain JSON data (``geometry``:
    :func:`batch_geometry`)."""
    import dataclasses

    resolved = {k: v for k, v in dataclasses.asdict(settings).items() if k not in NOT_IDENTITY}
    if (
        resolved.get("lr_scheduler") != WSD
    ):  # its keys keep their defaults: runs from before them still resume
        resolved = {k: v for k, v in resolved.items() if k not in WSD_KEYS}
    words = getattr(settings, "add_tokens", None)
    if isinstance(words, str) and Path(words).is_file():  # a word list file enters by its content
        resolved["add_tokens"] = {"sha256": file_sha256(Path(words))}
    return jsonable(
        {
            "settings": resolved,
            "chunker": chunker,
            "adapters": adapters,
            "data": [
                {
                    "name": s.name,
                    "weight": s.weight,
                    "exhausted": s.exhausted,
                    "sha256": file_sha256(Path(s.path)),
                }
                for s in sources
            ],
            "model": model_identity(settings.model),
            "evaluation": evaluation,
            **({"geometry": geometry} if geometry is not None else {}),
        }
    )


def evaluation_identity(eval_sets: list[Any]) -> list[dict[str, Any]]:
    """What makes two runs' held-out numbers comparable (so that a resumed run's recorded baseline is
    the one its "after" is compared with): each eval set's name, kind, settings, evaluator settings and
    file content. (The validation set's settings come from ``train.eval_*``, in the settings part.)"""
    import dataclasses

    out = []
    for eval_set in eval_sets:
        settings = dataclasses.asdict(eval_set.settings)
        path = Path(eval_set.settings.path)
        evaluator = component_settings(eval_set.evaluator)
        out.append(
            {
                "name": eval_set.name,
                "kind": eval_set.kind,
                "settings": {k: v for k, v in settings.items() if k != "path"},
                "evaluator": evaluator,
                "sha256": file_sha256(path) if path.is_file() else None,
            }
        )
    return out


def component_settings(component: Any) -> dict[str, Any]:
    """The public scalar (and list-of-scalar) attributes of a component (``{"use": name, ...}``): what
    the run's identity and its summary record of a chunker, an adapter or an evaluator."""
    out: dict[str, Any] = {"use": getattr(component, "name", type(component).__name__)}
    for key, value in vars(component).items() if hasattr(component, "__dict__") else []:
        if key.startswith("_"):
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            out[key] = list(value)
    return out


def digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def differences(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """``"learning_rate 0.001 → 0.005; data[0].sha256 changed"``: the first ``limit`` differing key paths."""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    parts = []
    for key in keys[:limit]:
        before, after = a.get(key, "<absent>"), b.get(key, "<absent>")
        short = key.removeprefix("settings.")
        if isinstance(before, str) and len(before) > 24 or isinstance(after, str) and len(after) > 24:
            parts.append(f"{short} changed")
        else:
            parts.append(f"{short} {before!r} → {after!r}")
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts) or "nothing"


# -- checkpoints on disk ---------------------------------------------------------------------------


def checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` directories of ``output_dir``, newest (highest N) first (links to directories
    are not checkpoints: :func:`check_output_dir` refuses them)."""
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := _CHECKPOINT.match(p.name)) and p.is_dir() and not p.is_symlink()
    ]
    return [p for _, p in sorted(found, reverse=True)]


def write_marker(checkpoint: Path, run_fingerprint: dict[str, Any], baseline: Any, step: int) -> Path:
    """Write the completion marker into ``checkpoint`` (atomically; call it after everything else)."""
    return atomic_write_json(
        checkpoint / MARKER,
        {
            "format": MARKER_FORMAT,
            "global_step": step,
            "fingerprint_sha256": digest(run_fingerprint),
            "fingerprint": run_fingerprint,
            "baseline": baseline,
        },
    )


def read_marker(checkpoint: Path) -> dict[str, Any] | None:
    """The marker of ``checkpoint``, or ``None`` when it has none (or an unreadable one)."""
    try:
        data = json.loads((checkpoint / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MARKER_FORMAT else None


def _has_optimizer(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` holds a non-empty optimizer state in one of the layouts the Trainer loads."""
    for name in _OPTIMIZER_FILES:
        path = checkpoint / name
        if path.is_file() and path.stat().st_size > 0:
            return True
    return any(p.is_dir() and _OPTIMIZER_DIR in p.name and any(p.iterdir()) for p in checkpoint.iterdir())


def _unloadable(checkpoint: Path, allow_pickle: bool) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or ``None`` when it can."""
    from safetensors import safe_open

    for name in _STATE_FILES:
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size == 0:
            return f"{name} is missing or empty"
    if not _has_optimizer(checkpoint):
        return f"no optimizer state ({' or '.join(_OPTIMIZER_FILES)} or an {_OPTIMIZER_DIR}_N/ directory)"
    try:
        json.loads((checkpoint / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except ValueError:
        return f"{TRAINER_STATE_NAME} is not valid JSON"
    weights = sorted(checkpoint.glob("*.safetensors"))
    pickled = sorted(checkpoint.glob("*.bin")) if allow_pickle else []
    pickled = [p for p in pickled if p.name not in ("training_args.bin", *_OPTIMIZER_FILES)]
    if not weights and not pickled:
        return "no model weights (*.safetensors)"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # truncated or corrupt: safetensors checks the header against the file size
            return f"{path.name} is unreadable ({' '.join(str(exc).split())[:120]})"
    return None


def choose_checkpoint(
    output_dir: Path,
    run_fingerprint: dict[str, Any],
    *,
    allow_pickle: bool,
    warn: Callable[[str], None],
) -> tuple[Path, dict[str, Any], list[Path]] | None:
    """The checkpoint to resume from, its marker, and the newer checkpoints skipped on the way (debris of
    an interrupted save, which the resumed run replaces); ``None`` when ``output_dir`` holds none at all.

    Raises :class:`~qckit.errors.InputError` for a complete checkpoint of another run (naming what
    differs) and when checkpoints exist but none is complete and loadable.
    """
    found = checkpoints(output_dir)
    if not found:
        return None
    expected = digest(run_fingerprint)
    # a checkpoint written before the geometry entered the fingerprint: the rest must match
    without_geometry = digest({k: v for k, v in run_fingerprint.items() if k != "geometry"})
    skipped: list[str] = []
    newer: list[Path] = []
    for checkpoint in found:
        marker = read_marker(checkpoint)
        if marker is None:
            warn(f"{checkpoint}: incomplete checkpoint (no {MARKER}: interrupted while saving?); skipped")
            skipped.append(f"{checkpoint.name} incomplete")
            newer.append(checkpoint)
            continue
        recorded = marker.get("fingerprint") or {}
        geometry, before = run_fingerprint.get("geometry"), recorded.get("geometry")
        if geometry is not None and before is not None and before != geometry:
            raise InputError(
                checkpoint,
                f"this checkpoint was trained with {_geometry_line(before)}; this run has "
                f"{_geometry_line(geometry)}: its windows and schedule would not continue exactly; resume with "
                f"the same processes, batch_size and gradient_accumulation_steps, or use another output_dir",
            )
        accepted = {expected, without_geometry} if before is None else {expected}
        if marker.get("fingerprint_sha256") not in accepted:
            raise InputError(
                checkpoint,
                f"this checkpoint belongs to another run ({differences(marker.get('fingerprint') or {}, run_fingerprint)}); "
                f"resume with the same recipe, or use another output_dir, or start afresh with "
                f"--overwrite-output-dir (train.overwrite_output_dir = true)",
            )
        why = _unloadable(checkpoint, allow_pickle)
        if why is not None:
            warn(f"{checkpoint}: cannot be resumed from ({why}); skipped")
            skipped.append(f"{checkpoint.name} {why}")
            newer.append(checkpoint)
            continue
        return checkpoint, marker, newer
    raise InputError(
        output_dir,
        f"no complete, loadable checkpoint to resume from ({'; '.join(skipped)}); "
        "start afresh with --overwrite-output-dir (train.overwrite_output_dir = true)",
    )


def refuse_fresh_run(output_dir: Path) -> None:
    """A fresh run may not start over an earlier run's checkpoints (``RecipeError`` naming the way out)."""
    found = checkpoints(output_dir)
    if found:
        names = ", ".join(p.name for p in found[:3]) + (" …" if len(found) > 3 else "")
        raise RecipeError(
            f"{output_dir} already holds checkpoints of an earlier run ({names}): continue it with "
            f"`qckit run RECIPE --resume` (or --set train.resume=true; `qckit train … --resume`), or delete "
            f"them and start afresh with --overwrite-output-dir (train.overwrite_output_dir = true)",
            key="train.output_dir",
        )


def is_run_output(output_dir: Path) -> bool:
    """Whether ``output_dir`` holds a qckit run: its summary, or a checkpoint with qckit's marker."""
    return (output_dir / SUMMARY_NAME).is_file() or any(
        read_marker(checkpoint) is not None for checkpoint in checkpoints(output_dir)
    )


def check_output_dir(output_dir: Path, model: str, *, overwrite: bool) -> None:
    """Refuse (``RecipeError`` on ``train.output_dir``) an ``output_dir`` that is the base model's
    directory, and, for ``overwrite``, one whose ``checkpoint-*`` directories qckit did not write
    (no :data:`MARKER`, no summary: :func:`clear_output_dir` removes nothing of a directory it cannot
    tell is a qckit run's, and the new run's checkpoints would mix with them). Refuse too (one line
    naming it, :func:`qckit._fs.refuse_link`) a link under a name the run writes, removes or caches
    into (a checkpoint, an output, ``logs/``, the packing cache ``.cache``): the run would write
    through it, or delete, wherever it points."""
    from qckit.models import resolve_model

    source = resolve_model(model)
    if source.is_local and output_dir.resolve() == Path(source.path_or_id).resolve():
        raise RecipeError(
            f"{output_dir} is the base model's directory ({source.display}): the trained model would "
            "overwrite it; choose another output_dir",
            key="train.output_dir",
        )
    for path in _run_entries(output_dir):
        if path.is_symlink():
            raise refuse_link(path, "choose another output_dir")
    found = checkpoints(output_dir)
    if overwrite and found and not is_run_output(output_dir):
        names = ", ".join(p.name for p in found[:3]) + (" …" if len(found) > 3 else "")
        raise RecipeError(
            f"overwrite_output_dir: {output_dir} holds {names} but no qckit run (no {MARKER}, no "
            f"{SUMMARY_NAME}); nothing was removed: delete them yourself or choose another output_dir",
            key="train.output_dir",
        )


def _run_entries(output_dir: Path) -> list[Path]:
    """The entries of ``output_dir`` under a name that a run (qckit or the Trainer) writes, as they are
    (links included)."""
    try:
        names = os.listdir(output_dir)
    except OSError:
        return []
    ours = {*RUN_OUTPUTS, *RUN_OUTPUT_DIRS, CACHE_DIR}
    return [
        output_dir / name
        for name in sorted(names)
        if name in ours or _CHECKPOINT.match(name) or _SHARDED_WEIGHTS.match(name)
    ]


def _removal_order(path: Path) -> tuple[int, int, str]:
    """Checkpoints newest first, then the run's directories, then its files (the order the warning names them)."""
    if m := _CHECKPOINT.match(path.name):
        return 0, -int(m.group(1)), ""
    if path.name in RUN_OUTPUT_DIRS:
        return 1, RUN_OUTPUT_DIRS.index(path.name), ""
    return 2, 0, path.name


def clear_output_dir(output_dir: Path) -> list[str]:
    """Remove an earlier qckit run's checkpoints and outputs from ``output_dir`` (the packing cache stays).
    A directory that holds no qckit run (:func:`is_run_output`) keeps everything: its README.md,
    config.json … are the user's. Nothing is removed through a link, and a link is never removed (it is
    not one qckit made; :func:`check_output_dir` refuses it). Returns the names removed."""
    if not is_run_output(output_dir):
        return []
    removed: list[str] = []
    for path in sorted(_run_entries(output_dir), key=_removal_order):
        if path.name == CACHE_DIR:
            continue
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        wanted_dir = path.name in RUN_OUTPUT_DIRS or _CHECKPOINT.match(path.name)
        if stat.S_ISDIR(mode) if wanted_dir else stat.S_ISREG(mode):
            try:
                remove_entry(output_dir, path.name, ignore_errors=False)
            except OSError as exc:
                raise path_error(exc, path) from None
            removed.append(path.name)
    return removed
