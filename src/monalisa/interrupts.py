"""Pause and stop requests: signal handlers that only record them, and the safe points that act on them.

    SIGINT   pause: the run directory resumes from its last epoch
    SIGTERM  stop: the run ends here and its ending is written (final.png, GIF, MP4, curves)

A handler that raised into whatever code happened to run could land inside a C callback (numba's
cache loader calls back into Python through ctypes, which prints the exception and carries on,
so the run trained on) or before the handler existed (the process died of the signal, its run
left with no ending). So a handler here only records the request (``ask``), and the code acts on
it where it chooses, by ``check()``, which raises Paused or Stopped from our own code:

- between kernel calls (Trainer.fit's progress hook: every 1,024 pixels online, every batched step)
  and between epochs;
- in a worker (execution/worker.py's execute) after its imports and after each stage of its start;
- in a runner's loop (Runner.run_all: the CLI's compare and study) and before a search's trials.

The ending is not a safe point: a stop while it is written lets it finish. The first request wins;
a later one changes nothing (a stop while a pause checkpoints would leave neither).

A process that starts a worker blocks both signals around the start (``blocked_in_children``): the
child inherits the mask across exec, so a signal sent while it is still starting Python and
importing torch waits, pending, until ``listen`` installs the handlers and unblocks it. The
standard library starts its resource tracker the same way (multiprocessing.resource_tracker).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

PAUSE, STOP = "pause", "stop"
SIGNALS = {signal.SIGINT: PAUSE, signal.SIGTERM: STOP}

_asked: str | None = None  # this process's request, the first one only


class Paused(KeyboardInterrupt):
    """A pause acted on: leave the run resumable."""


class Stopped(KeyboardInterrupt):
    """A stop acted on: end the run here and write its ending."""


def ask(intent: str) -> None:
    """Record a pause or a stop (a signal handler, or a thread that hears of one); the first one counts.

    No lock: a handler runs in the main thread between two bytecodes, and a lock held there would
    deadlock it. Two requests at once both leave one of them recorded."""
    global _asked
    if intent not in (PAUSE, STOP):
        raise ValueError(f"unknown request {intent!r}; choose {PAUSE} or {STOP}")
    if _asked is None:
        _asked = intent


def asked() -> str | None:
    """The request recorded so far: "pause", "stop" or None."""
    return _asked


def clear() -> None:
    """Forget the request: for a process that trains one run after another (a reused Ray actor)."""
    global _asked
    _asked = None


def check() -> None:
    """A safe point: raise Paused or Stopped if one was asked for."""
    if _asked == PAUSE:
        raise Paused()
    if _asked == STOP:
        raise Stopped()


def _record(signum, frame) -> None:
    ask(SIGNALS[signum])


def listen() -> dict:
    """Record SIGINT and SIGTERM from now on, and let through any that waited (``blocked_in_children``).

    Handlers can only be set in the main thread; elsewhere (a thread of a Ray actor) this does
    nothing but unblock, and requests arrive through ``ask``. The handlers it replaced, by signal.
    """
    before = {}
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            before[signum] = signal.signal(signum, _record)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(SIGNALS))
    return before


@contextmanager
def listening():
    """``listen`` for the block only, from no request (a command of the CLI; a test): the handlers
    it found and an empty request are put back afterwards."""
    clear()
    before = listen()
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        clear()


@contextmanager
def blocked_in_children():
    """SIGINT and SIGTERM blocked in this thread for the block: a process started inside it begins
    with them blocked (pending, not lost) until its ``listen``. This thread gets any that arrive
    meanwhile as soon as the block ends."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
