"""Several training sources mixed by token share (replay), deterministically.

Each source is packed on its own (its own cache entry, memory-mapped), and :class:`MixedDataset`
draws windows from them in a fixed interleaving so that every source's share of the *trained tokens*
(positions whose label is not -100) follows its weight at every point of the run, not only on
average:

* **Which source** comes next is decided by stride scheduling over tokens: each source ``s`` has
  ``share_s`` (its weight, normalised) and ``mean_s`` (trained tokens per window); the next window
  comes from the source with the smallest ``(drawn_tokens_s + mean_s) / share_s``, ties to the
  first listed. So after any number of windows, each source is within about one window of its
  share, and the sequence of sources is the same in every epoch.
* **Which window** of that source: the ``k``-th draw from a source of ``n`` windows in epoch ``e``
  is window ``perm(seed, e, s, k // n)[k % n]``, a seeded permutation for each pass over the source.
* **The epoch ends** when a source with ``exhausted = "stop"`` would be drawn but has no window left
  in this pass; when every source has ``exhausted = "repeat"``, once every source has been drawn in
  full at least once.

**The decay phase** (``lr_scheduler = "warmup_stable_decay"`` with ``decay_source``): from the first
window of the learning rate's decay to the end of the run (:meth:`MixedDataset.set_decay`, counted in
windows drawn, epoch after epoch), the sources are drawn by the same stride scheduling over the *decay
shares* (:func:`decay_shares`: the named source at ``decay_share``, the others splitting the rest by
their weights), started afresh at the phase's first window so that every prefix of the phase keeps
them. An epoch keeps its length (the Trainer counts its steps from it); within an epoch the ``k`` of
"``k``-th draw" counts the draws of both mixes, so a source drawn past its windows, ``"stop"`` or not,
goes on with its next pass.

The Trainer iterates :class:`MixSampler` (global window ids, one order per epoch); ``len`` of the
sampler is the number of windows in an epoch. The realized shares of a run are computed from that
same order and the number of windows the run consumed (:meth:`MixedDataset.source_report`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from qckit.components import PackingStats
from qckit.train.packing import PackedDataset
from qckit.train.settings import DataSource

__all__ = ["MixSampler", "MixedDataset", "decay_schedule", "decay_shares", "schedule"]


def schedule(
    shares: Sequence[float], means: Sequence[float], windows: Sequence[int], stop: Sequence[bool]
) -> np.ndarray:
    """The source of each window of one epoch (an int array), as the module docstring defines it."""
    count = len(shares)
    drawn = [0] * count
    tokens = [0.0] * count
    order: list[int] = []
    complete = [n == 0 for n in windows]
    any_stop = any(stop)
    while True:
        best = min(range(count), key=lambda s: ((tokens[s] + means[s]) / shares[s], s))
        if stop[best] and drawn[best] >= windows[best]:
            break
        order.append(best)
        drawn[best] += 1
        tokens[best] += means[best]
        if drawn[best] >= windows[best]:
            complete[best] = True
            if not any_stop and all(complete):
                break
    return np.asarray(order, dtype=np.int32)


def decay_shares(shares: Sequence[float], target: int, share: float) -> list[float]:
    """The shares of the decay phase: ``share`` for source ``target``, the rest split among the others in
    proportion to their own shares."""
    rest = sum(x for s, x in enumerate(shares) if s != target)
    return [share if s == target else (1.0 - share) * x / rest for s, x in enumerate(shares)]


def decay_schedule(shares: Sequence[float], means: Sequence[float], count: int) -> np.ndarray:
    """The source of each of the first ``count`` windows of the decay phase: :func:`schedule`'s stride
    scheduling with no end (sources repeat); a source of share 0 is never drawn."""
    live = [s for s, share in enumerate(shares) if share > 0]
    tokens = [0.0] * len(shares)
    order = np.empty(max(count, 0), dtype=np.int32)
    for i in range(len(order)):
        best = min(live, key=lambda s: ((tokens[s] + means[s]) / shares[s], s))
        order[i] = best
        tokens[best] += means[best]
    return order


class MixedDataset(Dataset):
    """The windows of several packed sources, in one index space (source after source).

    ``dataset[g]`` is global window ``g`` padded to the longest window of all sources. The drawing
    order lives in :meth:`epoch_order` / :meth:`sampler`; ``len`` is the number of windows per epoch.
    ``decay`` (a source name and its share) gives the decay phase its own mix, from the window that
    :meth:`set_decay` names on.
    """

    def __init__(
        self,
        sources: Sequence[DataSource],
        packed: Sequence[PackedDataset],
        seed: int,
        decay: tuple[str, float] | None = None,
    ) -> None:
        if len(sources) != len(packed) or not sources:
            raise ValueError("one packed dataset per source is needed")
        self.sources = list(sources)
        self.packed = list(packed)
        self.seed = int(seed)
        total_weight = sum(s.weight for s in self.sources)
        self.shares = [s.weight / total_weight for s in self.sources]
        self.window_counts = [len(p) for p in self.packed]
        self.offsets = np.cumsum([0, *self.window_counts])
        self.means = [max(float(np.mean(p.trained)) if len(p) else 1.0, 1.0) for p in self.packed]
        self.sequence = schedule(
            self.shares, self.means, self.window_counts, [s.exhausted == "stop" for s in self.sources]
        )
        self.seq_length = max(p.seq_length for p in self.packed)
        self._orders: dict[int, np.ndarray] = {}
        #: the decay phase's shares (None: one mix for the whole run)
        self.decay_shares: list[float] | None = None
        if decay is not None:
            name, share = decay
            target = [s.name for s in self.sources].index(name)
            self.decay_shares = decay_shares(self.shares, target, share)
        #: windows drawn before the decay phase and by the end of the run (set_decay; None: not yet known)
        self.decay_window: tuple[int, int] | None = None
        self._decay_sequence = np.empty(0, dtype=np.int32)

    def set_decay(self, start: int, end: int) -> None:
        """Place the decay phase: it begins after ``start`` windows drawn and the run ends after ``end``
        (counted epoch after epoch, as :meth:`drawn` counts). Without ``decay`` nothing changes."""
        if self.decay_shares is None:
            return
        self.decay_window = (int(start), int(end))
        self._orders.clear()

    # -- the drawing order ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.sequence)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global window ids in the order epoch ``epoch`` draws them (the decay phase's mix included)."""
        cached = self._orders.get(epoch)
        if cached is not None:
            return cached
        order = self._order(epoch, self._sequence(epoch))
        if len(self._orders) > 4:
            self._orders.clear()
        self._orders[epoch] = order
        return order

    def _sequence(self, epoch: int) -> np.ndarray:
        """The source of each window of epoch ``epoch``: the main mix, then the decay phase's from its start."""
        length = len(self.sequence)
        if self.decay_shares is None or self.decay_window is None:
            return self.sequence
        start = self.decay_window[0]
        end_of_epoch = (epoch + 1) * length
        if end_of_epoch <= start:
            return self.sequence
        first = max(start - epoch * length, 0)  # this epoch's first window of the decay phase
        needed = end_of_epoch - start
        if len(self._decay_sequence) < needed:
            self._decay_sequence = decay_schedule(self.decay_shares, self.means, needed)
        return np.concatenate(
            [self.sequence[:first], self._decay_sequence[epoch * length + first - start : needed]]
        )

    def _order(self, epoch: int, sequence: np.ndarray) -> np.ndarray:
        """Global window ids for the sources in ``sequence``: the ``k``-th draw of source ``s`` is window
        ``perm(seed, epoch, s, k // n)[k % n]``."""
        order = np.empty(len(sequence), dtype=np.int64)
        for s, n in enumerate(self.window_counts):
            where = np.flatnonzero(sequence == s)
            if not len(where):
                continue
            draws = np.arange(len(where))  # the k of "k-th draw from its source", in this epoch
            local = np.empty(len(where), dtype=np.int64)
            for pass_index in range(int(draws.max()) // n + 1):
                rng = np.random.default_rng([self.seed, epoch, s, pass_index])
                perm = rng.permutation(n)
                in_pass = draws // n == pass_index
                local[in_pass] = perm[draws[in_pass] % n]
            order[where] = self.offsets[s] + local
        return order

    def sampler(self) -> MixSampler:
        return MixSampler(self)

    def source_of(self, index: int) -> int:
        return int(np.searchsorted(self.offsets, index, side="right") - 1)

    # -- windows ----------------------------------------------------------------------------------

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.source_of(int(index))
        return self.packed[s].item(int(index) - int(self.offsets[s]), self.seq_length)

    def decode_sample(self, position: int, tokenizer: Any) -> str:
        """The window at ``position`` of epoch 0's order, decoded (see :meth:`PackedDataset.decode_sample`),
        with its source's name in front when there are several sources."""
        index = int(self.epoch_order(0)[position])
        s = self.source_of(index)
        text = self.packed[s].decode_sample(index - int(self.offsets[s]), tokenizer)
        return f"[{self.sources[s].name}] {text}" if len(self.sources) > 1 else text

    # -- numbers ----------------------------------------------------------------------------------

    @property
    def stats(self) -> PackingStats:
        total = PackingStats()
        for p in self.packed:
            for key, value in asdict(p.stats).items():
                setattr(total, key, getattr(total, key) + value)
        return total

    @property
    def num_words(self) -> int:
        return sum(p.num_words for p in self.packed)

    @property
    def num_bytes(self) -> int:
        return sum(p.num_bytes for p in self.packed)

    @property
    def num_doc_tokens(self) -> int:
        """Tokens of the documents of all sources (EOS not counted)."""
        return sum(p.num_doc_tokens for p in self.packed)

    @property
    def fertility(self) -> float:
        words = self.num_words
        return self.num_doc_tokens / words if words else 0.0

    @property
    def attention(self) -> str:
        """``"document"`` when the windows isolate documents (position ids restart), else ``"window"``."""
        return "document" if self.packed[0].document_eos is not None else "window"

    @property
    def from_cache(self) -> bool:
        return all(p.from_cache for p in self.packed)

    @property
    def windows(self) -> int:
        """Packed windows of all sources (each drawn zero, one or several times per epoch)."""
        return int(self.offsets[-1])

    def drawn(self, windows: int, start: int = 0) -> tuple[list[int], list[int]]:
        """``(windows, trained tokens)`` per source among the draws ``start`` to ``windows`` of the run
        (epoch after epoch)."""
        counts = [0] * len(self.sources)
        tokens = [0] * len(self.sources)
        length, end = len(self), max(int(windows), 0)
        for epoch in range(start // length if length else 0, -(-end // length) if length else 0):
            first = max(start - epoch * length, 0)
            order = self.epoch_order(epoch)[first : end - epoch * length]
            self._count(order, counts, tokens)
        return counts, tokens

    def _count(self, order: np.ndarray, counts: list[int], tokens: list[int]) -> None:
        """Add the windows and trained tokens of each source among the global window ids ``order``."""
        src = np.searchsorted(self.offsets, order, side="right") - 1
        for s, p in enumerate(self.packed):
            local = order[src == s] - self.offsets[s]
            counts[s] += len(local)
            tokens[s] += int(np.asarray(p.trained)[local].sum())

    def source_report(self, windows_drawn: int | None = None) -> list[dict[str, Any]]:
        """Per source: documents, tokens, fertility, windows, the requested share, the share planned for
        one epoch of the main mix, the decay phase's requested and planned shares (with ``decay``, once
        placed) and, given the number of windows a run drew, the realized share of that run."""
        plan_counts, plan_tokens = [0] * len(self.sources), [0] * len(self.sources)
        self._count(self._order(0, self.sequence), plan_counts, plan_tokens)
        plan_total = sum(plan_tokens) or 1
        decay: tuple[list[int], list[int]] | None = None
        if self.decay_window is not None:
            decay = self.drawn(self.decay_window[1], start=self.decay_window[0])
        decay_total = sum(decay[1]) if decay else 0
        real: tuple[list[int], list[int]] | None = None
        if windows_drawn is not None:
            real = self.drawn(windows_drawn)
        real_total = sum(real[1]) if real else 0
        rows = []
        for s, (source, p) in enumerate(zip(self.sources, self.packed, strict=True)):
            row: dict[str, Any] = {
                "name": source.name,
                "path": source.path,
                "exhausted": source.exhausted,
                "documents": p.stats.documents,
                "tokens": p.stats.tokens_total,
                "trained_tokens": p.stats.tokens_kept,
                "bytes": p.num_bytes,
                "words": p.num_words,
                "fertility": p.fertility,
                "windows": len(p),
                "requested_share": self.shares[s],
                "planned_share": plan_tokens[s] / plan_total,
                "windows_per_epoch": plan_counts[s],
                "passes_per_epoch": plan_counts[s] / len(p) if len(p) else 0.0,
                "from_cache": p.from_cache,
            }
            if self.decay_shares is not None:
                row["decay_share"] = self.decay_shares[s]
            if decay is not None:
                row["decay_windows"] = decay[0][s]
                row["decay_planned_share"] = decay[1][s] / decay_total if decay_total else 0.0
            if real is not None:
                row["windows_drawn"] = real[0][s]
                row["tokens_drawn"] = real[1][s]
                row["realized_share"] = real[1][s] / real_total if real_total else 0.0
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """Numbers for reports: the packing stats of all sources together, plus corpus size and fertility."""
        return {
            **asdict(self.stats),
            "words": self.num_words,
            "bytes": self.num_bytes,
            "fertility": self.fertility,
            "seq_length": self.seq_length,
            "from_cache": self.from_cache,
            "windows_packed": self.windows,
            "windows_per_epoch": len(self),
            "attention": self.attention,
        }


class MixSampler(Sampler[int]):
    """Yields the global window ids of :meth:`MixedDataset.epoch_order` for the epoch set by ``set_epoch``
    (the Trainer and accelerate call it before every epoch, also when resuming mid-epoch)."""

    def __init__(self, dataset: MixedDataset) -> None:
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(self.dataset.epoch_order(self.epoch).tolist())
