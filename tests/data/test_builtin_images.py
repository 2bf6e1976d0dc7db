"""The built-in images: where each comes from, and the reference Mona Lisa that ships with monalisa."""

import fnmatch
import hashlib
import tomllib
from pathlib import Path

import numpy as np
from PIL import Image

import monalisa
from monalisa.cli import main
from monalisa.data.images import BUILTIN_IMAGES, builtin_path, load_image, load_target

# The reference image's digest, as the README ("Built-in images") gives it.
MONA_LISA_SHA256 = "8df228e63754c9135e381efd4d653f9492de9a837b02df9e657e2cafc63ae1cb"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_packaged_mona_lisa_is_the_reference_file():
    path = builtin_path("mona_lisa")
    assert path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MONA_LISA_SHA256


def test_mona_lisa_loads_as_300_by_429_rgb_floats():
    pixels = load_image("mona_lisa")
    assert pixels.shape == (429, 300, 3)  # (H, W, 3): 300 wide, 429 high
    assert pixels.dtype == np.float32
    with Image.open(builtin_path("mona_lisa")) as image:  # the reference answer: Pillow's 8-bit decode / 255
        expected = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_array_equal(pixels, expected)
    assert load_target("mona_lisa").name == "mona_lisa"


def test_mona_lisa_comes_from_monalisa_and_the_rest_from_scikit_image():
    assert BUILTIN_IMAGES["mona_lisa"].package == "monalisa.data"
    assert {b.package for name, b in BUILTIN_IMAGES.items() if name != "mona_lisa"} == {"skimage"}
    assert builtin_path("mona_lisa").parent == Path(monalisa.__file__).parent / "data"


def test_every_packaged_image_is_declared_as_package_data():
    """A non-editable install carries only what pyproject.toml's package-data names."""
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    for name, builtin in BUILTIN_IMAGES.items():
        if builtin.package.split(".")[0] == "monalisa":
            patterns = declared.get(builtin.package, [])
            assert any(fnmatch.fnmatch(builtin.file, pattern) for pattern in patterns), name


def test_images_command_lists_mona_lisa_with_its_origin(capsys):
    assert main(["images"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["mona_lisa"].split()[1:3] == ["300x429", "RGB"]
    assert "public domain" in lines["mona_lisa"]
    assert lines["astronaut"].split()[3:] == ["scikit-image"]
