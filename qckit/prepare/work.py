"""The per-batch work of a prepare run: what a worker does to one batch, and the decisions taken in order.

:func:`process` is a pure function of the :class:`Stage` (the components) and a :class:`Batch` (raw
records of one input, or in-memory documents): parse → normalize → stateless filters → fingerprints of
the stateful filters. It runs wherever an executor puts it (this process, a worker process, a Ray
task) and returns a :class:`BatchResult` whose kept documents travel as columns.

:class:`StatefulFilters` runs in the driver, on the results **in corpus order**: deduplication keeps
the first copy, so its decisions depend on everything before. Together they make the output the same
whatever the number of workers, shards or machines.
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from qckit.components import Document, IssueLog
from qckit.errors import ComponentError, RecordError


@dataclass
class Stage:
    """The components a worker needs, with their owner labels for error messages."""

    readers: dict[str, tuple[str, Any]]  # reader name → (owner, instance)
    normalizers: list[tuple[str, str, Any]]  # (name, owner, instance)
    filters: list[tuple[str, str, Any]]  # stateless
    stateful: list[tuple[str, str, Any]]
    max_examples: int
    keep_rejects: bool = False


@dataclass
class Batch:
    """Consecutive records of one input (or in-memory documents), cut by bytes in corpus order."""

    set_index: int
    file_index: int
    source: str
    reader: str | None  # None: documents given in memory
    first_line: int
    records: list[Any]  # raw bytes, or Documents
    nbytes: int


@dataclass
class BatchResult:
    """What :func:`process` made of a batch: counts, problems, drops, and the kept documents as columns."""

    set_index: int
    file_index: int
    nbytes: int
    records: int
    documents: int
    issues: IssueLog
    changed: list[int]  # documents changed, per normalizer
    drops: dict[str, IssueLog]  # filter name → drops by reason (examples: positions)
    source: str
    # Kept documents as columns, which pickle several times faster than objects or dicts:
    texts: list[str]
    lines: list[int]
    metas: list[dict | None] | None  # None when no document has meta
    metric_keys: list[str]
    metric_values: Any  # float64 array [documents, keys], or None
    fingerprints: list[list[Any]]  # per stateful filter, aligned with the kept documents
    rejected: list[tuple[int, str, str, str]]  # (line, filter, reason, text) when the recipe asks for rejects
    #: indices (into ``texts``) of the documents the stateful filters kept; set by :meth:`StatefulFilters.decide`
    kept: list[int] | None = None


def process(stage: Stage, batch: Batch) -> BatchResult:
    """Parse, normalize, filter and fingerprint one batch (see the module docstring)."""
    issues = IssueLog(stage.max_examples)
    docs = _parse(stage, batch, issues)
    n_docs = len(docs)

    texts = [doc.text for doc in docs]
    changed = []
    for name, owner, normalizer in stage.normalizers:
        new = call_batch(normalizer, "normalize_batch", "normalize", texts, docs, "normalizer", name, owner)
        changed.append(sum(map(operator.ne, texts, new)))
        texts = new
    for doc, text in zip(docs, texts, strict=True):
        doc.text = text

    drops: dict[str, IssueLog] = {}
    rejected: list[tuple[int, str, str, str]] = []
    alive = docs
    for name, owner, flt in stage.filters:
        reasons = call_batch(flt, "drop_reason_batch", "drop_reason", alive, alive, "filter", name, owner)
        if reasons.count(None) == len(reasons):  # the common case: this filter dropped nothing here
            continue
        log = drops.setdefault(name, IssueLog(stage.max_examples))
        survivors = []
        for doc, reason in zip(alive, reasons, strict=True):
            if reason is None:
                survivors.append(doc)
                continue
            log.add(reason, doc.source, doc.line)
            if stage.keep_rejects:
                rejected.append((doc.line, name, reason, doc.text))
        alive = survivors
    kept = alive

    fingerprints = [
        call_batch(flt, "fingerprint_batch", "fingerprint", kept, kept, "filter", name, owner)
        for name, owner, flt in stage.stateful
    ]
    metas = [d.meta or None for d in kept]
    metric_keys = sorted({k for d in kept if d.metrics for k in d.metrics})
    values = None
    if metric_keys:
        values = np.array([[d.metrics.get(k, 0.0) for k in metric_keys] for d in kept], dtype=np.float64)
    return BatchResult(
        batch.set_index,
        batch.file_index,
        batch.nbytes,
        len(batch.records),
        n_docs,
        issues,
        changed,
        drops,
        batch.source,
        [d.text for d in kept],
        [d.line for d in kept],
        metas if any(m is not None for m in metas) else None,
        metric_keys,
        values,
        fingerprints,
        rejected,
    )


def warm_up(stage: Stage) -> None:
    """Run one small document through the components, which build lookup tables and load models
    lazily: done once in the driver, forked workers inherit them instead of each building its own."""
    warm = [Document("Bonjour, c'est une phrase pour préchauffer les composants.", "<warm-up>", 1)]
    with contextlib.suppress(Exception):  # a component that fails will fail again, with its position
        process(stage, Batch(0, 0, "<warm-up>", None, 1, warm, 64))


def _parse(stage: Stage, batch: Batch, issues: IssueLog) -> list[Document]:
    """The batch's documents: given in memory, or parsed by its reader (bad records counted in ``issues``)."""
    if batch.reader is None:
        return batch.records
    owner, reader = stage.readers[batch.reader]
    parse_batch = getattr(reader, "parse_batch", None)
    if parse_batch is not None:
        try:
            parsed = parse_batch(batch.records, batch.source, batch.first_line, issues)
        except Exception as exc:
            where = f"{batch.source}:{batch.first_line}"
            raise ComponentError("reader", batch.reader, owner, where, exc) from exc
        return [doc for doc in parsed if doc is not None]
    docs = []
    for offset, record in enumerate(batch.records):
        line = batch.first_line + offset
        try:
            doc = reader.parse(record, batch.source, line, issues)
        except RecordError as exc:
            issues.add(exc.kind, batch.source, line, str(exc))
            continue
        except Exception as exc:
            raise ComponentError("reader", batch.reader, owner, f"{batch.source}:{line}", exc) from exc
        if doc is not None:
            docs.append(doc)
    return docs


def call_batch(
    component: Any,
    batch_method: str,
    method: str,
    items: list,
    docs: list[Document],
    kind: str,
    name: str,
    owner: str,
) -> list:
    """Call the component's batch method if it has one, else its per-item method.

    If the batch call fails, redo the batch item by item so the error names the document's position.
    """
    batch_fn = getattr(component, batch_method, None)
    batch_error: Exception | None = None
    if batch_fn is not None:
        try:
            return batch_fn(items)
        except Exception as exc:
            batch_error = exc  # find the culprit below
    fn = getattr(component, method)
    out = []
    for item, doc in zip(items, docs, strict=True):
        try:
            out.append(fn(item))
        except Exception as exc:
            raise ComponentError(kind, name, owner, doc.where, exc) from exc
    if batch_error is not None:  # every item works alone: the batch method itself is broken
        where = f"{docs[0].where}..{docs[-1].line}" if docs else None
        raise ComponentError(kind, f"{name}.{batch_method}", owner, where, batch_error) from batch_error
    return out


class StatefulFilters:
    """The stateful filters of a run (deduplication), deciding in corpus order in the driver process."""

    def __init__(self, specs: list[Any], keep_rejects: bool, max_examples: int) -> None:
        self.specs = specs  # ComponentSpecs of the stateful filters, in recipe order
        self.keep_rejects = keep_rejects
        self.max_examples = max_examples

    def decide(self, result: BatchResult) -> list[int]:
        """Run the stateful filters on ``result`` (the next batch in corpus order); record their drops
        in it and set ``result.kept`` to the indices of the documents they keep."""
        alive = list(range(len(result.texts)))
        for j, spec in enumerate(self.specs):
            fps = [result.fingerprints[j][i] for i in alive]
            try:
                reasons = spec.instance.drop_reasons(fps)
            except Exception as exc:
                where = f"{result.source}:{result.lines[alive[0]]}" if alive else None
                raise ComponentError("filter", spec.name, spec.owner, where, exc) from exc
            survivors = []
            for i, reason in zip(alive, reasons, strict=True):
                if reason is None:
                    survivors.append(i)
                    continue
                log = result.drops.setdefault(spec.name, IssueLog(self.max_examples))
                log.add(reason, result.source, result.lines[i])
                if self.keep_rejects:
                    result.rejected.append((result.lines[i], spec.name, reason, result.texts[i]))
            alive = survivors
        result.kept = alive
        return alive
