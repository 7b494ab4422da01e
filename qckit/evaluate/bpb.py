"""Bits per byte (and perplexities) of held-out text, under one of two named scoring protocols.

A text file holds one document per line (blank lines skipped, lines stripped; a line that is not
UTF-8 is counted as a bad row with its ``file:line`` and skipped). Documents are tokenized without
adding special tokens; the string of a special token in a document (``</s>``) becomes that token, as
lm-eval encodes it, unless ``split_special_tokens`` (then it is plain text, as training packs it).

``document`` (the default): lm-evaluation-harness ``loglikelihood_rolling``
------------------------------------------------------------------------------
Every document is scored on its own, as lm-eval-harness 0.4.x scores a perplexity task: one *prefix
token* (``prefix_token``; by default the tokenizer's BOS if it has one, else EOS, lm-eval's rule) is
put before the document's tokens ``t_1 … t_n``, and rolling windows of ``max_length`` input tokens
predict every ``t_i`` exactly once: the first window predicts ``t_1 … t_L`` from the prefix token on,
each later window predicts the next ``L`` tokens (fewer in the last) reading one token before them,
and the last window reads as much earlier text as fits (:func:`~qckit.evaluate.loglik.rolling_windows`).
No document sees another one. With ``LL`` = the summed natural-log probability of the tokens of all
documents, ``N`` their number, ``B`` = the UTF-8 bytes of the documents (nothing added per document)
and ``W`` = their words (``len(re.split(r"\\s+", doc))`` per document, lm-eval's count)::

    bits_per_byte    = -LL / B / ln 2          (lm-eval ``bits_per_byte``)
    byte_perplexity  = exp(-LL / B)            (lm-eval ``byte_perplexity``)
    word_perplexity  = exp(-LL / W)            (lm-eval ``word_perplexity``)
    loss             = -LL / N,  perplexity = exp(loss)   (token level; lm-eval does not report it)

Each is a ratio of corpus totals (lm-eval's weighted means), not a mean of per-document numbers.
Documents of similar length are batched together (see :class:`~qckit.evaluate.loglik.Scorer`).

``stream``: documents joined into one stream
---------------------------------------------
The documents are joined as ``EOS d1 EOS d2 EOS … dn EOS`` and the stream is scored with sliding
windows of ``max_length`` tokens overlapping by ``stride`` tokens (default ``max_length // 2``;
``stride=0`` is treated as 1), the overlap being context only, so every document token and every
EOS is predicted once (the leading EOS is only context). A document sees the end of the previous,
unrelated ones as context, which lowers the numbers: they are *not* comparable with lm-eval's. ``B``
counts one extra byte per document (its EOS stands for the newline that ends it in the file) and
``N`` counts the EOS tokens. Kept for corpora of long documents, where it is cheaper.

Both protocols are named in every result (``protocol``), so two numbers from different protocols
are never compared by accident.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qckit.components import IssueLog
from qckit.errors import InputError, QckitError
from qckit.evaluate import PROTOCOLS
from qckit.evaluate.loglik import (
    Request,
    Scorer,
    batch_tokens,
    prefix_token_id,
    resolve_max_length,
    rolling_windows,
    text_encoder,
)
from qckit.evaluate.rows import is_text, iter_lines
from qckit.progress import NullObserver, Observer

__all__ = [
    "PROTOCOLS",
    "EvalResult",
    "Documents",
    "load_documents",
    "score_documents",
    "evaluate_lm",
    "sliding_windows",
    "count_words",
]

_WORD_SPLIT = re.compile(r"\s+")


@dataclass
class EvalResult:
    """Bits per byte and perplexities of held-out text (see the module docstring for the definitions)."""

    protocol: str
    loss: float  # mean NLL in nats per predicted token
    perplexity: float
    bits_per_byte: float
    byte_perplexity: float
    word_perplexity: float
    tokens: int  # predicted tokens
    bytes: int
    words: int
    documents: int
    windows: int
    max_length: int = 0
    stride: int | None = None  # stream protocol only
    prefix_token: int | None = None  # document protocol only
    bad_rows: int = 0  # lines skipped (not UTF-8)
    bad_row_kinds: dict[str, Any] = field(default_factory=dict)
    #: document protocol: the 95 % interval of bits per byte over resamples of the documents (bootstrap)
    bits_per_byte_ci95: list[float] | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Documents:
    """Held-out documents read and tokenized once (see :func:`load_documents`), scored any number of times."""

    source: str
    texts: list[str]
    tokens: list[list[int]]  # per document, no special token added
    bytes: int  # UTF-8 bytes of the documents
    words: int
    issues: IssueLog = field(default_factory=IssueLog)  # the bad lines skipped


def count_words(text: str) -> int:
    """Words of a document as lm-eval counts them: ``len(re.split(r"\\s+", text))``."""
    return len(_WORD_SPLIT.split(text))


def load_documents(
    texts: Iterable[str] | str | Path,
    tokenizer: Any,
    *,
    max_documents: int = 0,
    split_special_tokens: bool = False,
) -> Documents:
    """Read (a path to a one-document-per-line file, or an iterable of documents) and tokenize.

    ``max_documents`` > 0 keeps the first documents only. A ``str`` is a path, never the text
    itself. A line that is not UTF-8 (in memory: a string with a lone surrogate) is counted in the
    result's ``issues`` and skipped. Raises :class:`~qckit.errors.InputError` when there is no document.
    """
    issues = IssueLog()
    if isinstance(texts, (str, Path)):
        if isinstance(texts, str) and "\n" in texts:
            raise TypeError("pass a path or an iterable of documents, not one string of text")
        source = str(texts)
        docs: Iterator[str] = (text for _, text in iter_lines(texts, issues))
    else:
        source = "<memory>"
        docs = _memory_documents(texts, issues)
    kept: list[str] = []
    for text in docs:
        kept.append(text)
        if max_documents and len(kept) >= max_documents:
            break
    if not kept:
        detail = f"; {issues.total()} bad line(s), first: {issues.first_example()}" if issues else ""
        raise InputError(source, f"no documents to evaluate{detail}")
    encode = text_encoder(tokenizer, split_special_tokens)
    tokens: list[list[int]] = []
    for first in range(0, len(kept), 1000):
        tokens.extend(list(ids) for ids in encode(kept[first : first + 1000]))
    return Documents(
        source=source,
        texts=kept,
        tokens=tokens,
        bytes=sum(len(t.encode("utf-8")) for t in kept),
        words=sum(count_words(t) for t in kept),
        issues=issues,
    )


def _memory_documents(texts: Iterable[str], issues: IssueLog) -> Iterator[str]:
    """The non-blank documents of an iterable, stripped; one that is not UTF-8 text is counted."""
    for number, text in enumerate(texts, start=1):
        if not is_text(text):
            issues.add("not_utf8", "<memory>", number, "not a string of UTF-8 text")
        elif text.strip():
            yield text.strip()


def sliding_windows(length: int, max_length: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """Stream protocol: ``(start, end, context)`` for the windows that predict every position 1 … ``length``-1 once.

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


def score_documents(
    model: Any,
    docs: Documents,
    tokenizer: Any,
    *,
    protocol: str = "document",
    max_length: int = 0,
    stride: int | None = None,
    batch_size: int = 4,
    prefix_token: str | int | None = None,
    device: str | torch.device | None = None,
    observer: Observer | None = None,
) -> EvalResult:
    """Score tokenized documents under ``protocol`` (see the module docstring).

    ``batch_size`` × ``max_length`` is the token budget of one forward pass. ``max_length`` 0 is the
    model's context length (lm-eval's rule, :func:`~qckit.evaluate.loglik.context_length`); a larger
    one than the model's ``max_position_embeddings`` is lowered to it (with a warning to ``observer``).
    ``stride`` belongs to the stream protocol and ``prefix_token`` to the document protocol; giving
    one to the other protocol is a :class:`ValueError`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if max_length != 0 and max_length < 2:
        raise ValueError("max_length must be 0 (the model's context length) or at least 2")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if protocol == "document" and stride is not None:
        raise ValueError("stride applies to the stream protocol only (documents are scored on their own)")
    if protocol == "stream" and prefix_token is not None:
        raise ValueError("prefix_token applies to the document protocol only (the stream starts with EOS)")
    if protocol == "stream" and stride is not None and not 0 <= stride < (max_length or math.inf):
        raise ValueError("stride must be >= 0 and < max_length")
    observer = observer or NullObserver()
    max_length = resolve_max_length(model, tokenizer, max_length, observer)
    started = time.perf_counter()
    prefix: int | None = None
    if protocol == "document":
        prefix = prefix_token_id(tokenizer, prefix_token)
        requests: list[Request] = []
        windows_per_document = []
        for ids in docs.tokens:
            windows = rolling_windows(ids, prefix, max_length)
            requests.extend(windows)
            windows_per_document.append(len(windows))
        num_bytes = docs.bytes
        predicted = sum(len(ids) for ids in docs.tokens)
    else:
        stride = max_length // 2 if stride is None else min(stride, max_length - 1)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise QckitError(
                "the tokenizer has no EOS token; the stream protocol needs one to separate documents"
            )
        stream = [int(eos)]
        for ids in docs.tokens:
            stream.extend(ids)
            stream.append(int(eos))
        requests = [
            (stream[start : start + ctx], stream[start + ctx : end])
            for start, end, ctx in sliding_windows(len(stream), max_length, max(stride, 1))
        ]
        num_bytes = docs.bytes + len(docs.texts)
        predicted = len(stream) - 1
    scorer = Scorer(
        max_length=max_length,
        batch_tokens=batch_tokens(batch_size, max_length),
        device=device,
        observer=observer,
    )
    scores = scorer.loglikelihoods(model, requests) if requests else np.zeros(0)
    total_nll = -float(scores.sum())
    if predicted == 0:
        raise InputError(docs.source, "the documents have no tokens to score")
    interval = None
    if protocol == "document":
        owner = np.repeat(np.arange(len(windows_per_document)), windows_per_document)
        nll = np.bincount(owner, weights=-scores, minlength=len(windows_per_document))
        sizes = np.array([len(t.encode("utf-8")) for t in docs.texts], dtype=np.float64)
        interval = bootstrap_bits_per_byte(nll, sizes)
    loss = total_nll / predicted
    return EvalResult(
        protocol=protocol,
        loss=loss,
        perplexity=_exp(loss),
        bits_per_byte=total_nll / math.log(2) / num_bytes,
        byte_perplexity=_exp(total_nll / num_bytes),
        word_perplexity=_exp(total_nll / docs.words),
        tokens=predicted,
        bytes=num_bytes,
        words=docs.words,
        documents=len(docs.texts),
        windows=len(requests),
        max_length=max_length,
        stride=stride if protocol == "stream" else None,
        prefix_token=prefix,
        bad_rows=docs.issues.total(),
        bad_row_kinds=docs.issues.as_dict(),
        bits_per_byte_ci95=interval,
        seconds=time.perf_counter() - started,
    )


#: resamples of the documents behind ``bits_per_byte_ci95`` (a fixed seed: the interval is reproducible)
BOOTSTRAP_RESAMPLES = 1000


def bootstrap_bits_per_byte(nll: np.ndarray, sizes: np.ndarray, seed: int = 0) -> list[float] | None:
    """The 95 % percentile-bootstrap interval of bits per byte, ``Σ nll / Σ bytes / ln 2``, over documents
    drawn with replacement (``nll``: each document's summed NLL in nats, ``sizes``: its UTF-8 bytes);
    ``None`` for fewer than 2 documents."""
    n = len(nll)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = np.empty(BOOTSTRAP_RESAMPLES)
    chunk = max(1, 2_000_000 // n)  # resamples drawn at once: a bounded index matrix
    for start in range(0, BOOTSTRAP_RESAMPLES, chunk):
        rows = min(chunk, BOOTSTRAP_RESAMPLES - start)
        index = rng.integers(0, n, size=(rows, n))
        values[start : start + rows] = nll[index].sum(axis=1) / sizes[index].sum(axis=1) / math.log(2)
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


def evaluate_lm(
    model: Any,
    tokenizer: Any,
    texts: Iterable[str] | str | Path,
    *,
    protocol: str = "document",
    max_length: int = 0,
    stride: int | None = None,
    batch_size: int = 4,
    prefix_token: str | int | None = None,
    split_special_tokens: bool = False,
    device: str | torch.device | None = None,
    observer: Observer | None = None,
) -> EvalResult:
    """Score held-out ``texts`` (a path to a one-document-per-line file, or an iterable of documents).

    :func:`load_documents` then :func:`score_documents`. Works with plain and peft-wrapped models, on
    any device (default: the model's); every module's train/eval mode is restored afterwards, so it is
    safe to call during training. Raises :class:`~qckit.errors.InputError` if there is nothing to score.
    """
    docs = load_documents(texts, tokenizer, split_special_tokens=split_special_tokens)
    return score_documents(
        model,
        docs,
        tokenizer,
        protocol=protocol,
        max_length=max_length,
        stride=stride,
        batch_size=batch_size,
        prefix_token=prefix_token,
        device=device,
        observer=observer,
    )
