"""One name per flag: the canonical spellings, their aliases, and the help that shows them.

A flag's canonical name is written with hyphens (``--train-file``), and an idea has one name on every
command (``--model``, ``--output``). The command modules declare their flags as the seed's scripts
spelled them (``--train_file``, ``--model_name``, ``--output_dir``); :func:`canonical_flags` then gives
each flag its canonical name first and keeps every other spelling as an alias (and an underscore
spelling for every hyphenated flag), so every seed command line keeps working. Help lists the canonical name only; ``qckit --help`` says which aliases exist and
prints the exit statuses from :func:`qckit.errors.exit_statuses`.
"""

from __future__ import annotations

import argparse
import copy
import re
import textwrap
from typing import Any

#: the seed's names for an idea that has another name elsewhere → the one name (the seed's stay aliases)
SYNONYMS = {
    "--model_name": "--model",  # qckit evaluate / export: --model
    "--output_dir": "--output",  # qckit prepare / export: --output
    "--no_use_lora": "--no-lora",
}

ALIASES_NOTE = (
    "Flags are written with hyphens (--train-file); the underscore spellings of the seed's scripts "
    "(--train_file) and their names --model_name and --output_dir are accepted as aliases."
)


def canonical(option: str) -> str:
    """``--model_name`` → ``--model``, ``--train_file`` → ``--train-file``; a short flag is unchanged."""
    if not option.startswith("--"):
        return option
    return SYNONYMS.get(option, "--" + option[2:].replace("_", "-"))


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose abbreviations see through aliases: ``--train`` is ``--train-file``, not
    ambiguous between ``--train-file`` and ``--train_file`` (spellings of one flag)."""

    def _get_option_tuples(self, option_string: str) -> list[Any]:
        found = super()._get_option_tuples(option_string)
        one_each = {id(t[0]): t for t in found}  # t[0] is the action
        return list(one_each.values())


def respell(text: str) -> str:
    """Every flag named in ``text`` by its canonical name (help texts were written with the seed's)."""
    return _FLAG.sub(lambda m: canonical(m.group(0)), text)


_FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9_]*_[a-z0-9_]*[a-z0-9]")


class HelpFormatter(argparse.HelpFormatter):
    """Lists each flag under its canonical name only (the aliases are named in ``qckit --help``), and
    help texts name flags by their canonical names."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return respell(text) if text else text

    def _format_text(self, text: str) -> str:
        return super()._format_text(respell(text))

    def _format_action_invocation(self, action: argparse.Action) -> str:
        long = [o for o in action.option_strings if o.startswith("--")]
        if len(long) > 1:
            action = copy.copy(action)
            action.option_strings = [o for o in action.option_strings if o not in long[1:]]
        return super()._format_action_invocation(action)


class TopHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``qckit --help``: its epilog (the exit-status table, the note that names the aliases) is printed as
    laid out."""

    def _format_text(self, text: str) -> str:
        return argparse.RawDescriptionHelpFormatter._format_text(self, text)


def canonical_flags(parser: argparse.ArgumentParser) -> None:
    """Give every flag of ``parser`` and its subcommands its canonical name first, keep the other
    spellings as aliases, and list flags in help by their canonical names."""
    seen = parser._option_string_actions  # argparse's own option → action table, shared with groups
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                sub.formatter_class = HelpFormatter
                canonical_flags(sub)
            continue
        spellings: list[str] = []
        for option in action.option_strings:
            underscored = "--" + option[2:].replace("-", "_") if option.startswith("--") else option
            for name in (canonical(option), option, underscored):
                if seen.get(name, action) is action and name not in spellings:
                    spellings.append(name)
                    seen[name] = action
        action.option_strings = spellings
        if spellings and action.metavar is None and action.nargs != 0 and action.choices is None:
            action.metavar = spellings[0].lstrip("-").replace("-", "_").upper()  # --model MODEL


def exit_status_epilog(width: int = 78) -> str:
    """The exit statuses as an aligned text table (``qckit --help``), then the note on aliases."""
    from qckit.errors import exit_statuses

    lines = ["exit statuses:"]
    for status, meaning, raised in exit_statuses():
        text = f"{meaning} ({raised})" if raised else meaning
        lines += textwrap.wrap(text, width, initial_indent=f"  {status:<5}", subsequent_indent=" " * 7)
    return "\n".join([*lines, "", *textwrap.wrap(ALIASES_NOTE, width)])
