"""Red-team attacks on run directories, images, recipes and outputs (each must be refused in one line or held).

Each test is one attack that hung, leaked a file or printed a traceback before its fix. Whatever
could block (a FIFO opened for reading) runs on a thread with a deadline, and the FIFO is opened
for writing afterwards so a blocked reader gets end-of-file and the test ends either way.
"""

import io
import os
import shutil
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from monalisa import Recipe, load_target, train_run
from monalisa.data.images import load_image
from monalisa.errors import UserError
from monalisa.files import MAX_METRICS_BYTES, atomic_path
from monalisa.lab.store import RunReader, latest_frame
from monalisa.recipes.recipe import load_recipe
from monalisa.runs.directory import RunDirectory
from monalisa.views import render

DEADLINE = 20.0  # seconds: the fixed code answers at once


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "run"
    train_run(load_target("astronaut", size=(16, 12)), Recipe(arch=(8, 8), epochs=3), path, quiet=True)
    (path / ".lock").unlink(missing_ok=True)
    return path


@pytest.fixture
def run(trained, tmp_path):
    path = tmp_path / "runs" / "r1"
    shutil.copytree(trained, path)
    return path


def bounded(call, fifo=None):
    """call() on a thread; its result or exception. Fails if it does not return by DEADLINE."""
    box = {}

    def body():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    hung = thread.is_alive()
    if hung and fifo is not None:  # unblock the reader so the thread ends
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(5)
    assert not hung, f"blocked for {DEADLINE} s"
    return box


def fifo_in_place_of(path):
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def test_a_fifo_named_checkpoint_is_refused_not_waited_on(run):
    fifo = fifo_in_place_of(run / "checkpoint.pt")
    box = bounded(RunDirectory.open(run).checkpoint, fifo)
    assert isinstance(box.get("error"), UserError) and "checkpoint.pt" in str(box["error"])


def test_a_fifo_named_metrics_csv_is_refused_by_the_cli_and_the_lab(run):
    fifo = fifo_in_place_of(run / "metrics.csv")
    box = bounded(RunDirectory.open(run).metrics, fifo)
    assert isinstance(box.get("error"), UserError)
    box = bounded(lambda: RunReader(run.parent).summary(run), fifo)
    assert box["value"]["status"] == "unreadable" and "metrics.csv" in box["value"]["message"]


def test_a_fifo_named_recipe_json_does_not_hang_the_run_list(run):
    fifo = fifo_in_place_of(run / "recipe.json")
    box = bounded(lambda: RunReader(run.parent).summary(run), fifo)
    assert box["value"]["status"] == "unreadable" and "recipe.json" in box["value"]["message"]


def test_dev_zero_as_metrics_csv_is_refused_before_reading(run):
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to("/dev/zero")  # read_metrics read it until memory ran out
    box = bounded(RunDirectory.open(run).metrics)
    assert isinstance(box.get("error"), UserError) and "regular file" in str(box["error"])
    assert RunReader(run.parent).summary(run)["status"] == "unreadable"


def test_an_oversized_metrics_csv_is_not_parsed(run):
    with open(run / "metrics.csv", "r+b") as f:  # sparse: no disk, and the cap is checked on the size
        f.truncate(MAX_METRICS_BYTES + 1)
    with pytest.raises(UserError, match="bytes"):
        RunDirectory.open(run).metrics()
    assert "bytes" in RunReader(run.parent).summary(run)["message"]


def test_a_field_past_csvs_limit_marks_the_run_unreadable_not_a_500(run):
    (run / "metrics.csv").write_text("epoch,train_seconds,seconds,mae,mse,psnr\n1," + "9" * 200_000 + ",1,1,1,1\n")
    summary = RunReader(run.parent).summary(run)  # raised csv.Error out of the run list before
    assert summary["status"] == "unreadable"


def test_an_oversized_run_json_is_not_parsed(run):
    (run / "run.json").write_text('{"image": "x", "width": 16, "height": 12, "pad": "' + "x" * 2**21 + '"}')
    summary = RunReader(run.parent).summary(run)
    assert summary["status"] == "unreadable" and "run.json" in summary["message"]
    with pytest.raises(UserError, match="run.json"):
        RunDirectory.open(run).info()


def test_the_live_frame_never_serves_a_symlink_out_of_the_run(run, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    (run / "final.png").unlink()
    (run / "final.png").symlink_to(secret)  # frame.png served /etc/passwd this way
    frame = latest_frame(run)
    assert frame is not None and frame.read_bytes() != secret.read_bytes()
    for png in (run / "frames").glob("*.png"):
        png.unlink()
        png.symlink_to(secret)
    assert latest_frame(run) is None


def test_the_ending_does_not_copy_a_symlinked_frame_into_final_png(run, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    last = sorted((run / "frames").glob("*.png"))[-1]
    last.unlink()
    last.symlink_to(secret)
    (run / "final.png").unlink()
    directory = RunDirectory.open(run)
    with directory.writing(), pytest.raises(UserError, match="frames/"):
        directory.write_ending(directory.metrics(), animations=False)
    assert not (run / "final.png").exists()


def test_a_frame_of_another_size_is_one_line_not_a_traceback(run):
    frames = sorted((run / "frames").glob("*.png"))
    Image.new("RGB", (300, 200)).save(frames[1])
    directory = RunDirectory.open(run)
    with pytest.raises(UserError, match="300x200"):
        directory.captioned_frames(directory.metrics())
    frames[1].write_text("not a png")
    with pytest.raises(UserError, match="frames/"):
        directory.captioned_frames(directory.metrics())


def test_a_fifo_as_the_image_is_refused(tmp_path):
    fifo = fifo_in_place_of(tmp_path / "image.png")
    box = bounded(lambda: load_image(fifo), fifo)
    assert isinstance(box.get("error"), UserError) and "regular file" in str(box["error"])


def test_a_fifo_or_device_as_the_recipe_is_refused(tmp_path):
    fifo = fifo_in_place_of(tmp_path / "recipe.json")
    box = bounded(lambda: load_recipe(fifo), fifo)
    assert isinstance(box.get("error"), UserError)
    box = bounded(lambda: load_recipe("/dev/zero"))
    assert isinstance(box.get("error"), UserError)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_a_text_chunk_bomb_after_the_pixels_is_one_line(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    png = buffer.getvalue()
    end = png.rindex(b"IEND") - 4
    bomb = _chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"A" * 2**24, 9))  # inflates past MAX_TEXT_CHUNK
    path = tmp_path / "bomb.png"
    path.write_bytes(png[:end] + bomb + png[end:])
    with pytest.raises(UserError, match="bomb.png"):
        load_image(path)


def test_nan_in_a_float_tiff_does_not_reach_the_target(tmp_path):
    grey = np.full((6, 5), np.nan, np.float32)
    grey[0, 0], grey[1, 1] = 0.5, np.inf
    Image.fromarray(grey, mode="F").save(tmp_path / "nan.tiff")
    pixels = load_image(tmp_path / "nan.tiff")
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1


def test_an_output_never_replaces_a_fifo_or_device(tmp_path):
    fifo = fifo_in_place_of(tmp_path / "out.png")  # as --out /dev/null would, run as root
    with pytest.raises(UserError, match="not a file"):
        with atomic_path(fifo) as tmp:
            tmp.write_bytes(b"x")
    assert not fifo.is_file() and fifo.exists()
    assert not list(tmp_path.glob(".out.png.tmp-*"))


def test_renders_beyond_the_bound_are_refused_at_once(run):
    directory = RunDirectory.open(run)
    held = 0
    try:
        while render._rendering.acquire(blocking=False):
            held += 1
        assert held == render.MAX_CONCURRENT_RENDERS
        box = bounded(lambda: render.render_run(directory, 64, 48, device="cpu"))
        assert isinstance(box.get("error"), render.RenderBusy)
    finally:
        for _ in range(held):
            render._rendering.release()
    assert render.render_run(directory, 64, 48, device="cpu").shape == (48, 64, 3)


def test_the_render_grid_is_float32_and_unchanged():
    region = render.Region.zoom(3, (0.2, 0.9))
    rows, cols = np.linspace(region.top, region.bottom, 7), np.linspace(region.left, region.right, 5)
    expected = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float32)
    grid = render.region_grid(7, 5, region)
    assert grid.dtype == np.float32 and np.array_equal(grid, expected)
