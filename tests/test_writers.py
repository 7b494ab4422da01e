"""Built-in writers: exactly one line per document, and JSON Lines that read back unchanged."""

from __future__ import annotations

import json

import pytest

from qckit.components import Document, IssueLog
from qckit.kinds import kind
from qckit_builtins.readers import JsonlReader, TxtReader
from qckit_builtins.writers import JsonlWriter, TxtWriter, register_writers

TRICKY = [
    "Une ligne normale avec des accents : é à ç œ « guillemets ».",
    "Deux lignes\ndans un document",
    "Fin de ligne Windows\r\net retour seul\rici",
    "Séparateurs Unicode\u2028ligne\u2029paragraphe\x85suivant\x0bvertical\x0cpage\x1cfichier",
    "Tabulation\tconservée et apostrophe ’ courbe",
]


def test_writers_are_registered_and_follow_the_protocol():
    registered = []
    register_writers(registered.append)
    assert {cls.name: cls.suffix for cls in registered} == {"txt": ".txt", "jsonl": ".jsonl"}
    for cls in registered:
        assert kind("writer").missing(cls) == ()


def test_txt_writer_writes_each_document_on_exactly_one_line(tmp_path):
    docs = [Document(t) for t in TRICKY]
    out = "".join(TxtWriter().format(d) for d in docs)
    assert out.endswith("\n")
    lines = out.splitlines()  # the strictest splitter: also breaks on \u2028, \x85, \x0b ...
    assert len(lines) == len(docs)
    assert lines[0] == TRICKY[0]
    assert lines[1] == "Deux lignes dans un document"
    assert lines[4] == TRICKY[4]
    path = tmp_path / "train.txt"
    path.write_text(out, encoding="utf-8")
    read, issues = [], IssueLog()
    for n, record in enumerate(TxtReader().records(path), 1):
        read.append(TxtReader().parse(record, str(path), n, issues).text)
    assert read == lines


def test_jsonl_writer_round_trips_unescaped_utf8(tmp_path):
    docs = [
        Document(
            t, source="corpus.txt", line=i + 1, meta={"id": f"d{i}", "lang": "fr"}, metrics={"marqueurs": 2.0}
        )
        for i, t in enumerate(TRICKY)
    ]
    out = "".join(JsonlWriter().format(d) for d in docs)
    assert "é à ç œ « guillemets »" in out  # ensure_ascii=False
    lines = out.splitlines()
    assert len(lines) == len(docs)
    for doc, line in zip(docs, lines, strict=True):
        assert json.loads(line) == {
            "text": doc.text,
            "source": "corpus.txt",
            "line": doc.line,
            "meta": doc.meta,
            "metrics": doc.metrics,
        }
    # and qckit's own jsonl reader reads the texts back
    path = tmp_path / "val.jsonl"
    path.write_text(out, encoding="utf-8")
    issues = IssueLog()
    back = [
        JsonlReader().parse(r, str(path), n, issues) for n, r in enumerate(JsonlReader().records(path), 1)
    ]
    assert [d.text for d in back] == TRICKY


def test_jsonl_writer_omits_empty_meta_and_can_write_text_only():
    doc = Document("Allo toé", source="a.txt", line=3)
    assert JsonlWriter().format(doc) == '{"text": "Allo toé", "source": "a.txt", "line": 3}\n'
    tagged = Document("Allo toé", source="a.txt", line=3, meta={"id": 1}, metrics={"m": 1.0})
    assert JsonlWriter(metadata=False).format(tagged) == '{"text": "Allo toé"}\n'


def test_jsonl_writer_rejects_a_non_boolean_metadata_setting():
    with pytest.raises(ValueError, match="metadata"):
        JsonlWriter(metadata="yes")


def test_txt_writer_batch_path_equals_the_per_document_one(varied_batches):
    writer = TxtWriter()
    for texts in varied_batches:
        docs = [Document(t) for t in texts]
        assert writer.format_batch(docs) == [writer.format(d) for d in docs]


def test_jsonl_writer_sorts_metrics_whatever_the_order_they_were_set_in():
    a = Document("x", "s", 1, metrics={"b": 1.0, "a": 2.0})
    b = Document("x", "s", 1, metrics={"a": 2.0, "b": 1.0})
    assert JsonlWriter().format(a) == JsonlWriter().format(b)
    assert '"metrics": {"a": 2.0, "b": 1.0}' in JsonlWriter().format(a)
