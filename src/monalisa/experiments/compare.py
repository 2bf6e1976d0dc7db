"""Several recipes on one image, side by side: the Python API behind `monalisa compare`.

    from monalisa import load_target, get_preset
    from monalisa.experiments.compare import run_comparison
    summary = run_comparison(load_target("astronaut", scale=0.25),
                             [("4x300", get_preset("quick")), ("fast", get_preset("fast"))], out="cmp/astro")
    print(summary["conclusion"])

Each recipe trains in its own process (``runs/<label>/`` is an ordinary run
directory, so `monalisa train --resume`, `render` and `animate` work on it),
then one table compares them. With ``seeds``, each entry trains once per seed
(the seed drives its initial weights, encoding draws and pixel order) and the
table holds each figure's mean, spread and 95% interval over the seeds
(stats.py); verdicts come from those intervals. The comparison directory::

    comparison.json   title, image, and the entries (label, recipe, seeds): what a resume runs
    target.npy        the training target, so a resume needs no source image
    runs/<label>/     one run directory per entry (frames log-spaced: ~20 a decade);
                      with several seeds runs/<label>-s<seed>/, one per seed
    summary.json      the table (per entry, with every seed's figures) and the conclusion;
                      written last, so it marks a finished comparison
    (the figures and reports below are drawn by report.py from the table and the run directories)
    curves.png        PSNR against epoch and against training seconds: each entry's mean, shaded
                      between its lowest and highest seed
    seeds.png         every seed's final PSNR per entry, with the mean and its 95% interval
    grid.mp4/.gif     the runs' animations side by side (the median seed of each entry), the target first
    finals.png        the target and every entry's final frame, labelled
    report.md/.html   the table, conclusion, figures and claims; the HTML embeds everything
    ray.log           with ``ray``: what Ray and its workers said (ray_cluster.chatter_to)

Runs go through the runner (runner.py), ``jobs`` at a time, each in its own
process with ``cores // jobs`` threads; with ``ray="local"`` or a cluster's address,
each is a Ray task on whichever node is free (execution/ray_cluster.py; ``jobs`` defaults to
the cluster's CPUs, and a run lost with its node resumes elsewhere). A run that diverges is a row of the
table, not a failure of the comparison; Ctrl-C pauses the workers and leaves
every run resumable with ``run_comparison(..., resume=True)``.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from monalisa.data.images import Target
from monalisa.engines import resolve_device
from monalisa.engines.cores import usable_cores
from monalisa.errors import UserError, quoted
from monalisa.execution.runner import Runner
from monalisa.execution.specs import START, RunSpec
from monalisa.experiments.folders import create_folder, load_description, save_description
from monalisa.experiments.report import write_outputs
from monalisa.experiments.tables import check_claims, conclusion, entry_row
from monalisa.files import json_safe, read_json, read_metrics
from monalisa.recipes.limits import check_recipe
from monalisa.recipes.recipe import DEFAULT_PRESET, MAX_SEED, Recipe, get_preset, load_recipe
from monalisa.runs.directory import RunDirectory
from monalisa.runs.status import FINISHED, Status

COMPARISON_FILE = "comparison.json"
RUN_FRAMES = "log"  # every epoch to 10, then ~20 a decade: enough for the grid, far less disk than "all"
LOG_EVERY_SECONDS = 5.0  # progress into a file or pipe: at most one line this often

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")  # safe as a file name everywhere
MAX_SEEDS = 100  # a 100-seed noise study of the `fast` preset is ~10 minutes here; more is a typo


# -----------------------------------------------------------------------------
# labels and costs


def check_entries(entries: list[tuple[str, Recipe]]) -> None:
    """UserError unless the entries are (label, Recipe) pairs with unique, file-name-safe labels."""
    if not entries:
        raise UserError("a comparison needs at least one recipe")
    seen: dict[str, str] = {}
    for entry in entries:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Recipe)):
            raise UserError(f"each entry must be a (label, Recipe) pair, got {entry!r}")
        label = entry[0]
        if not isinstance(label, str) or not LABEL_PATTERN.match(label):
            raise UserError(f"label {label!r} is not file-name safe: use 1-64 letters, digits and . _ + -, "
                            "starting with a letter or digit (Recipe.label makes one)")
        if label.lower() in seen:
            raise UserError(f"label {label!r} is used twice "
                            f"(labels are compared ignoring case: {seen[label.lower()]!r})")
        seen[label.lower()] = label


def entry_seeds(recipe: Recipe, seeds: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...]:
    """The seeds an entry trains: None, its recipe's own; N, the recipe's seed and the N - 1 after it;
    a list, those seeds. Each from 0 to recipes.MAX_SEED, the range both generators take."""
    if seeds is None:
        return (recipe.seed,)
    if type(seeds) is int:
        if not 1 <= seeds <= MAX_SEEDS:
            raise UserError(f"seeds must be 1 to {MAX_SEEDS} seeds, got {quoted(seeds)} (one number is how many "
                            "seeds; list the seeds themselves with commas, such as 0,1,2)")
        if recipe.seed + seeds - 1 > MAX_SEED:
            raise UserError(f"{seeds} seeds from the recipe's seed {recipe.seed} run past 2**64 - 1, the largest "
                            "seed; lower the recipe's seed, or list the seeds")
        return tuple(range(recipe.seed, recipe.seed + seeds))
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise UserError(f"seeds must be a number of seeds or a list of seeds, got {quoted(seeds)}")
    seeds = tuple(seeds)
    if not 1 <= len(seeds) <= MAX_SEEDS or any(type(v) is not int or not 0 <= v <= MAX_SEED for v in seeds):
        raise UserError(f"seeds must list 1 to {MAX_SEEDS} whole numbers from 0 to 2**64 - 1, "
                        f"got {list(seeds)[:12]}{' ...' if len(seeds) > 12 else ''}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds lists a seed twice: {list(seeds)[:12]}")
    return seeds


def parse_seeds(text: str) -> int | tuple[int, ...]:
    """What a user writes for seeds: '5' -> 5 (five seeds from the recipe's); '0,3,7' -> (0, 3, 7)."""
    parts = [part.strip() for part in str(text).split(",")]
    # 20 digits hold 2**64 - 1 (recipes.MAX_SEED); entry_seeds checks the range, with the range in its line.
    if not all(part.isascii() and part.isdigit() and len(part) <= len(str(MAX_SEED)) for part in parts):
        raise UserError(f"write a number of seeds (such as 5) or seeds separated by commas (such as 0,1,2), each "
                        f"from 0 to 2**64 - 1; got {quoted(str(text))}")
    if len(parts) > 1:
        return tuple(int(part) for part in parts)
    if int(parts[0]) < 1:
        raise UserError("at least one seed is needed; got 0")
    return int(parts[0])


def run_key(label: str, seed: int, seeds: tuple[int, ...]) -> str:
    """The run's name under runs/: the label for a single seed, '<label>-s<seed>' for several."""
    return label if len(seeds) == 1 else f"{label}-s{seed}"


def comparison_entries(archs=(), presets=(), recipes=(), overrides: dict | None = None) -> list[tuple[str, Recipe]]:
    """(label, recipe) entries as `monalisa compare` makes them from --arch, --preset and --recipe.

    One entry per arch (such as "4x300" or (300, 300)): the one preset, default DEFAULT_PRESET, with
    that architecture; without archs, one per preset; then one per recipe (a .json or .toml file,
    or a Recipe). ``overrides`` (recipe fields) apply to every entry. Labels from Recipe.label.

        comparison_entries(archs=["1x1000", "4x300"], overrides={"epochs": 20})
    """
    archs, presets, common = list(archs), list(presets), dict(overrides or {})
    if archs and len(presets) > 1:
        raise UserError("--arch entries take their other fields from one --preset; give one --preset with --arch, "
                        "or several --preset without it")
    if archs and "arch" in common:
        raise UserError("the architectures are the entries here; drop 'arch' from the overrides")
    if archs:
        base = get_preset(presets[0] if presets else DEFAULT_PRESET)
        made = [base.replace(arch=arch, **common) for arch in archs]
    else:
        made = [get_preset(name).replace(**common) for name in presets]
    made += [(r if isinstance(r, Recipe) else load_recipe(r)).replace(**common) for r in recipes]
    if len(made) < 2:
        raise UserError("give at least two recipes to compare: two or more of --arch, --preset and --recipe")
    entries: list[tuple[str, Recipe]] = []
    for recipe in made:
        entries.append((recipe.label([label for label, _ in entries]), recipe))
    return entries


# -----------------------------------------------------------------------------
# the comparison directory


def load_comparison(out: str | Path) -> tuple[Target, list[tuple[str, Recipe]], str]:
    """(target, entries, title) of a comparison directory, for ``run_comparison(..., resume=True)``
    (which reads each entry's seeds from the directory itself: ``saved_seeds``)."""
    out = Path(out)
    path = out / COMPARISON_FILE
    if not path.is_file():
        raise UserError(f"{str(out)!r} is not a comparison directory (no {COMPARISON_FILE})")
    try:
        target, data = load_description(out, COMPARISON_FILE, "comparison", "start the comparison again")
        entries = [(item["label"], Recipe.from_dict(item["recipe"])) for item in data["entries"]]
        for _, recipe in entries:  # before anything is built or trained from them
            check_recipe(recipe, source=str(path))
        title = data["title"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read comparison {str(out)!r}: {exc.__class__.__name__}: {exc}") from None
    check_entries(entries)
    return target, entries, title


def saved_seeds(out: str | Path) -> dict[str, tuple[int, ...]]:
    """label -> the seeds a comparison directory's entries train ({} for one that has none yet)."""
    try:
        data = read_json(Path(out) / COMPARISON_FILE)
        return {item["label"]: entry_seeds(Recipe.from_dict(item["recipe"]), item.get("seeds"))
                for item in data["entries"]}
    except (FileNotFoundError, NotADirectoryError):  # not a comparison yet: _prepare_directory says what it is
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read comparison {str(out)!r}: {exc.__class__.__name__}: {exc}") from None


def _prepare_directory(out: Path, target: Target, entries: list[tuple[str, Recipe]], title: str,
                       resume: bool, seeds: dict[str, tuple[int, ...]], before: dict[str, tuple[int, ...]]) -> None:
    """Create ``out`` (or check it matches, on resume) and save what a resume needs.
    ``seeds``: each entry's seeds now; ``before``: those ``out`` recorded (saved_seeds)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{str(out)!r} exists and is not a directory; choose another --out")
    started = out.is_dir() and any(out.iterdir())
    if started and not resume:
        raise UserError(f"{str(out)!r} already exists; continue it with --resume {out} or choose another --out")
    if started:
        if not (out / COMPARISON_FILE).is_file():
            raise UserError(f"{str(out)!r} is not a comparison directory (no {COMPARISON_FILE}); "
                            "choose another --out")
        saved_target, saved_entries, _ = load_comparison(out)
        if not np.array_equal(saved_target.pixels, target.pixels):
            raise UserError(f"{str(out)!r} was started on a different image ({saved_target.name} "
                            f"{saved_target.width}x{saved_target.height}); resume it with its own target "
                            "(load_comparison) or choose another --out")
        saved = dict(saved_entries)
        for label, recipe in entries:
            if label in saved and saved[label] != recipe:
                raise UserError(f"{str(out)!r} already has a run {label!r} with another recipe; "
                                "give the new recipe another label")
            if label in before and (len(before[label]) == 1) != (len(seeds[label]) == 1):
                raise UserError(f"{str(out)!r} trained {label!r} with {len(before[label])} seed(s); a resume "
                                "may add or drop seeds but not go between one and several (the runs' names "
                                "differ): resume with the saved seeds (no --seeds) or choose another --out")
    create_folder(out, "comparison")
    save_description(out, COMPARISON_FILE, target, {
        "title": title,
        "entries": [{"label": label, "recipe": recipe.to_dict(), "seeds": list(seeds[label])}
                    for label, recipe in entries],
    })


def _plan(run_dir: Path, recipe: Recipe) -> str:
    """'start', 'resume' or 'reuse' (complete or diverged: training it again gives the same)."""
    if not run_dir.exists():
        return "start"
    if not (run_dir / "run.json").is_file():
        raise UserError(f"{str(run_dir)!r} was left half-created (no run.json); delete it and resume again")
    run = RunDirectory.open(run_dir)
    if run.recipe() != recipe:
        raise UserError(f"{str(run_dir)!r} holds a different recipe from its entry; delete it or relabel the entry")
    return "reuse" if run.info().get("status") in FINISHED else "resume"


# -----------------------------------------------------------------------------
# progress in the parent


class _Progress:
    """'[1/3 done] 4x300: epoch 12/30 PSNR 21.3 dB | 1x1000: epoch 9/30 PSNR 18.0 dB'.

    On a terminal one line redrawn in place; into a file or pipe a line when it changes,
    at most every LOG_EVERY_SECONDS. Finished runs get a line of their own.
    """

    def __init__(self, stream: TextIO | None):
        self.stream = stream
        self.live = stream is not None and stream.isatty()
        self.line = ""
        self.last_print = -math.inf

    def say(self, text: str) -> None:
        if self.stream is None:
            return
        self.stream.write(("\r\033[K" if self.live and self.line else "") + text + "\n")
        self.stream.flush()
        self.line = ""

    def update(self, done: int, total: int, running: list[tuple[str, int, Path]]) -> None:
        if self.stream is None:
            return
        parts = []
        for label, epochs, path in running:
            row = _last_row(path)
            parts.append(f"{label}: epoch {row['epoch']}/{epochs} PSNR {row['psnr']:.1f} dB" if row
                         else f"{label}: starting")
        line = f"[{done}/{total} done] " + " | ".join(parts)
        now = time.monotonic()
        if line == self.line or (not self.live and now - self.last_print < LOG_EVERY_SECONDS):
            return
        self.line, self.last_print = line, now
        if self.live:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be redrawn with \r
            self.stream.write("\r\033[K" + (line if len(line) <= width else line[:width - 1] + "…"))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.live and self.line and self.stream is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()
        self.line = ""


def _last_row(run_dir: Path) -> dict | None:
    try:
        rows = read_metrics(run_dir / "metrics.csv")  # replaced atomically: never a half file
    except (OSError, ValueError, KeyError):
        return None
    return rows[-1] if rows else None


# -----------------------------------------------------------------------------
# running it


def run_comparison(target: Target, entries: list[tuple[str, Recipe]], out: str | Path, *, jobs: int | None = None,
                   resume: bool = False, device: str = "auto", quiet: bool = False, title: str = "Comparison",
                   claims: Callable[[list[dict]], list[dict]] | None = None,
                   seeds: int | tuple[int, ...] | None = None, ray: str | None = None) -> dict:
    """Train every (label, recipe) on ``target`` into ``out``; write the table, figures and report.

    ``seeds``: None, one run per entry with its recipe's seed (on resume: the seeds saved in
    ``out``); N, each entry's seed and the N - 1 after it; a list, those seeds for every entry.

    ``jobs``: runs at a time, each in its own process with ``cores // jobs`` torch threads
    (default: one per core). ``resume``: continue ``out``, reusing finished runs, resuming
    interrupted ones and starting missing ones (new labels may be added; a label's recipe may
    not change). ``device`` applies to new runs; a resumed run continues on the one it recorded.
    ``claims(rows)`` returns ``[{"claim": str, "supported": True | False | None, "evidence": str}]``
    checked against the table; they go into summary.json and the reports.
    ``ray``: train on Ray ("local", "auto" or HOST:PORT; execution/ray_cluster.py) instead of local processes.
    Returns the summary (what summary.json holds).
    """
    out = Path(out)
    check_entries(entries)
    if jobs is not None and (type(jobs) is not int or jobs < 1):
        raise UserError(f"jobs must be a positive whole number, got {jobs!r}")
    resolve_device(device)  # an unknown or absent device is an error before anything is written
    for _, recipe in entries:  # limits.py, by arithmetic: a refused entry leaves nothing behind
        check_recipe(recipe, pixels=target.height * target.width)
    parameters = {label: recipe.parameter_count() for label, recipe in entries}  # also checks each builds
    before = saved_seeds(out) if resume else {}
    entry_seed = {label: (before.get(label) if seeds is None else None) or entry_seeds(recipe, seeds)
                  for label, recipe in entries}
    executor = _open_executor(ray)  # a bad address or a missing project: an error before anything is written
    try:
        _prepare_directory(out, target, entries, title, resume, entry_seed, before)
        if executor is None:
            return _run_prepared(out, target, entries, jobs, device, quiet, title, claims, entry_seed, parameters,
                                 executor)
        from monalisa.execution.ray_cluster import RAY_LOG, chatter_to

        with chatter_to(out / RAY_LOG, executor.connection.startup_output):
            return _run_prepared(out, target, entries, jobs, device, quiet, title, claims, entry_seed, parameters,
                                 executor)
    finally:
        if executor is not None:
            executor.close()  # the runner closed it already unless nothing needed training


def _open_executor(ray: str | None):
    if ray is None:
        return None
    from monalisa.execution.ray_cluster import RayExecutor  # Ray is imported only here, only with --ray

    return RayExecutor(ray)


def _run_prepared(out: Path, target: Target, entries: list[tuple[str, Recipe]], jobs: int | None, device: str,
                  quiet: bool, title: str, claims, entry_seed: dict[str, tuple[int, ...]], parameters: dict,
                  executor) -> dict:
    """run_comparison once ``out`` holds what a resume needs: train what is missing, then the table."""
    progress = _Progress(None if quiet else sys.stderr)
    if executor is not None:
        from monalisa.execution.ray_cluster import RAY_LOG

        progress.say(f"Ray's own messages go to {out / RAY_LOG}")
    specs, recipes = [], {}
    for label, base in entries:
        for seed in entry_seed[label]:
            key, recipe = run_key(label, seed, entry_seed[label]), base.replace(seed=seed)
            recipes[key] = recipe
            run_dir = out / "runs" / key
            action = _plan(run_dir, recipe)
            if action == "reuse":
                progress.say(f"{key}: already {RunDirectory(run_dir).info()['status']}, reused")
            elif action == START:
                specs.append(RunSpec(key, run_dir, START, target=target, recipe=recipe, device=device,
                                     frames=RUN_FRAMES))
            else:
                specs.append(RunSpec(key, run_dir, action, device=device))
    _train_all(specs, recipes, jobs or (executor.cpus if executor else usable_cores()), progress, executor)

    rows = [json_safe(entry_row(out, label, [(seed, run_key(label, seed, entry_seed[label]))
                                             for seed in entry_seed[label]], parameters[label]))
            for label, _ in entries]
    verdicts = check_claims(claims(copy.deepcopy(rows))) if claims else []
    summary = {"title": title, "image": target.name, "width": target.width, "height": target.height,
               "seeds": max(len(v) for v in entry_seed.values()) if entries else 0,
               "runs": rows, "conclusion": conclusion(rows), "claims": verdicts}
    write_outputs(out, target, summary)
    return summary


def _train_all(specs: list[RunSpec], recipes: dict[str, Recipe], jobs: int, progress: _Progress,
               executor=None) -> None:
    """Train ``specs`` through the runner, at most ``jobs`` at a time; a line for each as it ends.
    ``executor``: a RayExecutor, or None for local processes.

    A worker's error other than divergence stops the comparison (the other runs pause); a run
    paused or stopped from outside is a row that did not finish.
    """
    total = len(recipes)
    done = total - len(specs)
    if not specs:
        return
    jobs = min(jobs, len(specs))
    runner = Runner(jobs, executor=executor, threads=executor.threads(jobs) if executor else None)
    where = " on Ray" if executor else ""
    progress.say(f"training {len(specs)} of {total} runs{where}, {runner.jobs} at a time, "
                 f"{runner.threads} torch thread{'s' * (runner.threads != 1)} each")
    paths = {spec.key: spec.path for spec in specs}

    def on_report(report: dict) -> None:
        nonlocal done
        if report["type"] == "restart":
            progress.say(f"{report['id']}: {report['message']}")
        if report["type"] != "end":
            return
        label, status, message = report["id"], report["status"], report["message"] or ""
        done += 1
        row = _last_row(paths[label])
        if status == Status.COMPLETE:
            progress.say(f"{label}: done, {row['epoch'] if row else 0} epochs, "
                         f"PSNR {row['psnr'] if row else math.nan:.2f} dB")
        elif status == Status.DIVERGED:
            progress.say(f"{label}: {message.split(';')[0]}")
        elif status == Status.ERROR:
            raise UserError(f"run {label!r} failed: {message}")
        elif status == Status.INTERRUPTED:
            raise RuntimeError(
                f"the worker training {label!r} died abruptly ({message}; out of memory?). From a script, "
                "call run_comparison under `if __name__ == '__main__':`, since each worker process "
                "imports the script again")
        else:
            progress.say(f"{label}: {status} from outside at epoch {row['epoch'] if row else 0}; "
                         "resume the comparison to finish it")

    def on_poll() -> None:  # the progress line from the runs' own metrics.csv
        running = runner.running()
        if running:
            progress.update(done, total, [(label, recipes[label].epochs, paths[label]) for label in running])

    try:
        runner.run_all(specs, on_report, on_poll)  # Ctrl-C: every worker paused, every run resumable
    finally:
        progress.end()
        runner.close()
