"""TensorBoard event files in a run directory, when the ``tensorboard`` package is installed.

``tensorboard --logdir runs`` then shows every run (a comparison's entries included, as the
folders below it), each under its directory's name. Per epoch (the step is the epoch):

    image/psnr, image/mae                 the epoch's figures, as metrics.csv has them
    <statistic>/layer<K>                  layers.csv's statistics at the epoch's end, one chart a layer
    weights/layer<K>, activations/layer<K>  histograms: the weights, and the outputs on the probe pixels
    frame                                 the epoch's frame (TensorBoard's image slider), at the frames
                                          of record.frame_wanted's "log" schedule: ~20 a decade, so a
                                          500-epoch run adds ~70 frames, not 500 copies of frames/

Writing goes through PyTorch's SummaryWriter (torch.utils.tensorboard), which needs the
``tensorboard`` package: ``pip install 'monalisa[tensorboard]'``. Without it runs train as before
and say once, on stderr, that they write no event files. A resumed run opens its writer with
``purge_step`` at its first new epoch, so TensorBoard drops what a killed writer logged past the
checkpoint and shows every epoch once.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

_noted = False  # the one-time note about a missing tensorboard package
# An activation histogram of at most this many values (every k-th): the probe's 256 pixels of the
# 1x45450 network's layer are 11.6 million, ~0.2 s an epoch to bin; 65,536 draw the same shape.
HISTOGRAM_VALUES = 2**16


def _summary_writer():
    """torch's SummaryWriter class, or None (with a note, once a process) without tensorboard."""
    global _noted
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _noted:
            _noted = True
            print("monalisa: the tensorboard package is not installed, so runs write no TensorBoard event files "
                  "(pip install 'monalisa[tensorboard]')", file=sys.stderr)
        return None
    return SummaryWriter


class TensorBoardLog:
    """One run's event files: ``epoch()`` after each epoch, ``close()`` at the end."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, run_path: str | Path, first_epoch: int = 1) -> TensorBoardLog | None:
        """A log in ``run_path`` for epochs from ``first_epoch`` on; None without tensorboard."""
        writer_class = _summary_writer()
        if writer_class is None:
            return None
        # flush_secs: the writer's thread flushes on its own, so a live `tensorboard` sees each epoch soon.
        writer = writer_class(log_dir=str(run_path), purge_step=first_epoch if first_epoch > 1 else None,
                              flush_secs=10)
        return cls(writer)

    def epoch(self, row: Mapping, layer_rows: Sequence[Mapping], model: torch.nn.Module,
              activations: Mapping[int, np.ndarray], frame: np.ndarray | None) -> None:
        """Log epoch ``row["epoch"]``: its figures, its layers' end-of-epoch rows (dynamics.py), the
        weights of ``model`` and the probe ``activations`` (layer -> (pixels, units)) as histograms,
        and ``frame`` (H, W, 3) uint8 if given."""
        step = int(row["epoch"])
        write = self.writer
        for name in ("psnr", "mae"):
            if math.isfinite(row[name]):
                write.add_scalar(f"image/{name}", row[name], step)
        for layer_row in layer_rows:
            for name in ("act_mean", "act_std", "dead_fraction", "saturated_fraction", "grad_rms", "weight_rms",
                         "log10_update_ratio"):
                value = layer_row[name]
                if math.isfinite(value):
                    write.add_scalar(f"{name}/layer{layer_row['layer']}", value, step)
        for index, linear in enumerate(model.layers, start=1):
            write.add_histogram(f"weights/layer{index}", linear.weight.detach().cpu().float().numpy(), step)
        for layer, values in activations.items():
            values = values.ravel()[::max(1, values.size // HISTOGRAM_VALUES)]
            if np.isfinite(values).all():
                write.add_histogram(f"activations/layer{layer}", values, step)
        if frame is not None:
            write.add_image("frame", frame, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
