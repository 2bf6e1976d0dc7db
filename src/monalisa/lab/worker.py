"""One lab run in its own process: train (or finish) a run directory, reporting live to the server.

The server starts ``work`` in a 'spawn' process per run (torch and fork do not
mix) and talks to it with signals only, so a worker needs no server to train:

    SIGINT   pause: stop now; the run directory resumes from its last epoch
    SIGTERM  stop: stop now and finish the run (final.png, GIF, MP4, curves)

Either one raises inside the training loop at the next progress report
(numba kernels return to Python every 1,024 pixels), the Recorder has already
checkpointed every finished epoch, and the worker writes the run's status
before it exits. A worker whose server dies (even by SIGKILL) pauses itself,
so nothing trains unseen.

Live reports go to the server through a queue as plain dicts: ``started``,
``progress`` (a few a second), ``frame`` (a PNG: every epoch, and a preview
within long epochs), ``epoch`` (the metrics row) and ``end``.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

from ..errors import Diverged, UserError
from ..files import png_bytes
from ..images import coordinate_grid
from ..train import Callback, Trainer, render, to_frame

PROGRESS_SECONDS = 0.25  # at most this often a progress report: a smooth bar, little traffic
FRAME_SECONDS = 0.1  # end-of-epoch frames at most this often (tiny images train hundreds of epochs a second)
# A preview within an epoch once the epoch has run this long without one; never more than
# PREVIEW_SHARE of the time on previews (a preview is a forward pass over many pixels).
PREVIEW_SECONDS = 1.5
PREVIEW_SHARE = 0.1
PREVIEW_PIXELS = 40_000  # previews render every s-th row and column down to about this many pixels


class Paused(KeyboardInterrupt):
    """SIGINT in a worker: leave the run resumable."""


class Stopped(KeyboardInterrupt):
    """SIGTERM in a worker: end the run here and write its ending."""


class LiveReporter(Callback):
    """Sends progress, frames and metrics to the server as they happen."""

    def __init__(self, run_id: str, events):
        self.run_id = run_id
        self.events = events
        self.last_progress = 0.0
        self.last_frame = 0.0
        self.preview_cost = 0.0
        self.preview_coords: np.ndarray | None = None
        self.preview_shape = (0, 0)

    def send(self, kind: str, **fields) -> None:
        self.events.put({"type": kind, "id": self.run_id, **fields})

    def on_start(self, trainer: Trainer) -> None:
        height, width = trainer.target.height, trainer.target.width
        step = max(1, int(np.ceil(np.sqrt(height * width / PREVIEW_PIXELS))))
        grid = coordinate_grid(height, width).reshape(height, width, 2)[::step, ::step]  # (h, w, 2)
        self.preview_shape = grid.shape[:2]
        self.preview_coords = np.ascontiguousarray(grid.reshape(-1, 2))
        self.last_frame = time.perf_counter()
        self.send("started", epoch=trainer.epoch, engine=trainer.engine_name, device=str(trainer.device))

    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None:
        now = time.perf_counter()
        if now - self.last_progress >= PROGRESS_SECONDS:
            self.last_progress = now
            self.send("progress", epoch=epoch, fraction=fraction)
        waited = now - self.last_frame
        if fraction < 0.95 and waited >= max(PREVIEW_SECONDS, self.preview_cost / PREVIEW_SHARE):
            with trainer.untimed():  # a preview is not training: kept out of train_seconds
                started = time.perf_counter()
                trainer.engine.sync()
                output = render(trainer.model, self.preview_coords, trainer.device)
                frame = to_frame(output, *self.preview_shape)
                self.send("frame", epoch=epoch, fraction=fraction, png=png_bytes(frame))
                self.preview_cost = time.perf_counter() - started
                self.last_frame = time.perf_counter()

    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None:
        self.send("epoch", row=dict(row))
        now = time.perf_counter()
        if now - self.last_frame >= FRAME_SECONDS or trainer.epoch >= trainer.recipe.epochs:
            self.last_frame = now
            self.send("frame", epoch=row["epoch"], fraction=1.0, png=png_bytes(frame))


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _raise_on(signum, frame):
    _ignore_signals()  # only the first signal counts: a second one while the run is finished would cut that short
    raise Paused() if signum == signal.SIGINT else Stopped()


def _pause_when_orphaned(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:  # the server is gone: pause rather than train unseen
            os.kill(os.getpid(), signal.SIGINT)
            return


def work(run_dir: str, run_id: str, action: str, threads: int, events, parent: int) -> None:
    """Train the run at ``run_dir`` to its recipe's epochs (action 'train'), or write its ending ('finish').

    The worker holds the run's lock from start to end (released before it reports its end, so the
    server may queue the run again at once). A run it cannot lock is another process's: it reports
    why and writes nothing."""
    from ..experiment import resume_run
    from ..record import RunDirectory

    try:
        run = RunDirectory.open(run_dir).lock()
    except UserError as exc:
        events.put({"type": "end", "id": run_id, "status": "error", "message": str(exc)})
        return
    status, message = "error", None
    try:
        signal.signal(signal.SIGINT, _raise_on)
        signal.signal(signal.SIGTERM, _raise_on)
        threading.Thread(target=_pause_when_orphaned, args=(parent,), daemon=True).start()
        import numba
        import torch

        torch.set_num_threads(threads)  # the server gives each worker its share of the cores
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        if action == "finish":
            status = _finish(run)
        else:
            result = resume_run(run, quiet=True, callbacks=[LiveReporter(run_id, events)])
            status = "complete"  # from here on a late pause or stop changes nothing
            message = None if result.stopped_by == "epochs" else f"stopped by {result.stopped_by}"
    except Paused:
        if status != "complete":
            status = "paused"
    except Stopped:
        if status != "complete":
            try:
                status = _finish(run)
            except UserError as exc:
                status, message = "error", str(exc)
    except Diverged as exc:
        status, message = "diverged", str(exc)
    except UserError as exc:
        status, message = "error", str(exc)
    except Exception as exc:  # a bug: say so on the page, keep the server alive
        status, message = "error", f"{type(exc).__name__}: {exc}"
    finally:
        _ignore_signals()
        try:
            run.update_info(status=status, message=message)
        except UserError as exc:  # a full disk: run.json keeps its last whole version
            status, message = "error", str(exc)
        run.unlock()
        events.put({"type": "end", "id": run_id, "status": status, "message": message})


def _finish(run) -> str:
    """A stopped run's ending (experiment.finish_run), safe from a second signal."""
    from ..experiment import finish_run

    _ignore_signals()
    finish_run(run, stopped=True)
    return "stopped"
