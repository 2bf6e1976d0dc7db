"""The noise study: how far apart one recipe lands from seed to seed, so that a reader knows what a gap means."""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.experiments import (
    compare,  # called as compare.run_comparison, so that a test can replace it
    stats,
)
from monalisa.experiments.studies.claims import failures_note, make_verdict, seed_finals
from monalisa.experiments.studies.common import check_margin, study_options, study_seeds, study_target
from monalisa.experiments.studies.depth import depth_base
from monalisa.recipes.recipe import Recipe

# The depth study's base and epochs (the original recipe, 30 epochs; quick: 80 on 64 px), 10 seeds:
# ten draws show the spread's size to within about a quarter. Full: 10 runs of ~2.8 s an epoch
# (training and render) on one core each, two at a time: ~7 min; quick: ~1 min.
NOISE_SEEDS = 10


@dataclass(frozen=True)
class NoiseOptions:
    """The noise study's settings: ``study_noise(..., margin=0.5)``."""

    margin: float = 0.5  # dB: the other studies' margin, checked against the spread found here

    def __post_init__(self):
        check_margin(self.margin)


def noise_base(quick: bool = False) -> Recipe:
    """The depth study's base: the original recipe at the depth study's epochs."""
    return depth_base(quick)


def study_noise(target: Target, out, *, quick: bool = False, base: Recipe | None = None, jobs: int | None = None,
                resume: bool = False, device: str = "auto", quiet: bool = False, seeds=None,
                ray: str | None = None, **options) -> dict:
    """One recipe, many seeds: the spread of its final PSNR, the noise floor of every other comparison."""
    opts = study_options(NoiseOptions, options, "noise")
    base = noise_base(quick) if base is None else base
    seeds = study_seeds(seeds, resume, NOISE_SEEDS)
    if type(seeds) is int and seeds < 2 or isinstance(seeds, tuple) and len(seeds) < 2:
        raise UserError("the noise study compares seeds with each other: give --seeds 2 or more")
    return compare.run_comparison(study_target(target, quick), [("noise", base)], out, jobs=jobs, resume=resume,
                          device=device, quiet=quiet, title="Seed to seed: one recipe's noise floor",
                          claims=functools.partial(noise_claims, margin=opts.margin), seeds=seeds, ray=ray)


def noise_claims(rows: list[dict], margin: float = NoiseOptions.margin) -> list[dict]:
    """Whether two seeds of one recipe land within ``margin`` dB of each other, and how far apart they do."""
    claim = f"Two seeds of this recipe land within {margin:g} dB of each other (the studies' margin)"
    finals = sorted(seed_finals(rows[0])) if rows else []
    if len(finals) < 2:
        return [make_verdict(claim, None, "fewer than two seeds finished; " + "; ".join(failures_note(rows) or ["no runs"]))]
    spread = stats.estimate(finals)
    gaps = [abs(a - b) for i, a in enumerate(finals) for b in finals[i + 1:]]
    widest = finals[-1] - finals[0]
    evidence = (f"{len(finals)} seeds, final PSNR {spread.shown(2, ' dB')} (mean ± sd [95% interval]); "
                f"lowest {finals[0]:.2f} dB, highest {finals[-1]:.2f} dB: {widest:.2f} dB apart; the median gap "
                f"between two seeds is {statistics.median(gaps):.2f} dB. One run of each of two recipes that "
                f"differ by less than {widest:.2f} dB on this image may differ by seed alone")
    return [make_verdict(claim, widest <= margin, evidence + "".join("; " + f for f in failures_note(rows)))]
