"""The run directory: everything a run leaves on disk, written so a crash leaves it readable.

Layout of ``runs/<name>/``::

    recipe.json     the recipe (Recipe.from_dict reads it back)
    run.json        image, size, engine, device, status and how the run stopped
    target.npy      the training target, float32 (H, W, 3), so a resume needs no source file
    target.png      the same, for looking at
    metrics.csv     epoch, train_seconds, seconds, mae, mse, psnr: one row per epoch
    frames/         epoch-00001.png ... (every epoch, or a log-spaced schedule)
    checkpoint.pt   weights, optimiser and RNG state, history: after every epoch
    final.png       the last frame
    learning.gif    the animation, captioned (subsampled to keep the file small)
    learning.mp4    the animation, every frame
    curves.png      PSNR and MAE against epoch and against training seconds

Every file is written to a temporary name and renamed into place, so a
SIGKILL at any moment leaves either the old file or the new one. The order in
an epoch is frame, checkpoint, metrics; ``metrics.csv`` is always rewritten
from the checkpoint's history, so it can lag the checkpoint but never lead it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import animate
from .errors import UserError
from .images import Target
from .recipes import Recipe
from .train import METRIC_COLUMNS, Callback, Trainer

FRAME_SCHEDULES = ("all", "log")
STATUS_RUNNING = "running"


def frame_wanted(epoch: int, last_epoch: int, schedule: str) -> bool:
    """'log': every epoch up to 10, then ~20 a decade; the last epoch always."""
    if schedule == "all" or epoch <= 10 or epoch == last_epoch:
        return True
    # Keep e if it is the first whole epoch at or past one of the marks 10**(k/20).
    k = math.floor(20 * math.log10(epoch) + 1e-9)
    return epoch == math.ceil(10 ** (k / 20) - 1e-9)


def write_text(path: Path, text: str) -> None:
    with animate.atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def json_safe(value):
    """JSON has no infinity or NaN: a non-finite number (a perfect fit's PSNR) becomes None, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


@dataclass
class RunDirectory:
    path: Path

    # -- creating and opening ------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, recipe: Recipe, target: Target, info: dict) -> RunDirectory:
        """A new run directory; refuses one that already holds files, so nothing is overwritten."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(
                f"{str(path)!r} already exists; continue it with --resume {path} or choose another --out"
            )
        try:
            (path / "frames").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {str(path)!r}: {exc.strerror}") from None
        run = cls(path)
        with animate.atomic_path(path / "target.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, target.pixels)
        animate.save_png((target.pixels * 255).round().astype(np.uint8), path / "target.png")
        write_text(path / "recipe.json", recipe.to_json())
        run.write_info({"image": target.name, "width": target.width, "height": target.height,
                        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "status": STATUS_RUNNING, **info})
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDirectory:
        path = Path(path)
        missing = [name for name in ("run.json", "recipe.json", "target.npy") if not (path / name).is_file()]
        if not path.is_dir() or missing:
            raise UserError(f"{str(path)!r} is not a monalisa run directory (missing {', '.join(missing) or 'it'})")
        # A SIGKILL mid-write leaves a hidden temporary file behind (never a half file under the real name).
        for stale in path.rglob(".*.tmp-*"):
            stale.unlink(missing_ok=True)
        return cls(path)

    # -- reading -------------------------------------------------------------------

    def info(self) -> dict:
        return json.loads((self.path / "run.json").read_text())

    def recipe(self) -> Recipe:
        return Recipe.from_dict(json.loads((self.path / "recipe.json").read_text()))

    def target(self) -> Target:
        return Target(name=self.info()["image"], pixels=np.load(self.path / "target.npy"))

    def checkpoint(self) -> dict | None:
        path = self.path / "checkpoint.pt"
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=False)

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.csv"
        return read_metrics(path) if path.exists() else []

    def frame_path(self, epoch: int) -> Path:
        return self.path / "frames" / f"epoch-{epoch:05d}.png"

    # -- writing -------------------------------------------------------------------

    def write_info(self, data: dict) -> None:
        write_json(self.path / "run.json", data)

    def update_info(self, **changes) -> None:
        self.write_info({**self.info(), **changes})

    def write_recipe(self, recipe: Recipe) -> None:
        write_text(self.path / "recipe.json", recipe.to_json())

    def write_checkpoint(self, state: dict) -> None:
        with animate.atomic_path(self.path / "checkpoint.pt") as tmp:
            torch.save(state, tmp)

    def write_metrics(self, history: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (row[k] if k == "epoch" else f"{row[k]:.6g}") for k in METRIC_COLUMNS})
        write_text(self.path / "metrics.csv", buffer.getvalue())

    def write_animations(self, history: list[dict]) -> None:
        """learning.gif, learning.mp4 and curves.png from the frames and metrics on disk."""
        frames = self.captioned_frames(history)
        if frames:
            animate.write_gif(frames, self.path / "learning.gif")
            animate.write_mp4(frames, self.path / "learning.mp4")
        if history:
            animate.plot_curves(history, self.path / "curves.png", title=self.path.name)

    def write_ending(self, history: list[dict], animations: bool = True) -> None:
        """final.png (the newest frame on disk) and, with ``animations``, the GIF, MP4 and curves."""
        frames = [path for path in (self.frame_path(row["epoch"]) for row in history) if path.exists()]
        if frames:
            with animate.atomic_path(self.path / "final.png") as tmp:
                Path(tmp).write_bytes(frames[-1].read_bytes())
        if animations:
            self.write_animations(history)

    def captioned_frames(self, history: list[dict], width: int | None = None, min_height: int = 256,
                         max_frames: int | None = None, spacing: str = "even") -> list[np.ndarray]:
        """The frames on disk, captioned with epoch and PSNR, optionally resized to ``width`` pixels.

        ``max_frames`` with ``spacing="log"`` keeps more of the early epochs, where most of the
        learning happens; "even" keeps the animation's clock linear in epochs.
        """
        rows = [row for row in history if self.frame_path(row["epoch"]).exists()]
        if max_frames is not None and len(rows) > max_frames:
            if spacing == "log":
                picks = np.unique(np.geomspace(1, len(rows), max_frames).round().astype(int) - 1)
            else:
                picks = animate.subsample_indices(len(rows), max_frames)
            rows = [rows[i] for i in picks]
        captioned = []
        for row in rows:
            image = Image.open(self.frame_path(row["epoch"])).convert("RGB")
            if width is not None and width != image.width:
                height = max(1, round(image.height * width / image.width))
                image = image.resize((width, height), Image.Resampling.LANCZOS)
            captioned.append(animate.caption_frame(np.asarray(image), f"epoch {row['epoch']}   PSNR {row['psnr']:.2f} dB",
                                                   min_height=min_height))
        return captioned

    def export_animation(self, out: str | Path, width: int | None = None, max_frames: int = 120,
                         spacing: str = "even", fps: float = 12) -> Path:
        """A GIF or MP4 (by ``out``'s suffix) of this run's frames: for sharing, or after an interrupted run."""
        out = Path(out)
        if out.suffix.lower() not in (".gif", ".mp4"):
            raise UserError(f"--out {str(out)!r} must end in .gif or .mp4")
        frames = self.captioned_frames(self.metrics(), width=width, min_height=0, max_frames=max_frames,
                                       spacing=spacing)
        if not frames:
            raise UserError(f"{str(self.path)!r} has no frames yet")
        writer = animate.write_gif if out.suffix.lower() == ".gif" else animate.write_mp4
        writer(frames, out, fps=fps)
        return out


class Recorder(Callback):
    """Writes a frame, the checkpoint and the metrics after every epoch; the animations at the end."""

    def __init__(self, run: RunDirectory, frames: str = "all", animate_at_end: bool = True):
        self.run = run
        self.frames = frames
        self.animate_at_end = animate_at_end
        self.last_frame: np.ndarray | None = None

    def on_start(self, trainer: Trainer) -> None:
        # A resumed run's metrics may lag its checkpoint by one epoch (killed in between).
        self.run.write_metrics(trainer.history)
        self.run.update_info(status=STATUS_RUNNING, engine=trainer.engine_name, device=str(trainer.device))

    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None:
        self.last_frame = frame
        if frame_wanted(row["epoch"], trainer.recipe.epochs, self.frames):
            animate.save_png(frame, self.run.frame_path(row["epoch"]))
        self.run.write_checkpoint(trainer.state_dict())
        self.run.write_metrics(trainer.history)

    def on_end(self, trainer: Trainer, stopped_by: str) -> None:
        finished = stopped_by in ("epochs", "until_psnr", "time_limit", "diverged")
        if finished and trainer.history:
            last = trainer.history[-1]["epoch"]
            if not self.run.frame_path(last).exists() and self.last_frame is not None:
                animate.save_png(self.last_frame, self.run.frame_path(last))
            self.run.write_ending(trainer.history, animations=self.animate_at_end)
        status = "complete" if stopped_by in ("epochs", "until_psnr", "time_limit") else stopped_by
        self.run.update_info(status=status, stopped_by=stopped_by, epochs_done=trainer.epoch)
