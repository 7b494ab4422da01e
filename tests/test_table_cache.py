"""The on-disk cache of derived lookup tables: a hit gives the same array without building it, a change
of the builder's code is a new entry, a damaged entry is rebuilt, and a cache that is off or cannot be
written only costs the build."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from qckit import table_cache
from qckit.table_cache import TABLES_DIR, cached_table


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QCKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / TABLES_DIR


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "builder.py"
    path.write_text("TABLE = 1\n")
    return path


class Builder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return np.arange(10, dtype=np.uint16) * 3


def test_a_hit_gives_the_same_array_without_building(cache: Path, source: Path) -> None:
    build = Builder()
    first = cached_table("t", build, [str(source)])
    second = cached_table("t", build, [str(source)])
    assert build.calls == 1
    assert second.dtype == np.uint16 and np.array_equal(first, second)
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["t"]


def test_another_builder_is_another_entry_and_entries_unused_for_a_month_go(
    cache: Path, source: Path
) -> None:
    build = Builder()
    cached_table("t", build, [str(source)])
    (first,) = cache.glob("t-*.npy")
    source.write_text("TABLE = 2\n")
    table_cache._key.cache_clear()  # a new process: the sources are read again
    table_cache._file_digest.cache_clear()
    cached_table("t", build, [str(source)])
    assert build.calls == 2
    assert len(list(cache.glob("t-*.npy"))) == 2  # another checkout may still use the first
    month_ago = time.time() - table_cache.STALE_AFTER_S - 60
    os.utime(first, (month_ago, month_ago))
    source.write_text("TABLE = 3\n")
    table_cache._key.cache_clear()
    table_cache._file_digest.cache_clear()
    cached_table("t", build, [str(source)])
    assert first not in set(cache.glob("t-*.npy")) and len(list(cache.glob("t-*.npy"))) == 2


def test_a_damaged_entry_is_rebuilt(cache: Path, source: Path) -> None:
    build = Builder()
    cached_table("t", build, [str(source)])
    (entry,) = cache.glob("t-*.npy")
    entry.write_bytes(entry.read_bytes()[:20])  # cut short, as by a full disk
    assert np.array_equal(cached_table("t", build, [str(source)]), np.arange(10) * 3)
    assert build.calls == 2
    assert np.array_equal(cached_table("t", build, [str(source)]), np.arange(10) * 3)
    assert build.calls == 2


def test_off_or_unwritable_only_costs_the_build(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = Builder()
    monkeypatch.setenv("QCKIT_CACHE", "off")
    cached_table("t", build, [str(source)])
    cached_table("t", build, [str(source)])
    assert build.calls == 2
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("QCKIT_CACHE", str(blocked))  # the cache folder would be under a file
    assert np.array_equal(cached_table("t", build, [str(source)]), np.arange(10) * 3)
    assert build.calls == 3
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_the_builtin_tables_come_back_equal_from_the_cache(cache: Path) -> None:
    from qckit_builtins.filters import dedup, dialect, heuristics
    from qckit_builtins.normalizers import text

    def as_arrays(value):
        if isinstance(value, bytes):
            return [np.frombuffer(value, dtype=np.uint8)]
        return list(value) if isinstance(value, tuple) else [value]

    tables = [
        (text._flag_table, text._build_flag_table),
        (heuristics._lower_table, lambda: heuristics._build_lower_table().astype("<u4").tobytes()),
        (dialect._fold_tables, dialect._build_fold_tables),
        (dedup._key_table, dedup._build_key_table),
    ]
    for accessor, build in tables:
        expected = as_arrays(build())
        cold = as_arrays(accessor.__wrapped__())  # what the components use, without functools' memo
        warm = as_arrays(accessor.__wrapped__())
        for a, b, c in zip(expected, cold, warm, strict=True):
            assert a.dtype == b.dtype == c.dtype and np.array_equal(a, b) and np.array_equal(a, c)
    assert len(list(cache.glob("*.npy"))) == 4  # one entry each, read back the second time


def test_a_mapped_entry_is_read_only_and_the_same_from_the_first_run(
    cache: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = Builder()
    first = cached_table("mapped", build, [str(source)], mmap=True)
    second = cached_table("mapped", build, [str(source)], mmap=True)
    assert build.calls == 1
    for table in (first, second):
        assert isinstance(table, np.memmap) and not table.flags.writeable
        assert table.tolist() == build().tolist()
    monkeypatch.setenv("QCKIT_CACHE", "off")  # no cache: the built array itself
    assert not isinstance(cached_table("mapped", build, [str(source)], mmap=True), np.memmap)
