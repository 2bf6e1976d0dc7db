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
    (the figures and reports below are drawn by report.py from the table and the run directories)
    curves.png        PSNR against epoch and against training seconds, one line per run
    grid.mp4/.gif     the runs' animations side by side, in step by epoch, the target first
    finals.png        the target and every run's final frame, labelled
    report.md/.html   the table, conclusion, figures and claims; the HTML embeds everything

Runs go through the runner (runner.py), ``jobs`` at a time, each in its own
process with ``cores // jobs`` threads. A run that diverges is a row of the
table, not a failure of the comparison; Ctrl-C pauses the workers and leaves
every run resumable with ``run_comparison(..., resume=True)``.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from .engines import resolve_device, usable_cores
from .errors import UserError
from .images import Target
from .limits import check_recipe
from .models import build_model
from .recipes import DEFAULT_PRESET, Recipe, get_preset, load_recipe
from .files import atomic_path, json_safe, read_metrics, write_json
from .record import RunDirectory
from .runner import START, RunSpec, Runner
from .status import FINISHED, Status
from .registry import ENCODINGS
from .report import THRESHOLDS, format_seconds, write_outputs

COMPARISON_FILE = "comparison.json"
RUN_FRAMES = "log"  # every epoch to 10, then ~20 a decade: enough for the grid, far less disk than "all"
LOG_EVERY_SECONDS = 5.0  # progress into a file or pipe: at most one line this often

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")  # safe as a file name everywhere


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


def flops_per_pixel(recipe: Recipe) -> int:
    """Training FLOPs per pixel per epoch, forward and backward: an estimate for comparing recipes.

    Linear layers: 6 per weight, 6 x sum(n_in x n_out) (Kaplan et al. 2020's 6N rule): a
    multiply-add (2 FLOPs) forward, two backward (the input's gradient and the weight's). For
    the original 4x300 network that is 6 x 271,500 = 1.63 MFLOP, docs/original.md's "about 1.6 MFLOP
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
        with atomic_path(out / "target.npy") as tmp:
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
    for _, recipe in entries:  # limits.py, by arithmetic: a refused entry leaves nothing behind
        check_recipe(recipe, pixels=target.height * target.width)
    parameters = {label: recipe.parameter_count() for label, recipe in entries}  # also checks each builds
    _prepare_directory(out, target, entries, title, resume)

    progress = _Progress(None if quiet else sys.stderr)
    specs = []
    for label, recipe in entries:
        run_dir = out / "runs" / label
        action = _plan(run_dir, recipe)
        if action == "reuse":
            progress.say(f"{label}: already {RunDirectory(run_dir).info()['status']}, reused")
        elif action == START:
            specs.append(RunSpec(label, run_dir, START, target=target, recipe=recipe, device=device, frames=RUN_FRAMES))
        else:
            specs.append(RunSpec(label, run_dir, action, device=device))
    _train_all(specs, dict(entries), jobs or usable_cores(), progress)

    rows = [json_safe(table_row(out, label, parameters[label])) for label, _ in entries]
    verdicts = _check_claims(claims(copy.deepcopy(rows))) if claims else []
    summary = {"title": title, "image": target.name, "width": target.width, "height": target.height,
               "runs": rows, "conclusion": conclusion(rows), "claims": verdicts}
    write_outputs(out, target, summary)
    return summary


def _train_all(specs: list[RunSpec], recipes: dict[str, Recipe], jobs: int, progress: _Progress) -> None:
    """Train ``specs`` through the runner, at most ``jobs`` at a time; a line for each as it ends.

    A worker's error other than divergence stops the comparison (the other runs pause); a run
    paused or stopped from outside is a row that did not finish.
    """
    total = len(recipes)
    done = total - len(specs)
    if not specs:
        return
    runner = Runner(min(jobs, len(specs)))
    progress.say(f"training {len(specs)} of {total} runs, {runner.jobs} at a time, "
                 f"{runner.threads} torch thread{'s' * (runner.threads != 1)} each")
    paths = {spec.key: spec.path for spec in specs}

    def on_report(report: dict) -> None:
        nonlocal done
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
    ranked = [row for row in rows if row["status"] == Status.COMPLETE and row["psnr"] is not None]
    diverged = [row["label"] for row in rows if row["status"] == Status.DIVERGED]
    others = [row["label"] for row in rows if row["status"] not in FINISHED]
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


