"""fit(): epochs of training, a frame and figures after each, callbacks for the rest.

The loop knows nothing about files or terminals (minGPT's trainer): frames,
metrics, checkpoints and progress hang off it as callbacks (runs/recorder.py,
runs/progress.py). Each epoch:

1. train on a fresh permutation of all pixels (or scan order), timed alone;
2. render: a forward-only pass over all pixels in scan order, in eval mode (inference.py);
3. figures on the raw network output against the target (never clamped;
   clamping is for the frame only): ``mae`` (the original's printed figure),
   ``mse``, and ``psnr`` = 10 log10(1 / mse) in dB for [0, 1] values;
4. the frame: each channel x 255, clamped to [0, 255], truncated (docs/original.md).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from monalisa import interrupts
from monalisa.data.images import Target
from monalisa.engines import choose_engine, make_engine, resolve_device
from monalisa.engines.cores import TorchThreads
from monalisa.errors import Diverged
from monalisa.models.network import build_model
from monalisa.recipes.limits import check_recipe
from monalisa.recipes.recipe import Recipe
from monalisa.training.inference import image_metrics, render, to_frame

METRIC_COLUMNS = ("epoch", "train_seconds", "seconds", "mae", "mse", "psnr")


class Callback:
    """Override what you need; every hook receives the trainer."""

    def on_start(self, trainer: Trainer) -> None: ...
    def on_progress(self, trainer: Trainer, epoch: int, fraction: float) -> None: ...
    def on_epoch(self, trainer: Trainer, row: dict, frame: np.ndarray) -> None: ...
    def on_end(self, trainer: Trainer, stopped_by: str) -> None: ...


@dataclass
class FitResult:
    history: list[dict]  # one row per epoch, keys METRIC_COLUMNS
    stopped_by: str  # "epochs", "until_psnr" or "time_limit"; on_end also sees "diverged", "interrupted", "error"
    model: torch.nn.Module = field(repr=False)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


class Trainer:
    """Holds everything a run needs to continue: model, engine, RNG and history."""

    def __init__(self, target: Target, recipe: Recipe, device: str = "auto", engine: str = "auto"):
        self.target = target
        self.recipe = recipe
        self.device = resolve_device(device)
        self.engine_name = choose_engine(engine, recipe, self.device)
        check_recipe(recipe, pixels=target.height * target.width)  # sizes by arithmetic, before allocating
        self.model = build_model(recipe).to(self.device)
        self.coords = target.coords  # (N, 2) scan order
        self.colours = target.colours  # (N, 3)
        # The render's threads follow the cores free (beside a busy process, two threads rendered the
        # Mona Lisa 2.5x slower than one); made before the engine, so both read the same share.
        self.render_threads = TorchThreads(None if self.device.type == "cpu" else 1)
        self.engine = make_engine(self.engine_name, self.model, recipe, self.coords, self.colours, self.device)
        self.rng = np.random.default_rng(recipe.seed)  # pixel order; the model has its own seed stream
        self.history: list[dict] = []
        self._untimed = 0.0  # seconds callbacks spent inside the current epoch (live previews, dynamics)
        self._epoch_started = time.perf_counter()  # when the current epoch's training began

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return len(self.history)

    def state_dict(self) -> dict:
        """Tensors and plain Python values only (dicts, lists, str, int, float, None): runs/directory.py loads
        checkpoints with ``torch.load(weights_only=True)``, which refuses anything else, so a
        checkpoint is data and never code. The generator's state is already a dict of str and int."""
        self.engine.sync()
        return {
            "epoch": self.epoch,
            "recipe": self.recipe.to_dict(),
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "engine": self.engine.state_dict(),
            "rng": self.rng.bit_generator.state,
            "history": [dict(row) for row in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.engine.load_state_dict(state["engine"])
        self.rng.bit_generator.state = state["rng"]
        self.history = [dict(row) for row in state["history"]]

    def stopping_rule(self) -> str | None:
        """'until_psnr' or 'time_limit' once the recipe's early-stopping rule is met."""
        return stopping_rule(self.recipe, self.history)

    @contextmanager
    def untimed(self):
        """Work a callback does inside an epoch (a live preview): kept out of ``train_seconds``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._untimed += time.perf_counter() - started

    def seconds_into_epoch(self) -> float:
        """Training seconds of the epoch in progress so far (callbacks' untimed work left out)."""
        return time.perf_counter() - self._epoch_started - self._untimed

    def training_seconds(self) -> float:
        return sum(row["train_seconds"] for row in self.history)

    def pixel_order(self) -> np.ndarray:
        n = len(self.coords)
        if self.recipe.order == "scan":
            return np.arange(n, dtype=np.int64)
        return self.rng.permutation(n)

    def fit(self, callbacks: list[Callback] = (), epochs: int | None = None) -> FitResult:
        """Train until ``epochs`` (default: the recipe's) have been completed in total, or a stopping rule holds.

        Stopping rules are checked between epochs, so ``time_limit`` can be
        overrun by up to one epoch's training. A pause or stop request (interrupts.py) is acted on
        before each epoch and at each progress report, by raising Paused or Stopped: the epochs
        done so far are whole, and the callbacks see the end as "interrupted"."""
        epochs = self.recipe.epochs if epochs is None else epochs
        wall_before = self.history[-1]["seconds"] if self.history else 0.0
        session_start = time.perf_counter()
        for callback in callbacks:
            callback.on_start(self)
        stopped_by = "error"  # until the loop says otherwise
        try:
            while self.epoch < epochs:
                interrupts.check()  # between epochs, and after the engine's compilation or cache loading
                epoch = self.epoch + 1
                order = self.pixel_order()

                def progress(fraction: float, epoch=epoch) -> None:
                    interrupts.check()  # between kernel calls: the engines report at most ~0.1 s apart
                    for callback in callbacks:
                        callback.on_progress(self, epoch, fraction)

                self._untimed = 0.0
                started = self._epoch_started = time.perf_counter()
                self.engine.train_epoch(order, epoch, progress)
                train_seconds = time.perf_counter() - started - self._untimed

                self.engine.sync()
                self.render_threads.adapt()
                output = render(self.model, self.coords, self.device)
                row = {
                    "epoch": epoch,
                    "train_seconds": train_seconds,
                    "seconds": wall_before + time.perf_counter() - session_start,
                    **image_metrics(output, self.colours),
                }
                self.history.append(row)
                frame = to_frame(output, self.target.height, self.target.width)
                for callback in callbacks:
                    callback.on_epoch(self, row, frame)
                rule = self.stopping_rule()
                if rule:
                    stopped_by = rule
                    break
            else:
                stopped_by = "epochs"
        except Diverged:
            stopped_by = "diverged"
            raise
        except KeyboardInterrupt:
            stopped_by = "interrupted"
            raise
        finally:
            for callback in callbacks:
                callback.on_end(self, stopped_by)
        return FitResult(history=self.history, stopped_by=stopped_by, model=self.model)


def stopping_rule(recipe: Recipe, history: list[dict]) -> str | None:
    """'until_psnr' or 'time_limit' once ``history`` meets the recipe's early-stopping rule, else None."""
    if recipe.until_psnr is not None and history and history[-1]["psnr"] >= recipe.until_psnr:
        return "until_psnr"
    if recipe.time_limit is not None and sum(row["train_seconds"] for row in history) >= recipe.time_limit:
        return "time_limit"
    return None


def fit(target: Target, recipe: Recipe, *, device: str = "auto", engine: str = "auto",
        callbacks: list[Callback] = ()) -> FitResult:
    """Train ``recipe`` on ``target`` from scratch; see Trainer for resuming."""
    return Trainer(target, recipe, device=device, engine=engine).fit(callbacks)
