"""The online engine: the original per-pixel backprop, exact, in compiled code.

It trains the same ``torch.nn.Sequential`` the batched engine does, by copying
its weights into one flat float32 array, running the kernel over the epoch's
pixel order in 1,024-pixel calls, and copying them back when asked (``sync``).
Plain SGD carries no optimiser state, so the weights are the whole state.

Each call runs on one core or two, decided just before it from the cores the
rest of the machine used over the last ~0.1 s (FreeCores). The two kernels give
bit-identical weights (online_kernel.py), so the choice is free to change at
any call, and a run and its resume give the same result whatever the load.
"""

from __future__ import annotations

import time
from typing import Callable

import numba
import numpy as np
import torch

from monalisa.engines import online_kernel as kernel
from monalisa.engines.cores import FreeCores, usable_cores
from monalisa.engines.online_support import supports
from monalisa.errors import Diverged
from monalisa.models.network import linear_layers
from monalisa.recipes.recipe import Recipe
from monalisa.recipes.registry import ACTIVATIONS

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


# The two-core kernel runs only while the other processes on this machine leave both
# cores free (cores.TAKEN_FROM): its cores spin at each meeting, so a third busy
# thread (measured: one Python busy loop) makes it 5-50x slower than one core.
# A two-core call slower per pixel than one core's last call means the cores were
# not free after all (a load /proc/stat cannot see); one core for this many calls.
BACK_OFF_CALLS = 16
# Calls shorter than this (an epoch's tail) are too short to time.
TIMED_PIXELS = 256


def two_cores_allowed(widths) -> bool:
    """Whether this run may ever use the two-core kernel (which calls do is decided by FreeCores).

    Two cores this process may run on, two numba threads, two torch threads
    (``torch.set_num_threads(1)``, as each worker of a parallel comparison does,
    or NUMBA_NUM_THREADS=1 keep one core), and a hidden layer of 64 units or
    more: narrower layers are cheaper on one core than the ~1 us a pixel the
    cross-core meetings cost.
    """
    return usable_cores() >= 2 and numba.get_num_threads() >= 2 and torch.get_num_threads() >= 2 \
        and max(widths[1:-1], default=0) >= 64


class OnlineEngine:
    name = "online"

    def __init__(self, model: torch.nn.Sequential, recipe: Recipe, coords: np.ndarray, colours: np.ndarray,
                 cores: int | None = None):
        """``cores``: None (each call on the cores free now), or 1 or 2 for every call (benchmarks, tests)."""
        if cores not in (None, 1, 2):
            raise ValueError(f"cores must be None, 1 or 2, not {cores!r}")
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
        self.fixed_cores = cores
        self.max_cores = 2 if cores == 2 or (cores is None and two_cores_allowed(self.widths)) else 1
        self.free = FreeCores() if cores is None and self.max_cores == 2 else None
        self.cores = 1  # the kernel the last call ran on
        self.calls = {1: 0, 2: 0}  # calls run on each kernel, for benchmarks and tests
        self.one_core_pixel_seconds = None  # the last timed one-core call's seconds a pixel
        self.back_off = 0  # calls left on one core after a two-core call that was slower
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
        self.copy_weights_to(self.model)

    def copy_weights_to(self, model: torch.nn.Module) -> None:
        """The current weights into ``model`` (the trained one, or a copy of it): the flat array is only
        read, so this is safe between any two kernel calls and changes nothing of the training
        (dynamics.py reads weights mid-epoch this way). ~0.3 ms for the 4x300 network."""
        with torch.no_grad():
            for layer, linear in enumerate(linear_layers(model)):
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

    def _choose(self) -> int:
        """The kernel for the next call: two cores if the other processes leave two free (FreeCores).

        Both kernels round identically (online_kernel.py), so this choice changes
        the speed only, never a result, and may change at any call.
        """
        if self.fixed_cores is not None or self.max_cores == 1:
            return self.max_cores
        if self.back_off > 0:
            self.back_off -= 1
            return 1
        return self.free.cores_free(2)

    def _train(self, order: np.ndarray) -> tuple[int, int]:
        args = (self.params, self.widths, self.w_off, self.b_off, self.a_off, self.layer_lr,
                self.coords, self.colours, order, self.hidden_code, self.output_code, self.slope,
                np.float32(MAX_DELTA))
        self.cores = self._choose()
        started = time.perf_counter()
        status, done = kernel.train_pixels_on(self.cores, *args)
        if status == kernel.NO_PARTNER:  # no second thread ran alongside: nothing was updated
            self.max_cores = self.cores = 1
            status, done = kernel.train_pixels_on(1, *args)
        self.calls[self.cores] += 1
        if len(order) >= TIMED_PIXELS and status == kernel.OK:
            seconds = (time.perf_counter() - started) / len(order)
            if self.cores == 1:
                self.one_core_pixel_seconds = seconds
            elif self.one_core_pixel_seconds is not None and seconds > self.one_core_pixel_seconds \
                    and self.fixed_cores is None:
                self.back_off = BACK_OFF_CALLS
        return status, done

    def state_dict(self) -> dict:
        # Plain SGD: the model's weights are the whole state. (load_state_dict ignores
        # whatever an engine state holds, so any checkpoint of this engine loads.)
        return {}

    def load_state_dict(self, state: dict) -> None:
        self.load_from_model()
