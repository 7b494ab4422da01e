"""The recipe keys as Markdown tables, generated from the settings dataclasses (README "Recipe keys").

Each table lists a settings dataclass's fields: the key, its type and default (from the type hints and
``dataclasses.fields``, the default written as TOML) and its meaning, the ``#:`` comment beside the
field or the ``#:`` lines right above it (the Sphinx autodoc convention, read from the class source).
The README holds the generated text between :data:`START` and :data:`END`; ``python -m
qckit.recipe_reference --write README.md`` rewrites that block and ``--check`` exits 1 when it differs,
so the README's keys cannot drift from the code. Components are not listed key by key: ``qckit plugins
KIND NAME`` shows each one's parameters.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

from qckit.kinds import STAGES, stage_kinds
from qckit.recipe import PLUGINS_KEYS, TOP_LEVEL_KEYS, _nested_dataclass, _value
from qckit.settings import PrepareSettings
from qckit.train.settings import TrainSettings

__all__ = ["END", "START", "field_docs", "recipe_reference", "replace_block", "settings_table"]

#: the markers around the generated block in the README
START = "<!-- recipe-keys:start -->"
END = "<!-- recipe-keys:end -->"

#: the settings dataclass of each stage's table (its component keys are the kinds' keys, :mod:`qckit.kinds`)
_STAGE_SETTINGS: dict[str, type] = {"prepare": PrepareSettings, "train": TrainSettings}

#: the top-level keys that are not stage tables: (type, default, meaning); checked against the recipe's
#: TOP_LEVEL_KEYS and PLUGINS_KEYS when the reference is generated
_TOP_LEVEL: dict[str, tuple[str, str, str]] = {
    "name": ("string", "unset", "the recipe's name (free text, for the reader; qckit does not use it)"),
    "description": ("string", "unset", "what the recipe does (free text, for the reader)"),
    "plugins.disable": (
        "array of strings",
        "`[]`",
        "plugin entry points not to load (`qckit plugins` lists them; the built-ins have one per kind: "
        '`disable = ["filters"]` switches off every built-in filter)',
    ),
}


_HEADER = "| key | type | default | meaning |\n|---|---|---|---|"


def field_docs(cls: type) -> dict[str, str]:
    """Each field's ``#:`` doc in ``cls``'s source: the ``#:`` lines right above the field, then a ``#:``
    comment on the field's own lines (beside it, or inside its parentheses), joined by spaces; ``""``
    for a field without one."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = {
        tok.start[0]: tok.string[2:].strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT and tok.string.startswith("#:")
    }
    body = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)).body
    spans = [(node.lineno, node.end_lineno or node.lineno) for node in body]
    claimed = {n for first, last in spans for n in range(first, last + 1)}
    docs: dict[str, str] = {}
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        n = node.lineno - 1
        # a block of lines holding only a "#:" comment, not inside the statement before
        while n in comments and n not in claimed and lines[n - 1].lstrip().startswith("#:"):
            above.insert(0, comments[n])
            n -= 1
        beside = [
            comments[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in comments
        ]
        docs[node.target.id] = " ".join(part for part in [*above, *beside] if part)
    return docs


def settings_table(cls: type) -> str:
    """The Markdown table of a settings dataclass: key, type, default, meaning (one row per field)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    rows = [_HEADER]
    for f in dataclasses.fields(cls):
        meaning = _text(_roles(docs.get(f.name, ""), cls))
        cells = [f"`{f.name}`", _type_name(hints[f.name]), _default(f), meaning]
        rows.append("| " + " | ".join(cell.replace("\n", " ") for cell in cells) + " |")
    return "\n".join(rows)


def recipe_reference() -> str:
    """The README's recipe-key reference (Markdown, without the markers): the top-level keys, then each
    stage's table, the tables nested in it (``[[train.data]]``) and its components' entry keys."""
    parts = [
        "Generated from the settings dataclasses by `python -m qckit.cli.reference --write README.md`"
        " (do not edit by hand). A default written `unset` means the key is absent; `required` keys have"
        " none.",
        _top_level(),
    ]
    for stage in STAGES:
        cls = _STAGE_SETTINGS[stage]
        parts += _section(_table_name(stage, many=False), cls)
        parts.append(_components_line(stage))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            nested = _nested_dataclass(hints[f.name])
            if nested is not None:
                parts += _section(_table_name(f"{stage}.{f.name}", many=nested[1]), nested[0])
        for kind in stage_kinds(stage):
            if kind.entry is not None:
                parts += _section(_table_name(kind.recipe_key, kind.many), kind.entry)
                parts.append(
                    f"`{kind.selector} = NAME` names the {kind.name}; the table's other keys are its"
                    f" parameters: `qckit plugins {kind.name} NAME` shows them."
                )
    return "\n\n".join(parts) + "\n"


def replace_block(text: str, block: str, where: str = "<text>") -> str:
    """``text`` with what lies between :data:`START` and :data:`END` replaced by ``block``;
    ``ValueError`` naming ``where`` when the markers are missing, repeated or out of order."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{where}: needs one {START} line followed by one {END} line")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}{END}{tail}"


# -- rendering ---------------------------------------------------------------------------------------


def _top_level() -> str:
    documented = {key.split(".")[0] for key in _TOP_LEVEL} | set(STAGES)
    plugin_keys = {key.split(".", 1)[1] for key in _TOP_LEVEL if key.startswith("plugins.")}
    if documented != set(TOP_LEVEL_KEYS) or plugin_keys != set(PLUGINS_KEYS):
        # a key added to the recipe without its line here: the test of the reference fails on this
        raise ValueError("recipe_reference: _TOP_LEVEL does not match TOP_LEVEL_KEYS / PLUGINS_KEYS")
    rows = [_HEADER]
    for key, (type_name, default, meaning) in _TOP_LEVEL.items():
        table, _, name = key.rpartition(".")
        shown = f"`[{table}]` `{name}`" if table else f"`{name}`"
        rows.append(f"| {shown} | {type_name} | {default} | {meaning} |")
    for stage in STAGES:
        rows.append(f"| `[{stage}]` | table | unset | the {stage} stage (below); a recipe has one or both |")
    return "#### Top level\n\n" + "\n".join(rows)


def _table_name(key: str, many: bool) -> str:
    """``[train.select]``, or ``[[train.data]]`` for an array of tables."""
    return f"[[{key}]]" if many else f"[{key}]"


def _section(title: str, cls: type) -> list[str]:
    """A table's heading, its class docstring and its keys."""
    return [f"#### `{title}`", _text(_docstring(cls)), settings_table(cls)]


def _components_line(stage: str) -> str:
    """One line for the stage's component keys: where each goes and how to see a component's parameters."""
    listed = ", ".join(
        f"`{k.key}` (`{_table_name(k.recipe_key, k.many)}`, "
        f"`{k.selector} = NAME`: `qckit plugins {k.name} NAME`)"
        for k in stage_kinds(stage)
    )
    return (
        f"Components, not listed here key by key: {listed}. A component key left out runs the defaults of"
        " `qckit/defaults.py`; an empty list runs none."
    )


_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}


def _type_name(hint: Any) -> str:
    """A hint in TOML words: ``string``, ``array of strings``, ``table`` …; ``None`` is left out (the
    default column says ``unset``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if dataclasses.is_dataclass(hint):
        return "table"
    if origin is typing.Literal:
        return " or ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return "array of tables" if dataclasses.is_dataclass(item) else f"array of {_type_name(item)}s"
    return _SCALARS.get(hint, getattr(hint, "__name__", str(hint)))


def _default(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        return "required"
    if value is None:
        return "unset"
    return "`" + _value(value) + "`"


def _docstring(cls: type) -> str:
    """The class docstring as one Markdown paragraph per reST paragraph, Sphinx roles resolved."""
    doc = _roles(inspect.cleandoc(cls.__doc__ or ""), cls)
    return "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n"))


_ROLE = re.compile(r":(\w+):`(~?)([^`]+)`")


def _roles(text: str, cls: type) -> str:
    """Sphinx roles as Markdown code: ``:data:`NAME``` becomes the value of the constant NAME of ``cls``'s
    module, in TOML (so a default or a list of choices is written once, in the code); other roles (and a
    name not found) the name (its last part with ``~``)."""
    module = vars(sys.modules[cls.__module__])

    def code(m: re.Match) -> str:
        role, short, name = m.groups()
        if role == "data" and name in module:
            value = module[name]
            return "`" + _value(list(value) if isinstance(value, tuple) else value) + "`"
        return f"`{name.rsplit('.', 1)[-1] if short else name}`"

    return _ROLE.sub(code, text)


_CODE = re.compile(r"(`+).+?\1")


def _text(text: str) -> str:
    """User text kept literal in a Markdown table cell: ``|`` escaped everywhere (GFM splits cells on it,
    even in code), ``<`` and ``*`` escaped outside code spans (an HTML tag, emphasis)."""
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(re.sub(r"([<*])", r"\\\1", text[pos : m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(re.sub(r"([<*])", r"\\\1", text[pos:]))
    return "".join(out).replace("|", "\\|")
