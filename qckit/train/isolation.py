"""Does this model, run as training will run it, isolate packed documents?

Document-isolated packing (a chunker with ``attention = "document"``) relies on transformers and on the
batch form: for sdpa, eager and flex attention, position ids that restart at a document start and no
2-D attention mask make its masking utilities build a block-diagonal causal mask per row; for a
flash-attention kernel, :class:`~qckit.train.packing.WindowCollator` flattens the micro-batch into one
row with explicit per-document lengths (varlen), since transformers' flash wrapper reads packed
sequences from position ids only in a batch of one row. An architecture whose forward does not do
that (custom code, an attention implementation without packed-sequence support) would silently attend
across documents, so :func:`check_document_isolation` measures it before training, on a batch shaped
like training's, through the same collator, on the placed model under the Trainer's autocast. A model
the Trainer shards (FSDP) is placed only when training begins: :class:`DocumentIsolationCallback` checks
it then, on every process.

Imported only by the train stage (it imports transformers).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from qckit.errors import RecipeError

__all__ = ["check_document_isolation", "DocumentIsolationCallback", "ISOLATION_TOLERANCE"]

#: the largest accepted ratio of a packed document's logit (and gradient) difference from the document
#: run alone, to the difference without isolation: float32 differs in rounding only; bf16/fp16 kernels
#: round differently for another batch shape, still far below what attending across documents moves
ISOLATION_TOLERANCE = {"fp32": 1e-3, "half": 0.1}

#: document lengths (tokens, before their EOS) of the check's two windows; the second window is padded
_DOCUMENTS = ((6, 5), (4, 3))


def check_document_isolation(
    model: Any,
    eos_id: int,
    *,
    pad_id: int | None = None,
    autocast: Any = None,
    gradients: bool = True,
    key: str = "train.chunker.attention",
) -> float:
    """Raise :class:`~qckit.errors.RecipeError` (at ``key``, naming the model and its attention kernel)
    unless ``model`` keeps packed documents apart as training runs it; return the worse of the two ratios.

    The batch is two windows (two documents each, the second window padded) collated like training's
    (:func:`~qckit.train.packing.window_collator`) and passed like the Trainer does
    (:func:`~qckit.train.packing.forward_inputs`), on ``model``'s device, under ``torch.autocast`` to
    ``autocast`` (the run's, ``None`` for none), in eval mode (modes are restored; no weight gets a
    gradient). Checked: every document's logits against the document run alone, relative to the
    difference the same windows give without isolation (the control); and the gradient of every document's
    logits with respect to the input embeddings of the other documents, relative to that of its own.
    Both ratios must stay below :data:`ISOLATION_TOLERANCE` for the compute dtype. ``gradients=False``
    checks the logits only (a sharded model: a backward pass outside the Trainer would disturb FSDP's
    gradient hooks); the kernels that pass it mask the same keys in their backward pass.
    """
    import torch

    from qckit.evaluate.loglik import model_device
    from qckit.models import unwrap_model
    from qckit.train.packing import forward_inputs, window_collator

    config = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    implementation = getattr(config, "_attn_implementation", None) or "default"
    what = f"{type(unwrap_model(model)).__name__} (attn_implementation {implementation!r})"
    if vocab < 8:
        raise RecipeError(f"cannot check document isolation on {what}: no vocabulary size", key=key)
    device = model_device(model)
    collator = window_collator(model)
    rows, spans = _windows(vocab, eos_id, eos_id if pad_id is None else pad_id, collator.flatten)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator(rows).items()}
    inputs = forward_inputs(batch)
    inputs.pop("labels", None)
    plain = {  # the control: the same windows as plain rows, attending across their documents
        "input_ids": torch.stack([r["input_ids"] for r in rows]).to(device),
        "attention_mask": torch.stack([r["attention_mask"] for r in rows]).to(device),
        "use_cache": False,
    }
    half = autocast is not None or next(model.parameters()).dtype != torch.float32
    tolerance = ISOLATION_TOLERANCE["half" if half else "fp32"]
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            with torch.no_grad():
                control = model(**plain).logits.float()
                alone = [
                    model(input_ids=ids[None].to(device), use_cache=False).logits[0].float()
                    for ids in (span.ids for span in spans)
                ]
            if gradients:
                embeddings = (
                    model.get_input_embeddings()(inputs.pop("input_ids")).detach().requires_grad_(True)
                )
                logits = model(inputs_embeds=embeddings, **inputs).logits
                gradient = _gradient_leak(logits, embeddings, spans)
            else:
                with torch.no_grad():
                    logits, gradient = model(**inputs).logits, 0.0
    except Exception as exc:  # an architecture or kernel that refuses the batch form, the device or the dtype
        raise RecipeError(
            f"cannot check that {what} isolates packed documents ({type(exc).__name__}: "
            f'{" ".join(str(exc).split())[:200]}); set attention = "window" for it',
            key=key,
        ) from None
    finally:
        for module, training in modes:
            module.training = training
    logits = logits.detach().float()
    difference = max(
        float((logits[s.row, s.flat] - ref).abs().max()) for s, ref in zip(spans, alone, strict=True)
    )
    crossing = max(
        float((control[s.plain_row, s.plain] - ref).abs().max()) for s, ref in zip(spans, alone, strict=True)
    )
    ratio = difference / crossing if crossing > 0 else (0.0 if difference == 0 else float("inf"))
    worst = max(ratio, gradient)
    if not worst < tolerance:
        raise RecipeError(
            f"{what} does not isolate packed documents in training's batch form ({len(rows)} windows, one "
            f"padded, {'flattened' if collator.flatten else 'stacked'}): a document's logits differ by "
            f"{difference:.3g} from the document alone ({crossing:.3g} without isolation) and its gradient "
            f"reaches other documents ({gradient:.3g} of its own); this architecture or attention kernel does not "
            f'keep packed sequences apart. Set attention = "window" for it, or use an attention implementation '
            f"and model whose transformers code supports packed sequences (Llama, Mistral, Qwen2 …)",
            key=key,
        )
    return worst


class DocumentIsolationCallback(TrainerCallback):
    """Runs :func:`check_document_isolation` (logits only) when training begins, on the model as the
    Trainer placed it: for a model the Trainer shards (FSDP), which is not on its devices before. Every
    process runs it (a sharded forward needs them all) and raises the same refusal."""

    def __init__(self, eos_id: int, *, pad_id: int | None = None, autocast: Any = None) -> None:
        self.eos_id, self.pad_id, self.autocast = eos_id, pad_id, autocast

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        check_document_isolation(
            model, self.eos_id, pad_id=self.pad_id, autocast=self.autocast, gradients=False
        )


class _Span:
    """One document of the check's batch: its token ids (EOS included), where it sits in the collated
    batch (``row``, ``flat`` slice) and in the plain stacked windows (``plain_row``, ``plain`` slice)."""

    def __init__(self, ids: Any, row: int, start: int, plain_row: int, plain_start: int) -> None:
        self.ids = ids
        self.row, self.flat = row, slice(start, start + len(ids))
        self.plain_row, self.plain = plain_row, slice(plain_start, plain_start + len(ids))


def _windows(vocab: int, eos: int, pad: int, flatten: bool) -> tuple[list[dict[str, Any]], list[_Span]]:
    """The check's windows as dataset items (the training item code, padded to the longest) and the spans
    of their documents; random ids that are neither EOS nor padding."""
    import numpy as np
    import torch

    from qckit.components import PackingStats
    from qckit.train.packing import PackedDataset

    generator = torch.Generator().manual_seed(0)
    specials = sorted({eos, pad})
    windows, spans, flat_start = [], [], 0
    for index, lengths in enumerate(_DOCUMENTS):
        tokens, offset = [], 0
        for length in lengths:
            ids = torch.randint(0, vocab - len(specials), (length,), generator=generator)
            for special in specials:  # onto the ids that are neither EOS nor padding
                ids += (ids >= special).long()
            ids = torch.cat([ids, torch.tensor([eos])])
            spans.append(
                _Span(ids, 0 if flatten else index, flat_start + offset if flatten else offset, index, offset)
            )
            tokens.append(ids)
            offset += len(ids)
        windows.append(torch.cat(tokens).numpy().astype(np.int32))
        flat_start += offset
    flat_ids = np.concatenate(windows)
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in windows])]).astype(np.int64)
    dataset = PackedDataset(
        flat_ids,
        flat_ids.copy(),
        offsets,
        pad_id=pad,
        stats=PackingStats(),
        num_words=0,
        num_bytes=0,
        num_doc_tokens=0,
        trained=np.zeros(len(windows), dtype=np.int32),
    )
    dataset.document_eos = eos
    return [dataset[i] for i in range(len(dataset))], spans


def _gradient_leak(logits: Any, embeddings: Any, spans: list[_Span]) -> float:
    """The largest gradient, of a fixed random projection of one document's logits, reaching the input
    embeddings of the other documents, relative to the largest reaching its own."""
    import torch

    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for span in spans:
        out = logits[span.row, span.flat].float()
        weights = torch.randn(out.shape, generator=generator).to(out.device)
        (grad,) = torch.autograd.grad((out * weights).sum(), embeddings, retain_graph=True)
        magnitude = grad.abs().amax(dim=-1)
        own = float(magnitude[span.row, span.flat].max())
        magnitude[span.row, span.flat] = 0
        worst = max(worst, float(magnitude.max()) / own if own > 0 else float("inf"))
    return worst
