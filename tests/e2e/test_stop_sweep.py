"""A stop always stops, a pause always pauses: requests at many moments of a worker's life, real
worker processes through the runner and the LocalExecutor.

Each trial is a run directory made as the lab makes one (written, marked queued) and trained by a
"resume" spec, with a request at a fixed delay after its start, or after a pause and a resume, from
0 s (the worker is still starting Python) through imports, the engine's compilation or numba's cache
loading, and training (up to 6 s), and a few counted from the moment training began. Every stopped run must end 'stopped' with its ending (final.png,
learning.gif, learning.mp4, curves.png); every paused one 'paused'. Most trials train on the batched
engine, a few on the online one (numba). Trials run TRIALS_AT_ONCE at a time to share the machine's
start-up costs; the whole sweep is bounded by SWEEP_SECONDS.
"""

import json
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from monalisa import Recipe, Target
from monalisa.execution.runner import Runner
from monalisa.execution.specs import RESUME, RunSpec
from monalisa.models.network import build_model
from monalisa.runs.directory import RunDirectory
from monalisa.training.inference import render, to_frame

BATCHED = Recipe(arch=(8,), epochs=100000, batch_size=4, optimizer="adam")  # until stopped
ONLINE = Recipe(arch=(8,), epochs=100000)  # batch 1, plain SGD: the online engine
STOP_AFTER_START = (0.0, 0.5, 1.5, 2.5, 4.0, 6.0)
ONLINE_STOP_AFTER_START = (1.0, 3.0)
STOP_AFTER_RESUME = (0.0, 0.5, 1.5, 3.0, 5.0)
ONLINE_STOP_AFTER_RESUME = (2.0,)
# On a machine busy enough that a worker takes longer than 6 s to start, the delays above all land in
# its start; these count from its first live report instead (fit has begun), so some stops always
# land in training, between kernel calls, on both engines.
STOP_IN_TRAINING = (("batched", 0.0), ("online", 0.2))
PAUSE_AFTER_START = (0.0, 1.0, 3.0)
TRIALS_AT_ONCE = 6
SWEEP_SECONDS = 400.0  # far above the ~60-90 s it takes on two busy cores: a hang, not a slow machine
ENDING = ("final.png", "learning.gif", "learning.mp4", "curves.png")


def target() -> Target:
    y, x = np.mgrid[0:12, 0:16] / 16.0
    pixels = np.stack([np.sin(6 * x) ** 2, np.cos(5 * y) ** 2, (x + y) / 2], axis=2)
    return Target(name="blobs", pixels=pixels.astype(np.float32))


@dataclass
class Trial:
    key: str
    recipe: Recipe
    request: str  # "stop" or "pause"
    delay: float
    after_resume: bool
    in_training: bool = False  # the delay counts from the worker's "started" report, not from the submit
    phase: str = "waiting"  # "first": training towards its pause; "timed": the delay runs from t0
    t0: float | None = None
    asked: bool = False
    end: dict | None = None
    log: list | None = None  # (seconds since the sweep began, what happened): for a failure's message


def make_run(path, recipe: Recipe) -> None:
    """A run directory as the lab writes one (lab.jobs.Lab._write_run): created, then marked queued."""
    run = RunDirectory.create(path, recipe, target(), {"frames": "log"})
    with run.writing():
        run.update_info(status="queued")


def trials() -> list[Trial]:
    made = []
    for engine, recipe, after_start, after_resume in (("batched", BATCHED, STOP_AFTER_START, STOP_AFTER_RESUME),
                                                      ("online", ONLINE, ONLINE_STOP_AFTER_START,
                                                       ONLINE_STOP_AFTER_RESUME)):
        made += [Trial(f"stop-{engine}-{d}", recipe, "stop", d, False) for d in after_start]
        made += [Trial(f"stop-resumed-{engine}-{d}", recipe, "stop", d, True) for d in after_resume]
    made += [Trial(f"stop-training-{engine}-{d}", BATCHED if engine == "batched" else ONLINE, "stop", d, False,
                   in_training=True) for engine, d in STOP_IN_TRAINING]
    made += [Trial(f"pause-batched-{d}", BATCHED, "pause", d, False) for d in PAUSE_AFTER_START]
    # The ones that train first go first: their pause and resume take longest.
    return sorted(made, key=lambda t: not t.after_resume)


def run_sweep(out) -> tuple[list[Trial], float]:
    runner = Runner(TRIALS_AT_ONCE, threads=1)
    waiting, active, done = trials(), {}, []
    started = time.monotonic()

    def note(trial: Trial, what: str) -> None:
        trial.log = (trial.log or []) + [(round(time.monotonic() - started, 2), what)]

    def begin(trial: Trial, phase: str) -> None:
        trial.phase, trial.asked = phase, False
        trial.t0 = None if trial.in_training else time.monotonic()
        note(trial, f"submitted ({phase})")
        # Live reports only where the trial waits for an epoch (its first pause) or for training to begin.
        live = phase == "first" or trial.in_training
        runner.submit(RunSpec(trial.key, out / trial.key, RESUME, live=live))

    try:
        while waiting or active:
            assert time.monotonic() - started < SWEEP_SECONDS, f"still running: {sorted(active)}"
            while waiting and len(active) < TRIALS_AT_ONCE:
                trial = waiting.pop(0)
                make_run(out / trial.key, trial.recipe)
                active[trial.key] = trial
                begin(trial, "first" if trial.after_resume else "timed")
            now = time.monotonic()
            for trial in active.values():
                if trial.phase == "timed" and not trial.asked and trial.t0 is not None \
                        and now >= trial.t0 + trial.delay:
                    # False while a resumed run's last worker is not yet reaped: asked again next time round.
                    trial.asked = runner.stop(trial.key) if trial.request == "stop" else runner.pause(trial.key)
                    note(trial, f"{trial.request}: {trial.asked}")
            for report in runner.poll(0.05):
                trial = active.get(report["id"])
                if trial is None:
                    continue
                if report["type"] not in ("progress", "frame", "epoch"):
                    note(trial, f"{report['type']} {report.get('status', '')} {report.get('message') or ''}")
                if report["type"] == "started" and trial.in_training:
                    trial.t0 = time.monotonic()
                elif report["type"] == "epoch" and trial.phase == "first" and not trial.asked:
                    trial.asked = runner.pause(trial.key)
                    note(trial, f"pause at epoch {report['row']['epoch']}: {trial.asked}")
                elif report["type"] == "end" and trial.phase == "first":
                    assert report["status"] == "paused", report
                    begin(trial, "timed")  # the resume: the delay runs from here
                elif report["type"] == "end":
                    trial.end = report
                    done.append(active.pop(trial.key))
    finally:
        runner.close(timeout=30)
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    done, seconds = run_sweep(out)
    return out, done, seconds


def info(out, trial: Trial) -> dict:
    return json.loads((out / trial.key / "run.json").read_text())


def test_every_stop_ends_stopped_with_its_ending(sweep):
    out, done, seconds = sweep
    stops = [t for t in done if t.request == "stop"]
    assert len(stops) == len(STOP_AFTER_START + ONLINE_STOP_AFTER_START + STOP_AFTER_RESUME + ONLINE_STOP_AFTER_RESUME
                             + STOP_IN_TRAINING)
    for trial in stops:
        where = (f"{trial.key} (stopped {trial.delay} s after its {'resume' if trial.after_resume else 'start'}; "
                 f"{trial.log})")
        assert trial.end["status"] == "stopped", f"{where}: {trial.end}"
        assert info(out, trial)["status"] == "stopped", where
        missing = [name for name in ENDING if not (out / trial.key / name).is_file()]
        assert not missing, f"{where}: no {', '.join(missing)}"
    # The delays reached both sides of the first epoch: some stops found nothing trained, some epochs.
    epochs = {trial.key: info(out, trial)["epochs_done"] for trial in stops}
    assert min(epochs.values()) == 0 and max(epochs.values()) >= 1, epochs
    print(f"the sweep: {len(done)} trials in {seconds:.0f} s; epochs done at each stop: {epochs}")


def test_every_pause_ends_paused(sweep):
    out, done, _ = sweep
    pauses = [t for t in done if t.request == "pause"]
    assert len(pauses) == len(PAUSE_AFTER_START)
    for trial in pauses:
        assert trial.end["status"] == "paused", f"{trial.key}: {trial.end}; {trial.log}"
        assert info(out, trial)["status"] == "paused", trial.key


def test_a_stopped_run_with_no_epoch_shows_its_untrained_network(sweep):
    """Stopped before its first epoch: frame 0 is the network built from its recipe's seed, rendered."""
    out, done, _ = sweep
    untrained = [t for t in done if t.request == "stop" and info(out, t)["epochs_done"] == 0]
    assert untrained
    trial = untrained[0]
    expected = to_frame(render(build_model(trial.recipe), target().coords, torch.device("cpu")), 12, 16)
    assert np.array_equal(np.asarray(Image.open(out / trial.key / "final.png").convert("RGB")), expected)
    assert RunDirectory(out / trial.key).metrics() == []  # no epoch is claimed
