"""Hostile input: line endings, byte-order marks, lone surrogates, huge lines, runs that keep nothing,
random bytes and random JSON (property-based). Never a traceback; every good line kept; every input
line accounted for: records = documents + reader problems, documents = kept + dropped."""

from __future__ import annotations

import json
import string
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qckit.errors import InputError
from qckit.prepare import run_prepare
from qckit.recipe import build_recipe
from qckit_builtins.readers import TxtReader
from qckit_builtins.readers.lines import iter_lines

GOOD = [
    "Mon chum pis moi, on est allés magasiner au centre-ville samedi passé.",
    "Il fait frette en maudit à matin, mets ta tuque avant de sortir dehors.",
    "Le dépanneur du coin vend encore des chips au ketchup pis du lait en sac.",
    "On a jasé longtemps de la cabane à sucre avec ma blonde hier soir.",
]


def prepare(inputs, out, **prepare):
    recipe = build_recipe(
        {
            "prepare": {
                "inputs": [str(p) for p in inputs],
                "output": str(out),
                "workers": 1,
                "merge": True,
                "splitter": {"use": "random", "val_split": 0.0},
                **prepare,
            }
        }
    )
    assert recipe.prepare is not None
    return run_prepare(recipe.prepare)


def kept_lines(out: Path) -> list[str]:
    return (out / "train.txt").read_text(encoding="utf-8").splitlines()


#: reader issues that repair a record (it still becomes a document); every other kind skips it
REPAIRS = {"decoded_cp1252", "lone_surrogate", "leading_bom"}


def accounted(stats: dict) -> None:
    """Every record is a document or a reader problem; every document is kept or dropped."""
    problems = sum(info["count"] for kind, info in stats["reader_issues"].items() if kind not in REPAIRS)
    dropped = sum(f["dropped"] for f in stats["filters"].values())
    assert stats["records"] == stats["documents"] + problems
    assert stats["documents"] == stats["kept"] + dropped


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r", "mixed"])
def test_every_line_ending_splits_documents(tmp_path, ending):
    lines = [f"{GOOD[i % 4]} Ligne numéro {i}." for i in range(400)]
    if ending == "mixed":
        data = "".join(line + ("\n", "\r\n", "\r")[i % 3] for i, line in enumerate(lines))
    else:
        data = ending.join(lines) + ending
    src = tmp_path / "c.txt"
    src.write_bytes(data.encode())
    result = prepare([src], tmp_path / "out", writers=[{"use": "txt"}, {"use": "jsonl"}])
    assert kept_lines(tmp_path / "out") == lines
    rows = [
        json.loads(r) for r in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [r["line"] for r in rows] == list(range(1, 401))
    assert result.stats["records"] == 400


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32"])
def test_a_utf16_or_utf32_file_with_a_byte_order_mark_is_decoded(tmp_path, codec):
    text = "\n".join(GOOD) + "\n"
    bom = {
        "utf-16-le": b"\xff\xfe",
        "utf-16-be": b"\xfe\xff",
        "utf-32-le": b"\xff\xfe\x00\x00",
        "utf-32-be": b"\x00\x00\xfe\xff",
    }
    data = bom.get(codec, b"") + text.encode(codec)  # "utf-16"/"utf-32" write their own mark
    src = tmp_path / "c.txt"
    src.write_bytes(data)
    result = prepare([src], tmp_path / "out")
    assert kept_lines(tmp_path / "out") == GOOD
    assert "decoded_cp1252" not in result.stats["reader_issues"]


def test_wide_text_that_cannot_be_read_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe" + "Bonjour\n".encode("utf-16-le") + b"\x00\xd8\x41")  # a lone high surrogate
    with pytest.raises(InputError) as err:
        prepare([bad], tmp_path / "out")
    assert str(err.value).startswith(f"{bad}: not valid UTF-16") and "\n" not in str(err.value)
    nobom = tmp_path / "nobom.txt"
    nobom.write_bytes(("\n".join(GOOD) + "\n").encode("utf-16-le"))
    with pytest.raises(InputError, match="looks like UTF-16 or UTF-32 text without a byte-order mark"):
        prepare([nobom], tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_lone_surrogates_are_repaired_and_counted_in_texts_ids_and_rejects(tmp_path):
    rows = [
        json.dumps({"text": GOOD[0]}),
        '{"text": "Une phrase avec un \\ud800 tout seul, pis ça marche pareil icitte.", "id": "a\\udfff"}',
        '{"text": "lol \\udc00", "id": 3}',  # dropped (too short): the reject is written too
        '{"text": "Un emoji \\ud83d\\ude00 en paire valide, pas de problème pantoute."}',
    ]
    src = tmp_path / "c.jsonl"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = prepare([src], out, rejects=True, writers=[{"use": "txt"}, {"use": "jsonl"}])
    issues = result.stats["reader_issues"]
    assert issues["lone_surrogate"]["count"] == 2
    assert issues["lone_surrogate"]["examples"][0].startswith(f"{src}:2:")
    kept = [json.loads(r) for r in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (
        kept[1]["text"].startswith("Une phrase avec un \ufffd tout seul")
        and kept[1]["meta"]["id"] == "a\ufffd"
    )
    assert "😀" in kept[2]["text"]
    rejected = [json.loads(r) for r in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rejected[0]["text"] == "lol \ufffd"
    accounted(result.stats)


def test_jsonl_files_joined_with_cat_keep_every_record_and_count_the_inner_marks(tmp_path):
    parts = [
        "\ufeff"
        + "".join(json.dumps({"text": f"{GOOD[i % 4]} Partie {p}, ligne {i}."}) + "\n" for i in range(3))
        for p in range(4)
    ]
    src = tmp_path / "joined.jsonl"
    src.write_bytes("".join(parts).encode())  # each part starts with its own byte-order mark
    result = prepare([src], tmp_path / "out", writers=[{"use": "txt"}])
    assert len(kept_lines(tmp_path / "out")) == 12
    issues = result.stats["reader_issues"]
    assert issues["leading_bom"]["count"] == 3  # the file's own mark is no problem
    assert issues["leading_bom"]["examples"][0].endswith(
        "joined.jsonl:4: byte-order mark at the start of the line removed"
    )
    accounted(result.stats)


def test_a_line_longer_than_max_line_bytes_is_counted_and_skipped_while_streaming(tmp_path):
    src = tmp_path / "c.txt"
    with open(src, "wb") as f:
        f.write((GOOD[0] + "\n").encode())
        f.write(b"x" * (3 << 20))  # one 3 MiB line …
        f.write(("\n" + GOOD[1] + "\r" + GOOD[2] + "\n").encode())  # … then good lines
    result = prepare([src], tmp_path / "out", max_line_bytes=1 << 20, writers=[{"use": "jsonl"}])
    rows = [
        json.loads(r) for r in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [(r["line"], r["text"]) for r in rows] == [(1, GOOD[0]), (3, GOOD[1]), (4, GOOD[2])]
    too_long = result.stats["reader_issues"]["line_too_long"]
    assert too_long["count"] == 1 and too_long["examples"][0].startswith(f"{src}:2: line of 3,145,728 bytes")
    accounted(result.stats)


def test_one_huge_line_is_never_held_in_memory(tmp_path):
    src = tmp_path / "huge.txt"
    with open(src, "wb") as f:
        for _ in range(48):
            f.write(b"y" * (1 << 20))  # a single 48 MiB line
        f.write(b"\nfin\n")
    tracemalloc.start()
    try:
        records = list(TxtReader().records(src, 1 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [type(r).__name__ for r in records] == ["SkippedRecord", "bytes"] and records[1] == b"fin"
    assert peak < 6 << 20, f"peak {peak >> 20} MiB while skipping a 48 MiB line"


def test_a_run_that_keeps_nothing_fails_and_writes_nothing(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("lol\nok\n12345 67890\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        prepare([src], tmp_path / "out")
    message = str(err.value)
    assert message == f"{src}: no document kept: the filters dropped all 3 (length 2, min_words 1)"
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_the_cli_exits_non_zero_when_nothing_is_kept(tmp_path):
    from rich.console import Console

    from qckit.cli import main

    src = tmp_path / "c.txt"
    src.write_text("lol\n", encoding="utf-8")
    console = Console(width=200, record=True)
    assert main(["prepare", "--input", str(src), "--output", str(tmp_path / "o")], console=console) == 3
    assert "no document kept" in console.export_text()


# -- property-based: random bytes and random JSON ---------------------------------------------------

_good_text = st.text(alphabet=string.ascii_letters + "éèàçôœ’«» ", min_size=1, max_size=60).map(
    lambda t: f"Bon {t.strip() or 'x'} fin"
)
_garbage = st.binary(max_size=80)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
_settings = settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _no_filters(inputs, out):
    return prepare(inputs, out, normalizers=[], filters=[], writers=[{"use": "jsonl"}], max_line_bytes=1024)


@_settings
@given(
    parts=st.lists(
        st.one_of(_good_text.map(lambda t: ("good", t)), _garbage.map(lambda b: ("junk", b))), max_size=40
    )
)
def test_random_bytes_never_crash_the_txt_reader_and_every_good_line_is_kept(tmp_path_factory, parts):
    tmp = tmp_path_factory.mktemp("txt")
    data = b"".join((p.encode() if kind == "good" else p) + b"\n" for kind, p in parts)
    if not data.strip(b"\r\n\t \x0b\x0c") or data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return  # empty inputs and wide byte-order marks are tested above
    src = tmp / "c.txt"
    src.write_bytes(b"\n" + data)  # a leading line ending: junk never opens the file as a BOM
    try:
        result = _no_filters([src], tmp / "out")
    except InputError as err:  # only a whole-file refusal: nothing to keep
        assert "\n" not in str(err) and ("no documents found" in str(err) or "NUL bytes" in str(err))
        return
    texts = [
        json.loads(r)["text"] for r in (tmp / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    goods = [p for kind, p in parts if kind == "good"]
    it = iter(texts)
    assert all(any(t == g for t in it) for g in goods), "a good line was lost"
    accounted(result.stats)


@_settings
@given(
    rows=st.lists(
        st.one_of(
            _good_text.map(lambda t: ("good", json.dumps({"text": t, "id": t[:5]}))),
            _json_values.map(lambda v: ("junk", json.dumps(v))),
            st.text(max_size=40).map(lambda t: ("junk", t.replace("\n", " ").replace("\r", " "))),
            st.sampled_from(
                [
                    '{"text": "\\ud800"}',
                    '{"text": "a\\udfffb", "id": "\\ud811"}',
                    "{",
                    "[1]",
                    '{"text": null}',
                ]
            ).map(lambda t: ("junk", t)),
        ),
        max_size=30,
    )
)
def test_random_json_never_crashes_the_jsonl_reader_and_every_good_record_is_kept(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("jsonl")
    src = tmp / "c.jsonl"
    src.write_bytes(("\n" + "\n".join(r for _, r in rows) + "\n").encode("utf-8", "surrogatepass"))
    try:
        result = _no_filters([src], tmp / "out")
    except InputError as err:
        assert "\n" not in str(err) and "no documents found" in str(err)
        assert not any(kind == "good" for kind, _ in rows)
        return
    texts = [
        json.loads(r)["text"] for r in (tmp / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    goods = [json.loads(r)["text"] for kind, r in rows if kind == "good"]
    it = iter(texts)
    assert all(any(t == g for t in it) for g in goods), "a good record was lost"
    accounted(result.stats)


def test_iter_lines_handles_every_ending_across_read_sizes(tmp_path):
    data = b"a\r\nb\rc\n\rd\r\r\ne"
    path = tmp_path / "c.txt"
    path.write_bytes(data)
    expected = [b"a", b"b", b"c", b"", b"d", b"", b"e"]
    for size in (1, 2, 3, 64):
        assert list(iter_lines(path, chunk_size=size)) == expected


@settings(
    max_examples=80,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.binary(max_size=400).map(lambda b: b.replace(b"\x00", b"a")),
    size=st.sampled_from([1, 3, 16, 64, 4096]),
    limit=st.sampled_from([8, 1 << 20]),  # 8: lines longer than that are skipped, also across ranges
)
def test_byte_ranges_of_a_file_together_read_exactly_what_the_whole_file_reads(
    tmp_path_factory, data, size, limit
):
    from qckit_builtins.readers.lines import byte_ranges

    path = tmp_path_factory.mktemp("ranges") / "c.txt"
    path.write_bytes(b"x" + data)  # never a byte-order mark at the start
    whole = [
        r if isinstance(r, bytes) else r.kind for r in iter_lines(path, chunk_size=7, max_line_bytes=limit)
    ]
    ranges = byte_ranges(path, size)
    assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(a < b for a, b in ranges) and all(
        b == c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False)
    )
    parts = [
        r if isinstance(r, bytes) else r.kind
        for a, b in ranges
        for r in iter_lines(path, chunk_size=5, start=a, end=b, max_line_bytes=limit)
    ]
    assert parts == whole
