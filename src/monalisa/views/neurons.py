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
    grid_picture(grid)                              the grid, its colour legend and a caption strip below
    save_neuron_grid(grid, path)                    that picture as a PNG
    animate_neurons(run, layer, gif, mp4)           one picture per weight snapshot (runs/directory.py's
                                                    snapshots/, epochs 0, 1, 2, 3, 5, 8, ...) as GIF and MP4

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

from monalisa.data.images import coordinate_grid
from monalisa.engines import resolve_device
from monalisa.errors import UserError
from monalisa.files import save_png
from monalisa.models.network import CoordinateNetwork, build_model
from monalisa.runs import animation
from monalisa.runs.directory import RunDirectory
from monalisa.training.inference import RENDER_CHUNK, RENDER_FLOATS

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
BACKGROUND_RGB = animation.STRIP_RGB  # gutters and empty cells: the caption strip's dark grey, so the two read as one

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
    # Each unit's (min, max) over the image, in unit order: the values its colours stand for (the lab
    # shows them on hover).
    ranges: tuple[tuple[float, float], ...] = ()

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


def unit_ranges(maps: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Each unit's (min, max) over its map, in unit order."""
    flat = maps.reshape(len(maps), -1)
    return tuple((float(low), float(high)) for low, high in zip(flat.min(axis=1), flat.max(axis=1)))


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
                gutter: int = GUTTER, rectifier: bool = False, columns: int | None = None) -> NeuronGrid:
    """Tile (units, h, w) maps into one image, each unit in its own diverging colours; ``columns``
    fixed (the lab's network view: one column a layer) or, by default, closest to ASPECT.

    A tile is as large as its map: render the maps at the tile size (layer_maps) rather than
    resizing them, since the network is a continuous function and can be sampled at any size.
    """
    from matplotlib import colormaps  # imported here: only drawing needs matplotlib

    units, tile_h, tile_w = maps.shape
    if columns is None:
        columns, rows = grid_layout(units, (tile_w, tile_h), gutter)
    else:
        columns = max(1, min(columns, units))
        rows = math.ceil(units / columns)
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
                      columns=columns, rows=rows, tile=(tile_w, tile_h), gutter=gutter, epoch=epoch, silent=silent,
                      ranges=unit_ranges(maps))


def _layer_tiles(run: RunDirectory, recipe, model, layer: int, tile: int) -> tuple[tuple[int, int], bool]:
    """A layer's tile size (height, width) and whether its units are rectifiers; UserError for a layer
    the network lacks or tiles that would be too many pixels, before any map is computed."""
    if not 0 <= layer <= model.depth:
        hidden = "hidden layer 1" if model.depth == 1 else f"hidden layers 1-{model.depth}"
        raise UserError(f"layer {layer} is out of range: {str(run.path)!r} has {hidden} (0 is the encoding)")
    info = run.info()
    size = tile_shape(info["height"], info["width"], tile)
    units = model.encoding.out_features if layer == 0 else model.layers[layer - 1].out_features
    if units * size[0] * size[1] > MAX_PIXELS:
        raise UserError(f"{units} tiles of {size[0]}x{size[1]} are more than {MAX_PIXELS // 1_000_000} megapixels; "
                        "choose a smaller --tile")
    rectifier = layer > 0 and recipe.layer_activations()[layer - 1].split(":")[0] in RECTIFIERS
    return size, rectifier


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
    size, rectifier = _layer_tiles(run, recipe, model, layer, tile)
    device = resolve_device(device)
    maps = layer_maps(model.to(device), size[1], size[0], layer, device)
    return neuron_grid(maps, layer=layer, layers=model.depth, epoch=checkpoint.get("epoch"), rectifier=rectifier)


LEGEND_TEXT_RGB = animation.TEXT_RGB
MIN_HEIGHT = 256  # caption_frame's: a grid lower than this is enlarged by a whole factor first


def legend_strip(width: int) -> np.ndarray:
    """(h, width, 3) uint8: the colour map as a bar from -peak through 0 to +peak, and the grey of a
    constant unit, labelled; drawn at the picture's final width so its text stays legible."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    size = int(np.clip(width / 40, 10, 16))  # the font: small beside the caption's ~width / 18
    font = animation._font(size)
    pad = max(3, size // 3)
    bar_h = max(6, size)
    strip = Image.new("RGB", (width, bar_h + size + 3 * pad), BACKGROUND_RGB)
    draw = ImageDraw.Draw(strip)
    bar_w = max(16, min(width // 2, 360))
    lut = (colormaps[COLORMAP](np.linspace(0, 1, bar_w))[:, :3] * 255).round().astype(np.uint8)  # (bar_w, 3)
    strip.paste(Image.fromarray(np.repeat(lut[None], bar_h, axis=0)), (pad, pad))
    text_y = 2 * pad + bar_h
    for x, label, anchor in ((pad, "-peak", "lt"), (pad + bar_w // 2, "0", "mt"), (pad + bar_w, "+peak", "rt")):
        draw.text((x, text_y), label, font=font, fill=LEGEND_TEXT_RGB, anchor=anchor)
    left = 3 * pad + bar_w
    if left + bar_h < width:
        draw.rectangle((left, pad, left + bar_h, pad + bar_h), fill=CONSTANT_RGB)
        note = "constant · each unit to its own peak"
        draw.text((left + bar_h + pad, pad + bar_h // 2),
                  animation._truncate(note, font, max(1, width - left - bar_h - 2 * pad)), font=font,
                  fill=LEGEND_TEXT_RGB, anchor="lm")
    return np.asarray(strip)


def grid_picture(grid: NeuronGrid) -> np.ndarray:
    """The grid (enlarged by a whole factor, nearest neighbour, when under MIN_HEIGHT tall, so its
    legend and caption get legible fonts), its colour legend, and its summary in a caption strip."""
    k = max(1, math.ceil(MIN_HEIGHT / grid.image.shape[0]))
    image = grid.image.repeat(k, axis=0).repeat(k, axis=1)
    return animation.caption_frame(np.concatenate([image, legend_strip(image.shape[1])]), grid.summary, min_height=0)


def save_neuron_grid(grid: NeuronGrid, path: str | Path) -> Path:
    """Write the grid as a PNG with its legend and summary below (grid_picture); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"--out {str(path)!r} must end in .png")
    save_png(grid_picture(grid), path)
    return path


ANIMATION_FPS = 2  # snapshots are ~1.6x apart in epochs: a 500-epoch run's 15 pictures last ~8 s


def animate_neurons(run_or_path: RunDirectory | str | Path, layer: int, gif: str | Path | None,
                    mp4: str | Path | None, tile: int = DEFAULT_TILE, fps: float = ANIMATION_FPS) -> list[int]:
    """Layer ``layer``'s units at every weight snapshot of the run (record.snapshot_wanted's epochs), as a
    GIF and an MP4 (either may be None); returns the epochs drawn. Each picture is scaled as
    neuron_grid scales one: every unit to its own peak, so a unit's shape is followed as it forms."""
    run = run_or_path if isinstance(run_or_path, RunDirectory) else RunDirectory.open(run_or_path)
    epochs = run.snapshot_epochs()
    if not epochs:
        raise UserError(f"{str(run.path)!r} has no weight snapshots (runs keep them from their first epoch on, "
                        "in snapshots/; a run trained before they existed has none)")
    recipe = run.recipe()
    model = build_model(recipe)
    size, rectifier = _layer_tiles(run, recipe, model, layer, tile)
    frames = []
    for epoch in epochs:
        model.load_state_dict(run.snapshot(epoch, model))  # checked against the model's shapes as it is read
        maps = layer_maps(model, size[1], size[0], layer, "cpu")
        frames.append(grid_picture(neuron_grid(maps, layer=layer, layers=model.depth, epoch=epoch,
                                               rectifier=rectifier)))
    if gif is not None:
        animation.write_gif(frames, gif, fps=fps)
    if mp4 is not None:
        animation.write_mp4(frames, mp4, fps=fps)
    return epochs
