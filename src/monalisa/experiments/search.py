"""Architecture search under a parameter budget with Ray Tune: the Python API behind `monalisa search`.

    from monalisa import load_target
    from monalisa.experiments.search import run_search
    summary = run_search(load_target("mona_lisa"), "runs/search", budget=272_703, minutes=20)
    print(summary["best"]["label"], summary["best"]["psnr"])

The lab's real question, "which architecture is best under this budget?", asked as a
search instead of a hand-written list. Each trial is a recipe drawn from ``SearchSpace``
(depth, activation, encoding and its size, optimiser, rate, batch size), whose hidden
width is solved so that encoding + network hold at most ``budget`` parameters
(recipes/sizes.py), trained for at most ``trial_seconds`` seconds of training time. Two
well-kept tools drive it, through Ray Tune:

- Optuna's TPE sampler (``ray.tune.search.optuna.OptunaSearch``; Bergstra et al. 2011,
  "Algorithms for Hyper-Parameter Optimization") proposes each trial from the results so far;
- ASHA (``ASHAScheduler``; Li et al. 2020, "A System for Massively Parallel Hyperparameter
  Tuning") stops a trial early when its PSNR at a rung of training seconds is in the bottom
  third of the trials that reached that rung.

The search directory::

    search.json        image, budget, minutes, trial seconds, seed: what a resume needs
    target.npy         the training target
    tune/              Ray Tune's experiment, restored by a resume (Tuner.restore)
    runs/trial-<id>/   every trial an ordinary run directory (`monalisa train --resume` works on it);
                       a trial ASHA stopped early ends 'stopped', with its ending written
    leaderboard.csv    every trial, best first (rank_key, the one ranking rule): status, finished or not,
                       PSNR, training seconds, parameters, recipe
    ray.log            what Ray, Ray Tune and Optuna said (ray_cluster.chatter_to), off the terminal
    report.md/.html    the best TOP_RUNS trials as compare.py's table, curves, grid and finals
                       (report.py), then the whole leaderboard (report.md)
    best-recipe.toml   the best trial's recipe: `monalisa train IMAGE --recipe best-recipe.toml`
    summary.json       written last: marks a finished search

Ctrl-C stops the trials (Ray Tune saves its state), and ``run_search(..., resume=True)``
(`monalisa search --resume DIR`) restores the experiment: unfinished trials continue from
their run directories' checkpoints. Ray Tune keeps files in one folder, so on a cluster the
search directory must be on a disk every node mounts at the same path (docs/ray.md).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from monalisa import interrupts
from monalisa.data.images import Target
from monalisa.errors import Diverged, UserError, quoted
from monalisa.experiments.folders import create_folder, load_description, save_description
from monalisa.files import json_safe, write_text
from monalisa.interrupts import Stopped
from monalisa.recipes.encodings import hashgrid_table_size
from monalisa.recipes.limits import check_recipe
from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import ACTIVATIONS, ENCODINGS, OPTIMIZERS, Spec, format_spec
from monalisa.recipes.sizes import encoding_size, parameter_count, width_for_budget
from monalisa.runs.directory import RunBusy, RunDirectory
from monalisa.runs.progress import format_duration
from monalisa.runs.status import FINISHED, Status
from monalisa.training.trainer import Callback

SEARCH_FILE = "search.json"
TUNE_NAME = "tune"  # Ray Tune's experiment folder inside the search directory
BEST_RECIPE = "best-recipe.toml"
TOP_RUNS = 8  # trials in the report's table, curves and grid: 8 panels keep the grid readable
TRIAL_SECONDS = 60.0  # training seconds a trial may have: the yardstick: PSNR after 60 s of training
MAX_SAMPLER_SEED = 2**32 - 1  # optuna TPESampler(seed=...) refuses larger: "Seed must be between 0 and 2**32 - 1"
# How long the end of a search waits for a stopped trial's own process to finish writing its ending
# (its GIF and MP4: a few seconds on a busy machine) before leaving that run as it is.
SETTLE_SECONDS = 120.0
MAX_EPOCHS = 100_000  # a trial ends by its time limit; the epoch count only has to be out of reach
# ASHA: the first rung after 1/8 of a trial's seconds (7.5 s of 60: a hash grid is past 25 dB by then,
# a plain MLP has drawn its first shapes), then every 3x (22.5 s, 67.5 s); at each rung the best third
# goes on (reduction factor 3, Li et al.'s default is 4; 3 keeps more of a small search alive).
GRACE_SHARE = 1 / 8
REDUCTION_FACTOR = 3
# ASHA's max_t as a share of the trials' own limit: above it, so that a trial ends by its time_limit and
# writes its ending, never cut off by ASHA at the finish line.
MAX_T_SHARE = 1.5


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may be. Every name is a registered component (registry.py), so a user's own
    activation or optimiser joins by name: ``SearchSpace(activations=(*SearchSpace.activations, "snake"))``.
    (A component registered only in the driver is unknown to the workers: register it in a module
    the workers import too.)"""

    # 2 to the published code's 6. Not 1: at 273k parameters one layer is 45,000 units wide, and a
    # batch of its activations (16,384 x 45,499 floats, 3 GB) made an epoch take 218-258 s here, four
    # minutes of a trial's slot before its time limit or ASHA could look (the depth study has it, online).
    depths: tuple[int, ...] = (2, 3, 4, 6)
    # The zoo's hidden activations but sigmoid, whose vanishing slope the 2012 post already warned about.
    activations: tuple[str, ...] = ("relu", "leaky_relu", "gelu", "silu", "tanh", "sine")
    encodings: tuple[str, ...] = ("none", "positional", "fourier", "hashgrid")
    # Adam for most of the zoo, also with instant-ngp's beta2 0.99 and eps 1e-15 (the hash grid presets');
    # momentum SGD as the classic.
    optimizers: tuple[str, ...] = ("adam", "adam:beta2=0.99,eps=1e-15", "momentum")
    lr: tuple[float, float] = (1e-4, 3e-2)  # log-uniform; Adam's useful range on these networks
    batch_sizes: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)  # 126 to 8 steps an epoch of 300x429
    # Each encoding's size, a range per option:
    octaves: tuple[int, int] = (4, 12)  # positional: NeRF's 10 in the middle
    fourier_features: tuple[int, ...] = (64, 128, 256)  # Tancik et al.'s 256 at most: more leaves no MLP
    fourier_sigma: tuple[float, float] = (2.0, 30.0)  # log-uniform; Tancik et al. found 10 best on photos
    hashgrid_levels: tuple[int, int] = (8, 16)  # instant-ngp's 16 at most
    hashgrid_bases: tuple[int, ...] = (4, 8, 16)  # coarsest resolution; `fast` starts at 8
    hashgrid_share: tuple[float, float] = (0.3, 0.9)  # of the budget in the tables; the MLP gets the rest

    def __post_init__(self):
        for name, registry in (("activations", ACTIVATIONS), ("encodings", ENCODINGS), ("optimizers", OPTIMIZERS)):
            values = getattr(self, name)
            if isinstance(values, str) or not values:
                raise UserError(f"{name} must be a list of names, got {values!r}")
            for value in values:
                registry.parse(value)  # a spec, such as "adam:beta2=0.99": UserError naming the valid ones


def suggest(trial, space: SearchSpace) -> None:
    """Optuna's define-by-run space: each encoding's size options are drawn only for that encoding."""
    trial.suggest_categorical("depth", space.depths)
    trial.suggest_categorical("activation", space.activations)
    encoding = trial.suggest_categorical("encoding", space.encodings)
    if encoding == "positional":
        trial.suggest_int("octaves", *space.octaves)
    elif encoding == "fourier":
        trial.suggest_categorical("features", space.fourier_features)
        trial.suggest_float("sigma", *space.fourier_sigma, log=True)
    elif encoding == "hashgrid":
        trial.suggest_int("levels", *space.hashgrid_levels)
        trial.suggest_categorical("base", space.hashgrid_bases)
        trial.suggest_float("table_share", *space.hashgrid_share)
    trial.suggest_categorical("optimizer", space.optimizers)
    trial.suggest_float("lr", *space.lr, log=True)
    trial.suggest_categorical("batch_size", space.batch_sizes)


def recipe_for(config: dict, budget: int, seed: int = 0, trial_seconds: float = TRIAL_SECONDS) -> Recipe:
    """The recipe of one trial's ``config``: its network as wide as keeps it within ``budget`` parameters.

    The width is the nearest to the budget (sizes.width_for_budget), then narrowed until the total
    is at most the budget: a trial that may go over would win by size. A hash grid's tables take
    ``table_share`` of the budget (encodings.hashgrid_table_size) and the MLP the rest.
    """
    encoding = _encoding_spec(config)
    if config["encoding"] == "hashgrid":
        options = ENCODINGS.parse(encoding).options
        tables = hashgrid_table_size(options, int(budget * config["table_share"]))
        encoding = format_spec(Spec("hashgrid", dataclasses.replace(options, table_size=tables)))
    features, used = encoding_size(encoding)
    depth = config["depth"]
    if budget - used < parameter_count((1,) * depth, features):
        raise UserError(f"a budget of {budget:,} parameters leaves no room for {depth} hidden layers after the "
                        f"{encoding} encoding's {used:,}; raise the budget")
    width = width_for_budget(depth, budget - used, features, tolerance=math.inf)
    while width > 1 and used + parameter_count((width,) * depth, features) > budget:
        width -= 1
    activation = config["activation"]
    optimizer = config["optimizer"]
    # The init each unit was designed with: SIREN's for sine (Sitzmann et al. 2020), else PyTorch's, as the
    # zoo's Adam presets use. Momentum SGD keeps the original's per-layer rate scaling (its default).
    init = "siren" if activation.split(":")[0] == "sine" else "torch"
    return Recipe(arch=(width,) * depth, activation=activation, encoding=encoding, init=init, optimizer=optimizer,
                  lr=float(config["lr"]), batch_size=int(config["batch_size"]), epochs=MAX_EPOCHS,
                  time_limit=float(trial_seconds), seed=seed)


def _encoding_spec(config: dict) -> str:
    name = config["encoding"]
    if name == "positional":
        return f"positional:octaves={config['octaves']}"
    if name == "fourier":
        return f"fourier:features={config['features']},sigma={float(config['sigma']):.4g}"
    if name == "hashgrid":
        return f"hashgrid:levels={config['levels']},base={config['base']}"
    return name


# -----------------------------------------------------------------------------
# one trial, inside a Ray Tune worker


class _ReportToTune(Callback):
    """After every epoch: the PSNR and the training seconds so far, which ASHA ranks trials by.

    When ASHA has stopped the trial, Ray Tune's report ends the training thread with SystemExit;
    it is turned into a stop request acted on at once (this is a safe point: interrupts.py), so
    the trainer ends the epoch as an interruption (not an error) and the trial writes its ending
    as a stopped run.
    """

    def __init__(self, report):
        self.report = report

    def on_epoch(self, trainer, row: dict, frame) -> None:
        try:
            self.report({"psnr": float(row["psnr"]), "train_seconds": trainer.training_seconds(),
                         "epoch": int(row["epoch"])})
        except SystemExit:
            interrupts.ask(interrupts.STOP)
            interrupts.check()


def _trial(config: dict, *, target: Target, budget: int, out: str, trial_seconds: float, seed: int,
           device: str, threads: int) -> None:
    """Train one trial into runs/trial-<id>, or continue it there (a restored search, a lost node)."""
    import torch
    from ray import tune

    from monalisa.runs.lifecycle import finish_run, resume_run, train_run

    torch.set_num_threads(threads)
    interrupts.clear()  # a request left by the trial this process ran before (Ray may reuse it) is not ours
    path = Path(out) / "runs" / f"trial-{tune.get_context().get_trial_id()}"
    callback = _ReportToTune(tune.report)
    try:
        if (path / "run.json").is_file():  # Ray Tune restarted this trial: continue from our checkpoint
            run = RunDirectory.open(path)
            if run.info().get("status") in (*FINISHED, Status.STOPPED):
                return
            resume_run(run, quiet=True, callbacks=[callback])
        else:
            recipe = recipe_for(config, budget, seed, trial_seconds)
            train_run(target, recipe, path, device=device, frames="log", quiet=True, callbacks=[callback])
    except Diverged as exc:  # a row of the leaderboard, not a failed search
        with RunDirectory.open(path).writing() as run:
            run.update_info(status=Status.DIVERGED, message=str(exc))
    except Stopped:  # ASHA stopped it: the ending now (the driver settles any trial killed before this)
        finish_run(path, stopped=True)


# -----------------------------------------------------------------------------
# the search


def run_search(target: Target, out: str | Path, *, budget: int = 272_703, minutes: float = 20.0,
               trials: int | None = None, trial_seconds: float = TRIAL_SECONDS, seed: int = 0,
               device: str = "auto", ray: str = "local", resume: bool = False, quiet: bool = False,
               space: SearchSpace | None = None) -> dict:
    """Search recipes of at most ``budget`` parameters on ``target`` for ``minutes`` of wall time.

    ``trials``: at most this many (default: as many as the time allows). ``trial_seconds``: each
    trial's training time at most (ASHA stops most sooner). ``seed``: every trial's weights and
    pixel order, and the sampler's draws. ``ray``: where the trials train ("local", "auto",
    HOST:PORT; execution/ray_cluster.py). ``resume``: continue ``out`` after a Ctrl-C (the other arguments
    are then read from its search.json). Returns the summary (what summary.json holds).
    """
    from monalisa.execution.ray_cluster import (  # Ray is imported only here  # Ray: only here
        MISSING_RAY,
        RAY_LOG,
        Connection,
        chatter_to,
        check_address,
    )

    try:  # every piece the search needs, before anything is written (`ray` is the address here)
        for module in ("optuna", "ray.tune"):
            importlib.import_module(module)
    except ImportError:
        raise UserError(MISSING_RAY) from None
    out = Path(out)
    if resume:
        target, settings = _load_search(out)
    else:
        settings = {"budget": budget, "minutes": minutes, "trials": trials, "trial_seconds": trial_seconds,
                    "seed": seed, "device": device}
        _check_settings(settings)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{str(out)!r} already exists; continue it with --resume {out} or choose another --out")
    space = space or SearchSpace()
    # The widest network the budget makes (one layer), against limits.py: a budget or an image too
    # large is refused before anything is written.
    check_recipe(recipe_for({"depth": 1, "activation": "relu", "encoding": "none", "optimizer": "adam", "lr": 1e-3,
                             "batch_size": 1024}, settings["budget"]), pixels=target.height * target.width)
    check_address(ray)  # a bad address is the one line the user gets, before any progress line
    started = time.monotonic()
    where = "starting Ray on this machine" if ray == "local" else f"joining the Ray cluster at {ray}"
    _say(quiet, started, f"search: {'restoring' if resume else 'starting'} {out}; {where}")
    connection = Connection(ray)  # a bad address, or a cluster without the project: nothing written yet
    try:
        interrupts.check()  # a Ctrl-C while Ray started (cli.interruptible records it): nothing written yet
        if not resume:
            create_folder(out, "search")
            save_description(out, SEARCH_FILE, target, settings)
        _say(quiet, started, f"Ray ready: {connection.cpus} CPUs on {len(connection.nodes())} node(s); "
                             f"Ray's and Optuna's own messages go to {out / RAY_LOG}")
        with chatter_to(out / RAY_LOG, connection.startup_output):
            try:
                interrupted = _tune(connection, target, out.resolve(), settings, space, resume, quiet, started)
            finally:
                connection.close()
    finally:
        connection.close()  # closed already unless the directory could not be made
    if interrupted:
        raise KeyboardInterrupt  # Ray Tune saved its state: `--resume` continues it
    _say(quiet, started, "writing the leaderboard and the report")
    return _write_leaderboard(out, target, settings)


def _say(quiet: bool, started: float, text: str) -> None:
    """A progress line on stderr, after the search's wall time so far (sys.stderr as it is now: chatter_to
    points it elsewhere for a while)."""
    if not quiet:
        print(f"[{format_duration(time.monotonic() - started)}] {text}", file=sys.stderr, flush=True)


def _check_settings(settings: dict) -> None:
    if type(settings["budget"]) is not int or settings["budget"] < 1:
        raise UserError(f"budget must be a positive whole number of parameters, got {settings['budget']!r}")
    for name in ("minutes", "trial_seconds"):
        value = settings[name]
        if type(value) not in (int, float) or not (math.isfinite(value) and value > 0):
            raise UserError(f"{name} must be a positive number, got {value!r}")
    if settings["trials"] is not None and (type(settings["trials"]) is not int or settings["trials"] < 1):
        raise UserError(f"trials must be a positive whole number, got {settings['trials']!r}")
    # The seed also seeds Optuna's sampler, whose numpy RandomState takes 0 to 2**32 - 1 only.
    if type(settings["seed"]) is not int or not 0 <= settings["seed"] <= MAX_SAMPLER_SEED:
        raise UserError(f"a search's seed must be a whole number from 0 to 2**32 - 1 (it also seeds the sampler), "
                        f"got {quoted(settings['seed'])}")


def _load_search(out: Path) -> tuple[Target, dict]:
    path = out / SEARCH_FILE
    if not path.is_file():
        raise UserError(f"{str(out)!r} is not a search directory (no {SEARCH_FILE})")
    if (out / "summary.json").is_file():
        raise UserError(f"{str(out)!r} is a finished search; its report is {out / 'report.html'}")
    try:
        target, data = load_description(out, SEARCH_FILE, "search", "start the search again")
        settings = {name: data[name] for name in ("budget", "minutes", "trials", "trial_seconds", "seed", "device")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read search {str(out)!r}: {exc.__class__.__name__}: {exc}") from None
    _check_settings(settings)
    return target, settings


def _tune(connection, target: Target, out: Path, settings: dict, space: SearchSpace, resume: bool,
          quiet: bool, started: float) -> bool:
    """Run (or restore) the Ray Tune experiment in ``out``/tune; True if Ctrl-C cut it short."""
    import optuna
    from optuna.samplers import TPESampler

    # Our own line per trial instead of Ray Tune's tables, and no line per Optuna draw: the legacy
    # reporter at verbose=0 prints nothing (ray.tune.experimental.output.get_air_verbosity).
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    threads = 1  # one core a trial: the throughput setting on CPUs (docs/speed.md); more trials at once
    gpus = 1 if settings["device"] in ("cuda", "auto") and connection.gpus > 0 else 0
    slots = max(1, connection.cpus // threads if not gpus else min(connection.cpus, connection.gpus))
    trainable = tune.with_resources(
        tune.with_parameters(_trial, target=target, budget=settings["budget"], out=str(out),
                             trial_seconds=settings["trial_seconds"], seed=settings["seed"],
                             device=settings["device"], threads=threads),
        {"cpu": threads, "gpu": gpus})
    before = signal.getsignal(signal.SIGINT)
    lines = _lines(settings, quiet, started)
    if resume and tune.Tuner.can_restore(str(out / TUNE_NAME)):
        lines.restored = True
        # Unfinished trials start again and continue from their run directories; errored ones too
        # (a Ctrl-C reaches the trials' processes as well, and ends them in an error).
        tuner = tune.Tuner.restore(str(out / TUNE_NAME), trainable, resume_unfinished=True, resume_errored=True)
    else:  # a new search, or one stopped before Ray Tune saved anything (its trials' folders stay rows)
        seconds = settings["trial_seconds"]
        scheduler = ASHAScheduler(time_attr="train_seconds", metric="psnr", mode="max",
                                  max_t=seconds * MAX_T_SHARE, grace_period=seconds * GRACE_SHARE,
                                  reduction_factor=REDUCTION_FACTOR)
        searcher = ConcurrencyLimiter(OptunaSearch(space=functools.partial(suggest, space=space), metric="psnr",
                                                   mode="max", sampler=TPESampler(seed=settings["seed"])),
                                      max_concurrent=slots)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=settings["trials"] or -1,
                                        time_budget_s=settings["minutes"] * 60),
            run_config=tune.RunConfig(name=TUNE_NAME, storage_path=str(out), verbose=0,
                                      callbacks=[lines],
                                      failure_config=tune.FailureConfig(max_failures=3)))
    _say(quiet, started, f"{'restored Ray Tune; ' if lines.restored else ''}{slots} trial(s) at a time for "
                         f"{settings['minutes']:g} minutes, at most {settings['trial_seconds']:g} s of training each; "
                         "waiting for the first workers (each imports torch and compiles its kernels first)")
    tuner.fit()
    # Ray Tune answers the first Ctrl-C by saving its state and returning, and puts the handler it
    # found back only then (ray.tune.tune._setup_signal_catching): that is how an interruption shows.
    interrupted = signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, before)
    return interrupted


HEARTBEAT_SECONDS = 30.0  # a line at least this often while nothing else happens, so a long wait shows


def _lines(settings: dict, quiet: bool, started: float):
    """A Ray Tune callback: a line on stderr as each trial starts, reports its first epoch and ends, with the
    best so far by rank_key, and a line every HEARTBEAT_SECONDS of quiet. ``quiet``: a failed trial's line
    only. (Made here: Ray loads only in a search.)"""
    from ray.tune import Callback as TuneCallback

    trial_seconds = settings["trial_seconds"]

    class Lines(TuneCallback):
        restored = False

        def __init__(self):
            self.ended: dict[str, dict] = {}  # trial label -> its row for rank_key, as it ended
            self.started: set[str] = set()
            self.reported: set[str] = set()
            self.last = time.monotonic()

        def say(self, text: str, error: bool = False) -> None:
            if error or not quiet:
                self.last = time.monotonic()
                print(f"[{format_duration(self.last - started)}] {text}", file=sys.stderr, flush=True)

        def counts(self, trials) -> str:
            """'2 running, 3 done' (a trial being started or ended counts as it will be a moment later)."""
            done = {trial.trial_id for trial in trials if trial.is_finished()} | set(self.ended)
            return f"{len(self.started - done)} running, {len(done)} done"

        def best(self) -> str:
            if not self.ended:
                return ""
            best = rank_trials(list(self.ended.values()), trial_seconds)[0]
            psnr = "no epoch" if best["psnr"] is None else f"{best['psnr']:.2f} dB"
            return f"; best so far trial-{best['label']}, {psnr}{' (unfinished)' if best['unfinished'] else ''}"

        def on_trial_start(self, iteration, trials, trial, **info):
            try:
                what = recipe_for(trial.config, settings["budget"], settings["seed"], trial_seconds).describe()
            except UserError as exc:  # the trial fails the same way, and says so
                what = str(exc)
            self.started.add(trial.trial_id)
            self.say(f"trial-{trial.trial_id} started: {what} ({self.counts(trials)})")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if trial.trial_id not in self.reported:  # its worker is up: torch imported, kernels compiled
                self.reported.add(trial.trial_id)
                self.say(f"trial-{trial.trial_id}: first epoch, PSNR {result['psnr']:.2f} dB after "
                         f"{result['train_seconds']:.1f} s of training")

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            seconds = result.get("train_seconds") or 0.0
            status = Status.COMPLETE if seconds >= trial_seconds else Status.STOPPED
            self.end(trials, trial, status, result.get("psnr"), seconds)

        def on_trial_error(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            self.end(trials, trial, Status.ERROR, result.get("psnr"), result.get("train_seconds") or 0.0,
                     f" ({trial.error_file or 'no error file'})")

        def end(self, trials, trial, status, psnr, seconds, why: str = "") -> None:
            label = trial.trial_id
            row = {"label": label, "status": status, "psnr": psnr, "train_seconds": seconds,
                   "unfinished": unfinished_note(status, seconds, trial_seconds)}
            self.ended[label] = row
            shown = result_text(row) if psnr is not None else f"{status}, no epoch"
            self.say(f"trial-{label}: {'failed, ' if status == Status.ERROR else ''}{shown}{why} "
                     f"({self.counts(trials)}){self.best()}", error=status == Status.ERROR)

        def on_step_end(self, iteration, trials, **info):
            if time.monotonic() - self.last >= HEARTBEAT_SECONDS:
                waiting = "" if self.reported else "; waiting for the first workers"
                self.say(f"{self.counts(trials)}{waiting}{self.best()}")

    return Lines()


# -----------------------------------------------------------------------------
# the ranking rule: the one order of trials, for the leaderboard, the report, the CLI and best-recipe.toml


def asha_rungs(trial_seconds: float) -> list[float]:
    """The training seconds at which ASHA compares trials (the scheduler _tune makes: 7.5, 22.5 and 67.5 s
    for 60 s trials), earliest first."""
    grace, top = trial_seconds * GRACE_SHARE, trial_seconds * MAX_T_SHARE
    rungs = int(math.log(top / grace) / math.log(REDUCTION_FACTOR) + 1)  # as ray.tune's _Bracket counts them
    return [grace * REDUCTION_FACTOR ** k for k in range(rungs)]


def rank_key(status: str, psnr: float | None, seconds: float, trial_seconds: float) -> tuple:
    """Sort key of one trial, best first with ``sorted(..., key=rank_key)``: the search's one ranking rule.

    1. Trials that trained their whole ``trial_seconds`` (complete), by final PSNR: the question a
       search asks is which recipe is best after that much training, and only these answer it.
    2. Unfinished trials (stopped by ASHA or by the end of the search's minutes, interrupted, paused),
       by the last ASHA rung they reached, then final PSNR. An unfinished trial never outranks a
       complete one, even with a higher PSNR: its PSNR is measured after less training, so it is a
       different quantity (its curve might have gone on up, or flattened), and ASHA stopped it because
       the trials that had reached its rung were better there. A trial that reached a later rung was
       kept by ASHA over those stopped at an earlier one, so rungs come before PSNR.
    3. Failed trials (diverged, errored) and trials without an epoch, by final PSNR.

    The best trial is the first in this order; it is unfinished only when no trial completed, and
    then it is marked as such wherever it is named (``unfinished_note``).
    """
    if psnr is None or status in (Status.DIVERGED, Status.ERROR) or not math.isfinite(psnr):
        tier, rung = 2, 0
    elif status == Status.COMPLETE:
        tier, rung = 0, 0
    else:
        tier, rung = 1, sum(seconds >= milestone for milestone in asha_rungs(trial_seconds))
    value = psnr if psnr is not None and math.isfinite(psnr) else -math.inf
    return tier, -rung, -value


def unfinished_note(status: str, seconds: float, trial_seconds: float) -> str | None:
    """'stopped after 22.6 of 60 s' for a trial that did not train its whole time (stopped, interrupted,
    errored); None for one that finished (complete, or diverged: that is its answer, and it is marked
    as diverged)."""
    if status in FINISHED:
        return None
    return f"{status} after {seconds:.1f} of {trial_seconds:g} s"


# -----------------------------------------------------------------------------
# the leaderboard


def _write_leaderboard(out: Path, target: Target, settings: dict) -> dict:
    """Settle the trials ASHA stopped, rank every trial (rank_key), write the report and the best recipe."""
    from monalisa.experiments.report import write_outputs
    from monalisa.experiments.tables import conclusion
    from monalisa.runs.lifecycle import finish_run

    keys = sorted(path.name for path in (out / "runs").glob("trial-*") if (path / "run.json").is_file())
    for key in keys:
        _settle(RunDirectory.open(out / "runs" / key), finish_run)
    ranked = rank_trials([_trial_row(out, key, settings) for key in keys], settings["trial_seconds"])
    if not ranked:
        raise UserError(f"the search in {str(out)!r} finished no trial: give it more --minutes")
    best = ranked[0]
    write_text(out / BEST_RECIPE, f"# {best['label']}: {best['describe']}, {best['parameters']:,} parameters, "
                                  f"{result_text(best)}\n" + Recipe.from_dict(best["recipe"]).to_toml())
    top = ranked[:TOP_RUNS]
    summary = {"title": f"Search at {settings['budget']:,} parameters", "image": target.name,
               "width": target.width, "height": target.height, "seeds": 1, "runs": top,
               "conclusion": conclusion(top), "claims": [], "budget": settings["budget"],
               "trials": len(ranked), "best": {name: best[name] for name in _BEST_FIELDS},
               "leaderboard": [_leader(row) for row in ranked]}
    write_outputs(out, target, summary)  # report.md/html, curves, grid, finals of the best; summary.json last
    write_text(out / "leaderboard.csv", _leaderboard_csv(ranked))
    write_text(out / "report.md", (out / "report.md").read_text() + _leaderboard_markdown(ranked))
    return summary


_BEST_FIELDS = ("label", "status", "psnr", "train_seconds", "unfinished", "recipe")


def rank_trials(rows: list[dict], trial_seconds: float) -> list[dict]:
    """The trials' rows (``status``, ``psnr``, ``train_seconds``) best first, by rank_key; ties by label,
    so the same trials always rank alike."""
    return sorted(sorted(rows, key=lambda row: row["label"]),
                  key=lambda row: rank_key(row["status"], row["psnr"], row["train_seconds"], trial_seconds))


def _trial_row(out: Path, key: str, settings: dict) -> dict:
    """A trial's table row (table.entry_row), with its training seconds in all and its unfinished mark."""
    from monalisa.experiments.tables import entry_row

    row = json_safe(entry_row(out, key, [(settings["seed"], key)]))
    row["train_seconds"] = sum(m["train_seconds"] for m in RunDirectory(out / row["run_dir"]).metrics())
    row["unfinished"] = unfinished_note(row["status"], row["train_seconds"], settings["trial_seconds"])
    return row


def result_text(row: dict) -> str:
    """'PSNR 29.90 dB after 60.2 s of training', and the unfinished mark when it has one."""
    psnr = "no PSNR" if row["psnr"] is None else f"PSNR {row['psnr']:.2f} dB"
    text = f"{psnr} after {row['train_seconds']:.1f} s of training"
    return text + (f" (unfinished: {row['unfinished']})" if row["unfinished"] else "")


def _settle(run: RunDirectory, finish_run) -> None:
    """Write the ending of a trial that has none: killed as ASHA stopped it, or at the time limit.

    A trial that ASHA stopped writes its own ending (``_trial``), and Ray Tune may return before that
    process is done (seen on a loaded machine): its lock is then held, so wait for it to let go, up to
    SETTLE_SECONDS, and settle the run only if it still needs it. One trial's ending must not sink the
    search: a failure marks its row 'error'; a lock still held leaves the run as its writer left it.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while run.info().get("status") not in (*FINISHED, Status.STOPPED) and run.checkpoint() is not None:
        try:
            finish_run(run, stopped=True)
            return
        except RunBusy:
            if time.monotonic() > deadline:
                return
            time.sleep(0.5)
        except Exception as exc:
            try:
                with run.writing():
                    run.update_info(status=Status.ERROR, message=f"its ending failed: {type(exc).__name__}: {exc}")
            except RunBusy:
                pass
            return


def _leader(row: dict) -> dict:
    """A trial's line of summary.json's leaderboard."""
    return {name: row[name] for name in ("label", "status", "unfinished", "psnr", "epochs", "train_seconds",
                                         "parameters", "describe", "recipe")}


RANKING_NOTE = ("Ranked by the search's one rule: first the trials that trained their whole time, by final PSNR; then the "
                "unfinished ones (stopped by ASHA or by the end of the search, interrupted), by the last ASHA rung they "
                "reached, then final PSNR (a PSNR after less training answers another question); failed trials last.")


def _leaderboard_csv(ranked: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "trial", "status", "finished", "psnr", "train_seconds", "epochs", "parameters",
                     "recipe"])
    for rank, row in enumerate(ranked, 1):
        writer.writerow([rank, row["label"], row["status"], "no" if row["unfinished"] else "yes", row["psnr"],
                         f"{row['train_seconds']:.2f}", row["epochs"], row["parameters"], json.dumps(row["recipe"])])
    return buffer.getvalue()


def _leaderboard_markdown(ranked: list[dict]) -> str:
    lines = ["", "## Every trial", "", RANKING_NOTE, "",
             "| rank | trial | status | PSNR (dB) | training (s) | epochs | parameters | recipe |",
             "|--:|---|---|--:|--:|--:|--:|---|"]
    for rank, row in enumerate(ranked, 1):
        psnr = "—" if row["psnr"] is None else f"{row['psnr']:.2f}"
        status = f"**unfinished**: {row['unfinished']}" if row["unfinished"] else row["status"]
        lines.append(f"| {rank} | {row['label']} | {status} | {psnr} | {row['train_seconds']:.1f} | {row['epochs']} | "
                     f"{row['parameters']:,} | {row['describe']}, lr {row['recipe']['lr']:.2g} |")
    return "\n".join(lines) + "\n"

