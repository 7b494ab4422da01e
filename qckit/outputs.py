"""The names of what a train run writes: the files and folders of its output directory, and the keys of
its held-out numbers in the Trainer's log.

Written once here, below both stages: the train stage writes these names, and the commands that read a
finished run back (:mod:`qckit.evaluate.runs`, :mod:`qckit.select`, :mod:`qckit.export`,
:mod:`qckit.generate`, :mod:`qckit.model_card`) find them here without importing the train stage. This
module imports nothing of qckit. The prepare stage's output names are :mod:`qckit.settings`'.
"""

from __future__ import annotations

__all__ = [
    "SUMMARY_NAME",
    "RECIPE_NAME",
    "CARD_NAME",
    "TRAINER_STATE_NAME",
    "MARKER",
    "CHECKPOINT_PREFIX",
    "SELECTED_DIR",
    "SELECTION_CACHE_NAME",
    "SELECTION_RECORD",
    "LOGS_DIR",
    "MERGED_DIR",
    "MLRUNS_DIR",
    "WANDB_DIR",
    "CACHE_DIR",
    "RUN_OUTPUTS",
    "RUN_OUTPUT_DIRS",
    "scalar_key",
    "is_scalar_key",
]

#: the run's summary: before/after held-out metrics, throughput, packing stats … (what ``qckit compare``,
#: ``qckit select`` and the model card read)
SUMMARY_NAME = "training_summary.json"
#: the resolved recipe the run ran (when known)
RECIPE_NAME = "recipe.toml"
CARD_NAME = "README.md"  # the model card (qckit.model_card), the name the Hugging Face Hub and peft use
#: the Trainer's state (transformers' ``TRAINER_STATE_NAME``): the log history, in the output directory
#: and in every checkpoint
TRAINER_STATE_NAME = "trainer_state.json"
#: the completion marker written last into every checkpoint directory
MARKER = "qckit_run.json"
#: a checkpoint directory is ``checkpoint-<optimizer step>`` (transformers' ``PREFIX_CHECKPOINT_DIR``)
CHECKPOINT_PREFIX = "checkpoint-"
SELECTED_DIR = "selected"  # the adapter (or model) at the point qckit select chose (qckit.select)
SELECTION_CACHE_NAME = "selection_evaluations.json"  # qckit select's evaluations, by weights and strength
SELECTION_RECORD = "qckit_selection.json"  # in a selected/ folder: which point it holds (qckit.select)
LOGS_DIR = "logs"  # TensorBoard's event files
MERGED_DIR = "merged"  # export_merged = true: the adapter folded into the base model
#: the default local MLflow store
MLRUNS_DIR = "mlruns"
#: where ``wandb.init(dir=<output_dir>)`` keeps an offline run's files
WANDB_DIR = "wandb"
#: the packing cache's default place (``train.cache_dir`` unset)
CACHE_DIR = ".cache"

#: what a run writes at the top of its output directory (removed by ``overwrite_output_dir``)
RUN_OUTPUTS = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    TRAINER_STATE_NAME,
    "training_args.bin",
    SUMMARY_NAME,
    RECIPE_NAME,
    CARD_NAME,
    SELECTION_CACHE_NAME,
)
#: the folders a run writes at the top of its output directory (removed by ``overwrite_output_dir``)
RUN_OUTPUT_DIRS = (LOGS_DIR, MERGED_DIR, SELECTED_DIR, MLRUNS_DIR, WANDB_DIR)


def scalar_key(name: str, protocol: str, key: str) -> str:
    """``eval_<set>/<protocol>/<key>`` (no protocol part for a set without one): the name of a set's
    number in the Trainer's log, trainer_state.json and TensorBoard, so two protocols never share a curve."""
    return f"eval_{name}/{protocol}/{key}" if protocol else f"eval_{name}/{key}"


def is_scalar_key(key: str) -> bool:
    """Whether a log entry is an eval set's number (named by :func:`scalar_key`), not a training one."""
    return key.startswith("eval_") and "/" in key
