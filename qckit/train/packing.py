"""Tokenize a corpus and pack it into training windows, with an on-disk cache.

``pack_file`` streams a text file (one document per line), tokenizes it in large batches with the
tokenizer's Rust backend (which spreads a batch over all cores), feeds the token ids to a
:class:`~qckit.components.Chunker`, and stores the windows in flat numpy arrays. The result is a
:class:`PackedDataset` that the Hugging Face ``Trainer`` and ``default_data_collator`` accept as is.

The cache lives in ``cache_dir/<key>/`` where the key is a sha256 over the packing format version,
the tokenizer (its serialized backend and special token ids, which decide :func:`document_start`), the
*content* of the data file and the chunker's ``cache_key()``. Editing the file, changing the tokenizer or any chunker setting misses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from qckit._fs import file_sha256, remove_entry, replace_dir, staging_dir
from qckit.components import IGNORE_INDEX, Chunker, PackingStats, ability
from qckit.documents import BatchEncoder, iter_documents
from qckit.errors import InputError, QckitError
from qckit.progress import NullObserver, Observer

__all__ = [
    "PACKING_FORMAT_VERSION",
    "IGNORE_INDEX",
    "PackedDataset",
    "pack_file",
    "pack_texts",
    "tokenizer_fingerprint",
    "document_positions",
    "document_start",
    "forward_inputs",
    "WindowCollator",
    "window_collator",
    "flattens_batches",
]

PACKING_FORMAT_VERSION = 3  # bump when the tokenization or the stored arrays change (3: BOS per document)


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A sha256 identifying what ``tokenize_batch`` produces, or ``None`` for a tokenizer without a
    serializable Rust backend (a "slow" tokenizer), which disables the cache."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        serialized = backend.to_str() if backend is not None else None
    except Exception:
        serialized = None
    if serialized is None:
        return None
    digest = hashlib.sha256(serialized.encode("utf-8"))
    specials = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "vocab": len(tokenizer),
    }
    digest.update(json.dumps(specials, sort_keys=True).encode())
    return digest.hexdigest()


class PackedDataset(Dataset):
    """Packed training windows, stored as flat int32 arrays with window offsets.

    ``dataset[i]`` is a dict of long tensors ``input_ids``, ``attention_mask`` and ``labels``, all of
    length ``seq_length`` (the longest window: the chunker's ``max_length`` unless every window is
    shorter). Shorter windows (the final one) are padded with ``pad_id`` (attention 0, label -100), so
    ``transformers.default_data_collator`` stacks them.

    Attributes: ``stats`` (:class:`~qckit.components.PackingStats`), ``documents``, ``num_words``
    (whitespace-separated words), ``num_bytes`` (UTF-8 bytes of the documents), ``fertility`` (tokens per
    word, without EOS), ``trained`` (per window, the number of positions that are a training target),
    ``from_cache`` (True when loaded from the on-disk cache) and ``cache_path``.
    """

    def __init__(
        self,
        input_ids: np.ndarray,
        labels: np.ndarray,
        offsets: np.ndarray,
        *,
        pad_id: int,
        stats: PackingStats,
        num_words: int,
        num_bytes: int,
        num_doc_tokens: int,
        trained: np.ndarray,
        from_cache: bool = False,
        cache_path: Path | None = None,
    ) -> None:
        if len(input_ids) != len(labels) or len(offsets) < 1 or int(offsets[-1]) != len(input_ids):
            raise ValueError("inconsistent packed arrays")
        if len(trained) != len(offsets) - 1:
            raise ValueError("inconsistent packed arrays")
        self.input_ids = input_ids
        self.labels = labels
        self.offsets = offsets
        self.pad_id = int(pad_id)
        self.stats = stats
        self.num_words = int(num_words)
        self.num_bytes = int(num_bytes)
        self.num_doc_tokens = int(num_doc_tokens)
        self.trained = trained
        self.from_cache = from_cache
        self.cache_path = cache_path
        #: the EOS id when the chunker isolates documents (``attention = "document"``): items then carry
        #: ``position_ids`` that restart after every EOS; ``None`` for window attention
        self.document_eos: int | None = None
        lengths = np.diff(offsets)
        self.lengths = lengths
        self.seq_length = int(lengths.max()) if len(lengths) else 0

    @property
    def documents(self) -> int:
        return self.stats.documents

    @property
    def fertility(self) -> float:
        """Tokens per whitespace-separated word over the corpus (EOS not counted)."""
        return self.num_doc_tokens / self.num_words if self.num_words else 0.0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def window(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The unpadded ``(input_ids, labels)`` of window ``index`` as int32 arrays."""
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.input_ids[start:end], self.labels[start:end]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.item(int(index), self.seq_length)

    def item(self, index: int, size: int) -> dict[str, torch.Tensor]:
        """Window ``index`` as the model's inputs, padded to ``size`` tokens (at least its length).

        With document isolation (:attr:`document_eos`), ``position_ids`` restart at 0 after every EOS and
        again at the padding, which so becomes a sequence of its own that no real token attends to.
        """
        ids, labels = self.window(index)
        n = len(ids)
        if n > size:
            raise ValueError(f"window {index} has {n} tokens, more than {size}")
        input_ids = torch.full((size,), self.pad_id, dtype=torch.long)
        label_t = torch.full((size,), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros(size, dtype=torch.long)
        input_ids[:n] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        label_t[:n] = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        attention[:n] = 1
        item = {"input_ids": input_ids, "attention_mask": attention, "labels": label_t}
        if self.document_eos is not None:
            item["position_ids"] = torch.from_numpy(document_positions(ids, self.document_eos, size))
        return item

    def decode_sample(self, index: int, tokenizer: Any) -> str:
        """Decoded text of window ``index`` for inspection, special tokens shown.

        The overlap context (positions that are not trained, beyond the first token which never is) is
        wrapped in ``⟦context: … ⟧``.
        """
        ids, labels = self.window(index)
        targets = np.flatnonzero(labels != IGNORE_INDEX)
        context = int(targets[0]) if len(targets) else len(ids)
        if context <= 1:
            return tokenizer.decode(ids.tolist(), skip_special_tokens=False)
        head = tokenizer.decode(ids[:context].tolist(), skip_special_tokens=False)
        tail = tokenizer.decode(ids[context:].tolist(), skip_special_tokens=False)
        return f"⟦context: {head}⟧{tail}"

    def summary(self) -> dict[str, Any]:
        """Numbers for reports: the packing stats plus corpus size and fertility."""
        return {
            **asdict(self.stats),
            "words": self.num_words,
            "bytes": self.num_bytes,
            "fertility": self.fertility,
            "seq_length": self.seq_length,
            "from_cache": self.from_cache,
        }

    # -- cache ------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the arrays and metadata into ``directory`` (which must exist)."""
        np.save(directory / "input_ids.npy", self.input_ids)
        np.save(directory / "labels.npy", self.labels)
        np.save(directory / "offsets.npy", self.offsets)
        np.save(directory / "trained.npy", self.trained)
        meta = {
            "format": PACKING_FORMAT_VERSION,
            "pad_id": self.pad_id,
            "stats": asdict(self.stats),
            "num_words": self.num_words,
            "num_bytes": self.num_bytes,
            "num_doc_tokens": self.num_doc_tokens,
        }
        (directory / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> PackedDataset:
        """Load a dataset written by :meth:`save` (arrays memory-mapped, read-only)."""
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != PACKING_FORMAT_VERSION:
            raise ValueError("packing cache format mismatch")
        input_ids, labels, offsets, trained = (
            np.load(directory / f"{name}.npy", mmap_mode="r")
            for name in ("input_ids", "labels", "offsets", "trained")
        )
        return cls(
            input_ids,
            labels,
            offsets,
            trained=trained,
            pad_id=meta["pad_id"],
            stats=PackingStats(**meta["stats"]),
            num_words=meta["num_words"],
            num_bytes=meta["num_bytes"],
            num_doc_tokens=meta["num_doc_tokens"],
            from_cache=True,
            cache_path=directory,
        )


def document_positions(ids: np.ndarray, eos: int, size: int | None = None) -> np.ndarray:
    """Position ids that restart at 0 at the start of every document of ``ids`` (the token after each
    EOS), continued by ``0, 1, …`` over the padding up to ``size``."""
    n = len(ids)
    index = np.arange(n, dtype=np.int64)
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
        starts[1:] = np.asarray(ids[:-1]) == eos
    positions = index - np.maximum.accumulate(np.where(starts, index, 0))
    pad = max((size or n) - n, 0)
    return np.concatenate([positions, np.arange(pad, dtype=np.int64)])


def forward_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model's keywords for a batch of training windows.

    With ``position_ids`` (document isolation) the attention mask is left out: transformers detects
    packed sequences from position ids that restart only when no 2-D attention mask is given, and
    builds the block-diagonal causal mask itself (sdpa, eager, flex) or passes the sequence lengths to
    flash-attention (varlen). The padding is a sequence of its own then, so nothing attends to it. The
    KV cache is switched off too: with a cache, transformers does not look for packed sequences. A
    flattened batch (:class:`WindowCollator`) always has position ids: its all-ones mask is left out too.
    """
    if "position_ids" in batch:
        inputs = {k: v for k, v in batch.items() if k != "attention_mask"}
        inputs["use_cache"] = False
        return inputs
    return batch


def flattens_batches(model: Any) -> bool:
    """Whether ``model``'s attention implementation is a flash-attention kernel (transformers' flash
    wrapper: ``flash_attention_2/3/4``, the ``kernels`` flash variants, any registered ``*flash*`` name),
    whose micro-batches :class:`WindowCollator` flattens into one row."""
    from transformers.utils.generic import is_flash_attention_requested

    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", None)
    return bool(implementation) and is_flash_attention_requested(
        requested_attention_implementation=implementation
    )


class WindowCollator:
    """The Trainer's data collator for packed windows (items of :class:`PackedDataset` or a mix of them).

    Stacked (``flatten=False``, sdpa / eager / flex): the pre-padded windows as rows, like
    ``default_data_collator``; document isolation then comes from the position ids (:func:`forward_inputs`).

    Flattened (``flatten=True``, flash-attention kernels): the real tokens of the micro-batch's windows
    concatenated into one row, padding-free. Position ids restart at every window and document start,
    and ``cu_seq_lens_q/k`` / ``max_length_q/k`` give the sequence lengths explicitly, so transformers'
    flash wrapper runs the varlen kernel per document. Why: with more than one row it derives the lengths
    from position ids only for a batch of one row, and otherwise runs dense causal attention over each
    whole row (documents would attend to each other); and no padding token is computed. The labels are
    the windows' own (position 0 of every window and every document start are -100, so no token is
    predicted across a boundary), and ``attention_mask`` is all ones: it only lets the Trainer count the
    tokens (``num_input_tokens_seen``); :func:`forward_inputs` leaves it out of the model's inputs.
    """

    def __init__(self, flatten: bool) -> None:
        self.flatten = flatten

    def __repr__(self) -> str:
        return f"WindowCollator(flatten={self.flatten})"

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        if not self.flatten:
            return {key: torch.stack([item[key] for item in items]) for key in items[0]}
        parts: dict[str, list[torch.Tensor]] = {"input_ids": [], "labels": [], "position_ids": []}
        for item in items:
            n = int(item["attention_mask"].sum())
            parts["input_ids"].append(item["input_ids"][:n])
            parts["labels"].append(item["labels"][:n])
            positions = item.get("position_ids")
            parts["position_ids"].append(positions[:n] if positions is not None else torch.arange(n))
        batch: dict[str, Any] = {key: torch.cat(value)[None] for key, value in parts.items()}
        positions = batch["position_ids"][0]
        starts = torch.nonzero(positions == 0).flatten()
        lengths = torch.diff(starts, append=torch.tensor([len(positions)]))
        cu_seq_lens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        longest = int(lengths.max())
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        batch.update(
            cu_seq_lens_q=cu_seq_lens, cu_seq_lens_k=cu_seq_lens, max_length_q=longest, max_length_k=longest
        )
        return batch


def window_collator(model: Any) -> WindowCollator:
    """The collator training ``model`` needs: flattened for a flash-attention kernel, else stacked."""
    return WindowCollator(flatten=flattens_batches(model))


def _document_eos(chunker: Chunker, tokenizer: Any) -> int | None:
    return _special_ids(tokenizer)[0] if ability(chunker, Chunker, "attention") == "document" else None


def document_start(tokenizer: Any) -> int | None:
    """The token each training document starts with, so that training sees a document as the evaluation
    scores it (after :func:`qckit.evaluate.loglik.prefix_token_id`: BOS, else EOS): the BOS when the
    tokenizer has one other than its EOS; ``None`` otherwise (the EOS ending the document before is then
    the prefix already). The packer labels it :data:`IGNORE_INDEX`: it is context, never a target."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return int(bos) if bos is not None and bos != eos else None


def _special_ids(tokenizer: Any) -> tuple[int, int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise QckitError("the tokenizer has no EOS token; packing needs one to separate documents")
    pad = tokenizer.pad_token_id
    return int(eos), int(eos if pad is None else pad)


def _batches(docs: Iterable[str], size: int, max_chars: int = 8 << 20) -> Iterator[list[str]]:
    """Batches of at most ``size`` documents and about ``max_chars`` characters (bounds memory for long documents)."""
    batch: list[str] = []
    chars = 0
    for text in docs:
        batch.append(text)
        chars += len(text)
        if len(batch) >= size or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _encoded_batches(
    texts: Iterable[str], encode: BatchEncoder, batch_size: int
) -> Iterator[tuple[list[str], list[list[int]]]]:
    """``(texts, token ids)`` per batch; the next batch is encoded in a helper thread (the Rust encoder
    releases the GIL) while the caller packs the current one."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qckit-tokenize") as pool:
        pending: tuple[list[str], Future] | None = None
        for batch in _batches(texts, batch_size):
            future = pool.submit(encode, batch)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()


def _pack(
    texts: Iterable[str],
    tokenizer: Any,
    chunker: Chunker,
    *,
    batch_size: int,
    observer: Observer,
    source: str,
) -> PackedDataset:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    eos, pad = _special_ids(tokenizer)
    start = document_start(tokenizer)
    encode = BatchEncoder(tokenizer)
    counts = {"words": 0, "bytes": 0, "doc_tokens": 0}
    stats = PackingStats()

    def token_stream() -> Iterator[list[int]]:
        for batch, ids in _encoded_batches(texts, encode, batch_size):
            batch_bytes = sum(len(text.encode("utf-8")) for text in batch)
            counts["bytes"] += batch_bytes
            counts["words"] += sum(len(text.split()) for text in batch)
            counts["doc_tokens"] += sum(map(len, ids))
            yield from ids if start is None else ([start, *doc] for doc in ids)
            observer.advance(
                "tokenize",
                batch_bytes,
                documents=stats.documents,
                tokens=stats.tokens_total,
                windows=stats.windows,
            )

    id_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    lengths: list[int] = []
    trained: list[int] = []
    for window_ids, window_labels in chunker.windows(token_stream(), eos, stats):
        n = len(window_ids)
        if n != len(window_labels) or n == 0:
            raise QckitError(f"chunker {chunker.name!r} yielded a window with mismatched or empty labels")
        id_parts.append(np.fromiter(window_ids, dtype=np.int32, count=n))
        label_parts.append(np.fromiter(window_labels, dtype=np.int32, count=n))
        if start is not None:  # a document's start token is context (BatchEncoder never yields it inside one)
            starts = (id_parts[-1] == start) & (label_parts[-1] != IGNORE_INDEX)
            label_parts[-1][starts] = IGNORE_INDEX
            stats.tokens_kept -= int(np.count_nonzero(starts))
        lengths.append(n)
        trained.append(int(np.count_nonzero(label_parts[-1] != IGNORE_INDEX)))
    if stats.documents == 0:
        raise InputError(source, "no documents (every line is blank)")
    if not lengths:
        raise InputError(
            source,
            f"no training windows: {stats.documents} documents, {stats.tokens_total} tokens "
            f"are too few for chunker {chunker.name!r} ({stats.windows_dropped_short} short window dropped)",
        )
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return PackedDataset(
        np.concatenate(id_parts),
        np.concatenate(label_parts),
        offsets,
        pad_id=pad,
        stats=stats,
        num_words=counts["words"],
        num_bytes=counts["bytes"],
        num_doc_tokens=counts["doc_tokens"],
        trained=np.asarray(trained, dtype=np.int32),
    )


def pack_texts(
    texts: Iterable[str],
    tokenizer: Any,
    chunker: Chunker,
    *,
    batch_size: int = 1000,
    observer: Observer | None = None,
) -> PackedDataset:
    """Pack in-memory documents (blank ones skipped, others stripped like file lines); no cache."""
    observer = observer or NullObserver()
    docs = (t.strip() for t in texts)
    observer.start("tokenize", None, "B")
    try:
        dataset = _pack(
            (t for t in docs if t),
            tokenizer,
            chunker,
            batch_size=batch_size,
            observer=observer,
            source="<memory>",
        )
        dataset.document_eos = _document_eos(chunker, tokenizer)
        return dataset
    finally:
        observer.finish("tokenize")


def cache_key(path: str | Path, tokenizer: Any, chunker: Chunker) -> str | None:
    """The cache key of ``pack_file(path, tokenizer, chunker)``, or ``None`` if it cannot be cached."""
    tok = tokenizer_fingerprint(tokenizer)
    if tok is None:
        return None
    parts = {
        "format": PACKING_FORMAT_VERSION,
        "tokenizer": tok,
        "data": file_sha256(path),
        "chunker": chunker.cache_key(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def pack_file(
    path: str | Path,
    tokenizer: Any,
    chunker: Chunker,
    *,
    cache_dir: Path | None,
    batch_size: int = 1000,
    observer: Observer | None = None,
) -> PackedDataset:
    """Tokenize ``path`` (UTF-8, one document per line, blank lines skipped) and pack it with ``chunker``.

    With ``cache_dir`` the result is stored in ``cache_dir/<key>/`` (written atomically) and later calls
    with the same file content, tokenizer and chunker settings load it from there (``from_cache`` is
    True). Progress goes to ``observer`` as task ``"tokenize"`` (total and amounts in bytes).
    """
    path = Path(path)
    observer = observer or NullObserver()
    if not path.is_file():
        raise InputError(path, "not a file" if path.exists() else "file not found")
    total = path.stat().st_size
    key = cache_key(path, tokenizer, chunker) if cache_dir is not None else None
    if cache_dir is not None and key is None:
        observer.warn("the tokenizer has no Rust backend to fingerprint: packed windows are not cached")
    target = Path(cache_dir) / key if cache_dir is not None and key is not None else None

    observer.start("tokenize", total, "B")
    try:
        dataset = _load_cached(target, total, observer) if target is not None else None
        if dataset is None:
            dataset = _pack(
                (text for _, text in iter_documents(path)),
                tokenizer,
                chunker,
                batch_size=batch_size,
                observer=observer,
                source=str(path),
            )
            if target is not None:
                _store(dataset, target)
        dataset.document_eos = _document_eos(chunker, tokenizer)
        return dataset
    finally:
        observer.finish("tokenize")


def _load_cached(target: Path, total: int, observer: Observer) -> PackedDataset | None:
    """The packing cache entry ``target``, or ``None`` when there is none (an unreadable one is removed)."""
    if not (target / "meta.json").is_file():
        return None
    try:
        dataset = PackedDataset.load(target)
    except (OSError, ValueError, KeyError, TypeError):
        observer.warn(f"{target}: unreadable packing cache entry, rebuilding it")
        # cache_dir may be a link the user chose (resolved); the entry itself is never followed
        remove_entry(target.parent.resolve(), target.name)
        return None
    observer.advance("tokenize", total, cached=True)
    return dataset


def _store(dataset: PackedDataset, target: Path) -> None:
    """Write ``dataset`` to ``target`` atomically: into a temporary sibling directory, then rename."""
    with staging_dir(target) as tmp:
        dataset.save(tmp)
        if target.exists() and not (target / "meta.json").is_file():
            remove_entry(target.parent.resolve(), target.name)  # debris of a crashed writer, never an entry
        replace_dir(tmp, target, keep_existing=True)  # a concurrent writer's complete entry is as good
    dataset.cache_path = target
