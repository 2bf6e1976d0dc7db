"""What went wrong in an entry that failed: diverged, or stuck near the image's mean colour, read from
its runs' per-layer dynamics (training/dynamics.py's diagnose).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.runs.directory import RunDirectory
from monalisa.training.dynamics import diagnose

# A run that ends within STUCK_DB of the PSNR of painting every pixel the image's mean colour has
# learnt next to nothing of the picture (the 8-layer network of the depth study, 30 epochs): it
# failed as surely as one that diverged, and is diagnosed like one.
STUCK_DB = 1.0


def mean_colour_psnr(target: Target) -> float:
    """The PSNR of the best constant picture, the target's mean colour: the floor any run starts near."""
    mse = float(np.mean(target.colours.astype(np.float64).var(axis=0)))
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def failure(row: dict, floor: float) -> str | None:
    """How a run (a table row of one seed) failed, or None: diverged, or ended within STUCK_DB of ``floor``."""
    if row.get("status") == "diverged":
        return f"diverged in epoch {(row.get('epochs') or 0) + 1}"
    psnr = row.get("psnr")
    if row.get("status") == "complete" and psnr is not None and psnr < floor + STUCK_DB:
        return (f"stuck near the mean colour: {psnr:.2f} dB after {row.get('epochs')} epochs, against "
                f"{floor:.2f} dB for the mean colour")
    return None


def diagnoses(out: Path, target: Target, rows: list[dict]) -> list[dict]:
    """For each entry with a failed seed: how it failed and what its layers.csv says went wrong
    (dynamics.diagnose), from its first failed seed's run. ``{"label", "seed", "failed_seeds", "seeds",
    "problem", "findings"}``."""
    floor = mean_colour_psnr(target)
    found = []
    for row in rows:
        runs = row.get("per_seed") or [row]
        failed = [(run, failure(run, floor)) for run in runs]
        failed = [(run, problem) for run, problem in failed if problem]
        if not failed:
            continue
        run, problem = failed[0]
        try:
            layers = RunDirectory(out / run["run_dir"]).layers()
        except UserError as exc:
            layers, findings = [], [str(exc)]
        else:
            findings = diagnose(layers) if layers else \
                ["no layers.csv: the run was trained before layer dynamics were recorded"]
        if layers and not findings:
            findings = ["no layer statistic passed its threshold (dynamics.diagnose): gradients within two orders "
                        "of magnitude of the output layer's, under half the units dead, updates between 1e-5 and "
                        "1e-1 of the weights a step"]
        found.append({"label": row["label"], "seed": run.get("seed"), "failed_seeds": len(failed),
                      "seeds": len(runs), "problem": problem, "findings": findings})
    return found


def _diagnosis_heading(diagnosis: dict) -> str:
    seeds = ""
    if diagnosis["seeds"] > 1:
        seeds = f" ({diagnosis['failed_seeds']} of {diagnosis['seeds']} seeds; seed {diagnosis['seed']} shown)"
    return f"{diagnosis['label']}{seeds}: {diagnosis['problem']}"
