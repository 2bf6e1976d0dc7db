"""The network view: every layer of a run as a column of unit thumbnails, with the layer's dynamics.

TensorFlow Playground draws each neuron as its picture inside a diagram of the network; this is
that view for a run directory, from its latest checkpoint and its layers.csv, and it follows a run
that is still training (every call reads what is on disk now; nothing is written).

    network_view(run, max_units, tile)     the layers: units shown (all, or an even sample of a wide
                                           layer, saying so), each one's range, the layer's dynamics
    layer_column(run, layer, max_units, tile)   the shown units' thumbnails, top to bottom, as one image
    unit_picture(run, layer, unit, size)   one unit, large

The lab serves these (GET /api/runs/<id>/network, .../network/<layer>.png, .../unit.png); the
thumbnails are neurons.neuron_grid's tiles, one column wide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monalisa.errors import UserError
from monalisa.files import json_safe
from monalisa.models.network import CoordinateNetwork, build_model
from monalisa.runs.directory import RunDirectory
from monalisa.training.dynamics import epoch_end_rows
from monalisa.views.neurons import RECTIFIERS, layer_maps, neuron_grid, tile_shape, unit_ranges

MAX_UNITS = 32  # thumbnails a column shows at most: a wider layer is sampled evenly (its first and last unit kept)
THUMB = 24  # px on a thumbnail's longest side: 32 of them, with gutters, stand ~830 px tall, a screen's height
BIG = 256  # px on the longest side of an enlarged unit
DYNAMICS = ("act_std", "dead_fraction", "grad_rms", "log10_update_ratio")  # what each column plots beside it


def shown_units(units: int, max_units: int = MAX_UNITS) -> list[int]:
    """Every unit, or ``max_units`` evenly spaced ones (the first and last kept)."""
    if units <= max_units:
        return list(range(units))
    return sorted({round(i * (units - 1) / (max_units - 1)) for i in range(max_units)})


def _latest(run: RunDirectory) -> tuple[CoordinateNetwork, int]:
    checkpoint = run.checkpoint()
    if checkpoint is None:
        raise UserError(f"{str(run.path)!r} has no checkpoint yet: wait for its first epoch")
    model = build_model(run.recipe())
    run.load_weights(model, checkpoint)
    return model, checkpoint["epoch"]


def _hidden_layer(model: CoordinateNetwork, layer: int, run: RunDirectory) -> None:
    if not 1 <= layer <= model.depth:
        raise UserError(f"layer {layer} is out of range: {str(run.path)!r} has hidden layers 1-{model.depth}")


def network_view(run_or_path: RunDirectory | str | Path, max_units: int = MAX_UNITS, tile: int = THUMB) -> dict:
    """``{"epoch", "tile": (w, h), "layers": [{"layer", "units", "shown", "sampled", "activation", "ranges",
    "dynamics"}]}``: per hidden layer, the unit indices drawn, each drawn unit's (min, max) over the image,
    and its layers.csv rows at each epoch's end (DYNAMICS, epochs ascending)."""
    run = run_or_path if isinstance(run_or_path, RunDirectory) else RunDirectory.open(run_or_path)
    model, epoch = _latest(run)
    info = run.info()
    size = tile_shape(info["height"], info["width"], tile)  # (w, h)
    activations = run.recipe().layer_activations()
    ends = epoch_end_rows(run.layers())
    layers = []
    for layer in range(1, model.depth + 1):
        units = model.layers[layer - 1].out_features
        shown = shown_units(units, max_units)
        maps = layer_maps(model, size[1], size[0], layer, "cpu")[shown]  # (shown, h, w)
        rows = ends.get(layer, [])
        layers.append({
            "layer": layer, "units": units, "shown": shown, "sampled": len(shown) < units,
            "activation": activations[layer - 1],
            "ranges": [list(pair) for pair in unit_ranges(maps)],
            "dynamics": {"epoch": [row["epoch"] for row in rows],
                         **{name: [row[name] for row in rows] for name in DYNAMICS}},
        })
    return json_safe({"epoch": epoch, "tile": size, "layers": layers})  # NaN (no dead state) as null


def layer_column(run_or_path: RunDirectory | str | Path, layer: int, max_units: int = MAX_UNITS,
                 tile: int = THUMB) -> np.ndarray:
    """(H, W, 3) uint8: layer ``layer``'s shown units (shown_units) as thumbnails, top to bottom."""
    run = run_or_path if isinstance(run_or_path, RunDirectory) else RunDirectory.open(run_or_path)
    model, epoch = _latest(run)
    _hidden_layer(model, layer, run)
    info = run.info()
    size = tile_shape(info["height"], info["width"], tile)
    shown = shown_units(model.layers[layer - 1].out_features, max_units)
    maps = layer_maps(model, size[1], size[0], layer, "cpu")[shown]
    rectifier = run.recipe().layer_activations()[layer - 1].split(":")[0] in RECTIFIERS
    return neuron_grid(maps, layer=layer, layers=model.depth, epoch=epoch, rectifier=rectifier, columns=1).image


def unit_picture(run_or_path: RunDirectory | str | Path, layer: int, unit: int, size: int = BIG) -> np.ndarray:
    """(h, w, 3) uint8: one unit of ``layer`` over the image, ``size`` px on its longest side, in the
    neuron view's colours."""
    run = run_or_path if isinstance(run_or_path, RunDirectory) else RunDirectory.open(run_or_path)
    model, epoch = _latest(run)
    _hidden_layer(model, layer, run)
    units = model.layers[layer - 1].out_features
    if not 0 <= unit < units:
        raise UserError(f"unit {unit} is out of range: layer {layer} has units 0-{units - 1}")
    info = run.info()
    width, height = tile_shape(info["height"], info["width"], size)
    maps = layer_maps(model, height, width, layer, "cpu")[[unit]]
    return neuron_grid(maps, layer=layer, layers=model.depth, epoch=epoch).image
