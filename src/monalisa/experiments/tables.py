"""A comparison's table and its conclusion: each entry's row from its runs' own directories.

compare.py trains the runs; this reads them back. One run's row (``table_row``) comes from
its run directory; an entry's row (``entry_row``) gathers its seeds' rows, each figure's mean
and its Estimate (stats.py); ``conclusion`` says in one sentence who reached what, naming as
level the entries whose 95% intervals overlap.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import torch

from monalisa.experiments.report.pages import THRESHOLDS, format_seconds
from monalisa.experiments.stats import Estimate, estimate, overlap
from monalisa.recipes.encodings import build_encoding
from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import ENCODINGS
from monalisa.recipes.sizes import encoding_size
from monalisa.runs.directory import RunDirectory
from monalisa.runs.status import FINISHED, Status

# The figures of the table that get a mean and an interval over seeds.
ESTIMATED = ("psnr", "mae", "best_psnr", *(f"seconds_to_{db:g}" for db in THRESHOLDS))


def flops_per_pixel(recipe: Recipe) -> int:
    """Training FLOPs per pixel per epoch, forward and backward: an estimate for comparing recipes.

    Linear layers: 6 per weight, 6 x sum(n_in x n_out) (Kaplan et al. 2020's 6N rule): a
    multiply-add (2 FLOPs) forward, two backward (the input's gradient and the weight's). For
    the original 4x300 network that is 6 x 271,500 = 1.63 MFLOP, docs/original.md's "about 1.6 MFLOP
    a pixel". Biases, activations and the update add O(width) and are left out.

    Encodings, counting every elementwise operation (sin and cos included) as one FLOP:
    positional 3 per coordinate per octave (a multiply, a sin, a cos), forward only as nothing
    in it trains; fourier 7 per feature (2 multiply-adds for the 2-D projection, the 2 pi
    scaling, a sin, a cos), forward only; hashgrid 16 per level per feature (4 corners x a
    multiply-add forward, and the same backward into the table). An encoding registered
    elsewhere counts its module's ``flops_per_point`` attribute if it has one, else nothing.
    """
    features, _ = encoding_size(recipe.encoding)
    widths = (features, *recipe.arch, 3)  # encoding -> hidden layers -> (R, G, B)
    linear = sum(n_in * n_out for n_in, n_out in zip(widths[:-1], widths[1:]))
    return 6 * linear + _encoding_flops(recipe)


def _encoding_flops(recipe: Recipe) -> int:
    spec = ENCODINGS.parse(recipe.encoding)
    options = spec.options
    inputs = 2  # (row, col)
    if spec.name == "none":
        return 0
    if spec.name == "positional":
        return 3 * inputs * options.octaves
    if spec.name == "fourier":
        return 7 * options.features
    if spec.name == "hashgrid":
        return 4 * options.levels * 4 * options.features
    # a user's encoding: only its module knows (built alone, without the network behind it)
    module = build_encoding(spec, inputs, torch.Generator().manual_seed(0))
    return int(getattr(module, "flops_per_point", 0))


def entry_row(out: Path, label: str, runs: list[tuple[int, str]], parameters: int | None = None) -> dict:
    """One entry's line of the table: its seeds' runs, each figure's mean and Estimate over them.

    The figures (``psnr``, ``mae``, ...) are means over the seeds that completed (a figure a seed
    never reached, such as seconds to 30 dB, counts over the seeds that reached it; ``stats``
    says how many). ``run_dir`` is the median seed's run (by final PSNR; the grid shows it).
    ``status`` is complete only if every seed completed; else the first failure (diverged first).
    """
    seeds = [seed for seed, _ in runs]
    flops = None  # the same for every seed (a seed changes no shape): counted once
    rows = []
    for seed, key in runs:
        rows.append(table_row(out, key, parameters, flops) | {"seed": seed})
        flops = rows[-1]["flops_per_pixel"]
    runs = rows
    complete = [run for run in runs if run["status"] == Status.COMPLETE]
    stats = {name: estimate([run[name] for run in complete]) for name in ESTIMATED}
    row = dict(runs[0], label=label, seeds=list(seeds), per_seed=runs)
    for name, value in stats.items():
        row[name] = value.mean
    row["stats"] = {name: value.to_dict() for name, value in stats.items()}
    failed = [run for run in runs if run["status"] != Status.COMPLETE]
    if failed:
        diverged = [run for run in failed if run["status"] == Status.DIVERGED]
        row["status"] = (diverged or failed)[0]["status"]
        if not complete:  # every seed failed: the entry's figures are its first failed seed's, as with one seed
            row.update({name: failed[0][name] for name in ESTIMATED})
    shown = _median_run(complete) or runs[0]
    per_epoch = [run["seconds_per_epoch"] for run in runs if run["seconds_per_epoch"] is not None]
    row.update(run_dir=shown["run_dir"], median_seed=shown["seed"], best_epoch=shown["best_epoch"],
               epochs=shown["epochs"], seconds_per_epoch=statistics.median(per_epoch) if per_epoch else None,
               seeds_failed=len(failed))
    return row


def _median_run(runs: list[dict]) -> dict | None:
    """The run whose final PSNR is the median (the lower of the middle two for an even count)."""
    ranked = sorted(runs, key=lambda run: -math.inf if run["psnr"] is None else run["psnr"])
    return ranked[(len(ranked) - 1) // 2] if ranked else None


def table_row(out: Path, key: str, parameters: int | None = None, flops: int | None = None) -> dict:
    """One run's line of the table, from its own run directory runs/<key> (``parameters`` and
    ``flops``, when the caller has them, save building the network again)."""
    run = RunDirectory.open(out / "runs" / key)
    recipe = run.recipe()
    metrics = run.metrics()
    psnr = [row["psnr"] for row in metrics]
    cumulative = np.cumsum([row["train_seconds"] for row in metrics]).tolist()
    best = int(np.argmax(psnr)) if metrics else None

    def seconds_to(db: float) -> float | None:
        return next((seconds for seconds, value in zip(cumulative, psnr) if value >= db), None)

    return {
        "label": key,
        "recipe": recipe.to_dict(),
        "describe": recipe.describe(),
        "parameters": recipe.parameter_count() if parameters is None else parameters,
        "flops_per_pixel": flops_per_pixel(recipe) if flops is None else flops,
        "psnr": metrics[-1]["psnr"] if metrics else None,
        "mae": metrics[-1]["mae"] if metrics else None,
        "best_psnr": psnr[best] if metrics else None,
        "best_epoch": metrics[best]["epoch"] if metrics else None,
        "epochs": metrics[-1]["epoch"] if metrics else 0,
        "seconds_per_epoch": statistics.median(row["train_seconds"] for row in metrics) if metrics else None,
        **{f"seconds_to_{db:g}": seconds_to(db) for db in THRESHOLDS},  # seconds_to_20, seconds_to_25
        "status": run.info().get("status"),
        "run_dir": f"runs/{key}",
    }


def conclusion(rows: list[dict]) -> str:
    """One sentence from the table: the best and worst final PSNR, the fastest to 20 and 25 dB.

    One seed an entry: figures are compared as shown (PSNR to 0.1 dB, seconds to 3 figures),
    so runs that print the same are named as tied. Several seeds: entries whose 95% intervals
    overlap are named as level, never one above the other. Only complete entries are ranked
    (every seed complete); diverged ones are named after.
    """
    if not rows:
        return "No runs to compare."
    ranked = [row for row in rows if row["status"] == Status.COMPLETE and row["psnr"] is not None]
    diverged = [row["label"] + (f" ({row['seeds_failed']} of {len(row['seeds'])} seeds)"
                                if len(row.get("seeds") or ()) > 1 else "")
                for row in rows if row["status"] == Status.DIVERGED]
    others = [row["label"] for row in rows if row["status"] not in FINISHED]
    if not ranked:
        if len(diverged) == len(rows):
            what = (f"{diverged[0]} diverged" if len(rows) == 1
                    else f"All {len(rows)} runs diverged ({_names(diverged)})")
            return f"{what}; there is nothing to compare."
        return f"No run finished ({_names([r['label'] for r in rows])}); there is nothing to compare."

    if len(ranked) > 1 and all(row_estimate(row, "psnr").low is not None for row in ranked):
        sentence = _seeded_ranking(ranked)
    else:
        sentence = _ranking(ranked)
    sentence += _speed_clause(ranked) + "."
    if diverged:
        sentence += f" {_names(diverged)} diverged."
    if others:
        sentence += f" {_names(others)} did not finish."
    return sentence


def _ranking(ranked: list[dict]) -> str:
    """The best and worst of single-seed rows, figures compared as shown (to 0.1 dB)."""
    def db(row: dict) -> float:
        return round(row["psnr"], 1)

    top, bottom = max(map(db, ranked)), min(map(db, ranked))
    best = [row["label"] for row in ranked if db(row) == top]
    worst = [row["label"] for row in ranked if db(row) == bottom]
    if len(ranked) == 1:
        row = ranked[0]
        return f"{row['label']} reached {row['psnr']:.1f} dB ({row['parameters']:,} parameters)"
    if top == bottom:
        return f"{_names(best)} {'both' if len(best) == 2 else 'all'} reached the same PSNR, {top:.1f} dB"
    if len(best) == 1:
        params = next(row["parameters"] for row in ranked if row["label"] == best[0])
        sentence = f"{best[0]} reached the highest PSNR ({top:.1f} dB, {params:,} parameters)"
    else:
        sentence = f"{_names(best)} tied for the highest PSNR ({top:.1f} dB)"
    return sentence + f", {top - bottom:.1f} dB above the lowest, {_names(worst)} ({bottom:.1f} dB)"


def _seeded_ranking(ranked: list[dict]) -> str:
    """The best and worst by mean final PSNR; entries whose 95% intervals overlap are level, never ranked."""
    estimates = {row["label"]: row_estimate(row, "psnr") for row in ranked}
    top = max(ranked, key=lambda row: row["psnr"])
    bottom = min(ranked, key=lambda row: row["psnr"])
    best = [row["label"] for row in ranked if overlap(estimates[row["label"]], estimates[top["label"]])]
    worst = [row["label"] for row in ranked if overlap(estimates[row["label"]], estimates[bottom["label"]])]
    seeds = sorted({estimates[label].n for label in estimates})
    over = f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    if len(best) == len(ranked):
        return (f"{_names(best)} are level: their 95% intervals of the final PSNR overlap ({over} each; "
                + ", ".join(f"{label} {estimates[label].shown(1, ' dB')}" for label in best) + ")")
    if len(best) == 1:
        sentence = (f"{top['label']} reached the highest mean PSNR ({estimates[top['label']].shown(1, ' dB')} "
                    f"over {over}, {top['parameters']:,} parameters)")
    else:
        sentence = (f"{_names(best)} are level at the top, their 95% intervals overlapping (means "
                    + ", ".join(f"{estimates[label].mean:.1f}" for label in best) + f" dB over {over})")
    lowest = [label for label in worst if label not in best]
    if lowest:
        sentence += (f", above the lowest, {_names(lowest)} (mean "
                     + ", ".join(f"{estimates[label].mean:.1f}" for label in lowest) + " dB)")
    return sentence


def row_estimate(row: dict, name: str) -> Estimate:
    """A table row's Estimate of one figure (a single-seed row, or one written before seeds: no interval)."""
    data = (row.get("stats") or {}).get(name)
    if not data:
        value = row.get(name)
        values = () if value is None else (float(value),)
        return Estimate(values, value, None, None, None, None)
    return Estimate(tuple(data["values"]), data["mean"], data["std"], data["low"], data["high"], data["method"])


def _speed_clause(ranked: list[dict]) -> str:
    """'; the fastest to 20 dB was A (1.2 s), to 25 dB B (3.4 s)', in the words the case needs.

    With seeds, times are means, and runs whose intervals overlap the fastest's are named with it."""
    fastest = {}  # threshold -> (names, shown time)
    for db in THRESHOLDS[:2]:
        key = f"seconds_to_{db:g}"
        reached = [row for row in ranked if row[key] is not None]
        if reached:
            first = min(reached, key=lambda row: row[key])
            shown = format_seconds(first[key])
            first_estimate = row_estimate(first, key)
            names = [row["label"] for row in reached if format_seconds(row[key]) == shown
                     or (first_estimate.low is not None and overlap(row_estimate(row, key), first_estimate))]
            fastest[db] = (names, shown)
    low, high = THRESHOLDS[:2]
    if low not in fastest:  # reaching the higher threshold passes the lower one first
        return f"; it did not reach {low:g} dB" if len(ranked) == 1 else f"; no run reached {low:g} dB"
    if len(ranked) == 1:
        clause = f", {low:g} dB after {fastest[low][1]}"
        return clause + (f" and {high:g} dB after {fastest[high][1]}" if high in fastest else "")
    names, shown = fastest[low]
    verb = "were" if len(names) > 1 else "was"
    if high in fastest and fastest[high][0] == names:
        return f"; {_names(names)} {verb} the fastest to {low:g} dB ({shown}) and to {high:g} dB ({fastest[high][1]})"
    clause = f"; the fastest to {low:g} dB {verb} {_names(names)} ({shown})"
    if high in fastest:
        clause += f", to {high:g} dB {_names(fastest[high][0])} ({fastest[high][1]})"
    return clause


def _names(labels: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def check_claims(claims: list[dict]) -> list[dict]:
    """The claims callback's answer, checked: a list of {claim: str, supported: bool | None, evidence: str}."""
    if not isinstance(claims, list):
        raise TypeError(f"the claims callback must return a list, got {type(claims).__name__}")
    checked = []
    for item in claims:
        ok = (isinstance(item, dict) and set(item) == {"claim", "supported", "evidence"}
              and isinstance(item["claim"], str) and isinstance(item["evidence"], str)
              and (item["supported"] is None or isinstance(item["supported"], (bool, np.bool_))))
        if not ok:
            raise TypeError("each claim must be {'claim': str, 'supported': True, False or None, 'evidence': str}, "
                            f"got {item!r}")
        supported = None if item["supported"] is None else bool(item["supported"])
        checked.append({"claim": item["claim"], "supported": supported, "evidence": item["evidence"]})
    return checked


