"""Where runs train: ``execute`` (one run, inside a worker) and the executors that host it.

``execute(spec, threads, reports)`` is the one function that trains a RunSpec
(runner.py), whatever starts it. It sets the process's threads, pays its
one-time start-up costs, trains (train_run, or resume_run, which also finishes
a run whose epochs are done) or writes a stopped run's ending (finish_run),
and puts one ``end`` report on ``reports``: ``{"type": "end", "id": key,
"status": <status.py name>, "message": str | None}``. Divergence is a status,
not an exception. It listens to two signals, so a worker needs nobody to train:

    SIGINT   pause: stop now; the run directory resumes from its last epoch
    SIGTERM  stop: stop now and write the run's ending (final.png, GIF, MP4, curves)

Either one raises inside the training loop at the next progress report (numba
kernels return to Python every 1,024 pixels); the Recorder has already
checkpointed every finished epoch. A worker whose parent dies (even by SIGKILL)
pauses itself, so nothing trains unseen.

An executor starts specs and hands back a ``Handle``; reports from every
worker come out of one ``next_report``. ``LocalExecutor`` runs each spec in a
'spawn' process on this machine (torch and fork do not mix), each reporting on
a pipe of its own. A second
executor (Ray, say) implements the same four methods:

- ``start(spec, threads)``: run ``execute(spec, threads, reports)`` somewhere
  that can read and write ``spec.path`` (a shared disk), asking for
  ``threads`` CPUs (and a GPU for a cuda spec); return a Handle.
- ``Handle``: ``alive()``, ``pause()`` and ``stop()`` (delivered as SIGINT and
  SIGTERM to the worker, or as a flag its callbacks check), ``kill()`` (no
  chance to write anything: the runner settles the run), ``join(timeout)``.
- ``next_report(timeout)``: the next report from any worker, or None.
- ``close()``: free what carries the reports once no worker is left.
- optionally ``Handle.lost()``: True when the worker ended by a fault of where it ran
  (a cluster node that died), not of its run; the runner then resumes the run from its
  checkpoint instead of settling it (runner.py). Local workers are never lost: a local
  worker killed outright is the machine's verdict on the run (out of memory, say).

``ray_executor.RayExecutor`` is the second executor (`--ray ADDRESS`).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .errors import Diverged, UserError
from .status import Status, status_after

if TYPE_CHECKING:
    from .record import RunDirectory
    from .runner import RunSpec

ORPHAN_CHECK_SECONDS = 1.0  # how often a worker checks that its parent is still there
# After pausing itself, how long an orphan may take to write its status before it exits anyway:
# a pause that never lands (a kernel that does not return, a report that cannot be delivered)
# must not leave a process behind. Every file is written atomically, so leaving mid-write
# leaves the run readable and resumable.
ORPHAN_EXIT_SECONDS = 10.0


class Paused(KeyboardInterrupt):
    """SIGINT in a worker: leave the run resumable."""


class Stopped(KeyboardInterrupt):
    """SIGTERM in a worker: end the run here and write its ending."""


# -----------------------------------------------------------------------------
# one run, inside a worker


def execute(spec: RunSpec, threads: int, reports, parent: int | None = None) -> None:
    """Train ``spec`` in this process with ``threads`` threads; report its end on ``reports``.

    A continued run is locked before anything else, and held to the end (released before the
    end report, so the run may be queued again at once): a run another process holds
    (RunBusy) is reported as an error, and nothing of it is written. A new run is locked by
    train_run as it creates it. ``parent``: pause if that process goes away.
    """
    from .record import RunDirectory

    path = Path(spec.path)
    fresh = spec.action == "start" and not (path / "run.json").exists()  # so a run we made is ours to mark
    status, message, run = None, None, None
    try:
        _listen(parent, reports)
        if spec.action != "start":
            run = RunDirectory.open(path).hold()
        status, message = _train(spec, run, threads, reports)
    except Stopped:
        if status is None:
            ours = run is not None or (fresh and (path / "run.json").exists())
            status, message = _stop(run or path) if ours else (Status.STOPPED, None)  # nothing made: nothing to end
    except KeyboardInterrupt:  # Paused, or a SIGINT before our handler was in place
        status = status or Status.PAUSED
    except Diverged as exc:
        status, message = Status.DIVERGED, str(exc)
    except UserError as exc:  # RunBusy too
        status, message = Status.ERROR, str(exc)
    except Exception as exc:  # a bug: say so where the run is watched, keep the watcher alive
        status, message = Status.ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        _ignore_signals()
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

    from .experiment import resume_run, train_run
    from .live import LiveReporter

    torch.set_num_threads(threads)  # the runner's share of the cores
    if spec.action == "finish":
        return _stop(run)
    engine, device = _engine(spec, run)
    if engine == "online":  # numba (0.2-0.4 s to import) loads only for the engine that uses it
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    else:
        _warm_up(device)
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
    from .engines import choose_engine, resolve_device

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
    from .images import Target
    from .recipes import Recipe
    from .train import fit

    tiny = Target("warm-up", np.zeros((2, 2, 3), np.float32))
    fit(tiny, Recipe(arch=(1,), epochs=1, batch_size=4, optimizer="adam", init="torch"), device=device,
        engine="batched")


def _stop(run: RunDirectory | Path) -> tuple[str, str | None]:
    """A stopped run's ending (experiment.finish_run), safe from a second signal."""
    from .experiment import finish_run

    _ignore_signals()
    try:
        finish_run(run, stopped=True)
    except UserError as exc:
        return Status.ERROR, str(exc)
    return Status.STOPPED, None


def _listen(parent: int | None, reports) -> None:
    signal.signal(signal.SIGINT, _raise_on)
    signal.signal(signal.SIGTERM, _raise_on)
    if parent is not None:
        threading.Thread(target=_pause_when_orphaned, args=(parent, reports), daemon=True).start()


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _raise_on(signum, frame):
    _ignore_signals()  # only the first signal counts: a second one while the run is finished would cut that short
    raise Paused() if signum == signal.SIGINT else Stopped()


def _pause_when_orphaned(parent: int, reports) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    # The parent is gone: pause rather than train unseen, then make sure the process ends.
    os.kill(os.getpid(), signal.SIGINT)
    cancel = getattr(reports, "cancel_join_thread", None)
    if cancel is not None:  # a multiprocessing queue (another executor's): do not wait at exit to flush it
        cancel()
    time.sleep(ORPHAN_EXIT_SECONDS)
    os._exit(0)  # still here: the pause did not land; the run resumes from its last checkpoint


# -----------------------------------------------------------------------------
# executors


class Handle(Protocol):
    """One started spec, as its runner sees it."""

    def alive(self) -> bool: ...
    def pause(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def describe_exit(self) -> str: ...


class Executor(Protocol):
    def start(self, spec: RunSpec, threads: int) -> Handle: ...
    def next_report(self, timeout: float) -> dict | None: ...
    def close(self) -> None: ...


class LocalHandle:
    """A spawned worker process; signals to a process already gone are ignored."""

    def __init__(self, process: multiprocessing.Process):
        self.process = process

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def pause(self) -> None:
        self._signal(signal.SIGINT)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        self.process.join(timeout)

    def describe_exit(self) -> str:
        return f"exit code {self.process.exitcode}"

    def lost(self) -> bool:
        return False  # see the module's docstring: a local worker's death is its run's

    def _signal(self, signum: int) -> None:
        try:
            if self.process.pid is not None and self.process.is_alive():
                os.kill(self.process.pid, signum)
        except ProcessLookupError:
            pass


class LocalExecutor:
    """Each spec in its own 'spawn' process on this machine, reporting on a pipe of its own.

    One pipe per worker, not one queue for all: a worker killed outright in the middle of a
    report would hold a shared queue's write lock forever and silence every other worker,
    and a queue's feeder thread keeps a worker whose reader is gone from exiting. A pipe end
    is written synchronously, and its reader sees EOF when the worker is gone.
    """

    target = staticmethod(execute)  # what a worker runs (a test may wrap it)

    def __init__(self):
        self._context = multiprocessing.get_context("spawn")
        self._readers: list[Connection] = []
        self._received: collections.deque[dict] = collections.deque()
        self._lock = threading.Lock()  # start() and next_report() may run on different threads

    def start(self, spec: RunSpec, threads: int) -> LocalHandle:
        reader, writer = self._context.Pipe(duplex=False)
        # Not a daemon: multiprocessing would SIGTERM (stop) a daemon at exit; the runner pauses it instead.
        process = self._context.Process(target=self.target, name=f"monalisa-run {spec.key}", daemon=False,
                                        args=(spec, threads, PipeReports(writer), os.getpid()))
        process.start()
        writer.close()  # the worker holds the only write end now: its exit is this reader's EOF
        with self._lock:
            self._readers.append(reader)
        return LocalHandle(process)

    def next_report(self, timeout: float) -> dict | None:
        with self._lock:
            if not self._received:
                self._receive(timeout)
            return self._received.popleft() if self._received else None

    def close(self) -> None:
        with self._lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _receive(self, timeout: float) -> None:
        """One report from each worker that has one ready, waiting up to ``timeout`` for any."""
        if not self._readers:
            time.sleep(max(0.0, timeout))  # nobody to hear from: wait as a queue would
            return
        for reader in wait(self._readers, timeout):
            try:
                self._received.append(reader.recv())
            except (EOFError, OSError):  # the worker is gone and everything it sent has been read
                reader.close()
                self._readers.remove(reader)


class PipeReports:
    """A worker's end of its report pipe, with a queue's ``put``."""

    def __init__(self, connection: Connection):
        self._connection = connection

    def put(self, report: dict) -> None:
        try:
            self._connection.send(report)
        except OSError:  # the reader is gone (BrokenPipeError): the orphan check pauses the run
            pass
