"""Held-out evaluation of a causal LM: token-weighted loss, perplexity and bits per byte.

How the text is scored
----------------------
Documents are tokenized like training data (no special tokens, EOS appended to each) and joined into
one stream that *starts* with an EOS as well: ``EOS d1 EOS d2 EOS … dn EOS``. The leading EOS is only
context, so every token of every document and every document's EOS is predicted, each exactly once,
and the first word of the first document is predicted after a document boundary just like every
other document's first word (and just like in training).

The stream is scored with sliding windows of ``max_length`` tokens. Consecutive windows overlap by
``stride`` tokens (default ``max_length // 2``; same meaning as the ``window`` chunker's stride). The
overlap is context only, so each token is predicted once, with at least ``stride`` tokens of left
context once the first window is passed. ``stride=0`` is treated as 1: a window's first token has no
context inside that window, so a one-token overlap is the least that predicts every token.

Numbers
-------
* ``loss``: total negative log-likelihood (nats) of the predicted tokens divided by their number
  (token-weighted; not a mean of per-window means). ``perplexity = exp(loss)``.
* ``bits_per_byte``: total NLL / ln 2 / ``bytes``, where ``bytes`` = sum over documents of
  (UTF-8 bytes of the document + 1). The +1 is the document's EOS, which stands for the newline that
  ends the document in the corpus file. The predicted tokens encode exactly that text (the documents
  and their separators), so two tokenizers get comparable bits per byte on the same text, unlike
  perplexity, which depends on how many tokens the tokenizer makes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qckit.components import IGNORE_INDEX
from qckit.errors import InputError, QckitError
from qckit.progress import NullObserver, Observer
from qckit.train.packing import BatchEncoder, iter_documents

__all__ = ["EvalResult", "evaluate_lm", "sliding_windows"]


@dataclass
class EvalResult:
    """Held-out evaluation numbers (see the module docstring for the exact definitions)."""

    loss: float  # mean NLL in nats per predicted token
    perplexity: float
    bits_per_byte: float
    tokens: int  # predicted tokens
    bytes: int  # UTF-8 bytes of the documents + 1 per document
    documents: int
    windows: int
    max_length: int = 0
    stride: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sliding_windows(length: int, max_length: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(start, end, context)`` for the windows that predict every position 1 … ``length``-1 once.

    Window ``k`` covers ``[start, end)`` with ``start = k * (max_length - stride)``; its first ``context``
    positions are not scored (position 0 of the stream never is). ``stride`` must be >= 1.
    """
    if max_length < 2 or not 1 <= stride < max_length:
        raise ValueError("need max_length >= 2 and 1 <= stride < max_length")
    step = max_length - stride
    start, context = 0, 1
    while start + context < length:
        yield start, min(start + max_length, length), context
        start, context = start + step, stride


def _read_texts(texts: Iterable[str] | str | Path) -> tuple[Iterable[str], str]:
    if isinstance(texts, (str, Path)):
        if isinstance(texts, str) and "\n" in texts:
            raise TypeError("evaluate_lm takes a path or an iterable of documents, not one string of text")
        return (text for _, text in iter_documents(texts)), str(texts)
    return (t.strip() for t in texts if t and t.strip()), "<memory>"


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def evaluate_lm(
    model: Any,
    tokenizer: Any,
    texts: Iterable[str] | str | Path,
    *,
    max_length: int = 1024,
    stride: int | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    observer: Observer | None = None,
) -> EvalResult:
    """Score held-out ``texts`` (a path to a one-document-per-line file, or an iterable of documents).

    Works with plain and peft-wrapped models, on any device (default: the model's). The model is put
    in eval mode and every module's train/eval mode is restored afterwards, so it is safe to call
    during training. ``max_length`` larger than the model's ``max_position_embeddings`` is lowered to
    it (with a warning to ``observer``). A ``str`` is a path, never the text itself. Raises
    :class:`~qckit.errors.InputError` if there is nothing to score.
    """
    if max_length < 2:
        raise ValueError("max_length must be at least 2")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    observer = observer or NullObserver()
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and 2 <= positions < max_length:
        observer.warn(
            f"evaluation max_length {max_length} is more than the model's {positions} positions; using {positions}"
        )
        max_length = positions
        stride = None if stride is None else min(stride, max_length - 1)
    stride = max_length // 2 if stride is None else stride
    if not 0 <= stride < max_length:
        raise ValueError("stride must be >= 0 and < max_length")
    context = max(stride, 1)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise QckitError("the tokenizer has no EOS token; evaluation needs one to separate documents")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    docs, source = _read_texts(texts)
    stream = [int(eos)]
    num_bytes = documents = 0
    batch: list[str] = []
    encode = BatchEncoder(tokenizer)

    def flush() -> None:
        for ids in encode(batch):
            stream.extend(ids)
            stream.append(eos)
        batch.clear()

    for text in docs:
        batch.append(text)
        documents += 1
        num_bytes += len(text.encode("utf-8")) + 1
        if len(batch) >= 1000:
            flush()
    flush()
    if documents == 0:
        raise InputError(source, "no documents to evaluate")
    tokens = np.asarray(stream, dtype=np.int64)
    stream.clear()
    windows = list(sliding_windows(len(tokens), max_length, context))

    device = torch.device(device) if device is not None else _model_device(model)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    total_nll = 0.0
    predicted = 0
    started = time.perf_counter()
    observer.start("evaluate", len(windows), "windows")
    try:
        with torch.inference_mode():
            for first in range(0, len(windows), batch_size):
                group = windows[first : first + batch_size]
                width = max(end - start for start, end, _ in group)
                input_ids = torch.full((len(group), width), pad, dtype=torch.long)
                attention = torch.zeros((len(group), width), dtype=torch.long)
                labels = torch.full((len(group), width), IGNORE_INDEX, dtype=torch.long)
                for row, (start, end, ctx) in enumerate(group):
                    piece = torch.from_numpy(tokens[start:end])
                    input_ids[row, : end - start] = piece
                    attention[row, : end - start] = 1
                    labels[row, ctx : end - start] = piece[ctx:]
                logits = model(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False
                ).logits
                targets = labels[:, 1:].to(logits.device)
                batch_nll = torch.zeros((), dtype=torch.float32, device=logits.device)
                # one row at a time: float32 logits of a whole batch over a big vocabulary are large
                for row in range(len(group)):
                    batch_nll += torch.nn.functional.cross_entropy(
                        logits[row, :-1].float(), targets[row], ignore_index=IGNORE_INDEX, reduction="sum"
                    )
                total_nll += batch_nll.item()
                count = int((targets != IGNORE_INDEX).sum())
                predicted += count
                observer.advance("evaluate", len(group), loss=total_nll / max(predicted, 1))
    finally:
        for module, training in modes:
            module.training = training
        observer.finish("evaluate")

    loss = total_nll / predicted
    return EvalResult(
        loss=loss,
        perplexity=math.exp(loss) if loss < 700 else math.inf,
        bits_per_byte=total_nll / math.log(2) / num_bytes,
        tokens=predicted,
        bytes=num_bytes,
        documents=documents,
        windows=len(windows),
        max_length=max_length,
        stride=stride,
        seconds=time.perf_counter() - started,
    )
