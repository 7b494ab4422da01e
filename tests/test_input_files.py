"""Input files as users give them: thousands of them, the same one twice, one that grows while it is
read, a FIFO or a device instead of a file. Each either works (and is reported) or is refused in one
line before any work starts, in the library and at the command line (exit status 3)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from qckit.cli import main
from qckit.errors import InputError
from qckit.prepare import run_prepare
from qckit.progress import RecordingObserver
from qckit.recipe import build_recipe
from qckit_builtins.readers import TxtReader, check_input_file, iter_lines


def prepare(inputs, out, **settings):
    recipe = build_recipe(
        {"prepare": {"inputs": [str(p) for p in inputs], "output": str(out), "workers": 1, **settings}}
    )
    assert recipe.prepare is not None
    return run_prepare(recipe.prepare)


def cli(argv: list[str]) -> tuple[int, str]:
    err = Console(width=300, record=True, force_terminal=False)
    status = main(argv, console=Console(width=300, record=True, force_terminal=False), stderr=err)
    return status, err.export_text()


def line(i: int) -> str:
    return f"Le fichier numéro {i} parle de la cabane à sucre pis du sirop d'érable."


# -- any number of inputs --------------------------------------------------------------------------

MANY = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    from qckit.prepare import run_prepare
    from qckit.recipe import build_recipe
    d = Path(sys.argv[1])
    paths = sorted(str(p) for p in d.glob("in*.txt"))
    recipe = build_recipe({"prepare": {"inputs": paths, "output": str(d / "out"), "workers": 1,
                                       "splitter": {"use": "hash", "val_split": 0.5}}})
    print(run_prepare(recipe.prepare).stats["kept"])
    """
)


def test_more_inputs_than_open_files_allowed_without_merge(tmp_path):
    n = 1100  # each input its own set: once one spool file per set was open, 256 was the limit
    for i in range(n):
        (tmp_path / f"in{i:04d}.txt").write_text(f"{line(i)}\n{line(i)} Encore.\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", MANY, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(2 * n)]
    out = tmp_path / "out"
    for i in (0, 255, 256, 1099):  # every set got its own file's documents, and only those
        got = sorted(
            (out / f"{part}_{i + 1}.txt").read_text(encoding="utf-8").splitlines()
            for part in ("train", "val")
        )
        assert sorted(sum(got, [])) == sorted([line(i), f"{line(i)} Encore."])


# -- the same file twice ---------------------------------------------------------------------------


def spellings(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Two spellings of one file, each way a user can come by them."""
    src = tmp_path / "a.txt"
    src.write_text(f"{line(1)}\n{line(2)}\n", encoding="utf-8")
    os.link(src, tmp_path / "hard.txt")
    (tmp_path / "soft.txt").symlink_to(src)
    return {
        "twice": ("a.txt", "a.txt"),
        "dot-slash": ("a.txt", "./a.txt"),
        "absolute": ("a.txt", str(src)),
        "hard-link": ("a.txt", "hard.txt"),
        "symbolic-link": ("soft.txt", "a.txt"),
    }


@pytest.mark.parametrize("how", ["twice", "dot-slash", "absolute", "hard-link", "symbolic-link"])
@pytest.mark.parametrize("merge", [False, True])
def test_the_same_file_twice_is_refused_naming_both_spellings(tmp_path, monkeypatch, how, merge):
    monkeypatch.chdir(tmp_path)
    first, second = spellings(tmp_path)[how]
    with pytest.raises(InputError) as info:
        prepare([first, second], "out", merge=merge)
    message = str(info.value)
    assert "\n" not in message
    if how == "twice":
        assert message == "a.txt: given twice; list each input once"
    else:
        assert message == f"{second}: is the same file as {first}; list each input once"
    assert not (tmp_path / "out").exists()


def test_the_same_file_twice_at_the_command_line_is_exit_status_3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spellings(tmp_path)
    (tmp_path / "b.txt").write_text(f"{line(3)}\n", encoding="utf-8")
    status, err = cli(["prepare", "--input", "a.txt", "b.txt", "./a.txt", "--output", "out"])
    assert status == 3
    assert err.strip() == "error: ./a.txt: is the same file as a.txt; list each input once"
    assert not (tmp_path / "out").exists()


def test_two_files_with_the_same_content_are_two_inputs(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(f"{line(1)}\n", encoding="utf-8")
    b.write_text(f"{line(1)}\n{line(2)}\n", encoding="utf-8")
    result = prepare([a, b], tmp_path / "out", merge=True)
    assert result.stats["kept"] == 2  # distinct files: deduplication, not a refusal, handles copies


# -- a file that grows while it is read ------------------------------------------------------------


class AppendAfterFirstBatch(RecordingObserver):
    """Appends to ``path`` once the first batch is done, as a program still writing the file would."""

    def __init__(self, path: Path, extra: bytes) -> None:
        super().__init__()
        self.path, self.extra = path, extra

    def advance(self, task, amount=1, **fields):
        super().advance(task, amount, **fields)
        if self.extra:
            with open(self.path, "ab") as f:
                f.write(self.extra)
            self.extra = b""


@pytest.mark.parametrize("name", ["log.txt", "log.jsonl"])
def test_a_file_that_grows_during_the_run_is_read_up_to_its_size_and_the_growth_reported(tmp_path, name):
    path = tmp_path / name
    n = 30_000  # ~2.3 MB: several reads of CHUNK_SIZE, and the file grows after the first batch
    if name.endswith(".jsonl"):
        rows = [f'{{"text": "{line(i)}"}}\n' for i in range(n)]
    else:
        rows = [f"{line(i)}\n" for i in range(n)]
    path.write_text("".join(rows), encoding="utf-8")
    size = path.stat().st_size
    extra = "".join(rows[:50]).replace("numéro", "ajouté").encode()
    observer = AppendAfterFirstBatch(path, extra)
    recipe = build_recipe(
        {"prepare": {"inputs": [str(path)], "output": str(tmp_path / "out"), "workers": 1, "merge": True}}
    )
    assert recipe.prepare is not None
    result = run_prepare(recipe.prepare, observer)
    assert path.stat().st_size == size + len(extra)  # it did grow, after reading began
    assert result.stats["records"] == n
    assert result.stats["inputs"][0]["grew_bytes"] == len(extra)
    out = tmp_path / "out"
    kept = (out / "train.txt").read_text(encoding="utf-8") + (out / "val.txt").read_text(encoding="utf-8")
    assert "ajouté" not in kept
    warnings = [data for event, _, data in observer.events if event == "warn"]
    assert warnings == [
        f"{path}: grew during the run by {len(extra):,} bytes (from {size:,} to {size + len(extra):,}); "
        "it was read up to its size when it was opened"
    ]
    stats = json.loads((out / "prepare_stats.json").read_text(encoding="utf-8"))
    assert stats["inputs"][0]["grew_bytes"] == len(extra)


@pytest.mark.parametrize("compressed", [False, True])
def test_the_line_reader_stops_at_the_size_the_file_had_when_it_was_opened(tmp_path, compressed):
    path = tmp_path / ("c.txt.gz" if compressed else "c.txt")
    first = b"un\ndeux\ntrois\n" * 2000  # past the 4 KiB read at open to look for a byte-order mark

    def member(data: bytes) -> bytes:
        return gzip.compress(data) if compressed else data

    path.write_bytes(member(first))
    lines = iter_lines(path, chunk_size=16)
    assert next(lines) == b"un"  # opened: what is appended now is not read
    with open(path, "ab") as f:
        f.write(member(b"quatre\n"))  # a gzip file that grows gets a second member
    assert [b"un", *lines] == first.splitlines()
    assert list(iter_lines(path))[-1] == b"quatre"  # a new read sees it


def test_the_size_at_planning_is_recorded_and_unchanged_files_report_no_growth(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(f"{line(1)}\n{line(2)}\n", encoding="utf-8")
    observer = RecordingObserver()
    recipe = build_recipe({"prepare": {"inputs": [str(path)], "output": str(tmp_path / "out"), "workers": 1}})
    assert recipe.prepare is not None
    result = run_prepare(recipe.prepare, observer)
    assert "grew_bytes" not in result.stats["inputs"][0]
    assert not [e for e in observer.events if e[0] == "warn"]


# -- FIFOs and other special files ------------------------------------------------------------------


def special(tmp_path: Path, kind: str) -> str:
    """A path to a file that is not a regular file, of ``kind``."""
    if kind == "fifo":
        path = tmp_path / "corpus.txt"
        os.mkfifo(path)
        return str(path)
    if kind == "socket":
        path = tmp_path / "corpus.txt"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))  # the socket file stays after the socket is closed
        return str(path)
    if kind == "directory":
        path = tmp_path / "corpus.txt"
        path.mkdir()
        return str(path)
    return "/dev/zero"


WHAT = {
    "fifo": "is a FIFO (named pipe), not a regular file",
    "socket": "is a socket, not a regular file",
    "char-device": "is a character device, not a regular file",
    "directory": "is a directory, expected a file",
}


@pytest.mark.parametrize("kind", list(WHAT))
def test_a_special_file_is_refused_naming_what_it_is(tmp_path, kind):
    path = special(tmp_path, kind)
    with pytest.raises(InputError) as info:
        check_input_file(Path(path))
    assert str(info.value) == f"{path}: {WHAT[kind]}"
    # a reader given one directly refuses it the same way, without waiting for a writer or reading forever
    with pytest.raises(InputError) as info:
        list(TxtReader().records(Path(path)))
    assert str(info.value) == f"{path}: {WHAT[kind]}"


@pytest.mark.parametrize("kind", ["fifo", "socket", "char-device"])
def test_a_special_file_at_the_command_line_is_refused_before_any_work(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    path = special(tmp_path, kind)
    good = tmp_path / "good.txt"
    good.write_text(f"{line(1)}\n", encoding="utf-8")
    status, err = cli(["prepare", "--input", str(good), path, "--output", "out"])
    assert status == 3, err
    assert err.strip() == f"error: {path}: {WHAT[kind]}"
    assert not (tmp_path / "out").exists()


def test_run_check_refuses_a_fifo_and_a_duplicate_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "corpus.txt")
    (tmp_path / "good.txt").write_text(f"{line(1)}\n", encoding="utf-8")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[prepare]\ninputs = ["good.txt", "corpus.txt"]\noutput = "out"\n', encoding="utf-8")
    status, err = cli(["run", str(recipe), "--check"])
    assert status == 3
    assert err.strip() == f"error: corpus.txt: {WHAT['fifo']}"
    recipe.write_text('[prepare]\ninputs = ["good.txt", "./good.txt"]\noutput = "out"\n', encoding="utf-8")
    status, err = cli(["run", str(recipe), "--check"])
    assert status == 3
    assert err.strip() == "error: ./good.txt: is the same file as good.txt; list each input once"
    status, _ = cli(["run", str(recipe), "--check", "--stage", "train"])  # prepare would not run
    assert status == 0


def test_standard_input_is_refused_in_one_line(tmp_path):
    # /dev/stdin is whatever the shell connected: here a pipe, as in `producer | qckit prepare …`
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for arg, message in [
        ("/dev/stdin", "error: /dev/stdin: is a FIFO (named pipe), not a regular file"),
        ("-", "error: -: no such file (standard input cannot be an input: give a file)"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "qckit", "prepare", "--input", arg, "--output", "out"],
            input=f"{line(1)}\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.strip() == message
