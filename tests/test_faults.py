"""Fault injection: concurrent runs, SIGTERM, kill -9 of the driver and of a worker, a kill at every step
of the commit. Whatever happens, the output directory shows one run's complete outputs, never a mix,
and the next run cleans up what a dead one left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fault_plugins
import psutil
import pytest

from qckit.errors import InputError
from qckit.host import PluginHost
from qckit.prepare import run_prepare
from qckit.progress import RecordingObserver
from qckit.recipe import build_recipe
from qckit.testing import QUEBEC_WORDS

DRIVER = Path(__file__).resolve().parent / "fault_driver.py"


def sentences(n: int, salt: str = "") -> list[str]:
    return [
        f"{salt}Phrase {i}: "
        + " ".join(QUEBEC_WORDS[(i + k * 5) % len(QUEBEC_WORDS)] for k in range(8))
        + f" numéro {i}."
        for i in range(n)
    ]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def visible(out: Path) -> dict[str, bytes]:
    """What a reader of the output directory sees: every output that opens, with its bytes."""
    seen = {}
    for entry in out.iterdir():
        if entry.name.startswith(".") or not entry.exists():  # a dangling link opens nothing
            continue
        seen[entry.name] = entry.read_bytes()
    return seen


def recipe(inputs, out, *, filters=(), **prepare):
    from qckit.defaults import PREPARE_DEFAULTS

    data = {
        "prepare": {
            "inputs": [str(p) for p in inputs],
            "output": str(out),
            "workers": 1,
            "filters": [*PREPARE_DEFAULTS["filters"], *filters],
            **prepare,
        }
    }
    built = build_recipe(data, host=PluginHost.from_entry_points(extra=[("faults", fault_plugins)]))
    assert built.prepare is not None
    return built.prepare


def toml_recipe(path: Path, inputs, out, filters: list[dict], **prepare) -> Path:
    from qckit.defaults import PREPARE_DEFAULTS
    from qckit.recipe import dump_toml

    table = {"inputs": [str(p) for p in inputs], "output": str(out), **prepare}
    table["filters"] = [*PREPARE_DEFAULTS["filters"], *filters]
    path.write_text(dump_toml({"prepare": table}), encoding="utf-8")
    return path


def start_paused_run(
    tmp_path: Path, out: Path, *, workers: int = 2, seconds: float = 120.0
) -> tuple[subprocess.Popen, Path]:
    """A real ``qckit run`` whose worker sleeps on a document in the middle of the corpus."""
    lines = sentences(3000, "B ")
    lines[1500] += " PAUSE-HERE"
    src = write_lines(tmp_path / "b.txt", lines)
    reached = tmp_path / "reached"
    pause = {"use": "faults.pause", "reached": str(reached), "seconds": seconds}
    path = toml_recipe(tmp_path / "r.toml", [src], out, [pause], workers=workers, batch_bytes=4096)
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not reached.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the run never reached the paused document"
        time.sleep(0.05)
    return proc, reached


def wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.05)
    return alive


@pytest.fixture
def previous(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """An output directory holding a complete earlier run (txt and jsonl) and what it shows."""
    out = tmp_path / "out"
    src = write_lines(tmp_path / "a.txt", sentences(200, "A "))
    run_prepare(recipe([src], out, writers=[{"use": "txt"}, {"use": "jsonl"}]))
    return out, visible(out)


@pytest.mark.slow
def test_a_second_run_is_refused_at_once_and_sigterm_exits_143_with_nothing_partial(tmp_path, previous):
    out, before = previous
    proc, _ = start_paused_run(tmp_path, out, seconds=3.0)  # a worker busy for 3 s with one batch
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert children  # the worker pool
    src = write_lines(tmp_path / "c.txt", sentences(50, "C "))
    with pytest.raises(InputError) as err:
        run_prepare(recipe([src], out))
    assert f"in use by another qckit prepare run (pid {proc.pid} on " in str(err.value)
    assert ", started 20" in str(err.value)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert "terminated: no partial output was written" in proc.stderr.read()
    assert wait_gone(children) == []
    assert visible(out) == before  # the earlier run's outputs, untouched
    assert sorted(p.name for p in (out / ".qckit").iterdir()) == [
        "current",
        next(p.name for p in (out / ".qckit").iterdir() if p.name.startswith("gen-")),
        "lock",
    ]
    assert (out / ".qckit" / "lock").read_text() == ""  # released cleanly: the next run hears of no dead run


@pytest.mark.slow
def test_kill_9_of_the_driver_ends_its_workers_and_the_next_run_cleans_up(tmp_path, previous):
    out, before = previous
    proc, _ = start_paused_run(tmp_path, out)
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    proc.kill()
    proc.wait(timeout=10)
    assert wait_gone(children) == [], "workers outlived their driver"
    assert visible(out) == before
    assert [p.name for p in (out / ".qckit").iterdir() if p.name.startswith("run-")]  # the dead run's spool

    obs = RecordingObserver()
    src = write_lines(tmp_path / "c.txt", sentences(50, "C "))
    from qckit.prepare import PreparePipeline

    PreparePipeline(recipe([src], out), obs).run()
    warnings = [e[2] for e in obs.events if e[0] == "warn"]
    assert any(f"took over the lock of a run that did not finish (pid {proc.pid} on " in w for w in warnings)
    assert not [p for p in (out / ".qckit").iterdir() if p.name.startswith("run-")]
    assert sorted(visible(out)) == [
        "prepare_stats.json",
        "train_1.txt",
        "val_1.txt",
    ]  # jsonl of the old run gone


@pytest.mark.slow
def test_kill_9_of_a_worker_fails_the_run_in_one_line_and_keeps_the_previous_outputs(tmp_path, previous):
    out, before = previous
    proc, _ = start_paused_run(tmp_path, out)
    worker = psutil.Process(proc.pid).children()[0]  # the paused one or the other: either breaks the pool
    os.kill(worker.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == 5
    err = proc.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: executor "local"') and "terminated abruptly" in err[0]
    assert visible(out) == before
    assert not [p for p in (out / ".qckit").iterdir() if p.name.startswith("run-")]


@pytest.mark.slow
def test_kill_9_of_the_driver_at_random_moments_never_mixes_two_runs(tmp_path, previous):
    import random

    out, before = previous
    src = write_lines(tmp_path / "m.txt", sentences(15_000, "M "))
    path = toml_recipe(tmp_path / "m.toml", [src], out, [], workers=2, batch_bytes=16384)
    cmd = [sys.executable, str(DRIVER), "run", str(path)]
    started = time.monotonic()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    duration = time.monotonic() - started
    after = {k: v for k, v in visible(out).items() if k != "prepare_stats.json"}
    rng = random.Random(7)
    for moment in sorted(rng.uniform(0.2, 1.0) * duration for _ in range(3)):
        run_prepare(recipe([tmp_path / "a.txt"], out, writers=[{"use": "txt"}, {"use": "jsonl"}]))
        old = visible(out)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(moment)
        children = (
            [c.pid for c in psutil.Process(proc.pid).children(recursive=True)] if proc.poll() is None else []
        )
        proc.kill()
        proc.wait(timeout=10)
        assert wait_gone(children) == [], "workers outlived their driver"
        seen = visible(out)
        new = {k: v for k, v in seen.items() if k != "prepare_stats.json"}
        assert seen == old or (new == after and "prepare_stats.json" in seen), f"mixed after {moment:.2f} s"
        assert subprocess.run(cmd, capture_output=True).returncode == 0  # and the next run recovers
        assert {k: v for k, v in visible(out).items() if k != "prepare_stats.json"} == after


_MUTATIONS = {"rename", "replace", "symlink", "unlink", "rmdir", "mkdir"}


def _commit_ops(out: Path, plan) -> int:
    """How many file-system changes the publication of ``plan`` into ``out`` makes."""
    count = 0

    def hook(frame, event, arg):
        nonlocal count
        if event == "c_call" and getattr(arg, "__module__", None) == "posix" and arg.__name__ in _MUTATIONS:
            count += 1

    from qckit.prepare import outdir

    real = outdir.OutputDir.publish

    def publish(self):
        sys.setprofile(hook)
        try:
            return real(self)
        finally:
            sys.setprofile(None)

    outdir.OutputDir.publish = publish  # type: ignore[method-assign]
    try:
        run_prepare(plan)
    finally:
        outdir.OutputDir.publish = real  # type: ignore[method-assign]
    return count


def _killed_at(op: int, plan) -> int:
    """Run ``plan`` in a forked child that SIGKILLs itself just before its ``op``-th file-system change
    of the publication; return the child's wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            count = 0

            def hook(frame, event, arg):
                nonlocal count
                if (
                    event == "c_call"
                    and getattr(arg, "__module__", None) == "posix"
                    and arg.__name__ in _MUTATIONS
                ):
                    count += 1
                    if count == op:
                        os.kill(os.getpid(), signal.SIGKILL)

            from qckit.prepare import outdir

            real = outdir.OutputDir.publish

            def publish(self):
                sys.setprofile(hook)
                return real(self)

            outdir.OutputDir.publish = publish  # type: ignore[method-assign]
            run_prepare(plan)
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def test_a_kill_at_any_step_of_the_commit_shows_the_old_outputs_or_the_new_never_a_mix(tmp_path, previous):
    old_dir, old = previous
    src = write_lines(tmp_path / "n.txt", sentences(120, "N "))
    # the new run writes another set of names: txt only, merged, with rejects
    new_settings = {"merge": True, "rejects": True}
    reference = tmp_path / "reference"
    shutil.copytree(old_dir, reference, symlinks=True)
    ops = _commit_ops(reference, recipe([src], reference, **new_settings))
    print(f"the publication makes {ops} file-system changes")
    new = visible(reference)
    assert set(new) == {"train.txt", "val.txt", "rejected.jsonl", "prepare_stats.json"}
    assert ops >= 8
    for op in range(1, ops + 1):
        out = tmp_path / f"k{op}"
        shutil.copytree(old_dir, out, symlinks=True)
        status = _killed_at(op, recipe([src], out, **new_settings))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"op {op}: {status}"
        seen = visible(out)
        stats = {k: v for k, v in seen.items() if k != "prepare_stats.json"}
        assert seen in (old, new) or (  # the stats differ in timings only: compare the data files
            stats == {k: v for k, v in new.items() if k != "prepare_stats.json"}
            and "prepare_stats.json" in seen
        ), f"killed before file-system change {op}: {sorted(seen)}"
        # the next run recovers: it takes the dead run's lock over and publishes normally
        run_prepare(recipe([src], out, **new_settings))
        assert {k: v for k, v in visible(out).items() if k != "prepare_stats.json"} == {
            k: v for k, v in new.items() if k != "prepare_stats.json"
        }
        assert sorted(p.name for p in (out / ".qckit").iterdir() if not p.name.startswith("gen-")) == [
            "current",
            "lock",
        ]


def test_outputs_are_links_into_one_generation_and_a_rerun_removes_what_it_no_longer_writes(
    tmp_path, previous
):
    out, before = previous
    assert set(before) == {"train_1.txt", "val_1.txt", "train_1.jsonl", "val_1.jsonl", "prepare_stats.json"}
    for name in before:
        assert os.readlink(out / name) == f".qckit/current/{name}"
    stats = json.loads((out / "prepare_stats.json").read_text())
    assert stats["outputs"] == [
        str(out / n) for n in ("train_1.txt", "val_1.txt", "train_1.jsonl", "val_1.jsonl")
    ]
    src = write_lines(tmp_path / "z.txt", sentences(30, "Z "))
    run_prepare(recipe([src], out))
    assert sorted(visible(out)) == ["prepare_stats.json", "train_1.txt", "val_1.txt"]
    assert not (out / "train_1.jsonl").is_symlink()  # the old run's jsonl links are gone, not dangling
    assert len([p for p in (out / ".qckit").iterdir() if p.name.startswith("gen-")]) == 1


def test_regular_files_of_an_older_version_are_replaced_or_moved_aside(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("train_1.txt", "val_1.txt", "train_1.jsonl"):
        (out / name).write_text("old\n", encoding="utf-8")
    listed = [str(out / n) for n in ("train_1.txt", "val_1.txt", "train_1.jsonl")]
    (out / "prepare_stats.json").write_text(json.dumps({"outputs": listed}), encoding="utf-8")
    (out / "notes.md").write_text("mine\n", encoding="utf-8")  # not an output: left alone
    (out / ".qckit-prepare-abc123").mkdir()  # an older version's spool
    src = write_lines(tmp_path / "a.txt", sentences(40))
    run_prepare(recipe([src], out))
    assert sorted(visible(out)) == ["notes.md", "prepare_stats.json", "train_1.txt", "val_1.txt"]
    assert (out / "train_1.txt").read_text() != "old\n"
    assert (out / ".qckit" / "replaced" / "train_1.jsonl").read_text() == "old\n"
    assert not (out / ".qckit-prepare-abc123").exists()


def test_a_dead_runs_leftovers_are_removed_and_a_failed_first_run_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    (out / ".qckit" / "run-20240101T000000-1-abc").mkdir(parents=True)
    (out / ".qckit" / "run-20240101T000000-1-abc" / "spool-0.pkl").write_bytes(b"x")
    (out / ".qckit" / "gen-unpublished").mkdir()
    (out / ".train.txt.99.abcd1234.tmp").symlink_to(".qckit/current/train.txt")  # a link being made
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(InputError, match="no documents found"):
        run_prepare(recipe([bad], out))
    assert list(out.iterdir()) == []  # nothing published, nothing to resume: no trace


# -- file-system errors: one line naming the path, a non-zero status, the previous outputs intact ------


def _drop_file_capabilities() -> None:
    """In a child process running as root: give up the capabilities that bypass file permissions, so
    that permission errors are real (``PR_CAPBSET_DROP`` of DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _permissions_apply() -> bool:
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(
        [sys.executable, "-c", "open('/proc/1/environ').read()"],
        preexec_fn=_drop_file_capabilities,
        capture_output=True,
    )
    return probe.returncode != 0  # root without the capabilities cannot read init's environment


def cli_prepare(args: list[str], cwd: Path, preexec=None) -> tuple[int, list[str]]:
    """``qckit prepare`` in a real process; returns its status and its stderr lines."""
    env = {**os.environ, "QCKIT_TRACEBACK": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "qckit", "prepare", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        env=env,
        timeout=120,
    )
    return proc.returncode, proc.stderr.strip().splitlines()


def one_line_error(status: int, err: list[str], *parts: str) -> None:
    assert status == 3, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for part in parts:
        assert part in err[0], err


def test_an_output_under_a_file_and_names_too_long_are_one_line_errors(tmp_path):
    src = write_lines(tmp_path / "a.txt", sentences(20))
    (tmp_path / "plain").write_text("x", encoding="utf-8")
    one_line_error(
        *cli_prepare(["--input", str(src), "--output", "plain/out"], tmp_path), "plain/out", "Not a directory"
    )
    long_name = "n" * 300 + ".txt"
    one_line_error(
        *cli_prepare(["--input", long_name, "--output", "o"], tmp_path), long_name, "File name too long"
    )
    one_line_error(*cli_prepare(["--input", str(src), "--output", "d" * 300], tmp_path), "File name too long")


@pytest.mark.skipif(not _permissions_apply(), reason="file permissions do not apply to this user")
def test_unwritable_output_and_unsearchable_input_directories_are_one_line_errors(tmp_path, previous):
    out, before = previous
    preexec = _drop_file_capabilities if os.geteuid() == 0 else None
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    src = write_lines(hidden / "a.txt", sentences(20))
    hidden.chmod(0o600)  # readable listing, but not searchable
    try:
        one_line_error(
            *cli_prepare(["--input", str(src), "--output", "o"], tmp_path, preexec),
            str(src),
            "Permission denied",
        )
    finally:
        hidden.chmod(0o755)
    for d in (out, out / ".qckit"):
        d.chmod(0o555)
    try:
        status, err = cli_prepare(["--input", str(src), "--output", str(out)], tmp_path, preexec)
        one_line_error(status, err, str(out / ".qckit"), "Permission denied")
    finally:
        for d in (out, out / ".qckit"):
            d.chmod(0o755)
    assert visible(out) == before


def _limit_file_size(limit: int):
    def preexec() -> None:
        import resource

        signal.signal(
            signal.SIGXFSZ, signal.SIG_IGN
        )  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_write_that_fails_mid_run_is_one_line_and_keeps_the_previous_outputs(tmp_path, previous):
    out, before = previous
    src = write_lines(tmp_path / "big.txt", sentences(20_000, "Big "))  # spools well past the limit
    # --all_languages: py3langid's model load writes a 4 MB temporary file, which the limit would stop first
    status, err = cli_prepare(
        ["--input", str(src), "--output", str(out), "--all_languages"], tmp_path, _limit_file_size(256 << 10)
    )
    one_line_error(status, err, str(out / ".qckit" / "run-"), "File too large")
    assert visible(out) == before
    assert not [p for p in (out / ".qckit").iterdir() if p.name.startswith("run-")]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs, where this process may mount one (root with CAP_SYS_ADMIN); else skipped."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_keeps_the_previous_outputs(tmp_path, small_tmpfs):
    out = small_tmpfs / "out"
    first = write_lines(tmp_path / "a.txt", sentences(100, "A "))
    assert cli_prepare(["--input", str(first), "--output", str(out)], tmp_path)[0] == 0
    before = visible(out)
    src = write_lines(tmp_path / "big.txt", sentences(20_000, "Big "))  # ~2 MB of kept text: more than fits
    one_line_error(
        *cli_prepare(["--input", str(src), "--output", str(out)], tmp_path), "No space left on device"
    )
    assert visible(out) == before
    assert not [p for p in (out / ".qckit").iterdir() if p.name.startswith("run-")]
