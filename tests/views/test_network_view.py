"""views/network_view.py: the lab's network view from a run directory, against the neuron view's own pictures and layers.csv."""

import numpy as np
import pytest
from helpers import snapshot, tiny_target

from monalisa.errors import UserError
from monalisa.models.network import build_model
from monalisa.recipes.recipe import Recipe
from monalisa.runs.directory import RunDirectory
from monalisa.runs.lifecycle import train_run
from monalisa.views.network_view import layer_column, network_view, shown_units, unit_picture
from monalisa.views.neurons import GUTTER, layer_maps, neuron_grid, tile_shape

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("network") / "run"
    train_run(tiny_target(10, 12), Recipe(arch=(6, 5), epochs=3), out, quiet=True)
    return RunDirectory.open(out)


def test_wide_layers_are_sampled_evenly():
    assert shown_units(10, 48) == list(range(10))
    picked = shown_units(300, 48)
    assert len(picked) == 48 and picked[0] == 0 and picked[-1] == 299
    assert max(np.diff(picked)) - min(np.diff(picked)) <= 1  # evenly spaced


def reference(run):
    model = build_model(run.recipe())
    model.load_state_dict(run.checkpoint()["model"])
    return model


def test_the_view_lists_each_layer_with_its_units_ranges_and_dynamics(run):
    before = snapshot(run.path)
    view = network_view(run, max_units=4)
    assert snapshot(run.path) == before  # a reader writes nothing
    assert view["epoch"] == 3 and [layer["layer"] for layer in view["layers"]] == [1, 2]
    first, second = view["layers"]
    assert (first["units"], first["shown"], first["sampled"]) == (6, [0, 2, 3, 5], True)
    assert (second["units"], second["shown"], second["sampled"]) == (5, [0, 1, 3, 4], True)
    size = tile_shape(10, 12, 24)
    maps = layer_maps(reference(run), size[1], size[0], 1, "cpu")
    for unit, (low, high) in zip(first["shown"], first["ranges"]):
        assert (low, high) == pytest.approx((maps[unit].min(), maps[unit].max()))
    ends = [row for row in run.layers() if row["layer"] == 2 and row["fraction"] == 1.0]
    assert second["dynamics"]["epoch"] == [1, 2, 3]
    assert second["dynamics"]["grad_rms"] == pytest.approx([row["grad_rms"] for row in ends])
    assert network_view(run)["layers"][0]["sampled"] is False


def test_a_column_is_the_neuron_views_tiles_of_the_shown_units(run):
    column = layer_column(run, 1, max_units=4)
    width, height = tile_shape(10, 12, 24)
    maps = layer_maps(reference(run), height, width, 1, "cpu")
    full = neuron_grid(maps, layer=1, layers=2, rectifier=True, columns=1).image  # every unit, one column
    assert column.shape == (4 * height + 3 * GUTTER, width, 3)
    for row, unit in enumerate([0, 2, 3, 5]):
        mine = column[row * (height + GUTTER):row * (height + GUTTER) + height]
        np.testing.assert_array_equal(mine, full[unit * (height + GUTTER):unit * (height + GUTTER) + height])
    big = unit_picture(run, 2, 4, size=64)
    width, height = tile_shape(10, 12, 64)
    single = neuron_grid(layer_maps(reference(run), height, width, 2, "cpu")[[4]], layer=2, layers=2).image
    np.testing.assert_array_equal(big, single)


@pytest.mark.parametrize("call,words", [
    (lambda run: layer_column(run, 3), "layer 3 is out of range"),
    (lambda run: unit_picture(run, 1, 6), "unit 6 is out of range: layer 1 has units 0-5"),
])
def test_mistakes_are_one_line(run, call, words):
    with pytest.raises(UserError, match=words):
        call(run)
