"""Multiple-choice and binary tasks, scored zero-shot by log-likelihood as lm-eval's ``multiple_choice``.

Rows (JSON Lines, one item per line):

* the prompt: ``prompt``, or the set's ``template`` filled with the row's fields (``{sentence}`` …);
* ``choices``: a list of at least two non-empty strings (or the set's ``choices``, for tasks whose
  choices are the same on every row, such as ``["non", "oui"]``);
* the answer, under ``answer`` (or the set's ``answer_field``, e.g. ``label``): the index of the right
  choice (a JSON integer, or a string of ASCII digits), or the right choice's text;
* optionally ``chat``: true to wrap the prompt in the tokenizer's chat template (also a set setting).

A template field must be a string, a number or a boolean (inserted as ``str(value)``). A bad row (not
JSON, no prompt, a template field the row lacks or that holds a list or an object, bad choices, an
answer that is not one of them) is counted with its ``file:line`` and skipped; so is an item that
cannot be scored (a choice that encodes to no token or to more than ``max_length`` tokens), counted in
each measurement's ``bad_rows``.

Scoring: each choice ``c`` gets ``LL(c) = log p(delimiter + c | prompt)``, its summed log-probability
after the prompt, with lm-eval's tokenization (:func:`~qckit.evaluate.loglik.encode_pairs`: the
prompt's trailing spaces join the continuation; an empty prompt becomes the prefix token). The
delimiter is the set's ``delimiter`` (default ``" "``, lm-eval's ``target_delimiter``), and ``""``
when the chat template is used (the template ends with the assistant's turn, as in lm-eval). With
``chat``, the prompt becomes ``apply_chat_template([{"role": "user", "content": prompt}],
add_generation_prompt=True)``. A base model with no chat template works on rows without ``chat``.

* ``accuracy``: items where ``argmax_c LL(c)`` is the answer (the first choice on ties, like lm-eval),
  with ``accuracy_ci95``, its 95 % Wilson interval;
* ``accuracy_norm``: the same with ``LL(c) / len(c)`` in characters (lm-eval's ``acc_norm``);
  ``accuracy_bytes`` with ``LL(c) / UTF-8 bytes of c`` (lm-eval's ``acc_bytes``);
* ``macro_f1``: the mean over answer classes (choice indices) of F1 of the ``accuracy`` predictions,
  how COLE reports its binary tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qckit.components import IssueLog
from qckit.errors import QckitError
from qckit.evaluate.rows import brief, is_text, iter_rows, no_usable, scalar_text, template_fields
from qckit.evaluate.stats import argmax, macro_f1, wilson_interval

if TYPE_CHECKING:  # the scoring engine imports torch: reading rows (decontamination) need not
    from qckit.evaluate.loglik import EvalContext

__all__ = ["ChoiceItem", "ChoiceSet", "read_choices", "score_choices"]


@dataclass(frozen=True)
class ChoiceItem:
    """One item: the prompt, the choices, the index of the right one, whether to use the chat template,
    and the row's values that filled the set's template (empty when the row gave its own prompt)."""

    line: int
    prompt: str
    choices: tuple[str, ...]
    answer: int
    chat: bool = False
    fields: tuple[str, ...] = ()


@dataclass
class ChoiceSet:
    """The usable items of a file and its bad rows."""

    source: str
    items: list[ChoiceItem]
    issues: IssueLog = field(default_factory=IssueLog)


def read_choices(
    path: str | Path,
    *,
    template: str | None = None,
    choices: list[str] | None = None,
    answer_field: str = "answer",
    chat: bool = False,
) -> ChoiceSet:
    """Read a choice-task file (see the module docstring), counting bad rows.

    Raises :class:`~qckit.errors.InputError` when the file is missing or holds no usable item, and
    :class:`ValueError` for a bad ``template`` or ``choices`` setting.
    """
    if template is not None:
        template_fields(template)
    if choices is not None and not _good_choices(choices):
        raise ValueError("choices must be a list of at least two non-empty strings")
    issues = IssueLog()
    source = str(path)
    items: list[ChoiceItem] = []
    for line, row in iter_rows(path, issues):
        item = _item(row, line, source, issues, template, choices, answer_field, chat)
        if item is not None:
            items.append(item)
    if not items:
        raise no_usable(source, "choice items", issues)
    return ChoiceSet(source, items, issues)


def _good_choices(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 2 and all(is_text(c) and c.strip() for c in value)


def _item(
    row: dict[str, Any],
    line: int,
    source: str,
    issues: IssueLog,
    template: str | None,
    set_choices: list[str] | None,
    answer_field: str,
    set_chat: bool,
) -> ChoiceItem | None:
    fields: tuple[str, ...] = ()
    if isinstance(row.get("prompt"), str):
        prompt = row["prompt"]
        if not is_text(prompt):
            issues.add("bad_prompt", source, line, "the prompt is not valid text (a lone surrogate escape)")
            return None
    elif template is not None:
        names = template_fields(template)
        values: dict[str, str] = {}
        for name in names:
            if name not in row:
                issues.add("template_field", source, line, f"the row has no field {name!r} for the template")
                return None
            value = scalar_text(row[name])
            if value is None:
                issues.add(
                    "template_field",
                    source,
                    line,
                    f"field {name!r} must be a string, a number or a boolean, got {brief(row[name])}",
                )
                return None
            values[name] = value
        prompt = template.format_map(values)
        fields = tuple(values[name] for name in names)
    else:
        issues.add("missing_prompt", source, line, "no prompt (and no template set for this file)")
        return None
    choices: Any = row.get("choices", set_choices)
    if not _good_choices(choices):
        issues.add("bad_choices", source, line, "choices must be a list of at least two non-empty strings")
        return None
    answer = _answer_index(row.get(answer_field), choices)
    if answer is None:
        issues.add(
            "bad_answer",
            source,
            line,
            f"{answer_field} must be the index or the text of one of the {len(choices)} choices, "
            f"got {brief(row.get(answer_field))}",
        )
        return None
    chat = row.get("chat", set_chat)
    if not isinstance(chat, bool):
        issues.add("bad_chat", source, line, f"chat must be true or false, got {brief(chat)}")
        return None
    return ChoiceItem(line, prompt, tuple(choices), answer, chat, fields)


def _answer_index(value: Any, choices: list[str]) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(choices) else None
    if isinstance(value, str):
        if value in choices:
            return choices.index(value)
        if value.strip() in choices:
            return choices.index(value.strip())
        digits = value.strip()
        # ASCII digits only: "²" is a digit to str.isdigit() but not to int(); and no huge numbers
        if digits.isascii() and digits.isdigit() and len(digits) <= 9 and int(digits) < len(choices):
            return int(digits)
    return None


def score_choices(
    model: Any,
    choice_set: ChoiceSet,
    context: EvalContext,
    *,
    delimiter: str = " ",
    prefix_token: str | int | None = None,
    details: bool = False,
    split_special_tokens: bool = False,
) -> dict[str, Any]:
    """Score every item of ``choice_set`` on ``model`` (see the module docstring for the numbers).

    ``details`` adds ``per_item``: each item's line, choice log-likelihoods, prediction and answer.
    ``split_special_tokens`` encodes special-token strings of plain prompts and choices as text (a
    chat template's tokens are always special). An item that cannot be scored is counted with the
    set's bad rows; raises :class:`~qckit.errors.InputError` when no item can.
    """
    from qckit.evaluate.loglik import encode_pairs, prefix_token_id, request_problem

    started = time.perf_counter()
    tokenizer = context.tokenizer
    prefix = prefix_token_id(tokenizer, prefix_token)
    chat_items = [item for item in choice_set.items if item.chat]
    if chat_items and not getattr(tokenizer, "chat_template", None):
        raise QckitError(
            f"{choice_set.source}:{chat_items[0].line}: the row asks for the chat template but the tokenizer "
            f"has none (a base model); remove 'chat' from the rows or the set"
        )
    # (item index, choice index) for every request, chat and plain prompts encoded apart
    keys: list[tuple[int, int]] = []
    encoded: list[Any] = []
    for use_chat in (False, True):
        pairs, these = [], []
        for i, item in enumerate(choice_set.items):
            if item.chat != use_chat:
                continue
            if use_chat:
                prompt = tokenizer.apply_chat_template(
                    [{"role": "user", "content": item.prompt}], tokenize=False, add_generation_prompt=True
                )
                delim = ""
            else:
                prompt, delim = item.prompt, delimiter
            for j, choice in enumerate(item.choices):
                pairs.append((prompt, delim + choice))
                these.append((i, j))
        if pairs:
            split = split_special_tokens and not use_chat  # a chat template's tokens are special
            encoded.extend(encode_pairs(tokenizer, pairs, prefix, split_special_tokens=split))
            keys.extend(these)
    scorer = context.scorer(model)
    issues = IssueLog()
    issues.merge(choice_set.issues)
    problems: dict[int, str] = {}
    for (i, _), request in zip(keys, encoded, strict=True):
        problem = request_problem(request, scorer.max_length)
        if problem:
            problems.setdefault(i, problem)
    for i in sorted(problems):  # in file order
        issues.add("unscorable", choice_set.source, choice_set.items[i].line, problems[i])
    items = [item for i, item in enumerate(choice_set.items) if i not in problems]
    if not items:
        raise no_usable(choice_set.source, "choice items", issues)
    # the kept items renumbered, and their requests
    index = {i: k for k, i in enumerate(i for i in range(len(choice_set.items)) if i not in problems)}
    kept = [(index[i], j, request) for (i, j), request in zip(keys, encoded, strict=True) if i in index]
    scores = scorer.loglikelihoods(model, [request for _, _, request in kept], task="choice")
    lls: list[list[float]] = [[0.0] * len(item.choices) for item in items]
    for (i, j, _), score in zip(kept, scores.tolist(), strict=True):
        lls[i][j] = score
    gold = [item.answer for item in items]
    pred, pred_norm, pred_bytes = [], [], []
    for item, ll in zip(items, lls, strict=True):
        pred.append(argmax(ll))
        pred_norm.append(argmax([v / len(c) for v, c in zip(ll, item.choices, strict=True)]))
        pred_bytes.append(argmax([v / len(c.encode("utf-8")) for v, c in zip(ll, item.choices, strict=True)]))
    n = len(gold)
    correct = sum(p == g for p, g in zip(pred, gold, strict=True))
    result: dict[str, Any] = {
        "accuracy": correct / n,
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "accuracy_norm": sum(p == g for p, g in zip(pred_norm, gold, strict=True)) / n,
        "accuracy_bytes": sum(p == g for p, g in zip(pred_bytes, gold, strict=True)) / n,
        "macro_f1": macro_f1(gold, pred),
        "items": n,
        "correct": correct,
        "chat_items": sum(item.chat for item in items),
        "bad_rows": issues.total(),
        "bad_row_kinds": issues.as_dict(),
        "prefix_token": prefix,
        "truncated": scorer.truncated,
        "seconds": time.perf_counter() - started,
    }
    if details:
        result["per_item"] = [
            {"line": item.line, "loglikelihoods": ll, "predicted": p, "answer": item.answer}
            for item, ll, p in zip(items, lls, pred, strict=True)
        ]
    return result
