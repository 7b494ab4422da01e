"""The train stage: pack the corpus, load and adapt the model, train with the Hugging Face ``Trainer``,
measure held-out perplexity and bits-per-byte before, during and after training, and save everything.

:func:`run_train` takes the validated :class:`TrainSettings` (the recipe's ``[train]`` table), the
chunker (``[train.chunker]``) and the model adapters (``[[train.adapters]]``) and returns a
:class:`TrainResult`. Progress and reports go to an :class:`~qckit.progress.Observer`; nothing is printed.

Output directory layout (the seed's, plus ``training_summary.json`` and ``recipe.toml``)::

    cpt_model/
    ├── checkpoint-500/ …          # every save_steps optimizer steps (resumable)
    ├── adapter_config.json        # LoRA: the adapter …
    ├── adapter_model.safetensors
    ├── model.safetensors          # … or the full model when no LoRA adapter is used
    ├── config.json                # the base model configuration
    ├── tokenizer.json, tokenizer_config.json …
    ├── training_args.bin
    ├── trainer_state.json         # log history (loss, learning rate, held-out metrics per step)
    ├── training_summary.json      # before/after held-out metrics, throughput, packing stats …
    ├── recipe.toml                # the resolved recipe of the run (when known)
    ├── merged/                    # export_merged = true: LoRA folded into the base model
    └── logs/events.out.tfevents.* # TensorBoard: train/loss …, one group per eval set: eval_val/document/bits_per_byte …

Held-out numbers always come from the named eval sets of :mod:`qckit.evaluate.sets` (the validation
file and the recipe's ``[[train.eval]]`` tables), measured by one :class:`~qckit.evaluate.sets.EvalSuite`
before, every ``eval_steps`` and after; never from the Trainer's own evaluation loop and never from the
training loss. Without a validation file or eval sets no held-out number is reported.

The package, one concept per module: :mod:`~qckit.train.settings` (``TrainSettings``),
:mod:`~qckit.train.run` (``TrainRun``: one method per phase, and ``run_train``),
:mod:`~qckit.train.packing` (tokenize + pack, on-disk cache), :mod:`~qckit.train.inspection` (the
report before training), :mod:`~qckit.train.callback` (the Trainer callback: progress, held-out
evaluation, TensorBoard with one scalar group per eval set).

Multi-process runs (``torchrun --nproc_per_node N -m qckit train …``) use DDP through the Trainer
(or FSDP with the ``fsdp`` adapter). Every rank evaluates the whole validation set at the same points
(so FSDP's collectives stay matched); only rank 0 reports, logs to TensorBoard and writes files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # explicit re-exports for type checkers (``__all__`` is built from _HOME below)
    from qckit.train.inspection import estimate_optimizer_steps as estimate_optimizer_steps
    from qckit.train.run import TrainResult as TrainResult
    from qckit.train.run import TrainRun as TrainRun
    from qckit.train.run import run_train as run_train
    from qckit.train.settings import SCHEDULERS as SCHEDULERS
    from qckit.train.settings import TrainSettings as TrainSettings

# Imported on first use, so that a command that only reads a train setting (``qckit prepare`` builds
# the whole CLI) does not load the train stage. Each public name and the module it lives in.
_HOME = {
    "TrainSettings": "settings",
    "TrainResult": "run",
    "TrainRun": "run",
    "run_train": "run",
    "estimate_optimizer_steps": "inspection",
    "SCHEDULERS": "settings",
}

__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
