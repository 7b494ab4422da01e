"""A run's weight delta, scaled or carried onto another model ("chat vector": Huang et al., ACL 2024).

Continued pretraining on a base model, then adding the change it made to the base's instruct sibling,
gives a chatty model of the new language variety without redoing instruction tuning. For every
parameter::

    W_out = W_target + λ · (W_run − W_base)

``W_run`` is the run's trained model: for a LoRA run the base with the adapter merged, so the delta of
an adapted matrix is B·A·scale (to float32 rounding) and that of a matrix trained in full (embeddings,
output head, ``modules_to_save``) is trained − base; every peft variant (DoRA included) is covered by
the one definition. ``W_target`` is the ``onto`` model, or the run's own base, where ``λ`` interpolates
between the base and the run (WiSE-FT). ``λ`` (``strength``) is 0 or more: 0 writes the target
unchanged, 1 adds the whole delta, above 1 extrapolates; a negative one is refused.

Rows of a grown vocabulary (``train.add_tokens``) have no base row: there the target's own row stands
for it (the row becomes ``(1 − λ)·target + λ·trained``); on the run's own base they are the trained
rows. A target that lacks them is refused.

Before any weight is loaded, the target is checked against the run: the architecture (the config keys
in :data:`CONFIG_KEYS`), then the vocabulary (the same tokens at the same ids), then the vocabulary
size; each tensor's name and shape once loaded. The first mismatch is refused in one line naming it,
and nothing is written. The target's tokenizer (its special tokens and chat template) is written with
the weights, and the output records its provenance (:data:`qckit.export.EXPORT_RECORD`). Memory: two
float32 copies of the model (the delta and the target), about 8 bytes per parameter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qckit.errors import InputError, QckitError
from qckit.export import RunModel

__all__ = ["CONFIG_KEYS", "carry_delta", "check_strength"]

#: config keys that must agree between the run's model and the target (one missing on either side is
#: not compared: a config read from GGUF metadata may lack ``architectures``)
CONFIG_KEYS = (
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "tie_word_embeddings",
)
#: compared after the vocabularies, whose own check names the first token that differs
_VOCAB_SIZE = "vocab_size"


def check_strength(strength: float) -> float:
    """``strength`` as a float when it is a finite number ≥ 0, else :class:`~qckit.errors.QckitError`."""
    value = float(strength)
    if not math.isfinite(value) or value < 0:
        raise QckitError(
            f"--strength must be a finite number ≥ 0 (1 adds the run's whole delta), got {strength}"
        )
    return value


def carry_delta(
    run: RunModel,
    output: str | Path,
    *,
    onto: str | None = None,
    strength: float = 1.0,
    format: str | None = None,
    outtype: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Write ``W_target + strength · (W_run − W_base)`` to ``output`` in ``format`` (see the module's
    docstring): ``W_target`` is the model ``onto`` (any spec :func:`qckit.models.resolve_model` accepts)
    or, when ``None``, the run's base. ``format`` and ``outtype`` as in :func:`qckit.export.export_format`.

    Raises :class:`~qckit.errors.InputError` naming the first mismatch between the run and the target
    (architecture, vocabulary, a grown vocabulary's token the target lacks, a tensor's shape) before
    writing anything. The output appears complete or not at all. Returns ``output``.
    """
    import torch

    from qckit.export import check_architecture, check_gguf_output, export_format
    from qckit.models import check_model_output_dir, load_model, resolve_model

    strength = check_strength(strength)
    format, outtype = export_format(output, format, outtype)
    output = Path(output)
    if format == "gguf":
        check_gguf_output(output)
    else:
        check_model_output_dir(output)
    base = run.base_source()
    target = resolve_model(onto) if onto is not None else base
    _refuse_output_over_inputs(output, [run.run_dir, base, target])
    tokenizer = _check_target(run, target if onto is not None else None, trust_remote_code)
    if format == "gguf":
        check_architecture(onto or run.base, trust_remote_code)

    delta, grown = _delta(run, trust_remote_code)
    model = load_model(target, dtype=torch.float32, trust_remote_code=trust_remote_code)
    _apply(model, delta, grown, strength, target.display, own_base=onto is None)
    del delta
    if getattr(model, "config", None) is not None:
        model.config.use_cache = True
    record = _record(run, onto, strength)
    if format == "gguf":
        from qckit.export import GGUF_RECORD_KEY
        from qckit.gguf_export import source_gguf_pre, write_gguf

        pre = source_gguf_pre(target.gguf_file) if target.gguf_file else None
        metadata = {GGUF_RECORD_KEY: json.dumps(record, ensure_ascii=False)}
        from qckit.export import write_ollama_modelfile

        written = write_gguf(
            model, tokenizer, output, outtype=outtype, name=output.stem, pre_tokenizer=pre, metadata=metadata
        )
        write_ollama_modelfile(written, tokenizer)
        return written

    from qckit._fs import replace_dir, staging_dir
    from qckit.export import EXPORT_RECORD
    from qckit.hardware import outtype_precision, torch_dtype

    model = model.to(torch_dtype(outtype_precision(outtype)))
    with staging_dir(output) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")
        replace_dir(tmp, output)
    return output


def _refuse_output_over_inputs(output: Path, inputs: list[Any]) -> None:
    """An output that would replace the run folder, the base or the target is refused."""
    from qckit.models import ModelSource

    resolved = output.resolve()
    for item in inputs:
        if isinstance(item, ModelSource):
            if not item.is_local:
                continue
            item = Path(item.gguf_file or item.path_or_id)
        if Path(item).resolve() == resolved:
            raise InputError(output, "is an input of the export (the run folder, the base or the target)")


def _config_source(run: RunModel) -> Any:
    """Where the run's model config is read: the run folder's own (a LoRA run saves the base's, grown
    vocabulary included, beside the adapter), else the base's."""
    from qckit.models import ModelSource

    if (run.run_dir / "config.json").is_file():
        return ModelSource("dir", str(run.run_dir), display=str(run.run_dir))
    return run.base_source()


def _config(source: Any, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    from qckit.models import _load_error

    try:
        return AutoConfig.from_pretrained(
            source.path_or_id, trust_remote_code=trust_remote_code, **source.pretrained_kwargs()
        )
    except Exception as exc:  # transformers raises many kinds
        raise _load_error(source, "config", exc) from None


def _check_target(run: RunModel, target: Any, trust_remote_code: bool) -> Any:
    """Refuse a ``target`` (a ModelSource) that is not the run's architecture or vocabulary; returns the
    tokenizer to write: the target's, or the run's when the target is the run's own base (``None``)."""
    from qckit.models import load_tokenizer, resolve_model, tokenizer_source

    trained = run.base_source() if run.adapter_dir is not None else resolve_model(run.model)
    run_tokenizer = load_tokenizer(
        tokenizer_source(trained, run.adapter_dir), trust_remote_code=trust_remote_code
    )
    if target is None:
        return run_tokenizer
    ours = _config(_config_source(run), trust_remote_code)
    theirs = _config(target, trust_remote_code)
    for key in CONFIG_KEYS:
        mine, other = getattr(ours, key, None), getattr(theirs, key, None)
        if mine is not None and other is not None and mine != other:
            raise InputError(
                target.display,
                f"not the run's architecture: {key} is {other!r}, the run's model has {mine!r}",
            )
    tokenizer = load_tokenizer(target, trust_remote_code=trust_remote_code)
    _compare_vocabularies(
        run, run_tokenizer.get_vocab(), tokenizer.get_vocab(), target.display, trust_remote_code
    )
    mine, other = getattr(ours, _VOCAB_SIZE, None), getattr(theirs, _VOCAB_SIZE, None)
    if mine != other:
        raise InputError(
            target.display,
            f"not the run's architecture: {_VOCAB_SIZE} is {other!r}, the run's model has {mine!r}",
        )
    return tokenizer


def _compare_vocabularies(
    run: RunModel, ours: dict[str, int], theirs: dict[str, int], target: str, trust_remote_code: bool
) -> None:
    """Refuse naming the first token (by the run's ids) that the target lacks or numbers otherwise."""
    for token, index in sorted(ours.items(), key=lambda item: item[1]):
        other = theirs.get(token)
        if other == index:
            continue
        if other is None and _grown(run, index, trust_remote_code):
            raise InputError(
                target,
                f"lacks the rows of the run's grown vocabulary (train.add_tokens): the run's token {token!r} "
                f"(id {index}) is not in its vocabulary",
            )
        where = "is not in it" if other is None else f"has id {other} in it"
        raise InputError(target, f"not the run's vocabulary: the run's token {token!r} (id {index}) {where}")
    extra = sorted((index, token) for token, index in theirs.items() if token not in ours)
    if extra:
        index, token = extra[0]
        raise InputError(
            target, f"not the run's vocabulary: its token {token!r} (id {index}) is not in the run's"
        )


def _grown(run: RunModel, index: int, trust_remote_code: bool) -> bool:
    """Whether token id ``index`` is beyond the base's vocabulary (added by the run)."""
    from qckit.models import load_tokenizer

    return index >= len(load_tokenizer(run.base_source(), trust_remote_code=trust_remote_code))


def _delta(run: RunModel, trust_remote_code: bool) -> tuple[dict[str, Any], dict[str, int]]:
    """Per parameter name, ``W_run − W_base`` (float32), computed in place in the run's weights; for a
    parameter whose rows grew (``grown``: name → the base's rows), the rows beyond the base's hold the
    trained values."""
    import torch

    from qckit.models import load_adapter, load_model, resolve_model

    base = load_model(run.base_source(), dtype=torch.float32, trust_remote_code=trust_remote_code)
    if run.adapter_dir is not None:
        reference = {name: param.detach().clone() for name, param in base.named_parameters()}
        trained = load_adapter(base, run.adapter_dir).merge_and_unload()
    else:
        reference = {name: param.detach() for name, param in base.named_parameters()}
        trained = load_model(
            resolve_model(run.model), dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    del base
    delta: dict[str, Any] = {}
    grown: dict[str, int] = {}
    with torch.no_grad():
        for name, param in trained.named_parameters():  # tied parameters come once
            ref = reference.pop(name, None)
            if ref is None:
                raise InputError(
                    run.run_dir, f"the trained model has a tensor {name!r} that the base {run.base} lacks"
                )
            value = param.detach()
            if value.shape != ref.shape:
                if value.dim() == 0 or value.shape[1:] != ref.shape[1:] or value.shape[0] < ref.shape[0]:
                    raise InputError(
                        run.run_dir,
                        f"tensor {name!r} has shape {tuple(value.shape)}, the base's {tuple(ref.shape)}",
                    )
                grown[name] = ref.shape[0]  # a grown vocabulary: more rows, nothing else changed
            (value[: ref.shape[0]] if name in grown else value).sub_(ref)
            delta[name] = value
    if reference:
        raise InputError(
            run.run_dir,
            f"the base {run.base} has a tensor {next(iter(reference))!r} that the trained model lacks",
        )
    return delta, grown


def _apply(
    model: Any, delta: dict[str, Any], grown: dict[str, int], strength: float, target: str, *, own_base: bool
) -> None:
    """Add ``strength · delta`` to ``model``'s parameters, after checking every name and shape agree."""
    import torch

    if own_base and grown:  # the run's own base lacks the new rows: they are the trained ones
        embeddings = model.get_input_embeddings()
        name = next(n for n, p in model.named_parameters() if p is embeddings.weight)
        model.resize_token_embeddings(int(delta[name].shape[0]), mean_resizing=False)
    params = dict(model.named_parameters())
    for name, value in params.items():
        change = delta.get(name)
        if change is None:
            raise InputError(target, f"has a tensor {name!r} that the run's model lacks")
        if change.shape != value.shape:
            raise InputError(
                target, f"tensor {name!r} has shape {tuple(value.shape)}, the run's {tuple(change.shape)}"
            )
    missing = next((name for name in delta if name not in params), None)
    if missing is not None:
        raise InputError(target, f"lacks the run's tensor {missing!r}")
    with torch.no_grad():
        for name, value in params.items():
            change, rows = delta[name], grown.get(name)
            if rows is None:
                value.add_(change, alpha=strength)
                continue
            value[:rows].add_(change[:rows], alpha=strength)
            if own_base:
                value[rows:].copy_(change[rows:])
            else:  # the target's row stands for the base's
                value[rows:].add_(change[rows:] - value[rows:], alpha=strength)


def _record(run: RunModel, onto: str | None, strength: float) -> dict[str, Any]:
    """The provenance written with a delta export."""
    from qckit import __version__

    return {
        "qckit_version": __version__,
        "run": str(run.run_dir.resolve()),
        "base": run.base,
        "training": "lora" if run.adapter_dir is not None else "full",
        "onto": onto,
        "strength": strength,
    }
