"""views/render.py through `monalisa render`: the network evaluated on a hand-made grid, at a scale, a size or
zoomed into a region, and every mistake refused in one line with the run left as it was."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import snapshot, tiny_target, write_png
from PIL import Image

from monalisa.cli import main
from monalisa.errors import UserError
from monalisa.models.network import build_model
from monalisa.recipes.recipe import Recipe
from monalisa.runs.directory import RunDirectory
from monalisa.training import inference
from monalisa.views.render import output_size

pytestmark = pytest.mark.usefixtures("one_thread")


WIDTH, HEIGHT = 12, 10


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-epoch 2x8 run on a 12x10 PNG (the render tests add render-*.png files to it).

    The network must vary steeply across the image, or a misplaced grid would hide under the
    one-level tolerance: a plain 2x8 rectifier net after 2 epochs is nearly flat (about 2 levels
    between neighbouring pixels). Fourier features with sigma 2, large initial weights and a
    few Adam steps keep a steep function; sigmoid outputs keep it unclipped. The steps still move it
    well away from its initialisation, so a render of the untrained network would show."""
    root = tmp_path_factory.mktemp("render")
    write_png(root / "tiny.png", WIDTH, HEIGHT, seed=4)
    out = root / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(root / "tiny.png"), "--arch", "2x8", "--epochs", "2", "--out", str(out), "--quiet",
                     "--activation", "tanh", "--encoding", "fourier:features=16,sigma=2", "--init", "original:scale=3",
                     "--output", "sigmoid", "--optimizer", "adam", "--lr", "0.02", "--batch-size", "32"]) == 0
    return out


def network_of(run: Path, trained: bool = True):
    recipe = Recipe.from_dict(json.loads((run / "recipe.json").read_text()))
    model = build_model(recipe)
    if trained:
        model.load_state_dict(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"])
    return model.eval()


def expected_image(run: Path, rows: np.ndarray, cols: np.ndarray, trained: bool = True) -> np.ndarray:
    """The network on the grid rows x cols, as a frame: x 255, clamped, truncated (docs/original.md)."""
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    with torch.no_grad():
        out = network_of(run, trained)(torch.from_numpy(grid)).numpy().astype(np.float64)
    return np.clip(out * 255, 0, 255).astype(np.uint8).reshape(len(rows), len(cols), 3)


def render(argv: list[str], capsys) -> Path:
    assert main(["render", *argv]) == 0
    printed = capsys.readouterr().out.strip()
    path = Path(printed)
    assert path.is_file(), printed
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def assert_within_one_level(image: np.ndarray, expected: np.ndarray) -> None:
    assert image.shape == expected.shape
    # The premise: neighbouring pixels differ by several levels, so a shifted grid would show.
    steps = [np.abs(np.diff(expected.astype(int), axis=axis)).mean() for axis in (0, 1)]
    assert min(steps) > 3 * 12 / max(expected.shape[:2]), steps
    # One level of slack: float rounding of a coordinate can move a value across a truncation boundary.
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1


def test_render_at_scale_3(trained_run, capsys):
    path = render([str(trained_run), "--scale", "3"], capsys)
    assert path == trained_run / f"render-{3 * WIDTH}x{3 * HEIGHT}.png"
    image = read_png(path)
    assert image.shape == (3 * HEIGHT, 3 * WIDTH, 3)
    # The same [0, 1]^2 as the training image, sampled 3x as finely: first and last rows at 0 and 1.
    rows, cols = np.arange(3 * HEIGHT) / (3 * HEIGHT - 1), np.arange(3 * WIDTH) / (3 * WIDTH - 1)
    assert_within_one_level(image, expected_image(trained_run, rows, cols))
    # The trained weights, not the recipe's initial ones: those would give a different picture.
    untrained = expected_image(trained_run, rows, cols, trained=False)
    assert np.abs(image.astype(int) - untrained.astype(int)).mean() > 5


def test_render_at_a_size(trained_run, capsys, tmp_path):
    path = render([str(trained_run), "--size", "7x5"], capsys)
    assert path == trained_run / "render-7x5.png"
    assert read_png(path).shape == (5, 7, 3)
    assert_within_one_level(read_png(path), expected_image(trained_run, np.arange(5) / 4, np.arange(7) / 6))
    elsewhere = render([str(trained_run), "--size", "7x5", "--out", str(tmp_path / "mine.png")], capsys)
    assert elsewhere == tmp_path / "mine.png"
    assert np.array_equal(read_png(elsewhere), read_png(path))


def test_render_at_scale_1_is_the_final_frame(trained_run, capsys):
    path = render([str(trained_run), "--scale", "1"], capsys)
    assert_within_one_level(read_png(path), read_png(trained_run / "final.png"))


def test_render_zoomed_into_the_centre(trained_run, capsys):
    path = render([str(trained_run), "--zoom", "4", "--center", "0.5,0.5"], capsys)
    assert path == trained_run / f"render-{4 * WIDTH}x{4 * HEIGHT}-zoom4-at0.5,0.5.png"  # --scale 4 by default
    # 1/4 of each side around the centre: [0.375, 0.625]^2.
    rows = 0.375 + 0.25 * np.arange(4 * HEIGHT) / (4 * HEIGHT - 1)
    cols = 0.375 + 0.25 * np.arange(4 * WIDTH) / (4 * WIDTH - 1)
    image = read_png(path)
    assert_within_one_level(image, expected_image(trained_run, rows, cols))
    assert not np.array_equal(image, read_png(render([str(trained_run), "--scale", "4"], capsys)))


def test_renders_at_two_centres_keep_both(trained_run, capsys):
    first = render([str(trained_run), "--zoom", "4", "--center", "0.3,0.5", "--size", "9x7"], capsys)
    second = render([str(trained_run), "--zoom", "4", "--center", "0.7,0.5", "--size", "9x7"], capsys)
    assert first == trained_run / "render-9x7-zoom4-at0.3,0.5.png"
    assert second == trained_run / "render-9x7-zoom4-at0.7,0.5.png"
    assert first.is_file() and not np.array_equal(read_png(first), read_png(second))


def test_render_zoom_near_an_edge_stays_inside_the_image(trained_run, capsys, tmp_path):
    # Centre (0, 1) with zoom 2: the half-size window is shifted to rows [0, 0.5], columns [0.5, 1].
    path = render([str(trained_run), "--zoom", "2", "--center", "0,1", "--size", "9x7", "--out",
                   str(tmp_path / "corner.png")], capsys)
    expected = expected_image(trained_run, 0.5 * np.arange(7) / 6, 0.5 + 0.5 * np.arange(9) / 8)
    assert_within_one_level(read_png(path), expected)


RENDER_MISTAKES = {
    # name: (arguments after `render RUN`, a word the message must contain)
    "size and scale": (["--size", "7x5", "--scale", "2"], "not both"),
    "zoom below 1": (["--zoom", "0.5"], "--zoom"),
    "zoom 0": (["--zoom", "0"], "--zoom"),
    "centre outside": (["--zoom", "2", "--center", "2,0"], "--center"),
    "centre one number": (["--zoom", "2", "--center", "0.5"], "--center"),
    # The centre is checked even without --zoom: a value that cannot be right must not pass silently.
    "centre outside, no zoom": (["--center", "2,0"], "--center"),
    "scale 0": (["--scale", "0"], "--scale"),
    "malformed size": (["--size", "7by5"], "--size"),
    "not a png": (["--out", "x.jpg"], ".png"),
}


@pytest.mark.parametrize("name", RENDER_MISTAKES)
def test_render_mistake_is_one_line(trained_run, capsys, name, tmp_path):
    argv, word = RENDER_MISTAKES[name]
    before = snapshot(trained_run)
    assert main(["render", str(trained_run), *[a.replace("x.jpg", str(tmp_path / "x.jpg")) for a in argv]]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("monalisa: error: ") and "Traceback" not in captured.err
    assert word in lines[0]
    assert captured.out == ""
    assert snapshot(trained_run) == before
    assert list(tmp_path.iterdir()) == []


def test_render_of_something_that_is_not_a_run(trained_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine\n")
    for path in (tmp_path, tmp_path / "gone", tmp_path / "notes.txt"):
        assert main(["render", str(path)]) == 2
        line = capsys.readouterr().err.strip()
        assert "\n" not in line and "is not a monalisa run directory" in line
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    # A run directory that has not finished an epoch has no network to render.
    fresh = tmp_path / "fresh"
    shutil.copytree(trained_run, fresh)
    (fresh / "checkpoint.pt").unlink()
    before = snapshot(fresh)
    assert main(["render", str(fresh), "--size", "4x4"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "has no checkpoint yet" in line
    assert snapshot(fresh) == before


def test_render_size_is_bounded_as_scale_is(trained_run):
    # --scale refuses more than 50 megapixels; --size asks for the same memory and must too.
    run = RunDirectory.open(trained_run)
    with pytest.raises(UserError, match="megapixels"):
        output_size(run, None, 1000.0)
    with pytest.raises(UserError, match="megapixels"):
        output_size(run, (10_000, 10_000), None)


# -----------------------------------------------------------------------------
# rendering a very wide last layer in blocks of units


def test_a_wide_last_layer_renders_in_blocks_with_forwards_result(monkeypatch):
    model = build_model(Recipe(arch=(8, 600), activation="tanh", init="torch"))
    coords = tiny_target(30, 40).coords
    whole = model(torch.from_numpy(coords)).detach().numpy()
    calls = []
    blocked = model.forward_in_unit_blocks
    monkeypatch.setattr(model, "forward_in_unit_blocks", lambda x, block: calls.append(block) or blocked(x, block))
    monkeypatch.setattr(inference, "WIDE_LAYER", 500)  # 600 units: wide
    monkeypatch.setattr(inference, "UNIT_BLOCK", 128)  # 5 blocks, the last one short
    out = inference.render(model, coords, torch.device("cpu"))
    assert calls and set(calls) == {128}
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-6)  # the output layer's sum in another order


def test_a_residual_or_stateful_last_layer_is_never_split():
    assert not build_model(Recipe(arch=(32, 32), residual=True, init="torch")).can_split_last_layer()
    assert build_model(Recipe(arch=(16, 32), residual=True, init="torch")).can_split_last_layer()  # no skip: widths differ
    model = build_model(Recipe(arch=(32,), init="torch"))
    model.activations[-1].register_buffer("per_unit", torch.ones(32))
    assert not model.can_split_last_layer()


# -----------------------------------------------------------------------------
# the render through oneDNN-packed layers, its chunks shared out among threads

PACKED_RECIPES = {
    "original": Recipe(arch=(100, 100, 100)),
    "residual tanh": Recipe(arch=(96, 96, 96), activation="tanh", residual=True, init="torch"),
    "fourier sine": Recipe(arch=(128, 128), activation="sine", encoding="fourier", init="siren", output="sigmoid"),
    "hashgrid": Recipe(arch=(16, 96, 96), activation="relu", encoding="hashgrid:levels=4,base=4", init="torch"),
}


@pytest.mark.parametrize("name", PACKED_RECIPES)
def test_the_packed_render_computes_the_networks_forward(name, monkeypatch):
    from monalisa.models import packed

    if not packed.can_pack(torch.device("cpu")):
        pytest.skip("this torch has no oneDNN")
    model = build_model(PACKED_RECIPES[name])
    coords = tiny_target(37, 29).coords
    whole = model(torch.from_numpy(coords)).detach().numpy()
    packs = []
    pack = packed.packed_network
    monkeypatch.setattr(inference, "packed_network", lambda m: packs.append(m) or pack(m))
    monkeypatch.setattr(inference, "PACKED_FLOATS", 100 * 40)  # chunks of 31-41 pixels, the last one short
    out = inference.render(model, coords, torch.device("cpu"))
    assert packs == [model]
    np.testing.assert_allclose(out, whole, rtol=0, atol=2e-6)  # sums inside each product in another order
    assert model.training  # the render's eval mode does not leak out


def test_the_render_is_the_same_on_one_thread_and_two(monkeypatch):
    """Each chunk runs on one thread whichever takes it, so the thread count never changes a bit."""
    model = build_model(Recipe(arch=(100, 100)))
    coords = tiny_target(61, 47).coords
    monkeypatch.setattr(inference, "PACKED_FLOATS", 100 * 64)
    monkeypatch.setattr(inference, "RENDER_FLOATS", 100 * 64)
    for pack in (True, False):
        monkeypatch.setattr(inference, "PACK_LAYERS", pack)
        one = inference.render(model, coords, torch.device("cpu"))
        torch.set_num_threads(2)
        try:
            two = inference.render(model, coords, torch.device("cpu"))
        finally:
            torch.set_num_threads(1)
        np.testing.assert_array_equal(one, two)


def test_a_failure_on_a_render_thread_reaches_the_caller(monkeypatch):
    model = build_model(Recipe(arch=(8, 8)))
    chunks = []

    def fail_on_the_third(x):
        chunks.append(len(x))
        if len(chunks) == 3:
            raise RuntimeError("out of memory")
        return model(x)

    monkeypatch.setattr(inference, "_forward_for_render", lambda m, device: (fail_on_the_third, 8, 8 * 10))
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            inference.render(model, tiny_target(20, 10).coords, torch.device("cpu"))
    finally:
        torch.set_num_threads(1)
    assert len(chunks) < 20  # the threads stopped taking chunks once one had failed


def test_without_onednn_the_render_runs_torchs_own_layers(monkeypatch):
    model = build_model(Recipe(arch=(100, 100)))
    monkeypatch.setattr(inference, "can_pack", lambda device: False)
    monkeypatch.setattr(inference, "packed_network", lambda m: pytest.fail("packed without oneDNN"))
    coords = tiny_target(9, 7).coords
    np.testing.assert_allclose(inference.render(model, coords, torch.device("cpu")),
                               model(torch.from_numpy(coords)).detach().numpy(), rtol=0, atol=1e-6)


def test_only_layers_wide_on_both_sides_are_packed():
    from monalisa.models.packed import PACK_FROM, PackedLinear, packed_network

    model = build_model(Recipe(arch=(PACK_FROM, PACK_FROM, PACK_FROM - 1, PACK_FROM)))
    packed = packed_network(model)
    assert [isinstance(layer, PackedLinear) for layer in packed.layers] == [False, True, False, False, False]
    assert packed.layers[0] is model.layers[0]  # thin layers are shared, not copied
    assert packed_network(build_model(Recipe(arch=(32,), encoding="hashgrid", init="torch"))) is None
