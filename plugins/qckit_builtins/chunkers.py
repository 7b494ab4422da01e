"""Built-in chunker: fixed-length windows over one stream of documents, with optional overlap."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import ClassVar

from qckit import hookimpl
from qckit.components import ATTENTION_MODES, IGNORE_INDEX, PackingStats


class WindowChunker:
    """Cut the token stream into windows of ``max_length`` tokens, ``stride`` tokens of overlap (0 = none).

    Every document gets an EOS appended and the documents are concatenated into one stream, so a window
    may span several documents and nothing is lost at batch boundaries. Window ``k`` starts at token
    ``k * (max_length - stride)``: with ``max_length=1024`` the windows are ``[0:1024], [1024:2048] …``
    for ``stride=0`` and ``[0:1024], [512:1536], [1024:2048] …`` for ``stride=512``.

    Labels say which tokens are trained, so that each token of the stream is a target at most once:

    * the overlapped prefix (the first ``stride`` positions of every window but the first) is context
      only (label -100): it was already a target in the previous window;
    * position 0 of every window is -100 too, because a causal LM never predicts the first token of
      its input (the Hugging Face loss shifts labels: position ``t`` predicts token ``t + 1``). This
      changes nothing in the loss and keeps ``stats.tokens_kept`` honest.

    Consequently, with ``stride > 0`` every token except the very first of the stream (and a dropped
    tail) is trained exactly once, each new token being predicted with at least ``stride`` tokens of
    context. With ``stride = 0`` the first token of each window is never trained (one token per
    window; the seed behaved the same); use a small stride (even 1) to avoid that.

    The final window is shorter than ``max_length`` when the stream ends; it keeps the same
    ``stride`` tokens of overlap as context. It is dropped (``stats.windows_dropped_short``) when it has
    fewer than ``min_length`` *new* tokens; ``min_length`` applies to that final window only (full
    windows are always kept). The collator pads a short window; padding has label -100.

    ``attention`` says what a token may attend to inside its window:

    * ``"document"`` (the default): only the tokens of its own document. Position ids restart at 0 at
      every document start (the token after an EOS; the EOS ends its document), the train stage lets
      transformers build the block-diagonal causal mask from them (a flash-attention kernel gets each
      micro-batch as one padding-free row with per-document lengths), and the first token of each document
      inside a window is context only (label -100): nothing of its own document precedes it, and
      predicting it from the previous document is exactly the cross-document signal this removes;
    * ``"window"``: the whole window, across document boundaries (the seed's behaviour).

    The overlap context and the window's position 0 stay context only in both modes.

    The chunker streams: besides the windows it yields it holds fewer than ``max_length`` tokens plus
    the current document.
    """

    name: ClassVar[str] = "window"
    FORMAT_VERSION: ClassVar[int] = 1

    def __init__(
        self, max_length: int = 1024, stride: int = 128, min_length: int = 32, attention: str = "document"
    ) -> None:
        for key, value in (("max_length", max_length), ("stride", stride), ("min_length", min_length)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{key} must be an integer")
        if max_length < 2:
            raise ValueError("max_length must be at least 2")
        if not 0 <= stride < max_length:
            raise ValueError("stride must be >= 0 and < max_length")
        if not 1 <= min_length <= max_length:
            raise ValueError("min_length must be between 1 and max_length")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTION_MODES))}")
        self.max_length = max_length
        self.stride = stride
        self.min_length = min_length
        self.attention = attention

    def __repr__(self) -> str:
        return (
            f"WindowChunker(max_length={self.max_length}, stride={self.stride}, min_length={self.min_length}, "
            f"attention={self.attention!r})"
        )

    def cache_key(self) -> str:
        return (
            f"{self.name}/v{self.FORMAT_VERSION}/max_length={self.max_length}"
            f"/stride={self.stride}/min_length={self.min_length}/attention={self.attention}"
        )

    def windows(
        self, documents: Iterable[Sequence[int]], eos_token_id: int, stats: PackingStats
    ) -> Iterator[tuple[list[int], list[int]]]:
        max_length, stride = self.max_length, self.stride
        step = max_length - stride
        # buffer[start:] is the stream from the start of the next window: at most max_length - 1 tokens
        # plus the current document (the input already holds it, so memory stays O(max_length)).
        buffer: list[int] = []
        start = 0
        first = True  # the next window is the stream's first (no overlap context)
        for ids in documents:
            stats.documents += 1
            stats.tokens_total += len(ids) + 1
            buffer += ids
            buffer.append(eos_token_id)
            if len(buffer) - start < max_length:
                continue
            while len(buffer) - start >= max_length:
                yield self._emit(buffer[start : start + max_length], first, stats, eos_token_id)
                first = False
                start += step
            del buffer[:start]
            start = 0
        # The tail: the overlap context (stride tokens, or the whole stream if no window was emitted
        # yet) followed by the new tokens.
        context = 0 if first else stride
        new = len(buffer) - context
        if new <= 0:
            return
        if new < self.min_length:
            stats.windows_dropped_short += 1
            return
        yield self._emit(buffer, first, stats, eos_token_id)

    def _emit(
        self, window: list[int], first: bool, stats: PackingStats, eos: int
    ) -> tuple[list[int], list[int]]:
        labels = window.copy()
        context = 1 if first else max(self.stride, 1)
        labels[:context] = [IGNORE_INDEX] * context
        if self.attention == "document":
            for t in range(max(context, 1), len(window)):
                if window[t - 1] == eos:  # a document starts here: nothing of it precedes this token
                    labels[t] = IGNORE_INDEX
        stats.windows += 1
        stats.tokens_kept += sum(label != IGNORE_INDEX for label in labels)
        return window, labels


@hookimpl
def register_chunkers(register) -> None:
    register(WindowChunker)
