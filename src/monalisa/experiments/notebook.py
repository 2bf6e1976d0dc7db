"""A comparison's runs side by side in Jupyter: the target, each run's latest frame, their PSNR curves.

    from monalisa.errors import UserError
from monalisa.experiments.compare import run_comparison
    from monalisa.experiments.notebook import show_comparison
    run_comparison(target, [("1x32", shallow), ("3x32", deep)], out="runs/depth", seeds=2)
    show_comparison("runs/depth")

Every seed's run is shown (``<label>-s<seed>`` with several seeds), labelled with its
parameter count, finished or not: a comparison still training shows what is on disk.
"""

from __future__ import annotations

from pathlib import Path

from monalisa.errors import UserError
from monalisa.experiments.compare import load_comparison, run_key, saved_seeds
from monalisa.runs.notebook import show_runs


def show_comparison(out: str | Path, *, display: bool = True):
    """The runs of the comparison directory ``out`` (runs not started yet left out) as runs/notebook.py's
    ``show_runs`` draws them; returns the widget, shown unless ``display=False``."""
    out = Path(out)
    _, entries, title = load_comparison(out)
    seeds = saved_seeds(out)
    runs = {}
    for label, recipe in entries:
        for seed in seeds[label]:
            key = run_key(label, seed, seeds[label])
            if (out / "runs" / key / "run.json").is_file():
                runs[f"{key} ({recipe.parameter_count():,} params)"] = out / "runs" / key
    if not runs:
        raise UserError(f"{str(out)!r} has no runs yet: run_comparison(..., out={str(out)!r}) trains them")
    return show_runs(runs, display=display, title=f"{title}: {out.name}")
