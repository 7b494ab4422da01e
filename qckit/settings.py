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
#: the two parts of every output set, in the order a run writes them
PARTS = ("train", "val")
#: the suffix of the text files the train stage reads (one document per line: the ``txt`` writer's)
TEXT_SUFFIX = ".txt"
#: default ``[prepare] max_line_bytes``: a longer input line is counted and skipped without being held
MAX_LINE_BYTES = 4 << 20
#: qckit's own directory inside a prepare output directory: the lock, the generations of outputs,
#: the temporary files of a running run and the work directory of a resumable one
STATE_DIR = ".qckit"


@dataclass
class PrepareSettings:
    """The ``[prepare]`` table of a recipe (components are configured in its sub-tables)."""

    #: the corpus files, each read by the reader of its suffix (``qckit plugins reader`` lists them)
    inputs: list[str] = field(default_factory=list)
    #: the output directory: train/val files, the stats file (and rejected.jsonl)
    output: str = "./data"
    #: one train/val pair for all inputs; off: one pair per input (train_1.txt, val_1.txt …)
    merge: bool = False
    workers: int = 0  #: worker processes (the executor's parallelism); 0 = one per CPU core
    batch_bytes: int = 256 * 1024  #: input bytes per batch handed to a worker
    #: a longer input line (record) is counted as ``line_too_long`` and skipped while streaming
    max_line_bytes: int = MAX_LINE_BYTES
    max_examples: int = 5  #: examples kept per drop reason / reader problem in the stats file
    rejects: bool = False  #: also write rejected.jsonl: every dropped document with its filter and reason
    stats_file: str = STATS_FILE  #: the funnel's file name in the output directory
    #: rerun only the shards an interrupted run left unfinished (executors that read their own inputs)
    resume: bool = False

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers: must be 0 (one per core) or more")
        if self.batch_bytes < 1024:
            raise ValueError("batch_bytes: must be at least 1024")
        if self.max_line_bytes < 1024:
            raise ValueError("max_line_bytes: must be at least 1024")
        if self.max_examples < 0:
            raise ValueError("max_examples: must be 0 or more")
        name = self.stats_file
        if not isinstance(name, str) or not name.strip():
            raise ValueError("stats_file: must be a file name, not empty")
        if name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
            raise ValueError(f"stats_file: must be a plain file name in the output directory, got {name!r}")
        if name == STATE_DIR:
            raise ValueError(f"stats_file: {STATE_DIR!r} is qckit's own directory")

    def output_names(self, n_inputs: int, writer_suffixes: list[str]) -> list[str]:
        """Every file a run writes into the output directory: for each set and writer ``train`` then
        ``val``, then ``rejected.jsonl`` (with ``rejects``) and the stats file."""
        names = [
            output_name(part, set_suffix, suffix)
            for set_suffix in set_suffixes(self.merge, n_inputs)
            for suffix in writer_suffixes
            for part in PARTS
        ]
        return [*names, *([REJECTS_FILE] if self.rejects else []), self.stats_file]


def set_suffixes(merge: bool, n_inputs: int) -> list[str]:
    """The name suffix of each output set: ``""`` when merged, else ``_1``, ``_2`` … one per input (the
    seed's names)."""
    return [""] if merge else [f"_{i + 1}" for i in range(n_inputs)]


def output_name(part: str, set_suffix: str, writer_suffix: str) -> str:
    """``train_1.txt``: the file of one part (``train``/``val``) of one set for one writer."""
    return f"{part}{set_suffix}{writer_suffix}"


def text_pair(merge: bool, n_inputs: int) -> tuple[str, str] | None:
    """The names of the train and val text files a prepare run writes when it writes one set (``merge``,
    or a single input), the train stage's default files; ``None`` when it writes several sets or none."""
    sets = set_suffixes(merge, n_inputs)
    if len(sets) != 1:
        return None
    train, val = (output_name(part, sets[0], TEXT_SUFFIX) for part in PARTS)
    return train, val
