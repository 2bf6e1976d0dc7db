"""The exact online-SGD kernel on two cores: each core owns half of every layer's rows.

Why: one core streams every weight three times a pixel (forward read, backward
read and write), and at ~4 us per 300x300 sweep it sits at this machine's
cache bandwidth (online_kernel.py, ~40 us a pixel for 4x300). Splitting each
weight matrix by output rows gives each core half the traffic, and half the
network (0.55 MB for 4x300) fits its own L2.

The algorithm is unchanged, pixel by pixel; only sums are split in two:
- forward, layer l: core t computes its rows of y = f(W x + b); barrier; both read all of y;
- output delta: both cores compute it for all outputs (3 numbers), identically;
- backward, layer l: core t adds its rows' share of W^T delta into its own
  buffer and updates its rows of W and b (old weights read first); barrier;
  both sum the two shares and compute the previous layer's delta, identically.
So each core decides divergence from the same numbers and returns at the same
pixel. The split sums round differently from the one-core kernel (tests
compare both with PyTorch autograd), and the same split always rounds the
same way, so runs stay reproducible.

Synchronisation is a two-party barrier on per-core step counters, written with
release stores and read with acquire loads (LLVM atomics through numba
intrinsics). Activations are double-buffered by pixel parity and the backward
shares by layer parity, so a core running one phase ahead never overwrites what
the other is still reading. If the two prange iterations do not run at the same
time (one thread available), the first barrier times out before any weight is
touched, both return ``NO_PARTNER``, and the engine falls back to one core.
"""

import numba
import numpy as np
from numba import prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from .online_kernel import (_FASTMATH, DIVERGED, OK, _activate, _backward_and_update, _derivative_from_output,
                            _matvec, _update)

NO_PARTNER = 2
# The first barrier's patience, in spins (~1-2 s): long enough for a busy OS to
# schedule the second thread, short enough to fall back quickly when there is none.
HANDSHAKE_SPINS = 200_000_000
# Flags sit 16 int64s (128 bytes) apart so the two cores never share a cache line.
STRIDE = 16


@intrinsic
def _load_acquire(typingctx, array, index):
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array_value = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, array_value, [args[1]])
        return builder.load_atomic(pointer, ordering="acquire", align=8)

    return types.int64(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array_value = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, array_value, [args[1]])
        builder.store_atomic(args[2], pointer, ordering="release", align=8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@numba.njit(inline="always")
def _barrier(flags, me, step, limit):
    """Publish ``step`` and wait for the other core to reach it. False: it never came, or gave up."""
    _store_release(flags, me * STRIDE, step)
    other = (1 - me) * STRIDE
    spins = 0
    while _load_acquire(flags, other) < step:
        if _load_acquire(flags, 2 * STRIDE) != 0:  # the other core gave up
            return False
        spins += 1
        if limit > 0 and spins > limit:
            _store_release(flags, 2 * STRIDE, np.int64(1))
            return False
    return True


@numba.njit(fastmath=_FASTMATH, nogil=True, cache=True)
def _half(me, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
          hidden_code, output_code, slope, max_delta, acts, shares, flags, result):
    n_layers = widths.shape[0] - 1
    max_width = 0
    for width in widths:
        max_width = max(max_width, width)
    delta = np.empty(max_width, dtype=params.dtype)  # this core's own copy: no sharing
    n_outputs = widths[n_layers]
    step = np.int64(0)
    step += 1
    if not _barrier(flags, me, step, HANDSHAKE_SPINS):
        result[me, 0], result[me, 1] = NO_PARTNER, 0
        return
    for k in range(order.shape[0]):
        p = order[k]
        a = acts[k % 2]  # double-buffered by pixel parity
        a[a_off[0]] = coords[p, 0]
        a[a_off[0] + 1] = coords[p, 1]
        for layer in range(n_layers):
            n_in = widths[layer]
            n_out = widths[layer + 1]
            w = params[w_off[layer]:w_off[layer] + n_out * n_in].reshape(n_out, n_in)
            b = params[b_off[layer]:b_off[layer] + n_out]
            x = a[a_off[layer]:a_off[layer] + n_in]
            y = a[a_off[layer + 1]:a_off[layer + 1] + n_out]
            code = output_code if layer == n_layers - 1 else hidden_code
            lo, hi = me * n_out // 2, (me + 1) * n_out // 2
            _matvec(w[lo:hi], x, y[lo:hi])  # this core's rows only
            for j in range(lo, hi):
                y[j] = _activate(y[j] + b[j], code, slope)
            step += 1
            if not _barrier(flags, me, step, 0):  # only after a failed handshake: nothing updated yet
                result[me, 0], result[me, 1] = NO_PARTNER, 0
                return
        y_out = a[a_off[n_layers]:a_off[n_layers] + n_outputs]
        for j in range(n_outputs):
            d = (targets[p, j] - y_out[j]) * _derivative_from_output(y_out[j], output_code, slope)
            if not (abs(d) <= max_delta):
                result[me, 0], result[me, 1] = DIVERGED, k
                return
            delta[j] = d
        for layer in range(n_layers - 1, -1, -1):
            n_in = widths[layer]
            n_out = widths[layer + 1]
            w = params[w_off[layer]:w_off[layer] + n_out * n_in].reshape(n_out, n_in)
            b = params[b_off[layer]:b_off[layer] + n_out]
            x = a[a_off[layer]:a_off[layer] + n_in]
            lr = layer_lr[layer]
            lo, hi = me * n_out // 2, (me + 1) * n_out // 2
            if layer == 0:
                _update(w[lo:hi], b[lo:hi], x, delta[lo:hi], lr)
                continue
            share = shares[layer % 2, me, :n_in]  # double-buffered by layer parity
            _backward_and_update(w[lo:hi], b[lo:hi], x, delta[lo:hi], lr, share)
            step += 1
            _barrier(flags, me, step, 0)  # cannot fail once both cores have passed a forward barrier
            first, second = shares[layer % 2, 0], shares[layer % 2, 1]
            for i in range(n_in):
                d = (first[i] + second[i]) * _derivative_from_output(x[i], hidden_code, slope)
                if not (abs(d) <= max_delta):
                    result[me, 0], result[me, 1] = DIVERGED, k
                    return
                delta[i] = d
    result[me, 0], result[me, 1] = OK, order.shape[0]


@numba.njit(parallel=True, cache=True)
def train_pixels_two_cores(params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                           hidden_code, output_code, slope, max_delta):
    """As online_kernel.train_pixels, on two cores; returns (status, k), status possibly NO_PARTNER."""
    max_width = 0
    for width in widths:
        max_width = max(max_width, width)
    acts = np.empty((2, a_off[-1]), dtype=params.dtype)
    shares = np.zeros((2, 2, max_width), dtype=params.dtype)
    flags = np.zeros(3 * STRIDE, dtype=np.int64)
    result = np.zeros((2, 2), dtype=np.int64)
    for me in prange(2):
        _half(me, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
              hidden_code, output_code, slope, max_delta, acts, shares, flags, result)
    if result[0, 0] == NO_PARTNER or result[1, 0] == NO_PARTNER:
        return NO_PARTNER, 0
    return result[0, 0], result[0, 1]
