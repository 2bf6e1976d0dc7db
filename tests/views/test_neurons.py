"""The neuron view: each unit's map against a hand-written forward pass, the constant-unit count, the grid's
layout and colours against matplotlib's colour map, and `monalisa neurons` on a tiny trained run.

The reference forward pass is written here with plain torch ops in float64 from the Linear layers' weights
(and, for the positional encoding, NeRF's formula), never through the model's own forward or trunk.
"""

import math
import shutil

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, craft, run_cli, snapshot
from matplotlib import colormaps
from PIL import Image

from monalisa.data.images import load_target
from monalisa.models.network import build_model
from monalisa.recipes.recipe import Recipe
from monalisa.runs.directory import RunDirectory
from monalisa.runs.lifecycle import train_run
from monalisa.views import neurons
from monalisa.views.neurons import (
    BACKGROUND_RGB,
    CONSTANT_RGB,
    GUTTER,
    NeuronGrid,
    constant_units,
    grid_layout,
    layer_maps,
    neuron_grid,
    run_neurons,
    tile_shape,
)

ACTIVATION_REFERENCE = {
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "sine": lambda x: torch.sin(30.0 * x),  # SIREN's omega_0, first and hidden layers alike by default
}


def reference_grid(height: int, width: int) -> torch.Tensor:
    """(H * W, 2) float64 (row, col), each running 0..1 across the image, scan order."""
    rows, cols = torch.meshgrid(torch.linspace(0, 1, height, dtype=torch.float64),
                                torch.linspace(0, 1, width, dtype=torch.float64), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], 1)


def reference_encoding(coords: torch.Tensor, encoding: str) -> torch.Tensor:
    if encoding == "none":
        return coords
    assert encoding == "positional:octaves=2"  # NeRF: [p, sin(2^k pi p), cos(2^k pi p) for k < L]
    parts = [coords]
    for k in range(2):
        parts += [torch.sin(2**k * math.pi * coords), torch.cos(2**k * math.pi * coords)]
    return torch.cat(parts, 1)


def reference_layers(model, recipe: Recipe, coords: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every layer's units (0: the encoding), and the network's output, by hand in float64."""
    h = reference_encoding(coords, recipe.encoding)
    units = [h]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for linear, name in zip(linears[:-1], recipe.layer_activations()):
        weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
        z = ACTIVATION_REFERENCE[name](h @ weight.T + bias)
        units.append(z)
        h = h + z if recipe.residual and z.shape == h.shape else z
    weight, bias = linears[-1].weight.detach().double(), linears[-1].bias.detach().double()
    return units, h @ weight.T + bias  # the recipes here have linear outputs


RECIPES = {
    "leaky": Recipe(arch=(6, 5)),
    "residual-tanh-positional": Recipe(arch=(4, 4, 4), activation="tanh", residual=True,
                                       encoding="positional:octaves=2"),
    "residual-sine": Recipe(arch=(5, 5, 5), activation="sine", init="siren", residual=True),
    "per-layer": Recipe(arch=(7, 3), activation=("relu", "tanh")),
}


@pytest.mark.parametrize("name", RECIPES)
def test_layer_maps_match_a_hand_written_forward(name):
    recipe = RECIPES[name]
    model = build_model(recipe)
    height, width = 9, 13
    units, output = reference_layers(model, recipe, reference_grid(height, width))
    for layer, expected in enumerate(units):
        maps = layer_maps(model, height, width, layer, "cpu")
        assert maps.dtype == np.float32 and maps.shape == (expected.shape[1], height, width)
        want = expected.T.reshape(-1, height, width).numpy()
        np.testing.assert_allclose(maps, want, rtol=1e-5, atol=1e-5, err_msg=f"layer {layer}")
    # forward still computes the same network
    coords = torch.from_numpy(reference_grid(height, width).numpy().astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(model(coords).numpy(), output.numpy(), rtol=1e-5, atol=1e-5)


def test_residual_layers_show_the_units_before_the_skip():
    recipe = RECIPES["residual-sine"]
    model = build_model(recipe)
    units, _ = reference_layers(model, recipe, reference_grid(6, 7))
    with_skip = (units[1] + units[2]).T.reshape(-1, 6, 7).numpy()  # what layer 3 reads, not layer 2's own units
    maps = layer_maps(model, 6, 7, 2, "cpu")
    np.testing.assert_allclose(maps, units[2].T.reshape(-1, 6, 7).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(maps, with_skip, atol=1e-2)


def test_layer_maps_in_small_chunks_and_the_mode_kept(monkeypatch):
    recipe = RECIPES["leaky"]
    model = build_model(recipe).train()
    monkeypatch.setattr(neurons, "RENDER_FLOATS", 3 * 6)  # widest layer 6 units: 3 pixels a chunk
    units, _ = reference_layers(model, recipe, reference_grid(5, 7))
    maps = layer_maps(model, 5, 7, 1, "cpu")
    np.testing.assert_allclose(maps, units[1].T.reshape(-1, 5, 7).numpy(), rtol=1e-5, atol=1e-6)
    assert model.training


def test_layer_outputs_refuses_a_layer_out_of_range():
    model = build_model(Recipe(arch=(4, 4)))
    assert model.depth == 2
    with pytest.raises(ValueError, match="hidden layers are 1-2"):
        model.layer_outputs(torch.zeros(3, 2), 3)
    with pytest.raises(ValueError):
        model.layer_outputs(torch.zeros(3, 2), -1)


# -- constant units ------------------------------------------------------------------------------


def tile_at(grid: NeuronGrid, k: int) -> np.ndarray:
    row, column = divmod(k, grid.columns)
    tile_w, tile_h = grid.tile
    top, left = row * (tile_h + grid.gutter), column * (tile_w + grid.gutter)
    return grid.image[top:top + tile_h, left:left + tile_w]


def test_dead_rectifiers_are_counted_and_drawn_grey():
    model = build_model(Recipe(arch=(6,), activation="relu"))
    with torch.no_grad():
        # units 0-3 are ramps that fire somewhere in [0, 1]^2; units 4 and 5 never fire
        model.layers[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1], [-1, 0], [0, 0], [0, 0]]))
        model.layers[0].bias.copy_(torch.tensor([0.0, 0, -0.5, 1, -5, -5]))
    maps = layer_maps(model, 8, 10, 1, "cpu")
    assert (maps[4:] == 0).all()
    grid = neuron_grid(maps, layer=1, layers=1)
    assert grid.constant == 2 and grid.units == 6
    for k in range(6):
        grey = (tile_at(grid, k) == CONSTANT_RGB).all()
        assert grey == (k >= 4), k


def test_constant_tolerance_is_relative_and_absolute():
    ramp = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    maps = np.stack([
        np.zeros_like(ramp),  # a dead rectifier
        3.0 + 1e-5 * ramp,  # saturated: varies by a millionth of its size
        1e-9 * ramp,  # tiny everywhere (a sigmoid deep in saturation)
        1e-3 * ramp,  # small but a real shape
        3.0 + 0.1 * ramp,
        -ramp,
    ])
    assert constant_units(maps).tolist() == [True, True, True, False, False, False]
    assert neuron_grid(maps, layer=1, layers=1).constant == 3


# -- layout and colours --------------------------------------------------------------------------


def test_tile_keeps_the_aspect_ratio():
    assert tile_shape(429, 300, 64) == (45, 64)  # portrait: height is the longest side
    assert tile_shape(256, 512, 64) == (64, 32)
    assert tile_shape(10, 10, 16) == (16, 16)
    assert tile_shape(1, 1000, 64) == (64, 1)  # never a zero-pixel side


@pytest.mark.parametrize("units", [1, 2, 3, 8, 37, 300])
@pytest.mark.parametrize("tile", [(64, 64), (64, 32), (45, 64)])
def test_grid_is_the_closest_to_16_by_10(units, tile):
    columns, rows = grid_layout(units, tile, GUTTER)
    assert rows == math.ceil(units / columns) and (rows - 1) * columns < units  # no empty row

    def aspect(c):
        r = math.ceil(units / c)
        return (c * tile[0] + (c - 1) * GUTTER) / (r * tile[1] + (r - 1) * GUTTER)

    best = min(abs(math.log(aspect(c) / 1.6)) for c in range(1, units + 1))
    assert abs(math.log(aspect(columns) / 1.6)) == pytest.approx(best)


def test_300_square_tiles_make_a_22_by_14_grid():
    assert grid_layout(300, (64, 64), 2) == (22, 14)  # 1450x922 px, 1.57:1


def test_grid_is_row_major_with_gutters_and_diverging_colours():
    units, tile_h, tile_w = 11, 6, 9
    ramp = np.linspace(0.5, 1.0, tile_h * tile_w, dtype=np.float32).reshape(tile_h, tile_w)
    maps = np.stack([ramp * (k + 1) * (1 if k % 2 else -1) for k in range(units)])  # odd units positive
    grid = neuron_grid(maps, layer=3, layers=4, epoch=7)
    columns, rows = grid.columns, grid.rows
    assert (columns, rows) == grid_layout(units, (tile_w, tile_h), GUTTER)
    assert grid.image.shape == (rows * tile_h + (rows - 1) * GUTTER, columns * tile_w + (columns - 1) * GUTTER, 3)
    assert grid.image.dtype == np.uint8 and grid.tile == (tile_w, tile_h) and grid.constant == 0

    cmap = colormaps["RdBu_r"]
    reddest = np.round(np.array(cmap(1.0)[:3]) * 255)
    bluest = np.round(np.array(cmap(0.0)[:3]) * 255)
    for k in range(units):
        tile = tile_at(grid, k).astype(int)
        red_minus_blue = tile[..., 0].mean() - tile[..., 2].mean()
        assert (red_minus_blue > 0) == (k % 2 == 1), k
        # each unit scaled to its own largest |value|: the largest pixel takes the map's end colour
        np.testing.assert_array_equal(tile[-1, -1], reddest if k % 2 else bluest)
    # gutters and the empty cells of the last row are background
    image = grid.image
    assert (image[tile_h:tile_h + GUTTER] == BACKGROUND_RGB).all()
    assert (image[:, tile_w:tile_w + GUTTER] == BACKGROUND_RGB).all()
    last_row_top = (rows - 1) * (tile_h + GUTTER)
    first_empty = units - (rows - 1) * columns
    if first_empty < columns:
        assert (image[last_row_top:, first_empty * (tile_w + GUTTER):] == BACKGROUND_RGB).all()
    assert grid.summary == "layer 3 of 4: 11 units, 0 constant · epoch 7"


def test_zero_is_the_colour_maps_centre():
    maps = np.array([[[-2.0, 0.0, 1.0]]], dtype=np.float32)  # one unit, one row of three pixels
    tile = neuron_grid(maps, layer=1, layers=1).image[0]
    cmap = colormaps["RdBu_r"]
    for pixel, where in zip(tile, (0.0, 0.5, 0.75)):
        np.testing.assert_allclose(pixel, np.array(cmap(where)[:3]) * 255, atol=3)  # 255 steps: within one


# -- the command on a tiny run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch of a 2x8 network on the astronaut shrunk to 12x10 (read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("neurons") / "run"
    train_run(load_target("astronaut", size=(12, 10)), Recipe(arch=(8, 8), epochs=1), out, engine="batched",
              quiet=True)
    return out


def test_cli_writes_the_grid_and_prints_the_summary(tiny_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    before = snapshot(tiny_run)
    status, printed, err = run_cli(["neurons", str(tiny_run), "--layer", "2", "--out", str(out)], capsys)
    assert status == 0 and err == ""
    # the count by the module's rule (RTOL, ATOL) over maps from the hand-written forward
    run = RunDirectory.open(tiny_run)
    model = build_model(run.recipe())
    model.load_state_dict(run.checkpoint()["model"])
    units, _ = reference_layers(model, run.recipe(), reference_grid(53, 64))  # 12x10 image: 64x53 tiles
    flat = units[2].T.numpy()
    constant = int((flat.max(1) - flat.min(1) <= 1e-6 + 1e-3 * np.abs(flat).max(1)).sum())
    silent = int((flat.max(1) <= 0).sum())  # leaky rectifiers that are negative at every pixel
    assert printed.splitlines() == [str(out),
                                    f"layer 2 of 2: 8 units, {constant} constant, {silent} never fire · epoch 1"]
    grid = run_neurons(tiny_run, 2)
    assert (grid.tile, grid.units, grid.layers, grid.epoch) == ((64, 53), 8, 2, 1)
    with Image.open(out) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    # the grid on top, enlarged by a whole factor to fit its caption, the caption strip below
    k = pixels.shape[1] // grid.image.shape[1]
    assert pixels.shape[1] == k * grid.image.shape[1] and pixels.shape[0] > k * grid.image.shape[0]
    np.testing.assert_array_equal(pixels[:k * grid.image.shape[0]], grid.image.repeat(k, 0).repeat(k, 1))
    assert snapshot(tiny_run) == before  # --out elsewhere: the run is untouched


def test_cli_default_output_in_the_run_and_the_encoding_layer(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    status, printed, _ = run_cli(["neurons", str(run), "--layer", "0", "--tile", "16"], capsys)
    assert status == 0
    assert printed.splitlines() == [str(run / "neurons-layer0.png"), "layer 0 of 2 (the encoding): 2 features, "
                                                                     "0 constant · epoch 1"]
    assert (run / "neurons-layer0.png").is_file()
    status, printed, _ = run_cli(["neurons", str(run)], capsys)  # --layer 1 by default
    assert status == 0 and printed.splitlines()[0] == str(run / "neurons-layer1.png")


@pytest.fixture
def no_checkpoint(tiny_run, tmp_path):
    run = tmp_path / "fresh"
    shutil.copytree(tiny_run, run)
    (run / "checkpoint.pt").unlink()
    return run


MISTAKES = {
    "layer past the last": (["--layer", "3"], "layer 3 is out of range: '{run}' has hidden layers 1-2 "
                                              "(0 is the encoding)"),
    "negative layer": (["--layer", "-1"], "layer -1 is out of range"),
    "layer not a number": (["--layer", "two"], "--layer"),
    "zero tile": (["--tile", "0"], "--tile"),
    "not a png": (["--out", "{tmp}/grid.jpg"], "must end in .png"),
    "huge tiles": (["--tile", "100000"], "choose a smaller --tile"),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_cli_mistakes_are_one_line(name, tiny_run, tmp_path, capsys):
    flags, words = MISTAKES[name]
    before = snapshot(tiny_run)
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    status, _, err = run_cli(["neurons", str(tiny_run), *flags], capsys)
    assert status == 2
    assert words.format(run=tiny_run) in assert_one_line_error(err)
    assert snapshot(tiny_run) == before and not list(tmp_path.iterdir())


def test_cli_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("mine\n")
    status, _, err = run_cli(["neurons", str(tmp_path)], capsys)
    assert status == 2 and "is not a monalisa run directory" in assert_one_line_error(err)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_cli_on_a_run_without_a_checkpoint(no_checkpoint, capsys):
    status, _, err = run_cli(["neurons", str(no_checkpoint)], capsys)
    assert status == 2
    assert assert_one_line_error(err) == (f"monalisa: error: {str(no_checkpoint)!r} has no checkpoint yet: "
                                          "wait for its first epoch")


def test_silent_units_are_counted_for_rectifier_layers_only():
    maps = np.stack([np.full((4, 4), -1.0), np.linspace(-2, -1, 16).reshape(4, 4),
                     np.linspace(-1, 1, 16).reshape(4, 4), np.zeros((4, 4))]).astype(np.float32)
    grid = neuron_grid(maps, layer=1, layers=1, rectifier=True)
    assert grid.silent == 3  # the constant -1, the all-negative ramp, the all-zero unit; not the one crossing 0
    assert grid.summary == "layer 1 of 1: 4 units, 2 constant, 3 never fire"
    assert grid.ranges == ((-1.0, -1.0), (-2.0, -1.0), (-1.0, 1.0), (0.0, 0.0))  # each unit's (min, max)
    assert neuron_grid(maps, layer=1, layers=1).silent is None


# -- the legend and the animation over the run's snapshots ----------------------------------------


def test_the_picture_has_a_colour_legend_between_grid_and_caption():
    maps = np.stack([np.linspace(-1, 1, 64).reshape(8, 8)] * 3).astype(np.float32)
    grid = neuron_grid(maps, layer=1, layers=1)
    picture = neurons.grid_picture(grid)
    k = math.ceil(neurons.MIN_HEIGHT / grid.image.shape[0])
    below = picture[k * grid.image.shape[0]:]  # the legend, then the caption strip
    lut = (colormaps["RdBu_r"](np.linspace(0, 1, 255))[:, :3] * 255).round().astype(int)
    legend_rows = [row for row in below if (np.abs(row[:, None, :].astype(int) - lut[0]).sum(2) <= 3).any()]
    assert legend_rows, "no row of the legend holds the colour map's -peak blue"
    row = legend_rows[len(legend_rows) // 2].astype(int)
    assert np.abs(row - lut[-1]).sum(1).min() <= 3  # and its +peak red
    assert np.abs(row - CONSTANT_RGB).sum(1).min() == 0  # and the grey of a constant unit
    np.testing.assert_array_equal(picture[:k * grid.image.shape[0]], grid.image.repeat(k, 0).repeat(k, 1))


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    """Six epochs of a 2x6 network: snapshots at epochs 0, 1, 2, 3, 5 and the last, 6."""
    out = tmp_path_factory.mktemp("snapshots") / "run"
    train_run(load_target("astronaut", size=(12, 10)), Recipe(arch=(6, 6), epochs=6), out, quiet=True)
    return out


def test_cli_animates_a_layer_over_the_snapshots(snapshot_run, tmp_path, capsys):
    before = snapshot(snapshot_run)
    out = tmp_path / "layer2.gif"
    printed = run_cli(["neurons", str(snapshot_run), "--layer", "2", "--animate", "--tile", "16", "--out", str(out)],
                      capsys)[1].splitlines()
    assert printed == [str(out), str(tmp_path / "layer2.mp4"), "layer 2 at epochs 0, 1, 2, 3, 5, 6"]
    assert snapshot(snapshot_run) == before  # --out elsewhere: the run is untouched
    # The reference frame: the first snapshot is the recipe's initial network, in float16.
    run = RunDirectory.open(snapshot_run)
    model = build_model(run.recipe())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    size = tile_shape(run.info()["height"], run.info()["width"], 16)  # (width, height)
    maps = layer_maps(model, size[1], size[0], 2, "cpu")
    first = neurons.grid_picture(neuron_grid(maps, layer=2, layers=2, epoch=0, rectifier=True))
    with Image.open(out) as gif:
        assert gif.n_frames == 6 and gif.size == (first.shape[1], first.shape[0])
        shown = np.asarray(gif.convert("RGB")).astype(int)
    assert np.abs(shown - first).mean() < 6  # GIF's 256-colour palette, dithered
    assert (tmp_path / "layer2.mp4").stat().st_size > 0


def test_animate_without_snapshots_is_one_line(snapshot_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(snapshot_run, run)
    shutil.rmtree(run / "snapshots")
    status, _, err = run_cli(["neurons", str(run), "--animate"], capsys)
    assert status == 2 and "has no weight snapshots" in assert_one_line_error(err)
    status, _, err = run_cli(["neurons", str(snapshot_run), "--animate", "--out", str(tmp_path / "x.png")], capsys)
    assert status == 2 and "must end in .gif or .mp4" in assert_one_line_error(err)


@pytest.mark.parametrize("how,words", [("truncated-snapshot", "truncated or not a NumPy archive"),
                                       ("wrong-shape-snapshot", "layers.0.weight: a float16 array of shape (8, 3), "
                                                                "not float16 of (6, 2)")])
def test_animate_names_the_damaged_snapshot(snapshot_run, tmp_path, capsys, how, words):
    """A damaged snapshot is one line naming that snapshot, not the run's checkpoint.pt (whose weights
    the snapshot's were once wrongly blamed on). Under a memory cap, with lying headers too: test_run_safety."""
    run = tmp_path / "run"
    shutil.copytree(snapshot_run, run)
    craft(run, how)
    status, _, err = run_cli(["neurons", str(run), "--animate", "--out", str(tmp_path / "n.gif")], capsys)
    line = assert_one_line_error(err)
    assert status == 2 and f"{str(run / 'snapshots' / 'epoch-00000.npz')!r} cannot be read" in line
    assert words in line and "checkpoint.pt" not in line
    assert not (tmp_path / "n.gif").exists()
