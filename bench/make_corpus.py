"""Generate a large, messy, realistic Quebec French ``.txt`` corpus for benchmarks, deterministically.

Sentences of the clean lines of ``data/sample/quebec_sample.txt`` are varied (places, days, months,
numbers, relatives, apostrophes, discourse openers) and recombined, 1 to 4 per line, so that nearly
every line is unique. Then, at the given rates, lines are replaced by exact or near duplicates of earlier
lines (near or far back in the file), mojibake (UTF-8 read as cp1252), lines with URLs or e-mail
addresses, and junk (numbers, punctuation, HTML fragments, repeated words, very short lines, English,
blank lines). With ``cp1252_rate > 0`` some lines are written as raw Windows-1252 bytes (the file is then
not valid UTF-8, which the original script cannot read).

The same arguments always give the same bytes. About 1 GB is written in well under a minute
(one process, 8 MiB writes)::

    python bench/make_corpus.py /tmp/corpus_1g.txt --size-mb 1000
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "quebec_sample.txt"
MIB = 1 << 20
_BATCH = 20_000

_SWAPS = [
    [
        "Montréal",
        "Québec",
        "Sherbrooke",
        "Trois-Rivières",
        "Gatineau",
        "Rimouski",
        "Chicoutimi",
        "Laval",
        "Longueuil",
        "Lévis",
        "Drummondville",
        "Jonquière",
        "Gaspé",
        "Saint-Hyacinthe",
        "Granby",
        "Alma",
        "Rouyn-Noranda",
        "Sept-Îles",
        "Victoriaville",
        "Joliette",
    ],
    ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"],
    [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
    ["deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "douze", "quinze", "vingt"],
    [
        "mon oncle",
        "mon cousin",
        "mon voisin",
        "mon beau-frère",
        "mon chum",
        "mon père",
        "mon frère",
        "mon grand-père",
        "mon parrain",
        "mon coloc",
    ],
    [
        "ma tante",
        "ma cousine",
        "ma voisine",
        "ma belle-sœur",
        "ma blonde",
        "ma mère",
        "ma sœur",
        "ma grand-mère",
        "ma marraine",
        "ma coloc",
    ],
    ["à matin", "à soir", "hier", "avant-hier", "la semaine passée", "en fin de semaine"],
]
_OPENERS = [
    "Tsé, ",
    "Faque ",
    "Ben là, ",
    "Honnêtement, ",
    "En tout cas, ",
    "Pis là, ",
    "Sérieux, ",
    "Bon, ",
    "Écoute, ",
    "Ah pis ",
    "Franchement, ",
    "Anyway, ",
    "Mettons que ",
    "Je te dis que ",
]
_CLOSERS = [
    "C'est ça qui est ça.",
    "En tout cas.",
    "Pas pire pareil.",
    "Ayoye.",
    "Faut le faire !",
    "On verra ben.",
    "C'est de même.",
    "Bonne journée à tous !",
    "Je vous en reparle.",
    "C'est plate, mais c'est de même.",
    "Merci d'avance !",
    "Bref, j'en reviens pas.",
]
_OPENER_STARTS = (
    "Je ",
    "J'",
    "On ",
    "Y ",
    "Mon ",
    "Ma ",
    "Mes ",
    "Le ",
    "La ",
    "Les ",
    "C'est ",
    "Ça ",
    "Il ",
)
_URLS = [
    "https://www.example.com/nouvelles/{n}",
    "http://forum.example.ca/viewtopic.php?t={n}&start=20",
    "https://www.facebook.com/groups/{n}/",
    "www.example.qc.ca/promo{n}",
    "https://bit.ly/{n}xYz",
    "https://www.example.org/recettes/{n}-pate-chinois",
]
_EMAILS = ["info{n}@example.ca", "jean.tremblay{n}@example.com", "service@depanneur{n}.example.qc.ca"]
_ENGLISH = [
    "Click here to subscribe to our newsletter.",
    "Best poutine in town, no doubt!",
    "I moved to Montreal last year and I'm still learning French.",
    "Free shipping on all orders over $50",
    "Terms and conditions apply.",
    "Great weather today, perfect for a walk.",
]
_JUNK_WORDS = ["lol", "ok", "bla", "test", "mdr", "haha", "go", "oui"]

_CP1252 = {b: bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(0x80, 0xA0)}
_LATIN1_TO_CP1252 = str.maketrans({chr(b): ch for b, ch in _CP1252.items()})
_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-ZÀ-Ý])")


def mojibake(text: str) -> str:
    """UTF-8 bytes read as Windows-1252: ``é`` becomes ``Ã©``."""
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_CP1252)


def _clean_sample_lines(sample: Path) -> list[str]:
    lines = []
    for raw in sample.read_bytes().split(b"\n"):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        if (
            len(line) < 30
            or any(bad in line for bad in ("Ã", "http", "www.", "@", "!!", "??", ".."))
            or any(ord(c) < 32 for c in line)
            or re.search(r"\b(the|and|to|is|I'm)\b", line)
        ):
            continue
        lines.append(" ".join(line.split()))
    return list(dict.fromkeys(lines))


_SWAP_RES = [
    (group, re.compile(rf"(?<![\w-]){re.escape(w)}(?![\w-])", re.IGNORECASE))
    for group in _SWAPS
    for w in group
]


def _swap(match: re.Match, choice: str) -> str:
    return choice[0].upper() + choice[1:] if match.group(0)[0].isupper() else choice


def _variants(sentence: str, rng: random.Random, n: int) -> list[str]:
    out = {sentence}
    present = [(group, pattern) for group, pattern in _SWAP_RES if pattern.search(sentence)]
    for _ in range(n * 3):
        s = sentence
        for group, pattern in present:
            if rng.random() < 0.7:
                choice = rng.choice(group)
                s = pattern.sub(lambda m, c=choice: _swap(m, c), s)
        if rng.random() < 0.25:
            s = s.replace("'", "’")
        if s.startswith(_OPENER_STARTS) and rng.random() < 0.3:
            s = rng.choice(_OPENERS) + s[0].lower() + s[1:]
        out.add(s)
        if len(out) >= n:
            break
    return sorted(out)


def _pools(sample: Path, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    lines = _clean_sample_lines(sample)
    sentences: list[str] = []
    for line in lines:
        sentences.extend(s for s in _SENT_RE.split(line) if len(s) > 12)
    sentences = list(dict.fromkeys(sentences))
    pool: list[str] = []
    for s in sentences:
        pool.extend(_variants(s, rng, 8))
    pool.extend(_CLOSERS)
    return pool, lines


def _junk(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return " ".join(str(rng.randrange(10 ** rng.randrange(1, 8))) for _ in range(rng.randrange(1, 6)))
    if kind == 1:
        return rng.choice("!?.-=*#_~") * rng.randrange(3, 40)
    if kind == 2:
        tag = rng.choice(["div", "span", "p", "td"])
        return f'<{tag} class="c{rng.randrange(100)}"><br/>&nbsp;</{tag}>'
    if kind == 3:
        return " ".join([rng.choice(_JUNK_WORDS)] * rng.randrange(4, 20))
    if kind == 4:
        return rng.choice(["Oui.", "Merci !", "Allo", "Bon ben.", "Ok", "Bonne nuit", "lol", "Pas pire."])
    if kind == 5:
        return rng.choice(_ENGLISH)
    if kind == 6:
        return ""
    if kind == 7:
        return (
            f"{rng.randrange(2000, 2025)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} "
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}"
        )
    return f"$$$ GAGNEZ {rng.randrange(100, 5000)}$ MAINTENANT $$$ CLIQUEZ ICI $$$"


def _near(text: str, rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return text.lower()
    if kind == 1:
        return text.upper()
    if kind == 2:
        return text.replace(" ", "  ", 3)
    if kind == 3:
        return text.rstrip(".!? ") + " !!!"
    if kind == 4:
        return text.replace(",", "")
    return "  " + text + " "


def make_corpus(
    path: str | Path,
    size_mb: float,
    seed: int = 0,
    duplicate_rate: float = 0.05,
    mojibake_rate: float = 0.02,
    junk_rate: float = 0.05,
    url_rate: float = 0.02,
    cp1252_rate: float = 0.0,
    sample: str | Path = SAMPLE,
) -> Path:
    """Write about ``size_mb`` MiB (never more) of one-document-per-line text to ``path`` and return it.

    Rates are per line: ``duplicate_rate`` (half exact copies, half near copies such as a case or spacing
    change, of an earlier line), ``mojibake_rate``, ``junk_rate``, ``url_rate`` (a URL or e-mail added
    to a good line) and ``cp1252_rate`` (a line written as Windows-1252 bytes).
    """
    rates = [duplicate_rate, mojibake_rate, junk_rate, url_rate, cp1252_rate]
    if any(r < 0 for r in rates) or sum(rates) > 1:
        raise ValueError("rates must be >= 0 and sum to at most 1")
    if size_mb <= 0:
        raise ValueError("size_mb must be > 0")
    path = Path(path)
    pool, _ = _pools(Path(sample), seed)
    n_pool = len(pool)
    target = int(size_mb * MIB)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    edges = np.cumsum(rates)
    far: list[str] = []  # reservoir of earlier lines, for duplicates far back in the file
    written = 0
    with open(path, "wb") as f:
        while written < target:
            ks = nrng.choice(np.array([1, 2, 3, 4]), size=_BATCH, p=[0.04, 0.36, 0.38, 0.22])
            idx = nrng.integers(0, n_pool, size=(_BATCH, 4))
            kinds = np.searchsorted(edges, nrng.random(_BATCH), side="right")
            lines: list[str] = []
            for k, row, kind in zip(ks.tolist(), idx.tolist(), kinds.tolist(), strict=True):
                if kind == 5:  # a good line
                    lines.append(" ".join([pool[i] for i in row[:k]]))
                elif kind == 0 and (lines or far):  # duplicate
                    src = rng.choice(far) if far and (not lines or rng.random() < 0.3) else rng.choice(lines)
                    lines.append(src if rng.random() < 0.5 else _near(src, rng))
                elif kind == 1:
                    lines.append(mojibake(" ".join([pool[i] for i in row[:k]])))
                elif kind == 2:
                    lines.append(_junk(rng))
                elif kind == 3:
                    extra = rng.choice(_URLS if rng.random() < 0.7 else _EMAILS).format(
                        n=rng.randrange(100000)
                    )
                    sents = [pool[i] for i in row[:k]]
                    sents.insert(rng.randrange(k + 1), extra)
                    lines.append(" ".join(sents))
                elif kind == 4:
                    line = " ".join([pool[i] for i in row[:k]])
                    lines.append(line.encode("cp1252", "replace").decode("utf-8", "surrogateescape"))
                else:
                    lines.append(" ".join([pool[i] for i in row[:k]]))
            if len(far) < 2000:
                far.extend(rng.sample(lines, 50))
            else:
                far[rng.randrange(2000)] = rng.choice(lines)
            data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
            remaining = target - written
            if len(data) >= remaining:
                cut = data.rfind(b"\n", 0, remaining + 1) + 1
                f.write(data[:cut])
                break
            f.write(data)
            written += len(data)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output .txt file")
    parser.add_argument("--size-mb", type=float, default=100.0, help="size in MiB (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duplicate-rate", type=float, default=0.05)
    parser.add_argument("--mojibake-rate", type=float, default=0.02)
    parser.add_argument("--junk-rate", type=float, default=0.05)
    parser.add_argument("--url-rate", type=float, default=0.02)
    parser.add_argument("--cp1252-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = make_corpus(
        args.out,
        args.size_mb,
        seed=args.seed,
        duplicate_rate=args.duplicate_rate,
        mojibake_rate=args.mojibake_rate,
        junk_rate=args.junk_rate,
        url_rate=args.url_rate,
        cp1252_rate=args.cp1252_rate,
    )
    size = out.stat().st_size
    print(f"wrote {out} ({size / MIB:.1f} MiB) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
