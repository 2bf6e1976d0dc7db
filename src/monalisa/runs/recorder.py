"""The Recorder: the training callback that writes a run directory as it trains (frames, metrics, layers,
checkpoints, snapshots, TensorBoard events) and its ending when it stops.
"""

from __future__ import annotations

import math

import numpy as np

from monalisa.errors import UserError
from monalisa.runs.directory import TENSORBOARD_FILES, RunDirectory
from monalisa.runs.status import COMPLETE_REASONS, Status
from monalisa.runs.tensorboard import TensorBoardLog
from monalisa.training.dynamics import LayerDynamics, layers_csv
from monalisa.training.trainer import Callback, Trainer


def frame_wanted(epoch: int, last_epoch: int, schedule: str) -> bool:
    """'log': every epoch up to 10, then ~20 a decade; the last epoch always."""
    if schedule == "all" or epoch <= 10 or epoch == last_epoch:
        return True
    # Keep e if it is the first whole epoch at or past one of the marks 10**(k/20).
    k = math.floor(20 * math.log10(epoch) + 1e-9)
    return epoch == math.ceil(10 ** (k / 20) - 1e-9)


def snapshot_wanted(epoch: int) -> bool:
    """Epochs 0 (the initial weights), 1, 2, 3, 5, 8, 13, 21, ...: the Fibonacci numbers, spaced about
    x1.6 apart, so 500 epochs keep 14 snapshots (plus the last epoch's) and the early epochs,
    where the units change most, are dense."""
    a, b = 1, 2
    while a < epoch:
        a, b = b, a + b
    return epoch in (0, a)


def _epoch_end_tail(rows: list[dict], epoch: int) -> list[dict]:
    """The rows ``epoch``'s end just recorded: the last ones, so a long run's epoch reads a few rows,
    not its whole history."""
    ends = []
    for row in reversed(rows):
        if row["epoch"] != epoch or row["fraction"] < 1.0:
            break
        ends.append(row)
    return ends[::-1]


class Recorder(Callback):
    """Writes a frame, the layers' dynamics, the checkpoint and the metrics after every epoch, weight
    snapshots at snapshot_wanted's epochs, TensorBoard's events; the animations at the end.

    ``dynamics``: record layers.csv (a LayerDynamics is made and driven from here, so its rows are
    on disk before the checkpoint: see the module's docstring). ``tensorboard``: write event files
    when the package is installed.
    """

    def __init__(self, run: RunDirectory, frames: str = "all", animate_at_end: bool = True,
                 dynamics: bool = True, tensorboard: bool = True):
        self.run = run
        self.frames = frames
        self.animate_at_end = animate_at_end
        self.last_frame: np.ndarray | None = None
        self.dynamics = LayerDynamics() if dynamics else None
        self.tensorboard = tensorboard
        self.board: TensorBoardLog | None = None
        self._layers_text: list[str] = []  # layers.csv's rows so far as text: each row is formatted once
        self._layers_rows = 0  # how many rows _layers_text holds
        # Epochs whose checkpoint and metrics are both on disk: all run.json may count. The trainer's
        # history is one longer while an epoch's files are written, and stays so if a write fails.
        self._recorded = 0

    def on_start(self, trainer: Trainer) -> None:
        self.run.lock()  # the caller normally holds it already (train_run, resume_run): then this does nothing
        # A resumed run's metrics may lag its checkpoint by one epoch (killed in between).
        self.run.write_metrics(trainer.history)
        self._recorded = len(trainer.history)  # a resumed run's come from its checkpoint
        self.run.update_info(status=Status.RUNNING, engine=trainer.engine_name, device=str(trainer.device))
        if self.dynamics is not None:
            # A resumed run's layers.csv may lead its checkpoint by an epoch: on_start keeps the rows up to it.
            self.dynamics.on_start(trainer, self.run.layers())
            self._layers_text, self._layers_rows = [], 0
            self._write_layers()
        if trainer.epoch == 0:
            self.run.write_snapshot(0, trainer.model)
        if self.tensorboard:
            with self.run._writing(TENSORBOARD_FILES):
                self.board = TensorBoardLog.open(self.run.path, first_epoch=trainer.epoch + 1)

    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None:
        if self.dynamics is not None:
            self.dynamics.on_progress(trainer, epoch, fraction)

    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None:
        self.last_frame = frame
        epoch = row["epoch"]
        if frame_wanted(epoch, trainer.recipe.epochs, self.frames):
            self.run.write_frame(epoch, frame)
        if self.dynamics is not None:
            self.dynamics.on_epoch(trainer, row, frame)
            self._write_layers()
        if snapshot_wanted(epoch):
            self.run.write_snapshot(epoch, trainer.model)  # fit() synced the engine's weights into it
        self.run.write_checkpoint(trainer.state_dict())
        self.run.write_metrics(trainer.history)
        self._recorded = len(trainer.history)
        if self.board is not None:
            ends = _epoch_end_tail(self.dynamics.rows, epoch) if self.dynamics is not None else []
            activations = self.dynamics.last_activations if self.dynamics is not None else {}
            shown = frame if frame_wanted(epoch, trainer.recipe.epochs, "log") else None
            with self.run._writing(TENSORBOARD_FILES):
                self.board.epoch(row, ends, trainer.model, activations, shown)

    def _write_layers(self) -> None:
        """layers.csv from the dynamics' rows; only rows new since the last write are formatted, so
        a long run's write stays a file copy (~2 ms for 3 MB) rather than a growing CSV job."""
        rows = self.dynamics.rows
        if self._layers_rows < len(rows):
            self._layers_text.append(layers_csv(rows[self._layers_rows:], header=False))
            self._layers_rows = len(rows)
        self.run.write_layers(layers_csv([], header=True) + "".join(self._layers_text))

    def on_end(self, trainer: Trainer, stopped_by: str) -> None:
        try:
            if stopped_by in COMPLETE_REASONS and trainer.history and not \
                    self.run.snapshot_path(trainer.epoch).exists():
                self.run.write_snapshot(trainer.epoch, trainer.model)  # the last epoch's weights, synced
            # Only the recorded epochs: after a failed write (a full disk) run.json, metrics.csv and the
            # checkpoint all end at the last epoch whose files are whole.
            recorded = trainer.history[:self._recorded]
            self.run.write_end(recorded, stopped_by, self.last_frame if recorded == trainer.history else None,
                               animations=self.animate_at_end)
        except UserError:
            if stopped_by != "error":
                raise
            # Already failing (a full disk, most likely, and this write hit it too): let the first error
            # through. Every file keeps its last whole version, so the run resumes from its checkpoint.
        finally:
            if self.board is not None:
                self.board.close()
                self.board = None
