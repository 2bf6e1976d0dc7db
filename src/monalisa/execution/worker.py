"""One run inside a worker process: ``execute``.

``execute(spec, threads, reports)`` is the one function that trains a RunSpec
(specs.py), whatever starts it. It sets the process's threads, pays its
one-time start-up costs, trains (train_run, or resume_run, which also finishes
a run whose epochs are done) or writes a stopped run's ending (finish_run),
and puts one ``end`` report on ``reports``: ``{"type": "end", "id": key,
"status": <runs/status.py name>, "message": str | None}``. Divergence is a status,
not an exception. It listens to two signals, so a worker needs nobody to train:

    SIGINT   pause: the run directory resumes from its last epoch
    SIGTERM  stop: the run ends and its ending is written (final.png, GIF, MP4, curves)

The handlers only record the request (interrupts.py); the worker acts on it at its next safe
point: after each stage of its start (imports, the engine's compilation or cache loading), and
in training between kernel calls (every 1,024 pixels online, every batched step) and epochs.
The Recorder has already checkpointed every finished epoch. The handlers are the first thing
execute sets, and a LocalExecutor starts its workers with both signals blocked until then, so a
request sent while a worker starts waits for it. A worker whose parent dies (even by SIGKILL)
pauses itself, so nothing trains unseen.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from monalisa import interrupts
from monalisa.errors import Diverged, UserError
from monalisa.interrupts import Stopped
from monalisa.runs.status import Status, status_after

if TYPE_CHECKING:
    from monalisa.execution.specs import RunSpec
    from monalisa.runs.directory import RunDirectory

ORPHAN_CHECK_SECONDS = 1.0  # how often a worker checks that its parent is still there
# After pausing itself, how long an orphan may take to write its status before it exits anyway:
# a pause that never lands (a kernel that does not return, a report that cannot be delivered)
# must not leave a process behind. Every file is written atomically, so leaving mid-write
# leaves the run readable and resumable.
ORPHAN_EXIT_SECONDS = 10.0


# -----------------------------------------------------------------------------
# one run, inside a worker


def execute(spec: RunSpec, threads: int, reports, parent: int | None = None) -> None:
    """Train ``spec`` in this process with ``threads`` threads; report its end on ``reports``.

    A continued run is locked before anything else, and held to the end (released before the
    end report, so the run may be queued again at once): a run another process holds
    (RunBusy) is reported as an error, and nothing of it is written. A new run is locked by
    train_run as it creates it. ``parent``: pause if that process goes away.
    """
    interrupts.listen()  # first: a request that arrived while this process started is recorded now
    from monalisa.runs.directory import RunDirectory

    path = Path(spec.path)
    fresh = spec.action == "start" and not (path / "run.json").exists()  # so a run we made is ours to mark
    status, message, run = None, None, None
    try:
        _watch_parent(parent, reports)
        if spec.action != "start":
            run = RunDirectory.open(path).hold()
        if spec.action != "finish":  # an ending, once begun, is written whole (a pause at closing included)
            interrupts.check()  # after the lock: a continued run stopped while its worker started is ours to end
        status, message = _train(spec, run, threads, reports)
    except Stopped:
        if status is None:
            ours = run is not None or (fresh and (path / "run.json").exists())
            status, message = _stop(run or path) if ours else (Status.STOPPED, None)  # nothing made: nothing to end
    except KeyboardInterrupt:  # Paused
        status = status or Status.PAUSED
    except Diverged as exc:
        status, message = Status.DIVERGED, str(exc)
    except UserError as exc:  # RunBusy too
        status, message = Status.ERROR, str(exc)
    except Exception as exc:  # a bug: say so where the run is watched, keep the watcher alive
        status, message = Status.ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        if run is None and fresh and (path / "run.json").exists():
            try:
                run = RunDirectory.open(path).hold()  # train_run made it and let go of it
            except UserError:
                run = None
        if run is not None:
            try:
                run.update_info(status=status or Status.ERROR, message=message)
            except UserError as exc:  # a full disk: run.json keeps its last whole version
                status, message = Status.ERROR, str(exc)
            run.unlock()
        reports.put({"type": "end", "id": spec.key, "status": str(status or Status.ERROR), "message": message})


def _train(spec: RunSpec, run: RunDirectory | None, threads: int, reports) -> tuple[str, str | None]:
    """(status, message) of the session: set up the process, then train, resume or finish."""
    import torch

    from monalisa.execution.live_reports import LiveReporter
    from monalisa.runs.lifecycle import resume_run, train_run

    torch.set_num_threads(threads)  # the runner's share of the cores
    if spec.action == "finish":
        return _stop(run)
    interrupts.check()
    engine, device = _engine(spec, run)
    if engine == "online":  # numba (0.2-0.4 s to import) loads only for the engine that uses it
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    else:
        _warm_up(device)
    interrupts.check()  # the engine's compilation or cache loading: fit checks again once it is built
    callbacks = [LiveReporter(spec.key, reports)] if spec.live else []
    if spec.action == "start":
        result = train_run(spec.target, spec.recipe, spec.path, device=spec.device, frames=spec.frames,
                           preset=spec.preset, quiet=True, callbacks=callbacks)
    else:
        result = resume_run(run, quiet=True, callbacks=callbacks)
    # From here on a late pause or stop changes nothing: the status is decided.
    return status_after(result.stopped_by), None if result.stopped_by == "epochs" else f"stopped by {result.stopped_by}"


def _engine(spec: RunSpec, run: RunDirectory | None) -> tuple[str, str]:
    """(engine, device) the session will train with: the spec's, or what the run recorded."""
    from monalisa.engines import choose_engine, resolve_device

    if spec.action == "start":
        return choose_engine("auto", spec.recipe, resolve_device(spec.device)), spec.device
    info = run.info()
    device = info.get("device") or "auto"  # as resume_run chooses
    return info.get("engine") or choose_engine("auto", run.recipe(), resolve_device(device)), device


def _warm_up(device: str) -> None:
    """Pay the batched engine's one-time costs before the run, so its first epoch is not charged for them.

    The first batched step (and CUDA's start-up) would land in the first epoch's train_seconds.
    The online engine needs nothing here: it loads its compiled kernels when it is built,
    outside the timing.
    """
    from monalisa.data.images import Target
    from monalisa.recipes.recipe import Recipe
    from monalisa.training.trainer import fit

    tiny = Target("warm-up", np.zeros((2, 2, 3), np.float32))
    fit(tiny, Recipe(arch=(1,), epochs=1, batch_size=4, optimizer="adam", init="torch"), device=device,
        engine="batched")


def _stop(run: RunDirectory | Path) -> tuple[str, str | None]:
    """A stopped run's ending (lifecycle.finish_run): no safe point inside, so a later request lets it finish."""
    from monalisa.runs.lifecycle import finish_run

    try:
        finish_run(run, stopped=True)
    except UserError as exc:
        return Status.ERROR, str(exc)
    return Status.STOPPED, None


def _watch_parent(parent: int | None, reports) -> None:
    if parent is not None:
        threading.Thread(target=_pause_when_orphaned, args=(parent, reports), daemon=True).start()


def _pause_when_orphaned(parent: int, reports) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    # The parent is gone: pause rather than train unseen, then make sure the process ends.
    interrupts.ask(interrupts.PAUSE)
    cancel = getattr(reports, "cancel_join_thread", None)
    if cancel is not None:  # a multiprocessing queue (another executor's): do not wait at exit to flush it
        cancel()
    time.sleep(ORPHAN_EXIT_SECONDS)
    os._exit(0)  # still here: the pause did not land; the run resumes from its last checkpoint
