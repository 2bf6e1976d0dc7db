"""Tests for engines/cores.py and for how the engines follow the cores the machine leaves free."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import tiny_target

from monalisa.engines.batched import BatchedEngine
from monalisa.engines.cores import FreeCores, usable_cores
from monalisa.models.network import build_model
from monalisa.recipes.recipe import Recipe

two_cores = pytest.mark.skipif(usable_cores() < 2, reason="needs two cores to share")


@pytest.mark.parametrize("others, most, expected", [
    (None, 2, 1),  # not measured yet: one core
    (0.0, 2, 2), (0.2, 2, 2),  # a little background work leaves both
    (0.3, 2, 1), (1.0, 2, 1), (1.9, 2, 1),  # a busy thread takes one; never fewer than one
    (0.0, 1, 1),  # never more than the share
])
def test_cores_free_from_what_the_others_used(others, most, expected, monkeypatch):
    free = FreeCores()
    monkeypatch.setattr(free, "update", lambda: None)
    monkeypatch.setattr("monalisa.engines.cores.usable_cores", lambda: 2)
    free.others = others
    assert free.cores_free(most) == expected


@pytest.fixture
def busy_core():
    """A process spinning on one of this process's cores; killed by its pid afterwards."""
    cpu = max(os.sched_getaffinity(0))
    process = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    time.sleep(0.3)
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


@two_cores
def test_the_batched_engine_drops_to_one_thread_beside_a_busy_process(busy_core):
    recipe = Recipe(arch=(64, 64), optimizer="adam", batch_size=64, epochs=40, init="torch")
    target = tiny_target(48, 64)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)  # the share a lone run gets on two cores
    try:
        engine = BatchedEngine(build_model(recipe), recipe, target.coords, target.colours, torch.device("cpu"))
        rng = np.random.default_rng(0)
        deadline = time.monotonic() + 20
        for epoch in range(1, recipe.epochs + 1):
            engine.train_epoch(rng.permutation(len(target.coords)), epoch)
            if time.monotonic() > deadline:
                break
    finally:
        torch.set_num_threads(saved)
    assert busy_core.poll() is None  # it spun throughout
    on_one, on_two = engine.batches_on.get(1, 0), engine.batches_on.get(2, 0)
    assert on_one > 0.8 * (on_one + on_two), engine.batches_on


def test_a_share_of_one_thread_never_changes_the_thread_count(one_thread):
    recipe = Recipe(arch=(16,), optimizer="adam", batch_size=32, epochs=2, init="torch")
    target = tiny_target(12, 16)
    assert torch.get_num_threads() == 1
    engine = BatchedEngine(build_model(recipe), recipe, target.coords, target.colours, torch.device("cpu"))
    engine.train_epoch(np.arange(len(target.coords)), 1)
    assert engine.threads.free is None and set(engine.batches_on) == {1}
