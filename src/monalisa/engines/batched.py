"""The batched engine: PyTorch minibatch training, any recipe, CPU or CUDA.

Loss per pixel is the original's half sum of squared errors over R, G, B; a
batch takes its mean, so a step's size does not grow with the batch size and
batch size 1 is exactly the online algorithm.

A step is the textbook one: forward, ``loss.backward()``, the registry's torch
optimiser (components.py). A hand-written backward pass with in-place SGD for
the original's family measured 0.9-1.09x the speed of this on 1 and 2 threads
(benchmarks/batched_engine.py, 2026-11) and was dropped.
Three things beyond the textbook loop, and why:
- the epoch's permutation is applied once, as one gather, so each batch is a
  contiguous slice rather than an indexing op;
- the divergence check reads the loss back only every few batches on CUDA, so
  the GPU is not stalled by a host sync each step;
- on the CPU, the torch thread count follows the cores the rest of the machine
  leaves free (cores.FreeCores), re-decided about twenty times an epoch, up to
  the share the run was given (torch's thread count when the engine is made).
  Two threads sharing a core with another process ran the `fast` preset 5.2x
  slower than one thread (benchmarks/contention.py). PyTorch's CPU kernels may
  sum in another order on another thread count (measured: `fast` weights differ
  by 1.5e-7 after two epochs on 1 and 2 threads; `siren` and `original` at batch
  256 came out identical), so a batched run on a machine whose load changes is
  reproducible to float rounding; its resume restores the exact state, and is
  bit-exact wherever the thread counts match (a share of one thread: always).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from monalisa.engines.cores import TorchThreads
from monalisa.errors import Diverged
from monalisa.models.network import linear_layers
from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import OPTIMIZERS, SCHEDULES

# An error signal above 1000 stopped the original; half its square is the
# smallest per-pixel loss that such a delta implies.
DIVERGENCE_LOSS = 0.5 * 1000.0**2


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """One parameter group per layer at its own rate (Recipe.layer_learning_rates), and one for the
    encoding's parameters, if it has any, at ``encoding_lr``. Each group remembers its base rate
    so that a schedule can scale it."""
    layers = linear_layers(model)
    groups = [{"params": list(layer.parameters()), "lr": lr}
              for layer, lr in zip(layers, recipe.layer_learning_rates([l.in_features for l in layers]))]
    encoding_params = list(model.encoding.parameters())
    if encoding_params:
        groups.append({"params": encoding_params, "lr": recipe.encoding_lr or recipe.learning_rate})
    for group in groups:
        group["base_lr"] = group["lr"]
    return OPTIMIZERS.build(recipe.optimizer, groups)


class BatchedEngine:
    name = "batched"

    def __init__(self, model: torch.nn.Sequential, recipe: Recipe, coords: np.ndarray, colours: np.ndarray,
                 device: torch.device):
        self.model = model.to(device)
        self.recipe = recipe
        self.device = device
        self.coords = torch.from_numpy(np.ascontiguousarray(coords)).to(device)
        self.colours = torch.from_numpy(np.ascontiguousarray(colours)).to(device)
        self.optimizer = make_optimizer(self.model, recipe)
        self.schedule = SCHEDULES.build(recipe.schedule)
        # How often the loss is read back for the divergence check.
        self.check_every = 1 if device.type == "cpu" else 50
        # The thread share this run was given (torch's threads now), followed to the machine's load.
        self.threads = TorchThreads(torch.get_num_threads() if device.type == "cpu" else 1)
        self.batches_on = {}  # threads -> batches trained on that many, for benchmarks and tests

    def sync(self) -> None:
        pass  # the torch model is trained in place

    def copy_weights_to(self, model: torch.nn.Module) -> None:
        """The current weights (and the encoding's parameters and buffers) into ``model``, a copy of the
        trained one; the trained model is only read (dynamics.py)."""
        if model is not self.model:
            with torch.no_grad():
                for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
                    theirs.copy_(mine)

    def train_epoch(self, order: np.ndarray, epoch: int, on_progress: Callable[[float], None] | None = None) -> None:
        self.model.train()
        index = torch.from_numpy(np.ascontiguousarray(order)).to(self.device)
        coords, colours = self.coords[index], self.colours[index]  # (N, 2), (N, 3), in training order
        n, batch = len(order), self.recipe.batch_size
        steps = (n + batch - 1) // batch
        adapt_every = max(1, steps // 20)
        threads = torch.get_num_threads()
        for step in range(steps):
            if step % adapt_every == 0:
                threads = self.threads.adapt()
            self.batches_on[threads] = self.batches_on.get(threads, 0) + 1
            self._set_rates((epoch - 1 + step / steps) / self.recipe.epochs)
            x = coords[step * batch:(step + 1) * batch]
            t = colours[step * batch:(step + 1) * batch]
            loss = 0.5 * (self.model(x) - t).square().sum(dim=1).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step % self.check_every == 0 or step == steps - 1:
                self._check(loss, epoch, step)
            self.optimizer.step()
            # After every step, the finest point between kernel calls: the trainer acts on a pause or stop
            # here, and the callbacks behind it keep their own pace (a few µs a call that does nothing).
            if on_progress is not None:
                on_progress((step + 1) / steps)

    def _set_rates(self, progress: float) -> None:
        factor = self.schedule(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _check(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        value = loss.item()
        if not value <= DIVERGENCE_LOSS:  # written this way round to catch NaN too
            raise Diverged(epoch, f"loss {value:.3g} at batch {step:,}")

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

