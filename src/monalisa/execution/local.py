"""The local executor: each spec in a 'spawn' process of its own on this machine (torch and fork
do not mix), reporting on a pipe of its own.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection, wait

from monalisa import interrupts
from monalisa.execution.specs import RunSpec
from monalisa.execution.worker import execute


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
        with interrupts.blocked_in_children():  # a pause or stop sent while it starts waits for its handlers
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
