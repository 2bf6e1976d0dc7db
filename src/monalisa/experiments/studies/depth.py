"""The depth study: deep against shallow at the original's parameter count, the 2012 experiment's thesis."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from monalisa.data.images import Target
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
)
from monalisa.experiments.studies.common import (
    check_budget,
    check_margin,
    check_positive_int,
    int_tuple,
    remaining_budget,
    study_options,
    study_seeds,
    study_target,
)
from monalisa.recipes.limits import MAX_LAYERS
from monalisa.recipes.recipe import Recipe, get_preset
from monalisa.recipes.sizes import TOLERANCE, encoding_size, width_for_budget

# Full: 30 epochs, the `quick` preset's, where the 4x300 network already draws a recognisable
# Mona Lisa. Every shape costs about the same (~20 us a pixel of training on one core): one seed
# of the six depths took 419 s of wall time (docs/studies.md), so the default three seeds are
# ~21 min. Each 10 epochs more: +1/3.
DEPTH_EPOCHS = 30
# Quick (45x64): 80 epochs. An epoch there is 45x cheaper, so quick mode runs more of them but
# far fewer pixel steps (230k against 3.9M), enough to separate the depths' first rises. Four
# depths times the default three seeds: ~2.3 min of wall time (docs/studies.md).
DEPTH_QUICK_EPOCHS = 80
DEPTHS = (1, 2, 3, 4, 6, 8)  # shallow (1, 2) against deep, up to the published code's 6 and past it
QUICK_DEPTHS = (1, 2, 4, 8)  # one per doubling: the same question in 4 runs


@dataclass(frozen=True)
class DepthOptions:
    """The depth study's settings: ``study_depth(..., budget=100_000, depths=(1, 4))``."""

    budget: int = 272_703  # the original 4x300's parameter count (docs/original.md): the thesis at its own size
    depths: tuple[int, ...] | None = None  # None: DEPTHS, or QUICK_DEPTHS in quick mode
    margin: float = 0.5  # dB, 12% in MSE: a gap that shows in the frames (not calibrated against seeds)

    def __post_init__(self):
        check_positive_int("budget", self.budget)
        if self.depths is not None:
            object.__setattr__(self, "depths", int_tuple("depths", self.depths, distinct=True, largest=MAX_LAYERS))
        check_margin(self.margin)


def depth_base(quick: bool = False) -> Recipe:
    """The `original` preset (online SGD, leaky ReLU, 4x300) for DEPTH_(QUICK_)EPOCHS."""
    return get_preset("original").replace(epochs=DEPTH_QUICK_EPOCHS if quick else DEPTH_EPOCHS)


def depth_entries(base: Recipe, budget: int, depths) -> list[tuple[str, Recipe]]:
    """One equal-width network per depth, each within budget.TOLERANCE of ``budget`` parameters in all.

    The base's encoding counts: its trainable parameters come off the budget and its output
    width is the first layer's input. Labels: 'd4-w300'.
    """
    in_features, encoding_parameters = encoding_size(base.encoding)
    entries = []
    for depth in depths:
        width = width_for_budget(depth, remaining_budget(budget, encoding_parameters, base.encoding), in_features)
        recipe = base.replace(arch=(width,) * depth)
        check_budget(recipe, budget, TOLERANCE, f"depth {depth}")
        entries.append((f"d{depth}-w{width}", recipe))
    return entries


def study_depth(target: Target, out, *, quick: bool = False, base: Recipe | None = None, jobs: int | None = None,
                resume: bool = False, device: str = "auto", quiet: bool = False, seeds=None,
                ray: str | None = None, **options) -> dict:
    """Equal-parameter networks of several depths (default: the original, 272,703 parameters)."""
    opts = study_options(DepthOptions, options, "depth")
    base = depth_base(quick) if base is None else base
    depths = opts.depths or (QUICK_DEPTHS if quick else DEPTHS)
    entries = depth_entries(base, opts.budget, depths)
    return compare.run_comparison(study_target(target, quick), entries, out, jobs=jobs, resume=resume, device=device,
                          quiet=quiet, title=f"Depth at {opts.budget:,} parameters",
                          claims=functools.partial(depth_claims, margin=opts.margin),
                          seeds=study_seeds(seeds, resume), ray=ray)


def depth_claims(rows: list[dict], margin: float = DepthOptions.margin) -> list[dict]:
    """Deep (>= 3 hidden layers) against shallow (<= 2), and how far up PSNR rises with depth."""
    return [_deep_beats_shallow(rows, margin), _rises_with_depth(rows, margin)]


def _deep_beats_shallow(rows: list[dict], margin: float) -> dict:
    claim = "Deeper networks (3 or more hidden layers) beat shallower ones (1 or 2) at the same parameter count"
    deep = [row for row in rows if _depth(row) >= 3]
    shallow = [row for row in rows if _depth(row) <= 2]
    if not deep or not shallow:
        return make_verdict(claim, None, "needs runs of depth <= 2 and of depth >= 3; this study has depths "
                        + ", ".join(str(_depth(row)) for row in rows))
    best_deep, best_shallow = best_row(deep), best_row(shallow)
    parts = [f"best of depth >= 3: {describe_best(best_deep, deep)}",
             f"best of depth <= 2: {describe_best(best_shallow, shallow)}"]
    supported = compare_best(best_deep, best_shallow, margin, parts)
    return make_verdict(claim, supported, "; ".join(parts + failures_note(rows)))


def _rises_with_depth(rows: list[dict], margin: float) -> dict:
    scored = sorted((row for row in rows if final_score(row) is not None), key=_depth)
    if len(scored) < 2:
        claim = "PSNR rises with depth up to a best depth"
        return make_verdict(claim, None, "fewer than two runs finished; " + "; ".join(failures_note(rows) or ["no runs"]))
    best = max(scored, key=final_score)
    shallowest = scored[0]
    if best is shallowest:
        claim = f"PSNR rises with depth beyond {_layers(_depth(best))}, the shallowest here"
    else:
        claim = f"PSNR rises with depth up to {_layers(_depth(best))}, the best depth here"
    by_depth = ", ".join(f"depth {_depth(row)} {db_text(final_score(row))}" for row in scored)
    evidence = [f"by depth: {by_depth}; best depth {_depth(best)} ({best['label']}, {db_text(final_score(best))})"]
    before = [row for row in scored if _depth(row) <= _depth(best)]
    if best is shallowest:
        runner_up = max(scored[1:], key=final_score)
        beaten, text = seed_gap(best, runner_up, margin)
        supported = False if beaten else None
        evidence.append(f"the shallowest finished run, depth {_depth(best)}, is the best; against depth "
                        f"{_depth(runner_up)}: {text}")
        return make_verdict(claim, supported, "; ".join(evidence + failures_note(rows)))
    rose, text = seed_gap(best, shallowest, margin)
    # A drop on the way up: a shallower network that beats the next deeper one by the margin.
    drops = [(a, b) for a, b in zip(before, before[1:]) if seed_gap(a, b, margin)[0]]
    if not rose:
        supported = None
        evidence.append(f"depth {_depth(best)} against depth {_depth(shallowest)}: {text}")
    elif drops:
        supported = None
        a, b = drops[0]
        evidence.append(f"not a steady rise: depth {_depth(a)} beats depth {_depth(b)}: {seed_gap(a, b, margin)[1]}")
    else:
        supported = True
        evidence.append(f"depth {_depth(best)} against depth {_depth(shallowest)}: {text}")
    return make_verdict(claim, supported, "; ".join(evidence + failures_note(rows)))


def _depth(row: dict) -> int:
    return len(row["recipe"]["arch"])


def _layers(depth: int) -> str:
    return f"{depth} hidden layer{'s' * (depth != 1)}"
