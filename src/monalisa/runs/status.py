"""Run statuses, and what may be done to a run in each: named once, for the CLI, the lab and the page.

A run's ``run.json`` holds one of the statuses on disk; the lab adds the ones only a live
server knows (queued, pausing, stopping, interrupted, elsewhere). ``ACTIONS`` is the one table of what
each allows; the lab refuses the rest with a 409, and the page reads the same table from
``/api/options`` to show its buttons, so neither keeps a copy.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"  # waiting for a worker (the lab), on disk so a restarted server queues it again
    RUNNING = "running"  # a process holds the run's lock and trains it
    PAUSING = "pausing"  # asked to pause: the worker finishes its checkpoint (lab only, never on disk)
    STOPPING = "stopping"  # asked to stop: the worker writes the ending (lab only, never on disk)
    PAUSED = "paused"  # stopped between epochs; resumes exactly
    INTERRUPTED = "interrupted"  # on disk as running, but no process of ours trains it (a server died)
    # Another process holds the run's lock and writes it (a CLI train, a second lab on the same runs):
    # this lab can only watch (lab only, never on disk).
    ELSEWHERE = "elsewhere"
    STOPPED = "stopped"  # stopped by the user, its ending written; resumes
    ERROR = "error"  # a worker failed (the message says why); resumes once the cause is fixed
    COMPLETE = "complete"  # its epochs or its stopping rule are done, and its ending is on disk
    DIVERGED = "diverged"  # the error signal blew up; a resume would diverge again (training is deterministic)
    UNREADABLE = "unreadable"  # a file of the run is damaged or missing (the lab's message says which)


# What each status allows. A complete run allows no plain resume, but the lab's resume with a
# larger epoch count extends it (the API's "epochs").
ACTIONS: dict[Status, tuple[str, ...]] = {
    Status.QUEUED: ("pause", "stop"),
    Status.RUNNING: ("pause", "stop"),
    Status.PAUSING: (),
    Status.STOPPING: (),
    Status.PAUSED: ("resume", "stop"),
    Status.INTERRUPTED: ("resume", "stop"),
    Status.ELSEWHERE: (),
    Status.STOPPED: ("resume",),
    Status.ERROR: ("resume",),
    Status.COMPLETE: (),
    Status.DIVERGED: (),
    Status.UNREADABLE: (),
}
# Statuses a run can be extended from (resume with more epochs).
EXTENDABLE = frozenset({Status.COMPLETE, Status.PAUSED, Status.INTERRUPTED, Status.STOPPED, Status.ERROR})
# A process is on the run (the lab shows its live progress).
BUSY = frozenset({Status.RUNNING, Status.PAUSING, Status.STOPPING})
# The run may still change without the user doing anything more: the page opens a panel for it.
ACTIVE = frozenset({Status.QUEUED, *BUSY, Status.PAUSED})
# Finished for good: a comparison reuses such a run instead of training it again.
FINISHED = frozenset({Status.COMPLETE, Status.DIVERGED})


# How a training session stopped (run.json's stopped_by; train.FitResult.stopped_by) and the
# status it leaves: its epochs or its stopping rule done is complete; divergence is diverged; a
# Ctrl-C or a failure mid-epoch leaves the run as it was at its last checkpoint.
COMPLETE_REASONS = ("epochs", "until_psnr", "time_limit")


def status_after(stopped_by: str) -> Status | str:
    """The status a run gets once its session stopped by ``stopped_by``."""
    return Status.COMPLETE if stopped_by in COMPLETE_REASONS else stopped_by


def actions(status: str) -> list[str]:
    """What a run in ``status`` allows; nothing for a status this version does not know."""
    try:
        return list(ACTIONS[Status(status)])
    except ValueError:
        return []


def table() -> dict:
    """The table as the page reads it from /api/options."""
    return {status.value: {"actions": list(ACTIONS[status]), "active": status in ACTIVE, "busy": status in BUSY}
            for status in Status}
