"""Settings dataclasses of the stages, imported by the recipe validator and by the stages alike.

This module imports neither :mod:`qckit.recipe` nor a stage, so both can import it (the recipe builds
these from its tables, the stages read them). Each field is a recipe key of its stage's table; a
``__post_init__`` checks ranges and raises ``ValueError("field: message")``, which the recipe turns
into an error naming the key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the funnel of a prepare run, written beside the outputs (``[prepare] stats_file``)
STATS_FILE = "prepare_stats.json"
#: every dropped document with its filter and reason (``[prepare] rejects = true``)
REJECTS_FILE = "rejected.jsonl"


@dataclass
class PrepareSettings:
    """The ``[prepare]`` table of a recipe (components are configured in its sub-tables)."""

    inputs: list[str] = field(default_factory=list)
    output: str = "./data"
    merge: bool = False
    workers: int = 0  # 0 = one per CPU core
    batch_bytes: int = 256 * 1024  #: input bytes per batch handed to a worker
    max_examples: int = 5  # examples kept per drop reason / reader problem
    rejects: bool = False  # also write rejected.jsonl: every dropped document with its filter and reason
    stats_file: str = STATS_FILE
    #: rerun only the shards an interrupted run left unfinished (executors that read their own inputs)
    resume: bool = False

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers: must be 0 (one per core) or more")
        if self.batch_bytes < 1024:
            raise ValueError("batch_bytes: must be at least 1024")
        if self.max_examples < 0:
            raise ValueError("max_examples: must be 0 or more")
