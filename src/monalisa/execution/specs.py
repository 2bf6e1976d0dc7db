"""A run specification: what one run of the runner is (its directory, what to do there, and with what).

``START`` makes and trains a new run, ``RESUME`` continues one from its checkpoint, ``FINISH``
writes a stopped run's ending without training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from monalisa.data.images import Target
from monalisa.recipes.recipe import Recipe

START, RESUME, FINISH = "start", "resume", "finish"


@dataclass(frozen=True)
class RunSpec:
    """One run to train: where, what to do, and what it needs."""

    key: str  # names the run in reports: a comparison's label, the lab's run id
    path: Path  # its run directory
    # "start": train ``recipe`` on ``target`` into a new directory (train_run); "resume": continue what
    # is on disk (resume_run, which also finishes a run whose epochs are done); "finish": write the
    # ending of a run the user stopped while it was not training (finish_run(stopped=True)).
    action: str = RESUME
    target: Target | None = None  # "start" only
    recipe: Recipe | None = None  # "start" only
    device: str = "auto"  # a new run's; a continued run keeps the device it recorded
    frames: str = "all"  # a new run's frame schedule (record.FRAME_SCHEDULES)
    preset: str | None = None  # recorded in a new run's run.json
    live: bool = False  # send progress and preview frames (the lab's page wants them, a comparison not)
    # Threads it needs; None: its runner's share (cores // jobs). A cluster executor maps this, and
    # device "cuda", to its own resource requests (Ray: num_cpus, num_gpus).
    threads: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if self.action not in (START, RESUME, FINISH):
            raise ValueError(f"unknown action {self.action!r}; choose one of: {START}, {RESUME}, {FINISH}")
        if (self.action == START) != (self.target is not None and self.recipe is not None):
            raise ValueError("a 'start' spec needs a target and a recipe, and only a 'start' spec takes them")
        if self.threads is not None and (type(self.threads) is not int or self.threads < 1):
            raise ValueError(f"threads must be a positive whole number, got {self.threads!r}")
