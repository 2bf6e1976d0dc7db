"""Wall time over training time of a whole run: what the work around each epoch costs.

    python benchmarks/wall_time.py                     # `original`, 20 epochs, the reference image
    python benchmarks/wall_time.py --epochs 10 --busy  # also with a busy process on one core

A run as `monalisa train` makes it (experiment.train_run: every frame, metrics,
checkpoint, the ending's GIF, MP4 and curves), timed from the call to its
return. Training time is the sum of the epochs' ``train_seconds``; the rest is
the render after each epoch (a forward pass over every pixel), the files, the
start-up and the ending. Two renders side by side in one run, alternately:

- ``now``: inference.render as it is (on a CPU with oneDNN, layers packed once per
  render and cache-sized chunks shared out among the threads, one torch thread
  each; a very wide last layer in blocks of units);
- ``before``: the same render through torch's own matmul (MKL's sgemm), the
  render this project had until 2026-12-06 (PACK_LAYERS off), as the baseline.

Reported per variant: wall / training for the whole run, and the median
seconds an epoch spends outside training (its render and files).
With ``--busy``, each pair runs again beside a Python busy loop on one core
(killed by its pid after each run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from contention import busy_loop  # benchmarks/ is the script's folder, so on sys.path

from monalisa.data.images import load_target
from monalisa.recipes.recipe import get_preset
from monalisa.runs.lifecycle import train_run
from monalisa.training import inference

REFERENCE_IMAGE = "mona_lisa"  # the built-in reference image (README, "Built-in images")
BEFORE = {"PACK_LAYERS": False}  # the render settings this is measured against


def one_run(target, recipe, settings: dict, busy: bool) -> dict:
    saved = {name: getattr(inference, name) for name in settings}
    for name, value in settings.items():
        setattr(inference, name, value)
    process = busy_loop(pin=True) if busy else None
    try:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            result = train_run(target, recipe, Path(folder) / "run", quiet=True)
            wall = time.perf_counter() - started
    finally:
        if process is not None:
            process.kill()
            process.wait()
        for name, value in saved.items():
            setattr(inference, name, value)
    history = result.history
    training = sum(row["train_seconds"] for row in history)
    # An epoch's cycle: from one row's timestamp to the next (its training, render and the previous files).
    around = [b["seconds"] - a["seconds"] - b["train_seconds"] for a, b in zip(history, history[1:])]
    return {"wall": wall, "training": training, "around": statistics.median(around), "psnr": history[-1]["psnr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=REFERENCE_IMAGE, help="image file or built-in name")
    parser.add_argument("--preset", default="original")
    parser.add_argument("--arch", default=None, help="another architecture, such as 1x45450")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--busy", action="store_true", help="also measure beside a busy process on one core")
    args = parser.parse_args()

    target = load_target(args.image)
    recipe = get_preset(args.preset).replace(epochs=args.epochs)
    if args.arch:
        recipe = recipe.replace(arch=tuple(int(w) for w in args.arch.split("x")))
    print(f"{target.name} {target.width}x{target.height}, {args.preset} {recipe.describe()}, {args.epochs} epochs, "
          f"{os.cpu_count()} CPUs")
    for busy in (False, True) if args.busy else (False,):
        rows = {"before": one_run(target, recipe, BEFORE, busy), "now": one_run(target, recipe, {}, busy)}
        print(f"\n  {'busy core' if busy else 'idle'}:")
        print(f"  {'render':8s} {'wall s':>8s} {'train s':>8s} {'wall/train':>10s} {'around/epoch s':>15s} {'psnr':>6s}")
        for name, row in rows.items():
            print(f"  {name:8s} {row['wall']:8.1f} {row['training']:8.1f} {row['wall'] / row['training']:10.3f}"
                  f" {row['around']:15.3f} {row['psnr']:6.2f}")
        print(f"  around the epoch, now against before: {rows['now']['around'] / rows['before']['around']:.2f}x")


if __name__ == "__main__":
    main()
