"""``qckit select``: choose the adapter strength and checkpoint that gain most without forgetting."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from qckit import report
from qckit._fs import atomic_write_bytes
from qckit.cli.common import new_console, quiet_third_party
from qckit.cli.observer import RichObserver
from qckit.errors import InputError, QckitError


def plot_frontier(selection: dict[str, Any]) -> bytes:
    """A PNG per retain set: target gain against the retain set's change, one line per checkpoint through
    its strengths, the retain threshold as a vertical line, the chosen point circled."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global figure state
    except ImportError:
        raise QckitError("--plot needs matplotlib: pip install 'qckit[plot]'") from None
    points = selection["points"]
    retain = [n for n, e in points[0]["sets"].items() if e.get("role") == "retain"] or [None]
    figure = Figure(figsize=(4.8 * len(retain), 3.6), layout="constrained")
    chosen = selection.get("chosen") or {}
    for i, name in enumerate(retain):
        axes = figure.add_subplot(1, len(retain), i + 1)
        for checkpoint in dict.fromkeys(p["checkpoint"] for p in points):
            mine = [p for p in points if p["checkpoint"] == checkpoint]
            xs = [100 * (p["sets"][name]["regression"] or 0.0) if name else 0.0 for p in mine]
            ys = [100 * (p["target_gain"] or 0.0) for p in mine]
            axes.plot(xs, ys, marker="o", markersize=3, label=checkpoint)
            for p, x, y in zip(mine, xs, ys, strict=True):
                axes.annotate(
                    f"{p['strength']:g}", (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points"
                )
                if (p["checkpoint"], p["strength"]) == (chosen.get("checkpoint"), chosen.get("strength")):
                    axes.scatter([x], [y], s=120, facecolors="none", edgecolors="green", linewidths=2)
        if name:
            allowed = points[0]["sets"][name].get("max_regression")
            if allowed is not None:
                axes.axvline(
                    100 * allowed, color="red", linestyle="--", linewidth=1, label="retain threshold"
                )
            axes.set_xlabel(f"{name}: regression (% or pts, lower is better)", fontsize=8)
        axes.set_ylabel(f"{points[0]['target']}: gain (higher is better)", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def cmd_select(args: argparse.Namespace, console: Console) -> int:
    quiet_third_party()
    from qckit.outputs import SELECTED_DIR
    from qckit.select import clear_selected, record_selection, select_run, write_selected

    if args.plot and not args.plot.lower().endswith(".png"):
        raise InputError(args.plot, "--plot writes a PNG file: give it a .png name")
    observer = RichObserver(new_console(stderr=True) if args.json else console)
    selection = select_run(
        args.run_dir,
        strengths=args.strengths,
        checkpoints=args.checkpoints,
        observer=observer,
        max_length=args.max_length,
        batch_size=args.batch_size,
    )
    written = None
    chosen = selection["chosen"]
    output = Path(args.output or Path(args.run_dir) / SELECTED_DIR)
    if chosen and not args.no_write:
        written = write_selected(args.run_dir, chosen["checkpoint"], chosen["strength"], output)
    elif clear_selected(Path(args.run_dir), output):  # an earlier choice no longer stands
        observer.warn(f"removed {output}: the point an earlier selection wrote there is no longer chosen")
    record_selection(args.run_dir, selection, written, observer)
    if args.plot:
        atomic_write_bytes(args.plot, plot_frontier(selection))
    if args.json:
        console.print_json(json.dumps({**selection, "written_to": str(written) if written else None}))
        return 0
    console.print(report.selection_report(selection))
    if written:
        console.print(report.literal(f"wrote {written}", "dim"))
    if args.plot:
        console.print(report.literal(f"wrote {args.plot}", "dim"))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from qckit.train.settings import DEFAULT_STRENGTHS, SELECT_CHECKPOINTS

    p = sub.add_parser(
        "select",
        help="choose the adapter strength and checkpoint with the most target gain and no forgetting",
        description="Measure a finished run's eval sets on each kept checkpoint at several adapter strengths "
        "(the fraction of the learned delta kept), print the frontier, and write the point with the largest "
        "target gain whose retain sets stay within their thresholds. Run it from the directory the run was "
        "started in (the run's recipe names its eval files relative to it).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's output directory (train.output_dir)")
    p.add_argument(
        "--strengths",
        type=float,
        nargs="+",
        default=list(DEFAULT_STRENGTHS),
        metavar="λ",
        help=f"fractions of the learned delta to try ({' '.join(f'{s:g}' for s in DEFAULT_STRENGTHS)})",
    )
    p.add_argument("--checkpoints", choices=SELECT_CHECKPOINTS, default="all", help="candidates (all)")
    p.add_argument("--output", help="where to write the chosen point (RUN_DIR/selected)")
    p.add_argument("--no-write", action="store_true", help="measure and report only")
    p.add_argument("--plot", metavar="OUT.png", help="draw the frontier (needs matplotlib)")
    p.add_argument("--max_length", "--max-length", type=int, default=0, dest="max_length")
    p.add_argument("--batch_size", "--batch-size", type=int, default=0, dest="batch_size")
    p.add_argument("--json", action="store_true", help="print the selection as JSON")
    p.set_defaults(func=cmd_select)
