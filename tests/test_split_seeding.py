"""Split seeding through prepare: every (seed, input) pair gets its own validation draw, the draw of
each set is the splitter's own for that set, and the output does not depend on the number of workers,
also when the last batches of every file keep documents."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from qckit.prepare import run_prepare
from qckit.recipe import build_recipe
from qckit.testing import QUEBEC_WORDS
from qckit_builtins.splitters import RandomSplitter


def sentence(i: int, tag: str = "") -> str:
    return (
        f"{tag}Phrase {i}: "
        + " ".join(QUEBEC_WORDS[(i * 7 + k * 3) % len(QUEBEC_WORDS)] for k in range(7))
        + f" ({i})."
    )


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def prepare(inputs, out, **settings):
    table = {
        "inputs": [str(p) for p in inputs],
        "output": str(out),
        "workers": 1,
        "writers": [{"use": "jsonl"}],
        "splitter": {"use": "random", "val_split": 0.2, "seed": 42},
        **settings,
    }
    recipe = build_recipe({"prepare": table})
    assert recipe.prepare is not None
    return run_prepare(recipe.prepare)


def val_lines(out: Path, name: str) -> list[int]:
    rows = (out / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(r)["line"] for r in rows]


def test_two_equal_files_without_merge_get_different_validation_positions(tmp_path):
    lines = [sentence(i) for i in range(300)]
    a, b = write(tmp_path / "a.txt", lines), write(tmp_path / "b.txt", lines)
    no_dedup = [{"use": "length"}, {"use": "min_words"}]  # both files keep all 300 documents
    result = prepare([a, b], tmp_path / "out", filters=no_dedup, batch_bytes=1024)  # many batches per set
    assert [s["kept"] for s in result.stats["sets"]] == [300, 300]
    first, second = val_lines(tmp_path / "out", "val_1.jsonl"), val_lines(tmp_path / "out", "val_2.jsonl")
    assert len(first) == len(second) == 60
    assert first != second
    # and each set's draw is the splitter's own for that set (its start offset through prepare)
    for set_index, got in enumerate((first, second)):
        splitter = RandomSplitter(val_split=0.2, seed=42)
        splitter.start(300, set_index)
        assert got == [i + 1 for i in range(300) if splitter.is_val(i, None)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "seeds", [range(-40, 41), [2**32 - 1, 2**32, 2**32 + 1, 2**40, -(2**32), -(2**32) - 1, 2**64]]
)
def test_no_seed_and_file_index_pair_draws_like_another(seeds):
    draws = {}
    for seed, set_index in itertools.product(seeds, range(12)):
        splitter = RandomSplitter(val_split=0.1, seed=seed)
        splitter.start(2000, set_index)
        draws[(seed, set_index)] = tuple(splitter.is_val_batch(0, 2000))
    assert len(set(draws.values())) == len(draws)
    small = RandomSplitter(
        val_split=0.1, seed=0
    )  # the case a plain seed list would confuse: (2**32, 0) ≡ (0, 1)
    small.start(2000, 1)
    big = RandomSplitter(val_split=0.1, seed=2**32)
    big.start(2000, 0)
    assert small.is_val_batch(0, 2000) != big.is_val_batch(0, 2000)


def test_the_output_does_not_depend_on_the_workers_when_the_last_batches_keep_documents(tmp_path):
    files = []
    for f in range(3):
        lines = [sentence(i, f"F{f} ") for i in range(1200 + 150 * f)]
        lines[40 + f] = lines[10]  # a few duplicates, early, inside and across files
        lines[60] = sentence(5, "F0 ") if f else lines[60]
        files.append(write(tmp_path / f"f{f}.txt", lines))
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        result = prepare(files, out, workers=workers, batch_bytes=2048)
        outputs[workers] = {Path(p).name: Path(p).read_bytes() for p in result.stats["outputs"]}
        for f, path in enumerate(files):  # the last batch of every file kept documents
            last = len(path.read_text(encoding="utf-8").splitlines())
            rows = [
                json.loads(r)
                for part in ("train", "val")
                for r in (out / f"{part}_{f + 1}.jsonl").read_text().splitlines()
            ]
            assert last in {r["line"] for r in rows}
            assert sum(1 for r in rows if r["line"] > last - 20) == 20  # the whole last batch was kept
    assert outputs[1] == outputs[2]
    assert all(len(v) for v in outputs[1].values())
