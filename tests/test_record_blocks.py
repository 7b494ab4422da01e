"""Reading in blocks of lines (``Reader.record_blocks``) gives what reading line by line gives: the same
records, the same skipped over-long lines, the same batches; and a file that ends with a skipped line
has no phantom blank line after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qckit.components import RecordBlock, SkippedRecord
from qckit.prepare import run_prepare
from qckit.prepare.inputs import InputFile, block_batches, record_batches
from qckit.recipe import build_recipe
from qckit_builtins.readers.lines import iter_blocks, iter_lines

pieces = st.lists(
    st.sampled_from([b"a", b"bb", b"\xc3\xa9", b"\n", b"\r", b"\r\n", b"\n\n", b"x" * 40, b" "]), max_size=80
).map(b"".join)


def flat(items) -> list:
    out: list = []
    for item in items:
        if isinstance(item, RecordBlock):
            assert item.count >= 1 and item.data.count(b"\n") == item.count - 1
            out.extend(item.records())
        else:
            out.append(("skipped", item.kind, item.message))
    return out


def as_records(items) -> list:
    return [("skipped", i.kind, i.message) if isinstance(i, SkippedRecord) else i for i in items]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=pieces, chunk=st.integers(1, 64), limit=st.integers(0, 60))
def test_blocks_are_the_lines(tmp_path: Path, data: bytes, chunk: int, limit: int) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    lines = as_records(iter_lines(path, chunk_size=chunk, max_line_bytes=limit))
    assert flat(iter_blocks(path, chunk_size=chunk, max_line_bytes=limit)) == lines


class _Owner:
    owner = "test"


@settings(max_examples=300)
@given(
    records=st.lists(
        st.one_of(
            st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), st.just(SkippedRecord("k", "m"))
        ),
        max_size=60,
    ),
    group=st.integers(1, 7),
    batch_bytes=st.integers(1, 90),
    first_line=st.integers(1, 3),
)
def test_block_batches_are_the_record_batches(records, group: int, batch_bytes: int, first_line: int) -> None:
    inp = InputFile(0, 0, "in.txt", "txt", 0)
    blocks: list = []
    run: list[bytes] = []
    for record in records:  # consecutive records in blocks of at most ``group``
        if run and (isinstance(record, SkippedRecord) or len(run) == group):
            blocks.append(RecordBlock(b"\n".join(run), len(run)))
            run = []
        if isinstance(record, SkippedRecord):
            blocks.append(record)
        else:
            run.append(record)
    if run:
        blocks.append(RecordBlock(b"\n".join(run), len(run)))

    def shape(batch):
        got = batch.records.records() if isinstance(batch.records, RecordBlock) else batch.records
        return (batch.first_line, got, batch.nbytes, batch.skipped, batch.n_records)

    expected = [shape(b) for b in record_batches(iter(records), inp, _Owner, first_line, batch_bytes)]
    assert [shape(b) for b in block_batches(iter(blocks), inp, _Owner, first_line, batch_bytes)] == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_ending_with_a_skipped_line_has_no_phantom_blank_line(tmp_path: Path, workers: int) -> None:
    good = "Mon chum pis moi, on est allés magasiner au centre-ville samedi passé."
    path = tmp_path / "in.txt"
    path.write_text(f"{good}\n{'x' * 5000}\n", encoding="utf-8")
    recipe = build_recipe(
        {
            "prepare": {
                "inputs": [str(path)],
                "output": str(tmp_path / "out"),
                "workers": workers,
                "max_line_bytes": 1024,
                "splitter": {"use": "random", "val_split": 0.0},
            }
        }
    )
    assert recipe.prepare is not None
    stats = run_prepare(recipe.prepare).stats
    assert stats["records"] == 2 and stats["documents"] == 1
    assert set(stats["reader_issues"]) == {"line_too_long"}
    saved = json.loads((tmp_path / "out" / "prepare_stats.json").read_text(encoding="utf-8"))
    assert saved["reader_issues"]["line_too_long"]["count"] == 1


def test_a_read_error_names_the_line_where_it_happened() -> None:
    from qckit.errors import InputError

    def records():
        yield from [b"ligne"] * 10
        raise OSError(5, "Input/output error")

    inp = InputFile(0, 0, "in.txt", "txt", 0)
    with pytest.raises(InputError, match=r"in\.txt:11: cannot read: Input/output error"):
        list(record_batches(records(), inp, _Owner, 1, 1 << 20))
