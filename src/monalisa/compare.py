"""Several recipes on one image, side by side: the Python API behind `monalisa compare`.

    from monalisa import load_target, get_preset
    from monalisa.compare import run_comparison
    summary = run_comparison(load_target("astronaut", scale=0.25),
                             [("4x300", get_preset("quick")), ("fast", get_preset("fast"))], out="cmp/astro")
    print(summary["conclusion"])

Each recipe trains in its own process (``runs/<label>/`` is an ordinary run
directory, so `monalisa train --resume`, `render` and `animate` work on it),
then one table compares them. The comparison directory::

    comparison.json   title, image, and the entries (label + recipe): what a resume runs
    target.npy        the training target, so a resume needs no source image
    runs/<label>/     one run directory per entry (frames log-spaced: ~20 a decade)
    summary.json      the table and the conclusion; written last, so it marks a finished comparison
    curves.png        PSNR against epoch and against training seconds, one line per run
    grid.mp4/.gif     the runs' animations side by side, in step by epoch, the target first
    finals.png        the target and every run's final frame, labelled
    report.md/.html   the table, conclusion, figures and claims; the HTML embeds everything

Runs go in parallel in separate processes ('spawn': torch and fork do not mix),
each with ``cores // jobs`` torch threads: two processes of two threads on two
cores thrash (measured 10x slower). A run that diverges is a row of the table,
not a failure of the comparison; Ctrl-C stops the workers and leaves every run
resumable with ``run_comparison(..., resume=True)``.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import math
import multiprocessing
import re
import shutil
import signal
import statistics
import sys
import time
from bisect import bisect_right
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Iterable, TextIO

import numpy as np
from PIL import Image

from . import animate
from .engines import choose_engine, resolve_device, usable_cores
from .errors import Diverged, UserError
from .experiment import resume_run, train_run
from .images import Target
from .models import build_model
from .recipes import Recipe
from .record import RunDirectory, read_metrics, write_json, write_text
from .registry import ENCODINGS
from .train import Trainer

COMPARISON_FILE = "comparison.json"
RUN_FRAMES = "log"  # every epoch to 10, then ~20 a decade: enough for the grid, far less disk than "all"
THRESHOLDS = (20.0, 25.0)  # dB: "recognisable" and "good" for these images; the table times both
POLL_SECONDS = 1.0  # how often the parent reads the runs' metrics.csv for the progress line
LOG_EVERY_SECONDS = 5.0  # progress into a file or pipe: at most one line this often

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

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")  # safe as a file name everywhere


# -----------------------------------------------------------------------------
# labels and costs


def label_for(recipe: Recipe, taken: Iterable[str] = ()) -> str:
    """A file-name-safe label from ``recipe.describe()``, e.g. '4x300-leaky_relu-sgd-b1'.

    ``taken``: labels already in use; a clash (compared ignoring case, as some file systems
    do) gets '-2', '-3', ... appended.
    """
    text = recipe.describe().replace(" ", "-").replace(",", "_").replace("/", "+")
    base = re.sub(r"[^A-Za-z0-9._+-]", "_", text).lstrip("._+-")[:60] or "run"
    used = {label.lower() for label in taken}
    label, n = base, 1
    while label.lower() in used:
        n += 1
        label = f"{base}-{n}"
    return label


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
                            "starting with a letter or digit (compare.label_for makes one)")
        if label.lower() in seen:
            raise UserError(f"label {label!r} is used twice "
                            f"(labels are compared ignoring case: {seen[label.lower()]!r})")
        seen[label.lower()] = label


def flops_per_pixel(recipe: Recipe) -> int:
    """Training FLOPs per pixel per epoch, forward and backward: an estimate for comparing recipes.

    Linear layers: 6 per weight, 6 x sum(n_in x n_out) (Kaplan et al. 2020's 6N rule): a
    multiply-add (2 FLOPs) forward, two backward (the input's gradient and the weight's). For
    the original 4x300 network that is 6 x 271,500 = 1.63 MFLOP, RECIPE.md's "about 1.6 MFLOP
    a pixel". Biases, activations and the update add O(width) and are left out.

    Encodings, counting every elementwise operation (sin and cos included) as one FLOP:
    positional 3 per coordinate per octave (a multiply, a sin, a cos), forward only as nothing
    in it trains; fourier 7 per feature (2 multiply-adds for the 2-D projection, the 2 pi
    scaling, a sin, a cos), forward only; hashgrid 16 per level per feature (4 corners x a
    multiply-add forward, and the same backward into the table). An encoding registered
    elsewhere counts its module's ``flops_per_point`` attribute if it has one, else nothing.
    """
    model = build_model(recipe)
    linear = sum(layer.in_features * layer.out_features for layer in model.layers)
    return 6 * linear + _encoding_flops(recipe, model.encoding)


def _encoding_flops(recipe: Recipe, module) -> int:
    spec = ENCODINGS.parse(recipe.encoding)
    options = spec.options
    inputs = 2  # (row, col)
    if spec.name == "none":
        return 0
    if spec.name == "positional":
        return 3 * inputs * options.octaves
    if spec.name == "fourier":
        return 7 * options.features
    if spec.name == "hashgrid":
        return 4 * options.levels * 4 * options.features
    return int(getattr(module, "flops_per_point", 0))


# -----------------------------------------------------------------------------
# the comparison directory


def load_comparison(out: str | Path) -> tuple[Target, list[tuple[str, Recipe]], str]:
    """(target, entries, title) of a comparison directory, for ``run_comparison(..., resume=True)``."""
    out = Path(out)
    path = out / COMPARISON_FILE
    if not path.is_file():
        raise UserError(f"{str(out)!r} is not a comparison directory (no {COMPARISON_FILE})")
    try:
        data = json.loads(path.read_text())
        entries = [(item["label"], Recipe.from_dict(item["recipe"])) for item in data["entries"]]
        pixels = np.load(out / "target.npy")
        target = Target(name=data["image"], pixels=pixels)
        title = data["title"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read comparison {str(out)!r}: {exc.__class__.__name__}: {exc}") from None
    check_entries(entries)
    return target, entries, title


def _prepare_directory(out: Path, target: Target, entries: list[tuple[str, Recipe]], title: str,
                       resume: bool) -> None:
    """Create ``out`` (or check it matches, on resume) and save what a resume needs."""
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create comparison directory {str(out)!r}: {exc.strerror}") from None
    # The target before comparison.json: a directory with comparison.json can always be resumed.
    if not (out / "target.npy").is_file():
        with animate.atomic_path(out / "target.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, target.pixels)
    write_json(out / COMPARISON_FILE, {
        "title": title, "image": target.name, "width": target.width, "height": target.height,
        "entries": [{"label": label, "recipe": recipe.to_dict()} for label, recipe in entries],
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
    return "reuse" if run.info().get("status") in ("complete", "diverged") else "resume"


# -----------------------------------------------------------------------------
# the worker processes


def _init_worker(threads: int, device: str, engines: tuple[str, ...]) -> None:
    import torch

    torch.set_num_threads(threads)
    # Ctrl-C reaches the whole process group; the parent alone handles it and stops the workers,
    # so they do not each print a traceback from the middle of the pool's machinery.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up(device, engines)


def _warm_up(device: str, engines: tuple[str, ...]) -> None:
    """Pay a process's one-time costs before any run, so no run's first epoch is charged for them.

    The batched engine's first step (and CUDA's start-up) would land in the first epoch's
    train_seconds of whichever run a worker happens to start first. The online engine needs
    nothing here: it loads its compiled kernels when it is built, outside the timing.
    """
    from .train import fit

    if "batched" in engines:
        tiny = Target("warm-up", np.zeros((2, 2, 3), np.float32))
        fit(tiny, Recipe(arch=(1,), epochs=1, batch_size=4, optimizer="adam", init="torch"), device=device,
            engine="batched")


def _run_one(task: dict) -> dict:
    """In a worker: start, resume or finish one run. Divergence is a result, not an error.

    (Diverged itself would not survive the trip back: its constructor takes two arguments.)
    """
    path = Path(task["path"])
    try:
        if task["action"] == "start":
            train_run(task["target"], task["recipe"], path, device=task["device"], frames=RUN_FRAMES, quiet=True)
        else:
            _continue_run(path)
    except Diverged as exc:
        return {"label": task["label"], "status": "diverged", "detail": str(exc)}
    return {"label": task["label"], "status": "complete", "detail": ""}


def _continue_run(path: Path) -> None:
    """Resume a run; one killed after its last epoch but before its animations only needs finishing."""
    run = RunDirectory.open(path)
    checkpoint = run.checkpoint()
    if checkpoint is None or checkpoint["epoch"] < run.recipe().epochs:
        resume_run(path, quiet=True)  # on the device and engine it recorded
        return
    from .record import Recorder

    info = run.info()
    trainer = Trainer(run.target(), run.recipe(), device=info.get("device", "auto"), engine=info.get("engine", "auto"))
    trainer.load_state_dict(checkpoint)
    trainer.fit([Recorder(run, frames=info.get("frames", RUN_FRAMES))])  # no epochs left: writes the ending


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate what has: every run directory stays resumable."""
    processes = list((getattr(executor, "_processes", None) or {}).values())  # no public handle before 3.14
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


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
                   claims: Callable[[list[dict]], list[dict]] | None = None) -> dict:
    """Train every (label, recipe) on ``target`` into ``out``; write the table, figures and report.

    ``jobs``: runs at a time, each in its own process with ``cores // jobs`` torch threads
    (default: one per core). ``resume``: continue ``out``, reusing finished runs, resuming
    interrupted ones and starting missing ones (new labels may be added; a label's recipe may
    not change). ``device`` applies to new runs; a resumed run continues on the one it recorded.
    ``claims(rows)`` returns ``[{"claim": str, "supported": True | False | None, "evidence": str}]``
    checked against the table; they go into summary.json and the reports.
    Returns the summary (what summary.json holds).
    """
    out = Path(out)
    check_entries(entries)
    if jobs is not None and (type(jobs) is not int or jobs < 1):
        raise UserError(f"jobs must be a positive whole number, got {jobs!r}")
    resolve_device(device)  # an unknown or absent device is an error before anything is written
    parameters = {label: recipe.parameter_count() for label, recipe in entries}  # also checks each builds
    _prepare_directory(out, target, entries, title, resume)

    progress = _Progress(None if quiet else sys.stderr)
    tasks = []
    for label, recipe in entries:
        run_dir = out / "runs" / label
        action = _plan(run_dir, recipe)
        if action == "reuse":
            progress.say(f"{label}: already {RunDirectory(run_dir).info()['status']}, reused")
        else:
            tasks.append({"label": label, "recipe": recipe, "path": str(run_dir), "action": action,
                          "target": target if action == "start" else None, "device": device})
    _train_all(tasks, len(entries), jobs or usable_cores(), device, progress)

    rows = [_finite(table_row(out, label, parameters[label])) for label, _ in entries]
    verdicts = _check_claims(claims(copy.deepcopy(rows))) if claims else []
    summary = {"title": title, "image": target.name, "width": target.width, "height": target.height,
               "runs": rows, "conclusion": conclusion(rows), "claims": verdicts}
    write_outputs(out, target, summary)
    return summary


def _train_all(tasks: list[dict], total: int, jobs: int, device: str, progress: _Progress) -> None:
    """Run ``tasks`` at most ``jobs`` at a time, each in a spawned process."""
    done = total - len(tasks)
    if not tasks:
        return
    workers = min(jobs, len(tasks))
    threads = max(1, usable_cores() // workers)
    progress.say(f"training {len(tasks)} of {total} runs, {workers} at a time, "
                 f"{threads} torch thread{'s' * (threads != 1)} each")
    engines = tuple(sorted({choose_engine("auto", task["recipe"], resolve_device(device)) for task in tasks}))
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads, device, engines))
    queue, running = list(tasks), {}
    try:
        while queue or running:
            # Submit only as many as run at once, so "running" means running (the pool would queue ahead).
            while queue and len(running) < workers:
                task = queue.pop(0)
                running[executor.submit(_run_one, task)] = task
            finished, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                try:
                    result = future.result()  # a worker's error other than divergence stops the comparison
                except BrokenProcessPool as exc:
                    raise RuntimeError(
                        f"the worker training {task['label']!r} died abruptly (out of memory?). From a script, "
                        "call run_comparison under `if __name__ == '__main__':`, since each worker process "
                        "imports the script again") from exc
                done += 1
                row = _last_row(Path(task["path"]))
                if result["status"] == "diverged":
                    progress.say(f"{task['label']}: {result['detail'].split(';')[0]}")
                else:
                    progress.say(f"{task['label']}: done, {row['epoch'] if row else 0} epochs, "
                                 f"PSNR {row['psnr'] if row else math.nan:.2f} dB")
            if running:
                progress.update(done, total, [(task["label"], task["recipe"].epochs, Path(task["path"]))
                                              for task in running.values()])
    except BaseException:  # KeyboardInterrupt too: stop the workers, leave everything resumable, re-raise
        progress.end()
        _stop_workers(executor)
        raise
    progress.end()
    executor.shutdown()


# -----------------------------------------------------------------------------
# the table and its conclusion


def table_row(out: Path, label: str, parameters: int | None = None) -> dict:
    """One run's line of the table, from its own run directory."""
    run = RunDirectory.open(out / "runs" / label)
    recipe = run.recipe()
    metrics = run.metrics()
    psnr = [row["psnr"] for row in metrics]
    cumulative = np.cumsum([row["train_seconds"] for row in metrics]).tolist()
    best = int(np.argmax(psnr)) if metrics else None

    def seconds_to(db: float) -> float | None:
        return next((seconds for seconds, value in zip(cumulative, psnr) if value >= db), None)

    return {
        "label": label,
        "recipe": recipe.to_dict(),
        "describe": recipe.describe(),
        "parameters": recipe.parameter_count() if parameters is None else parameters,
        "flops_per_pixel": flops_per_pixel(recipe),
        "psnr": metrics[-1]["psnr"] if metrics else None,
        "mae": metrics[-1]["mae"] if metrics else None,
        "best_psnr": psnr[best] if metrics else None,
        "best_epoch": metrics[best]["epoch"] if metrics else None,
        "epochs": metrics[-1]["epoch"] if metrics else 0,
        "seconds_per_epoch": statistics.median(row["train_seconds"] for row in metrics) if metrics else None,
        **{f"seconds_to_{db:g}": seconds_to(db) for db in THRESHOLDS},  # seconds_to_20, seconds_to_25
        "status": run.info().get("status"),
        "run_dir": f"runs/{label}",
    }


def conclusion(rows: list[dict]) -> str:
    """One sentence from the table: the best and worst final PSNR, the fastest to 20 and 25 dB.

    Figures are compared as shown (PSNR to 0.1 dB, seconds to 3 figures), so runs that print
    the same are named as tied. Only complete runs are ranked; diverged ones are named after.
    """
    if not rows:
        return "No runs to compare."
    ranked = [row for row in rows if row["status"] == "complete" and row["psnr"] is not None]
    diverged = [row["label"] for row in rows if row["status"] == "diverged"]
    others = [row["label"] for row in rows if row["status"] not in ("complete", "diverged")]
    if not ranked:
        if len(diverged) == len(rows):
            what = (f"{diverged[0]} diverged" if len(rows) == 1
                    else f"All {len(rows)} runs diverged ({_names(diverged)})")
            return f"{what}; there is nothing to compare."
        return f"No run finished ({_names([r['label'] for r in rows])}); there is nothing to compare."

    def db(row: dict) -> float:
        return round(row["psnr"], 1)

    top, bottom = max(map(db, ranked)), min(map(db, ranked))
    best = [row["label"] for row in ranked if db(row) == top]
    worst = [row["label"] for row in ranked if db(row) == bottom]
    if len(ranked) == 1:
        row = ranked[0]
        sentence = f"{row['label']} reached {row['psnr']:.1f} dB ({row['parameters']:,} parameters)"
    elif top == bottom:
        sentence = f"{_names(best)} {'both' if len(best) == 2 else 'all'} reached the same PSNR, {top:.1f} dB"
    else:
        if len(best) == 1:
            params = next(row["parameters"] for row in ranked if row["label"] == best[0])
            sentence = f"{best[0]} reached the highest PSNR ({top:.1f} dB, {params:,} parameters)"
        else:
            sentence = f"{_names(best)} tied for the highest PSNR ({top:.1f} dB)"
        sentence += f", {top - bottom:.1f} dB above the lowest, {_names(worst)} ({bottom:.1f} dB)"
    sentence += _speed_clause(ranked) + "."
    if diverged:
        sentence += f" {_names(diverged)} diverged."
    if others:
        sentence += f" {_names(others)} did not finish."
    return sentence


def _speed_clause(ranked: list[dict]) -> str:
    """'; the fastest to 20 dB was A (1.2 s), to 25 dB B (3.4 s)', in the words the case needs."""
    fastest = {}  # threshold -> (names, shown time)
    for db in THRESHOLDS:
        key = f"seconds_to_{db:g}"
        reached = [row for row in ranked if row[key] is not None]
        if reached:
            shown = format_seconds(min(row[key] for row in reached))
            names = [row["label"] for row in reached if format_seconds(row[key]) == shown]
            fastest[db] = (names, shown)
    low, high = THRESHOLDS
    if low not in fastest:  # reaching the higher threshold passes the lower one first
        return f"; it did not reach {low:g} dB" if len(ranked) == 1 else f"; no run reached {low:g} dB"
    if len(ranked) == 1:
        clause = f", {low:g} dB after {fastest[low][1]}"
        return clause + (f" and {high:g} dB after {fastest[high][1]}" if high in fastest else "")
    names, shown = fastest[low]
    verb = "were" if len(names) > 1 else "was"
    if high in fastest and fastest[high][0] == names:
        return f"; {_names(names)} {verb} the fastest to {low:g} dB ({shown}) and to {high:g} dB ({fastest[high][1]})"
    clause = f"; the fastest to {low:g} dB {verb} {_names(names)} ({shown})"
    if high in fastest:
        clause += f", to {high:g} dB {_names(fastest[high][0])} ({fastest[high][1]})"
    return clause


def _names(labels: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def format_seconds(seconds: float) -> str:
    """3 significant figures: '97.2 µs', '850 ms', '1.23 s', '45.6 s', '1234 s'."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def _check_claims(claims: list[dict]) -> list[dict]:
    """The claims callback's answer, checked: a list of {claim: str, supported: bool | None, evidence: str}."""
    if not isinstance(claims, list):
        raise TypeError(f"the claims callback must return a list, got {type(claims).__name__}")
    checked = []
    for item in claims:
        ok = (isinstance(item, dict) and set(item) == {"claim", "supported", "evidence"}
              and isinstance(item["claim"], str) and isinstance(item["evidence"], str)
              and (item["supported"] is None or isinstance(item["supported"], (bool, np.bool_))))
        if not ok:
            raise TypeError("each claim must be {'claim': str, 'supported': True, False or None, 'evidence': str}, "
                            f"got {item!r}")
        supported = None if item["supported"] is None else bool(item["supported"])
        checked.append({"claim": item["claim"], "supported": supported, "evidence": item["evidence"]})
    return checked


def _finite(value):
    """JSON has no infinity or NaN: a non-finite number (a perfect fit's PSNR) becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


# -----------------------------------------------------------------------------
# outputs: figures, animations, reports


def write_outputs(out: Path, target: Target, summary: dict) -> None:
    """Everything made from the finished runs; summary.json last, so it marks a finished comparison."""
    runs = [_RunFrames(out, row) for row in summary["runs"]]
    plot_comparison(runs, out / "curves.png", f"{summary['title']}: {target.name} {target.width}x{target.height}")
    layout = _Layout(target, len(runs))
    animate.save_png(layout.compose([layout.target_panel()] + [layout.final_panel(run) for run in runs]),
                     out / "finals.png")
    frames = grid_frames(target, runs, layout)
    animate.write_gif(frames, out / "grid.gif", fps=GRID_FPS, max_frames=MAX_GIF_FRAMES)
    animate.write_mp4(frames, out / "grid.mp4", fps=GRID_FPS)
    del frames
    write_text(out / "report.md", report_markdown(summary))
    write_text(out / "report.html", report_html(summary, out))
    write_json(out / "summary.json", summary)


class _RunFrames:
    """One run's metrics and frames on disk, as the figures need them."""

    def __init__(self, out: Path, row: dict):
        self.row = row
        self.run = RunDirectory(out / row["run_dir"])
        self.metrics = self.run.metrics()
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
        top = f"{self.row['label']}   {self.row['parameters']:,} params"
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
            image = np.full((self.size[1], self.size[0], 3), animate.STRIP_RGB, np.uint8)
        else:
            h, w = pixels.shape[:2]
            whole = self.size[0] % w == 0 and self.size[1] % h == 0 and self.size[0] // w == self.size[1] // h
            resample = Image.Resampling.NEAREST if whole else Image.Resampling.LANCZOS
            image = pixels if (w, h) == self.size else np.asarray(Image.fromarray(pixels).resize(self.size, resample))
        return animate.caption_frame(image, text, min_height=0)

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


def plot_comparison(runs: list[_RunFrames], path: Path, title: str) -> None:
    """PSNR against epoch and against cumulative training seconds, one line per run."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    fig = Figure(figsize=(12, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    by_epoch, by_time = fig.subplots(1, 2, sharey=True)
    palette = colormaps["tab10"]
    styles = ("-", "--", ":", "-.")  # after 10 colours, the next 10 repeat them dashed
    log_epochs = max((len(run.metrics) for run in runs), default=0) > animate.LOG_EPOCHS_ABOVE
    values = []
    for i, run in enumerate(runs):
        label = f"{run.row['label']} ({run.row['parameters']:,} params)" + (", diverged" if run.diverged else "")
        style = {"color": palette(i % 10), "ls": styles[i // 10 % 4], "lw": 1.8}
        if not run.metrics:  # diverged in epoch 1: still in the legend
            by_epoch.plot([], [], label=label, **style)
            continue
        epoch = np.array([m["epoch"] for m in run.metrics], dtype=float)
        seconds = np.cumsum([m["train_seconds"] for m in run.metrics])
        psnr = np.array([m["psnr"] for m in run.metrics], dtype=float)
        psnr[~np.isfinite(psnr)] = np.nan
        values.append(psnr)
        marker = {"marker": "o", "ms": 3.5} if len(epoch) <= 30 else {}
        by_epoch.plot(epoch, psnr, label=label, **style, **marker)
        by_time.plot(seconds, psnr, **style, **marker)
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
    by_epoch.set_title("PSNR by epoch", fontsize=11)
    by_time.set_title("PSNR by training time", fontsize=11)
    long_labels = max(len(run.row["label"]) for run in runs) > 24
    fig.legend(loc="outside lower center", ncol=min(len(runs), 3 if long_labels else 4), frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=13)
    with animate.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# -- reports ---------------------------------------------------------------------------

VERDICTS = {True: "supported", False: "not supported", None: "inconclusive"}
COLUMNS = ("run", "recipe", "parameters", "FLOPs / pixel", "PSNR (dB)", "MAE", "best PSNR (epoch)",
           "s / epoch", "to 20 dB", "to 25 dB")
DASH = "—"  # a figure the run never reached, or has not got


def table_cells(row: dict) -> list[str]:
    """One row of the report table, as text."""
    def number(value, fmt: str) -> str:
        return DASH if value is None else format(value, fmt)

    def seconds(value) -> str:
        return DASH if value is None else format_seconds(value)

    run = row["label"] + (" (diverged)" if row["status"] == "diverged" else "")
    best = DASH if row["best_psnr"] is None else f"{row['best_psnr']:.2f} ({row['best_epoch']})"
    return [run, row["describe"], f"{row['parameters']:,}", _si(row["flops_per_pixel"]), number(row["psnr"], ".2f"),
            number(row["mae"], ".4f"), best, seconds(row["seconds_per_epoch"]), seconds(row["seconds_to_20"]),
            seconds(row["seconds_to_25"])]


def _si(value: float) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:g}"


def _subtitle(summary: dict) -> str:
    runs = summary["runs"]
    diverged = sum(row["status"] == "diverged" for row in runs)
    return (f"{summary['image']}, {summary['width']}x{summary['height']} pixels; {len(runs)} "
            f"run{'s' * (len(runs) != 1)}" + (f", {diverged} diverged" if diverged else "") +
            f"; {time.strftime('%Y-%m-%d %H:%M')}")


def report_markdown(summary: dict) -> str:
    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [f"# {summary['title']}", "", _subtitle(summary), "", f"**Conclusion.** {summary['conclusion']}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * 2 + "--:|" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(cell(c) for c in table_cells(row)) + " |" for row in summary["runs"]]
    lines += ["", "PSNR and MAE are the final epoch's; times are training seconds (rendering and writing excluded), "
              f"{DASH} where a run never got there. FLOPs per pixel: forward and backward, per epoch "
              "(compare.flops_per_pixel).", "",
              "## Final frames", "", "![The target and each run's final frame](finals.png)", "",
              "## Learning curves", "", "![PSNR against epoch and against training time](curves.png)", "",
              "## Learning, side by side", "", "![The runs' frames in step by epoch](grid.gif)", "",
              "Every shown epoch, full quality: [grid.mp4](grid.mp4). Each run's own directory is under "
              "[runs/](runs/).", ""]
    if summary["claims"]:
        lines += ["## Claims", ""]
        lines += [f"- **{VERDICTS[c['supported']]}**: {c['claim']}  \n  Evidence: {c['evidence']}"
                  for c in summary["claims"]]
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
th { background: var(--soft); font-weight: 600; }
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
.not-supported { background: #ffebe9; color: #a40e26; }
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
    best = max((row["psnr"] for row in summary["runs"] if row["psnr"] is not None), default=None)
    body_rows = []
    for row in summary["runs"]:
        cells = table_cells(row)
        tds = [f"<td>{e(text)}</td>" for text in cells]
        if best is not None and row["psnr"] is not None and round(row["psnr"], 2) == round(best, 2):
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
        f'<p class="note">PSNR and MAE are the final epoch\'s; times are training seconds (rendering and writing '
        f"excluded), {e(DASH)} where a run never got there. FLOPs per pixel: forward and backward, per epoch.</p>",
        "<h2>Final frames</h2>", _figure(out / "finals.png", "The target and each run's final frame"),
        "<h2>Learning curves</h2>", _figure(out / "curves.png", "PSNR against epoch and against training time"),
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
