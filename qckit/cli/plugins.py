"""``qckit plugins [KIND NAME]``: loaded plugins and their components, or one component's parameters."""

from __future__ import annotations

import argparse

from rich.console import Console

from qckit import report
from qckit.errors import PluginError, RecipeError
from qckit.kinds import BY_NAME


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    from qckit.host import PluginHost

    host = PluginHost.from_entry_points()
    if args.kind:
        if args.kind not in BY_NAME:
            raise RecipeError(f"unknown component kind {args.kind!r}; kinds: {', '.join(BY_NAME)}")
        if not args.name:
            for n in host.names(args.kind):
                console.print(report.literal(f"{n}  ({host.get(args.kind, n).owner})"))
            return 0
        try:
            info = host.get(args.kind, args.name)
        except PluginError as exc:
            raise RecipeError(str(exc)) from None
        console.print(report.component_report(info))
        return 0
    console.print(report.plugins_report(host))
    return PluginError.exit_code if host.failed else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list loaded plugins and components, or show one component")
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(BY_NAME)}")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_plugins)
