"""What an executor is: where the runner's specs train, behind one protocol.

An executor starts specs and hands back a ``Handle``; reports from every worker come out of one
``next_report``. ``local.LocalExecutor`` runs each spec in a process on this machine;
``ray_cluster.RayExecutor`` on a Ray cluster (`--ray ADDRESS`). Both implement:

- ``start(spec, threads)``: run ``worker.execute(spec, threads, reports)`` somewhere
  that can read and write ``spec.path`` (a shared disk), asking for
  ``threads`` CPUs (and a GPU for a cuda spec); return a Handle.
- ``Handle``: ``alive()``, ``pause()`` and ``stop()`` (delivered as SIGINT and
  SIGTERM to the worker, or by interrupts.ask in the worker's process), ``kill()`` (no
  chance to write anything: the runner settles the run), ``join(timeout)``, and ``lost()``:
  True when the worker ended by a fault of where it ran (a cluster node that died), not of its
  run; the runner then resumes the run from its checkpoint instead of settling it. Local workers
  are never lost: a local worker killed outright is the machine's verdict on the run (out of
  memory, say).
- ``next_report(timeout)``: the next report from any worker, or None.
- ``close()``: free what carries the reports once no worker is left.
"""

from __future__ import annotations

from typing import Protocol

from monalisa.execution.specs import RunSpec


class Handle(Protocol):
    """One started spec, as its runner sees it."""

    def alive(self) -> bool: ...
    def pause(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def describe_exit(self) -> str: ...
    def lost(self) -> bool: ...


class Executor(Protocol):
    def start(self, spec: RunSpec, threads: int) -> Handle: ...
    def next_report(self, timeout: float) -> dict | None: ...
    def close(self) -> None: ...
