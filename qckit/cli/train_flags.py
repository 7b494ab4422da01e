"""The seed's ``train.py`` command-line flags, translated into a qckit recipe.

``qckit train --train_file data/train.txt --use_4bit`` accepts every flag of the original training
script, with the same names and defaults, plus a few extras. The flags are never a second way to
configure training: :func:`train_flags_to_recipe` turns them into the recipe dictionary that a
``recipe.toml`` file would hold, and that dictionary goes through the same validation and the same
code as a recipe file::

    [train]
    train_file = "data/train.txt"
    model = "meta-llama/Llama-3.2-1B"
    ...
    [train.chunker]
    use = "window"
    max_length = 1024
    stride = 128

    [[train.adapters]]
    use = "lora"
    r = 16
    alpha = 32

Differences from the seed (README's table lists the behaviour changes); two defaults changed, the rest
are additions:

* ``--attention`` defaults to ``document`` (documents packed into one window do not attend to each
  other); ``--attention window`` is the seed's behaviour.
* ``--use_lora`` was always on and could not be turned off; ``--no_use_lora`` (alias ``--no-lora``)
  now trains the full model. The same goes for ``--inspect_data`` / ``--no_inspect_data``.
* ``--fsdp_transformer_layer_cls_to_wrap`` defaulted to ``LlamaDecoderLayer``; it now defaults to the
  decoder-layer class detected in the loaded model, which is ``LlamaDecoderLayer`` for Llama models.
  Passing it explicitly still works.
* Extras: ``--val_file`` (held-out perplexity and bits-per-byte before/after training), ``--resume``,
  ``--max_steps``, ``--precision``, ``--use_8bit``, ``--lora_dropout``, ``--eval_steps``,
  ``--save_steps``, ``--logging_steps``, ``--[no_]gradient_checkpointing``, ``--export_merged``,
  ``--trust_remote_code``, ``--cache_dir``, ``--overwrite_output_dir``, ``--report_to``, ``--attention``.
"""

from __future__ import annotations

import argparse
from typing import Any

from qckit.components import ATTENTION_MODES
from qckit.errors import RecipeError
from qckit.hardware import DEVICES, PRECISIONS
from qckit.train.settings import TRACKERS

__all__ = ["SEED_DEFAULTS", "add_train_flags", "train_flags_to_recipe"]

#: The defaults of the seed's ``train.py`` (flag name → value); qckit keeps every one of them.
SEED_DEFAULTS: dict[str, Any] = {
    "output_dir": "./cpt_model",
    "model_name": "meta-llama/Llama-3.2-1B",
    "num_epochs": 3,
    "batch_size": 8,
    "max_length": 1024,
    "learning_rate": 1e-5,
    "use_lora": True,
    "use_4bit": False,
    "lora_r": 16,
    "lora_alpha": 32,
    "stride": 128,
    "inspect_data": True,
    "inspect_samples": 5,
    "gradient_accumulation_steps": 8,
    "seed": 42,
    "fsdp": None,
}


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """Add the seed's training flags (same names, same defaults) and qckit's extras to ``parser``."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_name",
        default=SEED_DEFAULTS["model_name"],
        help="Hugging Face model id or local directory (default: %(default)s)",
    )
    model.add_argument(
        "--use_lora",
        dest="use_lora",
        action="store_true",
        default=True,
        help="train LoRA adapters (default: on)",
    )
    model.add_argument(
        "--no_use_lora",
        "--no-lora",
        "--no_lora",
        dest="use_lora",
        action="store_false",
        help="train the full model instead of LoRA adapters",
    )
    model.add_argument(
        "--use_4bit", action="store_true", help="load the model in 4-bit NF4 (QLoRA; needs a CUDA GPU)"
    )
    model.add_argument("--use_8bit", action="store_true", help="load the model in 8-bit (needs a CUDA GPU)")
    model.add_argument(
        "--lora_r", type=int, default=SEED_DEFAULTS["lora_r"], help="LoRA rank (default: %(default)s)"
    )
    model.add_argument(
        "--lora_alpha",
        type=int,
        default=SEED_DEFAULTS["lora_alpha"],
        help="LoRA alpha (default: %(default)s)",
    )
    model.add_argument("--lora_dropout", type=float, default=None, help="LoRA dropout (default: 0.1)")
    model.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="allow model code from the model repository to run (off by default)",
    )

    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_file", required=True, help="training corpus, one document per line (from prepare)"
    )
    data.add_argument(
        "--val_file",
        default=None,
        help="validation corpus: held-out perplexity and bits-per-byte before, during and after training",
    )
    data.add_argument(
        "--max_length",
        type=int,
        default=SEED_DEFAULTS["max_length"],
        help="window length in tokens (default: %(default)s)",
    )
    data.add_argument(
        "--stride",
        type=int,
        default=SEED_DEFAULTS["stride"],
        help="overlap between consecutive windows in tokens, 0 = none (default: %(default)s)",
    )
    data.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        default=None,
        help="document: no attention across the documents packed in a window (default); window: the seed's",
    )
    data.add_argument(
        "--batch_size",
        type=int,
        default=SEED_DEFAULTS["batch_size"],
        help="per-device batch size (default: %(default)s)",
    )
    data.add_argument(
        "--inspect_data",
        dest="inspect_data",
        action="store_true",
        default=True,
        help="show samples, token counts and a time estimate before training (default: on)",
    )
    data.add_argument(
        "--no_inspect_data",
        "--no-inspect-data",
        dest="inspect_data",
        action="store_false",
        help="skip the data inspection",
    )
    data.add_argument(
        "--inspect_samples",
        type=int,
        default=SEED_DEFAULTS["inspect_samples"],
        help="number of decoded windows to show (default: %(default)s)",
    )
    data.add_argument(
        "--cache_dir", default=None, help="where packed windows are cached (default: <output_dir>/.cache)"
    )

    train = parser.add_argument_group("training")
    train.add_argument(
        "--output_dir", default=SEED_DEFAULTS["output_dir"], help="output directory (default: %(default)s)"
    )
    train.add_argument(
        "--num_epochs",
        type=float,
        default=SEED_DEFAULTS["num_epochs"],
        help="number of epochs (default: %(default)s)",
    )
    train.add_argument(
        "--max_steps",
        type=int,
        default=-1,
        help="stop after this many optimizer steps; overrides --num_epochs (default: off)",
    )
    train.add_argument(
        "--learning_rate",
        type=float,
        default=SEED_DEFAULTS["learning_rate"],
        help="peak learning rate (default: %(default)s)",
    )
    train.add_argument(
        "--gradient_accumulation_steps",
        type=int,
        default=SEED_DEFAULTS["gradient_accumulation_steps"],
        help="micro-batches per optimizer step (default: %(default)s)",
    )
    train.add_argument(
        "--seed", type=int, default=SEED_DEFAULTS["seed"], help="random seed (default: %(default)s)"
    )
    train.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto = bf16 on GPUs that compute it natively, else fp16 on CUDA, fp32 on CPU (default: auto)",
    )
    train.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="auto = a CUDA GPU when there is one; cpu = train on the CPU even beside a GPU (default: auto)",
    )
    train.add_argument(
        "--gradient_checkpointing",
        dest="gradient_checkpointing",
        action="store_const",
        const=True,
        default="auto",
        help="recompute activations in the backward pass (less memory, slower); default: auto, on only when "
        "the memory estimate needs it",
    )
    train.add_argument(
        "--no_gradient_checkpointing",
        dest="gradient_checkpointing",
        action="store_const",
        const=False,
        help="keep activations instead of recomputing them (faster, more memory)",
    )
    train.add_argument(
        "--eval_steps",
        type=int,
        default=None,
        help="evaluate on --val_file every N steps; 0 = every epoch, -1 = only before/after",
    )
    train.add_argument("--save_steps", type=int, default=None, help="checkpoint every N steps (default: 500)")
    train.add_argument(
        "--logging_steps", type=int, default=None, help="log the loss every N steps (default: 10)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint-* of this same run in --output_dir",
    )
    train.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="delete an earlier run's checkpoints and outputs in --output_dir before training",
    )
    train.add_argument(
        "--report_to",
        nargs="+",
        choices=[*TRACKERS, "none"],
        default=None,
        help="experiment trackers (default: tensorboard); mlflow writes a local store in <output_dir>/mlruns, "
        "wandb runs offline unless configured",
    )
    train.add_argument(
        "--export_merged",
        action="store_true",
        help="also save the base model with the LoRA weights merged in, under <output_dir>/merged",
    )

    par = parser.add_argument_group("parallelism")
    par.add_argument(
        "--fsdp",
        default=None,
        help='FSDP strategy, e.g. "full_shard auto_wrap" (multi-GPU, under torchrun; default: off)',
    )
    par.add_argument(
        "--fsdp_transformer_layer_cls_to_wrap",
        default=None,
        help="decoder-layer class FSDP wraps, used only with --fsdp (default: detected from the model; "
        "the seed's default was LlamaDecoderLayer, which passing it explicitly still selects)",
    )


def _positive_int(ns: argparse.Namespace, name: str, *, allow_zero: bool = False) -> int:
    value = getattr(ns, name)
    if (
        value is None
        or isinstance(value, bool)
        or not isinstance(value, int)
        or value < (0 if allow_zero else 1)
    ):
        bound = "0 or more" if allow_zero else "a positive integer"
        raise RecipeError(f"must be {bound}, got {value!r}", key=f"--{name}")
    return value


def train_flags_to_recipe(ns: argparse.Namespace) -> dict[str, Any]:
    """The recipe dictionary (as ``tomllib.load`` would return it) equivalent to the parsed flags.

    Raises :class:`qckit.errors.RecipeError` naming the flag when a value is out of range. Keys whose
    value is ``None`` are left out (TOML has no null), so the train stage uses its own default.
    """
    _positive_int(ns, "batch_size")
    _positive_int(ns, "gradient_accumulation_steps")
    _positive_int(ns, "max_length")
    _positive_int(ns, "lora_r")
    _positive_int(ns, "lora_alpha")
    _positive_int(ns, "stride", allow_zero=True)
    _positive_int(ns, "inspect_samples", allow_zero=True)
    if ns.stride >= ns.max_length:
        raise RecipeError(
            f"must be smaller than --max_length ({ns.max_length}), got {ns.stride}", key="--stride"
        )
    if not (ns.learning_rate > 0):
        raise RecipeError(f"must be greater than 0, got {ns.learning_rate!r}", key="--learning_rate")
    if not (ns.num_epochs > 0):
        raise RecipeError(f"must be greater than 0, got {ns.num_epochs!r}", key="--num_epochs")
    if ns.max_steps == 0 or ns.max_steps < -1:
        raise RecipeError(
            f"must be a positive integer (or -1 for --num_epochs), got {ns.max_steps}", key="--max_steps"
        )
    if ns.lora_dropout is not None and not (0 <= ns.lora_dropout < 1):
        raise RecipeError(f"must be in [0, 1), got {ns.lora_dropout!r}", key="--lora_dropout")
    for name in ("save_steps", "logging_steps"):
        if getattr(ns, name) is not None:
            _positive_int(ns, name)
    if ns.eval_steps is not None and ns.eval_steps < -1:
        raise RecipeError(
            f"must be a positive integer, 0 (every epoch) or -1 (never), got {ns.eval_steps}",
            key="--eval_steps",
        )
    if ns.use_4bit and ns.use_8bit:
        raise RecipeError("choose one of --use_4bit and --use_8bit", key="--use_8bit")
    if not ns.train_file:
        raise RecipeError("is required", key="--train_file")
    if ns.fsdp is not None and not ns.fsdp.strip():
        raise RecipeError('must name a strategy, e.g. "full_shard auto_wrap"', key="--fsdp")

    train: dict[str, Any] = {
        "train_file": ns.train_file,
        "val_file": ns.val_file,
        "output_dir": ns.output_dir,
        "model": ns.model_name,
        "trust_remote_code": bool(ns.trust_remote_code),
        "num_epochs": float(ns.num_epochs),
        "max_steps": ns.max_steps,
        "batch_size": ns.batch_size,
        "gradient_accumulation_steps": ns.gradient_accumulation_steps,
        "learning_rate": float(ns.learning_rate),
        "seed": ns.seed,
        "precision": ns.precision,
        "device": ns.device,
        "gradient_checkpointing": ns.gradient_checkpointing,
        "eval_steps": ns.eval_steps,
        "save_steps": ns.save_steps,
        "logging_steps": ns.logging_steps,
        "inspect_data": bool(ns.inspect_data),
        "inspect_samples": ns.inspect_samples,
        "resume": bool(ns.resume),
        "overwrite_output_dir": bool(ns.overwrite_output_dir),
        "report_to": None if ns.report_to is None else [n for n in ns.report_to if n != "none"],
        "export_merged": bool(ns.export_merged),
        "cache_dir": ns.cache_dir,
    }
    train = {key: value for key, value in train.items() if value is not None}
    train["chunker"] = {"use": "window", "max_length": ns.max_length, "stride": ns.stride}
    if ns.attention is not None:
        train["chunker"]["attention"] = ns.attention

    adapters: list[dict[str, Any]] = []
    if ns.use_4bit:
        adapters.append({"use": "4bit"})
    elif ns.use_8bit:
        adapters.append({"use": "8bit"})
    if ns.use_lora:
        lora: dict[str, Any] = {"use": "lora", "r": ns.lora_r, "alpha": ns.lora_alpha}
        if ns.lora_dropout is not None:
            lora["dropout"] = float(ns.lora_dropout)
        adapters.append(lora)
    if ns.fsdp is not None:
        fsdp: dict[str, Any] = {"use": "fsdp", "strategy": ns.fsdp}
        if ns.fsdp_transformer_layer_cls_to_wrap is not None:
            fsdp["layer_cls"] = ns.fsdp_transformer_layer_cls_to_wrap
        adapters.append(fsdp)
    train["adapters"] = adapters
    return {"train": train}
