"""Does this model, with the attention implementation it actually uses, isolate packed documents?

Document-isolated packing (a chunker with ``attention = "document"``) relies on transformers: position
ids that restart at a document start, and no 2-D attention mask, make its masking utilities build a
block-diagonal causal mask (sdpa, eager, flex attention) or pass per-document lengths to
flash-attention (varlen). An architecture whose forward does not do that (custom code, an attention
implementation without packed-sequence support) would silently attend across documents, so
:func:`check_document_isolation` measures it on the loaded model before training: the logits of a
document packed after another must equal those of the document run alone.
"""

from __future__ import annotations

from typing import Any

from qckit.errors import RecipeError

__all__ = ["check_document_isolation"]


def check_document_isolation(model: Any, eos_id: int, *, key: str = "train.chunker.attention") -> float:
    """Raise :class:`~qckit.errors.RecipeError` (at ``key``) unless ``model`` keeps packed documents apart.

    Three forward passes on 12 tokens, in eval mode and without gradients (modes are restored): the
    second of two packed documents with restarting position ids, the same document alone, and the
    packed pair without position ids (attention across the boundary, the control). The documents are
    isolated when the first differs from the second by less than a tenth of what the control does.
    Returns that ratio.
    """
    import torch

    from qckit.evaluate.loglik import model_device
    from qckit.models import unwrap_model

    config = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    implementation = getattr(config, "_attn_implementation", None) or "default"
    what = f"{type(unwrap_model(model)).__name__} (attn_implementation {implementation!r})"
    if vocab < 8:
        raise RecipeError(f"cannot check document isolation on {what}: no vocabulary size", key=key)
    device = model_device(model)
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab, (6,), generator=generator)
    second = torch.randint(0, vocab, (5,), generator=generator)
    eos = torch.tensor([eos_id])
    packed = torch.cat([first, eos, second])[None].to(device)
    positions = torch.cat([torch.arange(7), torch.arange(5)])[None].to(device)
    alone = second[None].to(device)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            isolated = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0, 7:].float()
            reference = model(input_ids=alone, use_cache=False).logits[0].float()
            crossing = model(input_ids=packed, use_cache=False).logits[0, 7:].float()
    except Exception as exc:  # an architecture that refuses packed position ids
        raise RecipeError(
            f"{what} cannot run packed documents with restarting position ids ({type(exc).__name__}: "
            f'{" ".join(str(exc).split())[:200]}); set attention = "window"',
            key=key,
        ) from None
    finally:
        for module, training in modes:
            module.training = training
    difference = float((isolated - reference).abs().max())
    control = float((crossing - reference).abs().max())
    ratio = difference / control if control > 0 else (0.0 if difference == 0 else float("inf"))
    if not ratio < 0.1:
        raise RecipeError(
            f"{what} does not isolate packed documents: with position ids restarting at a document start, "
            f"its tokens still attend to the previous document (logits differ by {difference:.3g} from the "
            f"document alone; {control:.3g} without isolation): this architecture or attention implementation "
            f'does not build the packed-sequence mask from position ids. Set attention = "window" for it, or '
            f"use a model whose transformers implementation supports packed sequences (Llama, Mistral, Qwen2 …)",
            key=key,
        )
    return ratio
