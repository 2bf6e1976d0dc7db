"""How much each engine slows down when another process holds one of the two cores.

    python benchmarks/contention.py                  # the reference image, 5 rounds
    python benchmarks/contention.py --rounds 7 --pin # the busy loop pinned to the last CPU

For each engine, timed alternately in one run (idle, loaded, idle, loaded, ...)
so machine noise hits both alike; medians reported:
- its idle one-thread speed (online: the one-core kernel; batched: one torch thread),
- its speed as a run gets it by default (online: cores chosen before each call
  from the cores free now; batched: torch's default threads), idle and with a
  busy loop on one core; and each against the idle one-thread figure.
The busy loop is a Python ``while True: pass`` started with subprocess, killed
by its pid at the end of each loaded measurement (in a finally).

Every preset, on the engine a run of it gets (``auto``), plus the `original`
recipe at batch 256 on the batched engine. The bar: with one core busy,
each runs at no worse than 1.15x its idle one-thread speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from monalisa.data.images import load_target
from monalisa.engines import choose_engine
from monalisa.engines.batched import BatchedEngine
from monalisa.engines.online import OnlineEngine
from monalisa.models.network import build_model
from monalisa.recipes.recipe import PRESETS, get_preset

REFERENCE_IMAGE = "mona_lisa"  # the built-in reference image (README, "Built-in images")


def busy_loop(pin: bool) -> subprocess.Popen:
    """A process that keeps one core busy; pinned to the last CPU of this process's set if asked."""
    code = "while True: pass"
    if pin:
        cpu = max(os.sched_getaffinity(0))
        code = f"import os; os.sched_setaffinity(0, {{{cpu}}})\n{code}"
    process = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.2)  # let it start spinning before the timing starts
    return process


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def measure(train, pixels: int, rounds: int, pin: bool, threads: int) -> tuple[list[float], list[float]]:
    """us a pixel of ``train()`` with ``threads`` torch threads, idle and loaded, alternately."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    idle, loaded = [], []
    try:
        train()  # warm up
        for _ in range(rounds):
            idle.append(timed(train) / pixels * 1e6)
            process = busy_loop(pin)
            try:
                loaded.append(timed(train) / pixels * 1e6)
            finally:
                process.kill()
                process.wait()
    finally:
        torch.set_num_threads(saved)
    return idle, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=REFERENCE_IMAGE, help="image file or built-in name")
    parser.add_argument("--rounds", type=int, default=5, help="idle/loaded pairs per engine (medians reported)")
    parser.add_argument("--pin", action="store_true", help="pin the busy loop to one CPU")
    parser.add_argument("--online-pixels", type=int, default=32768,
                        help="pixels a timing for the online engine: long enough (~1 s) that the ~0.1 s the "
                             "engine takes to see a change in load is a small part of it")
    parser.add_argument("--only", action="append", metavar="PRESET",
                        help="time only these presets (repeatable; 'original-b256' for the batched original)")
    args = parser.parse_args()

    target = load_target(args.image)
    coords, colours = target.coords, target.colours
    order = np.random.default_rng(0).permutation(len(coords))
    threads = torch.get_num_threads()
    print(f"{target.name} ({len(coords):,} pixels), {os.cpu_count()} CPUs, torch {threads} threads by default, "
          f"busy loop {'pinned' if args.pin else 'not pinned'}; us a pixel, medians of {args.rounds}\n")

    cases = []
    recipes = [(name, recipe) for name, recipe in PRESETS.items()]
    recipes.append(("original b256 (batched)", get_preset("original").replace(batch_size=256)))
    if args.only:
        recipes = [(name, recipe) for name, recipe in recipes
                   if name in args.only or ("original-b256" in args.only and name.endswith("(batched)"))]
    for name, recipe in recipes:
        engine_name = choose_engine("auto", recipe, torch.device("cpu"))
        if name.endswith("(batched)"):
            engine_name = "batched"
        # Enough pixels for ~0.3-1 s a measurement: whole batches batched.
        pixels = args.online_pixels if engine_name == "online" else min(len(coords), max(4 * recipe.batch_size, 32768))
        for default in (False, True):
            # The engine takes its thread share from torch when it is made: one thread, or the default.
            torch.set_num_threads(threads if default else 1)
            if engine_name == "online":
                engine = OnlineEngine(build_model(recipe), recipe, coords, colours, cores=None if default else 1)
            else:
                engine = BatchedEngine(build_model(recipe), recipe, coords, colours, torch.device("cpu"))
            train = (lambda e=engine, n=pixels: e.train_epoch(order[:n], 1))
            cases.append((f"{name} ({engine_name})", default, engine, pixels, train))
    torch.set_num_threads(threads)

    results = {}
    for name, default, engine, pixels, train in cases:
        idle, loaded = measure(train, pixels, args.rounds, args.pin, threads if default else 1)
        results[name, default] = (statistics.median(idle), statistics.median(loaded), engine)
    print(f"  {'recipe (engine)':32s} {'1 thread':>9s} {'+busy':>8s} {'ratio':>6s} {'default':>8s} {'+busy':>8s}"
          f" {'ratio':>6s}  (ratios against idle 1 thread)")
    for name in dict.fromkeys(name for name, *_ in cases):
        one_idle, one_loaded, _ = results[name, False]
        def_idle, def_loaded, engine = results[name, True]
        print(f"  {name:32s} {one_idle:9.2f} {one_loaded:8.2f} {one_loaded / one_idle:6.2f}"
              f" {def_idle:8.2f} {def_loaded:8.2f} {def_loaded / one_idle:6.2f}")
        if isinstance(engine, OnlineEngine):
            print(f"  {'':32s} calls on 1 core / 2 cores: {engine.calls[1]} / {engine.calls[2]}")
        else:
            print(f"  {'':32s} batches on 1 thread / 2 threads: {engine.batches_on.get(1, 0)} / "
                  f"{engine.batches_on.get(2, 0)}")


if __name__ == "__main__":
    main()
