"""monalisa: a lab for deep architectures with one image as its dataset.

A network learns the map from a pixel's (row, col) to its (R, G, B); every
epoch's reconstruction is a frame. The `original` recipe is the 2012
"learning to generate the Mona Lisa, animated" experiment, reproduced exactly.

    from monalisa import load_target, get_preset, fit
    target = load_target("astronaut", scale=0.25)
    result = fit(target, get_preset("original").replace(epochs=5))
    print(result.final["psnr"])

`fit()` prints nothing: pass ``callbacks=[Progress()]`` for the terminal's progress line in a
script, or ``callbacks=[NotebookView()]`` in Jupyter for the frame, the target, the PSNR curve
and a progress bar (``pip install 'monalisa[notebook]'``; `show_runs` puts finished runs side
by side). examples/quickstart.ipynb shows both views.
"""

__version__ = "0.1.0"

from monalisa.data.images import BUILTIN_IMAGES, Target, load_image, load_target
from monalisa.errors import Diverged, UserError
from monalisa.models.network import build_model
from monalisa.recipes.recipe import PRESETS, Recipe, get_preset, load_recipe
from monalisa.runs.directory import RunDirectory
from monalisa.runs.lifecycle import resume_run, train_run
from monalisa.runs.notebook import NotebookView, show_runs
from monalisa.runs.progress import Progress
from monalisa.training.inference import render
from monalisa.training.trainer import Callback, FitResult, Trainer, fit

__all__ = [
    "BUILTIN_IMAGES", "Callback", "Diverged", "FitResult", "NotebookView", "PRESETS", "Progress", "Recipe",
    "RunDirectory", "Target", "Trainer", "UserError", "build_model", "fit", "get_preset", "load_image",
    "load_recipe", "load_target", "render", "resume_run", "show_runs", "train_run",
]
