"""Eval sets written as lm-evaluation-harness tasks, so anyone with ``lm_eval`` reproduces qckit's numbers.

``qckit evaluate --recipe R --export-lm-eval DIR`` writes, for each eval set ``S`` of the recipe:

* ``DIR/qckit_S.jsonl``: the rows *as qckit read them* (bad rows already skipped, QFrBLiMP labels and
  COLE formats resolved, templates filled), so both tools score the same items;
* ``DIR/qckit_S.yaml``: the task ``qckit_S`` (lm-eval 0.4.13 task YAML, data from the JSONL file by
  absolute path: lm-eval resolves ``data_files`` against its working directory, not the YAML's);

and ``DIR/qckit.yaml`` (the group ``qckit``: every task), ``DIR/README.md`` (the command that runs
them) and, once the model is scored, ``DIR/qckit_results.json`` (qckit's numbers to compare with).

The mapping is exact: lm-eval builds the requests :mod:`qckit.evaluate.loglik` scores.

* ``bpb`` (``document`` protocol) → ``loglikelihood_rolling`` over ``text``: each document after the
  prefix token in rolling windows of ``max_length``; ``bits_per_byte``, ``byte_perplexity`` and
  ``word_perplexity`` are the same ratios of corpus totals (:mod:`qckit.evaluate.bpb`).
* ``minimal_pairs`` → ``multiple_choice`` with an empty context (``prompt`` is ``""``), the choices
  ``[good, bad]``, target 0 and ``target_delimiter`` = the set's ``delimiter``: each sentence scores
  ``log p(delimiter + s | prefix token)``, as in :mod:`qckit.evaluate.pairs` (lm-eval's ``blimp``
  shape). ``acc`` equals ``accuracy`` except on an exact tie, which lm-eval's argmax counts as right.
* ``choice`` → ``multiple_choice`` over ``prompt``, ``choices``, ``answer`` with ``target_delimiter``
  = the set's ``delimiter``: ``acc``, ``acc_norm``, ``acc_bytes`` are ``accuracy``,
  ``accuracy_norm``, ``accuracy_bytes`` (lm-eval has no macro-F1).

The prefix token and ``max_length`` are one setting of lm-eval's model for every task (HFLM's
``prefix_token_id`` and ``max_length`` model arguments): the README's command carries the values
qckit scored with, ``dtype=float32`` (qckit's) and ``add_bos_token=False`` (qckit adds no special token
to a text; HFLM otherwise lets a tokenizer that adds a BOS add it, one more predicted token per document). A set that cannot be exported equal is refused before anything is written, with
one line naming it and why (:class:`~qckit.errors.RecipeError`): a kind with no lm-eval output type
(a plugin's), the ``stream`` protocol, chat-template prompts (lm-eval applies a chat template to every
task or none), a ``max_length`` of its own, a prefix token other than the other sets',
``split_special_tokens``. Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qckit import _fs
from qckit.defaults import VALIDATION_SET
from qckit.errors import InputError, RecipeError

__all__ = [
    "LM_EVAL_VERSION",
    "TASK_PREFIX",
    "GROUP",
    "RESULTS_FILE",
    "METRICS",
    "TaskExport",
    "ExportPlan",
    "plan_export",
    "drop_unscorable",
    "write_export",
    "write_results",
    "dump_yaml",
]

#: the lm-evaluation-harness release whose task format and scoring the export follows
LM_EVAL_VERSION = "0.4.13"
#: a set ``S`` becomes the task ``qckit_S`` (lm-eval task names share one namespace)
TASK_PREFIX = "qckit_"
#: the group task that runs every exported task
GROUP = "qckit"
#: qckit's own numbers for the exported sets, beside the tasks
RESULTS_FILE = "qckit_results.json"
#: qckit metric → lm-eval metric, per output type (the names both tools report for the same number)
METRICS: dict[str, dict[str, str]] = {
    "loglikelihood_rolling": {
        "bits_per_byte": "bits_per_byte",
        "byte_perplexity": "byte_perplexity",
        "word_perplexity": "word_perplexity",
    },
    "multiple_choice": {"accuracy": "acc", "accuracy_norm": "acc_norm", "accuracy_bytes": "acc_bytes"},
}
_LOWER_IS_BETTER = {"bits_per_byte", "byte_perplexity", "word_perplexity"}
_AGGREGATIONS = {
    "bits_per_byte": "bits_per_byte",
    "byte_perplexity": "weighted_perplexity",
    "word_perplexity": "weighted_perplexity",
}


@dataclass
class TaskExport:
    """One eval set as an lm-eval task: its config (without the data path) and its rows."""

    set_name: str
    kind: str
    source: str
    output_type: str
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    metric: str  # the set's headline qckit metric
    prefix: int = 0  # the prefix token the set scores with
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (line, why): rows qckit cannot score

    @property
    def task(self) -> str:
        return TASK_PREFIX + self.set_name


@dataclass
class ExportPlan:
    """Every set's task and the model arguments the tasks need (``prefix_token_id`` where not lm-eval's rule)."""

    tasks: list[TaskExport]
    prefix_token_id: int | None = None  # set when the sets' prefix is not lm-eval's default
    notes: list[str] = field(default_factory=list)


def _refuse(eval_set: Any, why: str, source: str | None) -> RecipeError:
    key = "train.val_file" if eval_set.name == VALIDATION_SET else f"train.eval.{eval_set.name}"
    return RecipeError(
        f"cannot export eval set {eval_set.name!r} as an lm-eval task: {why}", source=source, key=key
    )


def plan_export(
    sets: Sequence[Any], data: dict[str, Any], tokenizer: Any, *, source: str | None = None
) -> ExportPlan:
    """The tasks of ``sets`` (:class:`~qckit.evaluate.sets.EvalSet`) whose loaded rows are ``data``
    (``{set name: what the evaluator loaded}``, an :class:`~qckit.evaluate.sets.EvalSuite`'s ``data``).

    Raises :class:`~qckit.errors.RecipeError` (``source``: the recipe) for the first set that cannot be
    exported equal (see the module docstring); checks every set before returning.
    """
    from qckit.evaluate.loglik import prefix_token_id  # torch: only when exporting

    default_prefix = prefix_token_id(tokenizer)
    prefix: tuple[int, str] | None = None  # (id, the set that fixed it)
    tasks: list[TaskExport] = []
    for s in sets:
        ev = s.evaluator
        if getattr(ev, "split_special_tokens", False):
            raise _refuse(
                s, "split_special_tokens encodes special-token text as plain text; lm-eval cannot", source
            )
        if getattr(ev, "max_length", 0):
            raise _refuse(
                s,
                f"its own max_length {ev.max_length}; lm-eval's max_length is one model argument for every "
                "task (leave it out to use the run's evaluation window)",
                source,
            )
        task = _task(s, data[s.name], source)
        wanted = task.prefix = prefix_token_id(tokenizer, getattr(ev, "prefix_token", None))
        if task.output_type == "loglikelihood_rolling" or any(not r["prompt"] for r in task.rows):
            if prefix is None:
                prefix = (wanted, s.name)
            elif wanted != prefix[0]:
                raise _refuse(
                    s,
                    f"its prefix token {wanted} differs from set {prefix[1]!r}'s {prefix[0]}; lm-eval's "
                    "prefix_token_id is one model argument for every task (export them apart)",
                    source,
                )
        tasks.append(task)
    plan = ExportPlan(tasks)
    if prefix is not None and prefix[0] != default_prefix:
        plan.prefix_token_id = prefix[0]
    return plan


def _task(s: Any, loaded: Any, source: str | None) -> TaskExport:
    kind = s.kind
    metric = str(s.evaluator.metric)
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    if kind == "bpb":
        if s.protocol != "document":
            raise _refuse(
                s,
                f'the {s.protocol} protocol has no lm-eval equivalent (protocol = "document" is '
                "lm-eval's loglikelihood_rolling)",
                source,
            )
        config = {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "text",
        }
        rows = [{"text": text} for text in loaded.texts]
    elif kind == "minimal_pairs":
        config = _multiple_choice(s.evaluator.delimiter)
        rows = [
            {
                "prompt": "",
                "choices": [p.good, p.bad],
                "answer": 0,
                "line": p.line,
                "phenomenon": p.phenomenon,
            }
            for p in loaded.pairs
        ]
    elif kind == "choice":
        chat = next((item for item in loaded.items if item.chat), None)
        if chat is not None:
            raise _refuse(
                s,
                f"line {chat.line} asks for the chat template; lm-eval applies one to every task "
                "(--apply_chat_template) or to none",
                source,
            )
        config = _multiple_choice(s.evaluator.delimiter)
        rows = [
            {"prompt": item.prompt, "choices": list(item.choices), "answer": item.answer, "line": item.line}
            for item in loaded.items
        ]
    else:
        raise _refuse(
            s, f"kind {kind!r} has no lm-eval output type (bpb, minimal_pairs and choice have)", source
        )
    output_type = config["output_type"]
    config["metric_list"] = [
        {"metric": name, "aggregation": _aggregation(name), "higher_is_better": name not in _LOWER_IS_BETTER}
        for name in METRICS[output_type].values()
    ]
    return TaskExport(s.name, kind, str(s.settings.path), output_type, config, rows, metric)


def _multiple_choice(delimiter: str) -> dict[str, Any]:
    # the row fields lm-eval reads by name (no Jinja template: it would drop a trailing newline)
    return {
        "output_type": "multiple_choice",
        "doc_to_text": "prompt",
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "target_delimiter": delimiter,
    }


def _aggregation(metric: str) -> str:
    # bits per byte and the perplexities are ratios of corpus totals: lm-eval's own aggregations; accuracies a mean
    return _AGGREGATIONS.get(metric, "mean")


def drop_unscorable(plan: ExportPlan, tokenizer: Any, max_length: int) -> None:
    """Leave out of each multiple-choice task the rows qckit does not score at ``max_length`` (a text
    that encodes to no token or to more than ``max_length``: its kinds count them as bad rows), found
    with the same encoding and rule (:func:`~qckit.evaluate.loglik.request_problem`); noted in
    ``dropped``."""
    from qckit.evaluate.loglik import encode_pairs, request_problem

    for task in plan.tasks:
        if task.output_type != "multiple_choice":
            continue
        delimiter = task.config["target_delimiter"]
        kept = []
        for row in task.rows:
            requests = encode_pairs(
                tokenizer, [(row["prompt"], delimiter + c) for c in row["choices"]], task.prefix
            )
            problem = next((p for p in (request_problem(r, max_length) for r in requests) if p), None)
            if problem:
                task.dropped.append((row["line"], problem))
            else:
                kept.append(row)
        task.rows = kept


def write_export(
    plan: ExportPlan, directory: str | Path, *, tokenizer: Any, max_length: int, model: str = "MODEL"
) -> list[Path]:
    """Write the tasks of ``plan`` as the directory ``directory``, all together or not at all (an earlier
    export there is replaced whole), without the rows qckit cannot score (:func:`drop_unscorable`).
    ``max_length`` is the window qckit scores with; ``model`` names the model in the README's command.
    Returns the task YAML files.

    Raises :class:`~qckit.errors.InputError` when ``directory`` holds anything but an earlier export.
    """
    final = Path(directory).resolve()
    if final.exists() and (
        not final.is_dir() or (any(final.iterdir()) and not (final / f"{GROUP}.yaml").is_file())
    ):
        raise InputError(
            final, f"exists and is not an lm-eval export (no {GROUP}.yaml); name a new or empty directory"
        )
    drop_unscorable(plan, tokenizer, max_length)
    written: list[Path] = []
    with _fs.staging_dir(final) as work:
        for task in plan.tasks:
            data_name = f"{task.task}.jsonl"
            with (work / data_name).open("w", encoding="utf-8") as handle:
                for row in task.rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            config = {
                "task": task.task,
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(final / data_name)}},
                "test_split": "test",
                "num_fewshot": 0,
                **task.config,
                "metadata": {"version": 1.0, "qckit_set": task.set_name, "qckit_kind": task.kind},
            }
            header = (
                f"qckit eval set {task.set_name!r} ({task.kind}, {len(task.rows)} rows read from {task.source});\n"
                f"written by qckit evaluate --export-lm-eval for lm-evaluation-harness {LM_EVAL_VERSION}"
            )
            (work / f"{task.task}.yaml").write_text(dump_yaml(config, header), encoding="utf-8")
            written.append(final / f"{task.task}.yaml")
        group = {"group": GROUP, "task": [t.task for t in plan.tasks]}
        (work / f"{GROUP}.yaml").write_text(
            dump_yaml(group, "every exported qckit eval set"), encoding="utf-8"
        )
        (work / "README.md").write_text(_readme(plan, final, max_length, model), encoding="utf-8")
        _fs.replace_dir(work, final)
    return written


def model_name(model_spec: str, adapter: str | None = None) -> str:
    """How the README's command names the model: the folder or hub id as given (``MODEL_DIR`` for a
    GGUF file, which lm-eval cannot load as qckit does), with ``peft=`` and the adapter's folder."""
    gguf = model_spec.startswith("pkg:") or model_spec.lower().endswith(".gguf")
    name = (
        "MODEL_DIR"
        if gguf
        else (str(Path(model_spec).resolve()) if Path(model_spec).exists() else model_spec)
    )
    return f"{name},peft={Path(adapter).resolve()}" if adapter else name


def model_args(plan: ExportPlan, max_length: int, model: str) -> str:
    """lm-eval's ``--model_args`` that score as qckit did: the model, ``max_length``, the prefix token."""
    # add_bos_token=False: lm-eval's HFLM otherwise lets the tokenizer add its own BOS to every text
    # (a Llama tokenizer does), which qckit never does (the prefix token stands before a text instead)
    args = [f"pretrained={model}", f"max_length={max_length}", "dtype=float32", "add_bos_token=False"]
    if plan.prefix_token_id is not None:
        args.append(f"prefix_token_id={plan.prefix_token_id}")
    return ",".join(args)


def _readme(plan: ExportPlan, directory: Path, max_length: int, model: str) -> str:
    tasks = ",".join(t.task for t in plan.tasks)
    lines = [
        "# qckit eval sets as lm-evaluation-harness tasks",
        "",
        f"Written by `qckit evaluate --export-lm-eval` for lm-evaluation-harness {LM_EVAL_VERSION}. Each",
        "`qckit_<set>.jsonl` holds the rows qckit scored (bad rows skipped); the YAML files are the tasks.",
        "",
        "```bash",
        f"lm_eval --model hf --model_args {model_args(plan, max_length, model)} \\",
        f"    --include_path {directory} --tasks {tasks}",
        "```",
        "",
        f"(`--tasks {GROUP}` runs them all.) Keep the model arguments: `max_length={max_length}` is the",
        "window qckit scored with (lm-eval has one for every task), `add_bos_token=False` because qckit adds",
        "no special token to a text, float32 as qckit. A GGUF model is first written as a safetensors",
        "folder (`qckit export`, then `pretrained=` that folder); an adapter is `peft=` its folder. Batch",
        f"size and device change nothing beyond float rounding. qckit's own numbers: `{RESULTS_FILE}`.",
        "",
        "| task | qckit kind | lm-eval output type | rows | qckit metric → lm-eval metric |",
        "|---|---|---|---|---|",
    ]
    for t in plan.tasks:
        pairs = ", ".join(f"{q} → {m}" for q, m in METRICS[t.output_type].items())
        lines.append(f"| {t.task} | {t.kind} | {t.output_type} | {len(t.rows)} | {pairs} |")
    lines.append("")
    for t in plan.tasks:
        if t.dropped:
            line, why = t.dropped[0]
            lines.append(
                f"{t.task}: {len(t.dropped)} row(s) left out, as qckit does not score them (first: line {line}: {why})."
            )
    lines.append("")
    return "\n".join(lines)


def write_results(directory: str | Path, measurement: dict[str, dict[str, Any]], plan: ExportPlan) -> Path:
    """``RESULTS_FILE``: per task, qckit's numbers under their lm-eval names and in full."""
    out: dict[str, Any] = {}
    for t in plan.tasks:
        numbers = measurement.get(t.set_name, {})
        out[t.task] = {
            "set": t.set_name,
            "metric": t.metric,
            "lm_eval": {m: numbers.get(q) for q, m in METRICS[t.output_type].items()},
            "qckit": numbers,
        }
    path = Path(directory) / RESULTS_FILE
    _fs.atomic_write_text(path, json.dumps(out, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def dump_yaml(value: dict[str, Any], comment: str = "") -> str:
    """A YAML document of plain data (mappings, lists, strings, numbers, booleans). Every string is a
    JSON string, which YAML reads as a double-quoted scalar: no tag, no type guessing, any character."""
    lines = [f"# {line}" for line in comment.splitlines()]
    _emit(value, 0, lines)
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if key.isidentifier() else _scalar(key)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _emit(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_key(key)}:")
                _emit(item, indent + 2, lines)
            else:
                lines.append(f"{pad}{_key(key)}: {_inline(item)}")
    else:
        for item in value:
            if isinstance(item, dict) and item:
                first, *rest = _block(item, indent + 2)
                lines.append(f"{pad}- {first.lstrip()}")
                lines.extend(rest)
            else:
                lines.append(f"{pad}- {_inline(item)}")


def _block(value: dict[str, Any], indent: int) -> list[str]:
    out: list[str] = []
    _emit(value, indent, out)
    return out


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)
