"""A one-line live progress display on stderr: epoch, PSNR, best MAE, speed, ETA.

On a terminal the line redraws in place, several times an epoch; into a file or
pipe it prints one line per epoch, so logs stay readable. `fit()` alone prints
nothing; pass a Progress to watch it from a script::

    from monalisa import Progress, fit, get_preset, load_target
    result = fit(load_target("mona_lisa"), get_preset("fast").replace(epochs=10), callbacks=[Progress()])

`train_run` and `resume_run` add one of their own unless ``quiet`` or one is among
their callbacks (the notebook view, runs/notebook.py, is one: it draws the same
text into a widget).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from monalisa.training.trainer import Callback, Trainer


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


class Progress(Callback):
    """The training line on ``stream`` (default: sys.stderr): redrawn in place on a terminal, a line an epoch elsewhere.

    The text comes from ``heading``, ``progress_line`` and ``epoch_line``, so another display
    (a subclass that overrides the hooks) shows the same figures and the same ETA.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = sys.stderr if stream is None else stream  # looked up now: redirect_stderr reaches it
        self.live = self.stream.isatty()
        self.epoch_wall: list[float] = []  # wall seconds of this session's epochs, for the ETA
        self.epoch_started = time.perf_counter()
        self.last_draw = 0.0
        self.status = ""

    def heading(self, trainer: Trainer) -> str:
        """What trains on what, where: the first line. Starts the clock of the first epoch."""
        self.epoch_started = time.perf_counter()
        done = f", resuming after epoch {trainer.epoch}" if trainer.epoch else ""
        return (f"training {trainer.recipe.describe()} ({trainer.recipe.parameter_count():,} parameters) on "
                f"{trainer.target.name} {trainer.target.width}x{trainer.target.height}, "
                f"{trainer.engine_name} engine on {trainer.device}{done}")

    def progress_line(self, trainer: Trainer, epoch: int, fraction: float) -> str:
        """The line within an epoch: how far into it, the last epoch's figures, the ETA."""
        return f"epoch {epoch}/{trainer.recipe.epochs} {fraction:4.0%}  {self.status}  {self._eta(trainer, fraction)}"

    def epoch_line(self, trainer: Trainer, row: dict) -> str:
        """The line after an epoch; call it once per epoch, as it times the epochs for the ETA."""
        now = time.perf_counter()
        self.epoch_wall.append(now - self.epoch_started)
        self.epoch_started = now
        best = min(trainer.history, key=lambda r: r["mae"])
        self.status = (f"PSNR {row['psnr']:.2f} dB  MAE {row['mae']:.4f} (best {best['mae']:.4f} @ {best['epoch']})  "
                       f"{row['train_seconds']:.2f} s/epoch")
        return f"epoch {row['epoch']}/{trainer.recipe.epochs}  {self.status}  {self._eta(trainer, 0.0)}"

    def on_start(self, trainer: Trainer) -> None:
        self.stream.write(self.heading(trainer) + "\n")
        self.stream.flush()

    def _eta(self, trainer: Trainer, fraction: float) -> str:
        """Wall time left at the recent pace: to the last epoch, or to the time limit if that comes first.

        time_limit counts training seconds and is checked after each epoch, so the run ends with the
        epoch that crosses it. until_psnr cannot be foreseen: the ETA then says "or sooner".
        """
        remaining = trainer.recipe.epochs - trainer.epoch - fraction
        if self.epoch_wall:
            per_epoch = _median(self.epoch_wall[-5:])
        elif fraction > 0.05:
            per_epoch = (time.perf_counter() - self.epoch_started) / fraction
        else:
            return "ETA --:--"
        limited = False
        if trainer.recipe.time_limit is not None:
            recent = [row["train_seconds"] for row in trainer.history[-5:]]
            per_train = _median(recent) if recent else per_epoch
            left = trainer.recipe.time_limit - trainer.training_seconds()
            by_limit = max(1, math.ceil(left / per_train)) - fraction if per_train > 0 else remaining
            limited = by_limit < remaining
            remaining = min(remaining, by_limit)
        sooner = " or sooner" if trainer.recipe.until_psnr is not None else ""
        return f"ETA {format_duration(max(0.0, remaining * per_epoch))}{' (time limit)' if limited else sooner}"

    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None:
        now = time.perf_counter()
        if not self.live or now - self.last_draw < 0.2:
            return
        self.last_draw = now
        self.stream.write("\r\033[K" + self.progress_line(trainer, epoch, fraction))
        self.stream.flush()

    def on_epoch(self, trainer: Trainer, row: dict, frame) -> None:
        line = self.epoch_line(trainer, row)
        self.stream.write(("\r\033[K" + line) if self.live else line + "\n")
        self.stream.flush()

    def on_end(self, trainer: Trainer, stopped_by: str) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
