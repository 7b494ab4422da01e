"""TOML recipes: parse, apply ``--set`` overrides, validate everything, resolve components.

A recipe is data, never code: it is read with :mod:`tomllib` and every value is checked against the
type hints of a settings dataclass or of a component's constructor. Validation builds every component
before any work starts, so a bad value fails in a second with one line naming the file and key path::

    recipes/quebec_cpt.toml:prepare.filters[2].min_ratio: expected a number, got 'high'

Layout::

    [prepare]                 # PrepareSettings fields (inputs, output, merge, workers …)
    [[prepare.readers]]       # optional reader settings, e.g. use = "jsonl", field = "body"
    [[prepare.normalizers]]   # ordered; absent = the defaults of qckit.defaults, [] = none
    [[prepare.filters]]       # ordered, same rule
    [prepare.splitter]        # one table
    [[prepare.writers]]
    [train]                   # TrainSettings fields (model, num_epochs …)
    [train.chunker]           # one table
    [[train.adapters]]        # ordered; [] = full fine-tuning
    [[train.eval]]            # named eval sets: kind = "bpb" | "minimal_pairs" | "choice" | a plugin's,
                              # name, path, role, max_regression, and the kind's own settings
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qckit import defaults, kinds
from qckit.components import EvalSource, Filter, ability, has_surrogates
from qckit.errors import RecipeError
from qckit.host import ComponentInfo, PluginHost
from qckit.kinds import STAGES, stage_kinds
from qckit.settings import STATE_DIR, PrepareSettings, text_pair
from qckit.train.settings import TrainSettings

#: recipes are small hand-written files; anything larger is refused before it is read into memory
MAX_RECIPE_BYTES = 1 << 20
TOP_LEVEL_KEYS = {"name", "description", "plugins", *STAGES}
PLUGINS_KEYS = {"disable"}


@dataclass
class ComponentSpec:
    """One component of a recipe: which one, with which settings, where in the recipe, and the built instance."""

    kind: str
    name: str
    params: dict[str, Any]
    key: str
    info: ComponentInfo
    instance: Any
    #: the kind's per-table keys besides the component's parameters (an eval set's EvalSetSettings), or None
    entry: Any = None

    @property
    def owner(self) -> str:
        return self.info.owner


@dataclass
class PreparePlan:
    settings: PrepareSettings
    readers: list[ComponentSpec]  # the readers the recipe configured
    normalizers: list[ComponentSpec]
    filters: list[ComponentSpec]
    splitter: ComponentSpec
    writers: list[ComponentSpec]
    executor: ComponentSpec
    host: PluginHost = field(repr=False)
    #: every registered reader by name: the configured ones, the others with their defaults
    reader_table: dict[str, ComponentSpec] = field(default_factory=dict, repr=False)


@dataclass
class TrainPlan:
    settings: TrainSettings
    chunker: ComponentSpec
    adapters: list[ComponentSpec]
    eval: list[ComponentSpec] = field(default_factory=list)  #: the [[train.eval]] sets (not the val_file one)


@dataclass
class Recipe:
    """A validated recipe: the resolved data (defaults filled in) and the built plans."""

    source: str
    data: dict[str, Any]
    prepare: PreparePlan | None = None
    train: TrainPlan | None = None
    host: PluginHost | None = field(default=None, repr=False)

    def to_toml(self) -> str:
        """The resolved recipe as TOML text (saved beside outputs so a run can be repeated)."""
        return dump_toml(self.data)


# -- loading -------------------------------------------------------------------------------------


def load_recipe(
    path: str | Path,
    *,
    overrides: Sequence[str] = (),
    host: PluginHost | None = None,
) -> Recipe:
    """Read, override and validate a recipe file (a regular UTF-8 TOML file of at most
    :data:`MAX_RECIPE_BYTES`); every problem is a :class:`RecipeError` naming the file."""
    path = Path(path)
    data = tomllib_loads(read_recipe_text(path), str(path))
    return build_recipe(data, source=str(path), overrides=overrides, host=host)


def read_recipe_text(path: Path) -> str:
    """The text of a recipe file: a regular file, readable, at most :data:`MAX_RECIPE_BYTES`, UTF-8."""
    source = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise RecipeError("no such recipe file", source=source) from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe: {exc.strerror or exc}", source=source) from None
    if stat.S_ISDIR(st.st_mode):
        raise RecipeError("is a directory, expected a recipe file", source=source)
    if not stat.S_ISREG(st.st_mode):
        raise RecipeError("is not a regular file (a device, pipe or socket?)", source=source)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"cannot read recipe: {exc.strerror or exc}", source=source) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"recipe is larger than {MAX_RECIPE_BYTES // 1024} KiB; is this a recipe?", source=source
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError(
            f"not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} on line {line})", source=source
        ) from None


def tomllib_loads(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error is a :class:`RecipeError` with tomllib's line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"invalid TOML: {exc}", source=source) from None
    except RecursionError:
        raise RecipeError("invalid TOML: nested too deeply", source=source) from None


def build_recipe(
    data: dict[str, Any],
    *,
    source: str = "<recipe>",
    overrides: Sequence[str] = (),
    host: PluginHost | None = None,
) -> Recipe:
    """Validate a recipe given as a dict (what ``tomllib`` returns) and build its components."""
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, item, source)
    _check_text(data, "", source)
    _check_keys(data, TOP_LEVEL_KEYS, "", source)
    if "prepare" not in data and "train" not in data:
        raise RecipeError("a recipe needs a [prepare] or a [train] table (or both)", source=source)
    plugins = _table(data.get("plugins", {}), "plugins", source)
    _check_keys(plugins, PLUGINS_KEYS, "plugins", source)
    disable = _coerce(plugins.get("disable", []), list[str], "plugins.disable", source)
    if host is None:
        host = PluginHost.from_entry_points(disable=disable)
    recipe = Recipe(source=source, data=data, host=host)
    if "prepare" in data:
        recipe.prepare = _build_prepare(data, host, source)
    if "train" in data:
        recipe.train = _build_train(data, host, source)
    if recipe.prepare is not None:
        _hand_eval_sets(recipe, host, source)
    return recipe


def _hand_eval_sets(recipe: Recipe, host: PluginHost, source: str) -> None:
    """Give the recipe's ``[[train.eval]]`` sets to the prepare filters that keep eval sets out of the
    training data (the ``use_eval_sets`` ability: decontamination). Not the validation file: the prepare
    stage writes it."""
    assert recipe.prepare is not None
    evals = recipe.train.eval if recipe.train is not None else []
    sets = [EvalSource(s.entry.name, s.entry.path, s.instance, s.name) for s in evals]
    kinds = {name: info.cls for name, info in host.registry["evaluator"].items()}
    for spec in recipe.prepare.filters:
        use_eval_sets = ability(spec.instance, Filter, "use_eval_sets")
        if use_eval_sets is None:
            continue
        try:
            use_eval_sets(sets, kinds)
        except ValueError as exc:
            raise RecipeError(f"filter {spec.name!r}: {exc}", source=source, key=spec.key) from None


def _build_prepare(data: dict, host: PluginHost, source: str) -> PreparePlan:
    table = _table(data["prepare"], "prepare", source)
    for key, default in defaults.PREPARE_DEFAULTS.items():
        table.setdefault(key, copy.deepcopy(default))
    keys = {k.key for k in stage_kinds("prepare")}
    scalars = {k: v for k, v in table.items() if k not in keys}
    settings = build_dataclass(PrepareSettings, scalars, "prepare", source, extra_keys=keys)
    specs = _build_components(table, "prepare", host, source)
    if not specs["writers"]:
        raise RecipeError("at least one writer is needed", source=source, key="prepare.writers")
    executor = specs["executor"]
    if settings.resume and not getattr(executor.instance, "reads_inputs", False):
        raise RecipeError(
            f"executor {executor.name!r} cannot resume: it keeps no shard completion records; "
            "choose an executor whose workers read their own shards (qckit plugins executor)",
            source=source,
            key="prepare.resume",
        )
    _check_outputs(settings, specs["writers"], source)
    data["prepare"] = _resolved(settings, specs)
    reader_table = {spec.name: spec for spec in specs["readers"]}
    for name in host.names("reader"):
        if name not in reader_table:
            reader_table[name] = build_component(
                host, "reader", {"use": name}, f"prepare.readers.{name}", "<defaults>"
            )
    return PreparePlan(settings=settings, host=host, reader_table=reader_table, **specs)


def _check_outputs(settings: PrepareSettings, writers: list[ComponentSpec], source: str) -> None:
    """Refuse output file names that collide, and inputs that an output would overwrite."""
    seen: dict[str, int] = {}
    for i, w in enumerate(writers):
        suffix = getattr(w.instance, "suffix", "")
        if suffix in seen:
            raise RecipeError(
                f"writer {w.name!r} writes the same files as prepare.writers[{seen[suffix]}] (suffix {suffix!r})",
                source=source,
                key=f"prepare.writers[{i}]",
            )
        seen[suffix] = i
    names = settings.output_names(len(settings.inputs), list(seen))
    if settings.stats_file in names[:-1]:
        raise RecipeError(
            f"{settings.stats_file!r} is also the name of an output file",
            source=source,
            key="prepare.stats_file",
        )
    out = Path(settings.output)
    targets = {}
    for name in names:
        targets[os.path.abspath(out / name)] = name
        targets[os.path.realpath(out / name)] = name
    state = os.path.realpath(out / STATE_DIR)
    for i, inp in enumerate(settings.inputs):
        for where in (os.path.abspath(inp), os.path.realpath(inp)):
            if where in targets:
                raise RecipeError(
                    f"{inp} would be overwritten by the output {out / targets[where]}; "
                    "choose another output directory or rename the input",
                    source=source,
                    key=f"prepare.inputs[{i}]",
                )
            if where.startswith(state + os.sep):
                raise RecipeError(
                    f"{inp} is inside qckit's own directory {out / STATE_DIR}; copy it elsewhere first",
                    source=source,
                    key=f"prepare.inputs[{i}]",
                )


def _build_train(data: dict, host: PluginHost, source: str) -> TrainPlan:
    table = _table(data["train"], "train", source)
    for key, default in defaults.TRAIN_DEFAULTS.items():
        table.setdefault(key, copy.deepcopy(default))
    # Without an explicit train_file (or [[train.data]] sources), train on what the prepare stage of the
    # same recipe writes; the validation file then defaults to its val file.
    if "prepare" in data:
        prepare = data["prepare"]
        out = Path(prepare.get("output", PrepareSettings.output))
        pair = text_pair(bool(prepare.get("merge", PrepareSettings.merge)), len(prepare.get("inputs", [])))
        if pair is not None and not table.get("train_file"):
            if not table.get("data"):
                table["train_file"] = str(out / pair[0])
            table.setdefault("val_file", str(out / pair[1]))
    keys = {k.key for k in stage_kinds("train")}
    scalars = {k: v for k, v in table.items() if k not in keys}
    settings = build_dataclass(TrainSettings, scalars, "train", source, extra_keys=keys)
    specs = _build_components(table, "train", host, source)
    _check_set_names(specs["eval"], settings, source)
    data["train"] = _resolved(settings, specs)
    return TrainPlan(settings=settings, **specs)


def _check_set_names(specs: list[ComponentSpec], settings: TrainSettings, source: str) -> None:
    """Eval set names are unique, and ``val`` is the validation file's when there is one."""
    seen: dict[str, str] = {}
    if settings.val_file:
        seen[defaults.VALIDATION_SET] = "train.val_file"
    for spec in specs:
        name = spec.entry.name
        if name in seen:
            raise RecipeError(
                f"eval set name {name!r} is already used by {seen[name]}; give each set its own name",
                source=source,
                key=f"{spec.key}.name",
            )
        seen[name] = spec.key


def _build_components(table: dict, stage: str, host: PluginHost, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in stage_kinds(stage):
        key, where = kind.key, kind.recipe_key
        value = table[key]
        if not kind.many:
            out[key] = build_component(host, kind.name, _table(value, where, source), where, source)
        else:
            if not isinstance(value, list):
                raise RecipeError(
                    f"expected an array of tables ([[{where}]]), got {_tname(value)}",
                    source=source,
                    key=where,
                )
            out[key] = [
                build_component(
                    host, kind.name, _table(item, f"{where}[{i}]", source), f"{where}[{i}]", source
                )
                for i, item in enumerate(value)
            ]
    return out


def build_component(host: PluginHost, kind: str, table: dict, key: str, source: str) -> ComponentSpec:
    """Instantiate the component a recipe table names, checking every parameter against its signature.

    The table names the component under the kind's ``selector`` (``use``; eval sets: ``kind``); for a
    kind with an ``entry`` dataclass (eval sets: name, path, role …) those keys are built into it.
    """
    k = kinds.kind(kind)
    selector = k.selector
    if selector not in table:
        raise RecipeError(f"missing {selector!r} (which {kind} to run)", source=source, key=key)
    name = table[selector]
    if not isinstance(name, str):
        raise RecipeError(
            f"{selector!r} must be a string, got {_tname(name)}", source=source, key=f"{key}.{selector}"
        )
    # A plugin that registers something invalid is a PluginError (raised here while the registry is
    # built); only an unknown name is the recipe's fault.
    info = host.registry[kind].get(name)
    if info is None:
        raise RecipeError(host.unknown_message(kind, name), source=source, key=f"{key}.{selector}")
    params = {p: v for p, v in table.items() if p != selector}
    entry = None
    entry_keys: dict[str, Any] = {}
    if k.entry is not None:
        entry_keys = {f.name: f for f in dataclasses.fields(k.entry) if f.init}
        entry = build_dataclass(k.entry, {p: v for p, v in params.items() if p in entry_keys}, key, source)
        params = {p: v for p, v in params.items() if p not in entry_keys}
    hints = _hints(info.cls.__init__)  # type: ignore[misc]
    accepted = {p.name: p for p in info.parameters()}
    kwargs = {}
    for pname, value in params.items():
        if pname not in accepted:
            raise RecipeError(
                _unknown_key_msg(pname, {**accepted, **entry_keys}, f"{kind} {name!r}"),
                source=source,
                key=f"{key}.{pname}",
            )
        kwargs[pname] = _coerce(value, hints.get(pname, Any), f"{key}.{pname}", source)
    try:
        instance = info.cls(**kwargs)
    except (ValueError, TypeError) as exc:
        # "stride must be …": a message that starts with a parameter's name is about that key
        first = str(exc).split(" ", 1)[0].rstrip(":")
        where = f"{key}.{first}" if first in accepted else key
        raise RecipeError(f"{kind} {name!r}: {exc}", source=source, key=where) from None
    return ComponentSpec(kind, name, params, key, info, instance, entry)


def build_dataclass(cls: type, table: dict, key: str, source: str, extra_keys: set[str] = frozenset()) -> Any:  # type: ignore[assignment]
    """Build a settings dataclass from a table, with type checks and the dataclass's own range checks."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    kwargs = {}
    for name, value in table.items():
        if name not in fields:
            raise RecipeError(
                _unknown_key_msg(name, {**fields, **dict.fromkeys(extra_keys)}, f"[{key}]"),
                source=source,
                key=f"{key}.{name}",
            )
        kwargs[name] = _coerce(value, hints.get(name, Any), f"{key}.{name}", source)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            raise RecipeError(f"missing key {name!r}", source=source, key=key)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        field_name = msg.split(":", 1)[0].strip()
        if field_name in fields and ":" in msg:
            raise RecipeError(
                msg.split(":", 1)[1].strip(), source=source, key=f"{key}.{field_name}"
            ) from None
        raise RecipeError(msg, source=source, key=key) from None


def _resolved(settings: Any, specs: dict[str, Any]) -> dict[str, Any]:
    """The stage table with every default written out, as saved beside the outputs."""
    out = _without_none(dataclasses.asdict(settings))
    for key, spec in specs.items():
        out[key] = (
            [resolved_component(s) for s in spec] if isinstance(spec, list) else resolved_component(spec)
        )
    return out


def _without_none(value: Any) -> Any:
    """``value`` with every ``None`` dropped from its tables (TOML has no null: absent means default)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def resolved_component(spec: ComponentSpec) -> dict[str, Any]:
    """The component's table with every default written out (entry keys first, for eval sets)."""
    table: dict[str, Any] = {kinds.kind(spec.kind).selector: spec.name}
    if spec.entry is not None:
        table.update(_without_none(dataclasses.asdict(spec.entry)))
    for p in spec.info.parameters():
        if p.name in spec.params:
            table[p.name] = spec.params[p.name]
        elif p.default is not p.empty and p.default is not None:
            table[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return table


# -- overrides -----------------------------------------------------------------------------------

# one segment of a --set key path: a bare name, a "quoted name" (component names with dots), or [index]
_SEGMENT = re.compile(r'\.?(?:([A-Za-z0-9_-]+)|"([^"\\]+)")|\[(-?\d+)\]')


def apply_override(data: dict, item: str, source: str) -> None:
    """Apply one ``key.path=value`` override. ``value`` is read as a TOML value (``3``, ``true``,
    ``"x"``, ``[1, 2]``), else taken as a plain string. A list of component tables can be indexed by
    position (``prepare.filters[0]``) or by component name (``prepare.filters.length.min_length``;
    quote a name with dots: ``prepare.filters."acme.toxicity".threshold``). A malformed override is a
    :class:`RecipeError` naming the ``--set`` argument."""
    where = f"--set {item}"
    if "=" not in item:
        raise RecipeError("expected key.path=value", source=where)
    path, raw = item.split("=", 1)
    if has_surrogates(item):
        raise RecipeError("not valid UTF-8 text", source=where)
    parts = _parse_key_path(path.strip(), where)
    value: Any = raw
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except (tomllib.TOMLDecodeError, RecursionError):
        pass
    else:
        if list(parsed) == ["v"]:
            value = parsed["v"]
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(str(p) for p in parts[: depth + 1])
        node = _step(node, part, here, where)
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, path, where)] = value
    elif isinstance(node, dict) and isinstance(last, str):
        node[last] = value
    else:
        raise RecipeError(f"cannot set {path!r}: its parent is not a table", source=where)


def _check_text(value: Any, key: str, source: str) -> None:
    """Every key and string of the recipe must be text that can be saved (no lone surrogates, which come
    from command-line bytes that are not UTF-8)."""
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{key}.{k}" if key else str(k)
            if isinstance(k, str) and has_surrogates(k):
                raise RecipeError("key is not valid UTF-8 text", source=source, key=repr(here))
            _check_text(v, here, source)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, f"{key}[{i}]", source)
    elif isinstance(value, str) and has_surrogates(value):
        raise RecipeError(f"not valid UTF-8 text: {value!r}", source=source, key=key)


def _parse_key_path(path: str, where: str) -> list[str | int]:
    """``prepare.filters[0].min_length`` → ``["prepare", "filters", 0, "min_length"]``, strictly."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _SEGMENT.match(path, pos)
        dotted = match is not None and match.group(0).startswith(".")
        is_name = match is not None and match.group(3) is None
        if match is None or (pos == 0 and dotted) or (pos > 0 and is_name and not dotted):
            raise RecipeError(
                f"malformed key path at {path[pos:]!r} (expected names joined by dots)", source=where
            )
        name, quoted, index = match.groups()
        parts.append(int(index) if index is not None else (name or quoted))
        pos = match.end()
    if not parts:
        raise RecipeError("empty key path (expected key.path=value)", source=where)
    if not isinstance(parts[0], str):
        raise RecipeError("a key path starts with a table name, like prepare.output", source=where)
    return parts


def _step(node: Any, part: str | int, here: str, source: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, here, source)]
    if not isinstance(node, dict):
        raise RecipeError(f"cannot descend into {here!r}: not a table", source=source, key=here)
    if isinstance(part, int):
        raise RecipeError(f"{here!r} indexes a table, not an array", source=source, key=here)
    if part not in node:
        # A component list not written in the recipe still has its default: materialise it to edit it.
        stage_defaults = {"prepare": defaults.PREPARE_DEFAULTS, "train": defaults.TRAIN_DEFAULTS}
        stage = here.rsplit(".", 1)[0] if "." in here else ""
        node[part] = copy.deepcopy(stage_defaults.get(stage, {}).get(part, {}))
    return node[part]


def _item_names(item: dict) -> tuple[Any, ...]:
    return (item["use"],) if "use" in item else (item.get("name"),)


def _list_index(node: list, part: str | int, here: str, source: str) -> int:
    if isinstance(part, int):
        if not -len(node) <= part < len(node):
            raise RecipeError(
                f"index {part} out of range (the array has {len(node)} items)", source=source, key=here
            )
        return part
    # components by their name, eval sets by theirs
    matches = [i for i, item in enumerate(node) if isinstance(item, dict) and part in _item_names(item)]
    if len(matches) != 1:
        names = [item.get("use", item.get("name")) for item in node if isinstance(item, dict)]
        what = "no" if not matches else "several"
        raise RecipeError(
            f"{what} component named {part!r} here; components: {names}", source=source, key=here
        )
    return matches[0]


# -- type checking ---------------------------------------------------------------------------------


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:
        return {}


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` (from TOML) against a type hint; ints are accepted for floats. Returns the value.

    A settings dataclass as the hint (or a list of them) takes a table (or an array of tables) and is
    built with :func:`build_dataclass`, so errors inside it name the nested key path
    (``train.data[1].weight``)."""
    nested = _nested_dataclass(hint)
    if nested is not None:
        cls, many = nested
        if many:
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise RecipeError(
                    f"expected an array of tables ([[{key}]]), got {_tname(value)}", source=source, key=key
                )
            return [build_dataclass(cls, item, f"{key}[{i}]", source) for i, item in enumerate(value)]
        return build_dataclass(cls, _table(value, key, source), key, source)
    ok, converted = _match(value, hint)
    if ok:
        return converted
    raise RecipeError(f"expected {_describe(hint)}, got {_tname(value)} {value!r}", source=source, key=key)


def _nested_dataclass(hint: Any) -> tuple[type, bool] | None:
    """``(cls, many)`` when ``hint`` is a dataclass, a list of one, or either of those ``| None``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _nested_dataclass(inner[0]) if len(inner) == 1 else None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint, False
    if origin in (list, Sequence, typing.Sequence) and args and dataclasses.is_dataclass(args[0]):
        return typing.cast(type, args[0]), True
    return None


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    if hint is Any or hint is object:
        return True, value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, conv = _match(value, arg)
            if ok:
                return True, conv
        return False, None
    if hint is type(None):
        return value is None, None
    if origin is Literal:
        return value in args, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, None
    if hint is str or hint is Path:
        return isinstance(value, str), value
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            return False, None
        item_hint = args[0] if args else Any
        out = []
        for item in value:
            ok, conv = _match(item, item_hint)
            if not ok:
                return False, None
            out.append(conv)
        return True, out
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    return isinstance(value, hint) if isinstance(hint, type) else True, value


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"an array of {_describe(args[0]) if args else 'values'}"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path string",
        type(None): "nothing",
    }.get(hint, getattr(hint, "__name__", str(hint)))


def _tname(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _table(value: Any, key: str, source: str) -> dict:
    if not isinstance(value, dict):
        raise RecipeError(f"expected a table, got {_tname(value)}", source=source, key=key)
    return value


def _check_keys(table: dict, allowed: set[str], where: str, source: str) -> None:
    for key in table:
        if key not in allowed:
            raise RecipeError(
                _unknown_key_msg(key, allowed, f"[{where}]" if where else "the recipe"),
                source=source,
                key=f"{where}.{key}" if where else key,
            )


def _unknown_key_msg(key: str, allowed: Any, what: str) -> str:
    names = sorted(allowed)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(names)}"
    return f"unknown key {key!r} in {what}; {hint}"


# -- writing ---------------------------------------------------------------------------------------


def dump_toml(data: dict[str, Any]) -> str:
    """Serialise a recipe dict back to TOML (the subset recipes use: tables, arrays of tables, scalars, arrays)."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(table: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        sub = [*path, key]
        if _is_table(value):
            lines.extend(["", f"[{'.'.join(_key(p) for p in sub)}]"])
            _dump_table(value, sub, lines)
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{'.'.join(_key(p) for p in sub)}]]"])
                _dump_table(item, sub, lines)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _value(k)


_TOML_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _toml_string(text: str) -> str:
    """A TOML basic string for ``text``: quotes, backslashes and every control character escaped, so the
    written recipe parses back to exactly ``text``. Text that cannot be UTF-8 (lone surrogates) is refused."""
    if has_surrogates(text):
        raise ValueError(f"cannot write {text!r} to TOML: not valid UTF-8 text")
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        raise ValueError("TOML has no null")
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
