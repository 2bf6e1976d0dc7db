"""Train into a run directory, or resume one: the Python API behind `monalisa train`.

    from monalisa import load_target, get_preset, train_run
    result = train_run(load_target("astronaut", scale=0.5), get_preset("quick"), out="runs/astro")
    print(result.final["psnr"])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from monalisa.data.images import DEFAULT_IMAGE, Target, load_target
from monalisa.errors import UserError, unknown_name
from monalisa.models.network import build_model
from monalisa.recipes.recipe import Recipe
from monalisa.runs.directory import FRAME_SCHEDULES, RunDirectory
from monalisa.runs.progress import Progress
from monalisa.runs.recorder import Recorder
from monalisa.runs.status import Status
from monalisa.training.inference import image_metrics, render, to_frame
from monalisa.training.trainer import Callback, FitResult, Trainer, stopping_rule


def default_run_path(image_name: str, label: str, runs: str | Path = "runs") -> Path:
    """runs/<image>-<preset>-<time>, the time to the second so names sort and rarely collide."""
    return Path(runs) / f"{image_name}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"


# The default run (`monalisa train` alone) halves the built-in image: 256x256
# trains in ~2.5 s an epoch with the original network, so a recognisable
# astronaut appears within a minute or two on a laptop.
DEFAULT_IMAGE_SCALE = 0.5


def run_target(image: str | Path | None = None, *, size: tuple[int, int] | None = None,
               scale: float | None = None) -> Target:
    """The image a run trains on: ``image`` resized by ``size`` or ``scale`` if given; with none
    of the three, the built-in DEFAULT_IMAGE at DEFAULT_IMAGE_SCALE (the default run)."""
    if image is None and size is None and scale is None:
        scale = DEFAULT_IMAGE_SCALE
    return load_target(image or DEFAULT_IMAGE, size=size, scale=scale)


def _watchers(callbacks: Sequence[Callback], quiet: bool) -> list[Callback]:
    """The caller's callbacks, and the progress line on stderr unless ``quiet`` or they bring their
    own Progress (the notebook view is one): one run, one progress display."""
    own = any(isinstance(callback, Progress) for callback in callbacks)
    return [*callbacks] + ([] if quiet or own else [Progress()])


def train_run(target: Target, recipe: Recipe, out: str | Path, *, device: str = "auto", engine: str = "auto",
              frames: str = "all", quiet: bool = False, preset: str | None = None,
              callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train from scratch, writing the run directory ``out`` as it goes; ``callbacks`` watch it too
    (a Progress among them, such as a NotebookView, takes the place of the line on stderr)."""
    if frames not in FRAME_SCHEDULES:
        raise unknown_name("--frames", frames, FRAME_SCHEDULES)
    trainer = Trainer(target, recipe, device=device, engine=engine)  # validates before anything is written
    run = RunDirectory.create(out, recipe, target, {"preset": preset, "frames": frames})  # locked for us
    with run.writing():
        return trainer.fit([Recorder(run, frames=frames), *_watchers(callbacks, quiet)])


def resume_run(path: str | Path | RunDirectory, *, epochs: int | None = None, device: str | None = None,
               quiet: bool = False, callbacks: Sequence[Callback] = ()) -> FitResult:
    """Continue a stopped or killed run from its last checkpoint to its epoch count (or ``epochs``).

    A run whose epochs are all done (or whose stopping rule was met) but whose ending is missing
    (killed while it wrote its GIF, MP4 or curves) is finished instead: see finish_run. The run is
    locked for the whole call: a second writer gets RunBusy. ``path`` may be a RunDirectory this
    process already holds.
    """
    run = path if isinstance(path, RunDirectory) else RunDirectory.open(path)
    with run.writing():
        info = run.info()
        recipe = run.recipe()
        checkpoint = run.checkpoint()
        done = checkpoint["epoch"] if checkpoint else 0
        if epochs is not None and epochs < done:
            raise UserError(f"--epochs {epochs} is fewer than the {done} epochs {str(run.path)!r} "
                            "has already trained")
        if info.get("status") == Status.COMPLETE and (epochs is None or epochs <= done):
            raise UserError(
                f"{str(run.path)!r} is complete ({done} epochs, stopped by {info.get('stopped_by', 'epochs')}); "
                f"extend it with --resume {run.path} --epochs N"
            )
        if epochs is not None and epochs != recipe.epochs:
            recipe = recipe.replace(epochs=epochs)
            run.write_recipe(recipe)
        history = checkpoint["history"] if checkpoint else []
        if done >= recipe.epochs or (info.get("status") != Status.COMPLETE and stopping_rule(recipe, history)):
            return finish_run(run)
        # The recorded engine and device, so the resumed run computes what the uninterrupted one would.
        trainer = Trainer(run.target(), recipe, device=device or info.get("device", "auto"),
                          engine=info.get("engine", "auto"))
        if checkpoint:
            try:
                trainer.load_state_dict(checkpoint)
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise run._damaged("checkpoint.pt", f"it does not fit recipe.json: {detail}") from None
        recorder = Recorder(run, frames=info.get("frames", "all"))
        return trainer.fit([recorder, *_watchers(callbacks, quiet)])


def finish_run(path: str | Path | RunDirectory, *, stopped: bool = False) -> FitResult:
    """Write the ending of a run that trains no further, from its checkpoint: metrics.csv, the last
    epoch's frame if it is missing, final.png, learning.gif/mp4, curves.png, and last its status.

    Without ``stopped``: a run whose epochs are done (its recipe's count, or its stopping rule)
    but whose ending was cut short, now 'complete' (resume_run calls this). With ``stopped``: a run
    the user ended early (the lab's stop), now 'stopped'; one stopped before its first epoch gets
    the ending of its untrained network (frame 0, figures of epoch 0, metrics.csv still empty).
    Locked like resume_run.
    """
    run = path if isinstance(path, RunDirectory) else RunDirectory.open(path)
    with run.writing():
        recipe = run.recipe()
        checkpoint = run.checkpoint()
        model = build_model(recipe)
        history = []
        last_frame = None
        if checkpoint:
            run.load_weights(model, checkpoint)
            history = checkpoint["history"]
            if history and not run.frame_path(history[-1]["epoch"]).exists():
                info = run.info()  # on the CPU: a frame, not a figure, so any device will do
                last_frame = to_frame(render(model, run.target().coords, torch.device("cpu")),
                                      info["height"], info["width"])
        run.write_metrics(history)  # it may lag the checkpoint by one epoch
        if stopped and not history:
            # Stopped before its first epoch (a queued seed of a group, a stop while the worker started):
            # its ending shows the network it would have started from, as epoch 0.
            target = run.target()
            output = render(model, target.coords, torch.device("cpu"))
            run.write_frame(0, to_frame(output, target.height, target.width))
            run.write_ending([{"epoch": 0, "train_seconds": 0.0, "seconds": 0.0,
                               **image_metrics(output, target.colours)}])
        if stopped:
            run.write_end(history, "stopped", last_frame, status="stopped")
            stopped_by = "stopped"
        else:
            stopped_by = stopping_rule(recipe, history) if len(history) < recipe.epochs else "epochs"
            run.write_end(history, stopped_by or "epochs", last_frame)
        return FitResult(history=history, stopped_by=stopped_by or "epochs", model=model)
