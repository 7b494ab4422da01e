"""The prepare pipeline end to end: outputs, stats funnel, determinism, atomicity, bad input, library API."""

from __future__ import annotations

import gzip
import json
import types
from pathlib import Path

import numpy as np
import pytest

from qckit import hookimpl
from qckit.errors import ComponentError, InputError
from qckit.host import PluginHost
from qckit.prepare import STATS_FILE, prepare_texts, run_prepare
from qckit.progress import RecordingObserver
from qckit.recipe import build_recipe

GOOD = [
    "Mon chum pis moi, on est allés magasiner au centre-ville samedi passé.",
    "Il fait frette en maudit à matin, mets ta tuque avant de sortir dehors.",
    "Le dépanneur du coin vend encore des chips au ketchup pis du lait en sac.",
    "On a jasé longtemps de la cabane à sucre avec ma blonde hier soir.",
    "Les Canadiens ont perdu encore une fois, c’est plate en titi pour les fans.",
    "La neige tombe depuis trois jours pis la ville a pas encore déneigé ma rue.",
]


def corpus(tmp_path: Path, lines: list[str], name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def recipe_for(inputs, out, **prepare):
    return build_recipe(
        {"prepare": {"inputs": [str(p) for p in inputs], "output": str(out), "workers": 1, **prepare}}
    )


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_single_file_writes_seed_names_and_stats(tmp_path):
    src = corpus(
        tmp_path, [*GOOD, "lol", GOOD[0], "Voir https://example.com/page pour les détails du festival d'été."]
    )
    out = tmp_path / "out"
    result = run_prepare(recipe_for([src], out).prepare)
    assert sorted(p.name for p in out.iterdir()) == sorted([".qckit", "train_1.txt", "val_1.txt", STATS_FILE])
    kept = read_lines(out / "train_1.txt") + read_lines(out / "val_1.txt")
    assert len(kept) == len(GOOD) + 1
    assert "Voir pour les détails du festival d'été." in kept
    stats = json.loads((out / STATS_FILE).read_text())
    assert stats == result.stats
    assert stats["documents"] == 9 and stats["kept"] == 7
    assert stats["filters"]["exact_dedup"]["reasons"] == {"duplicate": 1}
    assert stats["filters"]["length"]["examples"]["too_short"] == [f"{src}:7"]
    assert stats["normalizers"]["strip_urls"] == 1


def test_merge_writes_train_and_val(tmp_path):
    a = corpus(tmp_path, GOOD[:3], "a.txt")
    b = tmp_path / "b.jsonl"
    b.write_text(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in GOOD[3:]) + "\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    run_prepare(recipe_for([a, b], out, merge=True, splitter={"use": "random", "val_split": 0.5}).prepare)
    train, val = read_lines(out / "train.txt"), read_lines(out / "val.txt")
    assert sorted(train + val) == sorted(GOOD)
    assert len(val) == 3


def test_output_is_identical_whatever_the_number_of_workers(tmp_path):
    lines = [f"{GOOD[i % len(GOOD)]} Numéro {i} de la série, {i * 7 % 13} fois." for i in range(3000)]
    lines += lines[:200]  # duplicates across batches
    src = corpus(tmp_path, lines)
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        r = recipe_for([src], out, workers=workers, batch_bytes=4096, merge=True)
        run_prepare(r.prepare)
        outputs[workers] = ((out / "train.txt").read_bytes(), (out / "val.txt").read_bytes())
    assert outputs[1] == outputs[2]
    assert len(outputs[1][0].splitlines()) + len(outputs[1][1].splitlines()) == 3000


def test_failed_run_leaves_no_partial_outputs(tmp_path):
    good = corpus(tmp_path, GOOD, "good.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="empty.txt: file is empty"):
        run_prepare(recipe_for([good, empty], out, merge=True).prepare)
    assert not (out / "train.txt").exists()
    # a corrupt gzip is only found while reading: still nothing written
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(("\n".join(GOOD * 50)).encode())[:-20])
    with pytest.raises(InputError, match="bad.txt.gz"):
        run_prepare(recipe_for([good, bad], out, merge=True).prepare)
    assert [p.name for p in out.iterdir()] == []


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "no such file"),
        ("blank.txt", "\n  \n\n", "no documents found"),
        ("data.csv", "a,b\n", "unsupported file type"),
        ("bad.jsonl", "not json\n[1]\n", "no documents found (2 unusable records)"),
    ],
)
def test_bad_inputs_fail_with_one_clear_line(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        run_prepare(recipe_for([path], tmp_path / "out").prepare)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_directory_input_is_an_error(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        run_prepare(recipe_for([tmp_path], tmp_path / "out").prepare)


def test_bad_records_are_counted_not_fatal(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [json.dumps({"text": t}, ensure_ascii=False) for t in GOOD]
    rows.insert(2, "{oops")
    rows.insert(4, json.dumps({"text": None}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = run_prepare(recipe_for([path], tmp_path / "out").prepare)
    issues = result.stats["reader_issues"]
    assert issues["invalid_json"]["count"] == 1
    assert issues["invalid_json"]["examples"][0].startswith(f"{path}:3:")
    assert sum(v["count"] for v in issues.values()) == 2
    assert result.stats["kept"] == len(GOOD)


def test_progress_is_reported_per_batch(tmp_path):
    src = corpus(tmp_path, GOOD * 10)
    obs = RecordingObserver()
    from qckit.prepare import PreparePipeline

    PreparePipeline(recipe_for([src], tmp_path / "o").prepare, obs).run()
    kinds = [e[0] for e in obs.events]
    assert kinds[0] == "start" and kinds[-1] == "finish" and "advance" in kinds


def test_library_api_runs_in_memory():
    result = prepare_texts(
        [*GOOD, "lol", {"text": GOOD[1]}, {"text": "Encore une belle journée au chalet avec la gang."}],
        {"prepare": {"splitter": {"use": "random", "val_split": 0.0}}},
    )
    texts = [d.text for d in result.train]
    assert texts[: len(GOOD)] == GOOD
    assert len(texts) == len(GOOD) + 1
    assert result.val == []
    assert result.stats["filters"]["exact_dedup"]["dropped"] == 1
    assert result.stats["summaries"]["quebec_markers"]["qc_density_per_1k_words"] > 0
    from rich.console import Console

    from qckit.report import prepare_report

    console = Console(width=120, record=True)
    console.print(prepare_report(result.stats))  # library stats render too
    assert "dropped by exact_dedup" in console.export_text()


def test_library_api_rejects_non_text_items():
    with pytest.raises(InputError, match="item 2"):
        prepare_texts(["Une phrase correcte pour commencer icitte.", 42])


def test_rejects_file_records_every_drop_with_filter_and_reason(tmp_path):
    src = corpus(tmp_path, [*GOOD, "lol", GOOD[0], "ok ok ok ok ok ok ok ok ok ok ok ok ok"])
    out = tmp_path / "out"
    result = run_prepare(recipe_for([src], out, rejects=True).prepare)
    rejects = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == sum(f["dropped"] for f in result.stats["filters"].values()) == 3
    by_line = {r["line"]: (r["filter"], r["reason"]) for r in rejects}
    assert by_line == {
        7: ("length", "too_short"),
        8: ("exact_dedup", "duplicate"),
        9: ("unique_words", "repetitive"),
    }
    assert all(r["source"] == str(src) for r in rejects)


@pytest.mark.parametrize(
    ("prepare", "key", "message"),
    [
        (
            {"inputs": ["{d}/train.txt"], "merge": True},
            "prepare.inputs[0]",
            "would be overwritten by the output",
        ),
        ({"inputs": ["x.txt", "{d}/val_2.txt"]}, "prepare.inputs[1]", "would be overwritten by the output"),
        ({"inputs": ["{d}/prepare_stats.json"]}, "prepare.inputs[0]", "would be overwritten by the output"),
        ({"inputs": ["{d}/.qckit/gen-1/train.txt"]}, "prepare.inputs[0]", "inside qckit's own directory"),
        ({"inputs": ["x.txt"], "stats_file": "../x.json"}, "prepare.stats_file", "plain file name"),
        ({"inputs": ["x.txt"], "stats_file": "/tmp/x.json"}, "prepare.stats_file", "plain file name"),
        ({"inputs": ["x.txt"], "stats_file": ""}, "prepare.stats_file", "must be a file name"),
        (
            {"inputs": ["x.txt"], "stats_file": "train_1.txt"},
            "prepare.stats_file",
            "also the name of an output",
        ),
        (
            {"inputs": ["x.txt"], "stats_file": "rejected.jsonl", "rejects": True},
            "prepare.stats_file",
            "also the name of an output",
        ),
        (
            {"inputs": ["x.txt"], "writers": [{"use": "txt"}, {"use": "txt"}]},
            "prepare.writers[1]",
            "writes the same files as prepare.writers[0]",
        ),
    ],
)
def test_outputs_that_would_destroy_an_input_or_collide_are_recipe_errors(tmp_path, prepare, key, message):
    from qckit.errors import RecipeError

    d = tmp_path / "d"
    table = {k: [i.format(d=d) for i in v] if k == "inputs" else v for k, v in prepare.items()}
    with pytest.raises(RecipeError) as err:
        build_recipe({"prepare": {**table, "output": str(d)}}, source="r.toml")
    assert str(err.value).startswith(f"r.toml:{key}: ") and message in str(err.value)


def test_an_input_reached_through_a_link_to_an_output_is_refused(tmp_path):
    from qckit.errors import RecipeError

    src = corpus(tmp_path, GOOD)
    out = tmp_path / "out"
    run_prepare(recipe_for([src], out).prepare)
    (tmp_path / "again.txt").symlink_to(out / "train_1.txt")
    with pytest.raises(RecipeError, match=r"prepare\.inputs\[0\]: .*would be overwritten by the output"):
        recipe_for([tmp_path / "again.txt"], out)


class _DropsOne:
    """A normalizer whose batch method loses the last text: a broken plugin."""

    name = "broken.drops_one"

    def normalize(self, text: str) -> str:
        return text

    def normalize_batch(self, texts: list[str]) -> list[str]:
        return list(texts[:-1])


class _OneReasonShort:
    name = "broken.short_reasons"
    stateful = False

    def drop_reason(self, doc) -> None:
        return None

    def drop_reason_batch(self, docs) -> list[None]:
        return [None] * (len(docs) - 1)


@pytest.mark.parametrize(
    ("kind", "component", "method"),
    [("normalizers", _DropsOne, "normalize_batch"), ("filters", _OneReasonShort, "drop_reason_batch")],
)
def test_a_batch_method_that_returns_too_few_results_is_named(kind, component, method):
    hook = {"normalizers": "register_normalizers", "filters": "register_filters"}[kind]
    plugin = types.SimpleNamespace(**{hook: hookimpl(lambda register: register(component))})
    host = PluginHost.from_entry_points(extra=[("broken", plugin)])
    texts = [
        "Mon chum pis moi on est allés magasiner samedi.",
        "Il fait frette en maudit à matin, mets ta tuque.",
    ]
    with pytest.raises(ComponentError, match=rf"{component.name}\.{method}.*1 results for 2 items"):
        prepare_texts(texts, {"prepare": {kind: [{"use": component.name}]}}, host=host)


TAG = {"use": "minhash_dedup", "shingling": "short", "duplicates": "tag"}


def near_duplicate_lines(n: int) -> tuple[list[str], list[int]]:
    """``n`` unique lines, a third of them followed later by variants (accents, apostrophes, a word, an
    emoji); the cluster of each line."""
    import random
    import unicodedata

    rng = random.Random(4)
    words = [w.strip(",.’") for g in GOOD for w in g.split()]
    lines, groups = [], []
    for i in range(n):
        text = f"{' '.join(rng.choice(words) for _ in range(rng.randint(8, 16)))} numéro {i} ici."
        lines.append(text)
        groups.append(i)
        if i % 3 == 0:
            for variant in (
                "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)),
                text.replace(" ici", " ben ici") + " 😂",
            ):
                lines.insert(rng.randrange(len(lines) - 1, len(lines) + 30), variant)
                groups.insert(len(lines) - 1, i)
    order = sorted(range(len(lines)), key=lambda k: (groups[k] + rng.random() * 40, k))
    # keep each cluster's original first: the variants come later in corpus order
    lines = [lines[k] for k in order]
    groups = [groups[k] for k in order]
    return lines, groups


def test_tagged_near_duplicates_stay_on_one_side_of_the_split(tmp_path):
    lines, groups = near_duplicate_lines(600)
    src = corpus(tmp_path, lines)
    group_of = dict(zip(lines, groups, strict=True))
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        r = recipe_for([src], out, workers=workers, batch_bytes=2048, merge=True, filters=[TAG])
        result = run_prepare(r.prepare)
        outputs[workers] = ((out / "train.txt").read_bytes(), (out / "val.txt").read_bytes())
    assert outputs[1] == outputs[2]
    train, val = read_lines(tmp_path / "out1" / "train.txt"), read_lines(tmp_path / "out1" / "val.txt")
    assert sorted(train + val) == sorted(lines)  # tagged, not dropped
    assert not {group_of[t] for t in train} & {group_of[t] for t in val}
    stats = result.stats["sets"][0]
    assert stats["clustered"] == len(lines) - len(set(groups))  # every variant found
    assert len(val) == len(lines) - int(len(lines) * 0.9)  # the random splitter's count, by cluster


def test_without_near_duplicates_tagging_changes_nothing(tmp_path):
    lines, groups = near_duplicate_lines(300)
    originals = list({g: line for line, g in reversed(list(zip(lines, groups, strict=True)))}.values())
    src = corpus(tmp_path, originals)
    plain, tagged = tmp_path / "plain", tmp_path / "tagged"
    run_prepare(recipe_for([src], plain, merge=True, filters=[]).prepare)
    result = run_prepare(recipe_for([src], tagged, merge=True, filters=[TAG]).prepare)
    assert "clustered" not in result.stats["sets"][0] and result.stats["kept"] == 300
    for name in ("train.txt", "val.txt"):
        assert (plain / name).read_bytes() == (tagged / name).read_bytes()


def test_a_cluster_across_input_files_follows_its_first_member(tmp_path):
    first = [f"{g} Première série, numéro {i}." for i, g in enumerate(GOOD * 5)]
    second = [line.replace("é", "e").upper() + " 🎉" for line in first]  # a variant of each, in the next file
    a, b = corpus(tmp_path, first, "a.txt"), corpus(tmp_path, second, "b.txt")
    out = tmp_path / "out"
    splitter = {"use": "random", "val_split": 0.5, "seed": 7}
    result = run_prepare(recipe_for([a, b], out, merge=False, filters=[TAG], splitter=splitter).prepare)
    val_a = {first.index(t) for t in read_lines(out / "val_1.txt")}
    val_b = {second.index(t) for t in read_lines(out / "val_2.txt")}
    assert val_a == val_b and 0 < len(val_a) < len(first)
    assert result.stats["sets"][1]["clustered"] == len(second)


def test_prepare_texts_keeps_tagged_clusters_on_one_side():
    lines, groups = near_duplicate_lines(200)
    result = prepare_texts(lines, {"prepare": {"filters": [TAG], "normalizers": []}})
    group_of = dict(zip(lines, groups, strict=True))
    train = {group_of[d.text] for d in result.train}
    assert train.isdisjoint(group_of[d.text] for d in result.val)
    assert result.stats["sets"][0]["clustered"] > 0


def test_near_duplicates_tag_keeps_variants_on_one_side_of_the_split():
    """``qckit prepare --near_duplicates tag``: no near-duplicate dropped, but a variant of a training sentence
    never lands in validation."""
    import argparse

    from qckit.cli.prepare import add_parser, prepare_flags_to_recipe
    from qckit.defaults import NEAR_DUPLICATES, PREPARE_DEFAULTS

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    ns = parser.parse_args(["prepare", "--input", "a.txt", "--output", "out", "--near_duplicates", "tag"])
    filters = prepare_flags_to_recipe(ns)["prepare"]["filters"]
    assert filters[-1] == NEAR_DUPLICATES and NEAR_DUPLICATES not in PREPARE_DEFAULTS["filters"]
    default = parser.parse_args(["prepare", "--input", "a.txt", "--output", "out"])
    assert not any(
        f["use"] == "minhash_dedup" for f in prepare_flags_to_recipe(default)["prepare"]["filters"]
    )
    lines, groups = near_duplicate_lines(200)
    recipe = {"filters": filters, "splitter": {"use": "random", "val_split": 0.3, "seed": 1}}
    result = prepare_texts(lines, {"prepare": recipe})
    group_of = dict(zip(lines, groups, strict=True))
    kept = [d.text for d in [*result.train, *result.val]]
    train = {group_of[t] for t in (d.text for d in result.train) if t in group_of}
    val = {group_of[t] for t in (d.text for d in result.val) if t in group_of}
    assert train.isdisjoint(val) and result.stats["sets"][0]["clustered"] > 0
    assert len(kept) > len(set(groups))  # variants kept, not dropped


def test_rejected_lines_are_what_json_dumps_writes(varied_texts):
    import json

    from qckit.prepare.output import _reject_lines

    rejected = [
        (i + 1, "minhash_dedup", f"reason {i % 3} «ç»\\", text) for i, text in enumerate(varied_texts)
    ]
    source = 'dir "ç"/a\\b\t.txt'
    expected = "".join(
        json.dumps({"source": source, "line": n, "filter": f, "reason": r, "text": t}, ensure_ascii=False)
        + "\n"
        for n, f, r, t in rejected
    )
    assert _reject_lines(source, rejected) == expected


def test_lines_are_split_and_selected_whole_and_in_order():
    from qckit.prepare.output import _select, _split_lines

    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 300, size=1000)
    blob = rng.integers(0, 256, size=int(lengths.sum()), dtype=np.uint8).tobytes()
    lines = [
        blob[end - n : end] for n, end in zip(lengths.tolist(), np.cumsum(lengths).tolist(), strict=True)
    ]
    for to_val in (rng.random(1000) < 0.3, np.zeros(1000, dtype=bool), np.ones(1000, dtype=bool)):
        train = b"".join(line for line, v in zip(lines, to_val, strict=True) if not v)
        val = b"".join(line for line, v in zip(lines, to_val, strict=True) if v)
        assert _split_lines(blob, lengths, to_val) == (train, val)
        assert _select(blob, lengths, to_val) == val
