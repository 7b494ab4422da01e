"""Writing a Llama-architecture model and its tokenizer as one GGUF file (llama.cpp, Ollama).

:func:`write_gguf` takes a loaded (LoRA-merged) ``transformers`` model and its tokenizer and writes
what llama.cpp's loader reads, with the ``gguf`` package's writer and tables:

* **metadata**: ``llama.*`` hyper-parameters (context, widths, heads, RoPE base and scaling, RMS-norm
  epsilon), ``general.*`` (name, file type) and the tokenizer under ``tokenizer.ggml.*``;
* **tensors**: names from ``gguf.get_tensor_name_map`` (``model.layers.3.self_attn.q_proj.weight`` →
  ``blk.3.attn_q.weight``), with the Q and K projections' rows reordered for llama.cpp's rotary
  layout (below); norms and other 1-D tensors stay float32, matrices take the chosen type;
* **tokenizer**: byte-level BPE (``tokenizer.ggml.model = "gpt2"``): every token in its byte-level
  spelling, its type (normal, control for special tokens, user-defined for other added tokens,
  unused for embedding rows without a token), the merges, the special token ids, whether BOS/EOS are
  added, the chat template, and the pre-tokenizer name (``tokenizer.ggml.pre``) that tells llama.cpp
  how text is split before BPE. Tokenizers of another kind (SentencePiece/Unigram) are refused.

RoPE layout: Hugging Face Llama rotates the two *halves* of each head's query/key vector, llama.cpp
rotates adjacent *pairs*. The rows of ``q_proj`` and ``k_proj`` (and their biases) are therefore
reordered head by head so that row ``i`` of the first half and row ``i`` of the second half become
neighbours; transformers' GGUF loader applies the inverse when it reads the file back.

The file is written tensor by tensor (one converted tensor in memory at a time) into a temporary
file beside the output and renamed when complete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qckit._fs import staging_file
from qckit.errors import InputError, QckitError

__all__ = [
    "GGUF_OUTTYPES",
    "GGUF_MODEL_TYPES",
    "write_gguf",
    "gguf_pre_tokenizer",
    "source_gguf_pre",
    "unsupported_architecture",
]

#: ``--outtype`` values: the type of the matrices (1-D tensors and norms are always float32).
GGUF_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
#: transformers ``model_type`` → GGUF architecture, for the architectures this writer handles.
GGUF_MODEL_TYPES = {"llama": "llama"}


def unsupported_architecture(display: str, model_type: str | None) -> InputError:
    """The one-line error for a model whose architecture GGUF export does not handle."""
    return InputError(
        display,
        f"GGUF export handles the Llama architecture (model_type {', '.join(map(repr, GGUF_MODEL_TYPES))}); "
        f"this model is {model_type!r}; export it as safetensors instead (--format safetensors)",
    )


@dataclass(frozen=True)
class _Tensor:
    name: str  # GGUF name
    source: str  # state-dict key, or "" for a generated tensor
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType


def write_gguf(
    model: Any,
    tokenizer: Any,
    path: str | Path,
    *,
    outtype: str = "f16",
    name: str | None = None,
    pre_tokenizer: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` (a ``LlamaForCausalLM``, adapters merged) and ``tokenizer`` to the GGUF file ``path``.

    ``outtype`` is one of :data:`GGUF_OUTTYPES`; with ``q8_0`` a matrix whose rows are not a multiple of
    32 values is stored as f16, as llama.cpp's converter does. ``pre_tokenizer`` overrides the detected
    ``tokenizer.ggml.pre`` (pass the source file's when the model came from a GGUF file). ``name`` is
    ``general.name``. ``metadata`` are extra string keys (an export's provenance). Raises :class:`~qckit.errors.InputError` for an architecture, a RoPE scaling or a
    tokenizer that GGUF export does not handle. Returns ``path``.
    """
    import gguf

    if outtype not in GGUF_OUTTYPES:
        raise QckitError(f"GGUF outtype must be one of {', '.join(GGUF_OUTTYPES)}, got {outtype!r}")
    path = Path(path)
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in GGUF_MODEL_TYPES:
        raise unsupported_architecture(
            name or getattr(config, "_name_or_path", "") or type(model).__name__, model_type
        )
    display = name or getattr(config, "_name_or_path", "") or "model"
    arch = gguf.MODEL_ARCH.LLAMA
    n_layers = int(config.num_hidden_layers)
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_head)
    rope = _rope(config, head_dim, display)

    state = model.state_dict()
    tied = bool(getattr(config, "tie_word_embeddings", False))
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    plan: list[_Tensor] = []
    if rope.freq_factors is not None:
        plan.append(
            _Tensor(
                gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                "",
                (len(rope.freq_factors),),
                gguf.GGMLQuantizationType.F32,
            )
        )
    for key, tensor in state.items():
        if tied and key == "lm_head.weight":
            continue  # llama.cpp (and transformers' loader) reuse token_embd when output.weight is absent
        gguf_name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise InputError(display, f"tensor {key!r} has no GGUF name for the Llama architecture")
        plan.append(
            _Tensor(gguf_name, key, tuple(tensor.shape), _qtype(gguf_name, tuple(tensor.shape), outtype))
        )

    vocab = _vocab(tokenizer, config, int(state["model.embed_tokens.weight"].shape[0]), display)
    with tempfile.TemporaryDirectory(prefix="qckit-gguf-vocab-") as tmp, _quiet_gguf_logs():
        # gguf's SpecialVocab reads merges, special token ids, add_bos/add_eos and the chat template
        # from a saved tokenizer directory, the way llama.cpp's converter does.
        tokenizer.save_pretrained(tmp)
        config.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=len(vocab.tokens))

    with staging_file(path) as tmp_path, _quiet_gguf_logs():
        writer = gguf.GGUFWriter(tmp_path, gguf.MODEL_ARCH_NAMES[arch])
        try:
            writer.add_name(display)
            for key, value in (metadata or {}).items():
                writer.add_string(key, value)
            writer.add_file_type(_FILE_TYPES[outtype](gguf))
            if outtype == "q8_0":
                writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            writer.add_vocab_size(len(vocab.tokens))
            writer.add_context_length(int(config.max_position_embeddings))
            writer.add_embedding_length(int(config.hidden_size))
            writer.add_block_count(n_layers)
            writer.add_feed_forward_length(int(config.intermediate_size))
            writer.add_head_count(n_head)
            writer.add_head_count_kv(n_kv)
            writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
            writer.add_rope_freq_base(rope.theta)
            writer.add_rope_dimension_count(head_dim)
            if head_dim != config.hidden_size // n_head:
                writer.add_key_length(head_dim)
                writer.add_value_length(head_dim)
            if rope.linear_factor is not None:
                writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
                writer.add_rope_scaling_factor(rope.linear_factor)
            writer.add_tokenizer_model("gpt2")
            writer.add_tokenizer_pre(pre_tokenizer or vocab.pre)
            writer.add_token_list(vocab.tokens)
            writer.add_token_types(vocab.types)
            special.add_to_gguf(writer, quiet=True)
            for item in plan:
                byte_shape = gguf.quant_shape_to_byte_shape(item.shape, item.qtype)
                writer.add_tensor_info(
                    item.name, byte_shape, _np_uint8(), math.prod(byte_shape), raw_dtype=item.qtype
                )
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for item in plan:
                if item.source:
                    data = _gguf_layout(item.source, state[item.source], n_head, n_kv)
                else:
                    import torch

                    data = torch.tensor(rope.freq_factors, dtype=torch.float32)
                writer.write_tensor_data(_encode(data, item.qtype))
        finally:
            writer.close()
    return path


@contextlib.contextmanager
def _quiet_gguf_logs() -> Iterator[None]:
    """Keep the gguf package's log records (notes on unusual templates …) from reaching stderr."""
    logger = logging.getLogger("gguf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- hyper-parameters ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rope:
    theta: float
    linear_factor: float | None = None
    freq_factors: list[float] | None = None  # llama3 scaling: one divisor per rotary frequency


def _rope(config: Any, head_dim: int, display: str) -> _Rope:
    params = dict(getattr(config, "rope_parameters", None) or {})
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    if kind == "default":
        return _Rope(theta)
    if kind == "linear":
        return _Rope(theta, linear_factor=float(params["factor"]))
    if kind == "llama3":
        return _Rope(theta, freq_factors=_llama3_frequency_factors(params, theta, head_dim))
    raise InputError(
        display, f"GGUF export does not handle RoPE scaling {kind!r} (handled: default, linear, llama3)"
    )


def _llama3_frequency_factors(params: dict[str, Any], theta: float, head_dim: int) -> list[float]:
    """The divisor llama.cpp applies to each rotary frequency (its ``rope_freqs`` tensor) for Llama-3 scaling.

    Frequencies whose wavelength is short compared with the original context are kept (1), long ones are
    divided by ``factor``, and those in between are blended smoothly, as Llama 3.1 defines it.
    """
    factor = float(params.get("factor", 8.0))
    low = float(params.get("low_freq_factor", 1.0))
    high = float(params.get("high_freq_factor", 4.0))
    original = float(params.get("original_max_position_embeddings", 8192))
    factors: list[float] = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * theta ** (i / head_dim)
        if wavelength < original / high:
            factors.append(1.0)
        elif wavelength > original / low:
            factors.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return factors


def _file_type(name: str) -> Any:
    return lambda gguf: getattr(gguf.LlamaFileType, name)


_FILE_TYPES = {
    "f32": _file_type("ALL_F32"),
    "f16": _file_type("MOSTLY_F16"),
    "bf16": _file_type("MOSTLY_BF16"),
    "q8_0": _file_type("MOSTLY_Q8_0"),
}


# -- tensors ---------------------------------------------------------------------------------------


def _qtype(gguf_name: str, shape: tuple[int, ...], outtype: str) -> Any:
    import gguf

    q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight"):
        return q.F32
    if outtype == "q8_0":
        block = gguf.GGML_QUANT_SIZES[q.Q8_0][0]
        return q.Q8_0 if shape[-1] % block == 0 else q.F16
    return {"f32": q.F32, "f16": q.F16, "bf16": q.BF16}[outtype]


def _gguf_layout(key: str, tensor: Any, n_head: int, n_kv: int) -> Any:
    """``tensor`` as llama.cpp expects it: Q/K rows reordered for its rotary layout (module docstring)."""
    if key.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
        return _pair_rotary_halves(tensor, n_head)
    if key.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
        return _pair_rotary_halves(tensor, n_kv)
    return tensor


def _pair_rotary_halves(tensor: Any, heads: int) -> Any:
    """Per head, interleave the rows of the two halves: ``[a0 a1 … b0 b1 …]`` → ``[a0 b0 a1 b1 …]``."""
    rows = tensor.shape[0]
    half = rows // heads // 2
    return tensor.reshape(heads, 2, half, *tensor.shape[1:]).transpose(1, 2).reshape(tensor.shape)


def _np_uint8() -> Any:
    import numpy as np

    return np.uint8


def _encode(tensor: Any, qtype: Any) -> Any:
    """The bytes of ``tensor`` in GGUF type ``qtype`` as a numpy array (C order)."""
    import gguf
    import torch

    q = gguf.GGMLQuantizationType
    tensor = tensor.detach().to("cpu").contiguous()
    if qtype == q.F32:
        return tensor.to(torch.float32).numpy()
    if qtype == q.F16:
        return tensor.to(torch.float16).numpy()
    if qtype == q.BF16:
        return tensor.to(torch.bfloat16).view(torch.int16).numpy()
    return gguf.quants.quantize(tensor.to(torch.float32).numpy(), qtype)


# -- tokenizer -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    types: list[int]
    pre: str


def _vocab(tokenizer: Any, config: Any, rows: int, display: str) -> _Vocab:
    import gguf

    backend = _backend_json(tokenizer, display)
    model = backend.get("model") or {}
    decoder = backend.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or not _is_byte_level(decoder):
        raise InputError(
            display,
            "GGUF export handles byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM style); this tokenizer is "
            f"{model.get('type', '?')} with a {decoder.get('type', 'missing')} decoder",
        )
    if len(tokenizer) > rows:
        raise InputError(
            display,
            f"the tokenizer has {len(tokenizer)} tokens but the model only {rows} embedding rows; "
            "resize the embeddings (model.resize_token_embeddings) before exporting",
        )
    by_id: dict[int, str] = {int(i): tok for tok, i in model.get("vocab", {}).items()}
    added = {int(a["id"]): a for a in backend.get("added_tokens") or []}
    types = gguf.TokenType
    tokens: list[str] = []
    kinds: list[int] = []
    for i in range(rows):
        if i in added:
            tokens.append(added[i]["content"])
            kinds.append(types.CONTROL if added[i].get("special") else types.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            kinds.append(types.NORMAL)
        else:  # embedding rows beyond the vocabulary (padded matrices)
            tokens.append(f"[PAD{i}]")
            kinds.append(types.UNUSED)
    return _Vocab(tokens, [int(k) for k in kinds], gguf_pre_tokenizer(backend.get("pre_tokenizer"), display))


def _backend_json(tokenizer: Any, display: str) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError(
            display, "GGUF export needs a fast (Rust-backed) tokenizer; this one has no tokenizer.json"
        )
    data: dict[str, Any] = json.loads(backend.to_str())
    return data


def _is_byte_level(part: dict[str, Any]) -> bool:
    if part.get("type") == "ByteLevel":
        return True
    return part.get("type") == "Sequence" and any(_is_byte_level(p) for p in part.get("decoders") or [])


def _pre_pieces(pre: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        return [p for item in pre.get("pretokenizers") or [] for p in _pre_pieces(item)]
    return [pre]


def gguf_pre_tokenizer(pre: dict[str, Any] | None, display: str = "model") -> str:
    """The ``tokenizer.ggml.pre`` name llama.cpp knows for a ``tokenizer.json`` ``pre_tokenizer`` table.

    GPT-2's byte-level split is ``gpt2``; digits split one by one before it is ``smollm``; a regex
    ``Split`` before a regex-free byte-level step is looked up in transformers' own table of GGUF
    pre-tokenizer regexes (``llama3`` for Llama 3's, ``qwen2`` …). Anything else is an
    :class:`~qckit.errors.InputError`: llama.cpp would split the text differently.
    """
    pieces = _pre_pieces(pre)
    kinds = [p.get("type") for p in pieces]
    if kinds == ["ByteLevel"] and pieces[0].get("use_regex", True):
        return "gpt2"
    if (
        kinds == ["Digits", "ByteLevel"]
        and pieces[0].get("individual_digits")
        and pieces[1].get("use_regex", True)
    ):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not pieces[1].get("use_regex", True):
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

        pattern = (pieces[0].get("pattern") or {}).get("Regex")
        for pre_name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
            if regex == pattern:
                return pre_name
    raise InputError(
        display,
        "GGUF export cannot name this tokenizer's pre-tokenizer for llama.cpp "
        f"({json.dumps(pre, ensure_ascii=False)[:160]}); handled: GPT-2 byte-level, SmolLM digits, and the "
        "regex splits transformers knows (Llama 3, Qwen2 …)",
    )


def source_gguf_pre(gguf_file: str | Path) -> str | None:
    """The ``tokenizer.ggml.pre`` of an existing GGUF file, or ``None`` when it has none."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_file))
    field = reader.fields.get("tokenizer.ggml.pre")
    if field is None:
        return None
    value = field.contents()
    return str(value) if value else None


def iter_tensor_names(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(name, type)`` of each tensor of a GGUF file (for reports and tests)."""
    import gguf

    for tensor in gguf.GGUFReader(str(path)).tensors:
        yield tensor.name, tensor.tensor_type.name
