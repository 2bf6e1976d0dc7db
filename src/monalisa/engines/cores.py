"""The cores a run may use, and which of them the rest of the machine leaves free right now.

Both engines ask before they use two cores: the online engine before each 1,024-pixel
call, the batched engine about twenty times an epoch, and the trainer before each
render (TorchThreads). A load average lags by a minute, so they read /proc/stat
instead (FreeCores).
"""

from __future__ import annotations

import math
import os
import time

# Seconds of history a decision needs: /proc/stat counts in 10 ms ticks, so 0.1 s
# on two cores is 20 ticks, a 5% step. Between decisions the last one stands.
SAMPLE_SECONDS = 0.1
# A core counts as taken once the other processes use more than this much of it:
# a quarter of a core is a busy thread's worth of the time that parallel code would wait for it.
TAKEN_FROM = 0.25


def usable_cores() -> int:
    """The cores this process may run on: honours taskset and container CPU sets."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class FreeCores:
    """The cores the other processes used over the last interval (``others``), from /proc/stat.

    Machine busy time on this process's CPUs, minus this process's own CPU time
    (all its threads, spinning ones included), over wall time: the cores the
    rest of the machine used. Reading /proc/stat and the process times costs
    ~30 us, against ~20-50 ms a 1,024-pixel call. Where /proc/stat is missing
    (not Linux) the 1-minute load average stands in.
    """

    def __init__(self):
        self.cpus = {f"cpu{i}" for i in (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())}
        self.tick = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self.last = self._sample()
        self.others = None  # cores used by other processes over the last interval, once measured

    def _sample(self):
        try:
            with open("/proc/stat") as f:
                busy = 0
                for line in f:
                    name, *fields = line.split()
                    if name in self.cpus:
                        ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                        busy += sum(ticks) - ticks[3] - ticks[4]
        except OSError:
            return None
        return time.monotonic(), busy * self.tick, time.process_time()

    def update(self) -> None:
        """Measure the interval since the last measurement, if it is long enough to say anything."""
        now = self._sample()
        if now is None or self.last is None:
            self.others = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
            return
        wall = now[0] - self.last[0]
        if wall < SAMPLE_SECONDS:
            return
        self.others = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / wall
        self.last = now

    def cores_free(self, most: int) -> int:
        """How many cores (1 to ``most``) the other processes leave free now; 1 until first measured."""
        self.update()
        if self.others is None:
            return 1  # unmeasured: one core is never the wrong choice by more than 2x
        taken = max(0, math.ceil(self.others - TAKEN_FROM))
        return max(1, min(most, usable_cores() - taken))


class TorchThreads:
    """Torch's thread count kept to the cores the other processes leave free, within a share.

    ``share``: the most threads to use (default: torch's thread count now, the share the
    runner or the user gave this process). ``adapt()`` before a stretch of torch work.
    """

    def __init__(self, share: int | None = None):
        import torch

        self.share = share or torch.get_num_threads()
        self.free = FreeCores() if self.share >= 2 else None

    def adapt(self) -> int:
        """Set torch's threads to the cores free now; the count set."""
        import torch

        if self.free is None:
            return torch.get_num_threads()
        threads = self.free.cores_free(self.share)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads
