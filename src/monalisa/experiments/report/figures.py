"""A comparison's pictures: the PSNR curves, the seeds' finals, the grid animation of every run in step."""

from __future__ import annotations

import math
from bisect import bisect_right
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from monalisa.data.images import Target
from monalisa.experiments.report.pages import THRESHOLDS
from monalisa.files import atomic_path
from monalisa.runs import animation
from monalisa.runs.directory import RunDirectory

# The grid animation: panels of one size, at most MAX_GRID_WIDTH wide in all. Up to
# RUNS_PER_ROW runs sit beside the target in one row; more wrap into rows of RUNS_PER_ROW panels.
MAX_GRID_WIDTH = 1280  # a laptop screen, and a GIF that stays a few MB
MAX_PANEL_HEIGHT = 720  # a tall image shrinks to this
MIN_PANEL_WIDTH = 240  # small images are enlarged by a whole factor (crisp blocks) until the caption reads
RUNS_PER_ROW = 4
GUTTER = 4  # pixels between panels
GUTTER_RGB = (255, 255, 255)  # white: reads as a separator against the dark caption strips
MAX_GRID_FRAMES = 120  # epochs shown (log-spaced beyond this): each frame is up to ~2 MB in memory
# A 1280-wide GIF of trained photographs takes ~220 kB a frame (dithered frames compress badly),
# and the HTML report embeds it: 60 frames keep that near 13 MB. The MP4 has every shown epoch.
MAX_GIF_FRAMES = 60
GRID_FPS = 10


class RunFrames:
    """One run's metrics and frames on disk, as the figures need them."""

    def __init__(self, out: Path, row: dict):
        self.row = row
        self.run = RunDirectory(out / row["run_dir"])  # with several seeds, the median seed's
        self.metrics = self.run.metrics()
        per_seed = row.get("per_seed") or []
        # Every seed's metrics, for the curves' bands (one seed: this run's own).
        self.seed_metrics = [RunDirectory(out / run["run_dir"]).metrics() for run in per_seed] \
            if len(per_seed) > 1 else [self.metrics]
        self.psnr = {m["epoch"]: m["psnr"] for m in self.metrics}
        self.frame_epochs = [m["epoch"] for m in self.metrics if self.run.frame_path(m["epoch"]).exists()]

    @cached_property
    def frame_size(self) -> tuple[int, int]:
        return self.run.frame_size()

    @property
    def diverged(self) -> bool:
        return self.row["status"] == "diverged"

    def frame_at(self, epoch: float) -> int | None:
        """The epoch of the latest frame at or before ``epoch`` (None before the first)."""
        i = bisect_right(self.frame_epochs, epoch) - 1
        return self.frame_epochs[i] if i >= 0 else None

    def caption(self, frame_epoch: int | None, final: bool = False) -> str:
        seeds = len(self.row.get("seeds") or ())
        median = f" (median seed {self.row['median_seed']} of {seeds})" if seeds > 1 else ""
        top = f"{self.row['label']}{median}   {self.row['parameters']:,} params"
        if frame_epoch is None:
            return f"{top}\n{'diverged in epoch 1' if self.diverged and not self.metrics else 'no frame yet'}"
        last = bool(self.metrics) and frame_epoch == self.metrics[-1]["epoch"]
        note = "   diverged next" if self.diverged and last else ""
        prefix = "final: " if final and not note else ""
        return f"{top}\n{prefix}epoch {frame_epoch}   PSNR {self.psnr[frame_epoch]:.2f} dB{note}"


class GridLayout:
    """Panel size and arrangement: the target first, then the runs; at most MAX_GRID_WIDTH wide."""

    def __init__(self, target: Target, runs: int):
        self.target = target
        self.columns = runs + 1 if runs <= RUNS_PER_ROW else RUNS_PER_ROW
        width, height = target.width, target.height
        room = (MAX_GRID_WIDTH - GUTTER * (self.columns - 1)) // self.columns
        if width <= room:  # enlarge a small image by a whole factor: each pixel a crisp block
            k = max(1, min(room // width, math.ceil(MIN_PANEL_WIDTH / width)))
            size = (width * k, height * k)
        else:
            size = (room, max(1, round(height * room / width)))
        if size[1] > MAX_PANEL_HEIGHT:
            size = (max(1, round(size[0] * MAX_PANEL_HEIGHT / size[1])), MAX_PANEL_HEIGHT)
        self.size = size  # (width, height) of a panel's image, without its caption

    def panel(self, pixels: np.ndarray | None, text: str) -> np.ndarray:
        """A frame resized to the panel (LANCZOS down, nearest up by whole factors), captioned below."""
        if pixels is None:
            image = np.full((self.size[1], self.size[0], 3), animation.STRIP_RGB, np.uint8)
        else:
            h, w = pixels.shape[:2]
            whole = self.size[0] % w == 0 and self.size[1] % h == 0 and self.size[0] // w == self.size[1] // h
            resample = Image.Resampling.NEAREST if whole else Image.Resampling.LANCZOS
            image = pixels if (w, h) == self.size else np.asarray(Image.fromarray(pixels).resize(self.size, resample))
        return animation.caption_frame(image, text, min_height=0)

    def target_panel(self) -> np.ndarray:
        pixels = (self.target.pixels * 255).round().astype(np.uint8)
        return self.panel(pixels, f"target\n{self.target.name}   {self.target.width}x{self.target.height}")

    def run_panel(self, run: RunFrames, frame_epoch: int | None) -> np.ndarray:
        pixels = None if frame_epoch is None else _load_rgb(run, run.run.frame_path(frame_epoch))
        return self.panel(pixels, run.caption(frame_epoch))

    def final_panel(self, run: RunFrames) -> np.ndarray:
        last = run.frame_at(math.inf)
        final = run.run.path / "final.png"
        pixels = _load_rgb(run, final) if final.exists() else None if last is None else \
            _load_rgb(run, run.run.frame_path(last))
        return self.panel(pixels, run.caption(last, final=True))

    def compose(self, panels: list[np.ndarray]) -> np.ndarray:
        """Rows of ``columns`` panels, the last row padded with empty space, GUTTER pixels between."""
        h, w, _ = panels[0].shape
        empty = np.full((h, w, 3), GUTTER_RGB, np.uint8)
        panels = panels + [empty] * (-len(panels) % self.columns)
        column_gap = np.full((h, GUTTER, 3), GUTTER_RGB, np.uint8)
        rows = [_join([*panels[i:i + self.columns]], column_gap, axis=1) for i in range(0, len(panels), self.columns)]
        return _join(rows, np.full((GUTTER, rows[0].shape[1], 3), GUTTER_RGB, np.uint8), axis=0)


def _join(parts: list[np.ndarray], gap: np.ndarray, axis: int) -> np.ndarray:
    pieces = [parts[0]]
    for part in parts[1:]:
        pieces += [gap, part]
    return np.concatenate(pieces, axis=axis)


def _load_rgb(run: RunFrames, path: Path) -> np.ndarray:
    """A frame of ``run``, checked as every reader of a run's frames checks it (RunDirectory.frame_image)."""
    return np.asarray(run.run.frame_image(path, run.frame_size))


def grid_frames(target: Target, runs: list[RunFrames], layout: GridLayout) -> list[np.ndarray]:
    """One grid frame per epoch that any run has a frame for (log-spaced past MAX_GRID_FRAMES).

    At epoch e each panel shows its run's latest frame at or before e, so runs that save
    frames on different schedules stay in step, and a run that ended earlier holds its last.
    """
    epochs = sorted(set().union(*[run.frame_epochs for run in runs])) or [0]
    if len(epochs) > MAX_GRID_FRAMES:  # keep more of the early epochs, where most of the learning happens
        picks = np.unique(np.geomspace(1, len(epochs), MAX_GRID_FRAMES).round().astype(int) - 1)
        epochs = [epochs[i] for i in picks]
    target_panel = layout.target_panel()
    shown: list[tuple[int | None, np.ndarray] | None] = [None] * len(runs)  # each run's current panel
    frames = []
    for epoch in epochs:
        panels = [target_panel]
        for i, run in enumerate(runs):
            frame_epoch = run.frame_at(epoch)
            if shown[i] is None or shown[i][0] != frame_epoch:
                shown[i] = (frame_epoch, layout.run_panel(run, frame_epoch))
            panels.append(shown[i][1])
        frames.append(layout.compose(panels))
    return frames


def _mean_curve(seed_metrics: list[list[dict]]):
    """(epoch, mean cumulative seconds, mean PSNR, lowest PSNR, highest PSNR) at each epoch, over the
    seeds that reached it (a seed that diverged early drops out of the later epochs)."""
    epochs = sorted({m["epoch"] for metrics in seed_metrics for m in metrics})
    by_seed = []
    for metrics in seed_metrics:
        cumulative = np.cumsum([m["train_seconds"] for m in metrics])
        by_seed.append({m["epoch"]: (t, m["psnr"]) for m, t in zip(metrics, cumulative)})
    epoch, seconds, mean, low, high = [], [], [], [], []
    for e in epochs:
        here = [seed[e] for seed in by_seed if e in seed]
        psnr = np.array([p for _, p in here], dtype=float)
        psnr[~np.isfinite(psnr)] = np.nan
        epoch.append(e)
        seconds.append(float(np.mean([t for t, _ in here])))
        finite = psnr[np.isfinite(psnr)]
        mean.append(float(np.mean(finite)) if finite.size else np.nan)
        low.append(float(np.min(finite)) if finite.size else np.nan)
        high.append(float(np.max(finite)) if finite.size else np.nan)
    return (np.array(epoch, dtype=float), np.array(seconds), np.array(mean), np.array(low), np.array(high))


def plot_seeds(rows: list[dict], path: Path, title: str) -> None:
    """Each entry's seeds as dots (final PSNR), with the mean and its 95% interval as a bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        finals = [run["psnr"] for run in row.get("per_seed") or [row] if run.get("psnr") is not None
                  and run.get("status") == "complete"]
        offsets = np.linspace(-0.18, 0.18, len(finals)) if len(finals) > 1 else np.zeros(len(finals))
        ax.plot(i + offsets, finals, "o", color="0.25", ms=5, alpha=0.8, zorder=3)
        data = (row.get("stats") or {}).get("psnr") or {}
        if data.get("mean") is not None:
            ax.plot([i - 0.3, i + 0.3], [data["mean"]] * 2, color="tab:blue", lw=2.2, zorder=2)
            if data.get("low") is not None:
                ax.errorbar(i, data["mean"], yerr=[[data["mean"] - data["low"]], [data["high"] - data["mean"]]],
                            color="tab:blue", capsize=6, lw=1.4, zorder=2)
        failed = len(row.get("per_seed") or []) - len(finals)
        if failed > 0:
            ax.annotate(f"{failed} failed", (i, 0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                        textcoords="offset points", ha="center", fontsize=8, color="tab:red")
    ax.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=20 if len(rows) > 5 else 0)
    ax.set_ylabel("final PSNR (dB)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("dots: seeds; bar: mean and its 95% bootstrap interval", fontsize=9, color="0.35")
    fig.suptitle(title, fontsize=12)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_comparison(runs: list[RunFrames], path: Path, title: str) -> None:
    """PSNR against epoch and against cumulative training seconds: one line per entry (with several
    seeds, their mean, shaded from the lowest seed to the highest)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    fig = Figure(figsize=(12, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    by_epoch, by_time = fig.subplots(1, 2, sharey=True)
    palette = colormaps["tab10"]
    styles = ("-", "--", ":", "-.")  # after 10 colours, the next 10 repeat them dashed
    log_epochs = max((len(run.metrics) for run in runs), default=0) > animation.LOG_EPOCHS_ABOVE
    values = []
    for i, run in enumerate(runs):
        label = f"{run.row['label']} ({run.row['parameters']:,} params)" + (", diverged" if run.diverged else "")
        style = {"color": palette(i % 10), "ls": styles[i // 10 % 4], "lw": 1.8}
        if not run.metrics:  # diverged in epoch 1: still in the legend
            by_epoch.plot([], [], label=label, **style)
            continue
        epoch, seconds, psnr, low, high = _mean_curve(run.seed_metrics)
        if len(run.seed_metrics) > 1:  # the panel's title says these are means; the count stays short
            label += f", {len(run.seed_metrics)} seeds"
        values.append(psnr)
        marker = {"marker": "o", "ms": 3.5} if len(epoch) <= 30 else {}
        by_epoch.plot(epoch, psnr, label=label, **style, **marker)
        by_time.plot(seconds, psnr, **style, **marker)
        if len(run.seed_metrics) > 1:  # the band: from the lowest seed to the highest at each epoch
            by_epoch.fill_between(epoch, low, high, color=style["color"], alpha=0.18, lw=0)
            by_time.fill_between(seconds, low, high, color=style["color"], alpha=0.18, lw=0)
        if run.diverged:  # where it stopped
            by_epoch.plot(epoch[-1], psnr[-1], "x", color="black", ms=8, mew=2)
            by_time.plot(seconds[-1], psnr[-1], "x", color="black", ms=8, mew=2)
    every = np.concatenate(values) if values else np.array([])
    for db in THRESHOLDS:  # reference lines, only inside the data's range (they would stretch the axis)
        if every.size and np.nanmin(every) <= db <= np.nanmax(every):
            for ax in (by_epoch, by_time):
                ax.axhline(db, color="0.55", lw=0.9, ls=(0, (4, 4)), zorder=0)
            by_epoch.annotate(f"{db:g} dB", (0, db), xycoords=("axes fraction", "data"), xytext=(3, 3),
                              textcoords="offset points", fontsize=8, color="0.4")
    for ax in (by_epoch, by_time):
        ax.grid(True, which="major", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        if log_epochs:  # log on both: the early epochs hold most of the change
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    if not log_epochs:
        by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
        by_time.set_xlim(left=0)  # time from the start: an axis cut at the first epoch would flatter the slow
    by_epoch.set_xlabel("epoch" + (" (log scale)" if log_epochs else ""))
    by_time.set_xlabel("cumulative training time (s)" + (" (log scale)" if log_epochs else ""))
    by_epoch.set_ylabel("PSNR (dB)")
    seeded = any(len(run.seed_metrics) > 1 for run in runs)
    by_epoch.set_title("PSNR by epoch" + (" (mean of the seeds; shaded: lowest to highest seed)" if seeded else ""),
                       fontsize=11)
    by_time.set_title("PSNR by training time", fontsize=11)
    long_labels = max(len(run.row["label"]) for run in runs) > 24 or seeded  # seeded labels say ", 5 seeds"
    fig.legend(loc="outside lower center", ncol=min(len(runs), 3 if long_labels else 4), frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=13)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
