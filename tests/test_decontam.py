"""Decontamination: training documents that share a word sequence with an eval set, on generated overlaps."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from qckit.cli import main
from qckit.components import Document
from qckit.errors import InputError, RecipeError
from qckit.prepare import prepare_texts
from qckit.prepare.pipeline import run_prepare
from qckit.recipe import build_recipe
from qckit.testing import QUEBEC_WORDS
from qckit_builtins.filters.decontam import _BASE, Decontaminate, EvalNgrams, _grams, _hashes_at

# 15 words: an eval sentence with 13-word sequences of its own
LONG = "Mon beau-frère pis sa blonde sont partis au chalet en fin de semaine avec leurs deux chiens"
# 7 words: a minimal pair's sentence, shorter than a 13-word sequence
SHORT_GOOD, SHORT_BAD = "J'ai pas vu personne au dépanneur hier.", "J'ai vu pas personne au dépanneur hier."
FILLER = [
    "Le festival d'été attire chaque année des milliers de visiteurs venus de partout dans la province.",
    "On a mangé une poutine au casse-croûte du village avant de reprendre la route vers le nord.",
    "Les travaux sur le pont vont durer tout l'été, selon le ministère des Transports.",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def eval_files(tmp_path):
    """A bpb file holding LONG, and a minimal-pairs file holding SHORT_GOOD/SHORT_BAD."""
    bpb = write(tmp_path / "held_out.txt", [LONG, FILLER[0][:30] + " et voilà."])
    pairs = write(
        tmp_path / "pairs.jsonl",
        [
            json.dumps({"sentence_good": SHORT_GOOD, "sentence_bad": SHORT_BAD, "phenomenon": "negation"}),
            json.dumps({"sentence_a": "Il fait beau.", "sentence_b": "Il beau fait.", "label": 0}),
        ],
    )
    return bpb, pairs


def decontam(texts, files, **settings):
    filters = [{"use": "decontaminate", "files": [str(f) for f in files], **settings}]
    return prepare_texts(
        texts, {"prepare": {"filters": filters, "splitter": {"use": "random", "val_split": 0.0}}}
    )


def kept(result) -> list[str]:
    return [d.text for d in result.train]


def test_a_document_holding_an_eval_sentence_in_other_case_and_punctuation_is_dropped(eval_files):
    bpb, pairs = eval_files
    shouted = LONG.upper().replace("-", " — ").replace(" pis ", ", pis, ") + "!!!"
    docs = [FILLER[0], f"{FILLER[1]} Il m'a raconté: «{shouted}» Pas pire, hein?", FILLER[2]]
    result = decontam(docs, [bpb, pairs])
    assert kept(result) == [FILLER[0], FILLER[2]]
    info = result.stats["filters"]["decontaminate"]
    assert info["reasons"] == {f"contaminated:{bpb}": 1}
    assert info["examples"] == {f"contaminated:{bpb}": ["<memory>:2"]}


def test_twelve_words_of_a_thirteen_word_sequence_are_not_a_match(eval_files):
    bpb, pairs = eval_files
    words = LONG.split()  # 15 words here, 15 in the normalized key too ("beau-frère" is two: 16)
    twelve = " ".join(words[:11])  # "mon beau frère … semaine": 12 normalized words
    assert len(twelve.replace("-", " ").split()) == 12
    thirteen = " ".join(words[:12])
    docs = [f"Bon. {twelve}, mais pas le reste.", f"Bon. {thirteen}, mais pas le reste."]
    result = decontam(docs, [bpb, pairs])
    assert kept(result) == [docs[0]]
    # and any 13 words in a row of the eval sentence are one
    tail = " ".join(LONG.replace("-", " ").split()[-13:])
    assert kept(decontam([f"Début. {tail}. Fin."], [bpb])) == []


def test_a_short_minimal_pair_sentence_is_matched_whole(eval_files):
    bpb, pairs = eval_files
    docs = [
        f"Ma tante disait: {SHORT_BAD.lower()} C'était drôle.",  # the ungrammatical one, whole
        "J'ai pas vu personne au dépanneur ce matin.",  # its first 5 words only: no match
        "Il fait beau. Il beau fait.",  # 3 words each: below min_words, not checked
        FILLER[0],
        "Il me l'a dit: j'ai pas vu personne",  # the first 5 words again, at the very end of the batch
    ]
    result = decontam(docs, [bpb, pairs])
    assert kept(result) == docs[1:]
    assert result.stats["filters"]["decontaminate"]["reasons"] == {f"contaminated:{pairs}": 1}
    summary = result.stats["summaries"]["decontaminate"]
    assert summary[f"{pairs}: texts checked"] == 2
    assert summary[f"{pairs}: texts under 5 words, not checked"] == 2
    # min_words = 3 checks them too
    result = decontam(docs, [bpb, pairs], min_words=3)
    assert kept(result) == [docs[1], *docs[3:]]


def test_report_keeps_tags_and_counts(eval_files):
    bpb, pairs = eval_files
    docs = [f"Avant. {LONG}. Après.", FILLER[0], f"{SHORT_GOOD} Fin.", f"Encore: {SHORT_GOOD}"]
    result = decontam(docs, [bpb, pairs], action="report")
    assert kept(result) == docs
    assert result.stats["filters"]["decontaminate"]["dropped"] == 0
    assert [d.meta.get("contaminated") for d in result.train] == [str(bpb), None, str(pairs), str(pairs)]
    summary = result.stats["summaries"]["decontaminate"]
    assert summary[f"{bpb}: documents matching (kept)"] == 1
    assert summary[f"{pairs}: documents matching (kept)"] == 2
    assert result.stats["metrics"][f"contaminated:{pairs}"] == 2


def test_a_document_matching_two_sets_counts_under_the_first(eval_files, tmp_path):
    bpb, pairs = eval_files
    again = write(tmp_path / "again.txt", [SHORT_GOOD])
    doc = f"{SHORT_GOOD} {LONG}"
    assert decontam([doc], [again, bpb, pairs]).stats["filters"]["decontaminate"]["reasons"] == {
        f"contaminated:{again}": 1
    }
    assert decontam([doc], [bpb, again]).stats["filters"]["decontaminate"]["reasons"] == {
        f"contaminated:{bpb}": 1
    }


def test_the_batch_path_equals_the_per_document_path(eval_files):
    bpb, pairs = eval_files
    rng = random.Random(3)
    pieces = [LONG, SHORT_GOOD, SHORT_BAD, *FILLER, *QUEBEC_WORDS]
    texts = [" ".join(rng.choices(pieces, k=rng.randint(0, 6))) for _ in range(300)]
    texts += ["", "!!!", LONG.split()[0], "é" * 40]
    flt = Decontaminate(files=[str(bpb), str(pairs)], action="report")
    batch = [Document(t) for t in texts]
    one = [Document(t) for t in texts]
    assert flt.drop_reason_batch(batch) == [flt.drop_reason(d) for d in one]
    assert [d.meta for d in batch] == [d.meta for d in one]
    assert sum(bool(d.meta) for d in batch) > 50  # the sample does match, often
    flt = Decontaminate(files=[str(bpb), str(pairs)])
    reasons = flt.drop_reason_batch([Document(t) for t in texts])
    assert reasons == [flt.drop_reason(Document(t)) for t in texts]


def test_the_hashes_of_every_length_agree_with_the_definition():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 1 << 63, size=200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    base = int(_BASE)
    for k in (1, 2, 3, 5, 7, 8, 13, 20):
        want = []
        for i in range(len(values) - k + 1):
            h = 0
            for v in values[i : i + k].tolist():
                h = (h * base + v) % (1 << 64)
            want.append(h)
        assert _grams(values, k).tolist() == want
        starts = np.arange(0, len(values) - k + 1, 7)
        assert _hashes_at(values, starts, np.full(len(starts), k)).tolist() == [want[i] for i in starts]


def test_the_index_is_small_and_travels_to_workers(eval_files):
    bpb, pairs = eval_files
    flt = Decontaminate(files=[str(bpb), str(pairs)])
    doc = Document(f"Bon. {SHORT_BAD}")
    assert flt.drop_reason(doc) == f"contaminated:{pairs}"
    payload = pickle.dumps(flt)
    assert b"MinimalPairs" not in payload and len(payload) < 4000  # the index, not the evaluators
    again = pickle.loads(payload)
    assert isinstance(again.index, EvalNgrams)
    assert again.drop_reason(doc) == f"contaminated:{pairs}"
    assert again.drop_reason(Document(FILLER[0])) is None


def test_a_choice_task_contributes_its_prompt_or_template_fields_and_its_choices(tmp_path):
    question = "Au Québec, qu'est-ce qu'on veut dire quand on dit que le char est parké dans l'entrée?"
    choice = "que la voiture est stationnée devant la maison"
    sentence = "Mon chum a pelleté l'entrée avant de partir travailler"
    tasks = write(
        tmp_path / "tasks.jsonl",
        [json.dumps({"prompt": question, "choices": ["non merci", choice], "answer": 1})],
    )
    cola = write(tmp_path / "cola.jsonl", [json.dumps({"sentence": sentence, "label": 1})])
    recipe = recipe_with_sets(
        tmp_path,
        [
            {"name": "tasks", "kind": "choice", "path": str(tasks)},
            {
                "name": "cola",
                "kind": "choice",
                "path": str(cola),
                "template": "Phrase : {sentence}\nEst-ce une phrase acceptable ?",
                "choices": ["non", "oui"],
                "answer_field": "label",
            },
        ],
    )
    flt = recipe.prepare.filters[0].instance
    docs = [
        Document(f"Question du jour. {question} Réponds vite."),
        Document(f"Réponse: {choice}."),
        Document(f"{sentence}, pis il est revenu."),  # the template's words are not needed
        Document("Non merci, pas de dessert."),  # a two-word choice is too short to check
    ]
    assert flt.drop_reason_batch(docs) == [
        "contaminated:tasks",
        "contaminated:tasks",
        "contaminated:cola",
        None,
    ]


def recipe_with_sets(tmp_path, sets, corpus=FILLER, rejects=False, **filter_settings):
    return build_recipe(
        {
            "prepare": {
                "inputs": [str(write(tmp_path / "corpus.txt", corpus))],
                "output": str(tmp_path / "out"),
                "workers": 1,
                "rejects": rejects,
                "filters": [{"use": "decontaminate", **filter_settings}],
            },
            "train": {"model": "m", "eval": sets},
        }
    )


def test_a_recipe_hands_its_eval_sets_to_the_filter(eval_files, tmp_path):
    bpb, pairs = eval_files
    sets = [
        {"name": "held_out", "kind": "bpb", "path": str(bpb), "role": "retain"},
        {"name": "quebec_pairs", "kind": "minimal_pairs", "path": str(pairs)},
    ]
    recipe = recipe_with_sets(tmp_path, sets)
    flt = recipe.prepare.filters[0].instance
    assert flt.index.names == ["held_out", "quebec_pairs"]
    assert flt.drop_reason(Document(f"Bon. {SHORT_BAD}")) == "contaminated:quebec_pairs"
    # exclude leaves a set out; files are checked besides the recipe's sets
    extra = write(tmp_path / "extra.txt", [FILLER[2]])
    recipe = recipe_with_sets(tmp_path, sets, exclude=["held_out"], files=[f"bpb:{extra}"])
    flt = recipe.prepare.filters[0].instance
    assert flt.index.names == ["quebec_pairs", f"bpb:{extra}"]
    assert flt.drop_reason(Document(LONG)) is None
    assert flt.drop_reason(Document(FILLER[2])) == f"contaminated:bpb:{extra}"


@pytest.mark.parametrize(
    ("settings", "sets", "message"),
    [
        ({}, [], "nothing to check against: no files, and the recipe has no \\[\\[train.eval\\]\\] set"),
        ({"exclude": ["nope"]}, None, "exclude: no eval set named 'nope' in the recipe"),
        (
            {"files": ["pairz:x.jsonl"]},
            None,
            "unknown eval kind 'pairz' in 'pairz:x.jsonl'; kinds: bpb, choice",
        ),
        ({"action": "flag"}, None, "action must be one of drop, report"),
        ({"ngram": 13, "min_words": 14}, None, "min_words must be between 1 and ngram"),
    ],
)
def test_bad_settings_name_the_filter_key(eval_files, tmp_path, settings, sets, message):
    _, pairs = eval_files
    if sets is None:
        sets = [{"name": "quebec_pairs", "kind": "minimal_pairs", "path": str(pairs)}]
    with pytest.raises(RecipeError, match=f"prepare.filters\\[0\\].*{message}"):
        recipe_with_sets(tmp_path, sets, **settings)


class Opaque:
    """An eval kind that cannot list its texts."""

    name = "acme.opaque"
    metric = "score"
    higher_is_better = True
    regression = "points"

    def load(self, path, tokenizer):
        return None

    def measure(self, model, data, context):
        return {"score": 1.0}


def test_a_kind_without_texts_is_named_and_can_be_excluded(eval_files, tmp_path):
    import types

    from qckit import hookimpl
    from qckit.host import PluginHost

    _, pairs = eval_files
    plugin = types.SimpleNamespace(register_evaluators=hookimpl(lambda register: register(Opaque)))
    host = PluginHost.from_entry_points(extra=[("acme", plugin)])
    data = {
        "prepare": {
            "inputs": [str(pairs)],
            "output": str(tmp_path / "o"),
            "filters": [{"use": "decontaminate"}],
        },
        "train": {
            "model": "m",
            "eval": [
                {"name": "opaque", "kind": "acme.opaque", "path": str(pairs)},
                {"name": "quebec_pairs", "kind": "minimal_pairs", "path": str(pairs)},
            ],
        },
    }
    with pytest.raises(RecipeError, match="eval set 'opaque' \\(kind 'acme.opaque'\\) cannot list its texts"):
        build_recipe(data, host=host)
    data["prepare"]["filters"] = [{"use": "decontaminate", "exclude": ["opaque"]}]
    flt = build_recipe(data, host=host).prepare.filters[0].instance
    assert flt.index.names == ["quebec_pairs"]


def test_a_bad_eval_file_is_one_line_naming_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.txt"
    broken.write_bytes("Une première ligne correcte.\nune deuxième\n".encode() + b"\xff\xfe pas de l'UTF-8\n")
    with pytest.raises(InputError, match=f"^{broken}:3: not valid UTF-8"):
        Decontaminate(files=[str(broken)]).drop_reason(Document("x"))
    no_pairs = write(
        tmp_path / "pairs.jsonl", ['{"sentence_good": "Une phrase.", "sentence_bad": 3', "[1, 2]"]
    )
    with pytest.raises(InputError, match=f"^{no_pairs}:1: cannot tell the eval kind|{no_pairs}: no usable"):
        Decontaminate(files=[str(no_pairs)]).drop_reason(Document("x"))
    rows = write(tmp_path / "rows.jsonl", ['{"text": "Une phrase quelconque ici."}'])
    with pytest.raises(
        InputError, match=f"^{rows}:1: cannot tell the eval kind from the fields text: write KIND:"
    ):
        Decontaminate(files=[str(rows)]).drop_reason(Document("x"))
    bad_pairs = write(
        tmp_path / "bad_pairs.jsonl", ['{"sentence_good": "Une phrase.", "sentence_bad": "x"', "{}"]
    )
    with pytest.raises(
        InputError, match=f"^{bad_pairs}: no usable minimal pairs; 2 bad row\\(s\\), first: {bad_pairs}:1"
    ):
        Decontaminate(files=[f"minimal_pairs:{bad_pairs}"]).drop_reason(Document("x"))


def test_prepare_counts_drops_by_set_in_its_stats_and_rejects(eval_files, tmp_path):
    bpb, pairs = eval_files
    sets = [
        {"name": "held_out", "kind": "bpb", "path": str(bpb)},
        {"name": "quebec_pairs", "kind": "minimal_pairs", "path": str(pairs)},
    ]
    corpus = [FILLER[0], f"Hier: {SHORT_GOOD}", FILLER[1], f"{LONG}!", FILLER[2]]
    recipe = recipe_with_sets(tmp_path, sets, corpus=corpus, rejects=True)
    run_prepare(recipe.prepare)
    out = tmp_path / "out"
    stats = json.loads((out / "prepare_stats.json").read_text(encoding="utf-8"))
    assert stats["filters"]["decontaminate"]["reasons"] == {
        "contaminated:held_out": 1,
        "contaminated:quebec_pairs": 1,
    }
    rejects = [json.loads(line) for line in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {(r["line"], r["filter"], r["reason"]) for r in rejects} == {
        (2, "decontaminate", "contaminated:quebec_pairs"),
        (4, "decontaminate", "contaminated:held_out"),
    }


def test_the_cli_flag_adds_the_filter(eval_files, tmp_path):
    bpb, pairs = eval_files
    corpus = write(tmp_path / "corpus.txt", [FILLER[0], f"Hier: {SHORT_GOOD}", FILLER[1], LONG, FILLER[2]])
    console = Console(width=200, record=True, force_terminal=False)
    argv = ["prepare", "--input", str(corpus), "--output", str(tmp_path / "q"), "--workers", "1"]
    status = main([*argv, "--val_split", "0", "--decontaminate", str(pairs), f"bpb:{bpb}"], console=console)
    out = console.export_text()
    assert status == 0, out
    assert (tmp_path / "q" / "train_1.txt").read_text(encoding="utf-8").splitlines() == [
        FILLER[0],
        FILLER[1],
        FILLER[2],
    ]
    assert f"contaminated:{pairs} 1" in out and f"contaminated:bpb:{bpb} 1" in out
    status = main([*argv, "--decontaminate", str(tmp_path / "missing.jsonl")], console=console)
    assert status == 3
    assert f"{tmp_path / 'missing.jsonl'}: file not found" in console.export_text()


def test_two_workers_drop_the_same_documents_as_one(eval_files, tmp_path):
    bpb, pairs = eval_files
    rng = random.Random(5)
    pieces = [*FILLER, SHORT_GOOD, LONG, *QUEBEC_WORDS]
    corpus = [" ".join(rng.choices(pieces, k=rng.randint(3, 8))) + f" (ligne {i})" for i in range(400)]
    sets = [{"name": "quebec_pairs", "kind": "minimal_pairs", "path": str(pairs)}]
    outputs = []
    for workers in (1, 2):
        recipe = recipe_with_sets(tmp_path, sets, corpus=corpus, files=[str(bpb)])
        settings = recipe.prepare.settings
        settings.workers, settings.batch_bytes, settings.output = workers, 4096, str(tmp_path / f"w{workers}")
        stats = run_prepare(recipe.prepare).stats
        outputs.append(((tmp_path / f"w{workers}" / "train_1.txt").read_bytes(), stats["filters"]))
    assert outputs[0] == outputs[1]
    reasons = outputs[0][1]["decontaminate"]["reasons"]
    assert reasons["contaminated:quebec_pairs"] > 50 and reasons[f"contaminated:{bpb}"] > 20
