"""The stats funnel of a prepare run: every batch result is added in corpus order; ``as_dict`` is the
``prepare_stats.json`` content (read → reader problems → normalizer changes → drops → kept → sets).

Reader problems and drops are :class:`~qckit.components.IssueLog` s (counts plus the first examples,
deterministic because results arrive in corpus order): one for the readers, one per filter.
"""

from __future__ import annotations

import time
from typing import Any

from qckit.components import IssueLog
from qckit.prepare.work import BatchResult


class Funnel:
    """Accumulates :class:`~qckit.prepare.work.BatchResult` s whose stateful decisions are made."""

    def __init__(
        self,
        *,
        sources: list[str],
        n_sets: int,
        normalizers: list[str],
        filters: list[str],
        summarizers: list[tuple[str, Any]],
        max_examples: int,
        workers: int,
    ) -> None:
        self.started = time.perf_counter()
        self.elapsed: float | None = None
        self.issues = IssueLog(max_examples)
        self.normalizers = normalizers
        self.changed = [0] * len(normalizers)
        self.filters = filters  # in recipe order (a name may appear twice; its drops are counted once)
        self.drops = {name: IssueLog(max_examples) for name in filters}
        self.summarizers = summarizers  # (name, component with summary(metrics))
        self.metrics: dict[str, float] = {}
        self.per_file: list[dict[str, Any]] = [
            {"path": s, "records": 0, "documents": 0, "bytes": 0, "issues": {}} for s in sources
        ]
        self.kept_per_set = [0] * n_sets
        self.workers = workers
        self.executor: dict[str, Any] = {}  # which executor ran the work; shards and resumed ones

    @property
    def kept(self) -> int:
        return sum(self.kept_per_set)

    def add(self, result: BatchResult) -> None:
        """Count one batch (its stateful decisions already made: ``result.kept`` is set)."""
        kept = result.kept
        assert kept is not None, "StatefulFilters.decide() must run before Funnel.add()"
        self.issues.merge(result.issues)
        for i, count in enumerate(result.changed):
            self.changed[i] += count
        for name, log in result.drops.items():
            self.drops[name].merge(log)
        f = self.per_file[result.file_index]
        f["records"] += result.records
        f["documents"] += result.documents
        f["bytes"] += result.nbytes
        for kind, count in result.issues.counts.items():
            f["issues"][kind] = f["issues"].get(kind, 0) + count
        if result.metric_values is not None and kept:
            sums = result.metric_values[kept].sum(axis=0)
            for key, value in zip(result.metric_keys, sums.tolist(), strict=True):
                self.metrics[key] = self.metrics.get(key, 0.0) + value
        self.kept_per_set[result.set_index] += len(kept)

    def finish(self) -> None:
        """The last batch was added: stop the clock."""
        self.elapsed = time.perf_counter() - self.started

    def as_dict(self) -> dict[str, Any]:
        elapsed = self.elapsed if self.elapsed is not None else time.perf_counter() - self.started
        read_bytes = sum(f["bytes"] for f in self.per_file)
        return {
            "inputs": self.per_file,
            "records": sum(f["records"] for f in self.per_file),
            "documents": sum(f["documents"] for f in self.per_file),
            "reader_issues": self.issues.as_dict(),
            "normalizers": dict(zip(self.normalizers, self.changed, strict=True)),
            "filters": {name: _drops(self.drops[name]) for name in self.filters},
            "kept": self.kept,
            "sets": [{"kept": k} for k in self.kept_per_set],
            "metrics": self.metrics,
            "summaries": {name: comp.summary(self.metrics) for name, comp in self.summarizers},
            "workers": self.workers,
            "executor": self.executor,
            "elapsed_s": round(elapsed, 3),
            "throughput_mb_s": round(read_bytes / 1e6 / elapsed, 2) if elapsed > 0 else None,
        }


def _drops(log: IssueLog) -> dict[str, Any]:
    reasons = {r: log.counts[r] for r in sorted(log.counts)}
    return {
        "dropped": sum(reasons.values()),
        "reasons": reasons,
        "examples": {r: log.examples.get(r, []) for r in reasons},
    }
