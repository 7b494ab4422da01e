"""A faithful, single-process re-implementation of the original ``prepare_data.py`` (the "seed").

We do not have the seed's source, only its documentation; this file rebuilds its algorithm as documented
so that benchmarks and comparison tests have a baseline to measure qckit against. It deliberately keeps
the seed's properties, good and bad:

* standard library only, one process, the whole input read into memory (``f.read().splitlines()``);
* strict UTF-8: an input that is not valid UTF-8 crashes the run (``UnicodeDecodeError``);
* cleaning: NFKC, ``œ``/``Œ`` folded to ``oe``/``OE``, URLs removed with the classic regex whose
  ``[$-_@.&+]`` class is a *range* from ``$`` to ``_`` (it also matches digits, capitals, ``:;<=>?``
  and more), e-mail-like tokens (``\\S+@\\S+``) removed, runs of the same ``.``/``!``/``?`` collapsed,
  whitespace collapsed;
* filters, in order: length in ``[min_length, max_length]``, at least 3 words, at least 30 % distinct
  words, at least 70 % letters or spaces (a per-character Python loop);
* no deduplication;
* ``random.seed(seed); random.shuffle(texts)`` then ``split_idx = int(len(texts) * (1 - val_split))``;
  with ``merge`` everything goes to ``train.txt``/``val.txt``, otherwise input *i* goes to
  ``train_i.txt``/``val_i.txt``.

Details the documentation leaves open are guessed and marked "guess" below. The seed did not re-seed
the generator for per-file (non-merged) output, so those splits changed from run to run; pass
``faithful_seed_bug=True`` to reproduce that, the default seeds every file's shuffle with ``seed``.

Usage (the seed's flags)::

    python bench/seed_prepare.py --input corpus.txt --output ./data [--merge] [--val_split 0.1]
        [--min_length 10] [--max_length 10000] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import unicodedata

URL_RE = re.compile(r"http[s]?://(?:[a-zA-Z]|[0-9]|[$-_@.&+]|[!*\(\),]|(?:%[0-9a-fA-F][0-9a-fA-F]))+")
EMAIL_RE = re.compile(r"\S+@\S+")
REPEATED_PUNCT_RE = re.compile(r"([.!?])\1+")


def clean_text(text: str) -> str:
    """Normalize and clean one text the way the seed did."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("œ", "oe").replace("Œ", "OE")
    text = URL_RE.sub("", text)
    text = EMAIL_RE.sub("", text)
    text = REPEATED_PUNCT_RE.sub(r"\1", text)
    text = " ".join(text.split())
    return text


def keep(text: str, min_length: int = 10, max_length: int = 10000) -> bool:
    """The seed's quality filters, applied to an already cleaned text."""
    if len(text) < min_length or len(text) > max_length:
        return False
    words = text.split()
    if len(words) < 3:
        return False
    if len(set(words)) / len(words) < 0.3:  # guess: words compared as written (no lower-casing)
        return False
    alpha = sum(c.isalpha() or c.isspace() for c in text)
    return alpha / len(text) >= 0.7


def load_texts(path: str) -> list[str]:
    """Read one input file entirely (strict UTF-8). ``.jsonl``: ``text``, else ``content``, else ``sentence``."""
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            texts = []
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:  # guess: bad JSON lines were skipped, not fatal
                    data = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(data, dict):
                    continue
                text = data.get("text") or data.get("content") or data.get("sentence") or ""
                if isinstance(text, str) and text.strip():
                    texts.append(text.strip())
            return texts
        return [line.strip() for line in f.read().splitlines() if line.strip()]


def process_file(path: str, min_length: int, max_length: int) -> tuple[list[str], int]:
    raw = load_texts(path)
    kept = []
    for text in raw:
        text = clean_text(text)
        if keep(text, min_length, max_length):
            kept.append(text)
    return kept, len(raw)


def _split(texts: list[str], val_split: float, seed: int | None) -> tuple[list[str], list[str]]:
    if seed is not None:
        random.seed(seed)
    random.shuffle(texts)
    split_idx = int(len(texts) * (1 - val_split))
    return texts[:split_idx], texts[split_idx:]


def _write(path: str, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(text + "\n")


def prepare(
    inputs: list[str] | str,
    output: str,
    merge: bool = False,
    val_split: float = 0.1,
    min_length: int = 10,
    max_length: int = 10000,
    seed: int = 42,
    faithful_seed_bug: bool = False,
) -> dict:
    """Run the seed algorithm; return counts and the files written."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(p) for p in inputs]
    output = str(output)
    if not 0.0 <= val_split <= 0.5:
        raise ValueError("val_split must be between 0.0 and 0.5")
    os.makedirs(output, exist_ok=True)
    stats: dict = {"read": 0, "kept": 0, "train": 0, "val": 0, "files": []}
    if merge:
        all_texts: list[str] = []
        for path in inputs:
            kept, n = process_file(path, min_length, max_length)
            all_texts.extend(kept)
            stats["read"] += n
        groups = [("train.txt", "val.txt", all_texts)]
    else:
        groups = []
        for i, path in enumerate(inputs, 1):
            kept, n = process_file(path, min_length, max_length)
            stats["read"] += n
            groups.append((f"train_{i}.txt", f"val_{i}.txt", kept))
    for train_name, val_name, texts in groups:
        stats["kept"] += len(texts)
        train, val = _split(texts, val_split, None if (faithful_seed_bug and not merge) else seed)
        _write(os.path.join(output, train_name), train)
        _write(os.path.join(output, val_name), val)
        stats["train"] += len(train)
        stats["val"] += len(val)
        stats["files"] += [os.path.join(output, train_name), os.path.join(output, val_name)]
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare Quebec French text data (seed re-implementation)")
    parser.add_argument("--input", nargs="+", required=True, help="Input file(s): .txt or .jsonl")
    parser.add_argument("--output", default="./data", help="Output directory")
    parser.add_argument("--merge", action="store_true", help="Merge all inputs into one train/val set")
    parser.add_argument("--val_split", type=float, default=0.1, help="Validation split ratio (0.0-0.5)")
    parser.add_argument("--min_length", type=int, default=10, help="Minimum text length in characters")
    parser.add_argument("--max_length", type=int, default=10000, help="Maximum text length in characters")
    parser.add_argument("--seed", type=int, default=42, help="Random seed")
    parser.add_argument("--faithful_seed_bug", action="store_true", help="Do not seed per-file shuffles")
    args = parser.parse_args(argv)
    stats = prepare(
        args.input,
        args.output,
        merge=args.merge,
        val_split=args.val_split,
        min_length=args.min_length,
        max_length=args.max_length,
        seed=args.seed,
        faithful_seed_bug=args.faithful_seed_bug,
    )
    print(
        f"read {stats['read']} texts, kept {stats['kept']}: train {stats['train']}, val {stats['val']}"
        f" -> {', '.join(stats['files'])}"
    )


if __name__ == "__main__":
    main()
