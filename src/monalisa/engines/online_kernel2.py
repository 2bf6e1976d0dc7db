"""The exact online-SGD kernel on two cores: online_kernel.core's two blocks of every layer, one a core.

Why: one core streams every weight three times a pixel (forward read, backward
read and write) at this machine's cache bandwidth (~20 us a pixel for 4x300).
Each core here holds one block of every layer, so each streams half the
weights and half the network (0.55 MB for 4x300) fits its own L2; the cores
meet at a spin barrier (~1 us: a cache line each way plus waiting for the
slower core) once per hidden-to-hidden layer and pixel. online_kernel.py has
the layout, and why it rounds exactly as one core does: both run the same
compiled body, ``train_pixels_on``.

The cores spin while they wait, so this kernel needs both cores to itself: with
another job on one of them it runs 5-50x slower than one core (engines/online.py
decides which kernel each call runs). If the two prange iterations do not run at
the same time (one thread available), it returns NO_PARTNER, ``params`` untouched.
"""

from monalisa.engines.online_kernel import NO_PARTNER, train_pixels_on

__all__ = ["NO_PARTNER", "train_pixels_two_cores"]


def train_pixels_two_cores(params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                           hidden_code, output_code, slope, max_delta):
    """As online_kernel.train_pixels, bit for bit, on two cores; returns (status, k), status possibly NO_PARTNER."""
    return train_pixels_on(2, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                           hidden_code, output_code, slope, max_delta)
