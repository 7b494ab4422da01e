"""Rich renderables for what qckit reports. Library code returns plain data; the CLI renders it with these.

Each function takes the plain dict a pipeline returned (stats, inspection, summary) and returns a rich
renderable, so reports can also be rendered to a file or a recording console in tests.

Reports stay readable at 80 columns: a header or a name is never cut (columns are at least as wide as
their longest word, and wrap between words: :func:`_whole_words`), a number is never split, a value too
long for its column goes on its own line (:class:`KeyValues`), and a one-line eval report wraps only
between its parts (:class:`BreakableLine`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from qckit.components import BLANK_LINE
from qckit.host import ComponentInfo, PluginHost
from qckit.kinds import STAGES, stage_kinds

# Bidirectional overrides and isolates reorder what a terminal shows; like control characters, they are escaped.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: object, *, one_line: bool = False) -> str:
    """``text`` with control and bidi-override characters escaped (``\\x1b``, ``\\u202e``), so that a file
    name or a message can never drive the terminal; with ``one_line``, line breaks become spaces."""
    out = []
    for ch in str(text):
        if ch in "\n\r" and one_line:
            out.append(" ")
        elif ch == "\t" or (ch == "\n" and not one_line):
            out.append(ch)
        elif ch < " " or "\x7f" <= ch < "\xa0":
            out.append(f"\\x{ord(ch):02x}")
        elif ch in _BIDI or "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def literal(text: object, style: str = "", *, one_line: bool = False) -> Text:
    """User-supplied text as a rich ``Text``: shown exactly as written, never read as markup or emoji codes."""
    return Text(printable(text, one_line=one_line), style=style)


def message_line(label: str, label_style: str, message: object) -> Text:
    """``error: <message>`` / ``warning: <message>`` on one line, the message printed literally."""
    return Text.assemble((f"{label}: ", label_style), literal(message, one_line=True))


def _row(table: Table, *cells: RenderableType) -> None:
    """Add a row whose plain-string cells are shown literally (names, paths and values come from users)."""
    table.add_row(*(literal(c) if isinstance(c, str) else c for c in cells))


def _n(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 0.01 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def _count(value: Any) -> str:
    """A count in at most 7 characters: ``123,456``, ``98.8 M``, ``1.23 B`` (exact numbers are in the JSON)."""
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) < 1_000_000:
        return _n(value)
    if abs(value) < 1_000_000_000:
        return f"{value / 1e6:.1f} M"
    return f"{value / 1e9:.2f} B"


def _whole_words(table: Table, *, cap: int = 0) -> Table:
    """Make every column at least as wide as the longest word of its header and cells (a whole cell for a
    ``no_wrap`` column, a part for a :class:`BreakableLine`), so that narrow consoles wrap between words
    and never cut one; with ``cap``, a column asks for at most that much (a longer word is then folded, never
    cut with an ellipsis)."""
    for column in table.columns:
        parts: list[str] = []
        for cell in [column.header, *column.cells]:
            text = cell.plain if isinstance(cell, (Text, BreakableLine)) else str(cell)
            if column.no_wrap:
                parts.append(text)
            elif isinstance(cell, BreakableLine):
                parts.extend(cell.parts())
            else:
                parts.extend(text.split())
        widest = max((cell_len(p) for line in parts for p in line.splitlines()), default=0)
        if cap and widest > cap:
            widest, column.overflow = cap, "fold"
        column.min_width = max(column.min_width or 0, widest)
    return table


class BreakableLine:
    """A one-line report that, when it does not fit, wraps only between its parts (where
    :meth:`mark_break` was called), continuation lines indented by ``indent``: a label stays with its
    number, a limit stays whole."""

    def __init__(self, style: str = "", indent: int = 0) -> None:
        self.text = Text(style=style)
        self.breaks: list[int] = []
        self.indent = indent

    @property
    def plain(self) -> str:
        return self.text.plain

    @property
    def style(self) -> Any:
        return self.text.style

    def parts(self) -> list[str]:
        """The parts between the breaks, without their surrounding spaces."""
        return [part.plain.strip() for part in self.text.divide(self.breaks)]

    def append(self, text: str | Text, style: str = "") -> None:
        if isinstance(text, Text):
            self.text.append_text(text)
        else:
            self.text.append(text, style=style)

    def mark_break(self) -> None:
        """Allow a line break at the current end of the text."""
        self.breaks.append(len(self.text.plain))

    def lines(self, console: Console, width: int) -> list[Text]:
        """The line wrapped to ``width``: whole when it fits, else packed part by part."""
        if cell_len(self.plain) <= width or not self.breaks:
            return list(self.text.wrap(console, width))
        packed: list[Text] = []
        line = Text()
        for part in self.text.divide(self.breaks):
            if line.plain.strip() and cell_len(line.plain.rstrip()) + cell_len(part.plain.rstrip()) > width:
                line.rstrip()
                packed.append(line)
                line = Text(" " * self.indent)
                part = part[len(part.plain) - len(part.plain.lstrip(" ")) :]
            line.append_text(part)
        line.rstrip()
        packed.append(line)
        # a part longer than the whole width still wraps between its words
        return [wrapped for text in packed for wrapped in text.wrap(console, width)]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from Text("\n").join(self.lines(console, options.max_width)).render(console, end="\n")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest = max((cell_len(p) for p in self.parts()), default=0)
        return Measurement(widest, cell_len(self.plain)).clamp(max_width=options.max_width)


class KeyValues:
    """A titled two-column table of keys and values that never splits a value it could show whole: a
    value too long for the value column at the console's width goes on its own line under its key."""

    def __init__(self, title: str, rows: list[tuple[str, str]]) -> None:
        self.title, self.rows = title, rows
        self.key_width = min(max((cell_len(k) for k, _ in rows), default=0), 28)

    def _table(self, rows: list[tuple[str, str]]) -> Table:
        t = Table(box=None, show_header=False, pad_edge=True)
        t.add_column(style="bold", width=self.key_width)
        t.add_column(overflow="fold")
        for key, value in rows:
            _row(t, key, value)
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        room = options.max_width - self.key_width - 6  # the table's padding and edges
        yield Text(self.title, style="table.title")
        fitting: list[tuple[str, str]] = []
        for key, value in self.rows:
            if cell_len(value) <= room:
                fitting.append((key, value))
                continue
            if fitting:
                yield self._table(fitting)
                fitting = []
            yield Padding(literal(key, "bold"), (0, 0, 0, 2))
            yield Padding(Text(printable(value), overflow="fold"), (0, 0, 0, 4))
        if fitting:
            yield self._table(fitting)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest = max((cell_len(v) for _, v in self.rows), default=0)
        return Measurement(self.key_width + 8, min(options.max_width, self.key_width + widest + 6))


# -- prepare ---------------------------------------------------------------------------------------


def prepare_report(stats: dict[str, Any]) -> RenderableType:
    """The funnel of a prepare run: read → problems → changes → drops → kept → train/val."""
    docs = stats.get("documents", 0)
    funnel = Table(title="Prepare funnel", box=box.SIMPLE_HEAVY, show_edge=False)
    # On a narrow console the stage names wrap between words; counts and shares are never cut.
    funnel.add_column("stage", min_width=12)  # min_width set from the labels below
    funnel.add_column("documents", justify="right", no_wrap=True, min_width=9)
    funnel.add_column("share", justify="right", no_wrap=True, min_width=6)
    funnel.add_column("detail", overflow="fold")
    examples: list[str] = []  # one place to look per problem, listed under the table
    _row(
        funnel,
        "records read",
        _n(stats.get("records", 0)),
        "",
        f"{len(stats.get('inputs', []))} input file(s)",
    )
    for kind, info in stats.get("reader_issues", {}).items():
        _row(funnel, f"  reader: {kind}", _n(info["count"]), "", "")
        if kind != BLANK_LINE and info["examples"]:
            examples.append(f"{kind}: {info['examples'][0]}")
    _row(funnel, "documents", _n(docs), "100 %", "")
    for name, count in stats.get("normalizers", {}).items():
        if count:
            _row(funnel, f"  changed by {name}", _n(count), _pct(count, docs), "")
    for name, info in stats.get("filters", {}).items():
        if not info["dropped"]:
            continue
        reasons = ", ".join(f"{r} {c:,}" for r, c in info["reasons"].items())
        _row(funnel, f"  dropped by {name}", _n(info["dropped"]), _pct(info["dropped"], docs), reasons)
        for reason, where in info["examples"].items():
            if where:
                examples.append(f"{name}/{reason}: {where[0]}")
    _row(
        funnel,
        Text("kept", style="bold green"),
        Text(_n(stats.get("kept", 0)), style="bold green"),
        _pct(stats.get("kept", 0), docs),
        "",
    )
    for s in stats.get("sets", []):
        if "train" in s:
            detail = f"{s['bytes'] / 1e6:.2f} MB" if "bytes" in s else ""
            if s.get("clustered"):  # near-duplicates kept on their cluster's side (duplicates = "tag")
                detail += f"{', ' if detail else ''}{s['clustered']:,} near-duplicates beside their first"
            _row(funnel, f"  {s.get('name', 'set')}", f"{s['train']:,} / {s['val']:,}", "", detail)
    # a stage label ("changed by control_chars") stays on one line up to 32 columns, then wraps between
    # words; counts and shares are never cut
    labels = [Text(str(c)).plain if not isinstance(c, Text) else c.plain for c in funnel.columns[0].cells]
    funnel.columns[0].min_width = max([12, *(min(cell_len(label), 32) for label in labels)])
    _whole_words(funnel)
    parts: list[RenderableType] = [funnel]
    if examples:
        parts.append(Text("first example of each:\n" + "\n".join(f"  {e}" for e in examples), style="dim"))
    summaries = {k: v for k, v in stats.get("summaries", {}).items() if v}
    if summaries:
        t = Table(box=box.SIMPLE, show_header=False, title="Corpus measures")
        for comp, values in summaries.items():
            for key, value in values.items():
                _row(t, f"{comp}: {key}", _n(value))
        parts.append(t)
    footer = f"{stats.get('elapsed_s', 0):.2f} s, {stats.get('throughput_mb_s') or 0:.1f} MB/s, {stats.get('workers', 1)} worker(s)"
    executor = stats.get("executor") or {}
    if "shards" in executor:
        footer += f", {executor.get('use')}: {executor['shards']:,} shard(s)"
        if executor.get("resumed"):
            footer += f", {executor['resumed']:,} resumed"
        if executor.get("task_mb_s"):
            footer += f", {executor['task_mb_s']:.1f} MB/s per task"
    outputs = stats.get("outputs", [])
    if outputs:
        footer += "\nwrote " + ", ".join(outputs)
    parts.append(Text(footer, style="dim"))
    return Panel(Group(*parts), title="qckit prepare", border_style="cyan")


# -- train -----------------------------------------------------------------------------------------


def key_values(title: str, data: dict[str, Any], skip: tuple[str, ...] = ()) -> KeyValues:
    """A two-column table of the scalar entries of ``data`` (a path too long for its column on a line of
    its own, never split at the column's edge)."""
    rows = [
        (key.replace("_", " "), _n(value))
        for key, value in data.items()
        if key not in skip and value is not None and not isinstance(value, (dict, list))
    ]
    return KeyValues(title, rows)


def sources_table(rows: list[dict[str, Any]]) -> Table:
    """One row per training source: size, fertility, and the requested / planned / realized token share
    (and the decay phase's requested / planned share, when it has its own mix)."""
    realized = any("realized_share" in row for row in rows)
    decay = any("decay_planned_share" in row for row in rows)
    # short headers that wrap between words, so that 80 columns hold the table with names of ~15 letters
    t = Table(
        title="Training sources (token shares in %)",
        box=box.SIMPLE,
        title_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("source", no_wrap=True)  # the name, and under it what happens when it runs out
    headers = ["docs", "tokens", "tok per word", "windows", "requested", "planned"]
    headers += ["decay requested", "decay planned"] if decay else []
    for column in [*headers, *(["realized"] if realized else [])]:
        t.add_column(column, justify="right", no_wrap=" " not in column)
    for row in rows:
        cells: list[RenderableType] = [
            Text.assemble(literal(row["name"]), "\n", (f"({row['exhausted']})", "dim")),
            _count(row["documents"]),
            _count(row["tokens"]),
            f"{row['fertility']:.2f}",
            _count(row["windows"]),
            f"{100 * row['requested_share']:.1f}",
            f"{100 * row['planned_share']:.1f}",
        ]
        if decay:
            cells.append(f"{100 * row.get('decay_share', 0.0):.1f}")
            cells.append(f"{100 * row.get('decay_planned_share', 0.0):.1f}")
        if realized:
            cells.append(f"{100 * row.get('realized_share', 0.0):.1f}")
        _row(t, *cells)
    return _whole_words(t, cap=20)


def inspection_report(data: dict[str, Any]) -> RenderableType:
    """Windows, tokens, fertility, steps and the time estimate, with decoded sample windows."""
    parts: list[RenderableType] = [key_values("Training data", data, skip=("samples",))]
    if data.get("sources"):
        parts.append(sources_table(data["sources"]))
    if data.get("vocabulary"):
        parts.append(vocabulary_table(data["vocabulary"]))
    for i, sample in enumerate(data.get("samples", [])):
        text = sample if isinstance(sample, str) else str(sample)
        parts.append(
            Panel(
                Text(text[:600] + (" …" if len(text) > 600 else "")),
                title=f"window {i}",
                box=box.ROUNDED,
                border_style="dim",
            )
        )
    return Panel(Group(*parts), title="qckit train: inspection", border_style="cyan")


def vocabulary_table(data: dict[str, Any]) -> Table:
    """Tokens added by ``train.add_tokens`` and the training corpus's fertility before and after."""
    added = data.get("words_added", 0)
    steps = data.get("intermediate_tokens", 0)
    title = (
        f"Vocabulary: {_n(data.get('old_vocab_size'))} → {_n(data.get('new_vocab_size'))} tokens "
        f"({_n(added)} words, {_n(steps)} intermediate merge steps"
        + (f", {_n(len(data['skipped']))} already single tokens" if data.get("skipped") else "")
        + ")"
    )
    t = Table(title=title, box=box.SIMPLE, title_justify="left")
    for column in ("training corpus", "tokens/word", "bytes/token"):
        t.add_column(column, justify="left" if column == "training corpus" else "right")
    fertility = data.get("fertility") or {}
    for when in ("before", "after"):
        numbers = fertility.get(when)
        if numbers:
            _row(t, when, f"{numbers['tokens_per_word']:.3f}", f"{numbers['bytes_per_token']:.3f}")
    return t


#: short labels of the numbers one-line eval reports show
_LABELS = {
    "bits_per_byte": "bits/byte",
    "perplexity": "ppl",
    "accuracy": "acc",
    "accuracy_norm": "norm",
    "accuracy_bytes": "bytes-norm",
    "macro_f1": "F1",
}
#: the numbers shown after the metric when a set has them, then the counts
_SECONDARY = ("perplexity", "macro_f1")
_COUNTS = (("documents", "docs"), ("pairs", "pairs"), ("items", "items"), ("bad_rows", "bad rows"))


def _value(value: Any, key: str = "") -> str:
    """A metric value: accuracies and F1 with 3 decimals, perplexities with 1-2, the rest with 4."""
    if not isinstance(value, float):
        return _n(value)
    if key.startswith("accuracy") or key.endswith("f1"):
        return f"{value:.3f}"
    if key.endswith("perplexity"):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{value:.4f}" if abs(value) < 1000 else _n(value)


def set_label(name: str, numbers: dict[str, Any]) -> str:
    """``val [bpb/document]``: a set's name with its kind and protocol, as every report names it."""
    kind = numbers.get("kind") or ""
    protocol = numbers.get("protocol") or ""
    tag = "/".join(p for p in (kind, protocol) if p)
    return f"{name} [{tag}]" if tag else name


def eval_line(title: str, data: dict[str, Any], name: str = "", *, seconds: bool = True) -> BreakableLine:
    """One line per eval set and measurement, so before/during/after read as a column.

    ``data`` is a set's numbers (``metric`` names the headline one; bits per byte when absent); names
    and titles are printed literally. Without ``seconds`` a line fits 80 columns for set names of up to
    about 20 characters.
    """
    metric = data.get("metric") or "bits_per_byte"
    step = f" (step {data['step']})" if "step" in data else ""
    head = " ".join(part for part in (title, set_label(name, data) if name else "") if part)
    line = BreakableLine(
        indent=4
    )  # too long for the console: it wraps between these parts, never in a number
    line.append(literal(f"{head}{step}: ", "bold", one_line=True))
    line.mark_break()
    value = data.get(metric)
    line.append(
        f"{_LABELS.get(metric, metric)} {_value(value, metric) if value is not None else '–'}",
        style="bold cyan",
    )
    ci = data.get(f"{metric}_ci95")
    if isinstance(ci, list) and len(ci) == 2:
        line.append(f" [{ci[0]:.2f}-{ci[1]:.2f}]", style="cyan")
    for key in _SECONDARY:
        if key != metric and isinstance(data.get(key), (int, float)):
            line.mark_break()
            line.append(f"  {_LABELS.get(key, key)} {_value(data[key], key)}")
    extra = [
        f"{_n(data[k])} {label}"
        for k, label in _COUNTS
        if isinstance(data.get(k), int) and (k != "bad_rows" or data[k])
    ]
    if seconds and isinstance(data.get("seconds"), (int, float)):
        extra.append(f"{data['seconds']:.1f} s")
    if extra:
        line.mark_break()
        line.append("  (" + ", ".join(extra) + ")", style="dim")
    return line


def eval_lines(title: str, measurement: dict[str, dict[str, Any]]) -> RenderableType:
    """One :func:`eval_line` per set of a measurement (``{set name: numbers}``)."""
    return Group(*(eval_line(title, numbers, name) for name, numbers in measurement.items()))


def signed_change(value: Any, unit: str | None) -> str:
    """A change or gain in its set's unit: ``+3.2 %`` (relative) or ``+1.5 pts`` (points); ``–`` for none."""
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value * 100:+.1f} %" if unit == "relative" else f"{value * 100:+.1f} pts"


def _change(entry: dict[str, Any]) -> str:
    return signed_change(entry.get("change"), entry.get("regression_unit"))


def change_with_interval(entry: dict[str, Any], gain: bool = False) -> str:
    """A set's change (``gain``: its gain, positive = better) with its 95 % interval when it has one:
    ``+3.2 % [+1.0, +5.1]``."""
    unit = entry.get("regression_unit")
    sign = -1.0 if gain and not entry.get("higher_is_better") else 1.0
    value = entry.get("change")
    text = signed_change(None if value is None else sign * value, unit)
    interval = entry.get("change_ci95")
    if interval:
        low, high = sorted(sign * v for v in interval)
        text += f" [{low * 100:+.1f}, {high * 100:+.1f}]"
    return text


def _metric_label(entry: dict[str, Any]) -> str:
    """``bpb/document``, ``acc``, ``F1``: a set's headline metric with its protocol, short for tables."""
    metric = "bpb" if entry["metric"] == "bits_per_byte" else _LABELS.get(entry["metric"], entry["metric"])
    return f"{metric}/{entry['protocol']}" if entry.get("protocol") else metric


def _set_cells(entry: dict[str, Any]) -> tuple[Text, BreakableLine]:
    """``(change, check)`` of an eval set's outcome: a target set's gain, a retain set's check (a breach in
    red, with the regression it allows)."""
    gain = entry.get("gain")
    style = "" if gain is None else ("green" if gain > 0 else "yellow" if gain < 0 else "")
    if entry["role"] == "retain":
        allowed = entry.get("max_regression")
        unit = " %" if entry.get("regression_unit") == "relative" else " pts"
        limit = f"{allowed * 100:g}{unit}" if allowed is not None else ""
        # "retained (≤2 %)": on a narrow console the limit goes under the word, never split itself
        check = BreakableLine(style="bold red" if entry.get("breach") else "green")
        check.append("BREACH" if entry.get("breach") else "retained" if gain is not None else "retain")
        if gain is not None and limit:
            check.mark_break()
            check.append(f" ({'>' if entry.get('breach') else '≤'}{limit})")
    else:
        check = BreakableLine(style=style)
        check.append("" if gain is None else ("gain" if gain > 0 else "no gain"))
    change = Text(_change(entry), style="bold red" if entry.get("breach") else style)
    return change, check


def _before_after(entry: dict[str, Any]) -> tuple[str, str]:
    return tuple(  # type: ignore[return-value]
        _value(entry[side], entry["metric"]) if entry.get(side) is not None else "–"
        for side in ("before", "after")
    )


def completions_table(rows: list[dict[str, str]], columns: list[str], title: str = "Completions") -> Table:
    """One row per prompt, one column per model (``qckit generate``: ``base``, ``trained``) or the one
    completion of a training sample; the text is shown exactly as generated, wrapped between words."""
    t = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left", show_lines=True)
    t.add_column("prompt", ratio=1, overflow="fold")
    for column in columns:
        t.add_column(column, ratio=2, overflow="fold")
    for row in rows:
        _row(t, row["prompt"], *(row[c] for c in columns))
    return t


def selection_report(selection: dict[str, Any]) -> RenderableType:
    """``qckit select``: every point (checkpoint × strength) with its target gain and retain changes, the
    frontier marked, the chosen point, and what the selection cost."""
    points = selection["points"]
    frontier = set(selection.get("frontier", []))
    chosen = selection.get("chosen") or {}
    retain = [n for n, e in (points[0]["sets"] if points else {}).items() if e.get("role") == "retain"]
    t = Table(title="Adapter strength × checkpoint", box=box.SIMPLE_HEAVY, title_justify="left")
    t.add_column("checkpoint", no_wrap=True)
    t.add_column("λ", justify="right", no_wrap=True)
    t.add_column(f"gain {points[0]['target']}" if points else "gain", justify="right", no_wrap=True)
    for name in retain:
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("", no_wrap=True)
    for i, point in enumerate(points):
        target = point["sets"][point["target"]]
        cells: list[RenderableType] = [
            point["checkpoint"],
            f"{point['strength']:g}",
            change_with_interval(target, gain=True),
        ]
        for name in retain:
            entry = point["sets"][name]
            cells.append(Text(change_with_interval(entry), style="bold red" if entry.get("breach") else ""))
        is_chosen = (point["checkpoint"], point["strength"]) == (
            chosen.get("checkpoint"),
            chosen.get("strength"),
        )
        cells.append(
            Text(
                "chosen" if is_chosen else ("frontier" if i in frontier else ""),
                style="bold green" if is_chosen else "dim",
            )
        )
        _row(t, *cells)
    parts: list[RenderableType] = [t]
    if chosen:
        parts.append(literal(f"chosen: {chosen['checkpoint']} at strength {chosen['strength']:g}", "bold"))
    else:
        parts.append(
            literal("no point keeps every retain set within its threshold: nothing chosen", "bold red")
        )
    cost = f"{selection['evaluations']} evaluation(s) run, {selection['cached_evaluations']} from the cache, {selection['seconds']:.1f} s"
    parts.append(literal(cost, "dim"))
    return Group(*parts)


def samples_report(entry: dict[str, Any]) -> Table:
    """The sample completions a run takes at an evaluation (:class:`qckit.train.samples.SampleLog`)."""
    rows = [{"prompt": row["prompt"], "completion": row["text"]} for row in entry["completions"]]
    title = f"Sample completions, step {entry['step']} ({entry['when']} training)"
    return completions_table(rows, ["completion"], title=title)


def eval_set_cells(entry: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """``(metric, before, after, change, check)`` of an eval set's outcome as plain text (the model card's
    row; the tables below show the same cells with colour)."""
    change, check = _set_cells(entry)
    before, after = _before_after(entry)
    return _metric_label(entry), before, after, change.plain, check.plain


def eval_sets_table(outcomes: dict[str, dict[str, Any]], title: str = "Eval sets") -> Table:
    """Every eval set before / after / change, target sets' gain and retain sets' check (a breach in red).

    ``outcomes`` is :func:`qckit.evaluate.sets.outcome`'s result (``training_summary.json``'s
    ``eval_sets``). Fits 80 columns for set names of up to about 22 characters (longer ones fold).
    """
    t = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left", pad_edge=False, collapse_padding=True)
    t.add_column("set", no_wrap=True)
    t.add_column("metric", no_wrap=True)
    t.add_column("before", justify="right", no_wrap=True)
    t.add_column("after", justify="right", no_wrap=True)
    t.add_column("change", justify="right", no_wrap=True)
    t.add_column("check")
    for name, entry in outcomes.items():
        change, check = _set_cells(entry)
        _row(t, name, _metric_label(entry), *_before_after(entry), change, check)
    return _whole_words(t, cap=22)


def compare_report(runs: list[Any]) -> RenderableType:
    """``qckit compare``: one table of the runs' eval sets (a row naming each set, then one row per run),
    the runs' directories, then the runs that breached a retain set. ``runs`` are
    :class:`qckit.evaluate.runs.Run` objects; they are named by :func:`run_labels`."""
    t = Table(
        title="Eval sets by run",
        box=box.SIMPLE_HEAVY,
        title_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("set / run", no_wrap=True)
    t.add_column("metric", no_wrap=True)
    for column in ("before", "after", "change"):
        t.add_column(column, justify="right", no_wrap=True)
    t.add_column("check")
    labels = run_labels(runs)
    names = list(dict.fromkeys(name for run in runs for name in run.sets))
    for name in names:
        t.add_row(literal(name, "bold"))
        for run, label in zip(runs, labels, strict=True):
            entry = run.sets.get(name)
            if entry is not None:
                change, check = _set_cells(entry)
                _row(t, f"  {label}", _metric_label(entry), *_before_after(entry), change, check)
    parts: list[RenderableType] = [_whole_words(t, cap=24)]
    legend = Table(box=None, show_header=False, pad_edge=False, title="runs", title_justify="left")
    legend.add_column(style="bold", no_wrap=True)
    legend.add_column(overflow="fold")
    for run, label in zip(runs, labels, strict=True):
        _row(legend, label, str(run.path))
    parts.append(legend)
    for run, label in zip(runs, labels, strict=True):
        if run.breaches:
            parts.append(
                Text.assemble(
                    ("forgot: ", "bold red"), literal(f"{label}: {', '.join(run.breaches)}", one_line=True)
                )
            )
    return Group(*parts)


def run_labels(runs: list[Any]) -> list[str]:
    """Short names for runs (:class:`qckit.evaluate.runs.Run`): their recipes' names, else their
    directories' names (the parent's for a directory called ``model``, as recipes name them), else the
    parts of the paths that tell them apart; a run given twice is numbered (``a``, ``a (2)``)."""
    names = [run.recipe_name or _dir_name(run.path) for run in runs]
    if len(set(names)) < len(names):
        names = _distinct_parts([run.path for run in runs]) or names
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return labels


def _dir_name(path: Any) -> str:
    absolute = Path(os.path.abspath(path))
    if absolute.name == "model" and absolute.parent.name:
        return absolute.parent.name
    return absolute.name or str(path)


def _distinct_parts(paths: list[Any]) -> list[str]:
    """The shortest ends of the run directories' paths that tell them apart, after the parts they all end
    with (``/x/a/model``, ``runs/b/model`` → ``a``, ``b``); ``[]`` when nothing does (one directory twice)."""
    parts = [Path(os.path.abspath(p)).parts[1:] for p in paths]  # absolute: no root part to join
    while all(len(p) > 1 for p in parts) and len({p[-1] for p in parts}) == 1:
        parts = [p[:-1] for p in parts]
    for n in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return []


def train_summary_report(summary: dict[str, Any]) -> RenderableType:
    """Every eval set before/after (one table: target gains, retain checks with breaches in red), the
    training sources and the run's numbers."""
    parts: list[RenderableType] = []
    if summary.get("eval_sets"):
        parts.append(eval_sets_table(summary["eval_sets"], title="Held-out evaluation"))
    if summary.get("sources"):
        parts.append(sources_table(summary["sources"]))
    if summary.get("vocabulary"):
        parts.append(vocabulary_table(summary["vocabulary"]))
    parts.append(key_values("Run", summary))
    return Panel(Group(*parts), title="qckit train: summary", border_style="green")


# -- plugins and recipes -----------------------------------------------------------------------------


def plugins_report(host: PluginHost) -> RenderableType:
    """Loaded plugins: where each comes from (distribution, module) and its components by kind.

    Names are never broken in the middle: the origin column is as wide as its longest entry and the
    component lists wrap between names.
    """
    t = Table(title="Loaded plugins", box=box.SIMPLE_HEAVY, title_justify="left", show_lines=True)
    origins = {
        name: [name, f"{p.distribution} {p.version}" if p.distribution else "(not a distribution)", p.module]
        for name, p in host.plugins.items()
    }
    width = max((len(line) for lines in origins.values() for line in lines), default=6)
    t.add_column("plugin", min_width=width, no_wrap=True, overflow="ellipsis")
    t.add_column("components by kind", overflow="ellipsis")
    by_plugin: dict[str, dict[str, list[str]]] = {}
    for kind, comps in host.registry.items():
        for name, info in comps.items():
            by_plugin.setdefault(info.plugin.name, {}).setdefault(kind, []).append(name)
    for name in sorted(host.plugins):
        origin = Text.assemble(
            literal(origins[name][0], "bold"),
            "\n",
            literal(origins[name][1], "dim"),
            "\n",
            literal(origins[name][2], "dim"),
        )
        kinds = by_plugin.get(name, {})
        listing = Text()
        for n, (kind, names) in enumerate(sorted(kinds.items())):
            if n:
                listing.append("\n")
            listing.append(f"{kind}: ", style="cyan")
            listing.append_text(literal(", ".join(sorted(names))))
        t.add_row(origin, listing if kinds else Text("(none)", style="dim"))
    parts: list[RenderableType] = [t]
    for name, failed in sorted(host.failed.items()):
        parts.append(
            literal(
                f"failed to load: {name} ({failed.module}, {failed.distribution or '?'}): {failed.error}",
                "red",
            )
        )
    return Group(*parts)


def component_report(info: ComponentInfo) -> RenderableType:
    t = Table(box=box.SIMPLE, title="parameters", title_justify="left")
    t.add_column("name")
    t.add_column("type")
    t.add_column("default")
    for p in info.parameters():
        annotation = (
            p.annotation
            if isinstance(p.annotation, str)
            else getattr(p.annotation, "__name__", str(p.annotation))
        )
        default = "required" if p.default is p.empty else repr(p.default)
        _row(t, p.name, str(annotation), default)
    head = Text(
        f"{info.kind} {info.name!r} — {info.owner} ({info.cls.__module__}.{info.cls.__qualname__})",
        style="bold",
    )
    return Group(head, Text(info.doc or "(no docstring)"), t)


def plan_report(recipe: Any) -> RenderableType:
    """The resolved plan of a recipe (``qckit run --check``)."""
    from qckit.recipe import resolved_component

    parts: list[RenderableType] = [Text(f"recipe {recipe.source}: valid", style="bold green")]
    for stage_name in STAGES:
        plan = getattr(recipe, stage_name)
        if plan is None:
            continue
        t = Table(
            title=stage_name, box=box.SIMPLE, title_justify="left", pad_edge=False, collapse_padding=True
        )
        t.add_column("step", no_wrap=True)
        t.add_column("component", no_wrap=True)
        t.add_column("settings", overflow="fold")
        t.add_column("from", overflow="fold")
        for kind in stage_kinds(stage_name):
            key = kind.key
            specs = getattr(plan, key, None)
            if specs is None:
                continue
            for spec in specs if isinstance(specs, list) else [specs]:
                resolved = {k: v for k, v in resolved_component(spec).items() if k != kind.selector}
                settings = ", ".join(f"{k}={v!r}" for k, v in resolved.items())
                plugin = spec.info.plugin
                _row(t, key, spec.name, settings, f"{plugin.name} ({plugin.distribution or '?'})")
        parts.append(key_values(f"[{stage_name}] settings", _settings_dict(plan.settings)))
        parts.append(_whole_words(t, cap=30))  # a setting (key=value) or a name never split at 80 columns
    return Group(*parts)


def _settings_dict(settings: Any) -> dict[str, Any]:
    import dataclasses

    return {
        k: (", ".join(map(str, v)) if isinstance(v, list) else v)
        for k, v in dataclasses.asdict(settings).items()
        if v is not None
    }
