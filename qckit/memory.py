"""How much accelerator memory training a Llama-style model takes: a computed estimate, not a measurement.

:func:`training_memory` adds up, in bytes:

* **weights**: the base model in its load dtype (2 bytes a parameter in bf16/fp16, 4 in fp32; a 4-bit
  base stores its linear layers in 0.5 byte plus about 3 % of block scales, an 8-bit one in 1 byte, the
  embeddings and norms staying in 16 bits); a full fine-tune keeps fp32 master weights (4 bytes);
* **trainable state**: each trainable parameter's fp32 weight copy (LoRA), gradient and two AdamW moments:
  16 bytes a trainable parameter (12 for a full fine-tune, whose weight is counted above);
* **activations** kept for the backward pass, per layer and token, in the compute dtype: the inputs of
  the norms and of the q/k/v, o, gate/up and down projections and their outputs,
  ``6·h + 2·kv + 4·i`` values (h hidden, kv the key/value width, i the MLP width), the attention scores
  not being stored with SDPA or flash attention (Korthikanti et al., 2022, "Reducing Activation
  Recomputation in Large Transformer Models", counted for a SwiGLU MLP); with gradient checkpointing only
  each layer's input (``h`` values) is kept, plus one layer's activations while it is recomputed;
* **logits**: batch × window × vocabulary in the compute dtype, their float32 copy for the loss and its
  gradient (10 bytes each in bf16);
* **overhead**: 0.75 GiB of CUDA context and kernels, then 10 % for the allocator's fragmentation.

The numbers are for one GPU holding the whole model (FSDP divides weights and states by the number of
GPUs). ``bench/vram_table.py`` prints the table README quotes; ``bench/gpu_check.sh`` compares the
estimate with ``torch.cuda.max_memory_allocated`` where a GPU is lent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KNOWN_SHAPES", "METHODS", "ModelShape", "MemoryEstimate", "shape_of", "training_memory"]

#: ways to train: LoRA on a 16-bit (or fp32) base, LoRA on a 4-bit or 8-bit base, the whole model
METHODS = ("lora", "4bit", "8bit", "full")
_GIB = 1024**3
_OVERHEAD_BYTES = int(0.75 * _GIB)
_FRAGMENTATION = 1.10
_ADAM_STATE = 12  # fp32 gradient + two fp32 moments, bytes per trainable parameter
_FOUR_BIT = 0.5 * 1.03  # 4-bit values plus the block scales (64 values a block, double-quantized)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-style decoder that decide its memory."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool = True

    @property
    def kv_width(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def linear_params(self) -> int:
        """Parameters of the projections in the decoder layers (what LoRA adapts and bitsandbytes quantizes)."""
        h, kv, i = self.hidden, self.kv_width, self.intermediate
        return self.layers * (2 * h * h + 2 * h * kv + 3 * h * i)

    @property
    def params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        norms = (2 * self.layers + 1) * self.hidden
        return self.linear_params + embeddings + norms

    def lora_params(self, r: int) -> int:
        """Trainable parameters of LoRA rank ``r`` on every projection (the seed's target modules)."""
        h, kv, i = self.hidden, self.kv_width, self.intermediate
        per_layer = r * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))
        return self.layers * per_layer

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a ``config.json`` of a Llama-style model (Llama, Mistral, Qwen2, SmolLM …)."""
        heads = int(config["num_attention_heads"])
        return cls(
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            tied=bool(config.get("tie_word_embeddings", False)),
        )


#: the shapes of models this project names, from their published ``config.json`` (no download needed)
KNOWN_SHAPES: dict[str, ModelShape] = {
    "HuggingFaceTB/SmolLM2-135M": ModelShape(576, 30, 1536, 49152, 9, 3, True),
    "HuggingFaceTB/SmolLM2-360M": ModelShape(960, 32, 2560, 49152, 15, 5, True),
    "HuggingFaceTB/SmolLM2-1.7B": ModelShape(2048, 24, 8192, 49152, 32, 32, True),
    "meta-llama/Llama-3.2-1B": ModelShape(2048, 16, 8192, 128256, 32, 8, True),
    "meta-llama/Llama-3.2-3B": ModelShape(3072, 28, 8192, 128256, 24, 8, True),
    "meta-llama/Llama-3.1-8B": ModelShape(4096, 32, 14336, 128256, 32, 8, False),
}


def shape_of(model: str) -> ModelShape | None:
    """The shape of ``model``: a known hub id (with or without ``-Instruct``), or a local directory's
    ``config.json``; ``None`` when it cannot be told without loading (a GGUF file, an unknown hub id)."""
    base = model.removesuffix("-Instruct")
    if base in KNOWN_SHAPES:
        return KNOWN_SHAPES[base]
    config = Path(model) / "config.json"
    if config.is_file():
        try:
            return ModelShape.from_config(json.loads(config.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of :func:`training_memory`'s estimate, in bytes; ``total`` includes the overhead."""

    weights: int
    trainable_state: int
    activations: int
    logits: int
    trainable_params: int

    @property
    def total(self) -> int:
        parts = self.weights + self.trainable_state + self.activations + self.logits
        return int((parts + _OVERHEAD_BYTES) * _FRAGMENTATION)

    @property
    def total_gib(self) -> float:
        return self.total / _GIB


def training_memory(
    shape: ModelShape,
    *,
    method: str = "lora",
    precision: str = "bf16",
    batch_size: int = 8,
    window: int = 1024,
    lora_r: int = 16,
    gradient_checkpointing: bool = True,
) -> MemoryEstimate:
    """The estimated peak memory of training ``shape`` on one GPU (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    compute = 4 if precision == "fp32" else 2
    other = shape.params - shape.linear_params  # embeddings and norms: never quantized
    if method == "full":
        weights = shape.params * 4
        trainable = shape.params
        state = trainable * _ADAM_STATE
    else:
        linear_bytes = {"lora": compute, "4bit": _FOUR_BIT, "8bit": 1.0}[method]
        weights = int(shape.linear_params * linear_bytes + other * compute)
        trainable = shape.lora_params(lora_r)
        state = trainable * (4 + _ADAM_STATE)
    tokens = batch_size * window
    h, kv, i = shape.hidden, shape.kv_width, shape.intermediate
    per_layer = 6 * h + 2 * kv + 4 * i
    if gradient_checkpointing:
        values = tokens * (shape.layers * h + per_layer)
    else:
        values = tokens * shape.layers * per_layer
    logits = tokens * shape.vocab * (compute + 4 + 4)
    return MemoryEstimate(
        weights=int(weights),
        trainable_state=int(state),
        activations=int(values * compute),
        logits=int(logits),
        trainable_params=int(trainable),
    )
