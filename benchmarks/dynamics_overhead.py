"""What recording the per-layer dynamics costs: training with and without it, side by side in one run.

    python benchmarks/dynamics_overhead.py                     # original (online); siren, fast (batched)
    python benchmarks/dynamics_overhead.py --only original --epochs 6 --recorder

Two trainers of one recipe on the reference image, one with dynamics.LayerDynamics attached and
one without, train one epoch each in turn (so a change in the machine's load hits both alike):

- ``alone``: the plain trainer's ``train_seconds``;
- ``beside``: the watched trainer's ``train_seconds``, which the recording is kept out of
  (Trainer.untimed): what the recording does to the training around it (caches, threads);
- ``recording``: the seconds the recording itself took inside the epoch (its probe forward/backward,
  weight copies and statistics at every record point); ``together``: beside + recording.

Reported per recipe: the medians over the epochs, the records an epoch, and the median over the
epochs of together / alone for the pair of that epoch (the budget: at most 1.05). With
``--recorder``, then the same pair through the Recorder, as `monalisa train` runs it, with and
without dynamics and TensorBoard: the median wall seconds an epoch (training, render and every file
of the epoch, layers.csv, snapshots and events included).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from monalisa.data.images import load_target
from monalisa.recipes.recipe import get_preset
from monalisa.runs.directory import RunDirectory
from monalisa.runs.recorder import Recorder
from monalisa.training.dynamics import LayerDynamics
from monalisa.training.trainer import Callback, Trainer

REFERENCE_IMAGE = "mona_lisa"
RECIPES = {"original": "online", "siren": "batched", "fast": "batched"}


def training_pair(target, recipe, engine: str, epochs: int) -> dict:
    """Medians over the epochs (the first left out: numba's cache, the probe's first pass) of the plain
    trainer's training seconds, the watched one's, and the seconds its recording took an epoch."""
    plain = Trainer(target, recipe, engine=engine)
    watched = Trainer(target, recipe, engine=engine)
    dynamics = LayerDynamics()
    bare, trained, recording, records = [], [], [], []
    for epoch in range(1, epochs + 1):
        # Each goes first in turn, so neither always trains just after the other's render.
        for trainer in ((plain, watched) if epoch % 2 else (watched, plain)):
            if trainer is plain:
                plain.fit(epochs=epoch)
                bare.append(plain.history[-1]["train_seconds"])
            else:
                spent = dynamics.seconds
                watched.fit([dynamics], epochs=epoch)  # on_start keeps no rows of earlier calls: this epoch's
                trained.append(watched.history[-1]["train_seconds"])
                recording.append(dynamics.seconds - spent)
                records.append(len(dynamics.rows) // (watched.model.depth + 1))
    median = lambda values: statistics.median(values[1:])  # noqa: E731
    together = [a + b for a, b in zip(trained, recording)]
    # The ratio is the median of each epoch's pair (trained back to back), so a change in the machine's
    # load between epochs (other processes come and go) cancels rather than lands on one side.
    return {"training": median(bare), "watched": median(trained), "recording": median(recording),
            "with": median(together), "records": median(records),
            "ratio": median([b / a for a, b in zip(bare, together)])}


def recorder_pair(target, recipe, engine: str, epochs: int) -> dict:
    """Median wall seconds an epoch through a Recorder without and with dynamics and TensorBoard."""
    walls = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        trainers, recorders = {}, {}
        for on in (False, True):
            trainers[on] = Trainer(target, recipe, engine=engine)
            run = RunDirectory.create(Path(folder) / f"run-{on}", recipe, target, {})
            recorders[on] = Recorder(run, dynamics=on, tensorboard=on, animate_at_end=False)
            recorders[on].on_start(trainers[on])
        for epoch in range(1, epochs + 1):
            for on in (False, True):
                started = time.perf_counter()
                trainers[on].fit([EpochsOf(recorders[on])], epochs=epoch)
                walls[on].append(time.perf_counter() - started)
        for on in (False, True):
            if recorders[on].board is not None:
                recorders[on].board.close()
            recorders[on].run.unlock()
    return {on: statistics.median(walls[on][1:]) for on in (False, True)}


class EpochsOf(Callback):
    """A Recorder's per-epoch hooks, without its on_start and on_end: one Recorder across many fit() calls."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def on_progress(self, trainer, epoch, fraction):
        self.recorder.on_progress(trainer, epoch, fraction)

    def on_epoch(self, trainer, row, frame):
        self.recorder.on_epoch(trainer, row, frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=RECIPES, action="append", help="recipes to time (default: all)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs each (the first left out; default: 6)")
    parser.add_argument("--recorder", action="store_true", help="also time the Recorder's files, with and without")
    args = parser.parse_args()
    target = load_target(REFERENCE_IMAGE)
    print(f"{target.name} {target.width}x{target.height}, torch threads {torch.get_num_threads()}, "
          f"{args.epochs} epochs each, medians of the last {args.epochs - 1}")
    print("seconds an epoch: training alone; training beside the recording, the recording itself, and the two "
          "together (ratio: the median of each epoch's together / alone)")
    print(f"{'recipe':<10} {'engine':<8} {'records':>7} {'alone':>8} {'beside':>8} {'recording':>10} {'together':>9} "
          f"{'ratio':>6}")
    for name in args.only or RECIPES:
        engine = RECIPES[name]
        result = training_pair(target, get_preset(name), engine, args.epochs)
        print(f"{name:<10} {engine:<8} {result['records']:>7g} {result['training']:>8.3f} {result['watched']:>8.3f} "
              f"{result['recording']:>10.4f} {result['with']:>9.3f} {result['ratio']:>6.3f}",
              flush=True)
    if args.recorder:
        print(f"\n{'recipe':<10} {'wall s an epoch, Recorder without':>34} {'with dynamics + TensorBoard':>28} {'ratio':>6}")
        for name in args.only or RECIPES:
            result = recorder_pair(target, get_preset(name), RECIPES[name], args.epochs)
            print(f"{name:<10} {result[False]:>34.3f} {result[True]:>28.3f} {result[True] / result[False]:>6.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
