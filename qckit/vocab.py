"""Growing the vocabulary: new tokens for dialect words, and embedding rows that start from their pieces.

:func:`grow_tokenizer` makes each requested word one token of a BPE tokenizer by *extending the BPE
model itself*: the word's current pieces (its "old segmentation") are joined by new merges appended
after all existing ones, and the joined strings enter the vocabulary. ``magasiner``, cut into
``Ġmag`` + ``as`` + ``iner``, becomes ``Ġmagasiner`` through the merges ``as iner`` → ``asiner`` and
``Ġmag asiner`` → ``Ġmagasiner``: its text after a space (how words occur in running text) is then one
token. Because the new merges rank after every old one, they only apply where the old ones left
exactly those pieces side by side, so the rest of the corpus tokenizes as before. The merge tree is
chosen to reuse strings already in the vocabulary; a joined string that is not the word itself (an
intermediate step, like ``asiner``) is a new token too and is reported as such.

This is chosen over ``tokenizer.add_tokens``, whose added tokens are matched as raw text before
pre-tokenization: with a byte-level BPE (Llama 3, SmolLM, GPT-2) ``" tuque"`` would become the space
token plus ``tuque``, saving nothing, and llama.cpp and transformers' GGUF loader treat such added
tokens differently. Extended merges are ordinary BPE, so the grown tokenizer exports to GGUF and loads
back everywhere with the same ids.

:func:`grow_embeddings` resizes the model's input embeddings (and an untied output head) and starts
each new row at the mean of the rows of the token's old segmentation, never at random values.
:func:`fertility` measures tokens per word and bytes per token of a corpus, before and after.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qckit.errors import InputError, QckitError

__all__ = ["NewToken", "VocabGrowth", "read_token_list", "grow_tokenizer", "grow_embeddings", "fertility"]

#: the text a word is tokenized in to see its running-text form (a one-letter word, then a space)
_CONTEXT = "a "
_MAX_ROUNDS = 16


@dataclass(frozen=True)
class NewToken:
    """One token added to the vocabulary.

    ``token`` is its vocabulary spelling (``Ġtuque``), ``text`` what it decodes to (``" tuque"``),
    ``pieces`` the ids of its old segmentation (its embedding starts at their mean) and ``word`` the
    requested word it completes, or ``None`` for an intermediate merge step.
    """

    id: int
    token: str
    text: str
    pieces: tuple[int, ...]
    word: str | None


@dataclass
class VocabGrowth:
    """What :func:`grow_tokenizer` did: the new tokens, the words it skipped and why, the sizes."""

    added: list[NewToken] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # word → reason
    old_size: int = 0
    new_size: int = 0

    @property
    def words(self) -> list[str]:
        """The requested words that are now one token."""
        return [t.word for t in self.added if t.word is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "old_vocab_size": self.old_size,
            "new_vocab_size": self.new_size,
            "words_added": len(self.words),
            "intermediate_tokens": sum(1 for t in self.added if t.word is None),
            "skipped": dict(self.skipped),
            "tokens": [{"id": t.id, "text": t.text, "word": t.word} for t in self.added],
        }


def read_token_list(value: str | Sequence[str]) -> list[str]:
    """The words to add: ``value`` itself when it is a list, else the UTF-8 file it names (one word per
    line; blank lines and lines starting with ``#`` are skipped). Surrounding whitespace is stripped."""
    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise InputError(
                path, "token list not found" if not path.exists() else "token list is not a file"
            )
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(path, f"token list is not UTF-8 ({exc.reason} at byte {exc.start})") from None
        return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [str(word).strip() for word in value if str(word).strip()]


def grow_tokenizer(tokenizer: Any, words: Iterable[str]) -> tuple[Any, VocabGrowth]:
    """A copy of ``tokenizer`` in which each of ``words`` (after a space) is one token; see the module docstring.

    Words that already are one token are skipped (``growth.skipped`` says so), as are repeats. A word
    that the tokenizer cuts *before* BPE (at an apostrophe or a hyphen with most pre-tokenizers) cannot
    be one BPE token and is an :class:`~qckit.errors.InputError` naming it. Needs a fast tokenizer with
    a BPE model; the returned tokenizer has the same class, special tokens and settings.
    """
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    data = json.loads(backend.to_str()) if backend is not None else {}
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        kind = model.get("type") or "not a fast tokenizer"
        raise QckitError(f"add_tokens extends the merges of a BPE tokenizer; this tokenizer is {kind}")
    old = _plain_copy(backend)
    vocab: dict[str, int] = model["vocab"]
    merges: list[Any] = model["merges"]
    pair_style = bool(merges) and isinstance(merges[0], list)
    growth = VocabGrowth(old_size=len(tokenizer))
    wanted: dict[str, list[int]] = {}  # word → the ids of its old segmentation
    word_of: dict[str, str] = {}  # running-text token spelling → word
    for word in words:
        if word in wanted or word in growth.skipped:
            continue
        tokens, ids = _segment(old, word)
        if len(ids) <= 1:
            growth.skipped[word] = "already one token"
            continue
        wanted[word] = ids
        word_of.setdefault("".join(tokens), word)

    pieces_of: dict[str, tuple[int, ...]] = {}  # new string → old-segmentation ids
    added_merges: set[tuple[str, str]] = set()

    def decomposition(text: str) -> tuple[int, ...]:
        return pieces_of[text] if text in pieces_of else (vocab[text],)

    def join(left: str, right: str) -> None:
        joined = left + right
        if joined not in vocab:
            vocab[joined] = len(tokenizer) + len(growth.added)
            pieces_of[joined] = decomposition(left) + decomposition(right)
            growth.added.append(NewToken(vocab[joined], joined, "", pieces_of[joined], None))
        merges.append([left, right] if pair_style else f"{left} {right}")
        added_merges.add((left, right))

    for ids in wanted.values():
        for left, right in _merge_tree([old.id_to_token(i) for i in ids], vocab):
            join(left, right)
    for _ in range(_MAX_ROUNDS):
        candidate = _plain_copy(Tokenizer.from_str(json.dumps(data, ensure_ascii=False)))
        failing = {w: tokens for w in wanted if len(tokens := _segment(candidate, w)[0]) != 1}
        if not failing:
            break
        for word, tokens in failing.items():
            # BPE applies every merge it can, so a pair left apart although it has a merge lies across
            # a pre-tokenizer boundary: no merge can join it
            stuck = next(
                ((a, b) for a, b in zip(tokens, tokens[1:], strict=False) if (a, b) in added_merges), None
            )
            if stuck is not None:
                raise InputError(
                    word,
                    f"cannot become one token: the tokenizer splits it before BPE between {stuck[0]!r} and "
                    f"{stuck[1]!r}; add the parts as separate words",
                )
            join(tokens[0], tokens[1])  # a merge of another word got in first: join what is there
    else:
        raise QckitError(f"add_tokens: could not make {', '.join(sorted(failing))} single tokens")

    with tempfile.TemporaryDirectory(prefix="qckit-vocab-") as tmp:
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        grown = type(tokenizer).from_pretrained(tmp)
    for key in ("pad_token", "eos_token", "bos_token"):
        if getattr(tokenizer, key, None) is not None and getattr(grown, key, None) is None:
            setattr(grown, key, getattr(tokenizer, key))
    growth.added = [
        NewToken(t.id, t.token, grown.decode([t.id]), t.pieces, word_of.get(t.token)) for t in growth.added
    ]
    growth.new_size = len(grown)
    return grown, growth


def _plain_copy(backend: Any) -> Any:
    """A private copy of a Rust tokenizer without truncation or padding (they would change the pieces)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _segment(backend: Any, word: str) -> tuple[list[str], list[int]]:
    """The tokens and ids of ``word`` as it occurs after a space (tokenized inside :data:`_CONTEXT`)."""
    encoding = backend.encode(_CONTEXT + word, add_special_tokens=False)
    start = len(_CONTEXT) - 1  # the space belongs to the word's first token
    tokens, ids = [], []
    for token, token_id, (begin, end) in zip(encoding.tokens, encoding.ids, encoding.offsets, strict=True):
        if begin >= start:
            tokens.append(token)
            ids.append(token_id)
        elif end > start:
            raise InputError(word, "cannot become one token: the tokenizer joins it with the preceding text")
    return tokens, ids


def _merge_tree(pieces: list[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """The merges ``(left, right)`` that join ``pieces`` into one string, children before parents.

    Among all binary trees over the pieces, one that creates the fewest strings missing from ``vocab``
    (the whole word is always new) is chosen, so intermediate steps reuse existing tokens.
    """
    n = len(pieces)
    text = {(i, j): "".join(pieces[i:j]) for i in range(n) for j in range(i + 1, n + 1)}
    cost: dict[tuple[int, int], int] = {(i, i + 1): 0 for i in range(n)}
    split: dict[tuple[int, int], int] = {}
    for width in range(2, n + 1):
        for i in range(n - width + 1):
            j = i + width
            new = 0 if text[i, j] in vocab or width == n else 1
            best = min(range(i + 1, j), key=lambda k: cost[i, k] + cost[k, j])
            cost[i, j] = cost[i, best] + cost[best, j] + new
            split[i, j] = best
    out: list[tuple[str, str]] = []

    def walk(i: int, j: int) -> None:
        if j - i < 2:
            return
        k = split[i, j]
        walk(i, k)
        walk(k, j)
        out.append((text[i, k], text[k, j]))

    walk(0, n)
    return out


def grow_embeddings(model: Any, growth: VocabGrowth) -> None:
    """Resize ``model``'s embeddings to the grown vocabulary and start each new row at the mean of the
    rows of its old segmentation, in the input embeddings and (when not tied to them) the output head."""
    import torch

    if not growth.added:
        return
    rows = model.get_input_embeddings().weight.shape[0]
    needed = max(t.id for t in growth.added) + 1
    if needed > rows:
        model.resize_token_embeddings(needed, mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(head.weight)
    with torch.no_grad():
        for weight in matrices:
            for token in growth.added:
                pieces = torch.tensor(token.pieces, dtype=torch.long, device=weight.device)
                weight[token.id] = weight[pieces].float().mean(dim=0).to(weight.dtype)
        bias = getattr(head, "bias", None) if head is not None else None
        if bias is not None:
            for token in growth.added:
                bias[token.id] = bias[list(token.pieces)].float().mean().to(bias.dtype)


def fertility(tokenizer: Any, texts: Iterable[str], batch_size: int = 1000) -> dict[str, float]:
    """Tokens per word and bytes per token of ``texts`` (documents, EOS not counted), with the counts.

    Words are whitespace-separated, bytes are UTF-8, tokens are what training packs (the
    :class:`~qckit.documents.BatchEncoder` ids): the definitions of the packed dataset's own numbers.
    """
    from qckit.documents import BatchEncoder

    encode = BatchEncoder(tokenizer)
    documents = words = size = tokens = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal documents, words, size, tokens
        documents += len(batch)
        words += sum(len(text.split()) for text in batch)
        size += sum(len(text.encode("utf-8")) for text in batch)
        tokens += sum(map(len, encode(batch)))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
    flush()
    return {
        "documents": documents,
        "words": words,
        "bytes": size,
        "tokens": tokens,
        "tokens_per_word": tokens / words if words else 0.0,
        "bytes_per_token": size / tokens if tokens else 0.0,
    }
