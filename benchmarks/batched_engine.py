"""Is a hand-written SGD step worth its code in the batched engine? One epoch of each, timed in one run.

    python benchmarks/batched_engine.py                     # astronaut at 256x256, 1 and 2 threads
    python benchmarks/batched_engine.py --repeats 7 --size 256

The batched engine trains with ``loss.backward()`` and the registry's torch
optimiser. The alternative measured here is a hand-written path for the original's
family (plain SGD at a constant rate, no encoding, one kernel activation): a
forward pass keeping each layer's output, and a backward pass that updates each
layer in place with one ``addmm_`` as soon as its delta is known (no autograd
graph, no gradient tensors, no optimiser sweep): ``HandWrittenSGD``, kept here so that
the decision not to ship it can be re-measured.

Both train the same recipe from the same initial weights on the same pixel
orders, with the epoch's permutation gathered once, and both read the loss back
every step for the divergence check, as the engine does on the CPU. They are
timed alternately, after one warm-up epoch each: each epoch is trained in slices
of 8,192 pixels (whole batches at every batch size here), A's slice then B's, so
that the noise of a shared machine hits both alike; an epoch's time is the sum
of its slices. The report gives medians and the ratio of medians. Only the
original's family can take the hand-written path, so the cases are that family
at several batch sizes and depths (`siren`'s and `fourier`'s 8192 included); the
other presets always train through autograd.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from monalisa.data.images import load_target
from monalisa.engines.batched import BatchedEngine, make_optimizer
from monalisa.models.network import build_model, linear_layers
from monalisa.recipes.recipe import get_preset
from monalisa.recipes.registry import ACTIVATIONS

# (preset, batch size): the headline network at its batch size; at the batch size of `siren`
# and `fourier` (8192); and the published code's deeper 6x300.
CASES = (("original", 256), ("original", 8192), ("original-code", 256))
SLICE = 8192  # pixels timed at a time, alternately; a multiple of every batch size in CASES


class HandWrittenSGD:
    """The removed path: minibatch SGD on the mean half squared error, backward written out."""

    def __init__(self, model, recipe, coords: np.ndarray, colours: np.ndarray):
        self.layers = linear_layers(model)
        self.lr = [group["lr"] for group in make_optimizer(model, recipe).param_groups]
        hidden = ACTIVATIONS.parse(recipe.layer_activations()[0])
        self.hidden, self.slope, self.output = hidden.name, getattr(hidden.options, "slope", 0.0), recipe.output
        self.batch = recipe.batch_size
        self.coords, self.colours = torch.from_numpy(coords), torch.from_numpy(colours)

    @torch.no_grad()
    def train_epoch(self, order: np.ndarray, epoch: int) -> None:
        index = torch.from_numpy(order)
        coords, colours = self.coords[index], self.colours[index]  # (N, 2), (N, 3), in training order
        for start in range(0, len(order), self.batch):
            self._step(coords[start:start + self.batch], colours[start:start + self.batch])

    def _step(self, x: torch.Tensor, t: torch.Tensor) -> None:
        acts = [x]  # acts[i]: input of layer i, (B, widths[i])
        for index, layer in enumerate(self.layers):
            z = torch.addmm(layer.bias, acts[-1], layer.weight.t())  # (B, n_out)
            acts.append(_activate(z, self.output if index == len(self.layers) - 1 else self.hidden, self.slope))
        y = acts.pop()
        error = t - y  # (B, 3)
        if not 0.5 * error.square().sum(dim=1).mean().item() <= 5e5:  # the engine's divergence check
            raise RuntimeError("diverged")
        delta = error * _derivative(y, self.output, self.slope)
        scale = 1.0 / len(x)  # the loss is a mean over the batch
        for index in range(len(self.layers) - 1, -1, -1):
            layer, x_in = self.layers[index], acts[index]
            back = delta @ layer.weight if index > 0 else None  # with the old weights, as autograd would
            layer.weight.addmm_(delta.t(), x_in, alpha=self.lr[index] * scale)
            layer.bias.add_(delta.sum(dim=0), alpha=self.lr[index] * scale)
            if back is not None:
                delta = back.mul_(_derivative(x_in, self.hidden, self.slope))


def _activate(z: torch.Tensor, name: str, slope: float) -> torch.Tensor:
    functions = {"leaky_relu": lambda: torch.nn.functional.leaky_relu(z, slope), "relu": lambda: torch.relu(z),
                 "tanh": lambda: torch.tanh(z), "sigmoid": lambda: torch.sigmoid(z), "linear": lambda: z}
    return functions[name]()


def _derivative(y: torch.Tensor, name: str, slope: float) -> torch.Tensor | float:
    """f'(z) expressed through y = f(z), as the online kernel does."""
    functions = {"leaky_relu": lambda: torch.where(y >= 0, 1.0, slope), "relu": lambda: (y > 0).to(y.dtype),
                 "tanh": lambda: 1 - y * y, "sigmoid": lambda: y * (1 - y), "linear": lambda: 1.0}
    return functions[name]()


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def compare(recipe, coords: np.ndarray, colours: np.ndarray, repeats: int, rng) -> tuple[list[float], list[float]]:
    """Seconds per epoch of the engine (autograd + torch.optim) and of the hand-written path, alternately."""
    engine = BatchedEngine(build_model(recipe), recipe, coords, colours, torch.device("cpu"))
    by_hand = HandWrittenSGD(build_model(recipe), recipe, coords, colours)
    n = len(coords)
    engine.train_epoch(rng.permutation(n), epoch=1)  # warm-up: allocator, first-call costs
    by_hand.train_epoch(rng.permutation(n), epoch=1)
    autograd, hand = [], []
    for _ in range(repeats):
        order = rng.permutation(n)
        autograd.append(0.0)
        hand.append(0.0)
        for start in range(0, n, SLICE):
            piece = order[start:start + SLICE]
            autograd[-1] += timed(lambda: engine.train_epoch(piece, epoch=1))
            hand[-1] += timed(lambda: by_hand.train_epoch(piece, epoch=1))
    return autograd, hand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="astronaut")
    parser.add_argument("--size", type=int, default=256, help="the image is resized to SIZE x SIZE pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per path (median reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    target = load_target(args.image, size=(args.size, args.size))
    coords, colours = target.coords, target.colours
    print(f"{target.name} {target.width}x{target.height} ({len(coords):,} pixels), torch {torch.__version__}, "
          f"{args.repeats} alternating epochs a path, medians in s/epoch\n")
    print(f"{'threads':>7}  {'recipe':32s} {'autograd':>9} {'by hand':>9}  speed-up by hand")
    rng = np.random.default_rng(0)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for preset, batch_size in CASES:
            recipe = get_preset(preset).replace(batch_size=batch_size)
            autograd, hand = compare(recipe, coords, colours, args.repeats, rng)
            a, h = statistics.median(autograd), statistics.median(hand)
            print(f"{threads:>7}  {recipe.describe():32s} {a:9.3f} {h:9.3f}  {a / h:9.2f}x"
                  f"   (autograd runs: {', '.join(f'{t:.3f}' for t in autograd)};"
                  f" by hand: {', '.join(f'{t:.3f}' for t in hand)})")


if __name__ == "__main__":
    main()
