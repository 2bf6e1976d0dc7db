"""Train into a run directory, or resume one: the Python API behind `monalisa train`.

    from monalisa import load_target, get_preset, train_run
    result = train_run(load_target("astronaut", scale=0.5), get_preset("quick"), out="runs/astro")
    print(result.final["psnr"])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError
from .images import Target
from .progress import Progress
from .recipes import Recipe
from .record import FRAME_SCHEDULES, Recorder, RunDirectory
from .train import Callback, FitResult, Trainer


def default_run_path(image_name: str, label: str, runs: str | Path = "runs") -> Path:
    """runs/<image>-<preset>-<time>, the time to the second so names sort and rarely collide."""
    return Path(runs) / f"{image_name}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_run(target: Target, recipe: Recipe, out: str | Path, *, device: str = "auto", engine: str = "auto",
              frames: str = "all", quiet: bool = False, preset: str | None = None,
              callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train from scratch, writing the run directory ``out`` as it goes; ``callbacks`` watch it too."""
    if frames not in FRAME_SCHEDULES:
        raise UserError(f"unknown --frames {frames!r}; choose one of: {', '.join(FRAME_SCHEDULES)}")
    trainer = Trainer(target, recipe, device=device, engine=engine)  # validates before anything is written
    run = RunDirectory.create(out, recipe, target, {"preset": preset, "frames": frames})
    return trainer.fit([Recorder(run, frames=frames), *callbacks] + ([] if quiet else [Progress()]))


def resume_run(path: str | Path, *, epochs: int | None = None, device: str | None = None,
               quiet: bool = False, callbacks: Sequence[Callback] = ()) -> FitResult:
    """Continue a stopped or killed run from its last checkpoint to its epoch count (or ``epochs``)."""
    run = RunDirectory.open(path)
    info = run.info()
    recipe = run.recipe()
    checkpoint = run.checkpoint()
    done = checkpoint["epoch"] if checkpoint else 0
    if epochs is not None:
        if epochs < done:
            raise UserError(f"--epochs {epochs} is fewer than the {done} epochs {str(path)!r} has already trained")
        if epochs != recipe.epochs:
            recipe = recipe.replace(epochs=epochs)
            run.write_recipe(recipe)
    if done >= recipe.epochs or (info.get("status") == "complete" and epochs is None):
        raise UserError(
            f"{str(path)!r} is complete ({done} epochs, stopped by {info.get('stopped_by', 'epochs')}); "
            f"extend it with --resume {path} --epochs N"
        )
    # The recorded engine and device, so the resumed run computes what the uninterrupted one would.
    trainer = Trainer(run.target(), recipe, device=device or info.get("device", "auto"),
                      engine=info.get("engine", "auto"))
    if checkpoint:
        trainer.load_state_dict(checkpoint)
    recorder = Recorder(run, frames=info.get("frames", "all"))
    return trainer.fit([recorder, *callbacks] + ([] if quiet else [Progress()]))
