"""Seconds of training each preset needs to reach 20, 25 and 30 dB, in one table, one run.

    python benchmarks/time_to_quality.py                       # every preset, 60 s each, reference image
    python benchmarks/time_to_quality.py --presets fast,original --limit 30

Each preset trains on the reference image with a time limit on *training*
seconds (rendering excluded, as in metrics.csv). PSNR is measured on the whole
image after every epoch, so a threshold's time is the cumulative training time
at the end of the first epoch that reached it; presets with long epochs
(`original`: ~5 s) are therefore resolved no finer than an epoch. "PSNR @ t"
is the PSNR of the last epoch that had ended by t seconds of training.

The presets run one after another in this process, so they share the machine
alike; on a shared machine, rerun and compare.
"""

from __future__ import annotations

import argparse
import sys

import torch

from monalisa.data.images import load_target
from monalisa.recipes.recipe import PRESETS, get_preset
from monalisa.training.trainer import Trainer

REFERENCE_IMAGE = "mona_lisa"  # the built-in reference image (README, "Built-in images")
THRESHOLDS = (20.0, 25.0, 30.0)
ORIGINAL_PARAMETERS = 272_703  # the original 4x300 network (docs/original.md)


def seconds_to_reach(history: list[dict], db: float) -> float | None:
    elapsed = 0.0
    for row in history:
        elapsed += row["train_seconds"]
        if row["psnr"] >= db:
            return elapsed
    return None


def psnr_at(history: list[dict], seconds: float) -> float | None:
    elapsed, psnr = 0.0, None
    for row in history:
        elapsed += row["train_seconds"]
        if elapsed > seconds:
            break
        psnr = row["psnr"]
    return psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=REFERENCE_IMAGE, help="image file or built-in name")
    parser.add_argument("--presets", default=",".join(p for p in PRESETS if p != "quick"),
                        help="comma-separated preset names")
    parser.add_argument("--limit", type=float, default=60.0, help="training seconds per preset")
    parser.add_argument("--early", type=float, default=10.0, help="also report the PSNR after this many seconds")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    target = load_target(args.image)
    print(f"{target.name} {target.width}x{target.height}, {args.limit:g} s of training per preset, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for name in args.presets.split(","):
        recipe = get_preset(name).replace(time_limit=args.limit)
        trainer = Trainer(target, recipe, device=args.device)
        print(f"  {name}: {recipe.describe()} on {trainer.engine_name}/{trainer.device} ...", end="", flush=True)
        trainer.fit()
        history = trainer.history
        rows.append({
            "preset": name,
            "parameters": recipe.parameter_count(),
            "engine": f"{trainer.engine_name}/{trainer.device}",
            "reach": [seconds_to_reach(history, db) for db in THRESHOLDS],
            "early": psnr_at(history, args.early),
            "final": psnr_at(history, args.limit + 1e9),
            "epochs": len(history),
        })
        print(f" {rows[-1]['final']:.2f} dB after {len(history)} epochs", flush=True)

    def cell(seconds):
        return f"{seconds:7.1f}" if seconds is not None else "  never"

    def db(value):
        return f"{value:6.2f}" if value is not None else "     -"

    print()
    header = (f"| {'preset':14s} | {'parameters':>10s} | " + " | ".join(f"s to {t:.0f} dB" for t in THRESHOLDS)
              + f" | dB @ {args.early:g} s | dB @ {args.limit:g} s | epochs | engine |")
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        reach = " | ".join(f"{cell(s):>10s}" for s in row["reach"])
        print(f"| {row['preset']:14s} | {row['parameters']:10,d} | {reach} | {db(row['early']):>9s} | "
              f"{db(row['final']):>9s} | {row['epochs']:6d} | {row['engine']} |")
    print(f"\n('never': not reached within {args.limit:g} s of training)")
    small = [r for r in rows if r["parameters"] <= ORIGINAL_PARAMETERS and r["final"] is not None]
    if small:
        best = max(small, key=lambda r: r["final"])
        print(f"best preset with no more parameters than the original network ({ORIGINAL_PARAMETERS:,}): "
              f"{best['preset']} ({best['parameters']:,} parameters, {best['final']:.2f} dB after {args.limit:g} s)")


if __name__ == "__main__":
    sys.exit(main())
