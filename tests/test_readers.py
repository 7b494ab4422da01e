"""Built-in readers: streaming lines, decoding, JSON Lines errors, gzip, and unusable input files."""

from __future__ import annotations

import gzip
import json
import pickle
import tracemalloc
from pathlib import Path

import pytest

from qckit.components import Document, IssueLog
from qckit.errors import InputError, RecordError
from qckit.kinds import kind
from qckit_builtins.readers import JsonlReader, TxtReader, check_input_file, iter_lines, register_readers

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def read_all(reader, path: Path) -> tuple[list[Document], IssueLog]:
    """Run a reader over a file the way the pipeline does: records in order, parse each, count RecordErrors."""
    issues = IssueLog()
    docs = []
    for line, record in enumerate(reader.records(path), start=1):
        try:
            doc = reader.parse(record, str(path), line, issues)
        except RecordError as e:
            issues.add(e.kind, str(path), line, str(e))
            continue
        if doc is not None:
            docs.append(doc)
    return docs, issues


def test_readers_are_registered_and_follow_the_protocol():
    registered = []
    register_readers(registered.append)
    assert {cls.name: cls.suffixes for cls in registered} == {
        "txt": (".txt", ".txt.gz"),
        "jsonl": (".jsonl", ".jsonl.gz"),
    }
    for cls in registered:
        assert kind("reader").missing(cls) == ()


def test_txt_one_document_per_line_with_line_numbers_and_counted_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("Première ligne, ben correcte.\n\n   \nDeuxième ligne astheure.\n".encode())
    docs, issues = read_all(TxtReader(), path)
    assert [(d.text, d.line, d.source) for d in docs] == [
        ("Première ligne, ben correcte.", 1, str(path)),
        ("Deuxième ligne astheure.", 4, str(path)),
    ]
    assert issues.counts == {"blank_line": 2}
    assert issues.examples["blank_line"][0] == f"{path}:2: blank line skipped"


def test_bom_crlf_and_final_cr_are_stripped(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbfJ'ai fini ma job.\r\nOn va jaser demain.\r\nPis toute est correct.\r")
    docs, issues = read_all(TxtReader(), path)
    assert [d.text for d in docs] == ["J'ai fini ma job.", "On va jaser demain.", "Pis toute est correct."]
    assert not issues


def test_bom_is_only_removed_at_the_start_of_the_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"un\n\xef\xbb\xbfdeux\n")
    assert list(iter_lines(path)) == [b"un", b"\xef\xbb\xbfdeux"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"\xef\xbb\xbfab\r\n\r\ncd\ref\n\ngh\r\nlast line without newline\r",
            [b"ab", b"", b"cd", b"ef", b"", b"gh", b"last line without newline"],  # \r ends a line too
        ),
        (b"a\n", [b"a"]),
        (b"\xef\xbb\xbf\n", [b""]),
        (b"\xef\xbb\xbfx", [b"x"]),
        (b"a\nb", [b"a", b"b"]),
        (b"\n\n", [b"", b""]),
        (
            b"une ligne beaucoup plus longue que les morceaux lus\r\nfin",
            [b"une ligne beaucoup plus longue que les morceaux lus", b"fin"],
        ),
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64])
def test_lines_are_the_same_whatever_the_read_size(tmp_path, data, expected, chunk_size):
    path = tmp_path / "c.txt"
    path.write_bytes(data)
    assert list(iter_lines(path, chunk_size=chunk_size)) == expected


def test_records_stream_with_bounded_memory(tmp_path):
    path = tmp_path / "big.txt"
    line = "Y fait frette à matin, oublie pas ta tuque pis tes mitaines en sortant dehors.\n".encode()
    with open(path, "wb") as f:
        for _ in range(40):
            f.write(line * 10_000)  # 40 x ~0.8 MB = ~33 MB
    tracemalloc.start()
    try:
        count = sum(1 for _ in TxtReader().records(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 400_000
    assert peak < 8 * 2**20, (
        f"peak {peak / 2**20:.1f} MiB while reading a {path.stat().st_size >> 20} MiB file"
    )


def test_invalid_utf8_line_is_decoded_as_cp1252_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(
        "Avant la ligne brisée.\n".encode()
        + "Ça coûte cher, l'épicerie.".encode("cp1252")
        + b"\n"
        + "Après la ligne brisée, toute est correct.\n".encode()
    )
    docs, issues = read_all(TxtReader(), path)
    assert [d.text for d in docs] == [
        "Avant la ligne brisée.",
        "Ça coûte cher, l'épicerie.",
        "Après la ligne brisée, toute est correct.",
    ]
    assert issues.counts == {"decoded_cp1252": 1}
    assert issues.examples["decoded_cp1252"] == [f"{path}:2: not valid UTF-8, decoded as cp1252"]


def test_cp1252_fallback_never_fails_and_keeps_valid_utf8_in_a_mixed_line():
    issues = IssueLog()
    # 0x80 0x92 are cp1252 (euro sign, right quote); 0x81 0x8D 0x8F 0x90 0x9D are undefined there.
    doc = TxtReader().parse(b"\x80 l\x92eau \x81\x8d\x8f\x90\x9d", "f.txt", 3, issues)
    assert doc.text == "€ l’eau \x81\x8d\x8f\x90\x9d"
    mixed = "déjà valide, ".encode() + "pis brisé".encode("cp1252")
    assert TxtReader().parse(mixed, "f.txt", 4, issues).text == "déjà valide, pis brisé"
    assert issues.counts == {"decoded_cp1252": 2}


def test_gzip_files_give_the_same_documents(tmp_path):
    lines = ["Le Canadien a gagné hier soir.", "", "La cabane à sucre ouvre en mars."]
    plain = tmp_path / "c.txt"
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    packed = tmp_path / "c.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert [d.text for d in read_all(TxtReader(), packed)[0]] == [
        d.text for d in read_all(TxtReader(), plain)[0]
    ]

    jpacked = tmp_path / "c.jsonl.gz"
    jpacked.write_bytes(gzip.compress(b'{"text": "Bonjour, comment \\u00e7a va?"}\n{"content": "Salut!"}\n'))
    assert [d.text for d in read_all(JsonlReader(), jpacked)[0]] == ["Bonjour, comment ça va?", "Salut!"]


def test_a_file_named_gz_that_is_not_gzip_is_an_input_error(tmp_path):
    path = tmp_path / "c.txt.gz"
    path.write_bytes(b"pas du gzip pantoute\n")
    with pytest.raises(InputError, match="corrupt gzip") as info:
        list(TxtReader().records(path))
    assert str(path) in str(info.value)


def test_a_truncated_gzip_is_an_input_error(tmp_path):
    path = tmp_path / "c.txt.gz"
    data = gzip.compress(("Une ligne de texte pas mal ordinaire.\n" * 5000).encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt gzip") as info:
        list(TxtReader().records(path))
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory, expected a file"),
        (lambda p: p.write_bytes(b""), "file is empty"),
    ],
)
def test_check_input_file_rejects_unusable_files(tmp_path, make, message):
    path = tmp_path / "corpus.txt"
    make(path)
    with pytest.raises(InputError) as info:
        check_input_file(path)
    assert str(info.value) == f"{path}: {message}"
    assert info.value.path == str(path)


def test_check_input_file_accepts_a_normal_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("Allo\n", encoding="utf-8")
    check_input_file(path)


@pytest.mark.parametrize(
    ("make", "message"), [(lambda p: None, "no such file"), (lambda p: p.mkdir(), "is a directory")]
)
def test_records_on_a_missing_file_or_directory_is_an_input_error(tmp_path, make, message):
    for name in ("c.txt", "c.txt.gz"):
        path = tmp_path / name
        make(path)
        with pytest.raises(InputError, match=message) as info:
            list(TxtReader().records(path))
        assert str(path) in str(info.value)


def test_jsonl_text_fields_fallback_and_id(tmp_path):
    path = tmp_path / "c.jsonl"
    records = [
        {"text": "Le texte principal.", "content": "ignoré"},
        {"content": "Dans le champ content."},
        {"sentence": "Dans le champ sentence."},
        {"id": "forum-7", "text": "Avec un identifiant.", "likes": 3},
        {"id": 12, "text": "Identifiant numérique."},
        {"id": True, "text": "Un booléen n'est pas un identifiant."},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    docs, issues = read_all(JsonlReader(), path)
    assert [d.text for d in docs] == [
        "Le texte principal.",
        "Dans le champ content.",
        "Dans le champ sentence.",
        "Avec un identifiant.",
        "Identifiant numérique.",
        "Un booléen n'est pas un identifiant.",
    ]
    assert [d.meta for d in docs] == [{}, {}, {}, {"id": "forum-7"}, {"id": 12}, {}]
    assert [d.line for d in docs] == [1, 2, 3, 4, 5, 6]
    assert not issues


def test_jsonl_every_bad_record_kind_is_counted_with_its_position(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        '{"text": "Une bonne ligne pour commencer."}',
        '{"text": "Il manque une accolade"',
        '["une", "liste"]',
        '{"titre": "Pas de texte ici"}',
        '{"text": null}',
        '{"text": 42}',
        "",
        '{"text": "   "}',
        '{"text": "Une bonne ligne pour finir."}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    docs, issues = read_all(JsonlReader(), path)
    assert [d.text for d in docs] == ["Une bonne ligne pour commencer.", "Une bonne ligne pour finir."]
    assert issues.counts == {
        "invalid_json": 1,
        "not_an_object": 1,
        "missing_text": 1,
        "null_text": 1,
        "text_not_string": 1,
        "blank_line": 1,
        "empty_text": 1,
    }
    ex = {kind: examples[0] for kind, examples in issues.examples.items()}
    assert ex["invalid_json"].startswith(f"{path}:2: invalid JSON: ")
    assert ex["not_an_object"] == f"{path}:3: expected a JSON object, got an array"
    assert ex["missing_text"] == f'{path}:4: no text field (tried "text", "content", "sentence")'
    assert ex["null_text"] == f'{path}:5: field "text" is null'
    assert ex["text_not_string"] == f'{path}:6: field "text" is a number, expected a string'
    assert ex["blank_line"] == f"{path}:7: blank line skipped"
    assert ex["empty_text"].startswith(f"{path}:8: ")


def test_jsonl_custom_field_has_no_fallback_unless_asked():
    issues = IssueLog()
    record = b'{"content": "Dans content.", "body": null}'
    with pytest.raises(RecordError) as info:
        JsonlReader(field="corps").parse(record, "f.jsonl", 1, issues)
    assert info.value.kind == "missing_text" and '"corps"' in str(info.value)
    doc = JsonlReader(field="corps", fallback_fields=["content"]).parse(record, "f.jsonl", 1, issues)
    assert doc.text == "Dans content."
    with pytest.raises(RecordError, match='tried "text"\\)'):
        JsonlReader(fallback_fields=[]).parse(record, "f.jsonl", 1, issues)


def test_jsonl_line_that_is_not_utf8_is_decoded_as_cp1252():
    issues = IssueLog()
    record = '{"text": "Ça coûte cher."}'.encode("cp1252")
    assert JsonlReader().parse(record, "f.jsonl", 9, issues).text == "Ça coûte cher."
    assert issues.examples["decoded_cp1252"] == ["f.jsonl:9: not valid UTF-8, decoded as cp1252"]


def test_jsonl_line_that_starts_with_a_bom_is_read_and_counted(tmp_path):
    # two files joined with cat: the second one's byte-order mark opens a line in the middle
    first = b'{"text": "Premier fichier, premier record."}\n'
    second = b'\xef\xbb\xbf{"text": "Deuxi\xc3\xa8me fichier, sa marque au d\xc3\xa9but."}\n'
    path = tmp_path / "joined.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + first + second + first)
    docs, issues = read_all(JsonlReader(), path)
    assert [d.line for d in docs] == [1, 2, 3]
    assert docs[1].text == "Deuxième fichier, sa marque au début."
    # the file's own mark is no problem; the one inside is counted where it is
    assert issues.counts == {"leading_bom": 1}
    assert issues.examples["leading_bom"] == [f"{path}:2: byte-order mark at the start of the line removed"]


def test_a_leading_bom_reads_the_same_from_blocks_and_from_byte_ranges(tmp_path):
    rows = [f'{{"text": "Ligne {i} du corpus joint."}}\n'.encode() for i in range(300)]
    data = b"".join(b"\xef\xbb\xbf" + r if i % 7 == 0 else r for i, r in enumerate(rows))
    path = tmp_path / "joined.jsonl"
    path.write_bytes(data)
    reader = JsonlReader()

    def parsed(records) -> tuple[list[tuple[str, int]], dict]:
        issues = IssueLog(max_examples=100)
        docs = [reader.parse(r, "f", n, issues) for n, r in enumerate(records, start=1)]
        return [(d.text, d.line) for d in docs], issues.counts

    whole = parsed(reader.records(path))
    blocks = parsed(r for block in reader.record_blocks(path) for r in block.records())
    ranges = parsed(
        r for start, end in reader.byte_ranges(path, 1000) for r in reader.records_between(path, start, end)
    )
    assert len(reader.byte_ranges(path, 1000)) > 5
    assert whole == blocks == ranges
    assert whole[1] == {"leading_bom": 42}  # line 1's mark is the file's: dropped by the line reader
    assert [text for text, _ in whole[0]] == [f"Ligne {i} du corpus joint." for i in range(300)]


def test_reader_constructors_validate_and_readers_pickle():
    with pytest.raises(ValueError, match="field"):
        JsonlReader(field="")
    with pytest.raises(ValueError, match="fallback_fields"):
        JsonlReader(fallback_fields=["ok", 3])
    reader = pickle.loads(pickle.dumps(JsonlReader(field="body", fallback_fields=["texte"])))
    assert reader.parse(b'{"texte": "Allo"}', "f", 1, IssueLog()).text == "Allo"


def test_sample_corpus_reads_as_documented():
    txt = SAMPLE / "quebec_sample.txt"
    jsonl = SAMPLE / "quebec_sample.jsonl"
    assert txt.stat().st_size + jsonl.stat().st_size < 200_000
    docs, issues = read_all(TxtReader(), txt)
    assert 380 <= len(docs) <= 420
    assert issues.counts["decoded_cp1252"] >= 1
    assert set(issues.counts) <= {"decoded_cp1252", "blank_line"}
    assert "Ça coûte cher, l'épicerie, depuis l'été passé." in {d.text for d in docs}

    jdocs, jissues = read_all(JsonlReader(), jsonl)
    assert 70 <= len(jdocs) <= 90
    bad = {k: v for k, v in jissues.counts.items() if k != "blank_line"}
    assert bad == {
        k: 1 for k in ("invalid_json", "not_an_object", "missing_text", "null_text", "text_not_string")
    }


def test_txt_parse_batch_equals_parse_per_record():
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "data" / "sample" / "quebec_sample.txt"
    records = list(TxtReader().records(sample))
    for chunk in (records, [b"", b"  ", "Ça coûte cher".encode("cp1252"), "déjà".encode()]):
        a, b = IssueLog(), IssueLog()
        one = [TxtReader().parse(r, "s", i, a) for i, r in enumerate(chunk, start=1)]
        many = TxtReader().parse_batch(chunk, "s", 1, b)
        assert one == many
        assert a.counts == b.counts and a.examples == b.examples
