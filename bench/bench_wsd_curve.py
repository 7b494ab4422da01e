"""The learning rate and the data mix at every step of a short warmup_stable_decay run (a curve, not a race).

    python bench/bench_wsd_curve.py                                   # 40 steps, tiny model, a few seconds
    python bench/bench_wsd_curve.py --steps 100 --decay-fraction 0.2 --decay-type linear --min-lr-ratio 0.1
    python bench/bench_wsd_curve.py --decay-share 0                   # the schedule alone, one mix throughout

A LoRA run of ``--steps`` optimizer steps (batch 4, no accumulation) of a tiny randomly initialised Llama
(the test tokenizer, built here) through :class:`qckit.train.TrainRun`, on two sources: ``quebec``
(weight 0.8: the test sentences, ``qckit.testing.SAMPLE_SENTENCES``, three times) and
``standard_french`` (0.2: ``data/sample/standard_french.txt``), with ``lr_scheduler =
"warmup_stable_decay"`` and, unless ``--decay-share 0``, ``decay_source = "standard_french"`` at
``--decay-share``. For each step the report gives the phase, the learning rate the step trained with
(the Trainer's log) next to the schedule written out here independently, and the standard French share
of the step's trained tokens (from the windows the run drew). The last lines give the rate after the
run (the floor, ``min_lr_ratio x learning_rate``), the largest difference between the logged and the
written-out rates, and the French share before and during the decay.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def written_out(step: int, steps: int, warmup: int, decay: int, floor: float, shape: str) -> float:
    """The WSD factor after ``step`` steps, from the definition (linear warmup from the floor)."""
    if step < warmup:
        return floor + (1 - floor) * step / warmup
    if step < steps - decay:
        return 1.0
    if step >= steps:
        return floor
    progress = (step - (steps - decay)) / decay
    factor = {
        "linear": 1 - progress,
        "cosine": 0.5 * (1 + math.cos(math.pi * progress)),
        "1-sqrt": 1 - math.sqrt(progress),
    }[shape]
    return floor + (1 - floor) * factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--decay-fraction", type=float, default=0.25)
    parser.add_argument("--min-lr-ratio", type=float, default=0.0)
    parser.add_argument("--decay-type", default="1-sqrt", choices=["linear", "cosine", "1-sqrt"])
    parser.add_argument("--decay-share", type=float, default=0.6, help="0: no decay source")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    ns = parser.parse_args()

    import torch

    from qckit.testing import SAMPLE_SENTENCES, save_tiny_model, write_corpus
    from qckit.train import TrainRun, TrainSettings
    from qckit.train.settings import DataSource
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    torch.set_num_threads(1)  # tiny matrices: threads only add noise on a shared machine
    decay_source = (
        {"decay_source": "standard_french", "decay_share": ns.decay_share} if ns.decay_share else {}
    )
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_model(Path(tmp) / "model", SAMPLE_SENTENCES)
        quebec = write_corpus(Path(tmp) / "quebec.txt", list(SAMPLE_SENTENCES) * 3)
        settings = TrainSettings(
            data=[
                DataSource(str(quebec), 0.8, name="quebec"),
                DataSource(str(SAMPLE / "standard_french.txt"), 0.2, name="standard_french"),
            ],
            output_dir=str(Path(tmp) / "out"),
            model=str(model),
            max_steps=ns.steps,
            batch_size=4,
            gradient_accumulation_steps=1,
            learning_rate=ns.learning_rate,
            lr_scheduler="warmup_stable_decay",
            warmup_ratio=ns.warmup_ratio,
            decay_fraction=ns.decay_fraction,
            min_lr_ratio=ns.min_lr_ratio,
            decay_type=ns.decay_type,
            logging_steps=1,
            save_steps=0,
            eval_steps=-1,
            timing_warmup_steps=0,
            report_to=[],
            **decay_source,
        )
        run = TrainRun(settings, WindowChunker(max_length=64, stride=8, min_length=8), [LoraAdapter()])
        run.run()
        steps = run.trainer.state.global_step
        warmup, decay = settings.warmup_steps(steps), settings.decay_steps(steps)
        logged = {
            h["step"]: h["learning_rate"] for h in run.trainer.state.log_history if "learning_rate" in h
        }
        print(
            f"warmup_stable_decay, {steps} steps: {warmup} warmup, {steps - warmup - decay} stable, {decay} "
            f"decay ({ns.decay_type}, floor {ns.min_lr_ratio:g}), learning_rate {ns.learning_rate:g}; decay "
            f"source: {'standard_french at ' + format(ns.decay_share, 'g') if ns.decay_share else 'none'}"
        )
        print(f"{'step':>5} {'phase':>7} {'lr (Trainer)':>14} {'lr (written out)':>17} {'french share':>13}")
        worst = 0.0
        french = {"before": [0, 0], "during": [0, 0]}  # [french tokens, all tokens]
        for step in range(1, steps + 1):
            phase = "warmup" if step <= warmup else "stable" if step <= steps - decay else "decay"
            expected = ns.learning_rate * written_out(
                step - 1, steps, warmup, decay, ns.min_lr_ratio, ns.decay_type
            )
            worst = max(worst, abs(logged[step] - expected))
            _, tokens = run.train_ds.drawn(
                run.plan.windows_drawn(step), start=run.plan.windows_drawn(step - 1)
            )
            part = french["during" if phase == "decay" else "before"]
            part[0] += tokens[1]
            part[1] += sum(tokens)
            print(
                f"{step:>5} {phase:>7} {logged[step]:>14.6g} {expected:>17.6g} "
                f"{100 * tokens[1] / max(sum(tokens), 1):>11.1f} %"
            )
        print(f"rate after the last step: {run.trainer.lr_scheduler.get_last_lr()[0]:.6g}")
        print(f"largest |logged - written out|: {worst:.3g}")
        for name, (fr, total) in french.items():
            if total:
                print(
                    f"standard_french share of the trained tokens, {name} the decay: {100 * fr / total:.1f} %"
                )


if __name__ == "__main__":
    main()
