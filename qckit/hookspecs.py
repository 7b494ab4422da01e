"""The qckit plugin API: one hook per component kind.

Each hook is called **once** when a :class:`qckit.host.PluginHost` builds its registry. The plugin
calls ``register(component_class)`` for every component it provides; the class's ``name`` attribute is
the name recipes use (``use = "name"``). Third-party names should start with the plugin's own prefix
(``"acme.toxicity"``) so they never collide with another plugin's. Registering a name that another
plugin already registered is an error naming both plugins.

Per-document work never goes through hooks (a hook call costs about 2 µs): the pipeline calls the
registered components' methods directly, in batches. The protocols a component implements, with their
required members and optional abilities, are in :mod:`qckit.components`; :mod:`qckit.kinds` maps each
hook to its protocol and recipe key, and registration refuses a class that lacks a required member.

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
    """Register :class:`qckit.components.Reader` classes (recipe: ``[[prepare.readers]]``).

    A reader claims file endings through its ``suffixes``; each input file goes to the reader with
    the longest matching suffix. ``records`` runs in the main process, ``parse`` (or the optional
    ``parse_batch``) in worker processes. The protocol's docstrings are the contract.
    """


@hookspec
def register_normalizers(register: Register) -> None:
    """Register :class:`qckit.components.Normalizer` classes (recipe: ``[[prepare.normalizers]]``).

    Normalizers run in recipe order on every document, in worker processes, once per batch of about
    ``prepare.batch_bytes`` of input through the optional ``normalize_batch``. The protocol's
    docstrings are the contract.
    """


@hookspec
def register_filters(register: Register) -> None:
    """Register filter classes (recipe: ``[[prepare.filters]]``): :class:`qckit.components.Filter`
    (``stateful = False``, answers in worker processes) or :class:`qckit.components.StatefulFilter`
    (``stateful = True``, deduplication: fingerprints in workers, decisions in the main process, in
    corpus order, on the documents every stateless filter kept). The protocols' docstrings are the
    contract, batch fast paths included.
    """


@hookspec
def register_splitters(register: Register) -> None:
    """Register :class:`qckit.components.Splitter` classes (recipe: ``[prepare.splitter]``, one table)
    that assign kept documents to train or validation, deterministically, set by set (see the
    protocol)."""


@hookspec
def register_writers(register: Register) -> None:
    """Register :class:`qckit.components.Writer` classes (recipe: ``[[prepare.writers]]``).

    A writer has a ``suffix`` and formats one document; the pipeline owns the files, writes
    ``train<suffix>``/``val<suffix>`` and makes them appear only when the whole run succeeded.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register :class:`qckit.components.Executor` classes (recipe: ``[prepare.executor]``, one table;
    default ``local``) that decide where the prepare work runs: this machine's cores, a Ray cluster …

    An executor only places work and returns results in order; it never changes the output. One that
    ``reads_inputs`` gets shards (files and byte ranges) with completion records, and so supports
    ``[prepare] resume``. The protocol's docstrings are the contract.
    """


@hookspec
def register_chunkers(register: Register) -> None:
    """Register :class:`qckit.components.Chunker` classes (recipe: ``[train.chunker]``, one table)
    that pack token ids into training windows. Windows are cached on disk under the chunker's
    ``cache_key()``, which must change whenever the windows would (see the protocol). The train stage
    reads the chunker's ``max_length`` (0: none) as the window length and its ``attention``
    (``"window"``, or ``"document"``: position ids restart per document, the model is checked to
    isolate documents, and the chunker labels each document's first token context-only)."""


@hookspec
def register_model_adapters(register: Register) -> None:
    """Register :class:`qckit.components.ModelAdapter` classes (recipe: ``[[train.adapters]]``):
    LoRA, 4-bit, 8-bit, FSDP … They compose; the protocol says when each method is called and which
    abilities the train stage reads: ``freezes_base_model`` (the base may load in half precision),
    ``shards_model`` (the Trainer shards it: no placement, no timed passes), ``trains_embeddings``
    (new tokens can learn under a frozen base), ``notes`` (remarks for the reports), and the
    optional ``loads_weights(kwargs, env)`` (this process builds the model without its weights: another
    sends them), ``base_model_config(config)`` (the config saved beside the adapter), ``verify_trainer(trainer)``
    (refuse a Trainer that did not set the model up as asked) and ``optimizer_param_groups(model,
    learning_rate)`` (parameter groups with their own learning rates). The train stage never asks for an
    adapter by name."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Register :class:`qckit.components.Evaluator` classes: eval-set kinds (recipe: ``[[train.eval]]``,
    selected by ``kind = "<name>"``; built-ins ``bpb``, ``minimal_pairs``, ``choice``).

    Every eval set is loaded once and measured before training, every ``eval_steps`` and after; the
    evaluator's ``metric``, ``higher_is_better`` and ``regression`` say how before/after/delta and the
    forgetting check read its results. The protocol's docstrings are the contract.
    """
