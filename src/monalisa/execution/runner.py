"""The one runner that trains run specs (specs.py) over an executor (executor.py).

    from monalisa.execution.runner import Runner
    from monalisa.execution.specs import RunSpec
    specs = [RunSpec("a", "cmp/runs/a", "start", target=target, recipe=recipe),
             RunSpec("b", "cmp/runs/b")]  # continue what is on disk
    ends = Runner(jobs=2).run_all(specs, on_report=print)  # {"a": {"type": "end", "status": "complete", ...}, ...}

A ``RunSpec`` says what one run is; the ``Runner`` trains specs at most ``jobs``
at a time over an executor (local.py: processes on this machine; ray_cluster.py: a Ray
cluster), the rest waiting in order, each with ``cores // jobs`` threads: two
processes of two threads on two cores thrash (measured 10x slower). Everything
that trains many runs goes through here: a comparison (experiments/compare.py, and the
studies through it) with the blocking ``run_all``, the lab (lab/jobs.py) with
submit / pause / stop / cancel and a thread that calls ``poll``.

Reports are plain dicts ``{"type", "id": spec key, ...}``: a spec that asks for
live reports sends ``started``, ``progress``, ``frame`` and ``epoch`` (live_reports.py);
every started spec ends with exactly one ``end`` report carrying its status
(runs/status.py's names) and a message. A worker that dies without a word (a
SIGKILL, the OOM killer) is settled here: its run directory is marked
'interrupted' unless it wrote its own status, and its ``end`` says so; one that was
asked to stop gets its ending from a "finish" spec instead, as a stop promises. A worker
its executor reports *lost* (``Handle.lost()``: a cluster node that died under it)
is not the run's fault: its run goes back to the front of the queue as a "resume"
spec (from its last checkpoint, on whichever node is free), at most MAX_RESTARTS
times, with a ``restart`` report instead of an end. A run
directory is only ever written by whoever holds its lock (runs/directory.py): the
worker, or this runner while no worker is on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monalisa import interrupts
from monalisa.engines.cores import usable_cores
from monalisa.errors import UserError
from monalisa.execution.executor import Executor, Handle
from monalisa.execution.local import LocalExecutor
from monalisa.execution.specs import FINISH, RESUME, START, RunSpec
from monalisa.runs.directory import RunDirectory
from monalisa.runs.status import Status

POLL_SECONDS = 0.2  # how long a poll waits for a report: the lab's live view lags by at most this
CLOSE_SECONDS = 20.0  # how long closing waits for workers to checkpoint and exit before killing them
MAX_REPORTS_PER_POLL = 1000  # a flood of reports cannot keep a poll from reaping and starting
# Restarts of one run after lost workers: Ray's own default retries of a task (max_retries=3). A run
# that loses more than this many machines is more likely killing them (memory) than unlucky.
MAX_RESTARTS = 3


@dataclass
class _Job:
    spec: RunSpec
    handle: Handle
    intent: str | None = None  # "pause" or "stop" once asked
    ended: bool = False  # its end report arrived (it wrote its status); reaped once its worker exits


class Runner:
    """At most ``jobs`` specs at a time over ``executor``; the others wait in order. Thread-safe."""

    def __init__(self, jobs: int = 1, executor: Executor | None = None, threads: int | None = None):
        if type(jobs) is not int or jobs < 1:
            raise UserError(f"jobs must be a positive whole number, got {jobs!r}")
        self.jobs = jobs
        self.threads = threads or max(1, usable_cores() // jobs)  # computed once: every job gets this share
        self.executor = executor or LocalExecutor()
        self._lock = threading.RLock()
        self._waiting: list[RunSpec] = []
        self._running: dict[str, _Job] = {}  # key -> job, from its start until its worker is reaped
        self._closed = False
        self._executor_closed = False
        self._restarts: dict[str, int] = {}  # key -> times its run was restarted after a lost worker

    # -- asking -------------------------------------------------------------------

    def submit(self, spec: RunSpec, first: bool = False) -> None:
        """Queue ``spec`` (at the front with ``first``), and start it if a slot is free."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the runner is closed")
            if any(waiting.key == spec.key for waiting in self._waiting):
                raise ValueError(f"{spec.key!r} is already waiting")
            self._waiting.insert(0, spec) if first else self._waiting.append(spec)
            self._fill()

    def cancel(self, key: str) -> bool:
        """Take a waiting spec out of the queue; False if ``key`` was not waiting."""
        with self._lock:
            before = len(self._waiting)
            self._waiting = [spec for spec in self._waiting if spec.key != key]
            return len(self._waiting) != before

    def pause(self, key: str) -> bool:
        """Ask a running spec to pause (it stays resumable); False if ``key`` is not running."""
        return self._ask(key, "pause")

    def stop(self, key: str) -> bool:
        """Ask a running spec to stop and write its ending; False if ``key`` is not running."""
        return self._ask(key, "stop")

    def _ask(self, key: str, intent: str) -> bool:
        with self._lock:
            job = self._running.get(key)
            if job is None or job.ended:
                return False
            job.intent = intent
            job.handle.pause() if intent == "pause" else job.handle.stop()
            return True

    def status(self, key: str) -> Status | None:
        """What only the runner knows: queued, running, pausing or stopping; None once ended (or never ours)."""
        with self._lock:
            job = self._running.get(key)
            if job is not None and not job.ended:
                if job.spec.action == FINISH or job.intent == "stop":
                    return Status.STOPPING
                return Status.PAUSING if job.intent == "pause" else Status.RUNNING
            waiting = next((spec for spec in self._waiting if spec.key == key), None)
            if waiting is not None:  # an ending waiting for a worker is already the stop under way
                return Status.STOPPING if waiting.action == FINISH else Status.QUEUED
            return None

    def waiting(self) -> list[str]:
        with self._lock:
            return [spec.key for spec in self._waiting]

    def running(self) -> list[str]:
        """Keys of the started specs whose workers have not been reaped yet."""
        with self._lock:
            return list(self._running)

    # -- the pump -----------------------------------------------------------------

    def poll(self, timeout: float = POLL_SECONDS) -> list[dict]:
        """Wait up to ``timeout`` for reports; take every one waiting, reap the workers that exited
        (settling any that died without a word), and start waiting specs. The reports, in order."""
        reports = []
        report = self.executor.next_report(timeout)
        while report is not None and len(reports) < MAX_REPORTS_PER_POLL:
            reports.append(report)
            report = self.executor.next_report(0)
        if report is not None:
            reports.append(report)
        with self._lock:
            for report in reports:
                self._note(report)
            reports += self._reap()
            self._fill()
        return reports

    def run_all(self, specs: list[RunSpec], on_report: Callable[[dict], None] | None = None,
                on_poll: Callable[[], None] | None = None) -> dict[str, dict]:
        """Train ``specs`` to their ends; each spec's ``end`` report, by key.

        ``on_report`` sees every report as it comes, ``on_poll`` is called after every poll (a
        progress line). Ctrl-C, or any exception (from ``on_report`` too), pauses every worker,
        waits for them (killing stragglers) and re-raises: every run directory resumes.
        """
        keys = {spec.key for spec in specs}
        if len(keys) != len(specs):
            raise ValueError("two specs share a key")
        ends: dict[str, dict] = {}
        try:
            for spec in specs:
                self.submit(spec)
            while len(ends) < len(specs):
                interrupts.check()  # the CLI's Ctrl-C, recorded by its handler (cli.interruptible)
                for report in self.poll():
                    if report["type"] == "end" and report["id"] in keys:
                        ends[report["id"]] = report
                    if on_report is not None:
                        on_report(report)
                if on_poll is not None:
                    on_poll()
        except BaseException:
            self.close()
            raise
        return ends

    def close(self, reason: str = "closed before it ended; resume the run to continue it",
              timeout: float = CLOSE_SECONDS) -> list[dict]:
        """Pause every running spec (each resumes from its last epoch) and wait up to ``timeout`` for
        them; kill the rest, which are settled with ``reason``. Waiting specs are dropped (nothing of
        them is on disk that a caller did not write). The last reports. Closing twice does nothing."""
        with self._lock:
            self._closed = True
            self._waiting.clear()
            jobs = list(self._running.values())
            for job in jobs:
                if not job.ended:
                    job.intent = job.intent or "pause"
                    job.handle.pause()
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.handle.join(max(0.1, deadline - time.monotonic()))
            if job.handle.alive():
                job.handle.kill()
                job.handle.join()
        with self._lock:
            reports = self._drain() + self._reap(reason)
            if not self._executor_closed:
                self._executor_closed = True
                self.executor.close()
        return reports

    # -- inside the lock ------------------------------------------------------------

    def _fill(self) -> None:
        """Start waiting specs while slots are free. A key whose last worker has reported its end but
        not yet exited waits until it is reaped: one worker per run, each tracked until joined."""
        while not self._closed and len(self._running) < self.jobs:
            ready = [i for i, spec in enumerate(self._waiting) if spec.key not in self._running]
            if not ready:
                return
            spec = self._waiting.pop(ready[0])
            if spec.action != START:
                # Marked before the worker starts, so its own writes come after, and so a worker that
                # dies before it writes anything is settled as interrupted.
                _mark(spec.path, Status.RUNNING, None)
            handle = self.executor.start(spec, spec.threads or self.threads)
            self._running[spec.key] = _Job(spec, handle)

    def _note(self, report: dict) -> None:
        job = self._running.get(report.get("id"))
        if report.get("type") == "end" and job is not None:
            job.ended = True

    def _drain(self) -> list[dict]:
        reports = []
        report = self.executor.next_report(0)
        while report is not None and len(reports) < MAX_REPORTS_PER_POLL:
            self._note(report)
            reports.append(report)
            report = self.executor.next_report(0)
        if report is not None:
            self._note(report)
            reports.append(report)
        return reports

    def _reap(self, reason: str | None = None) -> list[dict]:
        """Join the workers that exited; an end report for each that died without one."""
        gone = [job for job in self._running.values() if not job.handle.alive()]
        reports = self._drain() if any(not job.ended for job in gone) else []  # its last words may be in the pipe
        for job in gone:
            job.handle.join()
            del self._running[job.spec.key]
            if not job.ended and reason is None and job.intent == "stop":
                reports += self._finish(job)
            elif not job.ended and reason is None and self._restart(job):
                reports.append({"type": "restart", "id": job.spec.key,
                                "message": f"its worker was lost ({job.handle.describe_exit()}); "
                                           "restarted from its last checkpoint"})
            elif not job.ended:
                reports.append(_settle(job, reason or f"the worker process ended unexpectedly "
                                                      f"({job.handle.describe_exit()})"))
        return reports

    def _finish(self, job: _Job) -> list[dict]:
        """A worker asked to stop ended without a word (killed by the stop itself before it could
        listen, say): its run's ending is written by a "finish" spec, first in line; a run it never
        made has nothing to end. The reports to add now (the finish's own end comes later)."""
        if job.spec.action == START and not (job.spec.path / "run.json").is_file():
            return [{"type": "end", "id": job.spec.key, "status": str(Status.STOPPED), "message": None}]
        self._waiting.insert(0, RunSpec(job.spec.key, job.spec.path, FINISH, live=job.spec.live,
                                        threads=job.spec.threads))
        return []

    def _restart(self, job: _Job) -> bool:
        """Queue a lost worker's run again, first in line: True if it was (see the module's docstring)."""
        key = job.spec.key
        if (self._closed or job.intent is not None or not job.handle.lost()
                or self._restarts.get(key, 0) >= MAX_RESTARTS):
            return False
        self._restarts[key] = self._restarts.get(key, 0) + 1
        _settle(job, "its worker was lost; restarted from its last checkpoint")  # 'interrupted' until it runs
        self._waiting.insert(0, _continued(job.spec))
        return True


def _continued(spec: RunSpec) -> RunSpec:
    """The spec that continues ``spec``'s run: "resume" once its run.json exists; else ``spec`` again
    (a worker lost before it made the run directory made nothing to resume)."""
    if spec.action == START and not (spec.path / "run.json").is_file():
        return spec
    return RunSpec(spec.key, spec.path, RESUME if spec.action == START else spec.action, device=spec.device,
                   live=spec.live, threads=spec.threads)


def _mark(path: Path, status: str, message: str | None) -> bool:
    """Write ``status`` into run.json under the run's lock; False if the run is another's, or gone."""
    try:
        run = RunDirectory(path)
        with run.writing():
            run.update_info(status=status, message=message)
        return True
    except (UserError, OSError, ValueError):
        return False  # RunBusy (its worker will say so), deleted or damaged: nothing to mark


def _settle(job: _Job, message: str) -> dict:
    """A worker ended without a word: 'interrupted', unless it wrote its own status before it went."""
    status = Status.INTERRUPTED
    try:
        on_disk = RunDirectory(job.spec.path).info().get("status")
    except (UserError, OSError, ValueError):
        on_disk = None  # never created, deleted or damaged
    if on_disk == Status.RUNNING:
        _mark(job.spec.path, Status.INTERRUPTED, message)
    elif on_disk is not None:
        status = on_disk
    return {"type": "end", "id": job.spec.key, "status": str(status), "message": message}
