"""Frames in, files out: captions, GIF, MP4, learning curves.

Everything here is a pure function of its arguments and knows nothing about
training; the caller hands over uint8 pixels and per-epoch numbers.

    caption_frame(frame, text) upscale a small frame and add a caption strip below it
    write_gif(frames, path)    looping GIF, evenly subsampled to at most max_frames
    write_mp4(frames, path)    H.264 MP4 of every frame (imageio-ffmpeg's bundled ffmpeg)
    plot_curves(rows, path)    2x2 PNG: PSNR and MAE against epochs and training seconds

Every writer goes through ``files.atomic_path`` so a viewer (or a crash) never
sees a half-written file: the old file stays until the new one is complete.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from monalisa.files import PathLike, atomic_path, check_uint8_image
from monalisa.recipes.limits import MAX_ANIMATION_FRAMES, MAX_HOLD_FRAMES, check_animation

# Caption strip colours: dark grey rather than black so the strip reads as a
# label, not as part of the image; off-white text for contrast.
STRIP_RGB = (24, 24, 28)
TEXT_RGB = (235, 235, 235)
MIN_FONT_PX = 10  # below this the bundled font stops being legible

# Epoch axes switch to log scale past this many epochs: PSNR climbs fastest in
# the first few epochs, and on a linear axis they would be squeezed into a sliver.
LOG_EPOCHS_ABOVE = 50


# -----------------------------------------------------------------------------
# atomic writes


# -----------------------------------------------------------------------------
# captions


def caption_frame(frame: np.ndarray, text: str, min_height: int = 256) -> np.ndarray:
    """Upscale ``frame`` to at least ``min_height`` rows and add a caption strip.

    The upscale is by a whole factor with nearest neighbour, so each training
    pixel becomes a crisp k x k block (a 64x64 target stays readable and no
    colours are invented); images already tall enough are never shrunk.

    The strip height depends only on the width and the number of lines in
    ``text``, never on its length, so all captions of one run have the same
    size and can go into one GIF/MP4. Text too wide for the strip is set in a
    smaller font (and, at the smallest legible size, cut with an ellipsis).
    """
    frame = check_uint8_image(frame)
    h, w, _ = frame.shape
    k = max(1, math.ceil(min_height / h))
    image = np.repeat(np.repeat(frame, k, axis=0), k, axis=1)
    width = w * k

    lines = text.split("\n")
    # Font ~1/18 of the width: a stats line like "epoch 12/300  PSNR 23.41 dB
    # MAE 0.0312" fits at that size (longer text shrinks below). Floor 12 px so
    # it stays readable, cap 32 px so wide images do not get a billboard.
    size = int(np.clip(width / 18, 12, 32))
    pad = max(3, size // 3)
    line_h = _line_height(_font(size))
    strip = Image.new("RGB", (width, len(lines) * line_h + 2 * pad), STRIP_RGB)

    fitted, font = _fit_text(lines, size, width - 2 * pad)
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(fitted):
        # Left-aligned: centred text would jitter sideways from frame to frame
        # as the numbers change width. "lm" anchors at the vertical middle, so a
        # shrunken font still sits in the centre of its line.
        y = pad + i * line_h + line_h / 2
        draw.text((pad, y), line, font=font, fill=TEXT_RGB, anchor="lm")

    return np.concatenate([image, np.asarray(strip)], axis=0)


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow >= 10.1 bundles a scalable font, so no system fonts are needed.
    return ImageFont.load_default(size=size)


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return int(math.ceil((ascent + descent) * 1.15))


def _fit_text(
    lines: list[str], size: int, max_width: int
) -> tuple[list[str], ImageFont.FreeTypeFont]:
    """Shrink the font until every line fits; at the floor, truncate lines."""
    while True:
        font = _font(size)
        if size <= MIN_FONT_PX or all(font.getlength(s) <= max_width for s in lines):
            break
        size -= 1
    return [_truncate(s, font, max_width) for s in lines], font


def _truncate(line: str, font: ImageFont.FreeTypeFont, max_width: int) -> str:
    if font.getlength(line) <= max_width:
        return line
    while line and font.getlength(line + "…") > max_width:
        line = line[:-1]
    return line + "…"


# -----------------------------------------------------------------------------
# animations


def write_gif(
    frames: Sequence[np.ndarray],
    path: PathLike,
    fps: float = 12,
    max_frames: int = 120,
    final_hold_s: float = 2.0,
) -> None:
    """Write a forever-looping GIF of ``frames`` (equal-size uint8 RGB arrays).

    GIF compresses poorly (a palette image per frame, LZW only, and during
    training every pixel changes every frame), so the file grows linearly with
    frames; beyond ``max_frames`` an evenly spaced subset is kept, always
    including the first and last frames (the untrained start and the final
    result are the two that matter). The last frame
    is shown for ``final_hold_s`` so the result can be seen before the loop
    restarts.

    Note: Pillow merges consecutive identical frames into one (adding their
    durations), so a GIF of repeated frames has fewer frames but the same timing.
    """
    check_animation(fps=fps, frames=max_frames)
    frames = _check_frames(frames)
    frames = [frames[i] for i in subsample_indices(len(frames), max_frames)]
    # GIF delays are in hundredths of a second and browsers treat delays under
    # 20 ms as 100 ms, so clamp to 20 ms rather than get a slow-motion GIF.
    frame_ms = max(20, round(1000 / fps))
    durations = [frame_ms] * len(frames)
    durations[-1] = max(frame_ms, round(final_hold_s * 1000))

    images = [_to_palette(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=0,  # 0 = loop forever
            disposal=1,  # keep the previous frame; Pillow then only stores changed boxes
        )


def subsample_indices(n: int, max_frames: int) -> list[int]:
    """At most ``max_frames`` evenly spaced indices into range(n), first and last kept."""
    if n <= max_frames:
        return list(range(n))
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2, got {max_frames}")
    # With n > max_frames the step is > 1, so rounding never repeats an index.
    return np.linspace(0, n - 1, max_frames).round().astype(int).tolist()


def _to_palette(frame: np.ndarray) -> Image.Image:
    # A palette per frame follows the image as training changes it (nearly flat
    # at first, full colour at the end). Fast octree rather than median cut:
    # ~15x faster, and median cut hands out colours by pixel count, so a small
    # saturated region (an eye) loses its hue. Pillow only dithers when mapping
    # onto a given palette, hence the two steps; Floyd-Steinberg hides the
    # banding of the smooth gradients a coordinate network mostly draws.
    image = Image.fromarray(frame)
    palette = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    return image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)


def write_mp4(
    frames: Sequence[np.ndarray],
    path: PathLike,
    fps: float = 25,
    final_hold_s: float = 2.0,
) -> None:
    """Write every frame as an H.264 MP4 (yuv420p, plays everywhere).

    yuv420p stores colour at half resolution, so H.264 needs even width and
    height; odd frames get one extra row/column copied from the edge (no
    rescaling, which would blur the pixel blocks). The last frame is repeated
    to hold it for ``final_hold_s`` (at most limits.MAX_HOLD_FRAMES frames). More than
    limits.MAX_ANIMATION_FRAMES frames are evenly subsampled, first and last kept.
    """
    import imageio_ffmpeg  # imported here: only MP4 writing needs the ffmpeg binary

    check_animation(fps=fps)
    # Every frame, up to the limit; past it an evenly spaced subset, as write_gif keeps.
    frames = _check_frames([frames[i] for i in subsample_indices(len(frames), MAX_ANIMATION_FRAMES)])
    h, w, _ = frames[0].shape
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    hold = min(MAX_HOLD_FRAMES, max(0, round(final_hold_s * fps)))

    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            size=(w + w % 2, h + h % 2),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=2,  # frames are already even: never rescale, never warn
            quality=None,  # rate control via the explicit -crf below instead
            ffmpeg_log_level="error",  # no banner, no x264 stats; errors still show
            # crf 18 is visually lossless for these small, flat images; faststart
            # puts the index up front so browsers can play before downloading all.
            output_params=["-crf", "18", "-movflags", "+faststart"],
        )
        writer.send(None)  # start the generator (launches ffmpeg)
        try:
            for i in range(len(frames) + hold):
                frame = frames[min(i, len(frames) - 1)]
                writer.send(np.ascontiguousarray(np.pad(frame, pad, mode="edge")))
        finally:
            writer.close()  # waits for ffmpeg to finish the file


# -----------------------------------------------------------------------------
# learning curves


def plot_curves(rows: Sequence[Mapping], path: PathLike, title: str = "") -> None:
    """Plot PSNR and MAE against epoch and cumulative training time (2x2 PNG).

    ``rows`` are per-epoch dicts with ``epoch``, ``train_seconds`` (that epoch
    only), ``mae``, ``psnr`` and optionally ``seconds`` (cumulative wall time,
    shown in the subtitle). ``train_seconds`` should exclude evaluation and
    frame writing, so that the time axes compare engines fairly. Epoch axes are log-scaled
    past ``LOG_EPOCHS_ABOVE`` epochs.
    """
    # Figure + Agg canvas directly, not pyplot: no global state, no GUI backend,
    # nothing left open, safe to call from threads or worker processes.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    if not rows:
        raise ValueError("plot_curves needs at least one row")
    epoch = np.array([r["epoch"] for r in rows], dtype=float)
    train_s = np.cumsum([float(r["train_seconds"]) for r in rows])
    # A perfect fit has infinite PSNR; plot it as a gap rather than break autoscaling.
    psnr = nan_for_infinite([r["psnr"] for r in rows])
    mae = nan_for_infinite([r["mae"] for r in rows])

    fig = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2)
    log_epochs = len(rows) > LOG_EPOCHS_ABOVE and epoch.min() > 0
    panels = [
        (axes[0, 0], epoch, psnr, "PSNR (dB)", "{:.2f} dB", np.nanargmax),
        (axes[0, 1], train_s, psnr, "PSNR (dB)", "{:.2f} dB", np.nanargmax),
        (axes[1, 0], epoch, mae, "MAE (0-1 scale)", "{:.4g}", np.nanargmin),
        (axes[1, 1], train_s, mae, "MAE (0-1 scale)", "{:.4g}", np.nanargmin),
    ]
    for ax, x, y, ylabel, fmt, best in panels:
        _plot_panel(ax, x, y, epoch, ylabel, fmt, best)
    for ax in axes[:, 0]:
        ax.set_xlabel("epoch" + (" (log scale)" if log_epochs else ""))
        if log_epochs:
            ax.set_xscale("log")
            # Plain 1, 10, 100 rather than 10^0, 10^1, 10^2: these are counts.
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if epoch.min() == epoch.max():  # one epoch: widen so ticks are whole numbers
                ax.set_xlim(epoch[0] - 1, epoch[0] + 1)
    for ax in axes[:, 1]:
        ax.set_xlabel("cumulative training time (s)")

    subtitle = f"{len(rows)} epoch{'s' * (len(rows) != 1)}, {train_s[-1]:.1f} s training"
    if "seconds" in rows[-1]:
        subtitle += f", {float(rows[-1]['seconds']):.1f} s wall"
    fig.suptitle(f"{title}\n{subtitle}" if title else subtitle, fontsize=12)

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _plot_panel(ax, x, y, epoch, ylabel: str, fmt: str, best) -> None:
    # Markers only while there are few points: a single epoch would otherwise be
    # an invisible zero-length line.
    marker = "o" if len(x) <= 30 else None
    ax.plot(x, y, color="tab:blue", lw=1.6, marker=marker, ms=3.5)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.spines[["top", "right"]].set_visible(False)
    if np.isnan(y).all():
        return
    i = int(best(y))
    ax.plot(x[i], y[i], marker="*", ms=14, color="tab:red", zorder=3, ls="none",
            label=f"best {fmt.format(y[i])} @ epoch {epoch[i]:g}")
    ax.legend(loc="best", fontsize=9, frameon=False)


def nan_for_infinite(values) -> np.ndarray:
    a = np.array(values, dtype=float)
    a[~np.isfinite(a)] = np.nan
    return a


# -----------------------------------------------------------------------------
# input checks


def _check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = [check_uint8_image(f) for f in frames]
    if not frames:
        raise ValueError("no frames to write")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ValueError(f"frames differ in size: {sorted(shapes)}")
    return frames
