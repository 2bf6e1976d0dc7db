"""The page's recipe form into a Recipe, with each mistake tied to the field that made it.

The page sends a preset and the recipe as TOML text (the form's fields are a
convenience editor of that text). The preset is the base; the text overrides
any field it names, exactly as flags override a preset on the command line, and
the messages are the CLI's own (recipes.py raises them). The text is parsed as
TOML or JSON data, never evaluated.
"""

from __future__ import annotations

import json
import tomllib

import torch

from ..errors import UserError
from ..recipes import Recipe, get_preset
from ..registry import ENCODINGS
from . import DEFAULT_PRESET
from .store import LabError

# The lab trains in worker processes on the user's machine: refuse networks whose
# weights alone would take gigabytes before a worker tries to allocate them.
MAX_PARAMETERS = 50_000_000
TEXT_FIELD = "recipe_text"


def recipe_data(text: str | None) -> dict:
    """The text's keys and values: TOML (what the page writes) or a JSON object."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        data = json.loads(text) if text.startswith("{") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if text.startswith("{") else "TOML (key = value lines)"
        raise LabError(f"the recipe text is not valid {kind}: {exc}", field=TEXT_FIELD) from None
    if not isinstance(data, dict):
        raise LabError("the recipe text must hold recipe keys and values", field=TEXT_FIELD)
    return data


def build_recipe(preset: str | None, text: str | None = None, fields: dict | None = None) -> Recipe:
    """``preset`` (default: the lab's), then ``fields``, then the text's keys; LabError names the bad field."""
    try:
        base = get_preset(preset or DEFAULT_PRESET)
    except UserError as exc:
        raise LabError(str(exc), field="preset") from None
    data = {**(fields or {}), **recipe_data(text)}
    try:
        recipe = base.replace(**data)
    except UserError as exc:
        raise LabError(str(exc), field=_culprit(base, data)) from None
    check_size(recipe)
    return recipe


def _culprit(base: Recipe, data: dict) -> str:
    """The one key whose value alone is refused; the text field when no single key is to blame."""
    for key, value in data.items():
        try:
            base.replace(**{key: value})
        except UserError:
            return key if key in base.to_dict() else TEXT_FIELD
    return TEXT_FIELD


def check_size(recipe: Recipe) -> None:
    """Refuse a network too large to build here, counting its weights before allocating any."""
    encoding = ENCODINGS.build(recipe.encoding, 2, torch.Generator().manual_seed(0))
    widths = (encoding.out_features, *recipe.arch, 3)
    weights = sum(n_in * n_out + n_out for n_in, n_out in zip(widths[:-1], widths[1:]))
    weights += sum(p.numel() for p in encoding.parameters())
    if weights > MAX_PARAMETERS:
        raise LabError(f"arch {list(recipe.arch)} has {weights:,} parameters; the lab trains at most "
                       f"{MAX_PARAMETERS:,}: use fewer or narrower layers", field="arch")


def describe_recipe(recipe: Recipe) -> dict:
    """What /api/recipes/check returns: the canonical recipe, as data and as the page's text."""
    return {"recipe": recipe.to_dict(), "toml": recipe.to_toml(), "describe": recipe.describe(),
            "parameters": recipe.parameter_count()}
