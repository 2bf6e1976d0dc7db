"""The tips study: each of the 2012 author's tips to a reader whose copy failed, against its opposite (docs/original.md)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.experiments import compare  # called as compare.run_comparison, so that a test can replace it
from monalisa.experiments.studies.claims import versus
from monalisa.experiments.studies.common import RUN_FIELDS, check_margin, study_options, study_seeds, study_target, tidy
from monalisa.recipes.recipe import Recipe, get_preset
from monalisa.recipes.registry import INITS, Spec, format_spec
from monalisa.recipes.sizes import format_arch

# Full: 50 epochs. Eight of the nine runs are 4x300 online SGD at ~20 us a pixel (docs/speed.md),
# ~2.6 s an epoch of training on 300x429 plus ~0.2 s of render; the reader's RPROP is one full batch
# an epoch, ~2.5 s. 9 runs x 50 epochs, two at a time on 2 cores: ~10 min a seed, less when a tip's
# opposite diverges early.
TIPS_EPOCHS = 50
# Quick (45x64): 150 epochs, 430k pixel steps a run: a few minutes for nine runs times the default
# three seeds (docs/studies.md has the measured times).
TIPS_QUICK_EPOCHS = 150


@dataclass(frozen=True)
class TipsOptions:
    """The tips study's settings: ``study_tips(..., margin=0.5)``."""

    margin: float = 0.3  # dB, 7% in MSE: one setting changed on one network, so a smaller gap counts

    def __post_init__(self):
        check_margin(self.margin)


def tips_base(quick: bool = False) -> Recipe:
    """The `original` preset for TIPS_(QUICK_)EPOCHS: every tip's own choice, the baseline."""
    return get_preset("original").replace(epochs=TIPS_QUICK_EPOCHS if quick else TIPS_EPOCHS)


def tips_entries(base: Recipe) -> list[tuple[str, Recipe, str | None]]:
    """(label, recipe, claim) for the baseline ('original', no claim) and each tip's opposite.

    Scales multiply the base's own values, so with the `original` base the opposites are
    init original:scale=0.03 and 3.0 and learning rates 1.0 and 0.01 (before the per-layer
    1/sqrt(fan_in + 1) scaling, as the original's 0.1 is). The reader's set-up is the
    `rprop-sigmoid` preset, given the base's RUN_FIELDS (epochs, seed, stopping rules).
    """
    init = INITS.parse(base.init)
    if init.name != "original":
        raise UserError(f"the tips study scales the original initialiser's std 10x up and down; the base's init "
                        f"is {base.init!r}: use --init original or original:scale=S")
    scale, lr = init.options.scale, base.learning_rate

    def init_scaled(factor: float) -> str:
        return format_spec(Spec("original", dataclasses.replace(init.options, scale=tidy(scale * factor))))

    reader = get_preset("rprop-sigmoid").replace(**{name: getattr(base, name) for name in RUN_FIELDS})
    return [
        ("original", base, None),
        ("plain-relu", base.replace(activation="relu"),
         "A slight negative slope on the rectifier (leaky ReLU) beats a plain ReLU"),
        ("init-x0.1", base.replace(init=init_scaled(0.1)),
         f"Initial weights of std {scale:g}/sqrt(fan_in + 1) beat 10x smaller ({tidy(scale * 0.1):g})"),
        ("init-x10", base.replace(init=init_scaled(10)),
         f"Initial weights of std {scale:g}/sqrt(fan_in + 1) beat 10x larger ({tidy(scale * 10):g})"),
        ("scan-order", base.replace(order="scan"),
         "A fresh random pixel order every epoch beats scan order"),
        ("sigmoid-out", base.replace(output="sigmoid"), "Linear output units beat sigmoid ones"),
        ("lr-x10", base.replace(lr=tidy(lr * 10)), f"Learning rate {lr:g} beats 10x larger ({tidy(lr * 10):g})"),
        ("lr-x0.1", base.replace(lr=tidy(lr * 0.1)),
         f"Learning rate {lr:g} beats 10x smaller ({tidy(lr * 0.1):g})"),
        ("rprop-sigmoid", reader,
         f"This recipe beats the reader's failing set-up (full-batch RPROP, {format_arch(reader.arch)} ReLU, "
         f"sigmoid outputs) over the same {base.epochs} epochs"),
    ]


def study_tips(target: Target, out, *, quick: bool = False, base: Recipe | None = None, jobs: int | None = None,
               resume: bool = False, device: str = "auto", quiet: bool = False, seeds=None,
               ray: str | None = None, **options) -> dict:
    """The original recipe against each tip's opposite, one change at a time, and the reader's set-up."""
    opts = study_options(TipsOptions, options, "tips")
    base = tips_base(quick) if base is None else base
    entries = tips_entries(base)
    tips = [(label, claim) for label, _, claim in entries if claim is not None]
    return compare.run_comparison(study_target(target, quick), [(label, recipe) for label, recipe, _ in entries], out,
                          jobs=jobs, resume=resume, device=device, quiet=quiet,
                          title="The author's tips against their opposites",
                          claims=functools.partial(tips_claims, margin=opts.margin, tips=tips),
                          seeds=study_seeds(seeds, resume), ray=ray)


def tips_claims(rows: list[dict], margin: float = TipsOptions.margin,
                tips: list[tuple[str, str]] | None = None) -> list[dict]:
    """One verdict per tip: the baseline ('original') against the tip's opposite, final PSNR.

    ``tips``: (label, claim) pairs; default those of tips_entries(tips_base()).
    """
    if tips is None:
        tips = [(label, claim) for label, _, claim in tips_entries(tips_base()) if claim is not None]
    by_label = {row["label"]: row for row in rows}
    baseline = by_label.get("original")
    return [versus(claim, baseline, by_label.get(label), margin, "original", label) for label, claim in tips]
