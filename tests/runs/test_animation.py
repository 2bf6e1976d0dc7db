"""Tests for monalisa.animate: captions, GIF, MP4, curves and atomic writes."""

import numpy as np
import pytest
from PIL import Image

from monalisa.errors import UserError
from monalisa.files import atomic_path, save_png
from monalisa.runs.animation import caption_frame, plot_curves, subsample_indices, write_gif, write_mp4


def solid_frames(n, h=16, w=16):
    """n frames, each one flat distinct colour, so every frame survives quantization exactly."""
    return [np.full((h, w, 3), (10 * i % 256, 255 - 7 * i % 256, 100), np.uint8) for i in range(n)]


def leftovers(directory):
    """Anything an atomic writer should have cleaned up: hidden temp files."""
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


# -----------------------------------------------------------------------------
# captions


def test_caption_upscales_with_nearest_neighbour_and_adds_strip():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = caption_frame(frame, "epoch 7/300  PSNR 23.41 dB", min_height=256)
    k = 6  # smallest whole factor with 48 * k >= 256
    assert out.dtype == np.uint8 and out.shape[1] == 64 * k
    assert out.shape[0] > 48 * k  # image plus a caption strip
    # Each source pixel became a k x k block of exactly its colour.
    np.testing.assert_array_equal(out[: 48 * k], np.repeat(np.repeat(frame, k, 0), k, 1))
    r, c = 17, 40
    assert (out[r * k : (r + 1) * k, c * k : (c + 1) * k] == frame[r, c]).all()
    # The strip is dark with some light text on it.
    strip = out[48 * k :]
    assert np.median(strip) < 60
    assert (strip.min(axis=2) > 180).sum() > 50


def test_caption_never_downscales_and_size_ignores_text_length():
    frame = np.zeros((300, 200, 3), np.uint8)
    short = caption_frame(frame, "epoch 1", min_height=256)
    long = caption_frame(frame, "epoch 1 " + "and a very long caption " * 10, min_height=256)
    np.testing.assert_array_equal(short[:300], frame)
    # Frames of one run must stack into one animation whatever their captions say.
    assert short.shape == long.shape


def test_caption_rejects_non_uint8():
    with pytest.raises(ValueError):
        caption_frame(np.zeros((8, 8, 3), np.float32), "x")


# -----------------------------------------------------------------------------
# GIF


def test_subsample_keeps_first_and_last():
    idx = subsample_indices(1000, 120)
    assert len(idx) == 120 and idx[0] == 0 and idx[-1] == 999
    assert all(a < b for a, b in zip(idx, idx[1:]))
    assert subsample_indices(5, 120) == [0, 1, 2, 3, 4]


def test_gif_subsamples_loops_and_holds_last_frame(tmp_path):
    frames = solid_frames(30)
    path = tmp_path / "learning.gif"
    write_gif(frames, path, fps=10, max_frames=10, final_hold_s=1.5)

    with Image.open(path) as gif:
        assert gif.n_frames == 10
        assert gif.info["loop"] == 0  # forever
        first = np.asarray(gif.convert("RGB"))
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
        last = np.asarray(gif.convert("RGB"))
    np.testing.assert_array_equal(first, frames[0])
    np.testing.assert_array_equal(last, frames[-1])
    assert durations[0] == 100 and durations[-1] == 1500
    assert leftovers(tmp_path) == []


def test_gif_keeps_all_frames_when_few(tmp_path):
    path = tmp_path / "few.gif"
    write_gif(solid_frames(4, 9, 11), path)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (11, 9)


def test_gif_rejects_mixed_sizes_and_keeps_old_file(tmp_path):
    path = tmp_path / "learning.gif"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_gif([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)], path)
    assert path.read_bytes() == b"old"


# -----------------------------------------------------------------------------
# MP4


def test_mp4_pads_to_even_and_holds_last_frame(tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    frames = solid_frames(5, h=15, w=21)  # odd on both sides
    path = tmp_path / "learning.mp4"
    write_mp4(frames, path, fps=10, final_hold_s=0.5)

    assert path.stat().st_size > 0
    n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert n == 5 + 5  # every frame plus 0.5 s x 10 fps of the last one
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert tuple(meta["size"]) == (22, 16)  # (width, height), padded up to even
    decoded = [np.frombuffer(b, np.uint8).reshape(16, 22, 3) for b in reader]
    assert len(decoded) == 10
    # Lossy codec: colours come back close, including the edge-copied padding.
    assert np.abs(decoded[-1].astype(int) - frames[-1][0, 0]).max() < 12
    assert leftovers(tmp_path) == []


# -----------------------------------------------------------------------------
# curves


def rows(n):
    return [
        dict(epoch=e, seconds=1.5 * e, train_seconds=1.0,
             mae=0.2 / e, mse=0.05 / e**2, psnr=13 + 3 * np.log(e))
        for e in range(1, n + 1)
    ]


@pytest.mark.parametrize("n", [1, 8, 80])  # 80: past the switch to a log epoch axis
def test_plot_curves_writes_png(tmp_path, n):
    path = tmp_path / "curves.png"
    plot_curves(rows(n), path, title="test")
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.width > 600 and png.height > 400
        png.verify()
    assert leftovers(tmp_path) == []


def test_plot_curves_survives_infinite_psnr(tmp_path):
    data = rows(3)
    data[-1]["psnr"] = float("inf")  # a perfect fit
    plot_curves(data, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


# -----------------------------------------------------------------------------
# atomic writes


def test_atomic_path_replaces_on_success(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != path
        tmp.write_text("new")
        assert path.read_text() == "old"  # nothing visible until the block ends
    assert path.read_text() == "new"
    assert leftovers(tmp_path) == []


def test_atomic_path_keeps_old_file_when_write_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_path_under_a_file_names_the_path_not_the_disk(tmp_path):
    (tmp_path / "out.png").write_bytes(b"mine")
    with pytest.raises(UserError, match="a part of its folder is a file"):
        with atomic_path(tmp_path / "out.png" / "frame.png"):
            pass
    assert (tmp_path / "out.png").read_bytes() == b"mine"


def test_save_png_round_trips(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "sub" / "frame.png"  # parent is created
    save_png(pixels, path)
    with Image.open(path) as png:
        np.testing.assert_array_equal(np.asarray(png), pixels)
    assert leftovers(path.parent) == []
