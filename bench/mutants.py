"""Mutation check: break one product line at a time in a scratch copy and see whether the tests notice.

Each mutant below is a plausible bug a user would notice (a wrong exit status, a lost GGUF fix, a split
seed that collides …). The script copies the tracked files of a checkout into a scratch directory,
applies one mutant at a time, runs the test suite there (``pytest -x``: a killed mutant stops at its
first failing test) and reports which mutants survive.

    python bench/mutants.py                     # every mutant against this checkout
    python bench/mutants.py --only exit-code-4  # one mutant (names from --list)
    python bench/mutants.py --tree ../old       # the same list against another checkout (e.g. an old commit)
    python bench/mutants.py --list

A mutant names alternative places (``targets``): the first whose text occurs exactly once in the tree
is applied, so the same list runs on a checkout from before a file moved; a mutant with no applicable
target is reported ``n/a``. The scratch copy is imported through ``PYTHONPATH`` (ahead of the
editable install's finder), so the installed environment is used as is and never modified.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str  #: what a user would notice
    targets: tuple[tuple[str, str, str], ...]  #: (file, exact old text, new text), first applicable wins


def m(name: str, why: str, *targets: tuple[str, str, str]) -> Mutant:
    return Mutant(name, why, targets)


MUTANTS: tuple[Mutant, ...] = (
    # -- GGUF input (issue #10 item 1) ------------------------------------------------------------------
    m(
        "gguf-marks-kept",
        "a dequantized GGUF model keeps its quantizer marks: Trainer refuses to fine-tune it",
        ("qckit/models.py", "        target.hf_quantizer = None\n        target.is_quantized = False\n", ""),
    ),
    m(
        "gguf-no-dequantize-config",
        "GGUF loaded without GgufConfig(dequantize=True)",
        ("qckit/models.py", "        return GgufConfig(dequantize=True)", "        return None"),
    ),
    # -- exit statuses (issue #10 item 2) ----------------------------------------------------------------
    *(
        m(
            f"exit-code-{code}",
            f"{cls} exits 1 instead of {code}",
            ("qckit/errors.py", f"    exit_code = {code}\n", "    exit_code = 1\n"),
        )
        for code, cls in (
            (2, "RecipeError"),
            (3, "InputError"),
            (4, "PluginError"),
            (5, "ComponentError"),
            (6, "HardwareError"),
        )
    ),
    m(
        "exit-code-130",
        "Ctrl-C exits 1 instead of 130",
        ("qckit/errors.py", "INTERRUPTED_EXIT_CODE = 130", "INTERRUPTED_EXIT_CODE = 1"),
        ("qckit/cli.py", "        return 130", "        return 1"),
    ),
    # -- refusals inside the run (issue #10 item 3) ----------------------------------------------------------
    m(
        "adapter-checks-skipped",
        "fsdp on CPU and 4bit without lora are no longer refused before loading",
        ("qckit/train/run.py", "            adapter.check(env, self.adapter_names)\n", "            pass\n"),
        ("qckit/train.py", "        adapter.check(env, names)\n", "        pass\n"),
    ),
    # -- splitting through prepare (issue #10 item 4) ----------------------------------------------------------
    m(
        "split-seed-collides",
        "seed 42 / file 1 splits like seed 43 / file 0",
        (
            "plugins/qckit_builtins/splitters.py",
            "            return np.random.default_rng([seed, set_index])",
            "            return np.random.default_rng([seed + set_index])",
        ),
        (
            "plugins/qckit_builtins/splitters.py",
            "        entropy = [self.seed, set_index] if self.seed >= 0 else [-self.seed, set_index, 1]",
            "        entropy = [self.seed + set_index]",
        ),
    ),
    m(
        "split-seed-ignored-per-file",
        "every file of an unmerged run gets the same validation positions",
        (
            "plugins/qckit_builtins/splitters.py",
            "            return np.random.default_rng([seed, set_index])",
            "            return np.random.default_rng([abs(seed)])",
        ),
        (
            "plugins/qckit_builtins/splitters.py",
            "        entropy = [self.seed, set_index] if self.seed >= 0 else [-self.seed, set_index, 1]",
            "        entropy = [abs(self.seed)]",
        ),
    ),
    m(
        "split-offset-lost",
        "the splitter sees index 0 at the start of every spooled batch",
        ("qckit/prepare/output.py", "by_index(index, batch.n)", "by_index(0, batch.n)"),
        ("qckit/prepare/output.py", "enumerate(docs, start=index)", "enumerate(docs)"),
        ("qckit/prepare.py", "enumerate(docs, start=index)", "enumerate(docs)"),
    ),
    m(
        "last-batches-reversed",
        "the local pool hands its last batches back in reverse order",
        (
            "plugins/qckit_builtins/executors/local.py",
            "            while pending:\n                yield pending.popleft().result()",
            "            while pending:\n                yield pending.pop().result()",
        ),
    ),
    # -- text components -----------------------------------------------------------------------------------
    m(
        "nfkc-default",
        "French non-breaking spaces and œ destroyed by default (the seed's NFKC)",
        ("qckit/defaults.py", '{"use": "unicode", "form": "NFC"}', '{"use": "unicode", "form": "NFKC"}'),
    ),
    m(
        "cp1252-fallback-lost",
        "a line that is not UTF-8 is decoded with replacement characters instead of cp1252",
        (
            "plugins/qckit_builtins/readers/lines.py",
            'return record.decode("utf-8", errors=_ERROR_HANDLER)',
            'return record.decode("utf-8", errors="replace")',
        ),
        (
            "plugins/qckit_builtins/readers.py",
            'return record.decode("utf-8", errors=_ERROR_HANDLER)',
            'return record.decode("utf-8", errors="replace")',
        ),
    ),
    m(
        "dedup-forgets-older-batches",
        "exact dedup only sees duplicates inside one batch: copies far apart in the corpus stay",
        (
            "plugins/qckit_builtins/filters/dedup.py",
            "        seen = np.fromiter(map(recent.__contains__, fingerprints), dtype=bool, count=n)\n"
            "        if len(index.sorted):\n"
            "            seen |= index.in_sorted(hashes)\n",
            "        seen = np.zeros(n, dtype=bool)\n",
        ),
        (
            "plugins/qckit_builtins/filters/dedup.py",
            "            if old or fp in recent:",
            "            if fp in recent:",
        ),
    ),
    m(
        "length-filter-off-by-one",
        "documents of exactly min_length characters are dropped",
        ("plugins/qckit_builtins/filters/heuristics.py", "if n < self.min_length", "if n <= self.min_length"),
        ("plugins/qckit_builtins/filters.py", "if n < self.min_length", "if n <= self.min_length"),
    ),
    # -- packing ----------------------------------------------------------------------------------------
    m(
        "no-eos-between-documents",
        "documents run into each other in training windows (the seed's bug)",
        ("plugins/qckit_builtins/chunkers.py", "            buffer.append(eos_token_id)\n", ""),
    ),
    m(
        "overlap-trained-twice",
        "stride tokens are training targets again (the seed's bug)",
        ("plugins/qckit_builtins/chunkers.py", "        labels[:context] = [IGNORE_INDEX] * context\n", ""),
    ),
    # -- evaluation -----------------------------------------------------------------------------------------
    m(
        "bpb-in-nats",
        "bits per byte reported in nats per byte",
        (
            "qckit/evaluate/bpb.py",
            "bits_per_byte=total_nll / math.log(2) / num_bytes,",
            "bits_per_byte=total_nll / num_bytes,",
        ),
        ("qckit/evaluate/bpb.py", "/ math.log(2)", ""),
        (
            "qckit/evaluate.py",
            "bits_per_byte=total_nll / math.log(2) / num_bytes",
            "bits_per_byte=total_nll / num_bytes",
        ),
    ),
    m(
        "eval-deep-json-fatal",
        "one JSON line nested 200,000 deep aborts a whole evaluation (RecursionError)",
        ("qckit/evaluate/rows.py", "        except RecursionError:\n", "        except ZeroDivisionError:\n"),
    ),
    m(
        "eval-answer-superscript",
        'a choice answer "²" aborts a whole evaluation (str.isdigit() is true, int() fails)',
        (
            "qckit/evaluate/choice.py",
            "digits.isascii() and digits.isdigit() and len(digits) <= 9",
            "digits.isdigit()",
        ),
    ),
    m(
        "eval-special-tokens-as-text",
        "a document holding '</s>' is scored as plain text where lm-eval scores the special token",
        (
            "qckit/evaluate/loglik.py",
            "    return BatchEncoder(tokenizer, split_special_tokens=split_special_tokens)\n",
            "    return BatchEncoder(tokenizer)\n",
        ),
    ),
    m(
        "eval-max-length-1024",
        "qckit evaluate reads long documents in windows of 1024 where lm-eval uses the model's context",
        (
            "qckit/evaluate/loglik.py",
            '    return context_length(getattr(model, "config", None), tokenizer)\n',
            "    return positions_cap(model, 1024, observer)\n",
        ),
    ),
    # -- recipes and CLI --------------------------------------------------------------------------------
    m(
        "dump-toml-control-chars",
        "a recipe string with a control character saves a recipe.toml that no longer parses",
        ("qckit/recipe.py", '        elif ch < " " or ch == "\\x7f":', "        elif False:"),
    ),
    m(
        "error-printed-as-markup",
        "an error naming '[/]' crashes the error printer; '[prepare]' disappears",
        (
            "qckit/report.py",
            '    return Text.assemble((f"{label}: ", label_style), literal(message, one_line=True))',
            '    return Text.from_markup(f"{label}: {message}")',
        ),
    ),
)


def _copy_tree(src: Path, dst: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=src,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_file():
            shutil.copy2(src / rel, target)


def _applicable(mutant: Mutant, tree: Path) -> tuple[str, str, str] | None:
    for file, old, new in mutant.targets:
        path = tree / file
        if path.is_file() and path.read_text(encoding="utf-8").count(old) == 1:
            return file, old, new
    return None


def _run_tests(tree: Path, timeout: float, pytest_args: list[str]) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "plugins")])}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *pytest_args]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return True, "timeout (counted as killed)"
    failed = next((line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))), "")
    return proc.returncode != 0, failed.split(" - ")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout to mutate (default: this one)")
    parser.add_argument("--only", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutant run (default 1200)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -m 'not slow'")
    args = parser.parse_args(argv)
    chosen = [mu for mu in MUTANTS if not args.only or mu.name in args.only]
    if args.list:
        for mu in MUTANTS:
            print(f"{mu.name:28s} {mu.why}")
        return 0
    tree = args.tree.resolve()
    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="qckit-mutants-") as scratch_dir:
        scratch = Path(scratch_dir)
        _copy_tree(tree, scratch)
        started = time.perf_counter()
        clean, detail = _run_tests(scratch, args.timeout, args.pytest_args)
        if clean:
            print(f"the unmutated suite fails ({detail}); fix it first", file=sys.stderr)
            return 2
        print(f"unmutated suite passes ({time.perf_counter() - started:.0f} s)")
        for mu in chosen:
            target = _applicable(mu, scratch)
            if target is None:
                results.append((mu.name, "n/a", "no target matches this tree"))
                print(f"{mu.name:28s} n/a")
                continue
            file, old, new = target
            path = scratch / file
            pristine = path.read_text(encoding="utf-8")
            path.write_text(pristine.replace(old, new), encoding="utf-8")
            try:
                t0 = time.perf_counter()
                killed, by = _run_tests(scratch, args.timeout, args.pytest_args)
            finally:
                path.write_text(pristine, encoding="utf-8")
            verdict = "killed" if killed else "SURVIVED"
            results.append((mu.name, verdict, by))
            print(f"{mu.name:28s} {verdict:9s} {time.perf_counter() - t0:5.0f} s  {by}", flush=True)
    applicable = [r for r in results if r[1] != "n/a"]
    survivors = [r for r in applicable if r[1] == "SURVIVED"]
    print(
        f"\n{len(survivors)} of {len(applicable)} applicable mutants survived ({len(results) - len(applicable)} n/a)"
    )
    for name, _, _ in survivors:
        print(f"  survivor: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
