"""The one table of component kinds: what the host, the recipe validator, the report and the CLI know.

Each :class:`Kind` names the hook that registers it, the protocol(s) its components implement, where a
recipe configures it (``[prepare] filters = [...]`` → stage ``prepare``, key ``filters``) and whether
that key holds one table or an array of tables. The methods and attributes a component must have, and
its optional abilities, are read from the protocol itself (:mod:`qckit.components`): a member marked
:func:`~qckit.components.optional`, or given a default in the protocol body, is optional; every other
member is required, and registration names the missing ones.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from qckit import components as c

#: the stages of a recipe, in the order a run executes them (each is a ``[stage]`` table)
STAGES = ("prepare", "train")


@dataclass(frozen=True)
class Kind:
    """One component kind (see the module docstring)."""

    name: str  #: singular, as in ``qckit plugins filter`` and in error messages
    hook: str  #: the hook spec that registers components of this kind
    protocols: tuple[
        type, ...
    ]  #: the first one whose ``select`` matches applies (filters: stateless or stateful)
    stage: str  #: the recipe table that configures it
    key: str  #: the key inside that table
    many: bool  #: an array of tables (``[[prepare.filters]]``) rather than one table (``[prepare.splitter]``)
    selector: str = "use"  #: the key of a recipe table that names the component (eval sets: ``kind``)
    #: a dataclass of the keys every table of this kind has besides the component's parameters (eval sets:
    #: :class:`~qckit.components.EvalSetSettings`), built and checked like a settings table; None if none
    entry: type | None = None

    def protocol(self, cls: type) -> type:
        """The protocol ``cls`` implements: for filters, :class:`~qckit.components.StatefulFilter` when
        ``cls.stateful`` is true, else :class:`~qckit.components.Filter`."""
        if len(self.protocols) == 1:
            return self.protocols[0]
        stateful = bool(getattr(cls, "stateful", False))
        return self.protocols[1] if stateful else self.protocols[0]

    def required(self, cls: type) -> tuple[str, ...]:
        """Members ``cls`` must have (methods and attributes of its protocol without a default)."""
        return tuple(name for name, is_optional in protocol_members(self.protocol(cls)) if not is_optional)

    def abilities(self) -> tuple[str, ...]:
        """The optional members of this kind's protocol(s), in declaration order."""
        seen: dict[str, None] = {}
        for proto in self.protocols:
            seen.update((name, None) for name, is_optional in protocol_members(proto) if is_optional)
        return tuple(seen)

    def missing(self, cls: type) -> tuple[str, ...]:
        """The required members that ``cls`` lacks (empty when it implements the protocol)."""
        return tuple(name for name in self.required(cls) if not hasattr(cls, name))

    @property
    def recipe_key(self) -> str:
        """``prepare.filters``: where a recipe lists components of this kind."""
        return f"{self.stage}.{self.key}"


def protocol_members(proto: type) -> list[tuple[str, bool]]:
    """``(name, is_optional)`` for each public member a protocol declares, in declaration order."""
    members: dict[str, bool] = {}
    for klass in reversed(proto.__mro__):
        if klass in (object,) or klass.__module__ in ("typing", "typing_extensions"):
            continue
        body = vars(klass)
        for name in body.get("__annotations__", {}):
            if not name.startswith("_"):
                members[name] = name in body  # an attribute with a default is optional
        for name, value in body.items():
            if name.startswith("_") or not inspect.isfunction(value):
                continue
            members[name] = bool(getattr(value, "__qckit_optional__", False))
    return list(members.items())


KINDS: tuple[Kind, ...] = (
    Kind("reader", "register_readers", (c.Reader,), "prepare", "readers", many=True),
    Kind("normalizer", "register_normalizers", (c.Normalizer,), "prepare", "normalizers", many=True),
    Kind("filter", "register_filters", (c.Filter, c.StatefulFilter), "prepare", "filters", many=True),
    Kind("splitter", "register_splitters", (c.Splitter,), "prepare", "splitter", many=False),
    Kind("writer", "register_writers", (c.Writer,), "prepare", "writers", many=True),
    Kind("executor", "register_executors", (c.Executor,), "prepare", "executor", many=False),
    Kind("chunker", "register_chunkers", (c.Chunker,), "train", "chunker", many=False),
    Kind("adapter", "register_model_adapters", (c.ModelAdapter,), "train", "adapters", many=True),
    Kind(
        "evaluator",
        "register_evaluators",
        (c.Evaluator,),
        "train",
        "eval",
        many=True,
        selector="kind",
        entry=c.EvalSetSettings,
    ),
)

#: kind name → :class:`Kind`
BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}


def kind(name: str) -> Kind:
    """The kind called ``name``; ``KeyError`` names the known kinds."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown component kind {name!r}; kinds: {', '.join(BY_NAME)}") from None


def stage_kinds(stage: str) -> tuple[Kind, ...]:
    """The kinds a recipe's ``[stage]`` table configures, in pipeline order."""
    return tuple(k for k in KINDS if k.stage == stage)
