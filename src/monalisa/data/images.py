"""Images in, training targets out.

``load_image`` opens anything Pillow can (or a built-in name: the reference Mona
Lisa, or one of the gallery scikit-image ships) and returns float32 RGB in [0, 1],
shape (H, W, 3). ``Target`` turns that into the dataset: one (row, col) coordinate
and one colour per pixel.

The coordinate convention, used everywhere in monalisa (docs/original.md):
    pixel (r, c) of an H x W image  ->  input (r / (H - 1), c / (W - 1)), row first,
and pixels are listed in scan order, index r * W + c.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from monalisa.errors import UserError, quoted
from monalisa.recipes.limits import check_image_size


class BuiltinImage(NamedTuple):
    package: str  # the installed package whose files hold it
    file: str  # its path inside that package
    credit: str  # where the picture comes from, as `monalisa images` prints it


def _scikit_image(file: str) -> BuiltinImage:
    return BuiltinImage("skimage", f"data/{file}", "scikit-image")


# Built-in images: name -> where its file lies, always inside an installed wheel (no
# download). The reference Mona Lisa ships in this package (src/monalisa/data; its
# provenance and sha256 are in docs/recipes.md); the rest are the
# gallery scikit-image ships in skimage/data.
BUILTIN_IMAGES = {
    "mona_lisa": BuiltinImage("monalisa.data", "mona_lisa.jpg", "Leonardo da Vinci, public domain"),
    "astronaut": _scikit_image("astronaut.png"),
    "brick": _scikit_image("brick.png"),
    "camera": _scikit_image("camera.png"),
    "cell": _scikit_image("cell.png"),
    "chelsea": _scikit_image("chelsea.png"),
    "coffee": _scikit_image("coffee.png"),
    "coins": _scikit_image("coins.png"),
    "grass": _scikit_image("grass.png"),
    "gravel": _scikit_image("gravel.png"),
    "horse": _scikit_image("horse.png"),
    "hubble_deep_field": _scikit_image("hubble_deep_field.jpg"),
    "immunohistochemistry": _scikit_image("ihc.png"),
    "logo": _scikit_image("logo.png"),
    "microaneurysms": _scikit_image("microaneurysms.png"),
    "moon": _scikit_image("moon.png"),
    "motorcycle": _scikit_image("motorcycle_left.png"),
    "page": _scikit_image("page.png"),
    "retina": _scikit_image("retina.jpg"),
    "rocket": _scikit_image("rocket.jpg"),
    "text": _scikit_image("text.png"),
}

DEFAULT_IMAGE = "astronaut"


def builtin_path(name: str) -> Path:
    if name not in BUILTIN_IMAGES:
        raise UserError(f"unknown built-in image {quoted(name)}; `monalisa images` lists them")
    # Located without importing skimage (slow to import; we only need the file).
    package, file, _ = BUILTIN_IMAGES[name]
    return Path(str(resources.files(package) / file))


def resolve_source(source: str | Path) -> Path:
    """An existing file wins; otherwise the name must be a built-in image."""
    path = Path(source)
    if path.exists() or path.is_symlink():
        return path
    if str(source) in BUILTIN_IMAGES:
        return builtin_path(str(source))
    raise UserError(
        f"image file {str(source)!r} does not exist, and it is not a built-in image name "
        "(`monalisa images` lists those)"
    )


def load_image(source: str | Path) -> np.ndarray:
    """Float32 RGB in [0, 1], shape (H, W, 3), from a file path or a built-in name.

    EXIF orientation is applied. Transparent pixels are composited over white:
    the network learns the picture as a viewer sees it. 16-bit greyscale keeps
    its precision (divided by 65535); everything else goes through 8-bit RGB,
    divided by 255 as in the original.
    """
    path = resolve_source(source)
    if path.is_dir():
        raise UserError(f"{str(path)!r} is a directory; give an image file")
    if path.exists() and not path.is_file():  # a FIFO would block Image.open forever
        raise UserError(f"{str(path)!r} is not a regular file (a FIFO, device or socket); give an image file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; treat both as too large.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb_float(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"{str(path)!r} has more pixels than Pillow's decompression-bomb limit "
            f"({Image.MAX_IMAGE_PIXELS:,}); shrink it with an image editor first"
        ) from None
    except UnidentifiedImageError:
        size = path.stat().st_size
        what = "is empty" if size == 0 else "is not an image Pillow can read"
        raise UserError(f"{str(path)!r} {what}; give a PNG, JPEG or other image file") from None
    except PermissionError:
        raise UserError(f"cannot read {str(path)!r}: permission denied") from None
    except ValueError as exc:  # Pillow's own bounds: a text chunk that inflates past MAX_TEXT_CHUNK, a bad EXIF
        raise UserError(f"cannot read image {str(path)!r}: {str(exc)[:200]}") from None
    except OSError as exc:
        raise UserError(f"cannot read image {str(path)!r}: {exc}") from None


def _to_rgb_float(image: Image.Image) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise UserError("the image has no pixels")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0, 1)[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey = np.asarray(image, dtype=np.float32)
        # A float TIFF may hold NaN or infinity: NaN in a target trains to NaN and makes the run unreadable.
        grey = np.nan_to_num(grey, nan=0.0, posinf=0.0, neginf=0.0)
        grey = grey / 255.0 if grey.max() > 1 else grey
        return np.repeat(np.clip(grey, 0, 1)[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    return rgb / 255.0  # docs/original.md: the 8-bit channels divided by 255


def parse_size(text: str) -> tuple[int, int]:
    """'150x214' -> (150, 214), width first as image sizes are usually written."""
    parts = text.lower().split("x")
    # At most 9 digits a side, checked before int(): enough for any image, and no 10^5000 to convert.
    if (len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() and len(p.strip().lstrip("0")) <= 9
                                   for p in parts) or min(int(p) for p in parts) < 1):
        raise UserError(f"malformed --size {quoted(text)}; write WIDTHxHEIGHT such as 150x214")
    return int(parts[0]), int(parts[1])


def resize(pixels: np.ndarray, size: tuple[int, int] | None = None, scale: float | None = None) -> np.ndarray:
    """Resize (H, W, 3) floats to ``size`` = (width, height), or by ``scale``, with Lanczos filtering."""
    if size is not None and scale is not None:
        raise UserError("give --size or --scale, not both")
    height, width = pixels.shape[:2]
    if scale is not None:
        if not (scale > 0 and math.isfinite(width * scale * height * scale)):
            raise UserError(f"--scale must be a positive number, got {scale}")
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size is None or size == (width, height):
        return pixels
    check_image_size(*size)  # before Pillow allocates the output
    channels = [
        np.asarray(Image.fromarray(pixels[:, :, c], mode="F").resize(size, Image.Resampling.LANCZOS))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 1.0).astype(np.float32)


def coordinate_grid(height: int, width: int) -> np.ndarray:
    """(H * W, 2) float32: (row / (H - 1), col / (W - 1)) for every pixel in scan order."""
    rows = np.arange(height, dtype=np.float64) / max(height - 1, 1)
    cols = np.arange(width, dtype=np.float64) / max(width - 1, 1)
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)  # (H, W, 2)
    return grid.reshape(-1, 2).astype(np.float32)


@dataclass(frozen=True)
class Target:
    """One image as a dataset: ``coords[k]`` should map to ``colours[k]``, k in scan order."""

    name: str
    pixels: np.ndarray  # (H, W, 3) float32 in [0, 1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def coords(self) -> np.ndarray:
        return coordinate_grid(self.height, self.width)

    @property
    def colours(self) -> np.ndarray:
        return np.ascontiguousarray(self.pixels.reshape(-1, 3), dtype=np.float32)


def load_target(source: str | Path, size: tuple[int, int] | None = None, scale: float | None = None) -> Target:
    """Load, optionally resize, and name the image (file stem or built-in name)."""
    pixels = resize(load_image(source), size=size, scale=scale)
    name = str(source) if str(source) in BUILTIN_IMAGES and not Path(source).exists() else Path(source).stem
    return Target(name=name, pixels=pixels)
