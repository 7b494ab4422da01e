"""``qckit export``: a trained model as files other tools load, in one of :data:`EXPORT_FORMATS`.

* ``safetensors`` (the default): a ``save_pretrained`` directory (:func:`qckit.models.merge_and_export`)
  that ``transformers`` loads without peft;
* ``gguf``: one ``.gguf`` file for llama.cpp and Ollama (:func:`qckit.gguf_export.write_gguf`).

In both, a LoRA adapter (when given) is merged into the base weights first; the output appears complete
or not at all.
"""

from __future__ import annotations

from pathlib import Path

from qckit.errors import InputError, QckitError

__all__ = ["EXPORT_FORMATS", "OUTTYPES", "DEFAULT_OUTTYPE", "export_model"]

#: what ``--format`` accepts
EXPORT_FORMATS = ("safetensors", "gguf")
#: ``--outtype`` values each format accepts (the type of the weight matrices)
OUTTYPES = {"safetensors": ("f32", "f16", "bf16"), "gguf": ("f32", "f16", "bf16", "q8_0")}
#: the ``--outtype`` of each format when none is given
DEFAULT_OUTTYPE = {"safetensors": "f32", "gguf": "f16"}
_MERGE_DTYPE = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def export_model(
    model: str,
    output: str | Path,
    *,
    adapter_dir: str | Path | None = None,
    format: str = "safetensors",
    outtype: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Export ``model`` (any spec :func:`qckit.models.resolve_model` accepts), with the LoRA adapter in
    ``adapter_dir`` merged when given, to ``output`` in ``format``; returns ``output``.

    ``outtype`` defaults to :data:`DEFAULT_OUTTYPE`. A GGUF export merges in float32, then converts each
    tensor; its ``output`` must be a ``.gguf`` file path. When the base model is itself a GGUF file, its
    ``tokenizer.ggml.pre`` is carried over to the new file.
    """
    if format not in EXPORT_FORMATS:
        raise QckitError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    outtype = outtype or DEFAULT_OUTTYPE[format]
    if outtype not in OUTTYPES[format]:
        raise QckitError(
            f"--outtype {outtype} is not available for {format}; choose one of {', '.join(OUTTYPES[format])}"
        )
    output = Path(output)
    if format == "safetensors":
        from qckit.models import merge_and_export

        return merge_and_export(
            model, adapter_dir, output, dtype=_MERGE_DTYPE[outtype], trust_remote_code=trust_remote_code
        )

    from qckit.gguf_export import source_gguf_pre, write_gguf
    from qckit.models import load_merged

    if output.suffix.lower() != ".gguf":
        raise InputError(output, "a GGUF export is one file: give an output path ending in .gguf")
    if output.is_dir():
        raise InputError(output, "is a directory; give the path of the .gguf file to write")
    _check_architecture(model, trust_remote_code)
    merged, tokenizer, source = load_merged(
        model, adapter_dir, dtype="fp32", trust_remote_code=trust_remote_code
    )
    pre = source_gguf_pre(source.gguf_file) if source.gguf_file else None
    return write_gguf(merged, tokenizer, output, outtype=outtype, name=output.stem, pre_tokenizer=pre)


def _check_architecture(model: str, trust_remote_code: bool) -> None:
    """Refuse an architecture GGUF export does not handle from the config alone, before loading weights."""
    from transformers import AutoConfig

    from qckit.gguf_export import GGUF_MODEL_TYPES, unsupported_architecture
    from qckit.models import resolve_model

    source = resolve_model(model)  # a GGUF's config is read from its metadata: nothing is dequantized yet
    try:
        config = AutoConfig.from_pretrained(
            source.path_or_id, trust_remote_code=trust_remote_code, **source.pretrained_kwargs()
        )
    except Exception:  # an unreadable config is reported with its path by the model load that follows
        return
    if getattr(config, "model_type", None) not in GGUF_MODEL_TYPES:
        raise unsupported_architecture(source.display, getattr(config, "model_type", None))
