"""TensorBoard event files in a run directory, when the ``tensorboard`` package is installed.

``tensorboard --logdir runs`` then shows every run (a comparison's entries included, as the
folders below it), each under its directory's name. Per epoch (the step is the epoch):

    image/psnr, image/mae                 the epoch's figures, as metrics.csv has them
    <statistic>/layer<K>                  layers.csv's statistics at the epoch's end, one chart a layer
    weights/layer<K>, activations/layer<K>  histograms: the weights, and the outputs on the probe pixels
    frame                                 the epoch's frame (TensorBoard's image slider), at the frames
                                          of record.frame_wanted's "log" schedule: ~20 a decade, so a
                                          500-epoch run adds ~70 frames, not 500 copies of frames/

The summaries are made by PyTorch's builders (torch.utils.tensorboard.summary, as SummaryWriter
makes them), which need the ``tensorboard`` package: ``pip install 'monalisa[tensorboard]'``.
Without it runs train as before and say once, on stderr, that they write no event files. A
resumed run's file starts with a session start at its first new epoch (SummaryWriter's
``purge_step``), so TensorBoard drops what a killed writer logged past the checkpoint and shows
every epoch once.

The events are written here, synchronously, into a file this log holds open, rather than through
SummaryWriter: its thread opens the event file by name for every event, so a run directory moved or
deleted mid-epoch made that thread fail with a traceback, and a write by name can only land at the
old path. Through an open file a moved run's events follow it, and nothing is ever made at the old
path; record.RunDirectory stops the run at its next write.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

_noted = False  # the one-time note about a missing tensorboard package
# An activation histogram of at most this many values (every k-th): the probe's 256 pixels of the
# 1x45450 network's layer are 11.6 million, ~0.2 s an epoch to bin; 65,536 draw the same shape.
HISTOGRAM_VALUES = 2**16
_files = itertools.count()  # a process's event files get distinct names, as SummaryWriter's do


def _tensorflow_bins() -> list[float]:
    """SummaryWriter's default histogram buckets (bins="tensorflow"): +-1e-12 to 1e20, 10% apart, and 0."""
    buckets = []
    value = 1e-12
    while value < 1e20:
        buckets.append(value)
        value *= 1.1
    return [-b for b in reversed(buckets)] + [0.0] + buckets


def _tensorboard():
    """torch's summary builders and TensorBoard's event and record writing, or None (with a note,
    once a process) without tensorboard."""
    global _noted
    try:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.record_writer import RecordWriter
        from torch.utils.tensorboard import summary
    except ImportError:
        if not _noted:
            _noted = True
            print("monalisa: the tensorboard package is not installed, so runs write no TensorBoard event files "
                  "(pip install 'monalisa[tensorboard]')", file=sys.stderr)
        return None
    return summary, Event, SessionLog, RecordWriter


class TensorBoardLog:
    """One run's event file: ``epoch()`` after each epoch, ``close()`` at the end."""

    def __init__(self, file, modules):
        self.file = file
        self.summary, self.Event, SessionLog, RecordWriter = modules
        self.records = RecordWriter(file)
        self.bins = _tensorflow_bins()

    @classmethod
    def open(cls, run_path: str | Path, first_epoch: int = 1) -> TensorBoardLog | None:
        """A new event file in ``run_path`` (which must exist) for epochs from ``first_epoch`` on; None
        without tensorboard. OSError if the file cannot be made."""
        modules = _tensorboard()
        if modules is None:
            return None
        while True:
            # TensorBoard reads every file whose name holds "tfevents"; this is SummaryWriter's naming.
            name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_files)}"
            try:
                file = open(Path(run_path) / name, "xb")  # x: never another writer's file
                break
            except FileExistsError:
                continue
        log = cls(file, modules)
        _, Event, SessionLog, _ = modules
        log._write(Event(file_version="brain.Event:2"))
        if first_epoch > 1:  # a resume: TensorBoard drops the events at and past this step from earlier files
            log._write(Event(step=first_epoch, session_log=SessionLog(status=SessionLog.START)))
        log.file.flush()
        return log

    def _write(self, event, step: int | None = None) -> None:
        event.wall_time = time.time()
        if step is not None:
            event.step = step
        self.records.write(event.SerializeToString())

    def epoch(self, row: Mapping, layer_rows: Sequence[Mapping], model: torch.nn.Module,
              activations: Mapping[int, np.ndarray], frame: np.ndarray | None) -> None:
        """Log epoch ``row["epoch"]``: its figures, its layers' end-of-epoch rows (dynamics.py), the
        weights of ``model`` and the probe ``activations`` (layer -> (pixels, units)) as histograms,
        and ``frame`` (H, W, 3) uint8 if given."""
        step = int(row["epoch"])
        summary = self.summary

        def write(made) -> None:
            self._write(self.Event(summary=made), step)

        for name in ("psnr", "mae"):
            if math.isfinite(row[name]):
                write(summary.scalar(f"image/{name}", row[name]))
        for layer_row in layer_rows:
            for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction", "grad_rms", "weight_rms",
                         "log10_update_ratio"):
                value = layer_row[name]
                if math.isfinite(value):
                    write(summary.scalar(f"{name}/layer{layer_row['layer']}", value))
        for index, linear in enumerate(model.layers, start=1):
            write(summary.histogram(f"weights/layer{index}", linear.weight.detach().cpu().float().numpy(), self.bins))
        for layer, values in activations.items():
            values = values.ravel()[::max(1, values.size // HISTOGRAM_VALUES)]
            if np.isfinite(values).all():
                write(summary.histogram(f"activations/layer{layer}", values, self.bins))
        if frame is not None:
            write(summary.image("frame", frame, dataformats="HWC"))
        self.file.flush()  # so a live `tensorboard` sees the epoch now

    def close(self) -> None:
        """Close the file. An OSError (a full disk: the last flush) loses only events: the run's own files
        have said what went wrong."""
        try:
            self.file.close()
        except OSError:
            pass
