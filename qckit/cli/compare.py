"""``qckit compare RUN_DIR [RUN_DIR …] [--plot out.png] [--json]``: which run gained dialect, which forgot.

One table of every run's eval sets (before / after / change, retain checks), runs named by their recipes'
names (else their directories); ``--plot`` draws each set's metric over the training steps, one line per
run with its 95 % interval as a band and a retain set's limit as a dashed line, and the training loss
(matplotlib: ``pip install 'qckit[plot]'``).
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from rich.console import Console

from qckit import report
from qckit._fs import atomic_write_bytes
from qckit.errors import InputError, QckitError
from qckit.outputs import SUMMARY_NAME


def plot_runs(runs: list[Any], title: str = "") -> bytes:
    """:func:`plot_figure` as a PNG."""
    buffer = io.BytesIO()
    plot_figure(runs, title).savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def plot_figure(runs: list[Any], title: str = "") -> Any:
    """A matplotlib figure with one panel per eval set (its metric over optimizer steps, one line per run,
    the 95 % interval as a band where the metric has one, a retain set's limit as a dashed line) and a
    panel of the training loss."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global figure state
    except ImportError:
        raise QckitError("--plot needs matplotlib: pip install 'qckit[plot]'") from None
    from qckit.evaluate.sets import retain_limit

    names = list(dict.fromkeys(name for run in runs for name in run.sets))
    panels = len(names) + (1 if any(run.loss for run in runs) else 0)
    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure = Figure(figsize=(4.8 * columns, 3.4 * rows), layout="constrained")
    labels = report.run_labels(runs)
    colors = [f"C{i % 10}" for i in range(len(runs))]  # one colour per run in every panel
    for i, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, i + 1)
        described = next(run.sets[name] for run in runs if name in run.sets)
        for run, label, color in zip(runs, labels, colors, strict=True):
            points = run.curves.get(name) or []
            if points:
                steps, values = zip(*points, strict=True)
                axes.plot(steps, values, marker="o", markersize=3, label=label, color=color)
            band = run.bands.get(name) or []
            if band:
                steps, low, high = zip(*band, strict=True)
                axes.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
            entry = run.sets.get(name)
            limit = retain_limit(entry) if entry else None
            if limit is not None:
                axes.axhline(limit, color=color, linestyle="--", linewidth=1, label=f"{label}: retain limit")
        set_label = report.set_label(name, described)
        better = "higher" if described.get("higher_is_better") else "lower"
        axes.set_title(f"{set_label} ({described['role']})", fontsize=9)
        axes.set_ylabel(f"{described['metric']} ({better} is better)", fontsize=8)
        _finish(axes)
    if panels > len(names):
        axes = figure.add_subplot(rows, columns, panels)
        for run, label, color in zip(runs, labels, colors, strict=True):
            if run.loss:
                steps, values = zip(*run.loss, strict=True)
                axes.plot(steps, values, label=label, color=color, linewidth=1)
        axes.set_title("training loss", fontsize=9)
        axes.set_ylabel("loss", fontsize=8)
        _finish(axes)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _finish(axes: Any) -> None:
    axes.set_xlabel("optimizer step", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


def cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from qckit.evaluate.runs import read_run

    runs = [read_run(path) for path in args.runs]
    if args.json:
        data = {
            run.name: {"label": label, "path": str(run.path), "sets": run.sets, "curves": run.curves}
            | {"bands": run.bands, "loss": run.loss}
            for run, label in zip(runs, report.run_labels(runs), strict=True)
        }
        console.print_json(json.dumps(data, ensure_ascii=False))
    else:
        console.print(report.compare_report(runs))
    if args.plot:
        if not args.plot.lower().endswith(".png"):
            raise InputError(args.plot, "--plot writes a PNG file: give it a .png name")
        atomic_write_bytes(args.plot, plot_runs(runs))
        if not args.json:
            console.print(report.literal(f"wrote {args.plot}", "dim"))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="the eval sets of finished runs side by side (before/after/change, forgetting), optionally plotted",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help=f"a train output_dir (holds {SUMMARY_NAME})")
    p.add_argument("--plot", metavar="OUT.png", help="draw each set's metric over steps, one line per run")
    p.add_argument("--json", action="store_true", help="print the runs' eval sets and curves as JSON")
    p.set_defaults(func=cmd_compare)
