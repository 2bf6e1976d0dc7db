"""The batched engine: PyTorch minibatch training, any recipe, CPU or CUDA.

Loss per pixel is the original's half sum of squared errors over R, G, B; a
batch takes its mean, so a step's size does not grow with the batch size and
batch size 1 is exactly the online algorithm.

What it does beyond the textbook loop, and why (benchmarks/epoch_time.py
measures the difference):
- the original's family of recipes (online.compiled_subset) takes a hand-written backward pass
  that updates each layer in place with one ``addmm_`` as soon as its delta is
  known (the online kernel's scheme, batched): no autograd graph, no gradient
  tensors, no separate optimiser sweep over the weights. Other recipes use
  autograd and torch.optim;
- the epoch's permutation is applied once, as one gather, so each batch is a
  contiguous slice rather than an indexing op;
- the divergence check reads the loss back only every few batches on CUDA, so
  the GPU is not stalled by a host sync each step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import Diverged
from ..models import linear_layers
from ..recipes import Recipe
from ..registry import ACTIVATIONS, OPTIMIZERS, SCHEDULES
from .online import compiled_subset

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
        self.layers = linear_layers(self.model)
        self.layer_lr = [group["lr"] for group in self.optimizer.param_groups[:len(self.layers)]]
        self.manual = compiled_subset(recipe) is None  # see the module docstring
        if self.manual:
            hidden = ACTIVATIONS.parse(recipe.layer_activations()[0])
            self.hidden, self.slope = hidden.name, getattr(hidden.options, "slope", 0.0)
        self.schedule = SCHEDULES.build(recipe.schedule)
        # How often the loss is read back for the divergence check.
        self.check_every = 1 if device.type == "cpu" else 50

    def sync(self) -> None:
        pass  # the torch model is trained in place

    def train_epoch(self, order: np.ndarray, epoch: int, on_progress: Callable[[float], None] | None = None) -> None:
        self.model.train()
        index = torch.from_numpy(np.ascontiguousarray(order)).to(self.device)
        coords, colours = self.coords[index], self.colours[index]  # (N, 2), (N, 3), in training order
        n, batch = len(order), self.recipe.batch_size
        steps = (n + batch - 1) // batch
        progress_every = max(1, steps // 20)
        for step in range(steps):
            self._set_rates((epoch - 1 + step / steps) / self.recipe.epochs)
            x = coords[step * batch:(step + 1) * batch]
            t = colours[step * batch:(step + 1) * batch]
            check = step % self.check_every == 0 or step == steps - 1
            if self.manual:
                self._manual_sgd_step(x, t, epoch, step, check)
            else:
                loss = 0.5 * (self.model(x) - t).square().sum(dim=1).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if check:
                    self._check(loss, epoch, step)
                self.optimizer.step()
            if on_progress is not None and (step % progress_every == 0 or step == steps - 1):
                on_progress((step + 1) / steps)

    def _set_rates(self, progress: float) -> None:
        factor = self.schedule(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _check(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        value = loss.item()
        if not value <= DIVERGENCE_LOSS:  # written this way round to catch NaN too
            raise Diverged(epoch, f"loss {value:.3g} at batch {step:,}")

    @torch.no_grad()
    def _manual_sgd_step(self, x: torch.Tensor, t: torch.Tensor, epoch: int, step: int, check: bool) -> None:
        """One SGD step on the batch's mean half squared error, by hand (see the module docstring)."""
        acts = [x]  # acts[i]: input of layer i, (B, widths[i])
        for index, layer in enumerate(self.layers):
            z = torch.addmm(layer.bias, acts[-1], layer.weight.t())  # (B, n_out)
            last = index == len(self.layers) - 1
            acts.append(_activate(z, self.recipe.output if last else self.hidden, self.slope))
        y = acts.pop()
        error = t - y  # (B, 3)
        if check:
            self._check(0.5 * error.square().sum(dim=1).mean(), epoch, step)
        delta = error * _derivative(y, self.recipe.output, self.slope)
        scale = 1.0 / len(x)  # the loss is a mean over the batch
        for index in range(len(self.layers) - 1, -1, -1):
            layer, x_in = self.layers[index], acts[index]
            back = delta @ layer.weight if index > 0 else None  # with the old weights, as autograd would
            layer.weight.addmm_(delta.t(), x_in, alpha=self.layer_lr[index] * scale)
            layer.bias.add_(delta.sum(dim=0), alpha=self.layer_lr[index] * scale)
            if back is not None:
                delta = back.mul_(_derivative(x_in, self.hidden, self.slope))

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _activate(z: torch.Tensor, name: str, slope: float) -> torch.Tensor:
    if name == "leaky_relu":
        return torch.nn.functional.leaky_relu(z, slope)
    if name == "relu":
        return torch.relu(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "sigmoid":
        return torch.sigmoid(z)
    return z  # linear


def _derivative(y: torch.Tensor, name: str, slope: float) -> torch.Tensor | float:
    """f'(z) expressed through y = f(z), as the online kernel does."""
    if name == "leaky_relu":
        return torch.where(y >= 0, 1.0, slope)
    if name == "relu":
        return (y > 0).to(y.dtype)
    if name == "tanh":
        return 1 - y * y
    if name == "sigmoid":
        return y * (1 - y)
    return 1.0  # linear
