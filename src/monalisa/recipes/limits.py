"""Every resource limit, named once, and the checks that apply them before anything is allocated.

A recipe, an image size or an animation is checked by arithmetic on what the user wrote: no
network, encoding or image is built to find out how big it would be (the encoding's size comes
from its registered ``size`` hook, encodings.py). Each refusal is one ``LimitError`` line that
names the limit and, where a big machine may legitimately go beyond it, how:

    --allow-large   on train, compare, study and serve (for the lab the operator sets it when
                    starting the server; no request can). It sets MONALISA_ALLOW_LARGE=1 for the
                    command's duration, so the processes it starts (compare's runs, the lab's
                    workers) inherit it.

Limits that guard against hangs rather than memory (layer count, animation frames, width, fps)
hold on every machine.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from monalisa.errors import UserError

# -- the limits -----------------------------------------------------------------------------

# Weights and biases. Training keeps each with its gradient and up to two optimiser moments
# (Adam): 16 bytes a parameter, 800 MB at the limit. The original 4x300 has 273k.
MAX_PARAMETERS = 50_000_000
# Floats one pixel makes on its way through (the encoding's output plus every hidden layer's
# width). A training batch holds batch_size x this, twice over for the backward pass; the depth
# study's 1x45450 network at the original's budget needs 45k.
MAX_ACTIVATIONS = 100_000
# Hidden layers. Each is a module and a kernel launch per step, and a plain MLP stops training
# long before 1000 deep; this one is never lifted (a 20-million-layer recipe hangs while building).
MAX_LAYERS = 1000
# Training-image pixels: 2048x2048. Each pixel costs a float32 RGB target and a float32 (row, col)
# coordinate (20 bytes, 84 MB at the limit, written once more to the run's target.npy), and one
# epoch visits every pixel.
MAX_PIXELS = 2**22
BYTES_PER_PIXEL = 3 * 4 + 2 * 4
MAX_TARGET_BYTES = MAX_PIXELS * BYTES_PER_PIXEL
# An encoding's trainable table entries (the hash grid's): 2^25 floats are 128 MB, 512 MB with
# gradient and Adam's moments; instant-ngp's largest tables (2^24 a level x 16 x 2) are GPU settings.
MAX_TABLE_ENTRIES = 2**25
# The largest learning rate: beyond it every optimiser here overflows in its first steps, and a
# rate like 1e308 turns the metrics into float overflow warnings instead of a clean divergence.
MAX_LR = 100.0
# A recipe file or the lab's recipe text: a real recipe is a few hundred bytes; this keeps a
# 20-million-layer list from being parsed at all.
MAX_RECIPE_BYTES = 2**20
# Animations (never lifted): frames are decoded and captioned in memory, all at once.
MAX_ANIMATION_FRAMES = 10_000  # 10k captioned frames of 256x300 are ~2.3 GB
MAX_ANIMATION_WIDTH = 4096  # a 4096-wide frame is 50 MB of RGB before captioning
MIN_FPS = 0.5  # GIF delays are 16-bit hundredths of a second (655 s at most); below this it is a slideshow
MAX_FPS = 120.0  # beyond any display; the MP4's final hold is round(2 s x fps) repeated frames
MAX_HOLD_FRAMES = math.ceil(2.0 * MAX_FPS)

ALLOW_LARGE_ENV = "MONALISA_ALLOW_LARGE"
HOW_TO_ALLOW = "on a machine with the memory, pass --allow-large (the lab: start `monalisa serve --allow-large`)"


class LimitError(UserError):
    """A request beyond a limit; ``field`` is the recipe field (or 'size') the lab's form marks."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def large_allowed() -> bool:
    """Whether --allow-large is in force here (the flag sets the variable; child processes inherit it)."""
    return os.environ.get(ALLOW_LARGE_ENV) == "1"


@contextmanager
def allowing_large(allow: bool = True) -> Iterator[None]:
    """Lift the memory limits while the block runs (and in the processes it starts), then restore."""
    before = os.environ.get(ALLOW_LARGE_ENV)
    if allow:
        os.environ[ALLOW_LARGE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_LARGE_ENV, None)
        else:
            os.environ[ALLOW_LARGE_ENV] = before


def _refuse(message: str, field: str | None, allow_large: bool | None) -> None:
    """Raise unless the memory limits are lifted."""
    if not (large_allowed() if allow_large is None else allow_large):
        raise LimitError(f"{message}; {HOW_TO_ALLOW}", field)


# -- recipes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeSize:
    parameters: int  # weights, biases and the encoding's trainable entries
    activations: int  # floats per pixel: the encoding's output plus every hidden width
    table_entries: int  # the encoding's trainable parameters
    encoding_features: int  # the encoding's output width


def check_recipe(recipe, pixels: int | None = None, allow_large: bool | None = None,
                 source: str | None = None) -> RecipeSize:
    """The recipe's size, refused (LimitError) past a limit; ``pixels``: the training image's, if known.

    The one check for every recipe, whether the user wrote it or it is read back from a file
    (a run's recipe.json is data from a stranger: it is checked before any network is built from it);
    ``source`` names that file, and the refusal starts with it.

    Arithmetic on the recipe alone: the arch first, then the encoding's size hook (a user's
    encoding without one is built, only once everything else has passed).
    """
    try:
        return _recipe_size(recipe, pixels, allow_large)
    except LimitError as exc:
        if source is None:
            raise
        raise LimitError(f"{source!r}: {exc}", exc.field) from None


def _recipe_size(recipe, pixels: int | None, allow_large: bool | None) -> RecipeSize:
    from monalisa.recipes.sizes import encoding_size, parameter_count

    arch = recipe.arch
    if len(arch) > MAX_LAYERS:  # Recipe refuses these too; checked here for any recipe-like object
        raise LimitError(f"arch has {len(arch):,} hidden layers; at most {MAX_LAYERS:,}", "arch")
    trunk = parameter_count(arch, 1, 3)  # a lower bound whatever the encoding's width
    if trunk > MAX_PARAMETERS:
        _refuse(f"arch {_arch(arch)} has over {trunk:,} parameters; the limit is {MAX_PARAMETERS:,}: "
                "use fewer or narrower layers", "arch", allow_large)
    hidden = sum(arch)
    if hidden > MAX_ACTIVATIONS:
        _refuse(f"arch {_arch(arch)} has {hidden:,} hidden units a pixel; the limit is {MAX_ACTIVATIONS:,}",
                "arch", allow_large)
    if pixels is not None:
        check_pixels(pixels, allow_large=allow_large)
    features, table = encoding_size(recipe.encoding)
    activations = features + hidden
    if activations > MAX_ACTIVATIONS:
        _refuse(f"encoding {recipe.encoding} gives {features:,} features and arch {_arch(arch)} {hidden:,} units: "
                f"{activations:,} floats a pixel; the limit is {MAX_ACTIVATIONS:,}", "encoding", allow_large)
    if table > MAX_TABLE_ENTRIES:
        _refuse(f"encoding {recipe.encoding} has {table:,} table entries; the limit is {MAX_TABLE_ENTRIES:,}: "
                "use fewer levels, features or a smaller table_size", "encoding", allow_large)
    parameters = table + parameter_count(arch, features, 3)
    if parameters > MAX_PARAMETERS:
        _refuse(f"arch {_arch(arch)} with encoding {recipe.encoding} has {parameters:,} parameters; the limit is "
                f"{MAX_PARAMETERS:,}: use fewer or narrower layers", "arch", allow_large)
    return RecipeSize(parameters, activations, table, features)


def _arch(arch) -> str:
    from monalisa.recipes.sizes import format_arch

    text = format_arch(tuple(arch))
    return text if len(text) <= 40 else text[:37] + "..."


# -- images -----------------------------------------------------------------------------------


def check_pixels(pixels: int, what: str = "the training image", allow_large: bool | None = None,
                 shrink: str = ": use --size or --scale to shrink it") -> None:
    """Refuse a training image of more than MAX_PIXELS pixels; ``shrink`` says how to make it smaller."""
    if pixels > MAX_PIXELS:
        _refuse(f"{what} has {pixels:,} pixels ({pixels * BYTES_PER_PIXEL / 2**20:,.0f} MB as a target); the limit "
                f"is {MAX_PIXELS:,} ({MAX_TARGET_BYTES / 2**20:,.0f} MB){shrink}", "size", allow_large)


def check_image_size(width: int, height: int, allow_large: bool | None = None) -> None:
    """A resize's output, checked before resizing."""
    check_pixels(width * height, f"a {width:,}x{height:,} image", allow_large)


# -- files read back from a run ------------------------------------------------------------------
# A checkpoint is a zip of tensors and a pickle (torch.save); torch.load sizes each tensor's buffer
# from the zip's own directory, so a reader bounds the file by what its (already checked) recipe implies.

# Weights and their optimiser state, float32: the weights and Adam's two moments measured 12 bytes a
# parameter (SGD's online engine 4); 16 leaves room for an optimiser with a third state.
CHECKPOINT_BYTES_PER_PARAMETER = 16
# A row of history (epoch, seconds, mae, mse, psnr) pickled: ~200 bytes measured.
CHECKPOINT_BYTES_PER_EPOCH = 512
# The rest: the recipe, the generator's state, buffers (a Fourier encoding's matrix is at most
# MAX_ACTIVATIONS floats), zip headers.
CHECKPOINT_SLACK_BYTES = 4 * 2**20


def checkpoint_bytes(recipe) -> int:
    """The most bytes a checkpoint of ``recipe`` holds (a recipe check_recipe has passed)."""
    return (CHECKPOINT_BYTES_PER_PARAMETER * recipe.parameter_count() + CHECKPOINT_BYTES_PER_EPOCH * recipe.epochs
            + CHECKPOINT_SLACK_BYTES)


# -- animations -------------------------------------------------------------------------------


def check_animation(width: int | None = None, fps: float | None = None, frames: int | None = None) -> None:
    """An animation's frame width, rate and frame count (never lifted: these guard against hangs)."""
    if width is not None and not 1 <= width <= MAX_ANIMATION_WIDTH:
        raise LimitError(f"--width must be 1 to {MAX_ANIMATION_WIDTH:,} pixels, got {width:,}")
    if fps is not None and not MIN_FPS <= fps <= MAX_FPS:
        raise LimitError(f"--fps must be from {MIN_FPS:g} to {MAX_FPS:g}, got {fps:g}")
    if frames is not None and not 2 <= frames <= MAX_ANIMATION_FRAMES:
        raise LimitError(f"--max-frames must be from 2 to {MAX_ANIMATION_FRAMES:,}, got {frames:,}")
