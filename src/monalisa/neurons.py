"""The neuron view: what every unit of one layer computes over the image, as a grid of small heatmaps.

TensorFlow Playground draws each neuron of its small networks as the function it
computes over the input plane. Here the input plane is the image, so each unit of
a hidden layer is itself an image: its activation at every pixel's (row, col).
Looking at a layer this way shows what the network builds its picture from: the
first layer's units are ramps and folds along straight lines (one affine function
each, bent by the activation), later layers combine them into regions and edges;
dead rectifiers and saturated units, which no longer learn, show up as blanks.

Layers are numbered as ``CoordinateNetwork.layer_outputs`` numbers them: 1..depth
the hidden layers (each unit's own activation, before a residual skip adds the
layer's input), 0 the encoding's output features (for the ``none`` encoding, the
raw row and column coordinates).

    layer_maps(model, height, width, layer, device)  (units, H, W) float32 activations
    neuron_grid(maps, layer=, layers=)              the heatmaps tiled into one uint8 image
    run_neurons(run, layer, tile)                   both, from a run directory's latest checkpoint
    save_neuron_grid(grid, path)                    the grid as a PNG with a caption strip

Each tile is drawn with a diverging colour map centred on zero and scaled to the
unit's own largest |value|, so every unit uses the whole colour range whatever its
size; constant units are flat mid-grey.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import animate
from .engines import resolve_device
from .errors import UserError
from .files import save_png
from .images import coordinate_grid
from .models import CoordinateNetwork, build_model
from .record import RunDirectory
from .train import RENDER_CHUNK, RENDER_FLOATS

DEFAULT_TILE = 64  # px on a tile's longest side: 300 units fill a ~1450x920 grid, a screen's worth
GUTTER = 2  # px between tiles: enough to separate two tiles of the same colour, thin enough not to dominate
ASPECT = 16 / 10  # the grid's width / height: a landscape screen's shape
MAX_PIXELS = 50_000_000  # the same bound as `monalisa render`'s output

# Diverging, centred on zero: the sign of a unit's output matters. A leaky rectifier
# is negative where it is "off" (slope 0.01) and positive where it fires; tanh and
# sine units swing both ways. A sequential map would paint -1 and 0 as two shades of
# one colour; this one makes "off" blue, "on" red and zero (the boundary) near-white.
COLORMAP = "RdBu_r"
COLORMAP_STEPS = 255  # odd, so zero has an entry of its own: the map's centre
CONSTANT_RGB = (128, 128, 128)  # flat mid-grey: no entry of RdBu_r, so a dead unit never passes for a live one
BACKGROUND_RGB = animate.STRIP_RGB  # gutters and empty cells: the caption strip's dark grey, so the two read as one

# A unit is constant when its range over the image is at most ATOL + RTOL * its largest |value|.
# Relative, because units differ in size by orders of magnitude (a sine unit spans +-1, a trained
# rectifier can reach 20), so "flat" must be judged against the unit's own size; 1e-3 is far above
# float32 rounding (~1e-7) and below one step of the colour map (2/254 of the size), so a unit
# counted as constant would look flat in its own colours too. Absolute, for units whose whole output
# is tiny but relatively varied (a sigmoid deep in saturation, ~1e-13): a range of 1e-6 moves the
# next layer's O(1) inputs by a few float32 steps (eps 1.2e-7), nothing it can use.
RTOL = 1e-3
ATOL = 1e-6
RECTIFIERS = ("relu", "leaky_relu")  # activations whose units can stop firing (NeuronGrid.silent)


@dataclass(frozen=True)
class NeuronGrid:
    """One layer's units drawn as a grid of heatmaps, row-major: unit k at row k // columns, column k % columns."""

    image: np.ndarray  # (H, W, 3) uint8
    layer: int  # 0 the encoding, 1..layers the hidden layers
    layers: int  # the model's hidden depth
    units: int
    constant: int  # units constant over the image (RTOL, ATOL): dead rectifiers, saturated units
    columns: int
    rows: int
    tile: tuple[int, int]  # (width, height) of one tile in pixels
    gutter: int  # pixels between tiles
    epoch: int | None  # the checkpoint's epoch, None when the model came from elsewhere
    # Rectifier layers only (else None): units that never fire, negative or zero at every pixel. A
    # leaky unit there still varies (slope 0.01), so it is not "constant", but it is as good as dead:
    # it passes on a faint copy of its input and learns at 1% of the rate (the all-blue tiles).
    silent: int | None = None

    @property
    def summary(self) -> str:
        """One line: 'layer 2 of 4: 300 units, 37 constant · epoch 30'."""
        what = f"{self.units} {'features' if self.layer == 0 else 'units'}, {self.constant} constant"
        if self.silent is not None:
            what += f", {self.silent} never fire"
        where = f"layer {self.layer} of {self.layers}" + (" (the encoding)" if self.layer == 0 else "")
        return f"{where}: {what}" + ("" if self.epoch is None else f" · epoch {self.epoch}")


@torch.no_grad()
def layer_maps(model: CoordinateNetwork, height: int, width: int, layer: int,
               device: torch.device | str) -> np.ndarray:
    """(units, height, width) float32: layer ``layer``'s units over a height x width grid of the image.

    The grid is images.coordinate_grid, the training convention, so at the training size each
    value is the unit's activation at that pixel; at other sizes it samples the same continuous
    function. Chunked as train.render, so memory stays bounded whatever the layer's width.
    """
    coords = coordinate_grid(height, width)  # (H * W, 2)
    widest = max(linear.out_features for linear in model.layers)
    widest = max(widest, model.encoding.out_features)
    chunk = max(1, min(RENDER_CHUNK, RENDER_FLOATS // widest))
    was_training = model.training
    model.eval()
    try:
        parts = [model.layer_outputs(torch.from_numpy(coords[start:start + chunk]).to(device), layer)
                 .float().cpu().numpy() for start in range(0, len(coords), chunk)]  # each (n, units)
    finally:
        model.train(was_training)
    maps = np.concatenate(parts).T  # (units, H * W)
    return np.ascontiguousarray(maps.reshape(-1, height, width))


def constant_units(maps: np.ndarray) -> np.ndarray:
    """(units,) bool: which units are constant over the image, by RTOL and ATOL."""
    flat = maps.reshape(len(maps), -1)
    spread = flat.max(axis=1) - flat.min(axis=1)
    return spread <= ATOL + RTOL * np.abs(flat).max(axis=1)


def tile_shape(height: int, width: int, tile: int = DEFAULT_TILE) -> tuple[int, int]:
    """(width, height) of a tile: ``tile`` px on the longest side, the image's aspect ratio kept."""
    if tile < 1:
        raise UserError(f"--tile must be a positive number of pixels, got {tile}")
    if width >= height:
        return tile, max(1, round(tile * height / width))
    return max(1, round(tile * width / height)), tile


def grid_layout(units: int, tile: tuple[int, int], gutter: int = GUTTER) -> tuple[int, int]:
    """(columns, rows) whose whole grid, gutters included, is closest to ASPECT (fewest columns on a tie)."""
    tile_w, tile_h = tile

    def distance(columns: int) -> float:  # in log aspect, so 2x too wide and 2x too tall are equally far
        rows = math.ceil(units / columns)
        grid_w = columns * tile_w + (columns - 1) * gutter
        grid_h = rows * tile_h + (rows - 1) * gutter
        return abs(math.log(grid_w / grid_h / ASPECT))

    columns = min(range(1, units + 1), key=distance)
    return columns, math.ceil(units / columns)


def neuron_grid(maps: np.ndarray, *, layer: int, layers: int, epoch: int | None = None,
                gutter: int = GUTTER, rectifier: bool = False) -> NeuronGrid:
    """Tile (units, h, w) maps into one image, each unit in its own diverging colours.

    A tile is as large as its map: render the maps at the tile size (layer_maps) rather than
    resizing them, since the network is a continuous function and can be sampled at any size.
    """
    from matplotlib import colormaps  # imported here: only drawing needs matplotlib

    units, tile_h, tile_w = maps.shape
    columns, rows = grid_layout(units, (tile_w, tile_h), gutter)
    constant = constant_units(maps)

    # Each unit divided by its own largest |value|: into [-1, 1], zero staying at the centre.
    peak = np.abs(maps).reshape(units, -1).max(axis=1)  # (units,)
    scaled = maps / np.where(peak > 0, peak, 1)[:, None, None]
    lut = colormaps[COLORMAP](np.linspace(0, 1, COLORMAP_STEPS))[:, :3]  # (255, 3) in [0, 1]
    lut = (lut * 255).round().astype(np.uint8)
    index = np.rint((scaled + 1) * (COLORMAP_STEPS - 1) / 2).astype(np.intp)  # -1 -> 0, 0 -> 127, 1 -> 254
    tiles = lut[np.clip(index, 0, COLORMAP_STEPS - 1)]  # (units, h, w, 3)
    tiles[constant] = CONSTANT_RGB

    image = np.empty((rows * tile_h + (rows - 1) * gutter, columns * tile_w + (columns - 1) * gutter, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    for k in range(units):
        row, column = divmod(k, columns)
        top, left = row * (tile_h + gutter), column * (tile_w + gutter)
        image[top:top + tile_h, left:left + tile_w] = tiles[k]
    silent = int((maps.reshape(units, -1).max(axis=1) <= 0).sum()) if rectifier else None
    return NeuronGrid(image=image, layer=layer, layers=layers, units=units, constant=int(constant.sum()),
                      columns=columns, rows=rows, tile=(tile_w, tile_h), gutter=gutter, epoch=epoch, silent=silent)


def run_neurons(run_or_path: RunDirectory | str | Path, layer: int, tile: int = DEFAULT_TILE,
                device: str = "cpu") -> NeuronGrid:
    """The neuron grid of ``layer`` in a run's latest checkpoint; the run may still be training.

    CPU by default: a 300-unit layer at 64 px tiles is ~1.2 million activations, done on the CPU
    before CUDA would have started.
    """
    run = run_or_path if isinstance(run_or_path, RunDirectory) else RunDirectory.open(run_or_path)
    # One read gives weights and epoch together (rendering.trained_model would read the file again,
    # and a run still training may have replaced it in between).
    checkpoint = run.checkpoint()
    if checkpoint is None:
        raise UserError(f"{str(run.path)!r} has no checkpoint yet: wait for its first epoch")
    recipe = run.recipe()
    model = build_model(recipe)
    run.load_weights(model, checkpoint)  # a checkpoint of another network: one line, not a traceback
    if not 0 <= layer <= model.depth:
        hidden = "hidden layer 1" if model.depth == 1 else f"hidden layers 1-{model.depth}"
        raise UserError(f"layer {layer} is out of range: {str(run.path)!r} has {hidden} (0 is the encoding)")
    info = run.info()
    size = tile_shape(info["height"], info["width"], tile)
    units = model.encoding.out_features if layer == 0 else model.layers[layer - 1].out_features
    if units * size[0] * size[1] > MAX_PIXELS:
        raise UserError(f"{units} tiles of {size[0]}x{size[1]} are more than {MAX_PIXELS // 1_000_000} megapixels; "
                        "choose a smaller --tile")
    device = resolve_device(device)
    maps = layer_maps(model.to(device), size[1], size[0], layer, device)
    rectifier = layer > 0 and recipe.layer_activations()[layer - 1].split(":")[0] in RECTIFIERS
    return neuron_grid(maps, layer=layer, layers=model.depth, epoch=checkpoint.get("epoch"), rectifier=rectifier)


def save_neuron_grid(grid: NeuronGrid, path: str | Path) -> Path:
    """Write the grid as a PNG with its summary in a caption strip below; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {str(path)!r} must end in .png")
    # caption_frame enlarges a grid under 256 px tall (one or two tiles) by a whole factor, nearest
    # neighbour, so its caption gets a legible font; larger grids keep their size.
    save_png(animate.caption_frame(grid.image, grid.summary), path)
    return path
