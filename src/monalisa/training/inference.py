"""The render: a network's output for every pixel, fast on a CPU, and the figures and frame made from it.

Forward passes only, under ``torch.no_grad()`` in eval mode, in chunks sized for the cache; on a CPU the
wide layers run through oneDNN (models/packed.py) and the chunks are shared out among torch's threads.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
import torch

from monalisa.models.network import CoordinateNetwork
from monalisa.models.packed import can_pack, packed_network

# Pixels per forward pass when rendering: as many as keep one layer's activations
# within RENDER_FLOATS floats (4 MB), so that each layer's output is still in cache
# when the next reads it. Measured on the Mona Lisa, 2 threads (1 thread): 4x300
# 0.36 s (0.73) with 3,495 pixels a chunk against 0.72 s (1.28) with 65,536.
RENDER_CHUNK = 65536
RENDER_FLOATS = 2**20
# Through oneDNN (packed.py) a chunk runs on one core, so it is sized for that core's own
# cache instead: 4x300 on the Mona Lisa, 2 cores (AMD Zen 5, 1 MB L2 a core), rendered in
# 0.16-0.17 s with 1,024 pixels a chunk, 0.18 with 512 and 2,048, 0.33-0.38 with 3,495.
PACKED_FLOATS = 2**18 + 2**16
PACK_LAYERS = True  # False: the render runs torch's own matmul (benchmarks/wall_time.py's baseline)
# A last hidden layer wider than WIDE_LAYER units is computed UNIT_BLOCK units at a time
# (CoordinateNetwork.forward_in_unit_blocks), so chunks stay RENDER_FLOATS // UNIT_BLOCK
# pixels long: 1x45450 renders in 1.4-1.5 s (2 threads) against 3.1-3.3 s for chunks
# of 23 pixels and 15.7 s for chunks of 738.
WIDE_LAYER = 4096
UNIT_BLOCK = 256


@torch.no_grad()
def render(model: torch.nn.Module, coords: np.ndarray, device: torch.device) -> np.ndarray:
    """The network's raw output for every coordinate, (N, 3) float32, in eval mode.

    On a CPU the chunks are shared out among torch's threads as whole chunks, one torch
    thread each (each takes the next chunk when it is done, so a core that another
    process slows takes fewer): a chunk stays in one core's cache and the threads never
    wait for each other inside a product.
    """
    was_training = model.training
    model.eval()
    try:
        forward, widest, budget = _forward_for_render(model, device)
        chunk = max(1, min(RENDER_CHUNK, budget // widest))
        threads = torch.get_num_threads() if device.type == "cpu" else 1
        return _forward_in_chunks(forward, coords, chunk, device, threads)
    finally:
        model.train(was_training)


def _forward_for_render(model: torch.nn.Module, device: torch.device):
    """(forward, widest, floats): the function a render calls on each chunk, the widest activations
    it holds at once (every layer's, the encoding's, and with a split last layer UNIT_BLOCK of its
    units instead of all of them), and the floats of activations a chunk may hold."""
    widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    widths.append(getattr(getattr(model, "encoding", None), "out_features", 0))
    if getattr(model, "can_split_last_layer", lambda: False)() and model.layers[-2].out_features > WIDE_LAYER:
        widths.remove(model.layers[-2].out_features)
        widths.append(UNIT_BLOCK)
        return functools.partial(model.forward_in_unit_blocks, block=UNIT_BLOCK), max(widths), RENDER_FLOATS
    if PACK_LAYERS and isinstance(model, CoordinateNetwork) and can_pack(device):
        packed = packed_network(model)
        if packed is not None:  # None: no layer wide enough to gain from packing
            return packed, max(widths), PACKED_FLOATS
    return model, max(widths), RENDER_FLOATS


def _forward_in_chunks(forward, coords: np.ndarray, chunk: int, device: torch.device, threads: int) -> np.ndarray:
    """``forward`` over ``coords`` ``chunk`` rows at a time, on ``threads`` threads of one torch thread
    each (the calling thread alone, with its own setting, when ``threads`` is 1); (N, 3) float32."""
    out = np.empty((len(coords), 3), dtype=np.float32)
    starts = iter(range(0, len(coords), chunk))
    lock = threading.Lock()
    failures = []

    def work() -> None:
        while not failures:
            with lock:
                start = next(starts, None)
            if start is None:
                return
            x = torch.from_numpy(coords[start:start + chunk]).to(device)
            out[start:start + chunk] = forward(x).float().cpu().numpy()

    if threads <= 1:
        work()
        return out

    def worker() -> None:
        torch.set_num_threads(1)  # this thread's own setting (OpenMP's and MKL's are per thread)
        try:
            with torch.no_grad():  # grad mode is per thread too
                work()
        except BaseException as error:  # raised again in the calling thread
            failures.append(error)

    pool = [threading.Thread(target=worker, name=f"render-{i}", daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise failures[0]
    return out


def to_frame(output: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, 3) raw output -> (H, W, 3) uint8: x 255, clamped, truncated, as the original."""
    return np.clip(output * 255.0, 0, 255).astype(np.uint8).reshape(height, width, 3)


def image_metrics(output: np.ndarray, colours: np.ndarray) -> dict:
    error = output.astype(np.float64) - colours
    mse = float(np.mean(error**2))
    return {
        "mae": float(np.mean(np.abs(error))),
        "mse": mse,
        "psnr": 10 * math.log10(1 / mse) if mse > 0 else float("inf"),
    }
