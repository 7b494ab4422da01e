"""A corpus's documents as training and evaluation both read them: one document per line of a UTF-8
file (:func:`iter_documents`), encoded as text into token ids without special tokens
(:class:`BatchEncoder`).

The train stage packs these ids (:mod:`qckit.train.packing`), evaluation scores them
(:mod:`qckit.evaluate.loglik`) and the ``decontaminate`` filter reads a bpb eval set's documents the
same way; this module imports neither stage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from qckit.errors import InputError

__all__ = ["iter_documents", "BatchEncoder", "tokenize_batch"]


def iter_documents(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line of a UTF-8 file (1-based line numbers).

    Lines are split on ``\\n`` only and stripped of surrounding whitespace, the way training reads them.
    Raises :class:`~qckit.errors.InputError` for a missing file or a line that is not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not a file" if path.exists() else "file not found")
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise InputError(
                    path, f"not valid UTF-8 ({exc.reason} at byte {exc.start})", number
                ) from None
            if text:
                yield number, text


class BatchEncoder:
    """Turns a batch of texts into token ids without special tokens, the way packing and evaluation do.

    Text is encoded as *text*: a document that contains the string of a special token (``</s>``,
    ``<|im_end|>``, ``<|endoftext|>`` …) gets the ordinary tokens of that string, never the special
    token itself, so no EOS or BOS is injected in the middle of a document. For a fast tokenizer this
    works on a private copy of the Rust backend (truncation and padding off), calling
    ``encode_batch_fast`` once per batch: the Rust side spreads the batch over all cores (unless
    ``TOKENIZERS_PARALLELISM`` is set to false by the user). Other tokenizers go through
    ``tokenizer(texts, add_special_tokens=False, split_special_tokens=True)``.

    ``split_special_tokens=False`` (evaluation's default, as lm-eval encodes) keeps the tokenizer's own
    rule instead: with a Hugging Face tokenizer, a special token's string becomes that special token.
    """

    def __init__(self, tokenizer: Any, *, split_special_tokens: bool = True) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._tokenizer = tokenizer
        self._split = split_special_tokens
        self._backend = None
        if backend is not None:
            from tokenizers import Tokenizer

            try:
                copy = Tokenizer.from_str(backend.to_str())
            except Exception:  # a backend that cannot serialize itself: use the tokenizer's own call
                return
            copy.no_truncation()
            copy.no_padding()
            copy.encode_special_tokens = split_special_tokens or backend.encode_special_tokens
            self._backend = copy
            self._encode = getattr(copy, "encode_batch_fast", copy.encode_batch)

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        if self._backend is not None:
            return [encoding.ids for encoding in self._encode(list(texts), add_special_tokens=False)]
        split = {"split_special_tokens": True} if self._split else {}  # else the tokenizer's own setting
        return self._tokenizer(list(texts), add_special_tokens=False, **split)["input_ids"]


def tokenize_batch(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (see :class:`BatchEncoder`; build one of those
    instead when encoding many batches)."""
    return BatchEncoder(tokenizer)(texts)
