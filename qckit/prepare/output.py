"""The output stage of a prepare run: spool the kept documents, split each set, write, commit.

The splitter needs each set's document count before its first answer, so the kept documents are
spooled to a temporary file while the inputs are read, then read back set by set. Splitting has one
path, :func:`split_set`, whatever receives the documents: the writers' files (:class:`FileSink`, fed
with the lines the workers formatted) or in-memory lists (:class:`MemorySink`). Files are written into the run's temporary directory and
published all at once by :class:`~qckit.prepare.outdir.OutputDir` only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_string  # json.dumps(ensure_ascii=False)'s, in C
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qckit._fs import errors_name
from qckit.components import Document, _document
from qckit.errors import ComponentError, InputError, QckitError
from qckit.prepare.clusters import Clusters, SetClusters
from qckit.prepare.resultfile import read_values, write_value
from qckit.prepare.work import BatchResult
from qckit.settings import output_name


@dataclass
class SpoolBatch:
    """A batch of one set's kept documents, as the output stage reads it back."""

    n: int
    #: per writer: the UTF-8 lines of the documents, concatenated, and each line's length in bytes
    formatted: list[tuple[bytes, np.ndarray]] | None
    text_bytes: int  # UTF-8 bytes of the documents' texts
    docs: list[Document] | None  # when the splitter or the caller needs the documents themselves


#: the first bytes of a spool file (records in :mod:`qckit.prepare.resultfile`'s data-only format)
SPOOL_MAGIC = b"qckit-spool 1\n"


class Spool:
    """The kept documents of each output set, in corpus order, in one file of records per set (data
    only, never pickle: the run's directory may be on shared storage).

    For files, what is spooled is what the writers will write: the lines the workers formatted, as
    UTF-8 bytes, so that the driver never decodes or re-encodes a text. Documents themselves are
    spooled only for in-memory runs and for a splitter that reads them (no ``is_val_batch``).

    One spool file is open at a time, whatever the number of sets: results arrive in corpus order, so
    without ``merge`` (one set per input) the set changes only between files, and a run with thousands
    of inputs never meets the limit on open files. A set that keeps nothing gets no file.
    """

    def __init__(self, directory: Path, n_sets: int, with_docs: bool) -> None:
        self.paths = [directory / f"spool-{i}.bin" for i in range(n_sets)]
        self.with_docs = with_docs
        self._started: set[int] = set()  # the sets whose file exists
        self._open: tuple[int, Any] | None = None  # (set, file) of the one open spool file

    def add(self, result: BatchResult) -> None:
        """Spool the documents of ``result`` that the stateful filters kept."""
        kept = result.kept
        if not kept:
            return
        everything = len(kept) == len(result.lines)
        formatted = None
        if result.formatted is not None:
            keep = None if everything else _mask(len(result.lines), kept)
            formatted = [
                (blob, lengths) if keep is None else (_select(blob, lengths, keep), lengths[keep])
                for blob, lengths in result.formatted
            ]
        text_bytes = int(result.text_bytes.sum() if everything else result.text_bytes[kept].sum())
        rows = _rows(result, kept) if self.with_docs else None
        record = (result.source, len(kept), formatted, text_bytes, rows)
        with errors_name(self.paths[result.set_index]):
            try:
                write_value(self._file(result.set_index), record)
            except TypeError as exc:  # a component put something else than data into a document's meta
                raise QckitError(
                    f"{result.source}: a document's meta or metrics cannot be kept between the stages ({exc}); "
                    "components must store data there (str, numbers, lists, dicts with string keys)"
                ) from None

    def _file(self, set_index: int) -> Any:
        """The spool file of ``set_index``, open for appending (the previous set's closed)."""
        if self._open is not None and self._open[0] == set_index:
            return self._open[1]
        self.close()
        started = set_index in self._started
        f = open(self.paths[set_index], "ab" if started else "wb")  # noqa: SIM115 - closed by close()
        if not started:
            f.write(SPOOL_MAGIC)
        self._started.add(set_index)
        self._open = (set_index, f)
        return f

    def close(self) -> None:
        if self._open is not None:
            set_index, f = self._open
            self._open = None
            with errors_name(self.paths[set_index]):
                f.close()

    def remove(self) -> None:
        """Delete the spool files (once every set is written)."""
        for path in self.paths:
            path.unlink(missing_ok=True)

    def batches(self, set_index: int) -> Iterator[SpoolBatch]:
        """The kept documents of one set, batch by batch, in corpus order."""
        if set_index not in self._started:
            return
        path = self.paths[set_index]
        with errors_name(path), open(path, "rb") as f:
            records = read_values(f, os.fstat(f.fileno()).st_size, SPOOL_MAGIC, "qckit spool")
            while True:
                try:
                    source, n, formatted, text_bytes, rows = next(records)
                except StopIteration:
                    return
                except ValueError as exc:  # changed under the running run: refuse, build nothing
                    raise InputError(path, f"not the spool this run wrote ({exc})") from None
                docs = None
                if rows is not None:
                    docs = [
                        _document(text, source, line, meta, metrics) for text, line, meta, metrics in rows
                    ]
                yield SpoolBatch(n, formatted, text_bytes, docs)


def _mask(n: int, kept: list[int]) -> np.ndarray:
    keep = np.zeros(n, dtype=bool)
    keep[kept] = True
    return keep


def _select(blob: bytes, lengths: np.ndarray, keep: np.ndarray) -> bytes:
    """The lines of ``blob`` (of ``lengths`` bytes each) where ``keep`` is true, concatenated."""
    return np.frombuffer(blob, dtype=np.uint8)[np.repeat(keep, lengths)].tobytes()


def _rows(result: BatchResult, kept: list[int]) -> list[tuple]:
    texts, metas = result.texts, result.metas
    assert texts is not None
    rows = []
    for i in kept:
        metrics = None
        if result.metric_values is not None:
            metrics = dict(zip(result.metric_keys, result.metric_values[i].tolist(), strict=True))
        rows.append((texts[i], result.lines[i], metas[i] if metas is not None else None, metrics))
    return rows


class RejectsFile:
    """``rejected.jsonl``: one JSON object per dropped document, batch by batch in corpus order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with errors_name(path):
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, result: BatchResult) -> None:
        if result.rejected:
            with errors_name(self.path):
                self._file.write(_reject_lines(result.source, sorted(result.rejected)))

    def close(self) -> None:
        with errors_name(self.path):
            self._file.close()


def _reject_lines(source: str, rejected: Iterable[tuple[int, str, str, str]]) -> str:
    """The lines of ``rejected`` (line, filter, reason, text): each ``json.dumps({"source": …, "line": …,
    "filter": …, "reason": …, "text": …}, ensure_ascii=False)``, built from json's C string encoder (a
    near-duplicate filter can reject a quarter of a corpus: one ``json.dumps`` each costs more)."""
    head = '{"source": ' + _json_string(source) + ', "line": '
    return "".join(
        f'{head}{line:d}, "filter": {_json_string(name)}, "reason": {_json_string(reason)}, '
        f'"text": {_json_string(text)}}}\n'
        for line, name, reason, text in rejected
    )


# -- splitting -------------------------------------------------------------------------------------


class Sink(Protocol):
    """Receives a set's documents with their side (``True`` = validation), batch by batch."""

    def write(self, batch: SpoolBatch, is_val: list[bool]) -> None: ...


class MemorySink:
    """Collects a set's documents into ``train`` and ``val`` lists."""

    def __init__(self) -> None:
        self.train: list[Document] = []
        self.val: list[Document] = []

    def write(self, batch: SpoolBatch, is_val: list[bool]) -> None:
        assert batch.docs is not None
        for doc, val in zip(batch.docs, is_val, strict=True):
            (self.val if val else self.train).append(doc)


class FileSink:
    """Writes a set's formatted lines, one writer after the other, into ``train<suffix>``/``val<suffix>``
    files of ``directory``."""

    def __init__(self, writers: list[Any], directory: Path, set_suffix: str) -> None:
        self.directory = directory
        #: (train file, val file) of each writer
        self.files = [
            tuple(directory / output_name(part, set_suffix, w.instance.suffix) for part in ("train", "val"))
            for w in writers
        ]
        with contextlib.ExitStack() as stack, errors_name(directory):
            self._handles = [
                (stack.enter_context(open(t, "wb")), stack.enter_context(open(v, "wb")))  # noqa: SIM115
                for t, v in self.files
            ]
            self._stack = stack.pop_all()  # closed by close()

    def write(self, batch: SpoolBatch, is_val: list[bool]) -> None:
        assert batch.formatted is not None
        any_val = any(is_val)
        side = np.array(is_val, dtype=bool) if any_val else None
        for (blob, lengths), (train, val), (train_path, val_path) in zip(
            batch.formatted, self._handles, self.files, strict=True
        ):
            if side is None:
                with errors_name(train_path):
                    train.write(blob)
                continue
            train_part, val_part = _split_lines(blob, lengths, side)
            with errors_name(train_path):
                train.write(train_part)
            with errors_name(val_path):
                val.write(val_part)

    def close(self) -> None:
        with errors_name(self.directory):
            self._stack.close()


def _split_lines(blob: bytes, lengths: np.ndarray, to_val: np.ndarray) -> tuple[bytes, bytes]:
    """The lines of ``blob`` (of ``lengths`` bytes each) where ``to_val`` is false, and those where it is
    true, each concatenated (a byte mask: slicing run by run costs a Python step per run of lines)."""
    data = np.frombuffer(blob, dtype=np.uint8)
    on_val = np.repeat(to_val, lengths)
    return data[~on_val].tobytes(), data[on_val].tobytes()


def split_set(
    batches: Iterator[SpoolBatch],
    n_docs: int,
    set_index: int,
    splitter: Any,
    sink: Sink,
    clusters: SetClusters | None = None,
) -> dict[str, int]:
    """Assign the ``n_docs`` documents of one set to train or validation and hand them to ``sink``;
    return the set's ``train``/``val`` counts and its text ``bytes`` (UTF-8). With ``clusters``, every
    member of a near-duplicate cluster gets its leader's side (and ``clustered`` counts them)."""
    instance = splitter.instance
    grouped = clusters is not None and clusters.n_members > 0
    try:
        if grouped and hasattr(instance, "start_clusters"):
            assert clusters is not None
            instance.start_clusters(n_docs, set_index, clusters.leaders)
        else:
            instance.start(n_docs, set_index)
    except Exception as exc:
        raise ComponentError("splitter", splitter.name, splitter.owner, None, exc) from exc
    by_index = getattr(instance, "is_val_batch", None)
    is_val = instance.is_val
    counts = {"train": 0, "val": 0, "bytes": 0}
    index = 0
    for batch in batches:
        try:
            if by_index is not None:
                flags = list(by_index(index, batch.n))
            else:
                assert batch.docs is not None
                flags = [is_val(i, doc) for i, doc in enumerate(batch.docs, start=index)]
        except Exception as exc:
            raise ComponentError("splitter", splitter.name, splitter.owner, None, exc) from exc
        if clusters is not None:
            flags = clusters.follow(index, flags)
        index += batch.n
        n_val = sum(flags)
        counts["bytes"] += batch.text_bytes
        counts["val"] += n_val
        counts["train"] += batch.n - n_val
        sink.write(batch, flags)
    if grouped:
        assert clusters is not None
        counts["clustered"] = clusters.n_members
    return counts


def write_sets(
    spool: Spool,
    set_names: list[str],
    splitter: Any,
    writers: list[Any],
    directory: Path,
    stats: dict,
    clusters: Clusters | None = None,
) -> None:
    """Split and write every set into ``directory``, recording each set's counts in ``stats``."""
    sizes = [stats["sets"][i]["kept"] for i in range(len(set_names))]
    followed = clusters.for_sets(sizes) if clusters else [None] * len(set_names)
    for set_index, suffix in enumerate(set_names):
        sink = FileSink(writers, directory, suffix)
        try:
            n = sizes[set_index]
            counts = split_set(spool.batches(set_index), n, set_index, splitter, sink, followed[set_index])
        finally:
            sink.close()
        stats["sets"][set_index].update(
            name=f"train{suffix}/val{suffix}", bytes=counts["bytes"], train=counts["train"], val=counts["val"]
        )
        if "clustered" in counts:  # near-duplicates kept on their cluster's side
            stats["sets"][set_index]["clustered"] = counts["clustered"]
