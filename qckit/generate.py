"""Try a model: completions of prompts, from a run folder, a merged folder, a GGUF file or a hub id.

``qckit generate`` and the sample completions a run logs at each evaluation (``train.sample_prompts``)
both go through :func:`complete`. Greedy decoding by default, so a completion is reproducible and two
models compare on the same footing; sampling is an option (:class:`GenerationSettings`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qckit.errors import InputError, QckitError

__all__ = ["GenerationSettings", "LoadedModel", "complete", "load_for_generation", "read_prompts"]


@dataclass(frozen=True)
class GenerationSettings:
    """How completions are drawn. ``do_sample = False`` (the default) is greedy: ``temperature``,
    ``top_p`` and ``top_k`` then play no part. ``seed`` makes sampled completions reproducible."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int = 0
    chat: bool = False  # wrap each prompt in the tokenizer's chat template (instruct models)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise QckitError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature <= 0:
            raise QckitError(f"temperature must be above 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise QckitError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0 or self.repetition_penalty <= 0:
            raise QckitError("top_k must be at least 0 and repetition_penalty above 0")


@dataclass
class LoadedModel:
    """A model ready to generate, its tokenizer, and what it is (for the report)."""

    model: Any
    tokenizer: Any
    label: str
    base_reference: str | None = None  # the base model a run folder's adapter (or summary) names


def load_for_generation(spec: str, *, base: bool = False, trust_remote_code: bool = False) -> LoadedModel:
    """Load ``spec`` to generate with: a run folder (its adapter merged into the base it names), a merged
    or full model folder, a ``.gguf`` file, ``pkg:<package>/<file>`` or a hub id.

    ``base``: the base model of the run folder ``spec`` instead (to show both side by side).
    """
    from qckit.export import run_base
    from qckit.models import load_merged

    path = Path(spec)
    is_adapter = path.is_dir() and (path / "adapter_config.json").is_file()
    reference = run_base(path) if path.is_dir() else None
    if base:
        if reference is None:
            raise InputError(spec, "names no base model (no adapter_config.json or training summary)")
        model, tokenizer, _ = load_merged(reference, trust_remote_code=trust_remote_code)
        return LoadedModel(model, tokenizer, f"base ({reference})", reference)
    if is_adapter:
        if reference is None:
            raise InputError(path / "adapter_config.json", "names no base model (base_model_name_or_path)")
        model, tokenizer, _ = load_merged(reference, path, trust_remote_code=trust_remote_code)
    else:
        model, tokenizer, _ = load_merged(spec, trust_remote_code=trust_remote_code)
    return LoadedModel(model, tokenizer, str(spec), reference)


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a file: one per line (blank lines skipped), or a ``.jsonl`` file's ``prompt`` fields."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read prompts: {exc}") from None
    if path.suffix.lower() != ".jsonl":
        return [line for line in lines if line.strip()]
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number}", f"invalid JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise InputError(f"{path}:{number}", 'expected an object with a string "prompt"')
        prompts.append(row["prompt"])
    return prompts


def complete(
    model: Any, tokenizer: Any, prompts: Sequence[str], settings: GenerationSettings | None = None
) -> list[str]:
    """The completion of each prompt (the new text only, special tokens left out), one prompt at a time so
    that a completion never depends on the other prompts (no padding). Restores the model's modes."""
    import torch
    from transformers import GenerationConfig

    from qckit.evaluate.loglik import eval_mode, model_device

    settings = settings or GenerationSettings()
    eos = tokenizer.eos_token_id
    options: dict[str, Any] = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        repetition_penalty=settings.repetition_penalty,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        use_cache=True,
    )
    if settings.do_sample:
        options.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    config = GenerationConfig(**options)
    device = model_device(model)
    completions = []
    # sampling draws from torch's global generator: fork it, so the caller's random state is left as it was
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), eval_mode(model):
        for prompt in prompts:
            if settings.chat:
                text = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
                ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
            else:
                ids = tokenizer(prompt, return_tensors="pt").input_ids
            if (
                settings.do_sample
            ):  # each prompt its own seed: a completion never depends on the other prompts
                torch.manual_seed(_prompt_seed(settings.seed, prompt))
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=torch.ones_like(ids).to(device),
                generation_config=config,
            )
            completions.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return completions


def _prompt_seed(seed: int, prompt: str) -> int:
    """The sampling seed of one prompt: from the settings' seed and the prompt's text alone."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}\x00{prompt}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63)
