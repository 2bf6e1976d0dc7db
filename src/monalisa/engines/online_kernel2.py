"""The exact online-SGD kernel on two cores: layers split alternately by rows and by columns.

Why: one core streams every weight three times a pixel (forward read, backward
read and write), and at ~4 us per 300x300 sweep it sits at this machine's
cache bandwidth (online_kernel.py, ~40 us a pixel for 4x300). Splitting each
hidden matrix between the cores gives each half the traffic, and half the
network (0.55 MB for 4x300) fits its own L2. What the split costs is the
cores' meetings: each barrier is ~1 us (a cache line each way plus waiting for
the slower core), so the layout is chosen to need as few as possible
(Megatron-LM's alternating split, Shoeybi et al. 2019).

Layer roles, from the input (``_roles``):
- even layers are ROW-split: core t computes, updates and keeps its own block
  of output units. Its input must be whole: the coordinates, or the output of
  a COL layer;
- odd layers are COL-split: core t multiplies its column block, which is the
  block of inputs the ROW layer below left it, into partial sums for every
  output; barrier; both cores add the two partials (and the bias) and
  activate, identically;
- the output layer (3 units) is COL-split after a ROW layer and otherwise
  computed whole by both cores (REDUNDANT), each on a private copy.
Backward mirrors it. A COL or REDUNDANT layer has its whole delta on both
cores: core t updates its block and computes W^T delta for exactly the inputs
it owns (all of them if redundant), no barrier. A ROW layer updates its rows
from its own part of the delta, adds its rows' share of W^T delta over all
inputs into a shared buffer; barrier; both sum the two shares into the whole
delta the COL layer below needs. Layer 0 (2 inputs) needs no backward signal.

Barriers a pixel: one per hidden-to-hidden layer, plus one if the output is
COL-split (an odd number of hidden layers): 3 for 4x300 (2 forward, 1
backward), 1 for 1x300 and 2x300, against 9 for 4x300 when every layer was
split by rows (one per layer forward, one per hidden layer backward). Making
layer 0 ROW-split rather than computing it on both cores is what saves the
fourth: it starts the alternation one layer earlier, so the output layer
comes after a COL layer and needs no reduction.

Nothing is shared but the partial/share buffers: each core copies its blocks
of the flat ``params`` into its own private region (one row of ``work``) at the
start of a call and back at the end (~0.1 ms against ~20 ms of training for
1,024 pixels), so no cache line is ever written by both cores and each block
is contiguous. A COL block is stored transposed (a row per input), so every
big block has rows of the full width (300), not of half of it: the COL layers'
forward and backward sweeps take 1.9 and 2.9 us instead of 2.3 and 4.2.
The partial/share buffers are per layer and double-buffered by pixel parity:
a core runs at most one barrier ahead, so it never overwrites a buffer the
other has yet to read.

Cost, 4x300 on this 2-core znver4 VM: 20.7 us a pixel against 38.6 on one core
and 28.8 for the old every-layer row split; without waiting at the barriers
(wrong results, timing only) the layout before transposing ran 22.8 against
23.4, so the ~0.6 us of meetings is no longer what limits it: each core's
sweeps over its half of the weights are.

Every sum is computed in a fixed order, so runs are reproducible, and a value
both cores need whole is computed by both from the same numbers in the same
code, so both copies stay bit-identical. The sums round differently from the
one-core kernel (tests compare both with PyTorch autograd).

Divergence: a core may see a bad delta only in its own block, so it records
the pixel, carries on to the next barrier, and publishes it with its step
there; after that barrier both cores return (DIVERGED, k) for the same k.

Synchronisation is a two-party barrier on per-core step counters, written with
release stores and read with acquire loads (LLVM atomics through numba
intrinsics). If the two prange iterations do not run at the same time (one
thread available), the first barrier times out, both return ``NO_PARTNER``
without writing ``params``, and the engine falls back to one core.
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
GIVE_UP = 2 * STRIDE
# A barrier word is (pixel + 1 that diverged, or 0) << 32 | step.
STEP_BITS = 32
STEP_MASK = (1 << STEP_BITS) - 1
# Buffers are padded to whole 64-byte lines and spaced a line apart (16 floats
# is 64 bytes; for float64 it is 128), so neighbours written by different cores
# never share a line however numpy aligned the allocation.
LINE = 16

ROW, COL, REDUNDANT = 0, 1, 2


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
def _barrier(flags, me, step, diverged, limit):
    """Publish ``step`` and this core's divergence, wait for the other core to reach ``step``.

    Returns -1 if the other core never came (or gave up), else what both cores
    agree on: 0, or 1 + the pixel at which one of them diverged.
    """
    _store_release(flags, me * STRIDE, (diverged << STEP_BITS) | step)
    other = (1 - me) * STRIDE
    spins = 0
    word = _load_acquire(flags, other)
    while word & STEP_MASK < step:
        if _load_acquire(flags, GIVE_UP) != 0:
            return -1
        spins += 1
        if limit > 0 and spins > limit:
            _store_release(flags, GIVE_UP, np.int64(1))
            return -1
        word = _load_acquire(flags, other)
    # The other core may already have passed this barrier and published the
    # next step; then its word at this step carried no divergence (had it, it
    # would have stopped here), and what it holds now belongs to the next one.
    theirs = word >> STEP_BITS if word & STEP_MASK == step else 0
    if diverged == 0 or (theirs != 0 and theirs < diverged):
        return theirs
    return diverged


@numba.njit
def _split(n):
    """Where core 1's block of ``n`` units begins."""
    return n // 2


@numba.njit
def _own(n, me):
    """Core ``me``'s block [lo, hi) of ``n`` units."""
    s = _split(n)
    return (0, s) if me == 0 else (s, n)


@numba.njit
def _roles(n_layers):
    """ROW for even layers, COL for odd; the output layer COL after a ROW layer, else REDUNDANT."""
    roles = np.empty(n_layers, dtype=np.int64)
    for layer in range(n_layers):
        roles[layer] = ROW if layer % 2 == 0 else COL
    if roles[n_layers - 1] == ROW:  # its outputs must be whole on both cores for the output delta
        roles[n_layers - 1] = REDUNDANT
    return roles


@numba.njit
def _padded(n):
    """``n`` rounded up to whole lines, plus one line of gap."""
    return (n + LINE - 1) // LINE * LINE + LINE


@numba.njit(fastmath=_FASTMATH, inline="always")
def _matvec_t(wt, x, y):
    """y = wt.T @ x for a COL block stored transposed (a row per input), four rows at a time.

    Measured for the 300x150 block: 1.9 us, against 2.3 us for _matvec on it
    stored as rows of 150: rows of 300 waste less on loop tails and reductions.
    """
    n_in, n_out = wt.shape
    y[:] = 0
    i = 0
    while i + 4 <= n_in:
        r0, r1, r2, r3 = wt[i], wt[i + 1], wt[i + 2], wt[i + 3]
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        for j in range(n_out):
            y[j] += r0[j] * x0 + r1[j] * x1 + r2[j] * x2 + r3[j] * x3
        i += 4
    while i < n_in:
        r, xi = wt[i], x[i]
        for j in range(n_out):
            y[j] += r[j] * xi
        i += 1


@numba.njit(fastmath=_FASTMATH, inline="always")
def _backward_and_update_t(wt, b, x, delta, lr, back):
    """back = wt @ delta with the old weights, then wt += lr * outer(x, delta), b += lr * delta.

    The transposed twin of online_kernel._backward_and_update: each input's row
    is read once for its dot product with ``delta`` and updated in the same
    sweep, four rows at a time. 2.9 us for the 300x150 block against 4.2 us.
    """
    n_in, n_out = wt.shape
    i = 0
    while i + 4 <= n_in:
        r0, r1, r2, r3 = wt[i], wt[i + 1], wt[i + 2], wt[i + 3]
        g0, g1, g2, g3 = lr * x[i], lr * x[i + 1], lr * x[i + 2], lr * x[i + 3]
        s0 = s1 = s2 = s3 = back.dtype.type(0)
        for j in range(n_out):
            dj = delta[j]
            w0, w1, w2, w3 = r0[j], r1[j], r2[j], r3[j]
            s0 += w0 * dj
            s1 += w1 * dj
            s2 += w2 * dj
            s3 += w3 * dj
            r0[j] = w0 + g0 * dj
            r1[j] = w1 + g1 * dj
            r2[j] = w2 + g2 * dj
            r3[j] = w3 + g3 * dj
        back[i], back[i + 1], back[i + 2], back[i + 3] = s0, s1, s2, s3
        i += 4
    while i < n_in:
        r, g = wt[i], lr * x[i]
        s = back.dtype.type(0)
        for j in range(n_out):
            wij = r[j]
            s += wij * delta[j]
            r[j] = wij + g * delta[j]
        back[i] = s
        i += 1
    for j in range(n_out):
        b[j] += lr * delta[j]


@numba.njit
def _block_shape(role, n_in, n_out, me):
    """(rows, cols, bias length) of core ``me``'s private block of a layer; a COL block is stored transposed."""
    lo, hi = _own(n_out if role == ROW else n_in, me)
    if role == ROW:
        return hi - lo, n_in, hi - lo
    if role == COL:
        return hi - lo, n_out, n_out
    return n_out, n_in, n_out


@numba.njit
def _region(widths, roles, a_size, me):
    """Offsets in core ``me``'s private region: per-layer weights and bias, then activations, delta, back signal."""
    n_layers = widths.shape[0] - 1
    max_width = widths.max()
    w_at = np.empty(n_layers, dtype=np.int64)
    b_at = np.empty(n_layers, dtype=np.int64)
    at = 0
    for layer in range(n_layers):
        rows, cols, n_bias = _block_shape(roles[layer], widths[layer], widths[layer + 1], me)
        w_at[layer] = at
        at += _padded(rows * cols)
        b_at[layer] = at
        at += _padded(n_bias)
    acts_at = at
    delta_at = acts_at + _padded(a_size)
    back_at = delta_at + _padded(max_width)
    return w_at, b_at, acts_at, delta_at, back_at, back_at + _padded(max_width)


@numba.njit(fastmath=_FASTMATH)
def _copy_blocks(params, widths, w_off, b_off, roles, mine, w_at, b_at, me, into_mine):
    """Copy core ``me``'s blocks between the flat ``params`` and its region (``into_mine``) or back.

    Back, core 0 alone writes what both hold whole (redundant layers, COL biases).
    """
    for layer in range(widths.shape[0] - 1):
        n_in, n_out = widths[layer], widths[layer + 1]
        role = roles[layer]
        rows, cols, n_bias = _block_shape(role, n_in, n_out, me)
        lo, hi = _own(n_out if role == ROW else n_in, me)
        b0 = lo if role == ROW else 0
        full = params[w_off[layer]:w_off[layer] + n_out * n_in].reshape(n_out, n_in)
        if role == ROW:
            full = full[lo:hi]
        elif role == COL:
            full = full[:, lo:hi].T
        block = mine[w_at[layer]:w_at[layer] + rows * cols].reshape(rows, cols)
        bias = params[b_off[layer] + b0:b_off[layer] + b0 + n_bias]
        own_bias = mine[b_at[layer]:b_at[layer] + n_bias]
        if into_mine:
            block[:, :] = full
            own_bias[:] = bias
        elif role == ROW or role == COL or me == 0:
            full[:, :] = block
            if role == ROW or me == 0:
                bias[:] = own_bias


@numba.njit(fastmath=_FASTMATH, inline="always")
def _layer(mine, w_at, b_at, role, n_in, n_out, layer, me):
    """Core ``me``'s weight block (2-D), bias block, and own range [lo, hi) of a layer."""
    rows, cols, n_bias = _block_shape(role, n_in, n_out, me)
    lo, hi = _own(n_out if role == ROW else n_in, me)
    w = mine[w_at[layer]:w_at[layer] + rows * cols].reshape(rows, cols)
    b = mine[b_at[layer]:b_at[layer] + n_bias]
    return w, b, lo, hi


@numba.njit(fastmath=_FASTMATH, nogil=True)
def _core(me, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
          hidden_code, output_code, slope, max_delta, work, xfer, flags, result):
    """One core's share of train_pixels_two_cores; leaves (status, k) in ``result[me]``."""
    n_layers = widths.shape[0] - 1
    roles = _roles(n_layers)
    mine = work[me]
    w_at, b_at, acts_at, delta_at, back_at, _ = _region(widths, roles, a_off[-1], me)
    _copy_blocks(params, widths, w_off, b_off, roles, mine, w_at, b_at, me, True)
    acts = mine[acts_at:acts_at + a_off[-1]]
    delta = mine[delta_at:back_at]
    back = mine[back_at:back_at + widths.max()]
    n_outputs = widths[n_layers]
    step = np.int64(1)
    if _barrier(flags, me, step, np.int64(0), HANDSHAKE_SPINS) < 0:
        result[me, 0], result[me, 1] = NO_PARTNER, 0
        return
    diverged = np.int64(0)  # 1 + the pixel whose delta, in this core's block, failed the check
    for k in range(order.shape[0]):
        p = order[k]
        parity = k % 2
        acts[a_off[0]] = coords[p, 0]
        acts[a_off[0] + 1] = coords[p, 1]
        for layer in range(n_layers):
            n_in, n_out = widths[layer], widths[layer + 1]
            role = roles[layer]
            w, b, lo, hi = _layer(mine, w_at, b_at, role, n_in, n_out, layer, me)
            code = output_code if layer == n_layers - 1 else hidden_code
            x = acts[a_off[layer]:a_off[layer] + n_in]
            y = acts[a_off[layer + 1]:a_off[layer + 1] + n_out]
            if role == ROW:
                _matvec(w, x, y[lo:hi])
                for j in range(lo, hi):
                    y[j] = _activate(y[j] + b[j - lo], code, slope)
            elif role == COL:
                _matvec_t(w, x[lo:hi], xfer[parity, layer, me, :n_out])
                step += 1
                agreed = _barrier(flags, me, step, diverged, 0)
                if agreed != 0:
                    return _stop(me, agreed, params, widths, w_off, b_off, roles, mine, w_at, b_at, result)
                first, second = xfer[parity, layer, 0], xfer[parity, layer, 1]
                for j in range(n_out):
                    y[j] = _activate(first[j] + second[j] + b[j], code, slope)
            else:
                _matvec(w, x, y)
                for j in range(n_out):
                    y[j] = _activate(y[j] + b[j], code, slope)
        y_out = acts[a_off[n_layers]:a_off[n_layers] + n_outputs]
        for j in range(n_outputs):
            d = (targets[p, j] - y_out[j]) * _derivative_from_output(y_out[j], output_code, slope)
            if not (abs(d) <= max_delta) and diverged == 0:  # written this way round to catch NaN too
                diverged = k + 1
            delta[j] = d
        for layer in range(n_layers - 1, -1, -1):
            n_in, n_out = widths[layer], widths[layer + 1]
            role = roles[layer]
            w, b, lo, hi = _layer(mine, w_at, b_at, role, n_in, n_out, layer, me)
            x = acts[a_off[layer]:a_off[layer] + n_in]
            lr = layer_lr[layer]
            if role == ROW:
                if layer == 0:
                    _update(w, b, x, delta[lo:hi], lr)
                    continue
                _backward_and_update(w, b, x, delta[lo:hi], lr, xfer[parity, layer, me, :n_in])
                step += 1
                agreed = _barrier(flags, me, step, diverged, 0)
                if agreed != 0:
                    return _stop(me, agreed, params, widths, w_off, b_off, roles, mine, w_at, b_at, result)
                first, second = xfer[parity, layer, 0], xfer[parity, layer, 1]
                for i in range(n_in):
                    back[i] = first[i] + second[i]
                lo, hi = 0, n_in
            elif role == COL:
                # The delta for this core's inputs only: its rows of the ROW layer below.
                _backward_and_update_t(w, b, x[lo:hi], delta[:n_out], lr, back[:hi - lo])
            elif layer == 0:
                _update(w, b, x, delta[:n_out], lr)
                continue
            else:
                lo, hi = 0, n_in
                _backward_and_update(w, b, x, delta[:n_out], lr, back[:n_in])
            if role == COL:
                for i in range(lo, hi):
                    delta[i] = back[i - lo] * _derivative_from_output(x[i], hidden_code, slope)
            else:
                for i in range(n_in):
                    delta[i] = back[i] * _derivative_from_output(x[i], hidden_code, slope)
            for i in range(lo, hi):
                if not (abs(delta[i]) <= max_delta) and diverged == 0:
                    diverged = k + 1
    # One last meeting, so a divergence seen in the last pixel's blocks is shared.
    agreed = _barrier(flags, me, step + 1, diverged, 0)
    if agreed < 0:
        result[me, 0], result[me, 1] = NO_PARTNER, 0
        return
    _copy_blocks(params, widths, w_off, b_off, roles, mine, w_at, b_at, me, False)
    if agreed > 0:
        result[me, 0], result[me, 1] = DIVERGED, agreed - 1
    else:
        result[me, 0], result[me, 1] = OK, order.shape[0]


@numba.njit
def _stop(me, agreed, params, widths, w_off, b_off, roles, mine, w_at, b_at, result):
    """Leave a barrier that did not agree to go on: the partner is gone, or one of the cores diverged."""
    if agreed < 0:
        result[me, 0], result[me, 1] = NO_PARTNER, 0
        return
    _copy_blocks(params, widths, w_off, b_off, roles, mine, w_at, b_at, me, False)
    result[me, 0], result[me, 1] = DIVERGED, agreed - 1


@numba.njit(parallel=True, cache=True)
def train_pixels_two_cores(params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                           hidden_code, output_code, slope, max_delta):
    """As online_kernel.train_pixels, on two cores; returns (status, k), status possibly NO_PARTNER."""
    n_layers = widths.shape[0] - 1
    roles = _roles(n_layers)
    region = max(_region(widths, roles, a_off[-1], 0)[5], _region(widths, roles, a_off[-1], 1)[5])
    work = np.empty((2, region), dtype=params.dtype)  # (core, private region)
    xfer = np.zeros((2, n_layers, 2, _padded(widths.max())), dtype=params.dtype)  # (parity, layer, core, unit)
    flags = np.zeros(3 * STRIDE, dtype=np.int64)
    result = np.zeros((2, 2), dtype=np.int64)
    for me in prange(2):
        _core(me, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
              hidden_code, output_code, slope, max_delta, work, xfer, flags, result)
    if result[0, 0] == NO_PARTNER or result[1, 0] == NO_PARTNER:
        return NO_PARTNER, 0
    return result[0, 0], result[0, 1]
