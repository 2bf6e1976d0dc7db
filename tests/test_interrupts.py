"""monalisa.interrupts: handlers that only record a request, acted on at safe points; a signal that arrives
inside a C callback (numba's cache loader, any ctypes callback) is kept, not swallowed.

Each test listens in this process for its own duration only (interrupts.listening), sends itself the
signal, and puts the handlers it found back.
"""

import ctypes
import os
import signal

import pytest

from monalisa import interrupts
from monalisa.interrupts import Paused, Stopped


def test_a_request_waits_for_a_safe_point_and_the_first_one_counts():
    with interrupts.listening():
        interrupts.check()  # nothing asked: nothing raised
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # after the stop: changes nothing
        assert interrupts.asked() == "stop"
        with pytest.raises(Stopped):
            interrupts.check()
        with pytest.raises(Stopped):  # still asked: every later safe point says so too
            interrupts.check()
    assert interrupts.asked() is None  # leaving forgets it, and puts pytest's handlers back
    assert signal.getsignal(signal.SIGINT) is not interrupts._record


def test_sigint_is_a_pause():
    with interrupts.listening():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Paused):
            interrupts.check()


def test_a_signal_inside_a_ctypes_callback_is_not_swallowed():
    """libc's qsort calls back into Python for each comparison; the signal arrives inside the first.
    An exception raised there would be printed and dropped by ctypes, and the sort would go on."""
    libc = ctypes.CDLL(None)
    compare_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    calls = []

    def compare(a, b):
        if not calls:
            os.kill(os.getpid(), signal.SIGTERM)
        calls.append(1)
        return a[0] - b[0]

    values = (ctypes.c_int * 6)(5, 3, 6, 1, 4, 2)
    with interrupts.listening():
        libc.qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare_type(compare))
        assert list(values) == [1, 2, 3, 4, 5, 6]  # the C code ran to its end
        with pytest.raises(Stopped):  # and the stop is acted on at the next safe point
            interrupts.check()


def test_a_stop_inside_numbas_object_cache_callback_is_acted_on():
    """The very callback where a raised Stopped used to vanish (llvmlite's _raw_object_cache_notify, called
    from C as a compiled object is handed to numba's cache): the signal is sent from inside it."""
    numba = pytest.importorskip("numba")
    from numba.core.registry import cpu_target

    engine = cpu_target.target_context.codegen()._engine._ee  # llvmlite's ExecutionEngine
    notify = engine._object_cache_notify
    calls = []

    def notify_and_signal(module, buffer):
        if not calls:
            os.kill(os.getpid(), signal.SIGTERM)
        calls.append(1)
        return notify(module, buffer)

    engine._object_cache_notify = notify_and_signal
    try:
        with interrupts.listening():
            add_one = numba.njit(lambda x: x + 1)  # a function never compiled before: its object passes the hook
            assert add_one(41) == 42
            assert calls, "numba compiled without calling the object cache hook"
            with pytest.raises(Stopped):
                interrupts.check()
    finally:
        engine._object_cache_notify = notify


def test_a_child_started_while_blocked_keeps_a_signal_until_it_listens(tmp_path):
    """The worker's start: a SIGTERM sent before its handlers exist waits (pending) instead of killing it."""
    import subprocess
    import sys
    import time

    script = tmp_path / "child.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "print('up', flush=True)\n"
        "sys.stdin.readline()  # the parent has sent SIGTERM by now; still blocked, so still alive\n"
        "import importlib.util\n"  # the module alone: the package would import torch, seconds of waiting
        f"spec = importlib.util.spec_from_file_location('interrupts', {interrupts.__file__!r})\n"
        "interrupts = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(interrupts)\n"
        "interrupts.listen()\n"
        "print(interrupts.asked(), flush=True)\n")
    with interrupts.blocked_in_children():
        child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        child.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert child.poll() is None  # not killed by it
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "stop"
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
        child.wait()
