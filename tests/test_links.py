"""An output directory that cannot be turned against its user: links planted where qckit keeps its own
files are refused by name and never followed, a planted shard results file never runs code, outputs
follow the umask."""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import re
import stat
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from rich.console import Console

from qckit import hookimpl
from qckit._fs import FileLock, atomic_write_bytes, remove_entry, staging_dir, staging_file
from qckit.cli import main
from qckit.components import Document, IssueLog
from qckit.defaults import PREPARE_DEFAULTS
from qckit.errors import ComponentError, InputError
from qckit.host import PluginHost
from qckit.prepare import resultfile, run_prepare
from qckit.prepare import shards as shard_mod
from qckit.prepare.work import BatchResult
from qckit.recipe import build_recipe
from qckit.testing import QUEBEC_WORDS


def sentence(i: int) -> str:
    words = [QUEBEC_WORDS[(i * 7 + k * 3) % len(QUEBEC_WORDS)] for k in range(6 + i % 5)]
    return f"Le numéro {i}, " + " ".join(words) + f" pour la {i % 13}e fois."


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    lines = [sentence(i) for i in range(300)]
    lines[200] = lines[7]  # a duplicate in another shard
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory that is not the output's, with a file in it (and one in a sub-directory)."""
    root = tmp_path / "outside"
    (root / "gen-1").mkdir(parents=True)
    (root / "precious.txt").write_text("keep me\n")
    (root / "gen-1" / "inner.txt").write_text("keep me too\n")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class InProcessShards:
    """An executor that reads its own shards, in this process (Ray's path through the pipeline, fast)."""

    name: ClassVar[str] = "links.shards"
    reads_inputs: ClassVar[bool] = True

    def __init__(self, shard_bytes: int = 4096) -> None:
        self.shard_bytes = shard_bytes

    def start(self, workers: int) -> int:
        return 1

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], shared: Any) -> Iterator[Any]:
        for item in items:
            yield fn(shared, item)

    def stop(self) -> None:
        pass


class ObjectPrints:
    """A stateful filter whose fingerprints are objects (not data): they cannot go into a results file."""

    name: ClassVar[str] = "links.object_prints"
    stateful: ClassVar[bool] = True

    def fingerprint(self, doc: Document) -> Any:
        return object()

    def drop_reasons(self, fingerprints):
        return [None] * len(fingerprints)


class LinksPlugin:
    @hookimpl
    def register_executors(self, register):
        register(InProcessShards)

    @hookimpl
    def register_filters(self, register):
        register(ObjectPrints)


def prepare(inp: Path, out: Path, **settings: Any):
    host = PluginHost.from_entry_points(extra=[("links", LinksPlugin())])
    table = {"inputs": [str(inp)], "output": str(out), "batch_bytes": 1024, **settings}
    recipe = build_recipe({"prepare": table}, host=host)
    assert recipe.prepare is not None
    return run_prepare(recipe.prepare)


def refused(path: Path, target: str | Path | None = None) -> str:
    """The one-line error naming the link ``path``."""
    where = re.escape(str(path))
    to = re.escape(str(target)) if target is not None else ".*"
    return rf"^{where}: is a link to {to}, not one qckit made: remove it or choose another output$"


# -- prepare: links planted in the output directory ------------------------------------------------


@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
def test_a_lock_that_is_a_link_is_refused_and_nothing_is_truncated_or_created(tmp_path, corpus, dangling):
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("keep me\n")
    state = tmp_path / "out" / ".qckit"
    state.mkdir(parents=True)
    os.symlink(victim, state / "lock")
    with pytest.raises(InputError, match=refused(state / "lock", victim)):
        prepare(corpus, tmp_path / "out")
    if dangling:
        assert not os.path.lexists(victim)
    else:
        assert victim.read_text() == "keep me\n"
    assert os.readlink(state / "lock") == str(victim)  # the user's link is theirs to remove


@pytest.mark.parametrize("kind", ["file", "dangling", "fifo"])
def test_the_lock_itself_never_opens_a_link_or_a_fifo(tmp_path, kind):
    victim = tmp_path / "victim"
    if kind == "file":
        victim.write_text("keep me\n")
    lock = tmp_path / "lock"
    if kind == "fifo":
        os.mkfifo(lock)
        match = rf"^{re.escape(str(lock))}: is not a file qckit made: remove it or choose another output$"
    else:
        os.symlink(victim, lock)
        match = refused(lock, victim)
    with pytest.raises(InputError, match=match):
        FileLock(lock).acquire(wait_for_dead=0)
    assert (victim.read_text() == "keep me\n") if kind == "file" else not os.path.lexists(victim)


def test_current_through_a_generation_link_to_another_directory_deletes_nothing(tmp_path, corpus, outside):
    before = snapshot(outside)
    state = tmp_path / "out" / ".qckit"
    state.mkdir(parents=True)
    os.symlink(outside, state / "gen-evil")
    os.symlink("gen-evil", state / "current")
    with pytest.raises(InputError, match=refused(state / "gen-evil", outside)):
        prepare(corpus, tmp_path / "out")
    assert snapshot(outside) == before


@pytest.mark.parametrize("target", ["ABSOLUTE", "../outside", "gen-1/../../../outside", "current"])
def test_a_current_link_qckit_did_not_make_is_refused(tmp_path, corpus, outside, target):
    before = snapshot(outside)
    state = tmp_path / "out" / ".qckit"
    state.mkdir(parents=True)
    target = str(outside) if target == "ABSOLUTE" else target
    os.symlink(target, state / "current")
    with pytest.raises(InputError, match=refused(state / "current", target)):
        prepare(corpus, tmp_path / "out")
    assert snapshot(outside) == before


def test_a_state_directory_that_is_a_link_is_refused(tmp_path, corpus, outside):
    (outside / "run-2").mkdir()
    (outside / "run-2" / "spool").write_text("keep me\n")
    (outside / "lock").write_text("keep me\n")
    before = snapshot(outside)
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / ".qckit")
    with pytest.raises(InputError, match=refused(out / ".qckit", outside)):
        prepare(corpus, out)
    assert snapshot(outside) == before and (outside / "gen-1").is_dir() and (outside / "run-2").is_dir()


@pytest.mark.parametrize(
    "entry",
    ["gen-20260101T000000-1-aaaaaa", "run-20260101T000000-1-aaaaaa", "work", "replaced", "work/shards"],
)
def test_a_link_under_a_name_qckit_keeps_its_own_entries_is_refused(tmp_path, corpus, outside, entry):
    before = snapshot(outside)
    state = tmp_path / "out" / ".qckit"
    (state / entry).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, state / entry)
    with pytest.raises(InputError, match=refused(state / entry, outside)):
        prepare(corpus, tmp_path / "out", executor={"use": "links.shards"})
    assert snapshot(outside) == before


def test_an_output_name_that_is_a_link_is_replaced_by_qckits_never_written_through(tmp_path, corpus, outside):
    names = [p.name for p in prepare(corpus, tmp_path / "first").outputs]
    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        os.symlink(outside / "precious.txt", out / name)
    before = snapshot(outside)
    outputs = prepare(corpus, out).outputs
    assert snapshot(outside) == before
    assert all(os.readlink(p) == f".qckit/current/{p.name}" for p in outputs)


def test_the_cli_exits_with_the_input_status_and_one_line_naming_the_link(tmp_path, corpus):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    state = tmp_path / "out" / ".qckit"
    state.mkdir(parents=True)
    os.symlink(victim, state / "lock")
    console = Console(width=400, record=True, force_terminal=False)
    status = main(["prepare", "--input", str(corpus), "--output", str(tmp_path / "out")], console=console)
    text = console.export_text().strip()
    assert status == InputError.exit_code
    assert f"{state / 'lock'}: is a link to {victim}, not one qckit made" in text
    assert len(text.splitlines()) == 1
    assert victim.read_text() == "keep me\n"


def test_links_qckit_made_are_followed_and_a_dead_generation_is_no_obstacle(tmp_path, corpus):
    out = tmp_path / "out"
    first = {p.name: p.read_bytes() for p in prepare(corpus, out).outputs}
    assert prepare(corpus, out).outputs  # over the links and the generation the first run made
    state = out / ".qckit"
    current = os.readlink(state / "current")
    remove_entry(state, current)  # removed by hand: current dangles, the next run replaces it
    again = {p.name: p.read_bytes() for p in prepare(corpus, out).outputs}
    assert again == first and first
    assert os.readlink(state / "current") != current


def test_remove_entry_removes_a_link_never_what_it_points_to(tmp_path, outside):
    before = snapshot(outside)
    os.symlink(outside, tmp_path / "link")
    (tmp_path / "tree").mkdir()
    os.symlink(outside, tmp_path / "tree" / "inner-link")
    remove_entry(tmp_path, "link")
    remove_entry(tmp_path, "tree")
    assert not os.path.lexists(tmp_path / "link") and not os.path.lexists(tmp_path / "tree")
    remove_entry(tmp_path / "link-to-dir", "precious.txt")  # missing: no error
    os.symlink(outside, tmp_path / "link-to-dir")
    remove_entry(tmp_path / "link-to-dir", "precious.txt")  # a directory given as a link: left alone
    assert snapshot(outside) == before


# -- shard results: data only ----------------------------------------------------------------------


class Boom:
    """Unpickling this creates ``marker``: code from a planted file running in the driver."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _sharded(corpus: Path, out: Path, monkeypatch, **settings):
    return prepare(
        corpus,
        out,
        executor={"use": "links.shards", "shard_bytes": 4096},
        filters=[*PREPARE_DEFAULTS["filters"], {"use": "minhash_dedup"}],
        writers=[{"use": "txt"}, {"use": "jsonl"}],
        **settings,
    )


def test_sharded_results_give_the_local_executors_bytes(tmp_path, corpus, monkeypatch):
    sharded = _sharded(corpus, tmp_path / "sharded", monkeypatch)
    assert sharded.stats["executor"]["shards"] > 2
    local = prepare(
        corpus,
        tmp_path / "local",
        filters=[*PREPARE_DEFAULTS["filters"], {"use": "minhash_dedup"}],
        writers=[{"use": "txt"}, {"use": "jsonl"}],
    )
    for path in local.outputs:
        assert (tmp_path / "sharded" / path.name).read_bytes() == path.read_bytes(), path.name
    assert sharded.stats["kept"] == local.stats["kept"] and sharded.stats["filters"] == local.stats["filters"]


def test_a_planted_pickle_never_runs_and_is_refused_by_name(tmp_path, corpus, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(shard_mod, "clear", lambda work_dir: None)  # keep the work directory to resume
    _sharded(corpus, out, monkeypatch)
    work = out / ".qckit" / "work"
    plan = [shard_mod.Shard(**s) for s in json.loads((work / "plan.json").read_text())["shards"]]
    marker = tmp_path / "marker"
    planted = pickle.dumps(Boom(marker))
    results = shard_mod.results_path(work, plan[1])
    results.write_bytes(planted)
    record = shard_mod.record_path(work, plan[1])
    record.write_text(json.dumps({**json.loads(record.read_text()), "results_bytes": len(planted)}))
    with pytest.raises(
        InputError, match=rf"^{re.escape(str(results))}: not the results qckit writes .*resume"
    ):
        _sharded(corpus, out, monkeypatch, resume=True)
    assert not marker.exists()

    # the pickle under the name of the results of older versions is never opened at all
    results.unlink()
    (work / "shards" / f"{plan[1].index:06d}.pkl").write_bytes(planted)
    result = _sharded(corpus, out, monkeypatch, resume=True)
    assert result.stats["executor"]["resumed"] == len(plan) - 1  # the shard without results ran again
    assert not marker.exists()


def test_a_record_that_names_another_size_makes_its_shard_run_again(tmp_path, corpus, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(shard_mod, "clear", lambda work_dir: None)
    first = _sharded(corpus, out, monkeypatch)
    files = {p.name: p.read_bytes() for p in first.outputs}
    work = out / ".qckit" / "work"
    plan = [shard_mod.Shard(**s) for s in json.loads((work / "plan.json").read_text())["shards"]]
    shard_mod.record_path(work, plan[0]).write_text('{"results_bytes": "all of them"}')
    shard_mod.record_path(work, plan[2]).write_text("not json")
    result = _sharded(corpus, out, monkeypatch, resume=True)
    assert result.stats["executor"]["resumed"] == len(plan) - 2
    assert {p.name: p.read_bytes() for p in result.outputs} == files


def test_a_results_file_that_is_a_link_is_never_read_nor_written_through(
    tmp_path, corpus, monkeypatch, outside
):
    out = tmp_path / "out"
    monkeypatch.setattr(shard_mod, "clear", lambda work_dir: None)
    first = {p.name: p.read_bytes() for p in _sharded(corpus, out, monkeypatch).outputs}
    work = out / ".qckit" / "work"
    plan = [shard_mod.Shard(**s) for s in json.loads((work / "plan.json").read_text())["shards"]]
    results = shard_mod.results_path(work, plan[0])
    (outside / "results").write_bytes(results.read_bytes())
    results.unlink()
    os.symlink(outside / "results", results)
    before = snapshot(outside)
    result = _sharded(corpus, out, monkeypatch, resume=True)
    assert result.stats["executor"]["resumed"] == len(plan) - 1  # not complete: it ran again
    assert not results.is_symlink() and snapshot(outside) == before
    assert {p.name: p.read_bytes() for p in result.outputs} == first


def test_a_fingerprint_that_is_not_data_names_its_filter(tmp_path, corpus):
    with pytest.raises(
        ComponentError, match=r'filter "links.object_prints" .*fingerprints\[0\]\[0\]: a object'
    ):
        prepare(
            corpus,
            tmp_path / "out",
            executor={"use": "links.shards"},
            filters=[{"use": "links.object_prints"}],
        )


#: long int lists (stored as 64-bit arrays when they fit): negative, full uint64, and too big for both
COLUMNS = {"signed": list(range(-5, 20)), "unsigned": [2**64 - 1] * 20, "big": [2**70, *range(20)]}


def _result(**changes: Any) -> BatchResult:
    issues = IssueLog(3)
    issues.add("invalid_json", "a.jsonl", 4, "Expecting value")
    drops = {"length": IssueLog(3)}
    drops["length"].add("too_short", "a.jsonl", 9)
    base: dict[str, Any] = dict(
        set_index=1,
        file_index=2,
        nbytes=300,
        records=7,
        documents=6,
        issues=issues,
        changed=[1, 0],
        drops=drops,
        source="a.jsonl",
        texts=["un", "deux", "trois"],
        lines=[1, 2, 5],
        metas=[
            {"id": "x", "tags": ("a", 1), "score": float("nan")},
            None,
            {"nested": {"k": [1, 2.5]}, "ints": COLUMNS},
        ],
        metric_keys=["markers"],
        metric_values=np.array([[1.0], [0.0], [2.5]]),
        fingerprints=[
            [2**64 - 1, 0, 17],
            [np.arange(4, dtype=np.uint64), None, np.arange(4, 8, dtype=np.uint64)],
            [b"\x00\xff", (np.float32(1.5), True), {"k": np.int16(-3)}],
        ],
        rejected=[(3, "length", "too_short", "lol")],
        formatted=[(b"undeuxtrois", np.array([2, 4, 5], dtype=np.int64))],
        text_bytes=np.array([2, 4, 5], dtype=np.int64),
    )
    return BatchResult(**{**base, **changes})


def _fields(result: BatchResult) -> str:
    """A comparable spelling of every field, types included (numpy arrays by dtype, shape and values)."""

    def spell(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return ["array", v.dtype.str, v.shape, v.tolist()]
        if isinstance(v, np.generic):
            return ["scalar", v.dtype.str, v.item()]
        if isinstance(v, IssueLog):
            return ["log", v.counts, v.examples, v.max_examples]
        if isinstance(v, (list, tuple)):
            return [type(v).__name__, [spell(x) for x in v]]
        if isinstance(v, dict):
            return {k: spell(x) for k, x in v.items()}
        if isinstance(v, float) and v != v:
            return "nan"
        return [type(v).__name__, v]

    return repr({name: spell(getattr(result, name)) for name in BatchResult.__dataclass_fields__})


def _written(*results: BatchResult) -> bytes:
    buffer = io.BytesIO()
    buffer.write(resultfile.MAGIC)
    for result in results:
        resultfile.write_result(buffer, result)
    return buffer.getvalue()


def _read(data: bytes) -> list[BatchResult]:
    return list(resultfile.read_results(io.BytesIO(data), len(data)))


def test_results_files_hold_every_field_exactly():
    a, b = _result(), _result(texts=None, metas=None, formatted=None, fingerprints=[], drops={})
    back = _read(_written(a, b))
    assert [_fields(r) for r in back] == [_fields(a), _fields(b)]
    back[0].fingerprints[1][0][0] = 5  # arrays read back are writable, as the ones made in a worker


def _forged(data: bytes, old: bytes = b"", new: bytes = b"", more: bytes = b"") -> bytes:
    """``data`` with ``old`` replaced by ``new`` in its first batch's JSON and ``more`` bytes after its
    parts, the lengths in the batch's header made to agree (what a forger would do)."""
    head = len(resultfile.MAGIC)
    text_len, blob_len = struct.unpack("<QQ", data[head : head + 16])
    text = data[head + 16 : head + 16 + text_len]
    assert old in text
    text = text.replace(old, new)
    rest = data[head + 16 + text_len :]
    return data[:head] + struct.pack("<QQ", len(text), blob_len + len(more)) + text + rest + more


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:-1], "truncated|past the end"),
        (lambda d: b"\x80\x04" + d, "no magic line"),  # a pickle
        (lambda d: _forged(d, b'"lines":[1,2,5]', b'"lines":[1,2,5,6]'), r"texts: not one text per document"),
        (lambda d: _forged(d, b'"source":"a.jsonl"', b'"source":{"x":1}'), r"source: not a stored value"),
        (lambda d: _forged(d, b'"<u8"', b'"|O8"'), "not a 64-bit integer dtype"),
        (lambda d: _forged(d, b'{"A":["<u8"', b'{"A":["|O8"'), "not a numeric dtype"),
        (
            lambda d: _forged(d, b'"text_bytes":{"a":["<i8",[3]', b'"text_bytes":{"a":["<i8",[4]'),
            "bytes for a",
        ),
        (
            lambda d: _forged(
                d, b'"text_bytes":{"a":["<i8",[3]', b'"text_bytes":{"a":["<i8",[4611686018427387904,4]'
            ),
            "bytes for a",
        ),
        (
            lambda d: _forged(d, b'"source":"a.jsonl"', b'"source":' + b"[" * 100_000 + b"]" * 100_000),
            "too deeply",
        ),
        (lambda d: _forged(d, more=b"loose"), "5 bytes that no value uses"),
    ],
    ids=[
        "truncated",
        "pickle",
        "lengths",
        "tag",
        "int-dtype",
        "object-dtype",
        "shape",
        "overflow",
        "deep",
        "loose",
    ],
)
def test_a_damaged_or_forged_results_file_is_refused(damage, message):
    data = damage(_written(_result()))
    with pytest.raises(ValueError, match=message):
        _read(data)


# -- train: overwrite_output_dir and the run's own names -------------------------------------------


@pytest.mark.parametrize("name", ["checkpoint-3", "logs", "model.safetensors", ".cache"])
def test_train_refuses_a_link_under_a_name_it_writes_or_removes(tmp_path, tiny_model_dir, outside, name):
    from qckit.train.checkpoints import check_output_dir, clear_output_dir

    before = snapshot(outside)
    out = tmp_path / "model"
    out.mkdir()
    (out / "training_summary.json").write_text("{}")  # an earlier qckit run's
    os.symlink(outside if name != "model.safetensors" else outside / "precious.txt", out / name)
    for overwrite in (True, False):
        with pytest.raises(InputError, match=rf"^{re.escape(str(out / name))}: is a link to .*output_dir$"):
            check_output_dir(out, str(tiny_model_dir), overwrite=overwrite)
    assert name not in clear_output_dir(out)  # and should it be called anyway, the link stays
    assert os.path.lexists(out / name) and snapshot(outside) == before


@pytest.mark.usefixtures("one_torch_thread")
def test_a_train_run_with_overwrite_output_dir_and_a_planted_link_removes_nothing(
    tmp_path, tiny_model_dir, outside
):
    from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus
    from qckit.train import run_train
    from qckit_builtins.chunkers import WindowChunker

    before = snapshot(outside)
    out = tmp_path / "model"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "training_summary.json").write_text("{}")
    os.symlink(outside, out / "checkpoint-5")
    corpus = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES))
    settings = tiny_train_settings([corpus], out, tiny_model_dir, max_steps=1, overwrite_output_dir=True)
    with pytest.raises(InputError, match=re.escape(f"{out / 'checkpoint-5'}: is a link to {outside}")):
        run_train(settings, WindowChunker(max_length=32, stride=4, min_length=4), [])
    assert snapshot(outside) == before and (out / "checkpoint-2").is_dir()


# -- caches under $QCKIT_CACHE ---------------------------------------------------------------------


def test_the_table_cache_writes_and_cleans_nothing_through_a_link(tmp_path, monkeypatch, outside):
    from qckit.table_cache import cached_table

    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    os.symlink(outside, tmp_path / "cache" / "tables")
    stale = outside / "links-0000.npy"
    stale.write_bytes(b"old")
    os.utime(stale, (0, 0))
    before = snapshot(outside)
    table = cached_table("links", lambda: np.arange(3), [__file__])
    assert table.tolist() == [0, 1, 2] and snapshot(outside) == before


def test_the_gguf_cache_refuses_an_entry_folder_that_is_a_link(tmp_path, monkeypatch, outside):
    from qckit.gguf_cache import gguf_cache_entry

    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    os.symlink(outside, tmp_path / "cache" / "gguf")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(InputError, match=r"gguf: is a link to .*set QCKIT_CACHE to another folder$"):
        gguf_cache_entry(model, lambda directory: None)


# -- the umask -------------------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o002], ids=["022", "002"])
def umask(request) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_the_atomic_helpers_follow_the_umask(tmp_path, umask):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    with staging_file(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")
    with staging_dir(tmp_path / "c") as tmp:
        assert _mode(tmp) == 0o777 & ~umask
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "b.bin") == 0o666 & ~umask


def test_prepare_outputs_follow_the_umask(tmp_path, corpus, umask):
    out = tmp_path / "out"
    result = prepare(corpus, out, rejects=True)
    generation = out / ".qckit" / os.readlink(out / ".qckit" / "current")
    files = list(generation.iterdir())
    assert {p.name for p in files} == {p.name for p in result.outputs} | {
        "prepare_stats.json",
        "rejected.jsonl",
    }
    for path in files:
        assert _mode(path) == 0o666 & ~umask, path.name
    assert _mode(generation) == 0o777 & ~umask


@pytest.mark.usefixtures("one_torch_thread")
def test_train_outputs_follow_the_umask(tmp_path, tiny_model_dir):
    from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus
    from qckit.train import run_train
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    corpus = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES))
    out = tmp_path / "model"
    before = os.umask(0o002)
    try:
        settings = tiny_train_settings(
            [corpus], out, tiny_model_dir, max_steps=2, save_steps=2, export_merged=True
        )
        run_train(
            settings,
            WindowChunker(max_length=32, stride=4, min_length=4),
            [LoraAdapter()],
            recipe_text="[train]\n",
        )
    finally:
        os.umask(before)
    for name in (
        "training_summary.json",
        "recipe.toml",
        "adapter_model.safetensors",
        "config.json",
        "checkpoint-2/adapter_model.safetensors",
        "checkpoint-2/qckit_run.json",
        "merged/model.safetensors",
    ):
        assert _mode(out / name) == 0o664, name
    cache = [p for p in (out / ".cache").iterdir() if not p.name.startswith(".")]
    assert cache and all(_mode(p) == 0o775 for p in cache)


def test_the_prepare_spool_is_data_never_pickle(tmp_path):
    """The spool (kept documents between the workers and the writers, under .qckit/run-*/) is read back
    as data: a planted pickle is refused by name and never runs."""
    import pickle

    import numpy as np

    from qckit.errors import InputError
    from qckit.prepare.output import SPOOL_MAGIC, Spool
    from qckit.prepare.resultfile import read_values, write_value

    record = (
        "a.txt",
        2,
        [(b"un\ndeux\n", np.array([3, 5], dtype=np.int64))],
        7,
        [("un", 1, {"lang": "fr"}, {})],
    )
    path = tmp_path / "records"
    with path.open("wb") as handle:
        handle.write(SPOOL_MAGIC)
        write_value(handle, record)
    with path.open("rb") as handle:
        (back,) = read_values(handle, path.stat().st_size, SPOOL_MAGIC, "qckit spool")
    assert back[:2] == record[:2] and back[3:] == record[3:]
    assert back[2][0][0] == record[2][0][0] and np.array_equal(back[2][0][1], record[2][0][1])

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (marker.touch, ())

    spool = Spool(tmp_path, 1, with_docs=False)
    spool.paths[0].write_bytes(SPOOL_MAGIC + pickle.dumps(Planted()))
    spool._started.add(0)
    with pytest.raises(InputError, match=r"spool-0\.bin: not the spool this run wrote"):
        list(spool.batches(0))
    assert not marker.exists()
