"""The online engine: the original per-pixel backprop, exact, in compiled code.

It trains the same ``torch.nn.Sequential`` the batched engine does, by copying
its weights into one flat float32 array, running ``online_kernel.train_pixels``
over the epoch's pixel order, and copying them back when asked (``sync``).
Plain SGD carries no optimiser state, so the weights are the whole state.
"""

from __future__ import annotations

import os
from typing import Callable

import numba
import numpy as np
import torch

from ..errors import Diverged
from ..models import linear_layers
from ..recipes import Recipe
from ..registry import ACTIVATIONS
from . import online_kernel as kernel
from . import online_kernel2 as kernel2
from .online_support import supports

# The kernel's code for each name online_support admits (tests/test_engines.py checks they agree).
_ACTIVATION_CODES = {
    "leaky_relu": kernel.LEAKY_RELU,
    "relu": kernel.RELU,
    "tanh": kernel.TANH,
    "sigmoid": kernel.SIGMOID,
}
_OUTPUT_CODES = {"linear": kernel.IDENTITY, "sigmoid": kernel.SIGMOID}

# docs/original.md: an error signal (delta) above 1000 in magnitude stops the run.
MAX_DELTA = 1000.0

# Pixels per kernel call: small enough for progress several times an epoch,
# large enough that the Python round trip (~10 us) is lost in ~40 ms of work.
CHUNK = 1024


def two_cores_available(widths) -> bool:
    """Use the two-core kernel when two threads are allowed, the machine is not busy, and
    the layers are wide enough to share.

    Narrow layers (under 64 units) are cheaper on one core than the ~1 us a
    pixel the cross-core barriers cost. The kernel's cores spin while they wait
    for each other, so with another job on the machine (a load average of half
    the cores or more) one core is faster: measured 200-2,700 us a pixel against
    ~40. ``torch.set_num_threads(1)`` (as each worker of a parallel comparison
    does) or NUMBA_NUM_THREADS=1 keep one core. The choice is made once a run
    and kept in its checkpoint, so a resumed run rounds as the original did.
    """
    cores = os.cpu_count() or 1
    return cores >= 2 and numba.get_num_threads() >= 2 and torch.get_num_threads() >= 2 \
        and os.getloadavg()[0] < cores / 2 and max(widths[1:-1], default=0) >= 64


class OnlineEngine:
    name = "online"

    def __init__(self, model: torch.nn.Sequential, recipe: Recipe, coords: np.ndarray, colours: np.ndarray):
        reason = supports(recipe)
        if reason:
            raise ValueError(reason)
        self.model = model
        self.layers = linear_layers(model)
        widths = [self.layers[0].in_features] + [layer.out_features for layer in self.layers]
        self.widths, self.w_off, self.b_off, self.a_off, size = kernel.layout(widths)
        self.params = np.empty(size, dtype=np.float32)
        self.layer_lr = np.array(recipe.layer_learning_rates(list(self.widths[:-1])), dtype=np.float32)
        self.coords = np.ascontiguousarray(coords, dtype=np.float32)
        self.colours = np.ascontiguousarray(colours, dtype=np.float32)
        activation = ACTIVATIONS.parse(recipe.layer_activations()[0])
        self.hidden_code = _ACTIVATION_CODES[activation.name]
        self.output_code = _OUTPUT_CODES[recipe.output]
        self.slope = np.float32(getattr(activation.options, "slope", 0.0))
        self.cores = 2 if two_cores_available(self.widths) else 1
        self.load_from_model()
        # Compile (or load from numba's cache, ~0.5 s) now, so the first epoch's
        # train_seconds time training alone.
        self._train(np.empty(0, dtype=np.int64))

    def load_from_model(self) -> None:
        """Copy the torch model's weights into the flat array (after init or a resume)."""
        for layer, linear in enumerate(self.layers):
            n_out, n_in = linear.weight.shape
            w, b = self.w_off[layer], self.b_off[layer]
            self.params[w:w + n_out * n_in] = linear.weight.detach().cpu().numpy().ravel()
            self.params[b:b + n_out] = linear.bias.detach().cpu().numpy()

    def sync(self) -> None:
        """Copy the trained weights back into the torch model."""
        with torch.no_grad():
            for layer, linear in enumerate(self.layers):
                n_out, n_in = linear.weight.shape
                w, b = self.w_off[layer], self.b_off[layer]
                linear.weight.copy_(torch.from_numpy(self.params[w:w + n_out * n_in].reshape(n_out, n_in)))
                linear.bias.copy_(torch.from_numpy(self.params[b:b + n_out]))

    def train_epoch(self, order: np.ndarray, epoch: int, on_progress: Callable[[float], None] | None = None) -> None:
        order = np.ascontiguousarray(order, dtype=np.int64)
        for start in range(0, len(order), CHUNK):
            status, done = self._train(order[start:start + CHUNK])
            if status == kernel.DIVERGED:
                raise Diverged(epoch, f"error signal above {MAX_DELTA:g} or not finite at pixel {start + done:,}")
            if on_progress is not None:
                on_progress(min(start + CHUNK, len(order)) / len(order))

    def _train(self, order: np.ndarray) -> tuple[int, int]:
        args = (self.params, self.widths, self.w_off, self.b_off, self.a_off, self.layer_lr,
                self.coords, self.colours, order, self.hidden_code, self.output_code, self.slope,
                np.float32(MAX_DELTA))
        if self.cores == 2:
            status, done = kernel2.train_pixels_two_cores(*args)
            if status != kernel2.NO_PARTNER:
                return status, done
            self.cores = 1  # no second thread ran alongside: nothing was updated, go on with one core
        return kernel.train_pixels(*args)

    def state_dict(self) -> dict:
        # The weights are the whole state of plain SGD; the core count is kept so a
        # resumed run splits its sums the same way and rounds identically.
        return {"cores": self.cores}  # plain SGD: the model's weights are the whole state

    def load_state_dict(self, state: dict) -> None:
        if state.get("cores") == 1:
            self.cores = 1
        elif state.get("cores") == 2 and numba.get_num_threads() >= 2:
            self.cores = 2  # as the run started, even if the machine is busier now
        self.load_from_model()
