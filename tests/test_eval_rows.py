"""Eval files with rows of any kind: every bad row is counted with its file:line and skipped, never fatal;
only a file with no usable row is an error (InputError naming the file)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qckit.components import IssueLog
from qckit.errors import InputError
from qckit.evaluate.bpb import load_documents
from qckit.evaluate.choice import read_choices
from qckit.evaluate.pairs import read_pairs
from qckit.evaluate.rows import brief, iter_rows

#: a line nested far deeper than the JSON decoder recurses (the issue's example)
DEEP = "[" * 200_000 + "]" * 200_000
GOOD_PAIR = {"sentence_good": "Il fait frette.", "sentence_bad": "Il frette fait."}
GOOD_ITEM = {"prompt": "Une tuque, ça se met sur la", "choices": ["tête", "main"], "answer": 0}


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode("utf-8") for x in lines) + b"\n")
    return path


def test_a_bad_choice_row_of_any_kind_is_counted_with_its_line(tmp_path):
    bad = [
        json.dumps({**GOOD_ITEM, "answer": "²"}),  # str.isdigit() is true, int() fails
        json.dumps({**GOOD_ITEM, "answer": "9" * 5000}),  # digits beyond int()'s limit
        DEEP,
        "[" * 2000 + "]" * 2000,
        '{"prompt": "x", "choices": ["a", "b"], "answer": ' + "1" * 5000 + "}",  # JSON int beyond the limit
        json.dumps({**GOOD_ITEM, "answer": float("nan")}),  # NaN, a JSON extension Python reads
        json.dumps({**GOOD_ITEM, "answer": [[[0]]]}),
        json.dumps({**GOOD_ITEM, "choices": []}),
        json.dumps({**GOOD_ITEM, "choices": ["a", 1]}),
        json.dumps({**GOOD_ITEM, "choices": "ab"}),
        json.dumps({**GOOD_ITEM, "prompt": "\ud800"}),  # a lone surrogate: no tokenizer takes it
        json.dumps({**GOOD_ITEM, "choices": ["\udfff", "b"]}),
        json.dumps({"prompt": 3, "choices": ["a", "b"], "answer": 0}),
        json.dumps({**GOOD_ITEM, "chat": {"a": [1] * 1000}}),
        b"\xff\xfe not utf-8",
        "null",
        "nope",
    ]
    path = write_lines(tmp_path / "c.jsonl", [json.dumps(GOOD_ITEM), *bad])
    items = read_choices(path)
    assert [item.line for item in items.items] == [1]
    assert items.issues.total() == len(bad)
    assert items.issues.counts["too_deep"] == 2
    assert items.issues.counts["invalid_json"] == 2
    assert (
        f"{path}:2: answer must be the index or the text of one of the 2 choices, got '²'"
        in (items.issues.examples["bad_answer"])
    )
    # a message never holds a whole nested value
    assert all(len(example) < 300 for examples in items.issues.examples.values() for example in examples)


def test_template_fields_must_be_scalars_and_only_theirs_are_read(tmp_path):
    rows = [
        {"sentence": "Je vas au dépanneur.", "label": 1, "meta": [[[[1]]]]},
        {"sentence": 3.5, "label": 0},
        {"sentence": ["a"], "label": 0},
        {"sentence": None, "label": 0},
    ]
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(r) for r in rows])
    items = read_choices(path, template="Phrase : {sentence}", choices=["non", "oui"], answer_field="label")
    assert [item.prompt for item in items.items] == ["Phrase : Je vas au dépanneur.", "Phrase : 3.5"]
    assert items.issues.counts == {"template_field": 2}
    assert items.issues.examples["template_field"][0].endswith(
        "field 'sentence' must be a string, a number or a boolean, got a JSON array of 1 item(s)"
    )


def test_a_bad_pair_row_of_any_kind_is_counted_with_its_line(tmp_path):
    bad = [
        DEEP,
        json.dumps({**GOOD_PAIR, "sentence_bad": "\ud800"}),
        json.dumps({**GOOD_PAIR, "sentence_good": ["Il fait frette."]}),
        json.dumps({"sentence_a": "a", "sentence_b": "b", "label": [0]}),
        json.dumps({"sentence_a": "a", "sentence_b": "b", "label": float("nan")}),
        json.dumps({"sentence_a": "a", "sentence_b": "b", "label": "²"}),
        b"\xc3(",
    ]
    rows = [json.dumps({**GOOD_PAIR, "phenomenon": [[["x"]]], "UID": 7}), *bad]
    pairs = read_pairs(write_lines(tmp_path / "p.jsonl", rows))
    assert [(p.line, p.phenomenon) for p in pairs.pairs] == [(1, "7")]  # a list is no phenomenon name
    assert pairs.issues.total() == len(bad)
    assert pairs.issues.counts["bad_label"] == 3


def test_a_text_line_that_is_not_utf8_is_counted_and_skipped(tmp_path, tiny_tokenizer):
    path = write_lines(tmp_path / "val.txt", ["Il fait frette.", b"caf\xe9", "", "On s'en va."])
    docs = load_documents(path, tiny_tokenizer)
    assert docs.texts == ["Il fait frette.", "On s'en va."]
    assert docs.issues.counts == {"not_utf8": 1}
    assert docs.issues.first_example().startswith(f"{path}:2: not valid UTF-8")
    with pytest.raises(InputError, match=r"bad\.txt: no documents to evaluate; 1 bad line\(s\), first: "):
        load_documents(write_lines(tmp_path / "bad.txt", [b"\xff"]), tiny_tokenizer)
    memory = load_documents(["Il fait frette.", "\ud800"], tiny_tokenizer)
    assert memory.texts == ["Il fait frette."] and memory.issues.counts == {"not_utf8": 1}


def test_brief_describes_any_value_in_a_few_characters():
    assert brief("²") == "'²'"
    assert brief([[[[]]]]) == "a JSON array of 1 item(s)"
    assert brief({"a": 1}) == "a JSON object of 1 item(s)"
    assert len(brief("x" * 10_000)) == 40
    assert brief(float("nan")) == "nan"


# --- property: random JSON of any depth never makes a reader raise anything but "no usable rows" ---

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_keys = st.sampled_from(
    [
        "sentence_good",
        "sentence_bad",
        "sentence_a",
        "sentence_b",
        "label",
        "prompt",
        "choices",
        "answer",
        "chat",
        "sentence",
        "phenomenon",
        "UID",
        "category",
    ]
) | st.text(max_size=4)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_rows = st.dictionaries(_keys, _json | st.sampled_from(["0", "1", "²", "\ud800", "oui", "<s>"]), max_size=6)


@st.composite
def _line(draw) -> str | bytes:
    kind = draw(st.sampled_from(["row", "row", "value", "deep", "text", "bytes"]))
    if kind == "row":
        return json.dumps(draw(_rows))
    if kind == "value":
        return json.dumps(draw(_json))
    if kind == "deep":  # nesting of any depth, around and beyond the decoder's recursion limit
        depth = draw(st.integers(1, 5000))
        inner = json.dumps(draw(_rows))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return opener * depth + inner + closer * depth
    if kind == "text":
        return draw(st.text(alphabet=string.printable.replace("\n", "").replace("\r", ""), max_size=20))
    return draw(st.binary(max_size=12)).replace(b"\n", b"")


def _readers(path: Path):
    """``(name, read)``: each reader of JSON rows, ``read()`` giving ``(usable rows, bad rows)``."""
    template = {"template": "{sentence} ?", "choices": ["non", "oui"], "answer_field": "label"}
    yield "pairs", lambda: (lambda s: (len(s.pairs), s.issues))(read_pairs(path))
    yield "pairs by label", lambda: (lambda s: (len(s.pairs), s.issues))(read_pairs(path, group_by="label"))
    yield "choice", lambda: (lambda s: (len(s.items), s.issues))(read_choices(path))
    yield "choice template", lambda: (lambda s: (len(s.items), s.issues))(read_choices(path, **template))


@given(lines=st.lists(_line(), min_size=1, max_size=8))
def test_random_json_of_any_depth_never_breaks_a_reader(tmp_path_factory, lines):
    path = write_lines(tmp_path_factory.mktemp("rows") / "rows.jsonl", [*lines, DEEP])
    non_blank = sum(1 for line in path.read_bytes().split(b"\n") if line.decode("utf-8", "replace").strip())
    issues = IssueLog()
    assert len(list(iter_rows(path, issues))) + issues.total() == non_blank
    for name, read in _readers(path):
        try:
            usable, bad = read()
        except InputError as exc:
            assert str(exc).startswith(f"{path}: no usable"), name
        else:  # every line is a usable row or a counted bad row
            assert usable >= 1 and usable + bad.total() == non_blank, name


@given(lines=st.lists(st.binary(max_size=16) | st.text(max_size=16).map(str.encode), min_size=1, max_size=8))
def test_random_bytes_never_break_the_text_reader(tmp_path_factory, tiny_tokenizer, lines):
    path = write_lines(
        tmp_path_factory.mktemp("docs") / "val.txt", [line.replace(b"\n", b"") for line in lines]
    )
    try:
        docs = load_documents(path, tiny_tokenizer)
    except InputError as exc:
        assert str(exc).startswith(f"{path}: no documents to evaluate")
    else:
        assert len(docs.texts) == len(docs.tokens) >= 1
        assert all(text == text.strip() and text for text in docs.texts)
