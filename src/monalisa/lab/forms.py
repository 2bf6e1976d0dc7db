"""The page's recipe form into a Recipe, with each mistake tied to the field that made it; the form's options.

The page sends a preset and the recipe as TOML text (the form's fields are a
convenience editor of that text). The preset is the base; the text overrides
any field it names, exactly as flags override a preset on the command line, and
the messages are the CLI's own (recipes/recipe.py raises them). The text is parsed as
TOML or JSON data, never evaluated.
"""

from __future__ import annotations

import json
import tomllib

from monalisa.data.images import Target
from monalisa.errors import UserError, one_line
from monalisa.files import DuplicateKey, parse_json
from monalisa.lab import DEFAULT_PRESET, DEFAULT_SIZE, SIZES
from monalisa.lab.store import LabError
from monalisa.recipes.limits import MAX_RECIPE_BYTES, LimitError, check_recipe
from monalisa.recipes.recipe import ORDERS, PRESETS, Recipe, get_preset
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from monalisa.runs.status import table as status_table

TEXT_FIELD = "recipe_text"


def recipe_data(text: str | None) -> dict:
    """The text's keys and values: TOML (what the page writes) or a JSON object."""
    text = (text or "").strip()
    if not text:
        return {}
    if len(text) > MAX_RECIPE_BYTES:
        raise LabError(f"the recipe text is over {MAX_RECIPE_BYTES // 2**10:,} KB; a recipe is a few lines",
                       field=TEXT_FIELD)
    kind = "JSON" if text.startswith("{") else "TOML (key = value lines)"
    try:
        data = parse_json(text) if text.startswith("{") else tomllib.loads(text)
    except DuplicateKey as exc:
        raise LabError(f"the recipe text: {exc}", field=TEXT_FIELD) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LabError(f"the recipe text is not valid {kind}: {exc}", field=TEXT_FIELD) from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise LabError("the recipe text is nested too deeply; a recipe is flat keys and values",
                       field=TEXT_FIELD) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise LabError(f"the recipe text is not valid {kind}: {one_line(str(exc), 100)}", field=TEXT_FIELD) from None
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


def check_size(recipe: Recipe, target: Target | None = None) -> None:
    """Refuse a network (and, given the target, a training image) past limits.py's limits, by
    arithmetic: nothing is built. The server's --allow-large lifts them; no request can."""
    try:
        check_recipe(recipe, pixels=None if target is None else target.height * target.width)
    except LimitError as exc:
        raise LabError(str(exc), field=exc.field) from None


def describe_recipe(recipe: Recipe) -> dict:
    """What /api/recipes/check returns: the canonical recipe, as data and as the page's text."""
    return {"recipe": recipe.to_dict(), "toml": recipe.to_toml(), "describe": recipe.describe(),
            "parameters": recipe.parameter_count()}


def options() -> dict:
    """What /api/options returns: the presets, each component's names, the sizes and the run statuses."""
    return {
        "presets": {name: recipe.to_dict() for name, recipe in PRESETS.items()},
        "default_preset": DEFAULT_PRESET,
        "default_size": DEFAULT_SIZE,
        "sizes": list(SIZES),
        "choices": {"activation": list(ACTIVATIONS.names()), "encoding": list(ENCODINGS.names()),
                    "optimizer": list(OPTIMIZERS.names()), "output": list(OUTPUTS.names()),
                    "init": list(INITS.names()), "schedule": list(SCHEDULES.names()), "order": list(ORDERS)},
        "fields": list(Recipe().to_dict()),
        "statuses": status_table(),
    }
