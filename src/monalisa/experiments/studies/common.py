"""What every study shares: its image, its seeds, and the checks on its options."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from monalisa.data.images import Target, load_target, resize
from monalisa.errors import UserError
from monalisa.recipes.recipe import Recipe

# Quick mode's image: the longest side 64 px (the Mona Lisa becomes 45x64, 2,880 pixels, 45x
# fewer than 300x429): the author's "experiment on smaller images first".
QUICK_SIDE = 64
# Seeds per entry unless --seeds says otherwise (quick mode too): three is the fewest from which the
# BCa bootstrap gives an interval (stats.py); a verdict needs intervals, and one seed gives none.
STUDY_SEEDS = 3

# Fields of the base that every entry keeps, even one whose recipe is otherwise fixed (the reader's).
RUN_FIELDS = ("epochs", "until_psnr", "time_limit", "seed")


def study_target(image: Target | str | Path, quick: bool = False) -> Target:
    """The image a study trains on: as given, or in quick mode shrunk to QUICK_SIDE px (never enlarged)."""
    target = image if isinstance(image, Target) else load_target(image)
    longest = max(target.height, target.width)
    if not quick or longest <= QUICK_SIDE:
        return target
    scale = QUICK_SIDE / longest
    size = (max(1, round(target.width * scale)), max(1, round(target.height * scale)))  # (W, H)
    return Target(name=target.name, pixels=resize(target.pixels, size=size))


def study_seeds(seeds, resume: bool, default: int = STUDY_SEEDS):
    """What a study passes to run_comparison: the seeds asked for; else on resume the study's own
    (None: read from its directory), and ``default`` for a new study."""
    if seeds is not None:
        return seeds
    return None if resume else default


def study_options(cls: type, options: dict, study: str):
    """The study's options dataclass from keyword arguments; a misspelt one is an error."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r} for the {study} study; valid options: {', '.join(fields)}")
    return cls(**options)


def remaining_budget(budget: int, used: int, what: str) -> int:
    if used >= budget:
        raise UserError(f"{what} alone has {used:,} parameters, the whole budget of {budget:,}; raise the budget")
    return budget - used


def check_budget(recipe: Recipe, budget: int, tolerance: float, what: str) -> None:
    """The recipe's parameter count (Recipe.parameter_count, which counts without building) must be within ``tolerance`` of ``budget``."""
    count = recipe.parameter_count()
    if abs(count - budget) > tolerance * budget:
        raise UserError(f"{what}: the nearest network has {count:,} parameters, more than {tolerance:.0%} "
                        f"from the budget of {budget:,}; change the budget")


def check_positive_int(name: str, value) -> None:
    if type(value) is not int or value < 1:
        raise UserError(f"{name} must be a positive whole number, got {value!r}")


def check_margin(margin) -> None:
    if type(margin) not in (int, float) or not (math.isfinite(margin) and margin >= 0):
        raise UserError(f"margin must be a number of dB >= 0, got {margin!r}")


def int_tuple(name: str, values, distinct: bool = False, largest: int | None = None) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise UserError(f"{name} must be a list of positive whole numbers, got {shown_list(values)}")
    values = tuple(values)
    if not values or any(type(v) is not int or v < 1 for v in values):
        raise UserError(f"{name} must be a list of positive whole numbers, got {shown_list(values)}")
    if largest is not None and max(values) > largest:
        raise UserError(f"{name} may be at most {largest:,}, got {max(values):,}")
    if distinct and len(set(values)) != len(values):
        raise UserError(f"{name} lists a value twice: {shown_list(values)}")
    return values


def shown_list(values, most: int = 12) -> str:
    """A list in an error message, cut after ``most`` items: a pasted 100,000-item list is not echoed."""
    if not isinstance(values, tuple):
        return repr(values)[:200]
    items = [repr(v)[:40] for v in values[:most]]
    more = f", ... ({len(values) - most:,} more)" if len(values) > most else ""
    return "[" + ", ".join(items) + more + "]"


def tidy(value: float) -> float:
    """0.1 * 0.1 -> 0.01, not 0.010000000000000002: a rate or scale as a person would write it."""
    return float(f"{value:.12g}")


def spec_label(spec: str) -> str:
    """'fourier:sigma=20' -> 'fourier-sigma20', a file-name-safe label (compare.LABEL_PATTERN)."""
    return spec.replace(":", "-").replace("=", "").replace(",", "-")[:64]
