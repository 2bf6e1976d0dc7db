"""Training watched in Jupyter: the current frame beside the target, the PSNR curve, a progress bar.

    from monalisa import NotebookView, fit, get_preset, load_target
    result = fit(load_target("mona_lisa"), get_preset("fast").replace(epochs=10), callbacks=[NotebookView()])

``NotebookView`` is a training callback (of ``fit``, ``Trainer.fit``, ``train_run``,
``resume_run``) drawn with ipywidgets: a progress bar with the terminal's line
(progress.py's text: PSNR, MAE, speed, ETA) beside it, moved within long epochs,
and after each epoch the new frame and the curve so far. ``show_runs`` draws
finished (or running) run directories side by side, each run's latest frame and
all their PSNR curves in one plot; experiments/notebook.py's ``show_comparison``
does it for a comparison directory.

ipywidgets is an optional extra (``pip install 'monalisa[notebook]'``) and is imported
only here, when a view is made. Frames are PNGs of the image's own pixels, scaled up
by a whole factor (nearest neighbour) so small images stay sharp, never resampled.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monalisa.errors import UserError
from monalisa.files import png_bytes
from monalisa.runs.animation import nan_for_infinite
from monalisa.runs.directory import RunDirectory
from monalisa.runs.progress import Progress
from monalisa.training.trainer import Trainer

INSTALL = "pip install 'monalisa[notebook]'"
# Frames and curves are PNGs sent to the browser; at most DRAW_EVERY s apart (2 a second), so an epoch
# of 0.1 s is not slowed by drawing (a curve takes ~50 ms to plot here), and always the last epoch.
DRAW_EVERY = 0.5
FRAME_SIDE = 256  # px: a frame is scaled up by a whole factor until its longest side reaches this
CURVE_INCHES = (4.4, 3.0)  # at CURVE_DPI: 352x240 px, a frame's height
CURVE_DPI = 80
GRID_COLUMNS = 4  # show_runs: runs a row (the target takes the first cell)


def widgets():
    """The ipywidgets module, or one line saying how to install it."""
    try:
        import ipywidgets
    except ImportError:
        raise UserError(f"the notebook view needs ipywidgets: {INSTALL}, then run it in Jupyter") from None
    return ipywidgets


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's shell with a kernel attached), where widgets can be shown."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _show(widget) -> None:
    from IPython.display import display

    display(widget)


def _check_display(display: bool):
    """ipywidgets, after checking a shown view has a notebook to be shown in."""
    module = widgets()
    if display and not in_notebook():
        raise UserError(f"the notebook view draws in a Jupyter notebook ({INSTALL}, then run it in Jupyter); "
                        "in a script or terminal use monalisa.Progress() instead")
    return module


def frame_png(frame: np.ndarray, side: int = FRAME_SIDE) -> bytes:
    """An (H, W, 3) uint8 frame as a PNG, scaled up by the largest whole factor that keeps its longest
    side within ``side`` (1 for an image already that large): each pixel a sharp square."""
    factor = max(1, side // max(frame.shape[:2]))
    if factor > 1:
        frame = frame.repeat(factor, axis=0).repeat(factor, axis=1)
    return png_bytes(np.ascontiguousarray(frame))


def psnr_png(curves: Sequence[tuple[str, Sequence[Mapping]]], title: str = "") -> bytes:
    """PSNR against epoch, one line per (label, metrics rows), as a PNG; a legend when there are several."""
    # Figure + Agg canvas, not pyplot: the notebook's inline backend would show each figure a second time.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=CURVE_INCHES, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, rows in curves:
        epochs = [row["epoch"] for row in rows]
        ax.plot(epochs, nan_for_infinite([row["psnr"] for row in rows]), lw=1.6, label=label,
                marker="o" if len(epochs) <= 30 else None, ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("PSNR (dB)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.35)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    if len(curves) > 1:
        ax.legend(fontsize=8, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=CURVE_DPI)
    return buffer.getvalue()


def _target_pixels(pixels: np.ndarray) -> np.ndarray:
    return (pixels * 255).round().astype(np.uint8)  # as the run directory's target.png


def _captioned(w, caption, image):
    return w.VBox([caption, image], layout=w.Layout(align_items="center", margin="0 8px 0 0"))


class NotebookView(Progress):
    """The live view of one training run in a notebook; a training callback.

    ``display=False`` builds the widgets without showing them (``view.widget`` is the whole view),
    to place them yourself; it needs ipywidgets but no notebook. As a Progress it takes the place
    of ``train_run``'s line on stderr.
    """

    def __init__(self, *, display: bool = True):
        w = _check_display(display)
        super().__init__()  # the ETA's clock and figures; nothing is written to its stream
        self.display = display
        self.shown = False
        self.title = w.HTML()
        self.frame_caption, self.target_caption = w.Label("no frame yet"), w.Label("target")
        self.frame_image, self.target_image = w.Image(format="png"), w.Image(format="png")
        self.curve_image = w.Image(format="png")
        self.bar = w.FloatProgress(value=0, min=0, max=1, layout=w.Layout(width="240px"))
        self.line = w.Label()
        self.widget = w.VBox([
            self.title,
            w.HBox([_captioned(w, self.frame_caption, self.frame_image),
                    _captioned(w, self.target_caption, self.target_image), self.curve_image]),
            w.HBox([self.bar, self.line]),
        ])
        self.drawn_at = -np.inf  # when the frame and curve were last drawn
        self.moved_at = -np.inf  # when the bar last moved within an epoch
        self.pending: tuple[dict, np.ndarray] | None = None  # the newest epoch not drawn yet

    def on_start(self, trainer: Trainer) -> None:
        self.title.value = f"<b>{html.escape(self.heading(trainer))}</b>"
        self.target_caption.value = f"target {trainer.target.width}x{trainer.target.height}"
        self.target_image.value = frame_png(_target_pixels(trainer.target.pixels))
        self.bar.max = trainer.recipe.epochs
        self.bar.value = trainer.epoch
        self.bar.bar_style = ""
        self.line.value = f"epoch {trainer.epoch}/{trainer.recipe.epochs}"
        if trainer.history:  # resumed: the curve so far, before the first new epoch
            self.curve_image.value = psnr_png([("", trainer.history)])
        if self.display and not self.shown:
            _show(self.widget)
            self.shown = True

    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None:
        now = time.perf_counter()
        if now - self.moved_at < DRAW_EVERY:
            return
        self.moved_at = now
        with trainer.untimed():  # sending widget state is the view's time, not training's
            self.bar.value = epoch - 1 + fraction
            self.line.value = self.progress_line(trainer, epoch, fraction)

    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None:
        self.line.value = self.epoch_line(trainer, row)  # every epoch: it times them for the ETA
        self.bar.value = row["epoch"]
        self.pending = (row, frame)
        if time.perf_counter() - self.drawn_at >= DRAW_EVERY or row["epoch"] >= trainer.recipe.epochs:
            self._draw(trainer)

    def _draw(self, trainer: Trainer) -> None:
        row, frame = self.pending
        self.frame_image.value = frame_png(frame)
        self.frame_caption.value = f"epoch {row['epoch']}   PSNR {row['psnr']:.2f} dB"
        self.curve_image.value = psnr_png([("", trainer.history)])
        self.pending = None
        self.drawn_at = time.perf_counter()

    def on_end(self, trainer: Trainer, stopped_by: str) -> None:
        if self.pending is not None:
            self._draw(trainer)
        finished = stopped_by in ("epochs", "until_psnr", "time_limit")
        self.bar.bar_style = "success" if finished else "warning" if stopped_by == "interrupted" else "danger"
        last = trainer.history[-1] if trainer.history else None
        figures = f": {last['psnr']:.2f} dB after {last['epoch']} epochs" if last else ""
        self.line.value = f"stopped by {stopped_by}{figures}"


def show_runs(runs: Sequence[str | Path | RunDirectory] | Mapping[str, str | Path | RunDirectory], *,
              display: bool = True, title: str = ""):
    """Run directories side by side: the first run's target, each run's latest frame with its PSNR, and
    one plot of every run's PSNR curve. ``runs``: paths (labelled by folder name) or {label: path}.
    Returns the widget (shown too, unless ``display=False``). Reads only: a run may still be training."""
    w = _check_display(display)
    labelled = list(runs.items()) if isinstance(runs, Mapping) else [(None, run) for run in runs]
    if not labelled:
        raise UserError("show_runs needs at least one run directory")
    cells, curves, target = [], [], None
    for label, run in labelled:
        run = run if isinstance(run, RunDirectory) else RunDirectory.open(run)
        label = label or run.path.name
        metrics = run.metrics()
        if target is None:
            target = run.target()
            cells.append(_captioned(w, w.Label(f"target {target.width}x{target.height}"),
                                    w.Image(value=frame_png(_target_pixels(target.pixels)), format="png")))
        shown = next((row for row in reversed(metrics) if run.frame_path(row["epoch"]).is_file()), None)
        if shown is None:
            cells.append(_captioned(w, w.Label(f"{label}: no frame yet"), w.Image(format="png")))
        else:
            caption = f"{label}: epoch {shown['epoch']}   {shown['psnr']:.2f} dB"
            cells.append(_captioned(w, w.Label(caption), w.Image(value=frame_png(run.frame(shown["epoch"])),
                                                                  format="png")))
        curves.append((label, metrics))
    columns = min(GRID_COLUMNS, len(cells))
    grid = w.GridBox(cells, layout=w.Layout(grid_template_columns=f"repeat({columns}, max-content)",
                                            grid_gap="8px"))
    parts = [w.HTML(f"<b>{html.escape(title)}</b>")] if title else []
    parts += [grid]
    if any(rows for _, rows in curves):
        parts.append(w.Image(value=psnr_png([(label, rows) for label, rows in curves if rows]), format="png"))
    view = w.VBox(parts)
    if display:
        _show(view)
    return view
