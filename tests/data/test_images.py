"""load_image over the formats people actually have, the coordinate convention, resizing, and the errors.

Every image is made on the fly with Pillow in tmp_path; expected values are
written out by hand (or taken from Pillow's own conversion where the format is
lossy), never read back through monalisa.
"""

import socket

import numpy as np
import pytest
from PIL import Image

from monalisa.data.images import (
    BUILTIN_IMAGES,
    Target,
    builtin_path,
    coordinate_grid,
    load_image,
    load_target,
    parse_size,
    resize,
)
from monalisa.errors import UserError

EIGHT_BIT = 1 / 255  # one step of an 8-bit channel


def save(array, path, **kwargs):
    Image.fromarray(array).save(path, **kwargs)
    return path


def check_float_rgb(pixels, height, width):
    assert pixels.dtype == np.float32
    assert pixels.shape == (height, width, 3)
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0


# -- formats ---------------------------------------------------------------------


def test_rgb_png_is_divided_by_255_exactly(tmp_path):
    rgb = np.array([[[0, 1, 2], [255, 128, 7]], [[10, 20, 30], [254, 253, 252]]], dtype=np.uint8)
    pixels = load_image(save(rgb, tmp_path / "rgb.png"))
    check_float_rgb(pixels, 2, 2)
    np.testing.assert_array_equal(pixels, rgb.astype(np.float32) / 255)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.array([[[200, 10, 50, 0], [30, 60, 90, 255], [100, 0, 200, 128]]], dtype=np.uint8)
    pixels = load_image(save(rgba, tmp_path / "rgba.png"))
    check_float_rgb(pixels, 1, 3)
    np.testing.assert_array_equal(pixels[0, 0], [1, 1, 1])  # transparent -> white, whatever its colour
    np.testing.assert_array_equal(pixels[0, 1], np.array([30, 60, 90], np.float32) / 255)  # opaque: unchanged
    alpha = 128 / 255
    blended = (np.array([100, 0, 200]) * alpha + 255 * (1 - alpha)) / 255  # "over" a white background
    np.testing.assert_allclose(pixels[0, 2], blended, atol=EIGHT_BIT + 1e-6)
    assert pixels[0, 2, 1] > 0.45  # the green channel was 0: only white can have lifted it


def test_la_is_grey_composited_over_white(tmp_path):
    la = np.array([[[40, 0], [40, 255], [40, 64]]], dtype=np.uint8)
    pixels = load_image(save(la, tmp_path / "la.png"))
    check_float_rgb(pixels, 1, 3)
    expected = np.array([255, 40, 40 * 64 / 255 + 255 * (1 - 64 / 255)]) / 255
    np.testing.assert_allclose(pixels[0], np.repeat(expected[:, None], 3, axis=1), atol=EIGHT_BIT + 1e-6)


def test_grayscale_l_is_repeated_into_three_channels(tmp_path):
    grey = np.array([[0, 17, 255], [128, 1, 254]], dtype=np.uint8)
    pixels = load_image(save(grey, tmp_path / "grey.png"))
    check_float_rgb(pixels, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[:, :, channel], grey.astype(np.float32) / 255)


def test_one_bit_image_is_black_and_white(tmp_path):
    image = Image.new("1", (3, 1))
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "bits.png")
    pixels = load_image(tmp_path / "bits.png")
    np.testing.assert_array_equal(pixels[0, :, 0], [0, 1, 0])


PALETTE = [255, 0, 0, 0, 255, 0, 0, 0, 255, 12, 34, 56]  # red, green, blue, a dark blue-grey


def palette_image(tmp_path, name, transparency=None):
    image = Image.frombytes("P", (4, 1), bytes([0, 1, 2, 3]))
    image.putpalette(PALETTE)
    kwargs = {} if transparency is None else {"transparency": transparency}
    image.save(tmp_path / name, **kwargs)
    return tmp_path / name


def test_palette_without_transparency(tmp_path):
    pixels = load_image(palette_image(tmp_path, "p.png"))
    check_float_rgb(pixels, 1, 4)
    np.testing.assert_array_equal(pixels[0], np.array(PALETTE, np.float32).reshape(4, 3) / 255)


def test_palette_with_a_transparent_index(tmp_path):
    path = palette_image(tmp_path, "pt.png", transparency=1)  # green is the transparent entry
    assert "transparency" in Image.open(path).info  # the file really carries it
    pixels = load_image(path)
    expected = np.array(PALETTE, np.float32).reshape(4, 3) / 255
    expected[1] = 1.0  # transparent -> white
    np.testing.assert_array_equal(pixels[0], expected)


def test_sixteen_bit_grayscale_keeps_its_precision(tmp_path):
    values = np.array([[0, 1, 257 * 100, 1000], [30001, 65534, 65535, 257 * 37]], dtype=np.uint16)
    path = save(values, tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")  # really stored as 16 bits
    pixels = load_image(path)
    check_float_rgb(pixels, 2, 4)
    expected = values.astype(np.float64) / 65535  # 257 * k / 65535 == k / 255 for 8-bit-representable values
    for channel in range(3):
        np.testing.assert_allclose(pixels[:, :, channel], expected, rtol=1e-6, atol=1e-8)
    # 8-bit rounding would have turned 1 into 0 and 1000 into 4/255.
    assert pixels[0, 1, 0] > 0
    assert abs(pixels[0, 3, 0] - 4 / 255) > 1e-4


def test_cmyk_jpeg_matches_pillows_conversion(tmp_path):
    # Flat 8x8 blocks, aligned with JPEG's blocks, so compression barely moves them.
    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[:8, :8] = (0, 0, 0, 0)
    cmyk[:8, 8:] = (200, 30, 0, 10)
    cmyk[8:, :8] = (0, 180, 220, 40)
    cmyk[8:, 8:] = (20, 20, 20, 200)
    source = Image.frombytes("CMYK", (16, 16), cmyk.tobytes())
    source.save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    expected = np.asarray(source.convert("RGB"), dtype=np.float32) / 255  # before compression
    pixels = load_image(tmp_path / "cmyk.jpg")
    check_float_rgb(pixels, 16, 16)
    np.testing.assert_allclose(pixels, expected, atol=4 * EIGHT_BIT)


def test_exif_orientation_is_applied(tmp_path):
    # 2 rows x 3 columns, stored sideways: Orientation 6 means "rotate 90 degrees clockwise to view".
    stored = np.zeros((2, 3, 3), dtype=np.uint8)
    stored[0, 0] = (255, 0, 0)  # top-left
    stored[0, 2] = (0, 255, 0)  # top-right
    stored[1, 0] = (0, 0, 255)  # bottom-left
    stored[1, 2] = (10, 20, 30)  # bottom-right
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation
    image.save(tmp_path / "sideways.png", exif=exif)
    pixels = load_image(tmp_path / "sideways.png")
    assert pixels.shape == (3, 2, 3)
    # Turning clockwise puts the top-left corner at the top-right, the bottom-left at the top-left.
    np.testing.assert_array_equal(pixels[0, 1], [1, 0, 0])
    np.testing.assert_array_equal(pixels[0, 0], np.array([0, 0, 255]) / 255)
    np.testing.assert_array_equal(pixels[2, 1], [0, 1, 0])
    np.testing.assert_array_equal(pixels, np.rot90(stored, k=-1).astype(np.float32) / 255)


# -- built-in images -----------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a built-in image tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", sorted(BUILTIN_IMAGES))
def test_every_builtin_image_loads_offline(name, no_network):
    pixels = load_image(name)
    assert pixels.dtype == np.float32
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and min(pixels.shape[:2]) > 1
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    assert pixels.max() > pixels.min()  # not blank


def test_builtin_astronaut_is_the_file_divided_by_255():
    with Image.open(builtin_path("astronaut")) as image:
        expected = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    pixels = load_image("astronaut")
    assert pixels.shape == (512, 512, 3)
    np.testing.assert_array_equal(pixels, expected)


def test_an_existing_file_wins_over_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((3, 5, 3), 7, np.uint8)).save("astronaut", format="PNG")
    assert load_image("astronaut").shape == (3, 5, 3)


def test_load_target_names_and_orders_the_pixels(tmp_path):
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    target = load_target(save(rgb, tmp_path / "little.png"))
    assert target.name == "little"
    assert (target.height, target.width) == (4, 6)
    for r in range(4):
        for c in range(6):
            np.testing.assert_array_equal(target.colours[r * 6 + c], rgb[r, c] / np.float32(255))
            np.testing.assert_allclose(target.coords[r * 6 + c], [r / 3, c / 5], rtol=1e-6)
    assert load_target("astronaut", scale=1 / 64).name == "astronaut"


# -- coordinates --------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(3, 4), (5, 2), (1, 3), (4, 1)])
def test_coordinate_grid_is_row_first_in_scan_order(height, width):
    grid = coordinate_grid(height, width)
    assert grid.dtype == np.float32 and grid.shape == (height * width, 2)
    expected = [
        (r / max(height - 1, 1), c / max(width - 1, 1)) for r in range(height) for c in range(width)
    ]  # index r * W + c
    np.testing.assert_allclose(grid, np.array(expected), rtol=1e-7, atol=0)


def test_coordinate_grid_corners():
    grid = coordinate_grid(7, 9)
    np.testing.assert_array_equal(grid[0], [0, 0])
    np.testing.assert_array_equal(grid[-1], [1, 1])
    np.testing.assert_array_equal(grid[8], [0, 1])  # end of the first row: the column moves first
    np.testing.assert_array_equal(grid[9], [1 / np.float32(6), 0])  # start of the second row
    assert np.array_equal(grid[2 * 9 + 5], np.array([2 / 6, 5 / 8], np.float32))


def test_target_coords_and_colours_line_up():
    pixels = np.random.default_rng(0).random((3, 4, 3)).astype(np.float32)
    target = Target("t", pixels)
    assert target.colours.shape == (12, 3)
    np.testing.assert_array_equal(target.colours[1 * 4 + 2], pixels[1, 2])
    np.testing.assert_allclose(target.coords[1 * 4 + 2], [1 / 2, 2 / 3], rtol=1e-6)


# -- resizing -----------------------------------------------------------------------


def test_resize_to_a_size_is_width_first():
    pixels = np.random.default_rng(1).random((12, 8, 3)).astype(np.float32)  # 8 wide, 12 high
    out = resize(pixels, size=(4, 6))
    assert out.shape == (6, 4, 3) and out.dtype == np.float32


def test_resize_matches_pillow_lanczos_on_8_bit():
    rgb = (np.random.default_rng(2).random((16, 20, 3)) * 255).astype(np.uint8)
    expected = np.asarray(Image.fromarray(rgb).resize((10, 8), Image.Resampling.LANCZOS), np.float32) / 255
    out = resize(rgb.astype(np.float32) / 255, size=(10, 8))
    np.testing.assert_allclose(out, expected, atol=1.5 * EIGHT_BIT)


def test_resize_by_scale_rounds_and_keeps_at_least_one_pixel():
    pixels = np.zeros((10, 24, 3), np.float32)
    assert resize(pixels, scale=0.5).shape == (5, 12, 3)
    assert resize(pixels, scale=0.25).shape == (2, 6, 3)  # 2.5 rounds to even, 6 exactly
    assert resize(pixels, scale=0.01).shape == (1, 1, 3)
    assert resize(pixels, scale=1.5).shape == (15, 36, 3)


def test_resize_keeps_values_in_range_and_constants_constant():
    checker = (np.indices((16, 16)).sum(axis=0) % 2).astype(np.float32)[:, :, None].repeat(3, axis=2)
    out = resize(checker, size=(11, 11))  # Lanczos overshoots on a checkerboard; the result must be clipped
    assert out.min() >= 0.0 and out.max() <= 1.0
    flat = np.full((8, 8, 3), 0.3, np.float32)
    np.testing.assert_allclose(resize(flat, size=(5, 3)), 0.3, atol=1e-5)


def test_resize_to_the_same_size_is_unchanged():
    pixels = np.random.default_rng(3).random((4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(resize(pixels, size=(5, 4)), pixels)
    np.testing.assert_array_equal(resize(pixels), pixels)


def test_resize_rejects_both_size_and_scale_and_bad_scales():
    pixels = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(UserError, match=r"^give --size or --scale, not both$"):
        resize(pixels, size=(2, 2), scale=0.5)
    for scale in (0, -1.0, float("nan")):
        with pytest.raises(UserError, match=r"^--scale must be a positive number"):
            resize(pixels, scale=scale)


@pytest.mark.parametrize("text, expected", [("150x214", (150, 214)), ("10X12", (10, 12)), (" 3 x 4 ", (3, 4))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["10", "10x", "x10", "0x5", "5x0", "10x10x10", "abc", "-3x4", "", "1.5x2", "10,12"])
def test_parse_size_errors(text):
    with pytest.raises(UserError) as info:
        parse_size(text)
    assert str(info.value) == f"malformed --size {text!r}; write WIDTHxHEIGHT such as 150x214"


def test_parse_size_rejects_non_ascii_digits_as_a_user_error():
    # '²'.isdigit() is True but int('²') raises ValueError: it must still be a UserError.
    with pytest.raises(UserError):
        parse_size("²x3")


# -- errors ---------------------------------------------------------------------------


def user_error(source) -> str:
    with pytest.raises(UserError) as info:
        load_image(source)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    return message


def test_missing_file(tmp_path):
    path = tmp_path / "nothere.png"
    assert user_error(path) == (
        f"image file {str(path)!r} does not exist, and it is not a built-in image name "
        "(`monalisa images` lists those)"
    )


def test_directory(tmp_path):
    assert user_error(tmp_path) == f"{str(tmp_path)!r} is a directory; give an image file"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert user_error(path) == f"{str(path)!r} is empty; give a PNG, JPEG or other image file"


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    assert user_error(path) == f"{str(path)!r} is not an image Pillow can read; give a PNG, JPEG or other image file"


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_png(tmp_path, keep):
    whole = save((np.random.default_rng(4).random((16, 16, 3)) * 255).astype(np.uint8), tmp_path / "whole.png")
    data = whole.read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * keep)])
    message = user_error(path)
    assert message.startswith(f"cannot read image {str(path)!r}: ")
    assert "truncated" in message


def test_unknown_builtin_name():
    assert user_error("astronot") == (
        "image file 'astronot' does not exist, and it is not a built-in image name (`monalisa images` lists those)"
    )
    with pytest.raises(UserError) as info:
        builtin_path("astronot")
    assert str(info.value) == "unknown built-in image 'astronot'; `monalisa images` lists them"


@pytest.mark.parametrize("limit", [10, 40])  # 64 pixels: over 2x the limit (Pillow's error), and 1x-2x (its warning)
def test_decompression_bomb(tmp_path, monkeypatch, limit):
    path = save(np.zeros((8, 8, 3), np.uint8), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    assert user_error(path) == (
        f"{str(path)!r} has more pixels than Pillow's decompression-bomb limit ({limit}); "
        "shrink it with an image editor first"
    )
