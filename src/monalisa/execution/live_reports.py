"""Live reports of a training run, for a watcher in another process (the lab's page).

``LiveReporter`` is a Callback the runner attaches when a RunSpec asks for live
reports. It puts plain dicts on a queue, each with ``type`` and ``id`` (the
spec's key): ``started``, ``progress`` (a few a second), ``frame`` (a PNG: every
epoch, and a preview within long epochs), ``epoch`` (the metrics row). The
runner adds the last one, ``end``, whatever the run's fate.
"""

from __future__ import annotations

import time

import numpy as np

from monalisa.data.images import coordinate_grid
from monalisa.files import png_bytes
from monalisa.training.inference import render, to_frame
from monalisa.training.trainer import Callback, Trainer

PROGRESS_SECONDS = 0.25  # at most this often a progress report: a smooth bar, little traffic
FRAME_SECONDS = 0.1  # end-of-epoch frames at most this often (tiny images train hundreds of epochs a second)
# A preview within an epoch once the epoch has run this long without one; never more than
# PREVIEW_SHARE of the time on previews (a preview is a forward pass over many pixels).
PREVIEW_SECONDS = 1.5
PREVIEW_SHARE = 0.1
PREVIEW_PIXELS = 40_000  # previews render every s-th row and column down to about this many pixels


class LiveReporter(Callback):
    """Sends progress, frames and metrics to a watcher as they happen."""

    def __init__(self, run_id: str, events):
        self.run_id = run_id
        self.events = events
        self.last_progress = 0.0
        self.last_frame = 0.0
        self.preview_cost = 0.0
        self.preview_coords: np.ndarray | None = None
        self.preview_shape = (0, 0)

    def send(self, kind: str, **fields) -> None:
        self.events.put({"type": kind, "id": self.run_id, **fields})

    def on_start(self, trainer: Trainer) -> None:
        height, width = trainer.target.height, trainer.target.width
        step = max(1, int(np.ceil(np.sqrt(height * width / PREVIEW_PIXELS))))
        grid = coordinate_grid(height, width).reshape(height, width, 2)[::step, ::step]  # (h, w, 2)
        self.preview_shape = grid.shape[:2]
        self.preview_coords = np.ascontiguousarray(grid.reshape(-1, 2))
        self.last_frame = time.perf_counter()
        self.send("started", epoch=trainer.epoch, engine=trainer.engine_name, device=str(trainer.device))

    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None:
        now = time.perf_counter()
        if now - self.last_progress >= PROGRESS_SECONDS:
            self.last_progress = now
            self.send("progress", epoch=epoch, fraction=fraction)
        waited = now - self.last_frame
        if fraction < 0.95 and waited >= max(PREVIEW_SECONDS, self.preview_cost / PREVIEW_SHARE):
            with trainer.untimed():  # a preview is not training: kept out of train_seconds
                started = time.perf_counter()
                trainer.engine.sync()
                output = render(trainer.model, self.preview_coords, trainer.device)
                frame = to_frame(output, *self.preview_shape)
                self.send("frame", epoch=epoch, fraction=fraction, png=png_bytes(frame))
                self.preview_cost = time.perf_counter() - started
                self.last_frame = time.perf_counter()

    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None:
        self.send("epoch", row=dict(row))
        now = time.perf_counter()
        if now - self.last_frame >= FRAME_SECONDS or trainer.epoch >= trainer.recipe.epochs:
            self.last_frame = now
            self.send("frame", epoch=row["epoch"], fraction=1.0, png=png_bytes(frame))
