"""Seconds per epoch of monalisa's engines beside plain PyTorch loops, timed in one run.

    python benchmarks/epoch_time.py                 # the reference image, the `original` 4x300 recipe
    python benchmarks/epoch_time.py --repeats 5 --batch-size 1024

Two pairs, each timed alternately (A B A B ...) so machine noise hits both alike,
reported as medians and the ratio of medians:

1. online engine (compiled, exact) against the textbook per-pixel loop
   (zero_grad, forward, backward, step for every pixel) of the same recipe. The
   plain loop needs ~a millisecond a pixel, so it is timed on a slice of the
   epoch's permutation and scaled to the full epoch; the online engine trains
   whole epochs.
2. batched engine against the textbook minibatch loop (index a batch from the
   permutation, zero_grad, forward, backward, step), same batch size, full epochs.

Both pairs start from the same initial weights and see the same pixel orders.

3. the online engine on the depth study's six equal-budget shapes (experiments/studies/:
   1x45450 to 8x196, ~272,703 parameters each), on one core and on two, each
   timed on the same slice of one permutation, round-robin (A B C ... A B C ...),
   as us a pixel and the ratio to 4x300. Beside each, its bandwidth limit: a
   numba loop that makes the memory traffic a pixel must make and nothing else,
   over arrays of the shape's layer sizes (every weight and bias read once, for
   the forward pass, then read and written once, for the fused backward pass
   and update), and the engine's ratio to it; for two cores, the same traffic
   streamed by two threads at once, half of every layer each.

    python benchmarks/epoch_time.py --only depth --depth-pixels 8192 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np
import torch

from monalisa.data.images import load_target
from monalisa.engines import online_kernel as kernel
from monalisa.engines.batched import BatchedEngine
from monalisa.engines.online import OnlineEngine
from monalisa.models.network import build_model, linear_layers
from monalisa.recipes.recipe import get_preset

FLOAT32 = np.zeros(1, dtype=np.float32)  # the dtype example kernel._on_lines takes
REFERENCE_IMAGE = "mona_lisa"  # the built-in reference image (README, "Built-in images")
# The depth study's shapes at the original's budget (experiments/studies/, DEPTHS; budget.width_for_budget).
DEPTH_SHAPES = ((45450,), (519, 519), (367,) * 3, (300,) * 4, (232,) * 6, (196,) * 8)


def plain_optimizer(model, recipe):
    layers = linear_layers(model)
    groups = [{"params": list(l.parameters()), "lr": lr}
              for l, lr in zip(layers, recipe.layer_learning_rates([l.in_features for l in layers]))]
    return torch.optim.SGD(groups, lr=recipe.learning_rate)


def plain_per_pixel(model, optimizer, coords, colours, order):
    for p in order:
        optimizer.zero_grad()
        loss = 0.5 * ((model(coords[p:p + 1]) - colours[p:p + 1]) ** 2).sum()
        loss.backward()
        optimizer.step()


def plain_minibatch(model, optimizer, coords, colours, order, batch_size):
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        optimizer.zero_grad()
        loss = 0.5 * ((model(coords[index]) - colours[index]) ** 2).sum(dim=1).mean()
        loss.backward()
        optimizer.step()


@numba.njit(fastmath=True, cache=True)
def _stream(layers, pixels):
    """The memory traffic of ``pixels`` pixels and nothing else: each array read, then read and written.

    ``layers`` holds one float32 array a layer (weights and bias together); the
    read is a sum (kept, so it is not optimised away), the write adds a constant.
    """
    total = np.float32(0)
    for _ in range(pixels):
        for a in layers:
            s = np.float32(0)
            for i in range(a.shape[0]):
                s += a[i]
            total += s
        for a in layers:
            for i in range(a.shape[0]):
                a[i] = a[i] + np.float32(1e-30)
    return total


@numba.njit(parallel=True, fastmath=True, cache=True)
def _stream_two_cores(halves, pixels):
    """_stream on two threads at once, each over its own half of every layer, never meeting."""
    totals = np.zeros(2, dtype=np.float32)
    for core in numba.prange(2):
        totals[core] = _stream(halves[core], pixels)
    return totals


def _layers(widths, share: int = 1):
    # On 64-byte lines, as the kernel's own rows are: numpy's arrays start 16 or 32 bytes off for most
    # sizes here, and a stream whose 64-byte loads straddle two lines measured ~10% slower, a limit
    # too easy to come near.
    return numba.typed.List([kernel._on_lines((n_in * n_out + n_out) // share, FLOAT32)
                             for n_in, n_out in zip(widths[:-1], widths[1:])])


def bandwidth_limit(widths, pixels: int) -> float:
    """Seconds a pixel that the traffic of a network of these widths alone costs on one core (see _stream)."""
    layers = _layers(widths)
    _stream(layers, 1)  # compile (cached after the first run)
    return timed(lambda: _stream(layers, pixels)) / pixels


def bandwidth_limit_two_cores(widths, pixels: int) -> float:
    """The same traffic split between two cores, half of every layer each, as the two-core kernel's blocks are.

    Each half of a ~273k network (0.55 MB) fits its core's own L2, so this
    limit is far below the one-core one; it leaves out the meetings the
    kernel's cores need (one per hidden-to-hidden layer and pass).
    """
    halves = numba.typed.List([_layers(widths, share=2), _layers(widths, share=2)])
    _stream_two_cores(halves, 1)
    return timed(lambda: _stream_two_cores(halves, pixels)) / pixels


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def report(name: str, ours: list[float], baseline: list[float], baseline_name: str) -> None:
    a, b = statistics.median(ours), statistics.median(baseline)
    print(f"  {name:28s} {a:9.2f} s/epoch   (runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(f"  {baseline_name:28s} {b:9.2f} s/epoch   (runs: {', '.join(f'{t:.2f}' for t in baseline)})")
    print(f"  ratio: {name} is {b / a:.1f}x faster\n")


def depth_shapes(target, recipe, pixels: int, repeats: int) -> None:
    """Section 3: the online engine on the depth study's shapes, one and two cores, and each one's bandwidth limit."""
    coords, colours = target.coords, target.colours
    order = np.random.default_rng(1).permutation(len(coords))[:pixels]
    cases = {}  # (shape, cores) -> engine
    for arch in DEPTH_SHAPES:
        shape = recipe.replace(arch=arch)
        for cores in (1, 2):
            engine = OnlineEngine(build_model(shape), shape, coords, colours, cores=cores)
            engine.train_epoch(order[:1024], epoch=0)  # compile, warm the caches
            cases[arch, cores] = engine
    limits = {(arch, cores): [] for arch in DEPTH_SHAPES for cores in (1, 2)}
    runs = {case: [] for case in cases}
    for _ in range(repeats):  # round-robin, so machine noise hits every case alike
        for arch in DEPTH_SHAPES:
            for cores in (1, 2):
                runs[arch, cores].append(timed(lambda: cases[arch, cores].train_epoch(order, epoch=1)) / pixels)
            limits[arch, 1].append(bandwidth_limit((2, *arch, 3), 200))
    # The two-core limit after the engines, not between them: its two threads slowed the
    # two-core kernel that ran after them by 20-50% (12.9-18.0 us a pixel against 9.8-12.0).
    for _ in range(repeats):
        for arch in DEPTH_SHAPES:
            limits[arch, 2].append(bandwidth_limit_two_cores((2, *arch, 3), 200))
    print(f"online engine on the depth study's shapes ({pixels:,} pixels of one permutation a run, "
          f"medians of {repeats}; us a pixel):")
    print(f"  {'shape':10s} {'params':>8s} {'1 core':>8s} {'/4x300':>7s} {'limit':>7s} {'/limit':>7s}"
          f" {'2 cores':>8s} {'/4x300':>7s} {'limit':>7s} {'/limit':>7s} {'1c/2c':>6s}")
    median = {case: statistics.median(times) * 1e6 for case, times in runs.items()}
    for arch in DEPTH_SHAPES:
        limit_one, limit_two = (statistics.median(limits[arch, cores]) * 1e6 for cores in (1, 2))
        one, two = median[arch, 1], median[arch, 2]
        name = f"{len(arch)}x{arch[0]}"
        print(f"  {name:10s} {recipe.replace(arch=arch).parameter_count():8,d} {one:8.1f}"
              f" {one / median[(300,) * 4, 1]:7.2f} {limit_one:7.1f} {one / limit_one:7.2f} {two:8.1f}"
              f" {two / median[(300,) * 4, 2]:7.2f} {limit_two:7.1f} {two / limit_two:7.2f} {one / two:6.2f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=REFERENCE_IMAGE, help="image file or built-in name")
    parser.add_argument("--preset", default="original")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine (median reported)")
    parser.add_argument("--plain-pixels", type=int, default=2000, help="pixels per timed slice of the plain loop")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--depth-pixels", type=int, default=8192, help="pixels per timed run of section 3")
    parser.add_argument("--only", choices=("online", "batched", "depth"), help="run one section only")
    args = parser.parse_args()

    target = load_target(args.image)
    recipe = get_preset(args.preset)
    coords, colours = target.coords, target.colours
    n = len(coords)
    rng = np.random.default_rng(0)
    print(f"{target.name} {target.width}x{target.height} ({n:,} pixels), {recipe.describe()}, "
          f"{recipe.parameter_count():,} parameters, torch {torch.__version__} with {torch.get_num_threads()} threads\n")

    if args.only in (None, "depth"):
        depth_shapes(target, recipe, args.depth_pixels, args.repeats)
    if args.only == "depth":
        return

    # -- 1. online engine against the plain per-pixel loop ------------------------------
    online = OnlineEngine(build_model(recipe), recipe, coords, colours)
    online.train_epoch(rng.permutation(n)[:2000], epoch=0)  # compile (cached after the first run)
    plain_model = build_model(recipe)
    plain_opt = plain_optimizer(plain_model, recipe)
    coords_t, colours_t = torch.from_numpy(coords), torch.from_numpy(colours)
    plain_per_pixel(plain_model, plain_opt, coords_t, colours_t, torch.arange(200))  # warm up allocator
    ours, baseline = [], []
    for _ in range(args.repeats):
        order = rng.permutation(n)
        ours.append(timed(lambda: online.train_epoch(order, epoch=1)))
        piece = torch.from_numpy(order[:args.plain_pixels])
        baseline.append(timed(lambda: plain_per_pixel(plain_model, plain_opt, coords_t, colours_t, piece))
                        * n / args.plain_pixels)
    print("online SGD, batch size 1 (plain loop timed on "
          f"{args.plain_pixels:,} pixels a run, scaled to {n:,}):")
    report("online engine (monalisa)", ours, baseline, "plain PyTorch per-pixel loop")
    print(f"  online engine: {statistics.median(ours) / n * 1e6:.1f} us a pixel\n")

    if args.only == "online":
        return
    # -- 2. batched engine against the plain minibatch loop -----------------------------
    batched_recipe = recipe.replace(batch_size=args.batch_size)
    batched = BatchedEngine(build_model(batched_recipe), batched_recipe, coords, colours, torch.device("cpu"))
    plain_model = build_model(batched_recipe)
    plain_opt = plain_optimizer(plain_model, batched_recipe)
    ours, baseline = [], []
    for _ in range(args.repeats):
        order = rng.permutation(n)
        ours.append(timed(lambda: batched.train_epoch(order, epoch=1)))
        order_t = torch.from_numpy(order)
        baseline.append(timed(lambda: plain_minibatch(plain_model, plain_opt, coords_t, colours_t, order_t,
                                                      args.batch_size)))
    print(f"minibatch SGD, batch size {args.batch_size}, CPU:")
    report("batched engine (monalisa)", ours, baseline, "plain PyTorch minibatch loop")


if __name__ == "__main__":
    main()
