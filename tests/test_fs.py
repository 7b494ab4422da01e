"""The one atomic-file helper's lock and link primitives (qckit/_fs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qckit._fs import FileLock, LockHeld, replace_symlink


def test_a_lock_is_exclusive_even_within_one_process_and_names_its_holder(tmp_path):
    first = FileLock(tmp_path / "lock")
    assert first.acquire() is None
    holder = json.loads((tmp_path / "lock").read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(LockHeld) as held:
        FileLock(tmp_path / "lock").acquire(wait_for_dead=0)
    assert held.value.holder is not None and held.value.holder.pid == os.getpid()
    first.release()
    assert (tmp_path / "lock").read_text() == ""  # a clean release leaves no record
    again = FileLock(tmp_path / "lock")
    assert again.acquire() is None
    again.release(remove=True)
    assert not (tmp_path / "lock").exists()


def test_the_lock_of_a_dead_process_is_free_and_its_record_is_returned(tmp_path):
    code = f"from qckit._fs import FileLock; FileLock({str(tmp_path / 'lock')!r}).acquire(); import os; os._exit(0)"
    dead = subprocess.run([sys.executable, "-c", code], check=True)
    assert dead.returncode == 0
    stale = FileLock(tmp_path / "lock").acquire()
    assert stale is not None and not stale.alive()
    assert "pid" in str(stale) and "started" in str(stale)


def test_replace_symlink_switches_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    replace_symlink(tmp_path / "current", "a")
    replace_symlink(tmp_path / "current", "b")
    assert os.readlink(tmp_path / "current") == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "current"]  # no temporary link left
