"""``qckit export``: a trained model as files other tools load, in one of :data:`EXPORT_FORMATS`.

* ``safetensors`` (the default): a ``save_pretrained`` directory (:func:`qckit.models.merge_and_export`)
  that ``transformers`` loads without peft;
* ``gguf``: one ``.gguf`` file for llama.cpp and Ollama (:func:`qckit.gguf_export.write_gguf`).

In both, a LoRA adapter (when given) is merged into the base weights first; the output appears complete
or not at all. The format follows the output path when none is given (``.gguf`` → gguf). A finished run
folder (:func:`read_run`) names its base model and holds its adapter or its fully trained model;
:func:`qckit.delta.carry_delta` writes a run's delta scaled, or added to another model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qckit.errors import InputError, QckitError
from qckit.hardware import outtype_precision
from qckit.outputs import SUMMARY_NAME

if TYPE_CHECKING:
    from qckit.models import ModelSource

__all__ = [
    "EXPORT_FORMATS",
    "OUTTYPES",
    "DEFAULT_OUTTYPE",
    "EXPORT_RECORD",
    "GGUF_RECORD_KEY",
    "RunModel",
    "export_format",
    "export_model",
    "modelfile_path",
    "write_ollama_modelfile",
    "read_run",
    "run_base",
]

#: what ``--format`` accepts
EXPORT_FORMATS = ("safetensors", "gguf")
#: ``--outtype`` values each format accepts (the type of the weight matrices)
OUTTYPES = {"safetensors": ("f32", "f16", "bf16"), "gguf": ("f32", "f16", "bf16", "q8_0")}
#: the ``--outtype`` of each format when none is given
DEFAULT_OUTTYPE = {"safetensors": "f32", "gguf": "f16"}
#: the provenance of a delta export (run, base, onto, strength), a JSON file in a safetensors folder …
EXPORT_RECORD = "qckit_export.json"
#: … and the same JSON as one string in a GGUF file's metadata
GGUF_RECORD_KEY = "qckit.export"
_GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class RunModel:
    """A trained model to export: the ``base`` model spec it was trained from, and either the LoRA
    adapter in ``adapter_dir`` or (full fine-tuning, ``adapter_dir`` ``None``) the trained model in
    ``run_dir``. ``source`` names where ``base`` was read (messages)."""

    run_dir: Path
    base: str
    adapter_dir: Path | None
    source: str = ""

    @property
    def model(self) -> str:
        """The spec that loads the trained weights (with :attr:`adapter_dir` applied, for a LoRA run)."""
        return self.base if self.adapter_dir is not None else str(self.run_dir)

    def base_source(self) -> ModelSource:
        """:attr:`base` resolved; one that cannot be found names where it was read and asks for ``--model``."""
        from qckit.models import resolve_model

        try:
            return resolve_model(self.base)
        except InputError as exc:
            if not self.source or self.source == "--model":
                raise
            raise InputError(
                self.source,
                f"the run's base model {self.base!r} cannot be found from here ({exc.detail}); give --model",
            ) from None


def run_base(directory: str | Path) -> str | None:
    """The base model a run folder names: its adapter's ``base_model_name_or_path`` (a local base as its
    absolute path: :func:`qckit.models.shareable_reference`), else its summary's ``model``; ``None``
    when neither does."""
    directory = Path(directory)
    for name, key in (("adapter_config.json", "base_model_name_or_path"), (SUMMARY_NAME, "model")):
        path = directory / name
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8")).get(key)
            except (OSError, ValueError, AttributeError) as exc:
                raise InputError(path, f"unreadable: {exc}") from None
            if value:
                return str(value)
    return None


def read_run(run_dir: str | Path, *, base: str | None = None) -> RunModel:
    """The trained model of the run in ``run_dir`` (a train stage's ``output_dir``, or any folder of a
    peft adapter that names its base).

    The base model is the one the folder names (:func:`run_base`), unless ``base`` is given (the run's
    base moved); ``adapter_config.json`` in the folder makes it a LoRA run, a ``config.json`` without it
    (and a ``training_summary.json``) a full fine-tune, whose base is resolved only when a delta needs
    it. Raises :class:`~qckit.errors.InputError` naming the folder (not a run, no base named, a base
    that cannot be found from here) or the unreadable file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(
            run_dir, "run folder not found" if not run_dir.exists() else "run folder is not a directory"
        )
    lora = (run_dir / "adapter_config.json").is_file()
    if not lora and not (run_dir / SUMMARY_NAME).is_file():
        raise InputError(
            run_dir, f"not a run folder (no {SUMMARY_NAME}, no adapter_config.json); give --model instead"
        )
    if not lora and not (run_dir / "config.json").is_file():
        raise InputError(run_dir, "the run folder holds neither a LoRA adapter nor a model (no config.json)")
    source = "--model" if base is not None else str(run_dir)
    base = base if base is not None else run_base(run_dir)
    if not base:
        raise InputError(run_dir, "the run folder names no base model; give --model")
    run = RunModel(run_dir, base, run_dir if lora else None, source)
    if lora:
        run.base_source()  # needed for any export; a full fine-tune needs its base only for a delta
    return run


def export_format(
    output: str | Path, format: str | None = None, outtype: str | None = None
) -> tuple[str, str]:
    """``(format, outtype)`` of an export to ``output``: ``format`` or, when ``None``, the one its suffix
    says (``.gguf`` → gguf, anything else safetensors), and ``outtype`` or the format's default. A
    ``format`` that contradicts the suffix, or an ``outtype`` the format lacks, is an error."""
    is_gguf = Path(output).suffix.lower() == _GGUF_SUFFIX
    if format is None:
        format = "gguf" if is_gguf else "safetensors"
    if format not in EXPORT_FORMATS:
        raise QckitError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if is_gguf and format != "gguf":
        raise InputError(
            output, f"ends in {_GGUF_SUFFIX} but the format is {format}; drop --format or rename the output"
        )
    outtype = outtype or DEFAULT_OUTTYPE[format]
    if outtype not in OUTTYPES[format]:
        raise QckitError(
            f"--outtype {outtype} is not available for {format}; choose one of {', '.join(OUTTYPES[format])}"
        )
    return format, outtype


def check_gguf_output(output: Path) -> None:
    """Refuse a GGUF output path that is not a ``.gguf`` file path."""
    if output.suffix.lower() != _GGUF_SUFFIX:
        raise InputError(output, "a GGUF export is one file: give an output path ending in .gguf")
    if output.is_dir():
        raise InputError(output, "is a directory; give the path of the .gguf file to write")


def export_model(
    model: str,
    output: str | Path,
    *,
    adapter_dir: str | Path | None = None,
    format: str | None = None,
    outtype: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Export ``model`` (any spec :func:`qckit.models.resolve_model` accepts), with the LoRA adapter in
    ``adapter_dir`` merged when given, to ``output`` in ``format``; returns ``output``.

    ``format`` and ``outtype`` default as :func:`export_format` says. A GGUF export merges in float32,
    then converts each tensor; its ``output`` must be a ``.gguf`` file path. When the base model is itself
    a GGUF file, its ``tokenizer.ggml.pre`` is carried over to the new file.
    """
    format, outtype = export_format(output, format, outtype)
    output = Path(output)
    if format == "safetensors":
        from qckit.models import merge_and_export

        return merge_and_export(
            model, adapter_dir, output, dtype=outtype_precision(outtype), trust_remote_code=trust_remote_code
        )

    from qckit.gguf_export import source_gguf_pre, write_gguf
    from qckit.models import load_merged

    check_gguf_output(output)
    check_architecture(model, trust_remote_code)
    merged, tokenizer, source = load_merged(
        model, adapter_dir, dtype="fp32", trust_remote_code=trust_remote_code
    )
    pre = source_gguf_pre(source.gguf_file) if source.gguf_file else None
    written = write_gguf(merged, tokenizer, output, outtype=outtype, name=output.stem, pre_tokenizer=pre)
    write_ollama_modelfile(written, tokenizer)
    return written


def modelfile_path(gguf_path: Path) -> Path:
    """Where a GGUF export's Ollama ``Modelfile`` goes: ``quebec.gguf`` → ``quebec.Modelfile`` beside it."""
    return gguf_path.with_suffix(".Modelfile")


def write_ollama_modelfile(gguf_path: Path, tokenizer: Any) -> Path:
    """Write the Ollama ``Modelfile`` of the GGUF file ``gguf_path`` beside it
    (``ollama create NAME -f quebec.Modelfile``): a model with a chat template (in the file, which Ollama
    reads) chats; one without completes raw text."""
    from qckit._fs import atomic_write_text
    from qckit.model_card import ollama_modelfile

    chat = bool(getattr(tokenizer, "chat_template", None))
    return atomic_write_text(modelfile_path(gguf_path), ollama_modelfile(gguf_path.name, chat_template=chat))


def check_architecture(model: str, trust_remote_code: bool) -> None:
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
