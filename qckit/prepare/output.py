"""The output stage of a prepare run: spool the kept documents, split each set, write, commit.

The splitter needs each set's document count before its first answer, so the kept documents are
spooled to a temporary file while the inputs are read, then read back set by set. Splitting has one
path, :func:`split_set`, whatever receives the documents: the writers' files (:class:`FileSink`) or
in-memory lists (:class:`MemorySink`). Files are written into the run's temporary directory and
renamed into the output directory only when everything succeeded (:func:`commit`).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from qckit._fs import atomic_write_json
from qckit.components import Document, _document
from qckit.errors import ComponentError
from qckit.prepare.work import BatchResult

_SEP = "\x00"


class Spool:
    """The kept documents of each output set, in corpus order, in one pickle stream per set.

    ``slim`` (no writer reads metadata) keeps texts only, joined into one string per batch, which
    pickles with a single UTF-8 encode instead of one per document; otherwise full rows.
    """

    def __init__(self, directory: Path, n_sets: int, slim: bool) -> None:
        self.paths = [directory / f"spool-{i}.pkl" for i in range(n_sets)]
        self.slim = slim
        self._files = [open(p, "wb") for p in self.paths]  # noqa: SIM115 - closed by close()

    def add(self, result: BatchResult) -> None:
        """Spool the documents of ``result`` that the stateful filters kept."""
        if result.kept:
            record = _spool_record(result, result.kept, self.slim)
            pickle.dump(record, self._files[result.set_index], pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def batches(self, set_index: int) -> Iterator[list[Document]]:
        """The kept documents of one set, batch by batch, in corpus order."""
        with open(self.paths[set_index], "rb") as f:
            while True:
                try:
                    source, form, data = pickle.load(f)
                except EOFError:
                    return
                if form == "joined":
                    yield [Document(text, source) for text in data.split(_SEP)]
                elif form == "texts":
                    yield [Document(text, source) for text in data]
                else:
                    yield [_document(text, source, line, meta, metrics) for text, line, meta, metrics in data]


def _spool_record(result: BatchResult, kept: list[int], slim: bool) -> tuple:
    texts = [result.texts[i] for i in kept] if len(kept) != len(result.texts) else result.texts
    if slim:
        joined = _SEP.join(texts)
        if joined.count(_SEP) == len(texts) - 1:
            return (result.source, "joined", joined)
        return (result.source, "texts", texts)
    metas = result.metas
    rows = []
    for n, i in enumerate(kept):
        metrics = None
        if result.metric_values is not None:
            metrics = dict(zip(result.metric_keys, result.metric_values[i].tolist(), strict=True))
        rows.append((texts[n], result.lines[i], metas[i] if metas is not None else None, metrics))
    return (result.source, "rows", rows)


class RejectsFile:
    """``rejected.jsonl``: one JSON object per dropped document, batch by batch in corpus order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, result: BatchResult) -> None:
        if result.rejected:
            self._file.write("".join(_reject_line(result.source, *r) for r in sorted(result.rejected)))

    def close(self) -> None:
        self._file.close()


def _reject_line(source: str, line: int, filter_name: str, reason: str, text: str) -> str:
    record = {"source": source, "line": line, "filter": filter_name, "reason": reason, "text": text}
    return json.dumps(record, ensure_ascii=False) + "\n"


# -- splitting -------------------------------------------------------------------------------------


class Sink(Protocol):
    """Receives a set's documents with their side (``True`` = validation), batch by batch."""

    def write(self, docs: list[Document], is_val: list[bool]) -> None: ...


class MemorySink:
    """Collects a set's documents into ``train`` and ``val`` lists."""

    def __init__(self) -> None:
        self.train: list[Document] = []
        self.val: list[Document] = []

    def write(self, docs: list[Document], is_val: list[bool]) -> None:
        for doc, val in zip(docs, is_val, strict=True):
            (self.val if val else self.train).append(doc)


class FileSink:
    """Formats a set's documents with each writer into ``train<suffix>``/``val<suffix>`` files of ``directory``."""

    def __init__(self, writers: list[Any], directory: Path, set_suffix: str) -> None:
        self.writers = writers
        self.files: dict[tuple[str, str], tuple[Path, str]] = {}
        for w in writers:
            for part in ("train", "val"):
                final = f"{part}{set_suffix}{w.instance.suffix}"
                self.files[(w.name, part)] = (directory / final, final)
        with contextlib.ExitStack() as stack:
            self._handles = {
                key: stack.enter_context(open(path, "w", encoding="utf-8", newline="\n"))  # noqa: SIM115
                for key, (path, _) in self.files.items()
            }
            self._stack = stack.pop_all()  # closed by close()

    def write(self, docs: list[Document], is_val: list[bool]) -> None:
        any_val = any(is_val)
        for w in self.writers:
            lines = [w.instance.format(doc) for doc in docs]
            self._handles[(w.name, "train")].write(
                "".join(t for t, v in zip(lines, is_val, strict=True) if not v)
            )
            if any_val:
                self._handles[(w.name, "val")].write(
                    "".join(t for t, v in zip(lines, is_val, strict=True) if v)
                )

    def close(self) -> None:
        self._stack.close()


def split_set(
    batches: Iterator[list[Document]], n_docs: int, set_index: int, splitter: Any, sink: Sink
) -> dict[str, int]:
    """Assign the ``n_docs`` documents of one set to train or validation and hand them to ``sink``;
    return the set's ``train``/``val`` counts and its text ``bytes`` (UTF-8)."""
    try:
        splitter.instance.start(n_docs, set_index)
    except Exception as exc:
        raise ComponentError("splitter", splitter.name, splitter.owner, None, exc) from exc
    is_val = splitter.instance.is_val
    counts = {"train": 0, "val": 0, "bytes": 0}
    index = 0
    for docs in batches:
        try:
            flags = [is_val(i, doc) for i, doc in enumerate(docs, start=index)]
        except Exception as exc:
            raise ComponentError("splitter", splitter.name, splitter.owner, None, exc) from exc
        index += len(docs)
        n_val = sum(flags)
        counts["bytes"] += len("".join([doc.text for doc in docs]).encode("utf-8"))
        counts["val"] += n_val
        counts["train"] += len(docs) - n_val
        sink.write(docs, flags)
    return counts


def write_sets(
    spool: Spool, set_names: list[str], splitter: Any, writers: list[Any], directory: Path, stats: dict
) -> list[tuple[Path, str]]:
    """Split and write every set into ``directory``; return (written file, final name) pairs."""
    staged: list[tuple[Path, str]] = []
    for set_index, suffix in enumerate(set_names):
        sink = FileSink(writers, directory, suffix)
        try:
            n = stats["sets"][set_index]["kept"]
            counts = split_set(spool.batches(set_index), n, set_index, splitter, sink)
        finally:
            sink.close()
        stats["sets"][set_index].update(
            name=f"train{suffix}/val{suffix}", bytes=counts["bytes"], train=counts["train"], val=counts["val"]
        )
        staged.extend(sink.files.values())
    return staged


def commit(
    staged: list[tuple[Path, str]],
    extra: list[tuple[Path, str]],
    stats: dict,
    tmp: Path,
    out_dir: Path,
    stats_file: str,
) -> list[Path]:
    """Move the staged files from ``tmp`` into ``out_dir`` (the stats file last); return the output paths."""
    stats_path = tmp / "stats.json"
    stats["outputs"] = [str(out_dir / final) for _, final in staged]
    atomic_write_json(stats_path, stats)
    outputs = []
    for temp_path, final in [*staged, *extra]:
        os.replace(temp_path, out_dir / final)
        outputs.append(out_dir / final)
    os.replace(stats_path, out_dir / stats_file)
    return outputs
