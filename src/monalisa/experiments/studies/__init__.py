"""Studies: the 2012 experiment's questions, each asked as one comparison that states its verdicts.

    depth      deep against shallow at the original's parameter count: the experiment's thesis
    tips       each of the author's six tips to a reader whose copy failed, against its opposite,
               and the reader's own failing set-up (docs/original.md)
    encodings  raw coordinates against positional, Gaussian Fourier and hash-grid encodings at
               one parameter budget (Tancik et al. 2020, "Fourier Features Let Networks Learn High
               Frequency Functions in Low Dimensional Domains"; Mueller et al. 2022, instant-ngp)

Each study builds (label, recipe) entries from a *base* recipe, whose fields apply to every
entry except those the study varies, and hands them to ``compare.run_comparison`` with a
claims function: rows of the finished table in, verdicts out (``supported`` True, False, or
None for inconclusive). The claims functions are pure, so they can be checked on handmade rows.

    from monalisa.experiments.studies import STUDIES
    from monalisa.experiments.studies.common import study_target
    target = study_target("mona_lisa", quick=True)              # longest side 64 px
    summary = STUDIES["depth"](target, "studies/depth", quick=True)
    for claim in summary["claims"]: print(claim)

Every study takes ``ray`` (run_comparison's: "local", "auto" or a cluster's HOST:PORT) to train on Ray.
A study's ``base`` defaults to ``default_base(name, quick)``; the CLI applies the user's train
flags to that (``default_base("tips").replace(epochs=20)``) and passes the result. Each study's
defaults sit at the top of its section, each with its reason and its cost.

Costs, on this project's 2-core machine with one torch thread a job and two jobs at once
(compare.py's default), per epoch of the Mona Lisa (300x429) at the original's parameter count
(272,703): the compiled online engine ~20 us a pixel for every depth from 1x45450 to 8x196
(docs/speed.md), plus its render (~0.2 s for 4x300); Adam on batches, a ~273k-parameter MLP
~40 us a pixel, the hash grid ~3 us. Several seeds multiply every cost by their count; each
study's module says what its defaults cost.
"""

from __future__ import annotations

import dataclasses

from monalisa.errors import UserError, unknown_name
from monalisa.experiments.studies.common import study_options
from monalisa.experiments.studies.depth import DepthOptions, depth_base, study_depth
from monalisa.experiments.studies.encodings import EncodingOptions, encodings_base, study_encodings
from monalisa.experiments.studies.noise import NoiseOptions, noise_base, study_noise
from monalisa.experiments.studies.tips import TipsOptions, study_tips, tips_base
from monalisa.recipes.recipe import Recipe

STUDIES = {"depth": study_depth, "tips": study_tips, "encodings": study_encodings, "noise": study_noise}
STUDY_OPTIONS = {"depth": DepthOptions, "tips": TipsOptions, "encodings": EncodingOptions, "noise": NoiseOptions}
_BASES = {"depth": depth_base, "tips": tips_base, "encodings": encodings_base, "noise": noise_base}


def default_base(study: str, quick: bool = False) -> Recipe:
    """The recipe a study's entries start from, before the user's flags."""
    if study not in _BASES:
        raise unknown_name("study", study, STUDIES)
    return _BASES[study](quick)


def check_study_options(study: str, options, arch=None) -> None:
    """UserError unless ``study`` takes each of ``options`` (names such as "budget", or a dict of
    them), and, for the depth study, no ``arch`` is asked for: it makes each entry's from the budget.

        check_study_options("tips", {"budget": 50_000})  # UserError: the depth and encodings studies take it
    """
    if study not in STUDY_OPTIONS:
        raise unknown_name("study", study, STUDIES)
    for key in options:
        takers = [name for name, cls in STUDY_OPTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if not takers:
            study_options(STUDY_OPTIONS[study], {key: None}, study)  # raises: unknown option, and the valid ones
        if study not in takers:
            raise UserError(f"--{key} applies to the {' and '.join(takers)} stud{'y' if len(takers) == 1 else 'ies'}, "
                            f"not {study}")
    if study == "depth" and arch is not None:
        raise UserError("the depth study makes each network's architecture from --budget and --depths; drop --arch")
