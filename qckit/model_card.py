"""The model card of a trained run: ``README.md`` beside the weights, written from ``training_summary.json``.

It says what a person deciding to use the model needs, in the Hugging Face model-card layout (YAML
metadata, then Markdown): the base model as a reference others can resolve, the training data and its
shares, the recipe, the precision, every eval set before and after with the retain verdict, and how to
load the model (peft, transformers after a merge, GGUF for llama.cpp and Ollama). The licence is left for
the user: it depends on the base model's licence and on the corpus, which qckit cannot know.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qckit import report
from qckit.outputs import RECIPE_NAME

__all__ = ["model_card", "ollama_modelfile"]


def _cell(value: Any) -> str:
    """A Markdown table cell: user text with its pipes escaped, on one line."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _is_hub_id(reference: str) -> bool:
    return not reference.startswith(("pkg:", "/", ".", "~")) and reference.count("/") == 1


def _front_matter(summary: dict[str, Any], is_peft: bool) -> list[str]:
    reference = str(summary.get("model", ""))
    lines = ["---"]
    if _is_hub_id(reference):  # the Hub links a card to its base only by hub id
        lines.append(f"base_model: {reference}")
    lines += [
        f"library_name: {'peft' if is_peft else 'transformers'}",
        "pipeline_tag: text-generation",
        "language:",
        "- fr",
        "tags:",
        "- qckit",
        "- continued-pretraining",
        "- quebec-french",
        *(f"- {_cell(name)}" for name in summary.get("adapters") or []),
        "# license: set it yourself: the base model's licence and your corpus's terms decide it",
        "---",
    ]
    return lines


def _verdict(summary: dict[str, Any]) -> str:
    sets = summary.get("eval_sets") or {}
    retain = [name for name, entry in sets.items() if entry.get("role") == "retain"]
    breaches = summary.get("retain_breaches") or []
    if breaches:
        return f"**Forgetting:** {', '.join(breaches)} regressed more than its threshold allows."
    if retain and all(sets[name].get("after") is not None for name in retain):
        return f"Every retain set ({', '.join(retain)}) stayed within its threshold."
    return "No retain set was measured before and after training: forgetting was not checked."


def _evaluation(summary: dict[str, Any]) -> list[str]:
    sets = summary.get("eval_sets") or {}
    if not sets:
        return ["No held-out evaluation was run."]
    rows = []
    for name, entry in sets.items():
        metric, before, after, change, check = report.eval_set_cells(entry)
        rows.append([name, entry.get("role", ""), metric, before, after, change, check])
    lines = _table(["set", "role", "metric", "before", "after", "change", "check"], rows)
    return [
        "Measured by qckit before and after training on held-out sets (bits per byte as lm-evaluation-harness "
        "scores `loglikelihood_rolling`; minimal pairs and choices as its `multiple_choice`). *Target* sets "
        "are what the run should improve, *retain* sets what it must not lose.",
        "",
        *lines,
        "",
        _verdict(summary),
    ]


def _selection(selection: dict[str, Any]) -> list[str]:
    """The trade-off ``qckit select`` chose: the frontier and the chosen point."""
    chosen = selection.get("chosen")
    lines = [
        "Every kept checkpoint was measured at adapter strengths "
        f"{', '.join(f'{s:g}' for s in selection.get('strengths', []))} (the fraction of the learned delta kept; "
        "WiSE-FT), against the base model. Points on the frontier (no other point is better on the target and "
        "on every retain set):",
        "",
    ]
    rows = []
    points = selection.get("points", [])
    for i in selection.get("frontier", []):
        point = points[i]
        retain = "; ".join(
            f"{name} {report.change_with_interval(entry)}"
            for name, entry in point["sets"].items()
            if entry.get("role") == "retain"
        )
        mark = (
            "**chosen**"
            if chosen
            and (point["checkpoint"], point["strength"]) == (chosen["checkpoint"], chosen["strength"])
            else ""
        )
        rows.append(
            [
                point["checkpoint"],
                f"{point['strength']:g}",
                report.change_with_interval(point["sets"][point["target"]], gain=True),
                retain,
                mark,
            ]
        )
    target = points[0]["target"] if points else "target"
    lines += _table(["checkpoint", "strength", f"gain on {target}", "retain change", ""], rows)
    if chosen:
        lines += [
            "",
            f"Chosen: **{chosen['checkpoint']} at strength {chosen['strength']:g}**, written to "
            f"`{_cell(selection.get('written_to') or '?')}`.",
        ]
    else:
        lines += ["", "No point kept every retain set within its threshold: nothing was chosen."]
    return lines


def _data(summary: dict[str, Any]) -> list[str]:
    sources = summary.get("sources") or []
    if not sources:
        return [f"Trained on `{_cell(summary.get('train_file') or '?')}`."]
    rows = [
        [
            row["name"],
            row.get("path", ""),
            report._n(row.get("documents", 0)),
            report._n(row.get("tokens", 0)),
            f"{100 * row.get('requested_share', 0):.1f} %",
            f"{100 * row['realized_share']:.1f} %" if "realized_share" in row else "–",
        ]
        for row in sources
    ]
    return _table(["source", "file", "documents", "tokens", "requested share", "trained share"], rows)


def _training(summary: dict[str, Any]) -> list[str]:
    chunker = summary.get("chunker") or {}
    facts = [
        ("base model", f"`{_cell(summary.get('model', '?'))}`"),
        ("adapters", ", ".join(summary.get("adapters") or []) or "none (full fine-tuning)"),
        ("precision", summary.get("precision", "?")),
        ("device", summary.get("device", "?")),
        ("processes", summary.get("world_size", 1)),
        ("optimizer steps", report._n(summary.get("global_step", 0))),
        ("tokens seen", report._n(summary.get("tokens_seen", 0))),
        ("training window", f"{chunker.get('max_length', '?')} tokens ({chunker.get('use', '?')})"),
        ("final training loss", report._n(summary.get("final_logged_train_loss"))),
        ("qckit", summary.get("qckit_version", "?")),
        ("finished", summary.get("finished_at", "?")),
    ]
    return _table(["", ""], [[k, v] for k, v in facts])


#: how to run the model with llama.cpp and Ollama, the same for an adapter and a full model
_GGUF_HOWTO = [
    "**llama.cpp / Ollama** (one GGUF file; `model.Modelfile` for `ollama create` is written beside it):",
    "",
    "```bash",
    "qckit export THIS_FOLDER --output model.gguf",
    'llama-cli -m model.gguf -p "Y fait frette à matin, "',
    "ollama create my-quebec-model -f model.Modelfile",
    "```",
]


def _usage(summary: dict[str, Any], is_peft: bool) -> list[str]:
    reference = str(summary.get("model", ""))
    if not is_peft:
        return [
            "**transformers** (this folder is the whole model, safetensors):",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'model = AutoModelForCausalLM.from_pretrained("PATH_OR_HUB_ID_OF_THIS_FOLDER")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_HUB_ID_OF_THIS_FOLDER")',
            "```",
            "",
            *_GGUF_HOWTO,
        ]
    lines = [
        "**peft** (the adapter on its base model):",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        'model = AutoPeftModelForCausalLM.from_pretrained("PATH_OR_HUB_ID_OF_THIS_FOLDER")',
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_HUB_ID_OF_THIS_FOLDER")',
        "```",
        "",
    ]
    if not _is_hub_id(reference):
        lines += [
            f"`adapter_config.json` names the base as qckit resolves it (`{_cell(reference)}`: a local path, a "
            "`.gguf` file or `pkg:<package>/<file>`), which peft alone cannot load when it is a GGUF file or a "
            "package: merge the adapter first (below), or load both with "
            "`qckit.models.load_merged(base, this_folder)`.",
            "",
        ]
    return lines + [
        "**transformers** (the adapter merged into its base, safetensors):",
        "",
        "```bash",
        "qckit export THIS_FOLDER --output merged/",
        "```",
        "",
        *_GGUF_HOWTO,
        "",
        "**A chatty Quebec model**: the same change carried onto the base's instruct sibling (chat vector):",
        "",
        "```bash",
        "qckit export THIS_FOLDER --onto INSTRUCT_SIBLING --output instruct-qc.gguf",
        "```",
    ]


def model_card(summary: dict[str, Any], recipe_text: str | None = None, *, is_peft: bool = True) -> str:
    """The Markdown model card of a run from its ``training_summary.json`` content (and its recipe)."""
    where = Path(str(summary.get("output_dir") or "model")).resolve()
    title = where.parent.name if where.name == "model" and where.parent.name else where.name  # runs/qc/model
    lines = [
        *_front_matter(summary, is_peft),
        "",
        f"# {_cell(title)}",
        "",
        f"Continued pretraining of `{_cell(summary.get('model', '?'))}` on Quebec French with "
        f"qckit {summary.get('qckit_version', '')}"
        + (f" ({', '.join(summary.get('adapters') or [])})." if summary.get("adapters") else "."),
        "",
        "## Evaluation",
        "",
        *_evaluation(summary),
        "",
        *(
            ["## Selected trade-off", "", *_selection(summary["selection"]), ""]
            if summary.get("selection")
            else []
        ),
        "## Training data",
        "",
        *_data(summary),
        "",
        "## Training",
        "",
        *_training(summary),
        "",
        "## How to use",
        "",
        *_usage(summary, is_peft),
        "",
        "## Licence and limitations",
        "",
        "Not set by qckit: state the licence (the base model's licence and the terms of the training corpus "
        "decide it), the intended uses and the known limitations here before sharing the model.",
    ]
    if recipe_text:
        fence = "````" if "```" in recipe_text else "```"
        lines += ["", "## Recipe", "", f"<details><summary>{RECIPE_NAME}</summary>", "", f"{fence}toml"]
        lines += [recipe_text.rstrip("\n"), fence, "", "</details>"]
    return "\n".join(lines) + "\n"


def ollama_modelfile(gguf_name: str, *, chat_template: bool = False) -> str:
    """An Ollama ``Modelfile`` for the GGUF file ``gguf_name`` beside it (``ollama create NAME -f Modelfile``).

    A base model continued on raw text completes text: it gets no chat template and no system prompt.
    ``chat_template``: the GGUF carries one (an instruct model), which Ollama reads from the file itself.
    """
    lines = [
        f"# Written by qckit export: `ollama create my-model -f {Path(gguf_name).stem}.Modelfile`, then "
        "`ollama run my-model`.",
        f"FROM ./{gguf_name}",
    ]
    if not chat_template:
        lines += [
            "# a continued-pretraining model completes text: raw prompts, no chat template",
            'TEMPLATE "{{ .Prompt }}"',
        ]
    return "\n".join(lines) + "\n"
