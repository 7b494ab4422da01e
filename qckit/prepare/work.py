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
from dataclasses import dataclass, field
from itertools import chain, compress, count, repeat
from operator import methodcaller
from typing import Any, cast

import numpy as np

from qckit.components import (
    LONE_SURROGATE,
    Document,
    IssueLog,
    RecordBlock,
    has_surrogates,
    repair_surrogates,
)
from qckit.errors import ComponentError, RecordError
from qckit.prepare.clusters import Clusters


@dataclass
class Stage:
    """The components a worker needs, with their owner labels for error messages."""

    readers: dict[str, tuple[str, Any]]  # reader name → (owner, instance)
    normalizers: list[tuple[str, str, Any]]  # (name, owner, instance)
    filters: list[tuple[str, str, Any]]  # stateless
    stateful: list[tuple[str, str, Any]]
    max_examples: int
    keep_rejects: bool = False
    #: (name, owner, instance) of the writers whose lines the workers format (file runs; none in memory)
    writers: list[tuple[str, str, Any]] = field(default_factory=list)
    #: whether the driver needs the kept documents' texts / tags (in-memory runs, rejects, a splitter
    #: that reads documents); otherwise only the formatted lines travel
    keep_texts: bool = True
    keep_meta: bool = True


@dataclass
class Batch:
    """Consecutive records of one input (or in-memory documents), cut by bytes in corpus order."""

    set_index: int
    file_index: int
    source: str
    reader: str | None  # None: documents given in memory
    first_line: int
    records: list[Any] | RecordBlock  # raw bytes (or a block of them), or Documents
    nbytes: int
    #: records the reader skipped just before this batch: (line, issue kind, message)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        """The records (or documents) of the batch, the skipped ones not included."""
        records = self.records
        return records.count if isinstance(records, RecordBlock) else len(records)


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
    texts: list[str] | None  # None when the driver does not need them (Stage.keep_texts)
    lines: list[int]
    metas: list[dict | None] | None  # None when no document has meta, or the driver does not need them
    metric_keys: list[str]
    metric_values: Any  # float64 array [documents, keys], or None
    fingerprints: list[list[Any]]  # per stateful filter, aligned with the kept documents
    rejected: list[tuple[int, str, str, str]]  # (line, filter, reason, text) when the recipe asks for rejects
    #: per writer of Stage.writers: the kept documents' lines as UTF-8, and each line's length in bytes
    formatted: list[tuple[bytes, Any]] | None
    text_bytes: Any  # int64 array: each kept document's text length in UTF-8 bytes
    #: indices (into ``texts``) of the documents the stateful filters kept; set by :meth:`StatefulFilters.decide`
    kept: list[int] | None = None


def process(stage: Stage, batch: Batch) -> BatchResult:
    """Parse, normalize, filter and fingerprint one batch (see the module docstring)."""
    issues = IssueLog(stage.max_examples)
    for line, kind, message in batch.skipped:
        issues.add(kind, batch.source, line, message)
    docs = _parse(stage, batch, issues)
    if batch.reader is None or not getattr(stage.readers[batch.reader][1], "surrogate_free", False):
        _repair_surrogates(docs, issues)
    n_docs = len(docs)

    texts = original = [doc.text for doc in docs]
    changed = []
    for name, owner, normalizer in stage.normalizers:
        new = call_batch(normalizer, "normalize_batch", "normalize", texts, docs, "normalizer", name, owner)
        changed.append(sum(map(operator.ne, texts, new)))
        texts = new
    for k in compress(count(), map(operator.is_not, texts, original)):  # the few that a normalizer changed
        docs[k].text = texts[k]

    drops: dict[str, IssueLog] = {}
    rejected: list[tuple[int, str, str, str]] = []
    alive = docs
    for name, owner, flt in stage.filters:
        reasons = call_batch(flt, "drop_reason_batch", "drop_reason", alive, alive, "filter", name, owner)
        if reasons.count(None) == len(reasons):  # the common case: this filter dropped nothing here
            continue
        log = drops.setdefault(name, IssueLog(stage.max_examples))
        for k in compress(count(), map(operator.is_not, reasons, repeat(None))):
            doc, reason = alive[k], reasons[k]
            log.add(reason, doc.source, doc.line)
            if stage.keep_rejects:
                rejected.append((doc.line, name, reason, doc.text))
        alive = list(compress(alive, map(operator.is_, reasons, repeat(None))))
    kept = alive

    fingerprints = [
        call_batch(flt, "fingerprint_batch", "fingerprint", kept, kept, "filter", name, owner)
        for name, owner, flt in stage.stateful
    ]
    metas = [d.meta or None for d in kept] if stage.keep_meta else []
    metrics = [d.metrics for d in kept]
    metric_keys = sorted(set().union(*metrics))
    values = _metric_columns(metrics, metric_keys) if metric_keys else None
    kept_texts = [d.text for d in kept]
    encoded = list(map(str.encode, kept_texts))  # texts are free of lone surrogates by now
    text_bytes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    formatted = (
        [_formatted(w, name, owner, kept) for name, owner, w in stage.writers] if stage.writers else None
    )
    return BatchResult(
        batch.set_index,
        batch.file_index,
        batch.nbytes,
        batch.n_records + len(batch.skipped),
        n_docs,
        issues,
        changed,
        drops,
        batch.source,
        kept_texts if stage.keep_texts else None,
        [d.line for d in kept],
        metas if any(m is not None for m in metas) else None,
        metric_keys,
        values,
        fingerprints,
        rejected,
        formatted,
        text_bytes,
    )


def _metric_columns(metrics: list[dict[str, float]], keys: list[str]) -> np.ndarray:
    """The documents' metrics as a float64 array [documents, keys]; a metric a document lacks is 0."""
    try:  # the usual case: every document has every key (one pass)
        flat = chain.from_iterable(map(operator.itemgetter(*keys), metrics)) if len(keys) > 1 else None
        if flat is not None:
            return np.fromiter(flat, np.float64, len(metrics) * len(keys)).reshape(len(metrics), len(keys))
    except KeyError:
        pass
    values = np.empty((len(metrics), len(keys)), dtype=np.float64)
    for j, key in enumerate(keys):
        values[:, j] = np.fromiter(map(methodcaller("get", key, 0.0), metrics), np.float64, len(metrics))
    return values


def _formatted(writer: Any, name: str, owner: str, docs: list[Document]) -> tuple[bytes, np.ndarray]:
    """The writer's lines for ``docs`` in UTF-8, concatenated, with each line's length in bytes."""
    lines = call_batch(writer, "format_batch", "format", docs, docs, "writer", name, owner)
    try:
        encoded = list(map(str.encode, lines))
    except UnicodeEncodeError as exc:  # a writer that put a lone surrogate back
        bad = next(i for i, line in enumerate(lines) if has_surrogates(line))
        raise ComponentError("writer", name, owner, docs[bad].where, exc) from None
    return b"".join(encoded), np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))


def _repair_surrogates(docs: list[Document], issues: IssueLog) -> None:
    """Lone surrogates cannot be written as UTF-8: whatever reader (or caller) made the documents, they
    are replaced by U+FFFD in texts and in string tags, and counted per document."""
    if not has_surrogates("".join([d.text for d in docs])) and not any(
        d.meta and _meta_has_surrogates(d.meta) for d in docs
    ):
        return
    for doc in docs:
        fixed = has_surrogates(doc.text)
        if fixed:
            doc.text = repair_surrogates(doc.text)
        if doc.meta and _meta_has_surrogates(doc.meta):
            doc.meta = _repair_meta(doc.meta)
            fixed = True
        if fixed:
            issues.add(LONE_SURROGATE, doc.source, doc.line, "lone surrogate replaced by U+FFFD")


def _meta_has_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return has_surrogates(value)
    if isinstance(value, dict):
        return any(_meta_has_surrogates(k) or _meta_has_surrogates(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_meta_has_surrogates(v) for v in value)
    return False


def _repair_meta(value: Any) -> Any:
    if isinstance(value, str):
        return repair_surrogates(value)
    if isinstance(value, dict):
        return {_repair_meta(k): _repair_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_repair_meta(v) for v in value]
    return value


def warm_up(stage: Stage) -> None:
    """Run one small document through the components, which build lookup tables and load models
    lazily: done once in the driver, forked workers inherit them instead of each building its own."""
    warm = [Document("Bonjour, c'est une phrase pour préchauffer les composants.", "<warm-up>", 1)]
    with contextlib.suppress(Exception):  # a component that fails will fail again, with its position
        process(stage, Batch(0, 0, "<warm-up>", None, 1, warm, 64))


def _parse(stage: Stage, batch: Batch, issues: IssueLog) -> list[Document]:
    """The batch's documents: given in memory, or parsed by its reader (bad records counted in ``issues``)."""
    if batch.reader is None:
        return cast(list[Document], batch.records)
    owner, reader = stage.readers[batch.reader]
    records = batch.records
    if not records:  # only records the reader skipped
        return []
    # the reader's fastest path for what the batch holds: a block as it is, else the records in a list
    fast: Any = None
    if isinstance(records, RecordBlock):
        fast = getattr(reader, "parse_block", None)
        if fast is None:
            records = records.records()
    if fast is None:
        fast = getattr(reader, "parse_batch", None)
    if fast is not None:
        try:
            parsed = fast(records, batch.source, batch.first_line, issues)
        except Exception as exc:
            where = f"{batch.source}:{batch.first_line}"
            raise ComponentError("reader", batch.reader, owner, where, exc) from exc
        return [doc for doc in parsed if doc is not None]
    assert not isinstance(records, RecordBlock)  # a reader without parse_block got the records split
    docs = []
    for offset, record in enumerate(records):
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

    If the batch call fails, redo the batch item by item so the error names the document's position. A
    batch method that returns another number of results than it was given items is broken.
    """
    batch_fn = getattr(component, batch_method, None)
    batch_error: Exception | None = None
    if batch_fn is not None:
        try:
            out = batch_fn(items)
        except Exception as exc:
            batch_error = exc  # find the culprit below
        else:
            if len(out) == len(items):
                return out
            where = f"{docs[0].where}..{docs[-1].line}" if docs else None
            wrong = ValueError(f"{len(out)} results for {len(items)} items")
            raise ComponentError(kind, f"{name}.{batch_method}", owner, where, wrong)
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
        #: the near-duplicate clusters of the run, when a filter can report them (``decide_clusters``)
        self.clusters: Clusters | None = None
        self.begin()

    def begin(self) -> None:
        """Start a run: no cluster recorded yet."""
        tags = any(hasattr(s.instance, "decide_clusters") for s in self.specs)
        self.clusters = Clusters() if tags else None

    def decide(self, result: BatchResult) -> list[int]:
        """Run the stateful filters on ``result`` (the next batch in corpus order); record their drops
        in it and set ``result.kept`` to the indices of the documents they keep."""
        alive: list[int] | range = range(len(result.lines))
        clusters = self.clusters
        base = clusters.serials if clusters is not None else 0
        links: list[tuple[int, int]] = []
        for j, spec in enumerate(self.specs):
            column = result.fingerprints[j]
            fps = column if len(alive) == len(column) else [column[i] for i in alive]
            decide = getattr(spec.instance, "decide_clusters", None)
            joins: list[int | None] = []
            try:
                if decide is not None:
                    reasons, joins = decide(fps, [base + i for i in alive])
                else:
                    reasons = spec.instance.drop_reasons(fps)
            except Exception as exc:
                where = f"{result.source}:{result.lines[alive[0]]}" if alive else None
                raise ComponentError("filter", spec.name, spec.owner, where, exc) from exc
            if len(reasons) != len(alive) or (decide is not None and len(joins) != len(alive)):
                raise ComponentError(
                    "filter",
                    spec.name,
                    spec.owner,
                    None,
                    ValueError(f"{len(reasons)} reasons ({len(joins)} clusters) for {len(alive)} documents"),
                )
            if joins and joins.count(None) != len(joins):
                links += [
                    (base + alive[k], join)
                    for k, join in enumerate(joins)
                    if join is not None and reasons[k] is None
                ]
            if reasons.count(None) == len(reasons):
                continue
            log = result.drops.setdefault(spec.name, IssueLog(self.max_examples))
            for k in compress(count(), map(operator.is_not, reasons, repeat(None))):
                i, reason = alive[k], reasons[k]
                log.add(reason, result.source, result.lines[i])
                if self.keep_rejects:
                    assert result.texts is not None
                    result.rejected.append((result.lines[i], spec.name, reason, result.texts[i]))
            alive = list(compress(alive, map(operator.is_, reasons, repeat(None))))
        alive = list(alive)
        result.kept = alive
        if clusters is not None:
            clusters.add(len(result.lines), alive, links)
        return alive
