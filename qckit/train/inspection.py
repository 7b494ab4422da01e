"""The inspection shown before training: what the data became, how many steps, and how long they should take.

:func:`inspection` builds the plain dict the observer receives as the ``"inspection"`` report (rendered
by :func:`qckit.report.inspection_report`); :func:`measure_pass_seconds` times a few real
forward+backward passes for the estimate without changing training.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from qckit.hardware import autocast_dtype
from qckit.train.settings import WSD

__all__ = [
    "estimate_optimizer_steps",
    "human_seconds",
    "inspection",
    "measure_pass_seconds",
    "sample_indices",
    "schedule_line",
]


def estimate_optimizer_steps(
    windows: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    num_epochs: float,
    world_size: int = 1,
    max_steps: int = -1,
) -> int:
    """The number of optimizer steps the Trainer will run (its own arithmetic, for the inspection).

    Each process gets ``ceil(ceil(windows / batch_size) / world_size)`` micro-batches per epoch (the last
    batch is not dropped); an optimizer step takes ``gradient_accumulation_steps`` of them, a partial
    group at the end of an epoch counting as one step.
    """
    if max_steps > 0:
        return max_steps
    batches = math.ceil(math.ceil(windows / batch_size) / max(world_size, 1))
    per_epoch = max(
        batches // gradient_accumulation_steps + int(batches % gradient_accumulation_steps > 0), 1
    )
    return math.ceil(num_epochs * per_epoch)


def human_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def sample_indices(windows: int, count: int) -> list[int]:
    """``count`` window indices spread evenly over the corpus (first and last included)."""
    if count <= 0 or windows <= 0:
        return []
    if count >= windows:
        return list(range(windows))
    if count == 1:
        return [0]
    return sorted({round(i * (windows - 1) / (count - 1)) for i in range(count)})


def measure_pass_seconds(
    model: Any, dataset: Any, batch_size: int, passes: int, device: Any, precision: str
) -> float | None:
    """Median seconds per forward+backward micro-batch over ``passes`` timed passes on real windows.

    The windows are taken in epoch 0's drawing order, cycling when a batch needs more than an epoch has.
    One untimed warm-up pass comes first (allocations, kernel selection). No optimizer step is taken,
    the gradients are discarded and the RNG state is restored, so training is unchanged.
    """
    import torch

    from qckit.train.packing import forward_inputs, window_collator

    if passes <= 0 or len(dataset) == 0:
        return None
    # the windows in the order the run draws them: a MixedDataset's length is its draws per epoch, which a
    # repeated source makes more than the windows it holds (indexing by position would run past them)
    order = dataset.epoch_order(0) if hasattr(dataset, "epoch_order") else range(len(dataset))
    autocast = autocast_dtype(precision)
    rng_devices = [device] if device.type == "cuda" else []
    collate = window_collator(model)  # training's batch form (flattened for flash kernels)
    timed: list[float] = []
    was_training = model.training
    with torch.random.fork_rng(devices=rng_devices):
        model.train()
        try:
            for i in range(passes + 1):
                rows = [dataset[int(order[(i * batch_size + j) % len(order)])] for j in range(batch_size)]
                batch = {
                    k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collate(rows).items()
                }
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                with torch.autocast(
                    device_type=device.type,
                    dtype=autocast or torch.float32,
                    enabled=autocast is not None,
                ):
                    loss = model(**forward_inputs(batch)).loss
                loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:
                    timed.append(time.perf_counter() - started)
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    return statistics.median(timed)


def schedule_line(settings: Any, steps: int) -> str | None:
    """The phases of a warmup_stable_decay run of ``steps`` optimizer steps, in words (None: another
    schedule): steps per phase, the decay's shape and end, and the decay source's share."""
    if settings.lr_scheduler != WSD:
        return None
    warmup, decay = settings.warmup_steps(steps), settings.decay_steps(steps)
    line = (
        f"{WSD}: {warmup} warmup, {steps - warmup - decay} stable, {decay} decay steps "
        f"({settings.decay_type} down to {settings.min_lr_ratio:g} x learning_rate)"
    )
    if settings.decay_source:
        share = 100 * settings.decay_share
        line += f"; from step {steps - decay + 1} on, {settings.decay_source} is {share:g} % of the tokens"
    return line


def inspection(
    settings: Any,
    train_ds: Any,
    tokenizer: Any,
    val_documents: int | None,
    *,
    steps: int,
    world_size: int,
    step_batch: int,
    trainable: int,
    total: int,
    precision: str,
    device: str,
    adapters: list[str],
    window: int,
    sources: list[dict[str, Any]],
    vocabulary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The inspection report's data (keys with a ``None`` value are left out)."""
    stats = train_ds.stats
    windows = len(train_ds)
    per_step = step_batch * settings.gradient_accumulation_steps * world_size
    samples = [
        train_ds.decode_sample(i, tokenizer) for i in sample_indices(windows, settings.inspect_samples)
    ]
    data: dict[str, Any] = {
        "train_file": settings.train_file or None,
        "sources": sources,
        "documents": stats.documents,
        "words": train_ds.num_words,
        "bytes": train_ds.num_bytes,
        "tokens_total": stats.tokens_total,
        "tokens_kept": stats.tokens_kept,
        "tokens_kept_pct": 100.0 * stats.tokens_kept / stats.tokens_total if stats.tokens_total else 0.0,
        "fertility_tokens_per_word": train_ds.fertility,
        "bytes_per_token": train_ds.num_bytes / train_ds.num_doc_tokens if train_ds.num_doc_tokens else 0.0,
        "vocabulary": vocabulary,
        "window_length": window,
        "attention": getattr(train_ds, "attention", None),
        "windows": windows,  # drawn per epoch
        "windows_dropped_short": stats.windows_dropped_short,
        "from_cache": bool(getattr(train_ds, "from_cache", False)),
        "batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "world_size": world_size,
        "windows_per_optimizer_step": per_step,
        "tokens_per_optimizer_step": per_step * train_ds.seq_length,
        "epochs": settings.num_epochs if settings.max_steps < 0 else None,
        "optimizer_steps": steps,
        "warmup_steps": settings.warmup_steps(steps),
        "lr_schedule": schedule_line(settings, steps),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_pct": 100.0 * trainable / total if total else 0.0,
        "adapters": ", ".join(adapters) or "none (full fine-tuning)",
        "precision": precision,
        "device": device,
        "val_documents": val_documents,
        "samples": samples,
    }
    return {k: v for k, v in data.items() if v is not None}
