"""monalisa: a lab for deep architectures with one image as its dataset.

A network learns the map from a pixel's (row, col) to its (R, G, B); every
epoch's reconstruction is a frame. The `original` recipe is the 2012
"learning to generate the Mona Lisa, animated" experiment, reproduced exactly.

    from monalisa import load_target, get_preset, fit
    target = load_target("astronaut", scale=0.25)
    result = fit(target, get_preset("original").replace(epochs=5))
    print(result.final["psnr"])
"""

__version__ = "0.1.0"

from monalisa.data.images import BUILTIN_IMAGES, Target, load_image, load_target
from monalisa.errors import Diverged, UserError
from monalisa.models.network import build_model
from monalisa.recipes.recipe import PRESETS, Recipe, get_preset, load_recipe
from monalisa.runs.directory import RunDirectory
from monalisa.runs.lifecycle import resume_run, train_run
from monalisa.training.inference import render
from monalisa.training.trainer import Callback, FitResult, Trainer, fit

__all__ = [
    "BUILTIN_IMAGES", "Callback", "Diverged", "FitResult", "PRESETS", "Recipe", "RunDirectory", "Target",
    "Trainer", "UserError", "build_model", "fit", "get_preset", "load_image", "load_recipe", "load_target",
    "render", "resume_run", "train_run",
]
