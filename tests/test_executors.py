"""Executors: the local pool and Ray (on a real local Ray cluster) give the same bytes; shards, a killed
worker, a shard that keeps failing, resume."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import fault_plugins
import pytest

from qckit.defaults import PREPARE_DEFAULTS
from qckit.errors import ComponentError, InputError, RecipeError
from qckit.host import PluginHost
from qckit.prepare import run_prepare
from qckit.prepare import shards as shard_mod
from qckit.recipe import build_recipe
from qckit.testing import QUEBEC_WORDS


def sentence(i: int) -> str:
    words = [QUEBEC_WORDS[(i * 7 + k * 3) % len(QUEBEC_WORDS)] for k in range(6 + i % 5)]
    return f"Le numéro {i}, " + " ".join(words) + f" pour la {i % 13}e fois."


@pytest.fixture
def corpus(tmp_path: Path) -> list[Path]:
    """Three inputs with duplicates inside and across files (and across shard boundaries), a bad JSON
    line, blank lines, a gzip file (one shard) and ids."""
    a = [sentence(i) for i in range(400)]
    a[300] = a[10]  # far duplicate inside a file
    a[150] = "lol"  # dropped by length
    a.insert(200, "")
    b = [json.dumps({"text": sentence(i), "id": f"b{i}"}, ensure_ascii=False) for i in range(380, 520)]
    b.insert(5, "{not json")
    c = [sentence(i) for i in range(500, 600)] + [a[20]]
    pa, pb, pc = tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.txt.gz"
    pa.write_text("\n".join(a) + "\n", encoding="utf-8")
    pb.write_text("\n".join(b) + "\n", encoding="utf-8")
    pc.write_bytes(gzip.compress(("\n".join(c) + "\n").encode()))
    return [pa, pb, pc]


def host() -> PluginHost:
    return PluginHost.from_entry_points(extra=[("faults", fault_plugins)])


def prepare(inputs, out, executor, *, extra_filters=(), **settings):
    recipe = build_recipe(
        {
            "prepare": {
                "inputs": [str(p) for p in inputs],
                "output": str(out),
                "workers": 2,
                "batch_bytes": 1024,
                "rejects": True,
                "writers": [{"use": "txt"}, {"use": "jsonl"}],
                "filters": [*PREPARE_DEFAULTS["filters"], *extra_filters],
                "executor": executor,
                **settings,
            }
        },
        host=host(),
    )
    assert recipe.prepare is not None
    return run_prepare(recipe.prepare)


def outputs(out: Path) -> dict[str, bytes]:
    """Every output's bytes; the stats without timings and executor details."""
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    stats = json.loads(files.pop("prepare_stats.json"))
    for key in ("elapsed_s", "throughput_mb_s", "workers", "executor"):
        stats.pop(key)
    stats["outputs"] = [Path(p).name for p in stats["outputs"]]
    files["stats"] = json.dumps(stats, sort_keys=True).encode()
    return files


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster for the session (2 CPUs, no dashboard), shut down at the end."""
    import ray

    # Ray workers cannot import the tests directory: ship the fault components by value.
    ray.cloudpickle.register_pickle_by_value(fault_plugins)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("merge", [True, False])
def test_ray_output_is_byte_identical_to_local_for_any_shard_count(ray_cluster, corpus, tmp_path, merge):
    local = prepare(corpus, tmp_path / "local", {"use": "local"}, merge=merge)
    expected = outputs(tmp_path / "local")
    assert local.stats["filters"]["exact_dedup"]["dropped"] >= 2  # duplicates inside and across files
    assert local.stats["reader_issues"]["invalid_json"]["count"] == 1
    seen_shards = set()
    for shard_bytes in (1024, 5000, 1 << 20):
        out = tmp_path / f"ray-{shard_bytes}"
        result = prepare(corpus, out, {"use": "ray", "shard_bytes": shard_bytes}, merge=merge)
        assert outputs(out) == expected, f"shard_bytes={shard_bytes}"
        seen_shards.add(result.stats["executor"]["shards"])
        assert not (out / ".qckit" / "work").exists()  # committed: the work directory is gone
    assert min(seen_shards) == 3 and max(seen_shards) > 10  # one shard per file … many byte ranges


@pytest.mark.parametrize("merge", [True, False])
def test_ray_keeps_near_duplicate_clusters_on_the_sides_local_does(ray_cluster, corpus, tmp_path, merge):
    tag = {"use": "minhash_dedup", "shingling": "short", "duplicates": "tag"}
    local = prepare(corpus, tmp_path / "local", {"use": "local"}, merge=merge, extra_filters=[tag])
    assert sum(s.get("clustered", 0) for s in local.stats["sets"]) > 10  # the corpus repeats its words
    prepare(corpus, tmp_path / "ray", {"use": "ray", "shard_bytes": 1024}, merge=merge, extra_filters=[tag])
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")


def test_a_killed_worker_is_retried_and_the_output_is_unchanged(ray_cluster, corpus, tmp_path):
    text = corpus[0].read_text(encoding="utf-8").splitlines()
    text[250] += " KILL-ME"
    corpus[0].write_text("\n".join(text) + "\n", encoding="utf-8")
    markers = tmp_path / "kills"
    never = {"use": "faults.kill_worker", "marker_dir": str(markers), "times": 0}
    prepare(corpus, tmp_path / "local", {"use": "local"}, extra_filters=[never], workers=1)
    once = {**never, "times": 1}
    executor = {"use": "ray", "shard_bytes": 4096, "max_retries": 2}
    prepare(corpus, tmp_path / "ray", executor, extra_filters=[once])
    assert len(list(markers.iterdir())) == 1  # the worker really died once
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")


def test_a_shard_that_keeps_failing_is_reported_by_name(ray_cluster, corpus, tmp_path):
    text = corpus[0].read_text(encoding="utf-8").splitlines()
    text[250] += " KILL-ME"
    corpus[0].write_text("\n".join(text) + "\n", encoding="utf-8")
    always = {"use": "faults.kill_worker", "marker_dir": str(tmp_path / "kills"), "times": 99}
    with pytest.raises(ComponentError) as err:
        prepare(
            corpus,
            tmp_path / "out",
            {"use": "ray", "shard_bytes": 4096, "max_retries": 1},
            extra_filters=[always],
        )
    message = str(err.value)
    assert message.startswith("executor \"ray\" (plugin 'executors', qckit")
    assert f"({corpus[0]}, bytes " in message and "failed 2 times" in message
    assert "\n" not in message
    assert len(list((tmp_path / "kills").iterdir())) == 2  # one try and one retry
    assert not (tmp_path / "out" / "train.txt").exists()


def test_resume_reruns_only_unfinished_shards_and_gives_the_same_bytes(
    ray_cluster, corpus, tmp_path, monkeypatch
):
    text = corpus[1].read_text(encoding="utf-8").splitlines()
    text[-3] = json.dumps({"text": sentence(9999) + " FAIL-ME"})
    corpus[1].write_text("\n".join(text) + "\n", encoding="utf-8")
    fixed = tmp_path / "fixed"
    flt = {"use": "faults.fail_unless", "unless": str(fixed)}
    executor = {"use": "ray", "shard_bytes": 2048}
    out = tmp_path / "out"

    with pytest.raises(
        ComponentError, match=rf'filter "faults.fail_unless" .* on {corpus[1]}:{len(text) - 2}: RuntimeError'
    ):
        prepare(corpus, out, executor, extra_filters=[flt])
    work = out / ".qckit" / "work"
    plan = json.loads((work / "plan.json").read_text())
    shards = [shard_mod.Shard(**s) for s in plan["shards"]]
    failing = max(s.index for s in shards if s.path == str(corpus[1]))  # FAIL-ME is in b.jsonl's last range
    complete = [s for s in shards if shard_mod.is_complete(work, s)]
    assert len(complete) >= failing and all(s.index != failing for s in complete)
    assert not (out / "train.txt").exists()

    # another run's work is never resumed
    changed = {"use": "length", "min_length": 11, "max_length": 10000}
    filters = [changed, *PREPARE_DEFAULTS["filters"][1:], flt]
    with pytest.raises(
        InputError, match="cannot resume: the recipe's readers, normalizers or filters changed"
    ):
        prepare(corpus, out, executor, resume=True, filters=filters)

    complete = [s for s in shards if shard_mod.is_complete(work, s)]  # again: a cancelled task may have ended
    before = {s.index: shard_mod.results_path(work, s).stat().st_mtime_ns for s in complete}
    fixed.touch()
    monkeypatch.setattr(shard_mod, "clear", lambda work_dir: None)  # keep the work directory to look at it
    result = prepare(corpus, out, executor, extra_filters=[flt], resume=True)
    executor_stats = result.stats["executor"]
    assert executor_stats["shards"] == len(shards)
    assert len(complete) <= executor_stats["resumed"] < len(shards)  # the failed shard ran again
    assert shard_mod.is_complete(work, shards[failing])
    assert executor_stats["task_mb_s"] > 0
    after = {s.index: shard_mod.results_path(work, s).stat().st_mtime_ns for s in complete}
    assert after == before  # finished shards were not run again
    prepare(corpus, tmp_path / "uninterrupted", executor, extra_filters=[flt])
    assert outputs(out) == outputs(tmp_path / "uninterrupted")


def test_resume_needs_an_executor_that_reads_its_own_shards(corpus, tmp_path):
    with pytest.raises(RecipeError, match=r"prepare\.resume: executor 'local' cannot resume"):
        build_recipe({"prepare": {"inputs": [str(corpus[0])], "resume": True}})


def test_cli_flags_select_the_executor_and_resume(corpus, tmp_path):
    from qckit.cli.main import build_parser
    from qckit.cli.prepare import prepare_flags_to_recipe

    ns = build_parser().parse_args(["prepare", "--input", str(corpus[0]), "--executor", "ray", "--resume"])
    table = prepare_flags_to_recipe(ns)["prepare"]
    assert table["executor"] == {"use": "ray"} and table["resume"] is True
    recipe = build_recipe(prepare_flags_to_recipe(ns))
    assert recipe.prepare is not None and recipe.prepare.executor.instance.reads_inputs
    ns = build_parser().parse_args(["prepare", "--input", str(corpus[0])])
    assert prepare_flags_to_recipe(ns)["prepare"]["executor"] == {"use": "local"}


def test_shards_cut_big_files_at_record_starts_and_number_their_lines(corpus):
    from qckit.prepare.inputs import input_files

    recipe = build_recipe({"prepare": {"inputs": [str(p) for p in corpus]}})
    assert recipe.prepare is not None
    readers = recipe.prepare.reader_table
    files = input_files(corpus, readers, merge=True)
    cuts = shard_mod.cut(files, readers, 2048)
    assert [s.path for s in cuts if s.end is None] == [str(corpus[2])]  # gzip: one whole-file shard
    ctx = shard_mod.ShardContext(None, readers, 1024, 1 << 20, "")  # type: ignore[arg-type]
    counts = [shard_mod.count_records(ctx, s) for s in shard_mod.needs_count(cuts)]
    numbered = shard_mod.number(cuts, counts)
    lines = corpus[0].read_bytes().split(b"\n")
    for shard in (s for s in numbered if s.path == str(corpus[0])):
        records = list(readers["txt"].instance.records_between(corpus[0], shard.start, shard.end))
        assert records[0] == lines[shard.first_line - 1]


def test_a_resume_is_refused_when_a_file_a_filter_read_has_changed(tmp_path):
    from types import SimpleNamespace

    from qckit_builtins.filters.decontam import Decontaminate
    from qckit_builtins.filters.dialect import QuebecMarkers

    markers, evals = tmp_path / "markers.txt", tmp_path / "eval.txt"
    markers.write_text("icitte\n", encoding="utf-8")
    evals.write_text("une phrase de l'ensemble d'évaluation assez longue pour compter\n", encoding="utf-8")

    def components():
        made = [QuebecMarkers(markers_file=str(markers)), Decontaminate(files=[str(evals)])]
        return [
            SimpleNamespace(kind="filter", name=f.name, params={}, owner="qckit", instance=f) for f in made
        ]

    files: list = []  # the inputs' part of the fingerprint is tested above
    work = tmp_path / "work"
    work.mkdir()
    shard_mod.save_plan(work, shard_mod.fingerprint(files, components(), {}), [])
    assert shard_mod.load_plan(work, shard_mod.fingerprint(files, components(), {})) == []  # same contents
    # the workers get the contents read in the main process, and a resume compares them
    for path, name in ((markers, "quebec_markers"), (evals, "decontaminate")):
        before = path.read_text(encoding="utf-8")
        path.write_text(before.replace("e", "é", 1), encoding="utf-8")
        with pytest.raises(InputError, match=rf"cannot resume: the files the filter '{name}' reads changed"):
            shard_mod.load_plan(work, shard_mod.fingerprint(files, components(), {}))
        path.write_text(before, encoding="utf-8")
    # a filter that reads no file adds nothing (a plan saved before resume_key existed still resumes)
    builtin = SimpleNamespace(
        kind="filter", name="quebec_markers", params={}, owner="qckit", instance=QuebecMarkers()
    )
    assert "contents" not in shard_mod.fingerprint(files, [builtin], {})["components"][0]
    # a settings change is named as such, even when a file changed too
    saved = shard_mod.fingerprint(files, components(), {})
    markers.write_text("asteure\n", encoding="utf-8")
    changed = shard_mod.fingerprint(files, components(), {})
    changed["components"][1]["params"] = {"ngram": 12}
    assert "readers, normalizers or filters changed" in shard_mod._difference(saved, changed)
