"""Built-in eval-set kinds: ``bpb``, ``minimal_pairs`` and ``choice`` (recipe: ``[[train.eval]]`` ``kind = …``).

Each is a thin :class:`~qckit.components.Evaluator` over the scoring functions of :mod:`qckit.evaluate`,
whose module docstrings hold the exact definitions. Constructors only check settings (cheap, at recipe
load); the scoring modules, and torch with them, are imported when a set is loaded. Every kind takes
``split_special_tokens`` (default false: the string of a special token in the text, ``</s>``, is that
token, as lm-eval encodes it; true: plain text, as training packs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from qckit import hookimpl
from qckit.evaluate import PROTOCOLS
from qckit.evaluate.cole import choice_format
from qckit.evaluate.rows import template_fields


def _check_prefix(prefix_token: str | int | None) -> None:
    if isinstance(prefix_token, str) and not prefix_token:
        raise ValueError("prefix_token must be a token string or an id (leave it out for the BOS/EOS rule)")
    if isinstance(prefix_token, int) and prefix_token < 0:
        raise ValueError("prefix_token must be a token id (0 or more)")


def _check_metric(metric: str, metrics: tuple[str, ...]) -> None:
    if metric not in metrics:
        raise ValueError(f"metric must be one of {', '.join(metrics)}, got {metric!r}")


class BitsPerByte:
    """Bits per byte of held-out text, one document per line (lower is better).

    ``protocol = "document"`` (default) scores each document on its own exactly like lm-eval-harness's
    ``loglikelihood_rolling`` (a prefix token, rolling windows of ``max_length``); ``"stream"`` joins
    the documents with EOS and scores sliding windows overlapping by ``stride`` tokens (-1: half the
    window). ``max_length`` 0 = the run's evaluation window (``qckit evaluate``: the model's context
    length); ``max_documents`` 0 = all;
    ``prefix_token`` (document protocol) defaults to the tokenizer's BOS, else EOS. A regression is
    relative: ``(after − before) / before``.
    """

    name = "bpb"
    metric = "bits_per_byte"
    higher_is_better = False
    regression = "relative"
    protocol = "document"

    def __init__(
        self,
        protocol: str = "document",
        max_length: int = 0,
        stride: int = -1,
        max_documents: int = 0,
        prefix_token: str | int | None = None,
        split_special_tokens: bool = False,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if max_length != 0 and max_length < 2:
            raise ValueError("max_length must be 0 (the run's evaluation window) or at least 2")
        if stride < -1:
            raise ValueError("stride must be -1 (half the window) or 0 or more")
        if stride >= 0 and protocol != "stream":
            raise ValueError('stride applies to the stream protocol only (protocol = "stream")')
        if max_length and stride >= max_length:
            raise ValueError("stride must be smaller than max_length")
        if max_documents < 0:
            raise ValueError("max_documents must be 0 (all) or more")
        if prefix_token is not None and protocol != "document":
            raise ValueError("prefix_token applies to the document protocol only")
        _check_prefix(prefix_token)
        self.protocol = protocol
        self.max_length = max_length
        self.stride = stride
        self.max_documents = max_documents
        self.prefix_token = prefix_token
        self.split_special_tokens = split_special_tokens

    def load(self, path: Path, tokenizer: Any) -> Any:
        from qckit.evaluate.bpb import load_documents

        return load_documents(
            path, tokenizer, max_documents=self.max_documents, split_special_tokens=self.split_special_tokens
        )

    def texts(self, path: Path) -> Iterator[str]:
        """Each document that ``load`` keeps (the first ``max_documents``)."""
        from qckit.documents import iter_documents

        documents = (text for _, text in iter_documents(path))
        return islice(documents, self.max_documents) if self.max_documents else documents

    def measure(self, model: Any, data: Any, context: Any) -> dict[str, Any]:
        from qckit.evaluate.bpb import score_documents

        result = score_documents(
            model,
            data,
            context.tokenizer,
            protocol=self.protocol,
            max_length=self.max_length or context.max_length,
            stride=None if self.stride < 0 else self.stride,
            batch_size=context.batch_size,
            prefix_token=self.prefix_token,
            device=context.device,
            observer=context.observer,
        )
        return result.as_dict()


class MinimalPairs:
    """Minimal pairs: the grammatical sentence of each pair must get the higher log-probability.

    Rows are BLiMP-style (``sentence_good``, ``sentence_bad``) or QFrBLiMP-style (``sentence_a``,
    ``sentence_b``, ``label`` = index of the grammatical one); bad rows are counted, never fatal.
    ``metric``: ``accuracy`` (summed log-probability), ``accuracy_norm`` (per character) or
    ``accuracy_bytes`` (per UTF-8 byte). ``group_by`` names the phenomenon field (default: the first
    of phenomenon, linguistic_phenomenon, linguistics_term, UID, category, type); ``examples`` = how
    many of the most confidently wrong pairs to keep; ``delimiter`` is put before each sentence (""
    like lm-eval's multiblimp, " " like its English blimp). A regression is in points: ``before − after``.
    """

    name = "minimal_pairs"
    metric = "accuracy"
    higher_is_better = True
    regression = "points"
    METRICS = ("accuracy", "accuracy_norm", "accuracy_bytes")

    def __init__(
        self,
        metric: str = "accuracy",
        group_by: str = "",
        examples: int = 5,
        delimiter: str = "",
        prefix_token: str | int | None = None,
        split_special_tokens: bool = False,
    ) -> None:
        _check_metric(metric, self.METRICS)
        if examples < 0:
            raise ValueError("examples must be 0 or more")
        _check_prefix(prefix_token)
        self.metric = metric
        self.group_by = group_by
        self.examples = examples
        self.delimiter = delimiter
        self.prefix_token = prefix_token
        self.split_special_tokens = split_special_tokens

    def load(self, path: Path, tokenizer: Any) -> Any:
        from qckit.evaluate.pairs import read_pairs

        return read_pairs(path, group_by=self.group_by)

    def texts(self, path: Path) -> Iterator[str]:
        """Both sentences of every usable pair."""
        from qckit.evaluate.pairs import read_pairs

        for pair in read_pairs(path, group_by=self.group_by).pairs:
            yield pair.good
            yield pair.bad

    def measure(self, model: Any, data: Any, context: Any) -> dict[str, Any]:
        from qckit.evaluate.pairs import score_pairs

        return score_pairs(
            model,
            data,
            context,
            prefix_token=self.prefix_token,
            examples=self.examples,
            delimiter=self.delimiter,
            split_special_tokens=self.split_special_tokens,
        )


class MultipleChoice:
    """A multiple-choice or binary task, zero-shot by log-likelihood (lm-eval's ``multiple_choice``).

    Rows hold a ``prompt`` (or fill ``template``, e.g. ``"Phrase : {sentence}\\nAcceptable ?"``), their
    ``choices`` (or the set's ``choices``, e.g. ``["non", "oui"]``) and the answer under
    ``answer_field`` (an index or the choice's text); ``chat = true`` (set or row) wraps the prompt in
    the tokenizer's chat template. Each choice is scored after ``delimiter`` (default one space).
    ``format`` (``qfrcola``, ``qfrcore``, ``qfrcort``) reads a COLE task's released rows: it fills
    ``template``, ``choices`` and ``answer_field`` where they are not given (:mod:`qckit.evaluate.cole`).
    ``metric``: ``accuracy``, ``accuracy_norm`` (per character, lm-eval's acc_norm),
    ``accuracy_bytes`` or ``macro_f1``. A regression is in points: ``before − after``.
    """

    name = "choice"
    metric = "accuracy"
    higher_is_better = True
    regression = "points"
    METRICS = ("accuracy", "accuracy_norm", "accuracy_bytes", "macro_f1")

    def __init__(
        self,
        metric: str = "accuracy",
        template: str = "",
        choices: list[str] | None = None,
        answer_field: str = "",
        delimiter: str = " ",
        chat: bool = False,
        prefix_token: str | int | None = None,
        split_special_tokens: bool = False,
        format: str = "",
    ) -> None:
        _check_metric(metric, self.METRICS)
        preset = choice_format(format)
        template = template or preset.get("template", "")
        choices = choices if choices is not None else preset.get("choices")
        answer_field = answer_field or preset.get("answer_field", "answer")
        if template:
            template_fields(template)
        if choices is not None and (len(choices) < 2 or not all(c.strip() for c in choices)):
            raise ValueError("choices must list at least two non-empty strings")
        _check_prefix(prefix_token)
        self.metric = metric
        self.template = template
        self.choices = list(choices) if choices is not None else None
        self.answer_field = answer_field
        self.delimiter = delimiter
        self.chat = chat
        self.prefix_token = prefix_token
        self.split_special_tokens = split_special_tokens
        self.format = format

    def load(self, path: Path, tokenizer: Any) -> Any:
        from qckit.evaluate.choice import read_choices

        return read_choices(
            path,
            template=self.template or None,
            choices=self.choices,
            answer_field=self.answer_field,
            chat=self.chat,
        )

    def texts(self, path: Path) -> Iterator[str]:
        """For every usable item: its prompt, or, for a prompt made from the template, the row's values
        that filled it (the template's own words are in every item); then each choice."""
        for item in self.load(path, None).items:
            yield from item.fields or (item.prompt,)
            yield from item.choices

    def measure(self, model: Any, data: Any, context: Any) -> dict[str, Any]:
        from qckit.evaluate.choice import score_choices

        return score_choices(
            model,
            data,
            context,
            delimiter=self.delimiter,
            prefix_token=self.prefix_token,
            split_special_tokens=self.split_special_tokens,
        )


@hookimpl
def register_evaluators(register: Any) -> None:
    register(BitsPerByte)
    register(MinimalPairs)
    register(MultipleChoice)
