"""Near-duplicate clusters: collected in corpus order by the stateful filters, followed by the split.

A stateful filter with ``decide_clusters`` (``minhash_dedup`` with ``duplicates = "tag"``) keeps
near-duplicates and names, for each, the serial of an earlier document (serials number the documents
that reach the stateful filters, in corpus order). :class:`Clusters` records those links and the
serials the stateful filters dropped, in the driver, 16 bytes per link and 8 per dropped document;
nothing travels through the spool. At split time it turns them into kept-document numbers, set by set:
a cluster's leader is its first kept member, and :class:`SetClusters` gives every member its leader's
side, also when the leader is in an earlier set (sets are split in corpus order). Without links the
split is exactly what it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


class Clusters:
    """The links between kept documents that the stateful filters reported, in corpus order."""

    def __init__(self) -> None:
        self.serials = 0  # documents offered to the stateful filters so far
        self._dropped: list[np.ndarray] = []
        self._links: list[np.ndarray] = []  # [links, 2]: member serial, serial of the document it resembles
        #: side of each leader that a later set's documents follow (kept number → validation)
        self.sides: dict[int, bool] = {}

    def __bool__(self) -> bool:
        return bool(self._links)

    def add(self, n: int, kept: Sequence[int], links: Sequence[tuple[int, int]]) -> None:
        """Record one batch of ``n`` documents (the next ``n`` serials): the indices kept by every stateful
        filter, and the links reported for them."""
        if len(kept) < n:
            dropped = np.ones(n, dtype=bool)
            dropped[list(kept)] = False
            self._dropped.append(self.serials + np.flatnonzero(dropped))
        if links:
            self._links.append(np.array(links, dtype=np.int64).reshape(-1, 2))
        self.serials += n

    def for_sets(self, sizes: Sequence[int]) -> list[SetClusters | None]:
        """Per output set (of ``sizes[i]`` kept documents, sets in corpus order), what the split follows,
        or None for a set without clustered documents."""
        out: list[SetClusters | None] = [None] * len(sizes)
        if not self._links:
            return out
        dropped = np.concatenate(self._dropped) if self._dropped else np.empty(0, dtype=np.int64)
        links = np.concatenate(self._links)
        members, roots = links[:, 0], links[:, 1]
        # A root that is itself a member (two filters tagging) joins its own root's cluster.
        order = np.argsort(members, kind="stable")
        members, roots = members[order], roots[order]
        while True:
            at = np.minimum(np.searchsorted(members, roots), len(members) - 1)
            chained = members[at] == roots
            if not chained.any():
                break
            roots = np.where(chained, roots[at], roots)

        def kept_number(serials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            at = np.searchsorted(dropped, serials)
            if not len(dropped):
                return serials, np.ones(len(serials), dtype=bool)
            gone = (at < len(dropped)) & (dropped[np.minimum(at, len(dropped) - 1)] == serials)
            return serials - at, ~gone

        member_no, member_kept = kept_number(members)
        root_no, root_kept = kept_number(roots)
        # every clustered kept document with its cluster key (the root's serial); leader = the first of them
        docs = np.concatenate([member_no[member_kept], root_no[root_kept]])
        keys = np.concatenate([roots[member_kept], roots[root_kept]])
        docs, unique = np.unique(docs, return_index=True)  # a root listed once per member
        keys = keys[unique]
        by_key = np.lexsort((docs, keys))
        keys_sorted, docs_sorted = keys[by_key], docs[by_key]
        starts = np.flatnonzero(np.diff(keys_sorted, prepend=-1))
        leaders = np.empty(len(docs), dtype=np.int64)
        leaders[by_key] = np.repeat(docs_sorted[starts], np.diff(np.append(starts, len(docs_sorted))))
        ends = np.cumsum(sizes)
        set_of = np.searchsorted(ends, docs, side="right")
        for s, size in enumerate(sizes):
            mine = np.flatnonzero(set_of == s)
            if not len(mine):
                continue
            offset = int(ends[s]) - size
            local = np.arange(size, dtype=np.int64)
            lead, index = leaders[mine], docs[mine] - offset
            outside = lead < offset
            local[index] = np.where(outside, -1, lead - offset)
            earlier = dict(zip(index[outside].tolist(), lead[outside].tolist(), strict=True))
            for number in earlier.values():
                self.sides.setdefault(number, False)  # recorded when its own set is split
            out[s] = SetClusters(offset, local, earlier, self.sides)
        return out


@dataclass
class SetClusters:
    """One set's clusters as the split follows them: each document takes its leader's side."""

    offset: int  # kept number of the set's first document
    leaders: np.ndarray  # per document: its leader's index in the set (itself when alone), or -1
    #: index of each document whose leader is in an earlier set → that leader's kept number
    earlier: dict[int, int]
    #: the sides of leaders that later sets follow, by kept number, shared by every set (Clusters.sides)
    sides: dict[int, bool]
    _flags: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    _followed: np.ndarray | None = None  # kept numbers of this set's documents in ``sides``, sorted

    @property
    def n_members(self) -> int:
        """Documents of the set that follow another document."""
        return int(np.count_nonzero(self.leaders != np.arange(len(self.leaders))))

    def follow(self, start: int, flags: Sequence[bool]) -> list[bool]:
        """The sides of documents ``start …`` once every member takes its leader's side (``flags``: the
        splitter's answers); called batch after batch, in order."""
        if self._followed is None:  # every set's clusters are known by the first split
            self._flags = np.zeros(len(self.leaders), dtype=bool)
            end_number = self.offset + len(self.leaders)
            self._followed = np.array(
                sorted(k for k in self.sides if self.offset <= k < end_number), dtype=np.int64
            )
        end = start + len(flags)
        side = np.array(flags, dtype=bool)
        self._flags[start:end] = side
        leaders = self.leaders[start:end]
        inside = leaders >= 0
        # a leader comes before its members and is never a member itself: its side is final by now
        side[inside] = self._flags[leaders[inside]]
        for k in np.flatnonzero(~inside).tolist():
            side[k] = self.sides[self.earlier[start + k]]
        self._flags[start:end] = side
        lo, hi = np.searchsorted(self._followed, [self.offset + start, self.offset + end])
        for number in self._followed[lo:hi].tolist():
            self.sides[number] = bool(side[number - self.offset - start])
        return side.tolist()
