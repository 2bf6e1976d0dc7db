"""Training engines, and the one place where a device and an engine are chosen.

Two engines train the same model and share one interface:
``train_epoch(order, epoch, on_progress)``, ``sync()`` (weights back into the
torch model), ``copy_weights_to(model)`` (the current weights into a copy of the
model, changing nothing of the training: dynamics.py's probe, mid-epoch),
``state_dict()`` / ``load_state_dict()`` (optimiser state).

- ``online``: the original per-pixel SGD, compiled (numba), exact; CPU only.
- ``batched``: PyTorch minibatches, every recipe, CPU or CUDA.

``auto`` picks ``online`` wherever it can run the recipe exactly on the CPU.
That question is answered by online_support.py, without numba: numba (0.2-0.4 s
to import, measured with -X importtime) loads only when the online engine is made.
"""

from __future__ import annotations

import numpy as np
import torch

from monalisa.engines.online_support import supports
from monalisa.errors import UserError, unknown_name
from monalisa.recipes.recipe import Recipe

ENGINES = ("auto", "online", "batched")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if present, else cpu."""
    if name not in DEVICES:
        raise unknown_name("device", name, DEVICES)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def choose_engine(name: str, recipe: Recipe, device: torch.device) -> str:
    if name not in ENGINES:
        raise unknown_name("engine", name, ENGINES)
    reason = supports(recipe)
    if name == "auto":
        return "online" if reason is None and device.type == "cpu" else "batched"
    if name == "online" and reason:
        raise UserError(f"--engine online cannot run this recipe: {reason}; use --engine batched")
    if name == "online" and device.type != "cpu":
        raise UserError("--engine online runs on the CPU only; use --device cpu or --engine batched")
    return name


def make_engine(name: str, model: torch.nn.Sequential, recipe: Recipe, coords: np.ndarray, colours: np.ndarray,
                device: torch.device):
    if name == "online":
        from monalisa.engines.online import OnlineEngine  # imports numba: only when this engine runs

        return OnlineEngine(model, recipe, coords, colours)
    from monalisa.engines.batched import BatchedEngine

    return BatchedEngine(model, recipe, coords, colours, device)
