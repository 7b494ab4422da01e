"""The qckit plugin API: one hook per component kind.

Each hook is called **once** when a :class:`qckit.host.PluginHost` builds its registry. The plugin
calls ``register(component_class)`` for every component it provides; the class's ``name`` attribute is
the name recipes use (``use = "name"``). Third-party names should start with the plugin's own prefix
(``"acme.toxicity"``) so they never collide with another plugin's. Registering a name that another
plugin already registered is an error naming both plugins.

Per-document work never goes through hooks (a hook call costs about 2 µs): the pipeline calls the
registered components' methods directly, in batches. The protocols a component implements are in
:mod:`qckit.components`.

A plugin is a module (or object) with functions decorated by ``qckit.hookimpl`` and named like the
specs below; it is found through the ``qckit`` entry-point group::

    [project.entry-points.qckit]
    acme = "qckit_acme.plugin"
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("qckit")

Register = Callable[[type], None]


@hookspec
def register_readers(register: Register) -> None:
    """Register :class:`qckit.components.Reader` classes.

    A reader claims file endings through its ``suffixes`` class attribute (``(".jsonl", ".jsonl.gz")``);
    for each input file the reader with the longest matching suffix is used. ``records(path)`` yields the
    raw lines (it runs in the main process, so keep it to I/O); ``parse(record, source, line, issues)``
    turns one line into a :class:`~qckit.components.Document` in a worker process, raising
    :class:`qckit.errors.RecordError` for a bad line (counted and reported, never fatal).

    Optional fast path: ``parse_batch(records, source, first_line, issues) -> list[Document | None]``,
    equal to calling ``parse`` on each record but noting bad records in ``issues`` instead of raising.
    """


@hookspec
def register_normalizers(register: Register) -> None:
    """Register :class:`qckit.components.Normalizer` classes: ``normalize(text) -> text``.

    Normalizers run in recipe order on every document, in worker processes. Cleaners that remove
    URLs or e-mail addresses are normalizers too. Return the input object unchanged when there is
    nothing to do; the pipeline counts the documents each normalizer changed.

    Optional fast path: ``normalize_batch(texts) -> texts``. When present the pipeline calls it once
    per batch (about 1 MiB of text) instead of ``normalize`` per document; it must return exactly
    ``[normalize(t) for t in texts]``. If it raises, the batch is redone document by document so the
    error names the document's position.
    """


@hookspec
def register_filters(register: Register) -> None:
    """Register :class:`qckit.components.Filter` and :class:`qckit.components.StatefulFilter` classes.

    A stateless filter (``stateful = False``) answers ``drop_reason(doc) -> str | None`` in worker
    processes: ``None`` keeps the document, a short reason key drops it and is counted under the
    filter's name. A stateful filter (``stateful = True``, deduplication) splits its work in two:
    ``fingerprint(doc)`` (pure, in workers) and ``drop_reasons(fingerprints)`` (main process, corpus
    order). Stateful filters see only documents that passed every stateless filter.

    Optional fast paths, used when present and required to equal the per-document results:
    ``drop_reason_batch(docs) -> list[str | None]`` and ``fingerprint_batch(docs) -> list``.
    """


@hookspec
def register_splitters(register: Register) -> None:
    """Register :class:`qckit.components.Splitter` classes that assign documents to train or validation.

    ``start(n_docs, set_index)`` is called once per output set (one set when inputs are merged, one
    per input file otherwise), then ``is_val(index, doc)`` for each kept document in order. The result
    must depend only on the settings, the index/document and ``set_index``.
    """


@hookspec
def register_writers(register: Register) -> None:
    """Register :class:`qckit.components.Writer` classes: a ``suffix`` (``".txt"``) and ``format(doc) -> str``.

    The pipeline opens, writes and atomically renames the files (``train<suffix>``, ``val<suffix>``); a
    writer only formats one document as it should appear in the file, newline included. A writer whose
    ``format`` reads only ``doc.text`` sets ``uses_metadata = False``, which lets the pipeline carry
    texts alone between its two passes.
    """


@hookspec
def register_chunkers(register: Register) -> None:
    """Register :class:`qckit.components.Chunker` classes that pack token ids into training windows.

    ``windows(documents, eos_token_id, stats)`` receives each document's token ids (without EOS) in
    order and yields ``(input_ids, labels)`` pairs; labels are -100 for context-only positions.
    ``cache_key()`` must change whenever the output would, since windows are cached on disk.
    """


@hookspec
def register_model_adapters(register: Register) -> None:
    """Register :class:`qckit.components.ModelAdapter` classes (LoRA, 4-bit, 8-bit, FSDP …).

    The train stage calls, for every adapter of the recipe in order: ``check(env, adapters)`` before
    anything is loaded (raise :class:`qckit.errors.HardwareError` with what to change),
    ``load_kwargs(kwargs, env)`` to edit ``from_pretrained`` arguments, ``wrap_model(model, env)`` after
    loading, and ``training_args(args, model, env)`` to edit ``TrainingArguments`` keywords.
    """
