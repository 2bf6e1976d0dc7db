"""Render a trained run's network at any resolution, or zoomed into a region.

The network is a function of continuous coordinates, so it can be evaluated on
a grid finer than the image it learned. The grid keeps the one coordinate
convention (images.py): the rendered image spans the same [0, 1]^2 as the
training image, its first and last rows at row coordinates 0 and 1. What the
network shows between the training pixels is its own interpolation: smooth for
rectifier networks, aliasing for high-frequency encodings, blocky for hash grids
with a coarse finest level.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from monalisa.engines import resolve_device
from monalisa.errors import UserError
from monalisa.models.network import build_model
from monalisa.runs.directory import RunDirectory
from monalisa.training.inference import render, to_frame


@dataclass(frozen=True)
class Region:
    """A rectangle of coordinate space: rows top..bottom, columns left..right, all in [0, 1]."""

    top: float = 0.0
    left: float = 0.0
    bottom: float = 1.0
    right: float = 1.0

    @classmethod
    def zoom(cls, factor: float, center: tuple[float, float] = (0.5, 0.5)) -> Region:
        """1/factor of each side around ``center`` (row, col), shifted to stay inside [0, 1]^2."""
        if not factor >= 1:
            raise UserError(f"--zoom must be at least 1, got {factor}")
        if not all(0 <= c <= 1 for c in center):
            raise UserError(f"--center must be two fractions in [0, 1] (row, col), got {center}")
        half = 0.5 / factor
        row = min(max(center[0], half), 1 - half)
        col = min(max(center[1], half), 1 - half)
        return cls(row - half, col - half, row + half, col + half)


def trained_model(run: RunDirectory, device: torch.device) -> torch.nn.Module:
    checkpoint = run.checkpoint()
    if checkpoint is None:
        raise UserError(f"{str(run.path)!r} has no checkpoint yet: train at least one epoch first")
    model = build_model(run.recipe())
    run.load_weights(model, checkpoint)  # a checkpoint of another network: one line, not a traceback
    return model.to(device).eval()


def region_grid(height: int, width: int, region: Region) -> np.ndarray:
    """(height * width, 2) coordinates over ``region`` in scan order, row first.

    Filled in float32 in place: the float64 meshgrid, its stack and its cast took ~36 bytes a pixel
    at once (600 MB for a 4096x4096 render), this 8."""
    grid = np.empty((height, width, 2), dtype=np.float32)
    grid[:, :, 0] = np.linspace(region.top, region.bottom, height)[:, None]
    grid[:, :, 1] = np.linspace(region.left, region.right, width)[None, :]
    return grid.reshape(-1, 2)


# Renders at once in one process. A 4096-px render holds ~1 GB while it runs and takes a CPU minute;
# the lab answers each request on one of its ~40 threads, so 30 parallel requests for render.png
# would hold 30 GB. The CLI renders one image, so it never meets the bound.
MAX_CONCURRENT_RENDERS = 2
_rendering = threading.BoundedSemaphore(MAX_CONCURRENT_RENDERS)


class RenderBusy(UserError):
    """MAX_CONCURRENT_RENDERS renders are running in this process already."""


def render_run(run: RunDirectory, width: int, height: int, region: Region = Region(),
               device: str = "auto") -> np.ndarray:
    """(height, width, 3) uint8: the run's network evaluated over ``region``; RenderBusy (refused at
    once, never queued: a waiting thread is a thread the server cannot use) when too many run already."""
    if not _rendering.acquire(blocking=False):
        raise RenderBusy(f"{MAX_CONCURRENT_RENDERS} images are being rendered already; try again when they are done")
    try:
        device = resolve_device(device)
        model = trained_model(run, device)
        return to_frame(render(model, region_grid(height, width, region), device), height, width)
    finally:
        _rendering.release()


def output_size(run: RunDirectory, size: tuple[int, int] | None, scale: float | None) -> tuple[int, int]:
    """(width, height): ``size`` as given, or the training image's size times ``scale``."""
    if size is not None and scale is not None:
        raise UserError("give --size or --scale, not both")
    if size is not None:
        width, height = size
    else:
        info = run.info()
        scale = 4.0 if scale is None else scale
        width, height = max(1, round(info["width"] * scale)), max(1, round(info["height"] * scale))
    if width * height > 50_000_000:
        raise UserError(f"{width}x{height} is more than 50 megapixels; choose a smaller --scale or --size")
    return width, height
