"""The encodings study: raw coordinates against positional, Gaussian Fourier and hash-grid encodings at one
parameter budget (Tancik et al. 2020; Mueller et al. 2022).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.experiments import compare  # called as compare.run_comparison, so that a test can replace it
from monalisa.experiments.studies.claims import (
    best_row,
    compare_best,
    db_text,
    describe_best,
    failures_note,
    final_score,
    make_verdict,
    seed_gap,
    versus,
)
from monalisa.experiments.studies.common import (
    check_budget,
    check_margin,
    check_positive_int,
    int_tuple,
    remaining_budget,
    spec_label,
    study_options,
    study_seeds,
    study_target,
)
from monalisa.recipes.encodings import hashgrid_table_size
from monalisa.recipes.recipe import Recipe, get_preset
from monalisa.recipes.registry import ENCODINGS, Spec, format_spec
from monalisa.recipes.sizes import TOLERANCE, encoding_size, parameter_count, width_for_budget

# Full: 125 epochs of batches of 8192 on 300x429, 16 batches an epoch: ~2,000 Adam steps, Tancik
# et al.'s count. The three MLPs cost ~5.5 s an epoch each (train 2.7-3.9 s + render), the hash
# grid 0.5 s: 4 runs on 2 cores, ~10.3 s of wall an epoch, ~21 min.
ENCODINGS_EPOCHS = 125
# Quick (45x64): batches of 512 (8192 would be one full batch an epoch), 6 an epoch, 200 epochs:
# ~1,100 Adam steps. 0.12-0.18 s an epoch per MLP, 0.06 s the hash grid: ~1 min in all; measured
# 2.5 min with a third training job holding one of the two cores.
ENCODINGS_QUICK_EPOCHS = 200
ENCODINGS_QUICK_BATCH = 512


@dataclass(frozen=True)
class EncodingOptions:
    """The encodings study's settings: ``study_encodings(..., encodings=("none", "fourier:sigma=20"))``.

    How the budget is shared. none, positional and fourier have no trainable parameters: each
    gets an MLP of the base's depth whose equal width is solved for the budget given the
    encoding's output width (3x367 for none, 3x357 for positional's 42 features, 3x262 for
    fourier's 512). The hash grid's tables are parameters: it keeps instant-ngp's small MLP
    (``hashgrid_arch``) and its table size per level is solved so tables + MLP meet the budget
    (15,022 rows a level at 272,703). Every entry lands within budget.TOLERANCE (2%).
    """

    budget: int = 272_703  # the original's count; Tancik et al.'s 3x256 Fourier network has 263,683
    encodings: tuple[str, ...] = ("none", "positional", "fourier", "hashgrid")  # Tancik's three + instant-ngp
    hashgrid_arch: tuple[int, ...] = (64, 64)  # instant-ngp's MLP: the tables hold the detail, the MLP decodes
    hashgrid_lr: float = 1e-2  # instant-ngp's Adam rate, for the tables alone (encoding_lr, unless the base sets one)
    margin: float = 0.5  # dB, as the depth study

    def __post_init__(self):
        check_positive_int("budget", self.budget)
        if isinstance(self.encodings, str) or not self.encodings or not all(
                isinstance(spec, str) for spec in self.encodings):
            raise UserError(f"encodings must be a list of encoding specs, got {self.encodings!r}")
        object.__setattr__(self, "encodings", tuple(format_spec(ENCODINGS.parse(s)) for s in self.encodings))
        object.__setattr__(self, "hashgrid_arch", int_tuple("hashgrid_arch", self.hashgrid_arch))
        if type(self.hashgrid_lr) not in (int, float) or not (math.isfinite(self.hashgrid_lr) and self.hashgrid_lr > 0):
            raise UserError(f"hashgrid_lr must be a positive number, got {self.hashgrid_lr!r}")
        check_margin(self.margin)


def encodings_base(quick: bool = False) -> Recipe:
    """The `fourier` preset without its encoding (3x256 ReLU, PyTorch init, Adam 1e-3, batches of 8192)."""
    base = get_preset("fourier").replace(encoding="none", epochs=ENCODINGS_EPOCHS)
    return base.replace(epochs=ENCODINGS_QUICK_EPOCHS, batch_size=ENCODINGS_QUICK_BATCH) if quick else base


def encoding_entries(base: Recipe, opts: EncodingOptions | None = None) -> list[tuple[str, Recipe]]:
    """One entry per encoding, every one within budget.TOLERANCE of ``opts.budget`` parameters in all."""
    opts = EncodingOptions() if opts is None else opts
    names = [ENCODINGS.parse(spec).name for spec in opts.encodings]
    entries = []
    for spec, name in zip(opts.encodings, names):
        label = name if names.count(name) == 1 else spec_label(spec)
        if name == "hashgrid":
            options = ENCODINGS.parse(spec).options
            mlp = parameter_count(opts.hashgrid_arch, options.levels * options.features)
            table_size = hashgrid_table_size(options, remaining_budget(opts.budget, mlp, "the hash grid's MLP"))
            encoding = format_spec(Spec("hashgrid", dataclasses.replace(options, table_size=table_size)))
            # the tables' own rate, unless the base (the user) set one
            recipe = base.replace(encoding=encoding, arch=opts.hashgrid_arch,
                                  encoding_lr=base.encoding_lr or opts.hashgrid_lr)
        else:
            in_features, encoding_parameters = encoding_size(spec)
            depth = len(base.arch)
            width = width_for_budget(depth, remaining_budget(opts.budget, encoding_parameters, spec), in_features)
            recipe = base.replace(encoding=spec, arch=(width,) * depth)
        check_budget(recipe, opts.budget, TOLERANCE, f"encoding {spec}")
        entries.append((label, recipe))
    return entries


def study_encodings(target: Target, out, *, quick: bool = False, base: Recipe | None = None,
                    jobs: int | None = None, resume: bool = False, device: str = "auto", quiet: bool = False,
                    seeds=None, ray: str | None = None, **options) -> dict:
    """Raw coordinates against input encodings, all at one parameter budget, the same Adam and epochs."""
    opts = study_options(EncodingOptions, options, "encodings")
    base = encodings_base(quick) if base is None else base
    entries = encoding_entries(base, opts)
    return compare.run_comparison(study_target(target, quick), entries, out, jobs=jobs, resume=resume, device=device,
                          quiet=quiet, title=f"Input encodings at {opts.budget:,} parameters",
                          claims=functools.partial(encoding_claims, margin=opts.margin),
                          seeds=study_seeds(seeds, resume), ray=ray)


def encoding_claims(rows: list[dict], margin: float = EncodingOptions.margin) -> list[dict]:
    """An encoding against raw coordinates; Fourier against positional (Tancik et al.); the best encoding."""
    def name(row: dict) -> str:
        return row["recipe"]["encoding"].split(":")[0]

    raw = [row for row in rows if name(row) == "none"]
    encoded = [row for row in rows if name(row) != "none"]
    claims = []
    claim = "An input encoding beats raw coordinates at the same parameter count"
    if not raw or not encoded:
        claims.append(make_verdict(claim, None, "needs a run with encoding none and one with an encoding"))
    else:
        best_encoded, best_raw = best_row(encoded), best_row(raw)
        parts = [f"best encoded: {describe_best(best_encoded, encoded)}",
                 f"raw coordinates: {describe_best(best_raw, raw)}"]
        supported = compare_best(best_encoded, best_raw, margin, parts)
        claims.append(make_verdict(claim, supported, "; ".join(parts + failures_note(rows))))

    fourier = next((row for row in rows if name(row) == "fourier"), None)
    positional = next((row for row in rows if name(row) == "positional"), None)
    if fourier and positional:
        claims.append(versus("Gaussian Fourier features beat NeRF's positional encoding (Tancik et al. 2020)",
                              fourier, positional, margin, fourier["label"], positional["label"]))

    scored = sorted((row for row in rows if final_score(row) is not None), key=final_score, reverse=True)
    if len(scored) < 2:
        claims.append(make_verdict("One encoding is the best here", None,
                               "fewer than two runs finished; " + "; ".join(failures_note(rows) or ["no runs"])))
    else:
        first, second = scored[:2]
        leads, text = seed_gap(first, second, margin)
        ranking = ", ".join(f"{row['label']} {db_text(final_score(row))}" for row in scored)
        claims.append(make_verdict(
            f"{first['label']} is the best encoding here", True if leads else None,
            f"ranking (mean final PSNR): {ranking}; {first['label']} against {second['label']}: {text}"
            + "".join("; " + failure for failure in failures_note(rows))))
    return claims
