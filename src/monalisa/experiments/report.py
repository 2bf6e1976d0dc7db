"""A finished comparison as pictures and pages: curves, the grid animation, finals, report.md/.html.

compare.py trains the runs and computes the table (``summary``); this module only
draws and writes what that table and the runs' directories hold, so a report can
be rewritten without retraining anything. ``write_outputs`` is the entry point:

    curves.png        PSNR against epoch and against training seconds, one line per run
    grid.mp4/.gif     the runs' animations side by side, in step by epoch, the target first
    finals.png        the target and every run's final frame, labelled
    report.md/.html   the table, conclusion, figures and claims, and what went wrong in each entry that
                      failed (diverged, or stuck near the mean colour), computed from its layers.csv
                      (dynamics.diagnose); the HTML embeds everything
    summary.json      written last, so it marks a finished comparison; ``diagnoses`` holds those findings
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from bisect import bisect_right
from pathlib import Path

import numpy as np
from PIL import Image

from monalisa.data.images import Target
from monalisa.errors import UserError
from monalisa.files import atomic_path, save_png, write_json, write_text
from monalisa.recipes.recipe import Recipe
from monalisa.runs import animation
from monalisa.runs.directory import RunDirectory
from monalisa.training.dynamics import diagnose

# dB: "recognisable", "good" and "close" for these images; the table times all three, the conclusion the first two
THRESHOLDS = (20.0, 25.0, 30.0)

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
# A run that ends within STUCK_DB of the PSNR of painting every pixel the image's mean colour has
# learnt next to nothing of the picture (the 8-layer network of the depth study, 30 epochs): it
# failed as surely as one that diverged, and is diagnosed like one.
STUCK_DB = 1.0


def write_outputs(out: Path, target: Target, summary: dict) -> None:
    """Everything made from the finished runs; summary.json last, so it marks a finished comparison."""
    runs = [_RunFrames(out, row) for row in summary["runs"]]
    plot_comparison(runs, out / "curves.png", f"{summary['title']}: {target.name} {target.width}x{target.height}")
    if summary.get("seeds", 1) > 1:
        plot_seeds(summary["runs"], out / "seeds.png", f"{summary['title']}: every seed's final PSNR")
    layout = _Layout(target, len(runs))
    save_png(layout.compose([layout.target_panel()] + [layout.final_panel(run) for run in runs]),
                     out / "finals.png")
    frames = grid_frames(target, runs, layout)
    animation.write_gif(frames, out / "grid.gif", fps=GRID_FPS, max_frames=MAX_GIF_FRAMES)
    animation.write_mp4(frames, out / "grid.mp4", fps=GRID_FPS)
    del frames
    summary["diagnoses"] = diagnoses(out, target, summary["runs"])
    write_text(out / "report.md", report_markdown(summary))
    write_text(out / "report.html", report_html(summary, out))
    write_json(out / "summary.json", summary)


def mean_colour_psnr(target: Target) -> float:
    """The PSNR of the best constant picture, the target's mean colour: the floor any run starts near."""
    mse = float(np.mean(target.colours.astype(np.float64).var(axis=0)))
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def failure(row: dict, floor: float) -> str | None:
    """How a run (a table row of one seed) failed, or None: diverged, or ended within STUCK_DB of ``floor``."""
    if row.get("status") == "diverged":
        return f"diverged in epoch {(row.get('epochs') or 0) + 1}"
    psnr = row.get("psnr")
    if row.get("status") == "complete" and psnr is not None and psnr < floor + STUCK_DB:
        return (f"stuck near the mean colour: {psnr:.2f} dB after {row.get('epochs')} epochs, against "
                f"{floor:.2f} dB for the mean colour")
    return None


def diagnoses(out: Path, target: Target, rows: list[dict]) -> list[dict]:
    """For each entry with a failed seed: how it failed and what its layers.csv says went wrong
    (dynamics.diagnose), from its first failed seed's run. ``{"label", "seed", "failed_seeds", "seeds",
    "problem", "findings"}``."""
    floor = mean_colour_psnr(target)
    found = []
    for row in rows:
        runs = row.get("per_seed") or [row]
        failed = [(run, failure(run, floor)) for run in runs]
        failed = [(run, problem) for run, problem in failed if problem]
        if not failed:
            continue
        run, problem = failed[0]
        try:
            layers = RunDirectory(out / run["run_dir"]).layers()
        except UserError as exc:
            layers, findings = [], [str(exc)]
        else:
            findings = diagnose(layers) if layers else \
                ["no layers.csv: the run was trained before layer dynamics were recorded"]
        if layers and not findings:
            findings = ["no layer statistic passed its threshold (dynamics.diagnose): gradients within two orders "
                        "of magnitude of the output layer's, under half the units dead, updates between 1e-5 and "
                        "1e-1 of the weights a step"]
        found.append({"label": row["label"], "seed": run.get("seed"), "failed_seeds": len(failed),
                      "seeds": len(runs), "problem": problem, "findings": findings})
    return found


def _diagnosis_heading(diagnosis: dict) -> str:
    seeds = ""
    if diagnosis["seeds"] > 1:
        seeds = f" ({diagnosis['failed_seeds']} of {diagnosis['seeds']} seeds; seed {diagnosis['seed']} shown)"
    return f"{diagnosis['label']}{seeds}: {diagnosis['problem']}"


class _RunFrames:
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


class _Layout:
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

    def run_panel(self, run: _RunFrames, frame_epoch: int | None) -> np.ndarray:
        pixels = None if frame_epoch is None else _load_rgb(run.run.frame_path(frame_epoch))
        return self.panel(pixels, run.caption(frame_epoch))

    def final_panel(self, run: _RunFrames) -> np.ndarray:
        last = run.frame_at(math.inf)
        final = run.run.path / "final.png"
        pixels = _load_rgb(final) if final.exists() else None if last is None else _load_rgb(run.run.frame_path(last))
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


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def grid_frames(target: Target, runs: list[_RunFrames], layout: _Layout) -> list[np.ndarray]:
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


def plot_comparison(runs: list[_RunFrames], path: Path, title: str) -> None:
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


# -- reports ---------------------------------------------------------------------------

VERDICTS = {True: "supported", False: "refuted", None: "inconclusive"}
DASH = "—"  # a figure the run never reached, or has not got
COLUMNS = ("run", "recipe", "parameters", "training MFLOP per pixel per epoch", "PSNR (dB)", "MAE",
           "best PSNR (epoch)", "s / epoch", *(f"to {db:g} dB" for db in THRESHOLDS))
# Under the table, in both reports: what the numbers are.
TABLE_NOTE = ("PSNR and MAE are the final epoch's; times are training seconds (rendering and writing excluded), "
              f"{DASH} where a run never got there. Training MFLOP per pixel per epoch: the millions of arithmetic "
              "operations one epoch spends on each pixel, forward and backward (6 per network weight plus the "
              "encoding's; table.flops_per_pixel). It is the recipe's cost on any machine; s / epoch is what "
              "it cost on this one.")


# Under the table of a comparison with several seeds: what the intervals are.
SEEDS_NOTE = ("With several seeds, a figure is the mean over the seeds that completed, ± their standard deviation, "
              "[its 95% confidence interval]: scipy.stats.bootstrap, bias-corrected and accelerated (BCa) with 3 "
              "seeds or more, percentile with 2, 10,000 resamples. A time to a PSNR counts the seeds that reached "
              "it (k/n when some did not).")


def table_cells(row: dict) -> list[str]:
    """One row of the report table, as text: a figure, or with several seeds 'mean ± sd [low, high]'."""
    stats = row.get("stats") or {}
    seeds = len(row.get("seeds") or ()) or 1

    def figure(name: str, digits: int) -> str:
        data = stats.get(name)
        if seeds > 1 and data and data["mean"] is not None:
            text = f"{data['mean']:.{digits}f} ± {data['std']:.{digits}f}"
            if data["low"] is not None:
                text += f" [{data['low']:.{digits}f}, {data['high']:.{digits}f}]"
            return text + (f" ({data['n']}/{seeds})" if data["n"] < seeds else "")
        return DASH if row[name] is None else f"{row[name]:.{digits}f}"

    def seconds(name: str) -> str:
        data = stats.get(name)
        if seeds > 1 and data and data["mean"] is not None:
            text = format_seconds(data["mean"])
            if data["low"] is not None:
                text += f" [{format_seconds(data['low'])}, {format_seconds(data['high'])}]"
            return text + (f" ({data['n']}/{seeds})" if data["n"] < seeds else "")
        return DASH if row.get(name) is None else format_seconds(row[name])

    run = row["label"] + (f" ({seeds} seeds)" if seeds > 1 else "")
    failed = row.get("seeds_failed") or 1
    of = f" {failed} of {seeds}" if seeds > 1 else ""
    if row["status"] == "diverged":
        run += f" (diverged{of})"
    elif row["status"] != "complete":  # stopped, interrupted, paused or failed: its figures are from part-way
        run += f" (unfinished: {row.get('unfinished') or row['status']}{of})"
    best = figure("best_psnr", 2)
    if row["best_psnr"] is not None and seeds == 1:
        best += f" ({row['best_epoch']})"
    per_epoch = DASH if row["seconds_per_epoch"] is None else format_seconds(row["seconds_per_epoch"])
    return [run, row["describe"], f"{row['parameters']:,}", f"{row['flops_per_pixel'] / 1e6:.3g}",
            figure("psnr", 2), figure("mae", 4), best, per_epoch,
            *(seconds(f"seconds_to_{db:g}") for db in THRESHOLDS)]


def _table_note(summary: dict) -> str:
    return TABLE_NOTE + (" " + SEEDS_NOTE if summary.get("seeds", 1) > 1 else "")


def _subtitle(summary: dict) -> str:
    """'astronaut, 128x128 pixels; 6 runs (2 entries x 3 seeds), 1 diverged; <time>': every run trained counts,
    each seed of each entry. A search's table holds its best trials only: the line counts all of them."""
    rows = summary["runs"]
    runs = [run for row in rows for run in row.get("per_seed") or [row]]
    if "leaderboard" in summary:
        counted = summary["leaderboard"]
        what = f"{_count(len(counted), 'trial')}" + (f", the best {len(rows)} in the table" if len(rows) < len(counted)
                                                    else "")
    else:
        counted = runs
        seeds = sorted({len(row.get("per_seed") or [row]) for row in rows})
        what = _count(len(runs), "run")
        if seeds and seeds[-1] > 1:
            each = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
            what += f" ({_count(len(rows), 'entry', 'entries')} x {each} seeds)"
    diverged = sum(run.get("status") == "diverged" for run in counted)
    unfinished = sum(run.get("status") not in ("complete", "diverged") for run in counted)
    return (f"{summary['image']}, {summary['width']}x{summary['height']} pixels; {what}"
            + (f", {diverged} diverged" if diverged else "") + (f", {unfinished} unfinished" if unfinished else "")
            + f"; {time.strftime('%Y-%m-%d %H:%M')}")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def report_markdown(summary: dict) -> str:
    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [f"# {summary['title']}", "", _subtitle(summary), "", f"**Conclusion.** {summary['conclusion']}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 2 + "--:|" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(cell(c) for c in table_cells(row)) + " |" for row in summary["runs"]]
    lines += ["", _table_note(summary), "",
              "## Final frames", "", "![The target and each run's final frame](finals.png)", "",
              "## Learning curves", "", "![PSNR against epoch and against training time](curves.png)", "",
              *(["## Every seed", "", "![Each entry's seeds, mean and 95% interval](seeds.png)", ""]
                if summary.get("seeds", 1) > 1 else []),
              "## Learning, side by side", "", "![The runs' frames in step by epoch](grid.gif)", "",
              "Every shown epoch, full quality: [grid.mp4](grid.mp4). Each run's own directory is under "
              "[runs/](runs/).", ""]
    if summary["claims"]:
        lines += ["## Claims", ""]
        lines += [f"- **{VERDICTS[c['supported']]}**: {c['claim']}  \n  Evidence: {c['evidence']}"
                  for c in summary["claims"]]
        lines.append("")
    if summary.get("diagnoses"):
        lines += ["## What went wrong", "", "Computed from each failed run's layer statistics (its layers.csv):", ""]
        for diagnosis in summary["diagnoses"]:
            lines.append(f"- **{cell(_diagnosis_heading(diagnosis))}**")
            lines += [f"  - {cell(finding)}" for finding in diagnosis["findings"]]
        lines.append("")
    lines += ["## Recipes", "", "The fields that differ from the original's (summary.json has every field):", ""]
    lines += [f"- `{row['label']}`: `{json.dumps(_changes(row['recipe']))}`" for row in summary["runs"]]
    return "\n".join(lines) + "\n"


CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 16px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 18px 56px; }
h1 { font-size: 1.9rem; line-height: 1.2; margin: 0 0 6px; }
h2 { font-size: 1.25rem; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0 0 18px; }
.conclusion { margin: 0 0 22px; padding: 12px 16px; background: var(--soft); border-left: 4px solid var(--accent);
              border-radius: 6px; font-size: 1.05rem; }
.table-wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; text-align: right; white-space: nowrap; border-bottom: 1px solid var(--line); }
/* The table fits its 1120 px column: headers and the two text columns wrap (labels break at their
   hyphens), numbers stay whole; a narrower screen scrolls the table inside .table-wrap. */
th { background: var(--soft); font-weight: 600; white-space: normal; vertical-align: bottom; min-width: 5.5em; }
td:nth-child(-n+2) { white-space: normal; overflow-wrap: anywhere; min-width: 8em; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
td:nth-child(2) { color: var(--muted); }
tbody tr:last-child td { border-bottom: 0; }
tbody tr:hover { background: #fafbfc; }
td.best { font-weight: 700; color: #1a7f37; }
.note { color: var(--muted); font-size: 0.85rem; margin: 8px 0 0; }
figure { margin: 0 0 8px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 0.85rem; margin-top: 6px; }
ul.claims { list-style: none; margin: 0; padding: 0; }
ul.claims li { margin: 0 0 10px; padding: 10px 14px; border: 1px solid var(--line); border-radius: 6px; }
.verdict { display: inline-block; margin-right: 8px; padding: 1px 9px; border-radius: 999px; font-size: 0.75rem;
           font-weight: 700; letter-spacing: 0.03em; text-transform: uppercase; vertical-align: 1px; }
.supported { background: #dafbe1; color: #116329; }
.refuted { background: #ffebe9; color: #a40e26; }
.inconclusive { background: #eaeef2; color: #57606a; }
.evidence { color: var(--muted); font-size: 0.92rem; margin-top: 4px; }
details pre { overflow-x: auto; background: var(--soft); padding: 10px 12px; border-radius: 6px; font-size: 0.8rem; }
@media (max-width: 640px) {
  body { font-size: 15px; } main { padding: 18px 12px 40px; } h1 { font-size: 1.45rem; }
  th, td { padding: 6px 8px; }
}
"""


def report_html(summary: dict, out: Path) -> str:
    """The report as one self-contained page: every image embedded, every text escaped."""
    e = html.escape
    # The best of the complete runs only, as table.conclusion and a search's ranking (search.rank_key)
    # judge: an unfinished run's PSNR is from less training.
    best = max((row["psnr"] for row in summary["runs"] if row["psnr"] is not None and row["status"] == "complete"),
               default=None)
    body_rows = []
    for row in summary["runs"]:
        cells = table_cells(row)
        tds = [f"<td>{e(text)}</td>" for text in cells]
        if best is not None and row["status"] == "complete" and round(row["psnr"], 2) == round(best, 2):
            tds[4] = f'<td class="best">{e(cells[4])}</td>'
        body_rows.append("<tr>" + "".join(tds) + "</tr>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(summary['title'])}</title>",
        f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
        f"<h1>{e(summary['title'])}</h1>", f'<p class="meta">{e(_subtitle(summary))}</p>',
        f'<p class="conclusion"><strong>Conclusion.</strong> {e(summary["conclusion"])}</p>',
        '<div class="table-wrap"><table>',
        "<thead><tr>" + "".join(f'<th scope="col">{e(c)}</th>' for c in COLUMNS) + "</tr></thead>",
        "<tbody>" + "".join(body_rows) + "</tbody>", "</table></div>",
        f'<p class="note">{e(_table_note(summary))}</p>',
        "<h2>Final frames</h2>", _figure(out / "finals.png", "The target and each run's final frame"),
        "<h2>Learning curves</h2>", _figure(out / "curves.png", "PSNR against epoch and against training time"),
        *(["<h2>Every seed</h2>", _figure(out / "seeds.png", "Each entry's seeds (dots), their mean and its 95% "
                                                            "bootstrap interval")]
          if summary.get("seeds", 1) > 1 else []),
        "<h2>Learning, side by side</h2>",
        _figure(out / "grid.gif", "The runs' frames in step by epoch (grid.mp4 beside this file has every shown "
                                  "epoch at full quality)"),
    ]
    if summary["claims"]:
        parts += ["<h2>Claims</h2>", '<ul class="claims">']
        for claim in summary["claims"]:
            verdict = VERDICTS[claim["supported"]]
            parts.append(f'<li><span class="verdict {verdict.replace(" ", "-")}">{e(verdict)}</span>{e(claim["claim"])}'
                         f'<div class="evidence">{e(claim["evidence"])}</div></li>')
        parts.append("</ul>")
    if summary.get("diagnoses"):
        parts += ["<h2>What went wrong</h2>", "<p>Computed from each failed run's layer statistics (its layers.csv):</p>",
                  '<ul class="claims">']
        for diagnosis in summary["diagnoses"]:
            parts.append(f"<li><strong>{e(_diagnosis_heading(diagnosis))}</strong><ul>"
                         + "".join(f'<li class="evidence">{e(finding)}</li>' for finding in diagnosis["findings"])
                         + "</ul></li>")
        parts.append("</ul>")
    recipes = "\n".join(f"{row['label']}: {json.dumps(_changes(row['recipe']))}" for row in summary["runs"])
    parts += ["<h2>Recipes</h2>", "<details><summary>The fields that differ from the original's "
              f"(summary.json has every field)</summary><pre>{e(recipes)}</pre></details>",
              "</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _changes(recipe: dict) -> dict:
    """A recipe dict less the fields that equal the original's defaults."""
    defaults = Recipe().to_dict()
    return {key: value for key, value in recipe.items() if value != defaults[key]}


def _figure(path: Path, caption: str) -> str:
    mime = {".png": "image/png", ".gif": "image/gif"}[path.suffix]
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def format_seconds(seconds: float) -> str:
    """3 significant figures: '97.2 µs', '850 ms', '1.23 s', '45.6 s', '1234 s'."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"
