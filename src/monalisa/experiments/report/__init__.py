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

from pathlib import Path

from monalisa.data.images import Target
from monalisa.experiments.report.diagnosis import diagnoses
from monalisa.experiments.report.figures import (
    GRID_FPS,
    MAX_GIF_FRAMES,
    GridLayout,
    RunFrames,
    grid_frames,
    plot_comparison,
    plot_seeds,
)
from monalisa.experiments.report.pages import report_html, report_markdown
from monalisa.files import save_png, write_json, write_text
from monalisa.runs import animation


def write_outputs(out: Path, target: Target, summary: dict) -> None:
    """Everything made from the finished runs; summary.json last, so it marks a finished comparison."""
    runs = [RunFrames(out, row) for row in summary["runs"]]
    plot_comparison(runs, out / "curves.png", f"{summary['title']}: {target.name} {target.width}x{target.height}")
    if summary.get("seeds", 1) > 1:
        plot_seeds(summary["runs"], out / "seeds.png", f"{summary['title']}: every seed's final PSNR")
    layout = GridLayout(target, len(runs))
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
