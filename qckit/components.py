"""The small protocols that components implement, and the records that flow between them.

A *component* is a class registered by a plugin (see :mod:`qckit.hookspecs`). A recipe names it with
``use = "<name>"`` (eval sets: ``kind = "<name>"``); the other keys of that table (eval sets: those
that are not :class:`EvalSetSettings` fields) become keyword arguments of its constructor, so
the constructor signature (with type hints and defaults) *is* the component's parameter schema.
Constructors validate ranges and raise ``ValueError`` with a short message; qckit adds the recipe
file and key path.

Components must be picklable (plain attributes, no open files or locks) because the prepare pipeline
ships them to worker processes, and must be pure functions of their input (except stateful filters,
which run in one process in corpus order) so that the output is identical whatever the number of workers.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

#: Label of context-only positions in training windows (``labels``): never a training target. The value
#: PyTorch's cross-entropy ignores by default.
IGNORE_INDEX = -100
#: The reader issue kind for blank lines: counted so every input line is accounted for, but not a problem.
BLANK_LINE = "blank_line"
#: The issue kind of a line whose strings held lone UTF-16 surrogates (JSON ``"\ud800"``), repaired
LONE_SURROGATE = "lone_surrogate"
#: The reader issue kind of a record longer than ``[prepare] max_line_bytes``, skipped while streaming
LINE_TOO_LONG = "line_too_long"
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (U+D800–U+DFFF), which no UTF-8 file can hold."""
    return _SURROGATE.search(text) is not None


def repair_surrogates(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, the replacement character."""
    return _SURROGATE.sub("\ufffd", text)


_F = TypeVar("_F")


def optional(member: _F) -> _F:
    """Mark a protocol method as an optional ability: a component may leave it out.

    Registration (:mod:`qckit.kinds`) requires every protocol member that is neither marked optional nor
    given a default value in the protocol body; the default says what a missing attribute means.
    """
    member.__qckit_optional__ = True  # type: ignore[attr-defined]
    return member


def ability(component: Any, protocol: type, name: str) -> Any:
    """``component.<name>``, or what its absence means according to ``protocol``.

    For an attribute with a default in the protocol body (``freezes_base_model = False``) that default;
    for an :func:`optional` method the component does not have, ``None``. The core reads abilities
    through this function so that each default is written once, in the protocol.
    """
    value = getattr(component, name, _ABSENT)
    if value is not _ABSENT:
        return value
    default = vars(protocol).get(name)
    return None if inspect.isfunction(default) else default


_ABSENT = object()


@dataclass(slots=True)
class Document:
    """One document of the corpus.

    ``source`` and ``line`` say where it came from (1-based line number). ``meta`` holds JSON-serialisable
    tags that writers may output; ``metrics`` holds numbers that the pipeline sums over kept documents
    for the report (for example dialect-marker counts).
    """

    text: str
    source: str = "<memory>"
    line: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def __reduce__(self) -> tuple:
        # Documents cross process boundaries by the million: a flat tuple pickles ~2x faster than slots state.
        return (_document, (self.text, self.source, self.line, self.meta or None, self.metrics or None))


def _document(text: str, source: str, line: int, meta: dict | None, metrics: dict | None) -> Document:
    return Document(
        text, source, line, meta if meta is not None else {}, metrics if metrics is not None else {}
    )


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    """Yielded by :meth:`Reader.records` in place of a record it did not keep (longer than the limit it
    was given): the pipeline counts it under ``kind`` with its line number and never parses it."""

    kind: str  #: the issue kind in the stats, e.g. ``line_too_long``
    message: str

    @classmethod
    def too_long(cls, size: int, limit: int) -> SkippedRecord:
        """The record that takes the place of one of ``size`` bytes, over the ``limit`` of ``max_line_bytes``."""
        return cls(
            LINE_TOO_LONG, f"line of {size:,} bytes is longer than max_line_bytes ({limit:,}), skipped"
        )


@dataclass(frozen=True, slots=True)
class RecordBlock:
    """Consecutive records of a file as one bytes object: ``count`` records joined by ``b"\\n"`` (so no
    record holds a ``b"\\n"``). Yielded by :meth:`Reader.record_blocks`, so that the driver cuts batches
    and ships them without a Python step per record."""

    data: bytes
    count: int  #: at least 1 (``b""`` with count 1 is one empty record)

    def records(self) -> list[bytes]:
        """The records, one bytes object each."""
        return self.data.split(b"\n")


class Reader(Protocol):
    """Turns one input file into records (cheap, main process) and records into documents (workers).

    For each input file the reader with the longest matching ``suffixes`` entry is used. Every
    registered reader takes part; a recipe's ``[[prepare.readers]]`` only changes one's settings.
    """

    name: ClassVar[str]
    #: file name endings this reader handles, longest match wins (".jsonl.gz" beats ".gz").
    suffixes: ClassVar[tuple[str, ...]]
    #: True when its documents never hold a lone surrogate (it repairs and counts them itself), so the
    #: pipeline need not look for them (it does for every other reader, and for in-memory documents)
    surrogate_free: ClassVar[bool] = False

    def records(self, path: Path, max_bytes: int) -> Iterator[bytes | SkippedRecord]:
        """Yield the raw records of ``path`` in order, one per line (line N is the N-th record).

        A record longer than ``max_bytes`` (``[prepare] max_line_bytes``) must never be held in memory
        whole: skip it while streaming and yield a :class:`SkippedRecord` in its place. Read no further
        than the file's size when it is opened (a file may grow during the run: the pipeline reports
        it). Runs in the driver (or a shard worker), so keep it to I/O."""

    def parse(self, record: bytes, source: str, line: int, issues: IssueLog) -> Document | None:
        """Decode one record in a worker process. Return ``None`` to skip it counted (note why in
        ``issues``, e.g. :data:`BLANK_LINE`); raise :class:`qckit.errors.RecordError` for a bad record,
        which the pipeline counts with its ``file:line``. Never fatal."""

    @optional
    def parse_batch(
        self, records: list[bytes], source: str, first_line: int, issues: IssueLog
    ) -> list[Document | None]:
        """Fast path: equal to ``parse`` on each record (``first_line`` is the first one's number), but
        noting bad records in ``issues`` instead of raising."""
        ...

    @optional
    def record_blocks(self, path: Path, max_bytes: int) -> Iterator[RecordBlock | SkippedRecord]:
        """Fast path of :meth:`records` for records that never hold a ``b"\\n"`` (lines): the same
        records in the same order, several at a time as :class:`RecordBlock` s, with the same
        :class:`SkippedRecord` s between them. The driver then reads the input without a Python step per
        record."""
        ...

    @optional
    def parse_block(
        self, block: RecordBlock, source: str, first_line: int, issues: IssueLog
    ) -> list[Document | None]:
        """Equal to ``parse_batch(block.records(), …)``, for a reader that can decode the block's bytes
        without splitting them into records first. Without it the pipeline splits the block."""
        ...

    @optional
    def byte_ranges(self, path: Path, size: int) -> list[tuple[int, int]]:
        """Cut ``path`` into consecutive ``(start, end)`` byte ranges of about ``size`` bytes that cover
        it, each starting where a record starts; ``[]`` when this file cannot be cut (compressed). Must
        be cheap (read a little around each cut). With :meth:`records_between`, lets an executor whose
        workers read their own input spread one big file over several shards."""
        ...

    @optional
    def records_between(
        self, path: Path, start: int, end: int, max_bytes: int
    ) -> Iterator[bytes | SkippedRecord]:
        """Yield the records that start in ``[start, end)``, a range given by :meth:`byte_ranges`, exactly
        as :meth:`records` yields them (the ranges of a file together yield what ``records`` yields)."""
        ...


class Normalizer(Protocol):
    """Rewrites text (Unicode form, mojibake, URLs …), in recipe order, in worker processes.

    Return the input object unchanged when there is nothing to do; the pipeline counts the documents
    each normalizer changed. Cleaners that remove URLs or e-mail addresses are normalizers too.
    """

    name: ClassVar[str]

    def normalize(self, text: str) -> str: ...

    @optional
    def normalize_batch(self, texts: list[str]) -> list[str]:
        """Fast path, called once per batch (``prepare.batch_bytes`` of input) instead of ``normalize``
        per document. Must return exactly ``[normalize(t) for t in texts]``; if it raises, the batch is
        redone document by document so the error names the document's position."""
        ...

    @optional
    def summary(self, metrics: dict[str, float]) -> dict[str, float]:
        """Corpus measures for the report, from the sums of ``doc.metrics`` over the kept documents."""
        ...


class Filter(Protocol):
    """Decides whether a document stays, in worker processes (a *stateless* filter).

    ``drop_reason`` returns ``None`` to keep the document, or a short stable reason key
    (``"too_short"``) that the stats count per filter. A filter may also write ``doc.meta`` /
    ``doc.metrics`` (a tagger is a filter that never drops).
    """

    name: ClassVar[str]
    stateful: ClassVar[bool] = False

    def drop_reason(self, doc: Document) -> str | None: ...

    @optional
    def drop_reason_batch(self, docs: list[Document]) -> list[str | None]:
        """Fast path: exactly ``[drop_reason(d) for d in docs]``."""
        ...

    @optional
    def summary(self, metrics: dict[str, float]) -> dict[str, float]:
        """Corpus measures for the report, from the sums of ``doc.metrics`` over the kept documents."""
        ...

    @optional
    def resume_key(self) -> str:
        """What the filter's decisions depend on that its settings do not show, e.g. a digest of the files
        it read (a word list, eval sets). It joins the settings in a prepare run's fingerprint, so that
        resuming with other contents is refused instead of mixing decisions. Read such files in
        ``__init__`` (or ``use_eval_sets``), in the main process, and carry their contents to the
        workers: a file read again by each worker could have changed."""
        ...

    @optional
    def use_eval_sets(self, sets: Sequence[EvalSource], kinds: Mapping[str, type]) -> None:
        """For a filter that keeps eval sets out of the training data (decontamination): called once when
        the recipe is loaded, with the recipe's ``[[train.eval]]`` sets (none without a train stage) and
        the registered eval-set kinds by name (to read eval files it names itself). Read the sets' texts
        here (:meth:`EvalSource.texts`), so a bad eval file fails before any work starts; raise
        ``ValueError`` for a set it cannot use."""
        ...


class StatefulFilter(Protocol):
    """A filter whose answer depends on the documents seen before (deduplication); ``stateful = True``.

    ``fingerprint`` is pure and runs in worker processes; ``drop_reasons`` runs in the main process,
    in corpus order, on the fingerprints of the documents that passed every stateless filter. A
    fingerprint is data (None, bool, int, float, str, bytes, lists, tuples, dicts with string keys,
    numeric numpy arrays and scalars): sharded runs store it without pickle
    (:mod:`qckit.prepare.resultfile`).
    """

    name: ClassVar[str]
    stateful: ClassVar[bool]  # True

    def fingerprint(self, doc: Document) -> Any: ...

    def drop_reasons(self, fingerprints: Sequence[Any]) -> list[str | None]: ...

    @optional
    def fingerprint_batch(self, docs: list[Document]) -> list[Any]:
        """Fast path: exactly ``[fingerprint(d) for d in docs]``."""
        ...

    @optional
    def decide_clusters(
        self, fingerprints: Sequence[Any], serials: Sequence[int]
    ) -> tuple[list[str | None], list[int | None]]:
        """Called instead of ``drop_reasons`` by a filter that can keep near-duplicates together: each
        document's drop reason (None: kept) and, for a kept one, the serial of the earlier document whose
        cluster it joins (None: none). ``serials`` number the documents that reach the stateful filters,
        in corpus order from 0 (``serials[i]`` is ``fingerprints[i]``'s). The split then puts every kept
        member of a cluster on the side of its first kept member (:meth:`Splitter.start_clusters`)."""
        ...


class Splitter(Protocol):
    """Assigns kept documents to train or validation.

    ``start`` is called once per output set (one set when inputs are merged, one per input file
    otherwise) with its number of documents, then ``is_val`` for each of its documents in order
    (index 0 … n_docs-1). The answer must depend only on the settings, the index/document and
    ``set_index``.
    """

    name: ClassVar[str]

    def start(self, n_docs: int, set_index: int) -> None: ...

    def is_val(self, index: int, doc: Document) -> bool: ...

    @optional
    def start_clusters(self, n_docs: int, set_index: int, leaders: Sequence[int]) -> None:
        """Called instead of ``start`` when documents of the set belong to near-duplicate clusters (a
        stateful filter's ``decide_clusters``): ``leaders[i]`` is the index of the first document of
        document i's cluster (``i`` for a document alone), or -1 when that first document is in an
        earlier set. Whatever ``is_val`` answers, the pipeline gives each document its leader's side;
        this ability lets a splitter choose sides by cluster, so that its shares still hold."""
        ...

    @optional
    def is_val_batch(self, start: int, n: int) -> Sequence[bool]:
        """Fast path for a splitter whose answer depends on the index alone: exactly
        ``[is_val(i, d) for i in range(start, start + n)]`` whatever the documents. The pipeline then
        never needs the documents at split time (only the lines the workers formatted)."""
        ...


class Writer(Protocol):
    """Formats documents for one output file format (``train<suffix>``, ``val<suffix>``).

    The pipeline opens, writes and publishes the files; a writer only formats one document as it
    should appear in the file (in a worker process, right after the filters).
    """

    name: ClassVar[str]
    suffix: ClassVar[str]  # ".txt"

    def format(self, doc: Document) -> str:
        """Return the document as it goes into the file, ending with a newline. Runs in worker
        processes (the lines travel to the driver already formatted), so it must be pure."""

    @optional
    def format_batch(self, docs: list[Document]) -> list[str]:
        """Fast path: exactly ``[format(d) for d in docs]``."""
        ...


class Executor(Protocol):
    """Places the work of a prepare run: calls a function on every item (a batch, a shard) somewhere, in
    this process, on a pool of worker processes or on a Ray cluster, and hands the results back in
    item order.

    The pipeline owns what runs (pure functions of :mod:`qckit.prepare`) and the order in which the
    results are used, so an executor never changes the output. ``start`` is called once per run,
    then ``map`` (once or more), then ``stop`` (also after an error or an interruption).
    """

    name: ClassVar[str]
    #: True when the executor's workers read their input themselves (a remote cluster): the pipeline
    #: cuts the inputs into shards (files, and byte ranges of big files), each finished shard leaves a
    #: completion record in the run's work directory, and a run can resume (``[prepare] resume``).
    #: False: the driver reads the inputs and ships batches of records to the workers.
    reads_inputs: ClassVar[bool] = False
    #: the size of a shard in bytes, when ``reads_inputs``
    shard_bytes: int = 64 << 20

    def start(self, workers: int) -> int:
        """Get ready (start a pool, connect to a cluster). ``workers`` is ``[prepare] workers`` (0: every
        core available); return how many items will be processed at once."""

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], shared: Any) -> Iterator[Any]:
        """Yield ``fn(shared, item)`` for every item of ``items``, in the order of ``items``.

        ``shared`` is the same for every call (the components): send it to each worker once. Take
        ``items`` lazily and keep a bounded number in flight, so memory stays bounded. An exception
        raised by ``fn`` is raised here unchanged (qckit's errors carry the input position). A failure
        that is not ``fn``'s own (a worker process died) may be retried a bounded number of times;
        then raise an exception whose message names the item (``str(item)``) and the cause.
        """

    def stop(self) -> None:
        """Release what ``start`` and ``map`` took (worker processes, a Ray instance it started)."""


@dataclass(slots=True)
class PackingStats:
    """What a chunker did: documents and tokens in, tokens kept in windows, windows made."""

    documents: int = 0
    tokens_total: int = 0  # including one EOS per document
    tokens_kept: int = 0  # tokens that are a training target in some window
    windows: int = 0
    windows_dropped_short: int = 0


#: what a token may attend to inside a packed training window (a chunker's ``attention``)
ATTENTION_MODES = ("document", "window")


class Chunker(Protocol):
    """Turns tokenized documents into fixed-length training windows (cached on disk by ``cache_key``)."""

    name: ClassVar[str]
    #: the window length in tokens; 0 when the chunker has none (the train stage then uses the longest window)
    max_length: int = 0
    #: ``"window"``: a token attends to every earlier token of its window; ``"document"``: only to the earlier
    #: tokens of its own document. A document ends with its EOS; for ``"document"`` the train stage gives every
    #: document position ids that restart at 0 (transformers then masks attention across documents), checks
    #: that the model really isolates them, and the chunker must label each document's first token
    #: :data:`IGNORE_INDEX` (nothing of its own document precedes it)
    attention: str = "window"

    def windows(
        self, documents: Iterable[Sequence[int]], eos_token_id: int, stats: PackingStats
    ) -> Iterator[tuple[list[int], list[int]]]:
        """Yield ``(input_ids, labels)`` windows from each document's token ids (without EOS), in order;
        ``labels`` is :data:`IGNORE_INDEX` where a token is context only."""

    def cache_key(self) -> str:
        """A string that changes whenever the windows would change (settings, version)."""


class ModelAdapter(Protocol):
    """Changes how the model is loaded, wrapped and trained (LoRA, 4-bit, 8-bit, FSDP …).

    Adapters compose: the train stage calls each method on every adapter of the recipe, in order:
    ``check`` before anything is loaded, ``load_kwargs`` to edit ``from_pretrained`` arguments,
    ``wrap_model`` after loading, ``training_args`` to edit ``TrainingArguments`` keywords, then the
    optional abilities below where an adapter has them. The train stage never asks for an adapter by
    name: what it needs to know is one of these members.
    """

    name: ClassVar[str]
    #: True when only the adapter's own weights train (LoRA): the base model may then load in half precision
    freezes_base_model: ClassVar[bool] = False
    #: True when the Trainer (accelerate) shards the model across processes (FSDP): the train stage then
    #: leaves device placement to the Trainer, times no passes for the estimate, and calls ``verify_trainer``
    shards_model: ClassVar[bool] = False
    #: True when the input embeddings and the output head train although the base is frozen (lora's
    #: ``train_embeddings``): required by ``train.add_tokens`` with such an adapter, so new rows learn
    trains_embeddings: bool = False
    #: one-line remarks for the run report (what the adapter decided: the modules LoRA adapts, how FSDP
    #: loads the weights), complete once ``training_args`` has run; the inspection and the summary list them
    notes: tuple[str, ...] = ()

    def check(self, env: Any, adapters: Sequence[str]) -> None:
        """Raise :class:`qckit.errors.HardwareError` if this adapter cannot run here or with the others
        (``env`` describes the hardware; ``adapters`` names all adapters of the recipe). Called before loading."""

    def load_kwargs(self, kwargs: dict[str, Any], env: Any) -> None:
        """Edit the keyword arguments of ``AutoModelForCausalLM.from_pretrained`` (quantization config …)."""

    @optional
    def loads_weights(self, kwargs: dict[str, Any], env: Any) -> bool:
        """Whether this process reads the model's weights, given the finished ``from_pretrained`` keywords
        (every adapter's ``load_kwargs`` applied; called on every process, before loading). ``False``:
        it builds the model without them (the parameters on the meta device: ``qckit.models.load_model``
        with ``weights=False``) and this adapter answers for their arrival before training (FSDP: the
        Trainer broadcasts rank 0's when it shards the model). Without this ability every process loads."""
        ...

    def wrap_model(self, model: Any, env: Any) -> Any:
        """Return the model to train (a peft model, a prepared k-bit model …)."""

    def training_args(self, args: dict[str, Any], model: Any, env: Any) -> None:
        """Edit the keyword arguments of ``transformers.TrainingArguments`` (fsdp settings …)."""

    @optional
    def base_model_config(self, config: Any) -> None:
        """Edit, in place, the copy of the loaded model's config that is saved as ``config.json`` beside a
        trained adapter, so that it describes the base model as published: undo what ``load_kwargs``
        changed (the 4bit/8bit adapters remove the ``quantization_config`` they added)."""
        ...

    @optional
    def optimizer_param_groups(self, model: Any, learning_rate: float) -> list[dict[str, Any]] | None:
        """Parameter groups for the optimizer (torch's format: ``{"params": [...], "lr": …}``), or ``None``
        to leave the Trainer's default (every trainable parameter at ``learning_rate``). Called once, when
        the Trainer creates its optimizer, with the wrapped model. The groups must hold every trainable
        parameter exactly once; a group without ``lr`` uses ``learning_rate``, one without
        ``weight_decay`` the recipe's. The train stage still exempts biases and norms from weight decay,
        and the learning-rate schedule scales every group alike. At most one adapter may return groups."""
        ...

    @optional
    def verify_trainer(self, trainer: Any) -> None:
        """Raise :class:`qckit.errors.HardwareError` if the Trainer did not set the model up the way this
        adapter asked (FSDP: the model really is sharded, not silently data parallel). Called once when
        training begins, with the model wrapped, before the baseline evaluation."""
        ...


#: the roles of an eval set: ``target`` (what the run should gain: the dialect) and ``retain`` (what it must
#: not lose: general or standard French), the forgetting report's two sides
EVAL_ROLES = ("target", "retain")
#: the regression a retain set allows when its table gives none: bits per byte 2 % higher, or 0.02 accuracy
DEFAULT_MAX_REGRESSION = 0.02
#: what ``Evaluator.regression`` may say: a change relative to the value before, or in points of the metric
REGRESSION_UNITS = ("relative", "points")
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class EvalSetSettings:
    """The keys every ``[[train.eval]]`` table has, whatever its ``kind``; the other keys are the evaluator's."""

    #: names the set in reports, the summary and TensorBoard (letters, digits, ``_ . -``)
    name: str
    path: str  #: the set's file
    role: str = "target"  #: one of :data:`EVAL_ROLES`: a target set should improve, a retain set should hold
    #: retain sets only: how much worse the metric may get before the run is flagged, in the evaluator's
    #: :attr:`Evaluator.regression` unit; unset = :data:`DEFAULT_MAX_REGRESSION`
    max_regression: float | None = None

    def __post_init__(self) -> None:
        if not _SET_NAME.fullmatch(self.name):
            raise ValueError(
                f"name: must be letters, digits, '_', '.' or '-' (starting with a letter or digit), got {self.name!r}"
            )
        if not self.path.strip():
            raise ValueError("path: must not be empty")
        if self.role not in EVAL_ROLES:
            raise ValueError(f"role: must be one of {', '.join(EVAL_ROLES)}, got {self.role!r}")
        if self.max_regression is not None:
            if self.role != "retain":
                raise ValueError(
                    'max_regression: only a retain set has an allowed regression (role = "retain")'
                )
            if not 0 <= self.max_regression < 1e9:
                raise ValueError(f"max_regression: must be 0 or more, got {self.max_regression!r}")

    @property
    def allowed_regression(self) -> float | None:
        """The regression a retain set allows (``None`` for a target set)."""
        if self.role != "retain":
            return None
        return DEFAULT_MAX_REGRESSION if self.max_regression is None else self.max_regression


class Evaluator(Protocol):
    """Measures a model on one eval set (a file): bits per byte, minimal pairs, a multiple-choice task …

    A recipe lists eval sets as ``[[train.eval]]`` tables: ``kind`` names the evaluator, the
    :class:`EvalSetSettings` keys (``name``, ``path``, ``role``, ``max_regression``) belong to the set,
    and every other key is a constructor parameter of the evaluator. ``load`` runs once per run, before
    training; ``measure`` runs before training, every ``eval_steps`` and after it, on every rank.
    ``metric``, ``higher_is_better``, ``regression`` and ``protocol`` may be set per instance by the
    constructor (a ``metric = "macro_f1"`` parameter, a ``protocol = "stream"`` one).
    """

    name: ClassVar[str]
    #: the key of ``measure``'s result that before/after/delta, the reports and the forgetting check use
    metric: str
    #: True when a larger metric is better (accuracy), False when a smaller one is (bits per byte)
    higher_is_better: bool
    #: how a regression of the metric is measured: ``"relative"`` (``(after − before) / before`` for a
    #: smaller-is-better metric, bits per byte) or ``"points"`` (``before − after``, accuracy)
    regression: str
    #: the values registration accepts for a class attribute of this protocol (one of REGRESSION_UNITS)
    __qckit_choices__: ClassVar[dict[str, tuple[str, ...]]] = {"regression": REGRESSION_UNITS}
    #: what else the numbers depend on, named with them wherever they are reported (bpb: ``document`` or
    #: ``stream``); empty when the kind says it all
    protocol: str = ""

    def load(self, path: Path, tokenizer: Any) -> Any:
        """Read and prepare the set once (tokenize, validate rows). Return what ``measure`` takes. Count bad
        rows (with ``file:line``) in an :class:`IssueLog` on the returned object's ``issues`` attribute
        instead of raising (the run reports them as a warning); raise :class:`qckit.errors.InputError`
        only when the file cannot be used at all."""

    def measure(self, model: Any, data: Any, context: Any) -> dict[str, Any]:
        """Score ``model`` on ``data`` (what ``load`` returned) with ``context`` (a
        :class:`qckit.evaluate.loglik.EvalContext`: the tokenizer, ``max_length``, ``batch_size``, device,
        observer; ``context.scorer(model)`` scores requests). Return plain JSON-serialisable numbers with
        ``metric`` among them; leave the model as it was (train/eval modes restored)."""

    @optional
    def texts(self, path: Path) -> Iterable[str]:
        """Every text of the set's usable items, as ``load`` reads them (both sentences of a pair, a
        choice item's prompt or the row fields its template takes, and each choice; each document of a
        text file), for the prepare stage to keep them out of the training data. Bad rows are skipped as
        ``load`` skips them; raise :class:`qckit.errors.InputError` when the file cannot be used at all.
        Without it, a set of this kind cannot be checked for contamination."""
        ...


@dataclass(frozen=True)
class EvalSource:
    """An eval set as a decontaminating filter sees it (:meth:`Filter.use_eval_sets`): its name, its file
    and its evaluator."""

    name: str
    path: str
    evaluator: Any
    kind: str = ""  #: the evaluator's name, for messages

    def texts(self) -> Iterable[str]:
        """The set's texts (:meth:`Evaluator.texts`); ``ValueError`` when its kind cannot list them."""
        texts = ability(self.evaluator, Evaluator, "texts")
        if texts is None:
            raise ValueError(
                f"eval set {self.name!r} (kind {self.kind or type(self.evaluator).__name__!r}) cannot list "
                "its texts (its evaluator has no texts ability), so it cannot be checked for contamination"
            )
        return texts(Path(self.path))


class IssueLog:
    """Counts recoverable problems by kind and keeps the first few examples (``file:line: message``).

    Logs from worker processes are merged in corpus order, so the examples are deterministic. The
    prepare funnel keeps one per filter for its drops (kind = reason, example = position).
    """

    __slots__ = ("counts", "examples", "max_examples")

    def __init__(self, max_examples: int = 5) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.max_examples = max_examples

    def add(self, kind: str, source: str, line: int | None, message: str | None = None) -> None:
        """Count one problem of ``kind``; the example reads ``source:line: message`` (without a
        message: ``source:line``, the position alone, as drop examples are kept)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < self.max_examples:
            where = f"{source}:{line}" if line is not None else source
            examples.append(f"{where}: {message}" if message is not None else where)

    def merge(self, other: IssueLog) -> None:
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
            examples = self.examples.setdefault(kind, [])
            room = self.max_examples - len(examples)
            if room > 0:
                examples.extend(other.examples.get(kind, [])[:room])

    def total(self) -> int:
        return sum(self.counts.values())

    def first_example(self) -> str:
        """The first recorded example (``file:line: message``), or "" when none was kept."""
        return next((ex[0] for ex in self.examples.values() if ex), "")

    def as_dict(self) -> dict[str, Any]:
        return {
            kind: {"count": self.counts[kind], "examples": self.examples.get(kind, [])}
            for kind in self.counts
        }

    def __bool__(self) -> bool:
        return bool(self.counts)
