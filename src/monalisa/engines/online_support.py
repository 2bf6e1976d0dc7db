"""What the online kernel can run, answered without importing numba.

``choose_engine`` asks on every run, so this module imports nothing heavier than
the recipe; engines/online.py (which loads numba) maps the names below to the
kernel's activation codes.
"""

from __future__ import annotations

from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import ACTIVATIONS, OPTIMIZERS

# The activations online_kernel.py implements: each one's derivative follows from its output.
HIDDEN_ACTIVATIONS = ("leaky_relu", "relu", "tanh", "sigmoid")
OUTPUTS = ("linear", "sigmoid")


def supports(recipe: Recipe) -> str | None:
    """None if the online engine can run the recipe exactly, else the reason it cannot.

    That is the original's family: one pixel at a time, plain SGD at a constant
    rate, raw coordinates, no skips, one hidden activation of the kernel's, a
    linear or sigmoid output.
    """
    if recipe.batch_size != 1:
        return "the online engine trains one pixel at a time (batch_size 1)"
    activations = {ACTIVATIONS.parse(a) for a in recipe.layer_activations()}
    if OPTIMIZERS.parse(recipe.optimizer).name != "sgd" or recipe.schedule != "constant":
        return "it implements plain SGD at a constant rate only"
    if recipe.encoding != "none" or recipe.residual:
        return "it implements the original's plain network only (no encoding, no skips)"
    if len(activations) != 1 or next(iter(activations)).name not in HIDDEN_ACTIVATIONS:
        return f"it implements one hidden activation of {', '.join(HIDDEN_ACTIVATIONS)}"
    if recipe.output not in OUTPUTS:
        return f"it implements the outputs {', '.join(OUTPUTS)}"
    return None
