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

The Trainer iterates :class:`MixSampler` (global window ids, one order per epoch); ``len`` of the
sampler is the number of windows in an epoch. The realized shares of a run are computed from that
same order and the number of windows the run consumed (:meth:`MixedDataset.realized`).
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

__all__ = ["MixSampler", "MixedDataset", "schedule"]


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


class MixedDataset(Dataset):
    """The windows of several packed sources, in one index space (source after source).

    ``dataset[g]`` is global window ``g`` padded to the longest window of all sources. The drawing
    order lives in :meth:`epoch_order` / :meth:`sampler`; ``len`` is the number of windows per epoch.
    """

    def __init__(self, sources: Sequence[DataSource], packed: Sequence[PackedDataset], seed: int) -> None:
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
        # the k of "k-th draw from its source" for each position of the epoch
        self.occurrence = np.zeros(len(self.sequence), dtype=np.int64)
        for s in range(len(self.sources)):
            where = np.flatnonzero(self.sequence == s)
            self.occurrence[where] = np.arange(len(where))
        self.seq_length = max(p.seq_length for p in self.packed)
        self._orders: dict[int, np.ndarray] = {}

    # -- the drawing order ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.sequence)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Global window ids in the order epoch ``epoch`` draws them."""
        cached = self._orders.get(epoch)
        if cached is not None:
            return cached
        order = np.empty(len(self.sequence), dtype=np.int64)
        for s, n in enumerate(self.window_counts):
            where = np.flatnonzero(self.sequence == s)
            if not len(where):
                continue
            draws = self.occurrence[where]
            local = np.empty(len(where), dtype=np.int64)
            for pass_index in range(int(draws.max()) // n + 1):
                rng = np.random.default_rng([self.seed, epoch, s, pass_index])
                perm = rng.permutation(n)
                in_pass = draws // n == pass_index
                local[in_pass] = perm[draws[in_pass] % n]
            order[where] = self.offsets[s] + local
        if len(self._orders) > 4:
            self._orders.clear()
        self._orders[epoch] = order
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
    def from_cache(self) -> bool:
        return all(p.from_cache for p in self.packed)

    @property
    def windows(self) -> int:
        """Packed windows of all sources (each drawn zero, one or several times per epoch)."""
        return int(self.offsets[-1])

    def drawn(self, windows: int) -> tuple[list[int], list[int]]:
        """``(windows, trained tokens)`` per source among the first ``windows`` draws of the run
        (epoch after epoch)."""
        counts = [0] * len(self.sources)
        tokens = [0] * len(self.sources)
        epoch, left = 0, max(int(windows), 0)
        while left > 0 and len(self):
            order = self.epoch_order(epoch)[:left]
            src = np.searchsorted(self.offsets, order, side="right") - 1
            for s, p in enumerate(self.packed):
                local = order[src == s] - self.offsets[s]
                counts[s] += len(local)
                tokens[s] += int(np.asarray(p.trained)[local].sum())
            left -= len(order)
            epoch += 1
        return counts, tokens

    def source_report(self, windows_drawn: int | None = None) -> list[dict[str, Any]]:
        """Per source: documents, tokens, fertility, windows, the requested share, the share planned for
        one epoch and, given the number of windows a run drew, the realized share of that run."""
        plan_counts, plan_tokens = self.drawn(len(self))
        plan_total = sum(plan_tokens) or 1
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
