"""The `monalisa` command: every user mistake is one line and exit status 2, and a tiny run writes a full run directory.

Runs the CLI in-process (``monalisa.cli.main``) except once, where the console
script proves that nothing but that one line reaches stderr. The figures in
metrics.csv are checked against a plain numpy computation over the saved
weights, not against the code's own metric function.
"""

import argparse
import contextlib
import csv
import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, snapshot, write_png
from PIL import Image

from monalisa.cli import build_parser, main, recipe_from_args
from monalisa.data.images import BUILTIN_IMAGES
from monalisa.models.network import build_model
from monalisa.recipes.recipe import PRESETS, Recipe
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, INITS, OPTIMIZERS, OUTPUTS, SCHEDULES
from monalisa.runs.recorder import frame_wanted

WIDTH, HEIGHT = 12, 10


# -- user mistakes ------------------------------------------------------------------------------


@pytest.fixture
def workspace(workspace):
    """conftest's workspace holding a small PNG and the odd files users pass by mistake; the cwd an empty folder."""
    tmp_path = workspace
    write_png(tmp_path / "tiny.png", 8, 6)
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not a picture\n")
    (tmp_path / "typo.toml").write_text("epoch = 3\n")
    (tmp_path / "twice.json").write_text('{"epochs": 3, "epochs": 500}')
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "something.txt").write_text("mine\n")
    return tmp_path


MISTAKES = {
    # name: (arguments with {d} for the workspace, a word the message must contain)
    "missing image": (["train", "{d}/nothere.png"], "does not exist"),
    "directory": (["train", "{d}/a-folder"], "is a directory"),
    "empty file": (["train", "{d}/empty.png"], "is empty"),
    "not an image": (["train", "{d}/notes.png"], "not an image"),
    "unknown preset": (["train", "{d}/tiny.png", "--preset", "orignal"], "orignal"),
    "unknown activation": (["train", "{d}/tiny.png", "--activation", "swish"],
                           f"unknown activation 'swish'; choose one of: {', '.join(ACTIVATIONS.names())}"),
    "unknown per-layer activation": (["train", "{d}/tiny.png", "--arch", "2x8", "--activation", "tanh", "--activation",
                                      "swish"], "unknown activation 'swish'"),
    "unknown encoding": (["train", "{d}/tiny.png", "--encoding", "fourrier"],
                         f"unknown encoding 'fourrier'; choose one of: {', '.join(ENCODINGS.names())}"),
    "unknown init": (["train", "{d}/tiny.png", "--init", "xavier"],
                     f"unknown init 'xavier'; choose one of: {', '.join(INITS.names())}"),
    "unknown optimizer": (["train", "{d}/tiny.png", "--optimizer", "adamw"],
                          f"unknown optimizer 'adamw'; choose one of: {', '.join(OPTIMIZERS.names())}"),
    "unknown schedule": (["train", "{d}/tiny.png", "--schedule", "linear"],
                         f"unknown schedule 'linear'; choose one of: {', '.join(SCHEDULES.names())}"),
    "unknown output": (["train", "{d}/tiny.png", "--output", "tanh"],
                       f"unknown output 'tanh'; choose one of: {', '.join(OUTPUTS.names())}"),
    "unknown option": (["train", "{d}/tiny.png", "--activation", "sine:omegaa=3"],
                       "unknown option 'omegaa' for activation 'sine'; valid options: omega, first_omega"),
    "option without a value": (["train", "{d}/tiny.png", "--activation", "leaky_relu:slope"], "slope"),
    "option of the wrong type": (["train", "{d}/tiny.png", "--encoding", "hashgrid:levels=abc"], "levels"),
    "too few activations": (["train", "{d}/tiny.png", "--arch", "3x8", "--activation", "tanh", "--activation", "relu"],
                            "2 activations given for 3 hidden layers"),
    "old flag --slope": (["train", "{d}/tiny.png", "--slope", "0.02"], "--slope"),
    "old flag --init-scale": (["train", "{d}/tiny.png", "--init-scale", "0.6"], "--init-scale"),
    "old flag --momentum": (["train", "{d}/tiny.png", "--momentum", "0.5"], "--momentum"),
    "arch 4x": (["train", "{d}/tiny.png", "--arch", "4x"], "--arch"),
    "arch abc": (["train", "{d}/tiny.png", "--arch", "abc"], "--arch"),
    "arch 0x300": (["train", "{d}/tiny.png", "--arch", "0x300"], "--arch"),
    "epochs 0": (["train", "{d}/tiny.png", "--epochs", "0"], "--epochs"),
    "epochs -3": (["train", "{d}/tiny.png", "--epochs", "-3"], "--epochs"),
    "epochs 2.5": (["train", "{d}/tiny.png", "--epochs", "2.5"], "--epochs"),
    "size 10": (["train", "{d}/tiny.png", "--size", "10"], "--size"),
    "scale 0": (["train", "{d}/tiny.png", "--scale", "0"], "--scale"),
    "unknown built-in": (["train", "astronot"], "astronot"),
    "recipe unknown key": (["train", "{d}/tiny.png", "--recipe", "{d}/typo.toml"], "unknown recipe key 'epoch'"),
    "recipe missing": (["train", "{d}/tiny.png", "--recipe", "{d}/nothere.toml"], "does not exist"),
    "preset and recipe": (["train", "{d}/tiny.png", "--preset", "quick", "--recipe", "{d}/typo.toml"], "not both"),
    "size and scale": (["train", "{d}/tiny.png", "--size", "4x3", "--scale", "0.5"], "not both"),
    "lr 0": (["train", "{d}/tiny.png", "--lr", "0"], "--lr"),
    "encoding-lr 0": (["train", "{d}/tiny.png", "--encoding-lr", "0"], "--encoding-lr"),
    "until-psnr -1": (["train", "{d}/tiny.png", "--until-psnr", "-1"], "--until-psnr"),
    "time-limit abc": (["train", "{d}/tiny.png", "--time-limit", "abc"], "--time-limit"),
    # Fails today with a ValueError traceback from torch.optim.SGD: option values are not range-checked.
    "negative momentum": (["train", "{d}/tiny.png", "--optimizer", "momentum:momentum=-1"], "momentum"),
    "unknown device": (["train", "{d}/tiny.png", "--device", "tpu"], "tpu"),
    "unknown frames": (["train", "{d}/tiny.png", "--frames", "some"], "some"),
    "online engine with adam": (["train", "{d}/tiny.png", "--engine", "online", "--optimizer", "adam"], "online"),
    "online engine with an encoding": (["train", "{d}/tiny.png", "--engine", "online", "--encoding", "fourier"],
                                       "--engine online cannot run this recipe"),
    "negative seed": (["train", "{d}/tiny.png", "--seed", "-1"], "seed"),
    "seed past 2**64 - 1": (["train", "{d}/tiny.png", "--seed", str(2**64)], "from 0 to 2**64 - 1"),
    "a 60 KB activation": (["train", "{d}/tiny.png", "--activation", "x" * 60_000], "(60,000 characters)"),
    "a look-alike letter": (["train", "{d}/tiny.png", "--activation", "l\u0435aky_relu"],
                            "non-ASCII character 'е' (U+0435 CYRILLIC SMALL LETTER IE) at position 2; did you mean "
                            "'leaky_relu'?"),
    "a JSON recipe giving a key twice": (["train", "{d}/tiny.png", "--recipe", "{d}/twice.json"],
                                         "the key 'epochs' is given twice"),
    "no command": ([], "required"),
    "unknown command": (["fly"], "fly"),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_user_mistake_is_one_line_and_writes_nothing(name, workspace, capsys):
    argv, word = MISTAKES[name]
    out = workspace / "run"
    argv = [a.format(d=workspace) for a in argv]
    if argv[:1] == ["train"]:
        argv += ["--out", str(out), "--quiet"]
    before = snapshot(workspace)
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = assert_one_line_error(captured.err)
    assert word in line
    assert len(line) < 500  # a value the user gave is quoted as a short prefix, never echoed whole
    assert captured.out == ""
    assert not out.exists()
    assert snapshot(workspace) == before  # no runs/ in the cwd, nothing touched


# -- flags -> recipe ----------------------------------------------------------------------------


def recipe_of(argv: list[str]) -> Recipe:
    return recipe_from_args(build_parser().parse_args(["train", "x.png", *argv]))[0]


def test_seeds_take_the_generators_whole_range():
    from monalisa.cli import seeds_type

    top = 2**64 - 1  # numpy's default_rng and torch's manual_seed both take it, torch nothing above
    assert recipe_of(["--seed", str(top)]).seed == top
    assert seeds_type(f"0,{top}") == (0, top)
    with pytest.raises(argparse.ArgumentTypeError, match=r"each from 0 to 2\*\*64 - 1; got '0,1e3'"):
        seeds_type("0,1e3")


def test_every_recipe_flag_reaches_its_field():
    argv = ["--arch", "2x8", "--activation", "tanh", "--activation", "sine:omega=3", "--output", "sigmoid",
            "--encoding", "positional:octaves=2", "--residual", "--init", "torch", "--optimizer", "adam:beta2=0.99",
            "--lr", "0.01", "--encoding-lr", "0.5", "--schedule", "cosine:warmup=0.1", "--batch-size", "4",
            "--order", "scan", "--epochs", "1", "--until-psnr", "90", "--time-limit", "100", "--seed", "3"]
    expected = Recipe(arch=(8, 8), activation=("tanh", "sine:omega=3"), output="sigmoid",
                      encoding="positional:octaves=2", residual=True, init="torch", optimizer="adam:beta2=0.99",
                      lr=0.01, encoding_lr=0.5, schedule="cosine:warmup=0.1", batch_size=4, order="scan", epochs=1,
                      until_psnr=90.0, time_limit=100.0, seed=3)
    recipe = recipe_of(argv)
    assert recipe == expected
    quick = recipe_of([])
    assert quick == Recipe(epochs=30)  # the default preset
    changed = {name for name in expected.to_dict() if getattr(expected, name) != getattr(quick, name)}
    assert changed == set(expected.to_dict())  # the flags above set every field


def test_activation_flag_once_sets_every_layer_and_specs_keep_their_options():
    recipe = recipe_of(["--arch", "3x8", "--activation", "leaky_relu:slope=0.02"])
    assert recipe.activation == "leaky_relu:slope=0.02"
    assert recipe.layer_activations() == ("leaky_relu:slope=0.02",) * 3
    assert recipe_of(["--activation", "tanh", "--activation", "tanh", "--arch", "2x8"]).activation == "tanh"
    assert recipe_of(["--init", "original:scale=0.6"]).init == "original:scale=0.6"
    assert recipe_of(["--optimizer", "momentum:momentum=0.5"]).optimizer == "momentum:momentum=0.5"


def test_flags_override_a_recipe_file(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('residual = true\nactivation = ["tanh", "relu"]\narch = "2x8"\nschedule = "step"\n')
    from_file = recipe_of(["--recipe", str(path)])
    assert (from_file.residual, from_file.activation, from_file.schedule) == (True, ("tanh", "relu"), "step")
    overridden = recipe_of(["--recipe", str(path), "--no-residual", "--activation", "sine", "--schedule", "constant"])
    assert (overridden.residual, overridden.activation, overridden.schedule) == (False, "sine", "constant")
    assert overridden.arch == (8, 8)  # the file's, untouched


@pytest.mark.parametrize("preset", ["siren", "fourier", "hashgrid", "fast", "rprop-sigmoid"])
def test_new_presets_are_offered(preset):
    assert recipe_of(["--preset", preset]) == PRESETS[preset]


def test_resume_on_a_folder_that_is_not_a_run(workspace, capsys):
    before = snapshot(workspace)
    assert main(["train", "--resume", str(workspace / "not-a-run"), "--quiet"]) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "is not a monalisa run directory" in line
    assert snapshot(workspace) == before


def test_resume_on_a_missing_folder(workspace, capsys):
    assert main(["train", "--resume", str(workspace / "gone"), "--quiet"]) == 2
    assert "is not a monalisa run directory" in assert_one_line_error(capsys.readouterr().err)
    assert not (workspace / "gone").exists()


def test_resume_with_a_recipe_flag(workspace, capsys):
    before = snapshot(workspace)
    assert main(["train", "--resume", str(workspace / "not-a-run"), "--arch", "2x8"]) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "drop --arch" in line
    assert snapshot(workspace) == before


def test_out_that_already_holds_files_is_left_alone(workspace, capsys):
    out = workspace / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    (out / "frames").mkdir()
    (out / "frames" / "epoch-00001.png").write_bytes(b"old frame")
    before = snapshot(out)
    argv = ["train", str(workspace / "tiny.png"), "--arch", "2x8", "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "already exists" in line and str(out) in line
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["frames", "keep.txt"]


def test_console_script_prints_no_traceback(tmp_path):
    """The one out-of-process check: the installed entry point, a file that only fails once Pillow reads it."""
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture\n")
    out = tmp_path / "run"
    script = Path(sys.executable).parent / "monalisa"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monalisa.cli"]
    done = subprocess.run(
        [*command, "train", str(notes), "--arch", "2x8", "--epochs", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert done.returncode == 2
    line = assert_one_line_error(done.stderr)
    assert line == (
        f"monalisa: error: {str(notes)!r} is not an image Pillow can read; give a PNG, JPEG or other image file"
    )
    assert done.stdout == ""
    assert not out.exists() and not (tmp_path / "runs").exists()


# -- the images command -------------------------------------------------------------------------


def test_images_lists_the_builtin_images(capsys):
    assert main(["images"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(BUILTIN_IMAGES)
    astronaut = next(line for line in lines if line.split()[0] == "astronaut")
    assert astronaut.split()[1:] == ["512x512", "RGB", "scikit-image"]


def test_images_into_a_closed_pipe_stops_quietly(tmp_path):
    """`monalisa images | head -1`: the reader is gone before the list is written; no traceback."""
    script = Path(sys.executable).parent / "monalisa"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monalisa.cli"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before anything is written: every write fails, deterministically
    try:
        done = subprocess.run([*command, "images"], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141  # 128 + SIGPIPE, as a shell reports `head` closing on a tool


# -- a tiny successful run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One 2-epoch run of a 2x8 network on a 12x10 PNG, shared by the tests below (read-only)."""
    root = tmp_path_factory.mktemp("tiny-run")
    pixels = write_png(root / "tiny.png", WIDTH, HEIGHT, seed=1)
    out = root / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["train", str(root / "tiny.png"), "--arch", "2x8", "--epochs", "2", "--out", str(out), "--quiet"])
    assert status == 0
    return out, pixels, stdout.getvalue()


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_run_directory_holds_every_file(tiny_run):
    out, _, printed = tiny_run
    for name in ("recipe.json", "run.json", "metrics.csv", "final.png", "learning.gif", "learning.mp4",
                 "curves.png", "checkpoint.pt", "target.npy", "target.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["epoch-00001.png", "epoch-00002.png"]
    for frame in (out / "frames").iterdir():
        with Image.open(frame) as image:
            assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    assert (out / "final.png").read_bytes() == (out / "frames" / "epoch-00002.png").read_bytes()
    with Image.open(out / "learning.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 2
    assert (out / "learning.mp4").read_bytes()[4:8] == b"ftyp"
    with Image.open(out / "curves.png") as curves:
        assert curves.format == "PNG"
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind
    assert printed.startswith(f"{out}: 2 epochs, PSNR ")


def test_run_records_the_recipe_and_the_target(tiny_run):
    import json

    out, pixels, _ = tiny_run
    recipe = Recipe.from_dict(json.loads((out / "recipe.json").read_text()))
    assert recipe == Recipe(arch=(8, 8), epochs=2)  # the quick preset (the original, 30 epochs) with the flags
    info = json.loads((out / "run.json").read_text())
    assert (info["width"], info["height"], info["image"]) == (WIDTH, HEIGHT, "tiny")
    assert (info["status"], info["epochs_done"], info["stopped_by"]) == ("complete", 2, "epochs")
    # auto: the original's family runs on the exact online engine on the CPU, batched elsewhere
    assert info["engine"] == ("online" if info["device"] == "cpu" else "batched")
    np.testing.assert_array_equal(np.load(out / "target.npy"), pixels.astype(np.float32) / 255)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "target.png")), pixels)


def test_metrics_csv_layout(tiny_run):
    out, _, _ = tiny_run
    columns, rows = read_rows(out / "metrics.csv")
    assert columns == ["epoch", "train_seconds", "seconds", "mae", "mse", "psnr"]
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        values = {k: float(v) for k, v in row.items()}
        assert 0 < values["train_seconds"] <= values["seconds"]
        assert values["psnr"] == pytest.approx(10 * math.log10(1 / values["mse"]), rel=1e-5)
    assert float(rows[0]["seconds"]) < float(rows[1]["seconds"])


def test_metrics_and_frame_match_a_reference_computation(tiny_run):
    out, pixels, _ = tiny_run
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 2
    model = build_model(Recipe(arch=(8, 8), epochs=2))
    model.load_state_dict(checkpoint["model"])
    model.eval()
    # The coordinate convention written out by hand: (r / (H - 1), c / (W - 1)), scan order.
    coords = np.array([(r / (HEIGHT - 1), c / (WIDTH - 1)) for r in range(HEIGHT) for c in range(WIDTH)], np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(coords)).numpy().astype(np.float64)  # (H * W, 3), unclamped
    target = pixels.reshape(-1, 3).astype(np.float64) / 255
    mse = np.mean((output - target) ** 2)
    mae = np.mean(np.abs(output - target))
    _, rows = read_rows(out / "metrics.csv")
    last = rows[-1]
    assert float(last["mse"]) == pytest.approx(mse, rel=1e-4)
    assert float(last["mae"]) == pytest.approx(mae, rel=1e-4)
    assert float(last["psnr"]) == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
    # The frame: x 255, clamped, truncated (docs/original.md); one level of slack for float rounding at a boundary.
    expected = np.clip(output * 255, 0, 255).astype(np.uint8).reshape(HEIGHT, WIDTH, 3)
    frame = np.asarray(Image.open(out / "frames" / "epoch-00002.png").convert("RGB"))
    assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 1


def test_figures_are_of_the_raw_output_and_only_the_frame_is_clamped(tmp_path):
    """Large initial weights and a tiny rate: outputs well outside [0, 1], so clamping would show."""
    from monalisa import fit, load_target

    pixels = write_png(tmp_path / "t.png", 6, 5, seed=2)
    recipe = Recipe(arch=(8, 8), init="original:scale=3.0", lr=1e-6, epochs=1)
    result = fit(load_target(tmp_path / "t.png"), recipe, device="cpu")
    coords = np.array([(r / 4, c / 5) for r in range(5) for c in range(6)], np.float32)
    with torch.no_grad():
        output = result.model.eval()(torch.from_numpy(coords)).numpy().astype(np.float64)
    assert output.min() < -0.2 and output.max() > 1.2  # the premise: clamping would change the figures
    error = output - pixels.reshape(-1, 3) / 255
    row = result.final
    assert row["mse"] == pytest.approx(np.mean(error**2), rel=1e-5)
    assert row["mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-5)
    assert row["psnr"] == pytest.approx(10 * np.log10(1 / np.mean(error**2)), rel=1e-5)


def test_resume_of_a_finished_run_is_refused_untouched(tiny_run, tmp_path, capsys):
    out, _, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = snapshot(copy)
    assert main(["train", "--resume", str(copy), "--quiet"]) == 2
    assert "is complete (2 epochs, stopped by epochs)" in assert_one_line_error(capsys.readouterr().err)
    assert snapshot(copy) == before


# -- log-spaced frames --------------------------------------------------------------------------


def reference_log_schedule(last_epoch: int) -> list[int]:
    """Every epoch to 10; then the first whole epoch at or past each mark 10**(k/20); and the last."""
    marks = {math.ceil(10 ** (k / 20) - 1e-9) for k in range(20, 20 * 6)}
    return sorted(e for e in range(1, last_epoch + 1) if e <= 10 or e in marks or e == last_epoch)


def test_frame_wanted_log_schedule():
    assert [e for e in range(1, 16) if frame_wanted(e, 15, "log")] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 15]
    for last in (15, 100, 1000, 2500):
        assert [e for e in range(1, last + 1) if frame_wanted(e, last, "log")] == reference_log_schedule(last)
    wanted = [e for e in range(1, 5000) if frame_wanted(e, 5000, "log")]
    assert sum(100 <= e < 1000 for e in wanted) == 20  # ~20 a decade
    assert sum(1000 <= e < 5000 for e in wanted) == 14  # marks 10**(60/20) = 1000 ... 10**(73/20) ~ 4467
    assert all(frame_wanted(e, 7, "all") for e in range(1, 8))


def test_log_frames_run_writes_only_the_scheduled_frames(tmp_path):
    write_png(tmp_path / "tiny.png", 4, 3)
    out = tmp_path / "out"
    argv = ["train", str(tmp_path / "tiny.png"), "--arch", "2x8", "--epochs", "15", "--frames", "log",
            "--out", str(out), "--quiet"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    frames = sorted(p.name for p in (out / "frames").iterdir())
    assert frames == [f"epoch-{e:05d}.png" for e in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 15)]
    _, rows = read_rows(out / "metrics.csv")
    assert len(rows) == 15  # metrics every epoch, frames on the schedule
    assert (out / "final.png").read_bytes() == (out / "frames" / "epoch-00015.png").read_bytes()


def test_a_search_seed_past_the_samplers_range_is_one_line(workspace, capsys):
    """A search's seed also seeds Optuna's sampler, which takes 0 to 2**32 - 1 (its numpy RandomState)."""
    pytest.importorskip("ray.tune")
    out = workspace / "search"
    argv = ["search", "astronaut", "--size", "16x12", "--seed", str(2**32), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "from 0 to 2**32 - 1" in line and str(2**32) in line
    assert not out.exists()
