"""Rich renderables for what qckit reports. Library code returns plain data; the CLI renders it with these.

Each function takes the plain dict a pipeline returned (stats, inspection, summary) and returns a rich
renderable, so reports can also be rendered to a file or a recording console in tests.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from qckit.components import BLANK_LINE
from qckit.host import ComponentInfo, PluginHost
from qckit.kinds import stage_kinds


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


# -- prepare ---------------------------------------------------------------------------------------


def prepare_report(stats: dict[str, Any]) -> RenderableType:
    """The funnel of a prepare run: read → problems → changes → drops → kept → train/val."""
    docs = stats.get("documents", 0)
    funnel = Table(title="Prepare funnel", box=box.SIMPLE_HEAVY, show_edge=False)
    funnel.add_column("stage", no_wrap=True)
    funnel.add_column("documents", justify="right", no_wrap=True)
    funnel.add_column("share", justify="right", no_wrap=True)
    funnel.add_column("detail", overflow="fold")
    examples: list[str] = []  # one place to look per problem, listed under the table
    funnel.add_row(
        "records read", _n(stats.get("records", 0)), "", f"{len(stats.get('inputs', []))} input file(s)"
    )
    for kind, info in stats.get("reader_issues", {}).items():
        funnel.add_row(f"  reader: {kind}", _n(info["count"]), "", "")
        if kind != BLANK_LINE and info["examples"]:
            examples.append(f"{kind}: {info['examples'][0]}")
    funnel.add_row("documents", _n(docs), "100 %", "")
    for name, count in stats.get("normalizers", {}).items():
        if count:
            funnel.add_row(f"  changed by {name}", _n(count), _pct(count, docs), "")
    for name, info in stats.get("filters", {}).items():
        if not info["dropped"]:
            continue
        reasons = ", ".join(f"{r} {c:,}" for r, c in info["reasons"].items())
        funnel.add_row(f"  dropped by {name}", _n(info["dropped"]), _pct(info["dropped"], docs), reasons)
        for reason, where in info["examples"].items():
            if where:
                examples.append(f"{name}/{reason}: {where[0]}")
    funnel.add_row(
        Text("kept", style="bold green"),
        Text(_n(stats.get("kept", 0)), style="bold green"),
        _pct(stats.get("kept", 0), docs),
        "",
    )
    for s in stats.get("sets", []):
        if "train" in s:
            funnel.add_row(
                f"  {s.get('name', 'set')}",
                f"{s['train']:,} / {s['val']:,}",
                "",
                f"{s['bytes'] / 1e6:.2f} MB" if "bytes" in s else "",
            )
    parts: list[RenderableType] = [funnel]
    if examples:
        parts.append(Text("first example of each:\n" + "\n".join(f"  {e}" for e in examples), style="dim"))
    summaries = {k: v for k, v in stats.get("summaries", {}).items() if v}
    if summaries:
        t = Table(box=box.SIMPLE, show_header=False, title="Corpus measures")
        for comp, values in summaries.items():
            for key, value in values.items():
                t.add_row(f"{comp}: {key}", _n(value))
        parts.append(t)
    footer = f"{stats.get('elapsed_s', 0):.2f} s, {stats.get('throughput_mb_s') or 0:.1f} MB/s, {stats.get('workers', 1)} worker(s)"
    outputs = stats.get("outputs", [])
    if outputs:
        footer += "\nwrote " + ", ".join(outputs)
    parts.append(Text(footer, style="dim"))
    return Panel(Group(*parts), title="qckit prepare", border_style="cyan")


# -- train -----------------------------------------------------------------------------------------


def key_values(title: str, data: dict[str, Any], skip: tuple[str, ...] = ()) -> Table:
    """A two-column table of the scalar entries of ``data``."""
    t = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in data.items():
        if key in skip or value is None or isinstance(value, (dict, list)):
            continue
        t.add_row(key.replace("_", " "), _n(value))
    return t


def sources_table(rows: list[dict[str, Any]]) -> Table:
    """One row per training source: size, fertility, and the requested / planned / realized token share."""
    realized = any("realized_share" in row for row in rows)
    t = Table(title="Training sources", box=box.SIMPLE, title_justify="left")
    for column in ("source", "documents", "tokens", "tokens/word", "windows", "requested", "planned"):
        t.add_column(column, justify="left" if column == "source" else "right")
    if realized:
        t.add_column("realized", justify="right")
    for row in rows:
        cells = [
            f"{row['name']} ({row['exhausted']})",
            _n(row["documents"]),
            _n(row["tokens"]),
            f"{row['fertility']:.2f}",
            _n(row["windows"]),
            f"{100 * row['requested_share']:.1f} %",
            f"{100 * row['planned_share']:.1f} %",
        ]
        if realized:
            cells.append(f"{100 * row.get('realized_share', 0.0):.1f} %")
        t.add_row(*cells)
    return t


def inspection_report(data: dict[str, Any]) -> RenderableType:
    """Windows, tokens, fertility, steps and the time estimate, with decoded sample windows."""
    parts: list[RenderableType] = [key_values("Training data", data, skip=("samples",))]
    if data.get("sources"):
        parts.append(sources_table(data["sources"]))
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


def eval_line(title: str, data: dict[str, Any]) -> Text:
    """One line per held-out evaluation, so before/during/after read as a column."""
    step = f" (step {data['step']})" if "step" in data else ""
    line = Text(f"{title}{step}: ", style="bold")
    line.append(f"bits/byte {data.get('bits_per_byte', float('nan')):.4f}", style="bold cyan")
    line.append(
        f"  perplexity {data.get('perplexity', float('nan')):.2f}  loss {data.get('loss', float('nan')):.4f}"
    )
    extra = [f"{_n(data[k])} {k}" for k in ("documents", "tokens") if k in data]
    if "seconds" in data:
        extra.append(f"{data['seconds']:.1f} s")
    if extra:
        line.append("  (" + ", ".join(extra) + ")", style="dim")
    return line


def eval_lines(title: str, measurement: dict[str, dict[str, Any]]) -> RenderableType:
    """One :func:`eval_line` per set of a held-out measurement (``{set name: numbers}``)."""
    return Group(*(eval_line(f"{title} [{name}]", numbers) for name, numbers in measurement.items()))


def train_summary_report(summary: dict[str, Any]) -> RenderableType:
    """Before/after held-out perplexity and bits-per-byte of each set, plus throughput."""
    parts: list[RenderableType] = []
    before, after = summary.get("eval_before") or {}, summary.get("eval_after") or {}
    if before or after:
        t = Table(title="Held-out evaluation", box=box.SIMPLE_HEAVY)
        t.add_column("set")
        t.add_column("metric")
        t.add_column("before", justify="right")
        t.add_column("after", justify="right")
        t.add_column("change", justify="right")
        for name in dict.fromkeys([*before, *after]):
            for key in ("bits_per_byte", "perplexity", "loss"):
                b, a = (before.get(name) or {}).get(key), (after.get(name) or {}).get(key)
                if b is None and a is None:
                    continue
                change: str | Text = ""
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                    delta = (a - b) / b * 100
                    change = Text(f"{delta:+.1f} %", style="green" if delta < 0 else "red")
                t.add_row(
                    name,
                    key.replace("_", " "),
                    _n(b) if b is not None else "–",
                    _n(a) if a is not None else "–",
                    change,
                )
        parts.append(t)
    if summary.get("sources"):
        parts.append(sources_table(summary["sources"]))
    parts.append(key_values("Run", summary))
    return Panel(Group(*parts), title="qckit train: summary", border_style="green")


# -- plugins and recipes -----------------------------------------------------------------------------


def plugins_report(host: PluginHost) -> RenderableType:
    t = Table(title="Loaded plugins", box=box.SIMPLE_HEAVY)
    t.add_column("plugin")
    t.add_column("distribution")
    t.add_column("module", overflow="fold")
    t.add_column("components", overflow="fold")
    by_plugin: dict[str, list[str]] = {}
    for kind, comps in host.registry.items():
        for name, info in comps.items():
            by_plugin.setdefault(info.plugin.name, []).append(f"{kind}:{name}")
    for name, plugin in sorted(host.plugins.items()):
        dist = f"{plugin.distribution} {plugin.version}" if plugin.distribution else "–"
        t.add_row(name, dist, plugin.module, ", ".join(sorted(by_plugin.get(name, []))))
    parts: list[RenderableType] = [t]
    for name, failed in sorted(host.failed.items()):
        parts.append(
            Text(
                f"failed to load: {name} ({failed.module}, {failed.distribution or '?'}): {failed.error}",
                style="red",
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
        t.add_row(p.name, str(annotation), default)
    head = Text(
        f"{info.kind} {info.name!r} — {info.owner} ({info.cls.__module__}.{info.cls.__qualname__})",
        style="bold",
    )
    return Group(head, Text(info.doc or "(no docstring)"), t)


def plan_report(recipe: Any) -> RenderableType:
    """The resolved plan of a recipe (``qckit run --check``)."""
    from qckit.recipe import resolved_component

    parts: list[RenderableType] = [Text(f"recipe {recipe.source}: valid", style="bold green")]
    for stage_name in ("prepare", "train"):
        plan = getattr(recipe, stage_name)
        if plan is None:
            continue
        t = Table(title=stage_name, box=box.SIMPLE, title_justify="left")
        t.add_column("step")
        t.add_column("component")
        t.add_column("settings", overflow="fold")
        t.add_column("from", overflow="fold")
        for kind in stage_kinds(stage_name):
            key = kind.key
            specs = getattr(plan, key, None)
            if specs is None:
                continue
            for spec in specs if isinstance(specs, list) else [specs]:
                resolved = {k: v for k, v in resolved_component(spec).items() if k != "use"}
                settings = ", ".join(f"{k}={v!r}" for k, v in resolved.items())
                plugin = spec.info.plugin
                t.add_row(key, spec.name, settings, f"{plugin.name} ({plugin.distribution or '?'})")
        parts.append(key_values(f"[{stage_name}] settings", _settings_dict(plan.settings)))
        parts.append(t)
    return Group(*parts)


def _settings_dict(settings: Any) -> dict[str, Any]:
    import dataclasses

    return {
        k: (", ".join(map(str, v)) if isinstance(v, list) else v)
        for k, v in dataclasses.asdict(settings).items()
        if v is not None
    }
