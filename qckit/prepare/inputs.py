"""Where a prepare run's documents come from: input files (read in corpus order, cut into batches by
bytes) or in-memory items.

Reading raw records is cheap I/O done by the driver; decoding them is the readers' ``parse`` in
:func:`qckit.prepare.work.process`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from qckit.components import Document
from qckit.errors import ComponentError, InputError, QckitError
from qckit.prepare.work import Batch

MEMORY_SOURCE = "<memory>"


def check_input_file(path: Path) -> None:
    """Raise :class:`InputError` for a missing, directory or empty input."""
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")


def reader_for(path: Path, readers: dict[str, Any]) -> str:
    """The name of the reader whose ``suffixes`` match ``path``'s name longest (``readers``: name → spec)."""
    name = path.name.lower()
    best = None
    for reader_name, spec in readers.items():
        for suffix in getattr(spec.instance, "suffixes", ()):
            if name.endswith(suffix) and (best is None or len(suffix) > best[1]):
                best = (reader_name, len(suffix))
    if best is None:
        known = sorted({s for spec in readers.values() for s in spec.instance.suffixes})
        raise InputError(path, f"unsupported file type; readers handle: {', '.join(known)}")
    return best[0]


def file_batches(
    inputs: list[Path], reader_names: list[str], readers: dict[str, Any], merge: bool, batch_bytes: int
) -> Iterator[Batch]:
    """The records of every input, in corpus order, in batches of about ``batch_bytes``."""
    for file_index, (path, reader_name) in enumerate(zip(inputs, reader_names, strict=True)):
        set_index = 0 if merge else file_index
        reader = readers[reader_name]
        records: list[bytes] = []
        size = 0
        first = 1
        line = 0
        try:
            for line, record in enumerate(reader.instance.records(path), start=1):
                records.append(record)
                size += len(record) + 1
                if size >= batch_bytes:
                    yield Batch(set_index, file_index, str(path), reader_name, first, records, size)
                    records, size, first = [], 0, line + 1
        except QckitError:
            raise
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc}", line + 1) from exc
        except Exception as exc:
            raise ComponentError("reader", reader_name, reader.owner, f"{path}:{line + 1}", exc) from exc
        if records:
            yield Batch(set_index, file_index, str(path), reader_name, first, records, size)


def memory_documents(items: Iterable[str | dict | Document]) -> Iterator[Document]:
    """Documents from in-memory texts, ``{"text": …}`` dicts (other keys become ``meta``) or Documents."""
    for i, item in enumerate(items, start=1):
        if isinstance(item, Document):
            yield item
        elif isinstance(item, str):
            yield Document(item, MEMORY_SOURCE, i)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            meta = {k: v for k, v in item.items() if k != "text"}
            yield Document(item["text"], MEMORY_SOURCE, i, meta=meta)
        else:
            raise InputError(
                MEMORY_SOURCE, f"item {i} is not a string, a dict with a 'text' string, or a Document", i
            )


def memory_batches(docs: Iterable[Document], batch_bytes: int) -> Iterator[Batch]:
    """In-memory documents in batches of about ``batch_bytes`` characters."""
    batch: list[Document] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text) + 1
        if size >= batch_bytes:
            yield Batch(0, 0, MEMORY_SOURCE, None, batch[0].line, batch, size)
            batch, size = [], 0
    if batch:
        yield Batch(0, 0, MEMORY_SOURCE, None, batch[0].line, batch, size)
