"""The exact online-SGD kernel: one pixel at a time, compiled with numba, on one core or two.

This is the 2012 algorithm (docs/original.md) with nothing batched: for each
pixel of a permutation, a forward pass through every layer, the output delta
``target - output`` (half squared error), and a backward pass that updates each
layer as soon as its delta is known. The backward read of W (for the previous
layer's delta) and the update of W are fused into one sweep; each weight is read
before it is written, so the result is identical to "backward, then step" as
PyTorch autograd does it.

One algorithm, one or two cores, the same bits. Every layer is cut into two
fixed blocks (``_own``: units [0, s) and [s, n), s about n/2), and ``_core`` computes
each block's products and partial sums, then adds the two partials in a fixed
order (block 0 + block 1). On two cores (``train_pixels_on(2, ...)``) core t runs block
t and the cores meet at barriers to exchange partials; on one core ``_core``
runs both blocks itself, through the very same compiled code on the same block
shapes, and skips the barriers. So both kernels round identically, and the
engine may switch between them at any call (tests/test_online_exact.py checks
it bit for bit).

Why two cores pay: one core streams every weight three times a pixel (forward
read, backward read and write) at its cache's bandwidth; with one block of every
layer a core, each streams half, and half of 4x300 (0.55 MB) fits one core's L2.
The cores spin at each meeting (~1 us), so the two-core call needs both cores to
itself: beside another job it runs 5-50x slower than one core (engines/online.py
decides which each call runs). If the two prange iterations do not run at the same
time (one thread available), it returns NO_PARTNER with ``params`` untouched.

Layer roles, from the input (``_roles``; Megatron-LM's alternating split,
Shoeybi et al. 2019, chosen to need the fewest meetings):
- even layers are ROW-split: block t holds output units t. Its input must be
  whole: the coordinates, or the output of a COL layer;
- odd layers are COL-split: block t holds input units t, which are exactly the
  outputs the ROW layer below left in block t; each block's product is a
  partial sum for every output; meet; partial 0 + partial 1 + bias, activated;
- the output layer is COL after a ROW layer and otherwise REDUNDANT: computed
  whole, by each core on its own copy (one copy on one core).
Backward mirrors it: a COL or REDUNDANT layer has its whole delta, and block t
yields W^T delta for its own inputs; a ROW layer's blocks each add their rows'
share of W^T delta over all inputs; meet; share 0 + share 1. Meetings a pixel:
one per hidden-to-hidden layer, plus one if the output is COL-split: 3 for
4x300, 1 for 1x45450.

Storage: each block is copied at the start of a call into a private region (a
row of ``work``) and back at the end (~0.1 ms against ~20-50 ms of training a
call), so no cache line is written by both cores. A block is stored with its
longer side contiguous (``_transposed``), because the inner loops vectorise
along the contiguous side: the 2 -> 45,450 layer is stored input-major, two
rows of 45,450, so its forward and update are two long axpys; the 45,450 -> 3
layer output-major, three rows, so its forward is three long dot products and
its fused backward-and-update one sweep over three rows. Stored row-major, the
first layer would be a loop of 2 inputs per output unit, 45,450 short loops a
pixel (measured ~440 us a pixel against ~40 for 4x300).
Each stored row starts on a 64-byte line and is padded with zeros to a whole
number of lines (``_stride``), and the activation vectors start on lines too,
so no vector load straddles two lines.

Divergence: a block may see a bad delta the other does not, so the core records
the pixel and publishes it at the next meeting; from there both return
(DIVERGED, k) for the same k. One core stops at the same meetings.

Synchronisation is a two-party barrier on per-core step counters, written with
release stores and read with acquire loads (LLVM atomics through numba
intrinsics). If the two prange iterations do not run at the same time (one
thread available), the first barrier times out, both return NO_PARTNER without
writing ``params``, and the engine runs the call on one core.
"""

import numba
import numpy as np
from numba import prange
from numba.core import cgutils, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array
from numba.np.numpy_support import as_dtype

# Activation codes, shared with engines/online.py. Ints, because numba
# specialises better on them than on strings.
IDENTITY, LEAKY_RELU, RELU, TANH, SIGMOID = 0, 1, 2, 3, 4

# Status codes returned by the kernels.
OK, DIVERGED, NO_PARTNER = 0, 1, 2

ROW, COL, REDUNDANT = 0, 1, 2

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
# never share a line however the allocation is aligned.
LINE = 16


def _one(x):
    """1 in ``x``'s float type, for compiled code (see the overload below)."""
    return 1


@overload(_one)
def _one_of_type(x):
    # A bare 1 or 0 beside a float32 makes numba compute in float64 (it unifies
    # int64 with float32 as float64): the fused 1x45450 backward sweep ran in
    # float64, converting every number in and out, at 55 ps a weight against 33
    # for the memory traffic alone. A constant of the argument's own type keeps
    # float32 training in float32, as PyTorch computes it.
    one = as_dtype(x).type(1)
    return lambda x: one


@numba.njit(inline="always")
def _activate(s, code, slope):
    if code == LEAKY_RELU:
        return s if s >= 0 else s * slope
    if code == RELU:
        return s if s > 0 else s * (_one(s) - _one(s))  # s * 0, so NaN stays NaN for the divergence guard
    if code == TANH:
        return np.tanh(s)
    if code == SIGMOID:
        return _one(s) / (_one(s) + np.exp(-s))
    return s


@numba.njit(inline="always")
def _derivative_from_output(y, code, slope):
    # Every activation here has a derivative expressible through its output,
    # so the forward pass keeps only outputs. Leaky: the original's
    # "1 or 0.01", decided by the output's sign (the same sign as the input).
    one = _one(y)
    if code == LEAKY_RELU:
        return one if y >= 0 else slope
    if code == RELU:
        return one if y > 0 else one - one
    if code == TANH:
        return one - y * y
    if code == SIGMOID:
        return y * (one - y)
    return one


# Reassociation lets LLVM vectorise the dot products; no "nnan"/"ninf", because
# the divergence guard must still see NaN and infinity. The order it picks is
# fixed by the loop's code, which both kernels share (see the module docstring).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# -- one block's products, in either storage order ------------------------------------
# Row-major ``w`` is (outputs, inputs); transposed ``wt`` is (inputs, outputs). A
# block's rows start on 64-byte lines (_stride pads them), so a row may be longer
# than the vector it meets: the loops run to the vector's length. Each
# groups four rows per sweep so one load of the shared vector feeds four rows, and
# groups a tail of 3 or 2 rows the same way: the 45,450 -> 3 layer is all tail, and
# one row at a time it would sweep its long vectors three times.


@numba.njit(fastmath=_FASTMATH, inline="always")
def _matvec(w, x, y):
    """y = w @ x: a dot product per row. 4.2 us on a 300x300 layer, against 4.5 one row at a time."""
    n_out, n_in = w.shape[0], x.shape[0]
    j = 0
    while j + 4 <= n_out:
        r0, r1, r2, r3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        s0 = s1 = s2 = s3 = y.dtype.type(0)
        for i in range(n_in):
            xi = x[i]
            s0 += r0[i] * xi
            s1 += r1[i] * xi
            s2 += r2[i] * xi
            s3 += r3[i] * xi
        y[j], y[j + 1], y[j + 2], y[j + 3] = s0, s1, s2, s3
        j += 4
    rest = n_out - j
    if rest == 3:
        r0, r1, r2 = w[j], w[j + 1], w[j + 2]
        s0 = s1 = s2 = y.dtype.type(0)
        for i in range(n_in):
            xi = x[i]
            s0 += r0[i] * xi
            s1 += r1[i] * xi
            s2 += r2[i] * xi
        y[j], y[j + 1], y[j + 2] = s0, s1, s2
    elif rest == 2:
        r0, r1 = w[j], w[j + 1]
        s0 = s1 = y.dtype.type(0)
        for i in range(n_in):
            xi = x[i]
            s0 += r0[i] * xi
            s1 += r1[i] * xi
        y[j], y[j + 1] = s0, s1
    elif rest == 1:
        r0 = w[j]
        s0 = y.dtype.type(0)
        for i in range(n_in):
            s0 += r0[i] * x[i]
        y[j] = s0


@numba.njit(fastmath=_FASTMATH, inline="always")
def _matvec_t(wt, x, y):
    """y = wt.T @ x: an axpy per input row. 1.9 us for a 300x150 block, against 2.3 stored row-major."""
    n_in, n_out = wt.shape[0], y.shape[0]
    y[:] = 0
    i = 0
    while i + 4 <= n_in:
        r0, r1, r2, r3 = wt[i], wt[i + 1], wt[i + 2], wt[i + 3]
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        for j in range(n_out):
            y[j] += r0[j] * x0 + r1[j] * x1 + r2[j] * x2 + r3[j] * x3
        i += 4
    rest = n_in - i
    if rest == 3:
        r0, r1, r2 = wt[i], wt[i + 1], wt[i + 2]
        x0, x1, x2 = x[i], x[i + 1], x[i + 2]
        for j in range(n_out):
            y[j] += r0[j] * x0 + r1[j] * x1 + r2[j] * x2
    elif rest == 2:
        r0, r1 = wt[i], wt[i + 1]
        x0, x1 = x[i], x[i + 1]
        for j in range(n_out):
            y[j] += r0[j] * x0 + r1[j] * x1
    elif rest == 1:
        r0, x0 = wt[i], x[i]
        for j in range(n_out):
            y[j] += r0[j] * x0


@numba.njit(fastmath=_FASTMATH, inline="always")
def _backward_and_update(w, x, delta, lr, back):
    """back = w.T @ delta with the old w, then w += lr * outer(delta, x), in one sweep.

    Rows four at a time share each load and store of ``back``: 6.7 us against
    9.0 us a row at a time on a 300x300 layer.
    """
    n_out, n_in = w.shape[0], x.shape[0]
    back[:] = 0
    j = 0
    while j + 4 <= n_out:
        d0, d1, d2, d3 = delta[j], delta[j + 1], delta[j + 2], delta[j + 3]
        g0, g1, g2, g3 = lr * d0, lr * d1, lr * d2, lr * d3
        r0, r1, r2, r3 = w[j], w[j + 1], w[j + 2], w[j + 3]
        for i in range(n_in):
            xi = x[i]
            w0, w1, w2, w3 = r0[i], r1[i], r2[i], r3[i]
            back[i] += w0 * d0 + w1 * d1 + w2 * d2 + w3 * d3
            r0[i] = w0 + g0 * xi
            r1[i] = w1 + g1 * xi
            r2[i] = w2 + g2 * xi
            r3[i] = w3 + g3 * xi
        j += 4
    rest = n_out - j
    if rest == 3:
        d0, d1, d2 = delta[j], delta[j + 1], delta[j + 2]
        g0, g1, g2 = lr * d0, lr * d1, lr * d2
        r0, r1, r2 = w[j], w[j + 1], w[j + 2]
        for i in range(n_in):
            xi = x[i]
            w0, w1, w2 = r0[i], r1[i], r2[i]
            back[i] += w0 * d0 + w1 * d1 + w2 * d2
            r0[i] = w0 + g0 * xi
            r1[i] = w1 + g1 * xi
            r2[i] = w2 + g2 * xi
    elif rest == 2:
        d0, d1 = delta[j], delta[j + 1]
        g0, g1 = lr * d0, lr * d1
        r0, r1 = w[j], w[j + 1]
        for i in range(n_in):
            xi = x[i]
            w0, w1 = r0[i], r1[i]
            back[i] += w0 * d0 + w1 * d1
            r0[i] = w0 + g0 * xi
            r1[i] = w1 + g1 * xi
    elif rest == 1:
        d0 = delta[j]
        g0 = lr * d0
        r0 = w[j]
        for i in range(n_in):
            w0 = r0[i]
            back[i] += w0 * d0
            r0[i] = w0 + g0 * x[i]


@numba.njit(fastmath=_FASTMATH, inline="always")
def _backward_and_update_t(wt, x, delta, lr, back):
    """The transposed twin of _backward_and_update: back[i] = wt[i] . delta, then wt[i] += lr * x[i] * delta.

    Each input's row is read once for its dot product and updated in the same
    sweep, four rows at a time: 2.9 us for a 300x150 block against 4.2 us.
    """
    n_in, n_out = wt.shape[0], delta.shape[0]
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


@numba.njit(fastmath=_FASTMATH, inline="always")
def _update(w, x, delta, lr):
    """w += lr * outer(delta, x): the first layer needs no backward signal."""
    n_out, n_in = w.shape[0], x.shape[0]
    for j in range(n_out):
        g = lr * delta[j]
        r = w[j]
        for i in range(n_in):
            r[i] += g * x[i]


@numba.njit(fastmath=_FASTMATH, inline="always")
def _update_t(wt, x, delta, lr):
    """wt += lr * outer(x, delta): the 2 -> wide first layer as two long axpys."""
    n_in, n_out = wt.shape[0], delta.shape[0]
    for i in range(n_in):
        g = lr * x[i]
        r = wt[i]
        for j in range(n_out):
            r[j] += g * delta[j]


@numba.njit(fastmath=_FASTMATH, inline="always")
def _forward_block(w, transposed, x, y):
    if transposed:
        _matvec_t(w, x, y)
    else:
        _matvec(w, x, y)


@numba.njit(fastmath=_FASTMATH, inline="always")
def _backward_block(w, transposed, x, delta, lr, back):
    if transposed:
        _backward_and_update_t(w, x, delta, lr, back)
    else:
        _backward_and_update(w, x, delta, lr, back)


@numba.njit(fastmath=_FASTMATH, inline="always")
def _update_block(w, transposed, x, delta, lr):
    if transposed:
        _update_t(w, x, delta, lr)
    else:
        _update(w, x, delta, lr)


@numba.njit(fastmath=_FASTMATH, inline="always")
def _update_bias(b, delta, lr):
    for j in range(b.shape[0]):
        b[j] += lr * delta[j]


@numba.njit(fastmath=_FASTMATH, inline="always")
def _count_bad(d, max_delta):
    """How many of ``d`` exceed ``max_delta`` or are not finite: a count, so the loop vectorises."""
    bad = 0
    for v in d:
        if not (abs(v) <= max_delta):  # written this way round to catch NaN too
            bad += 1
    return bad


# -- a layer's units: activations and deltas -------------------------------------------
# ``code`` is a run-time value; each loop below is compiled once per activation (the
# ``_as`` dispatchers), so within a loop it is a constant and LLVM drops the other
# activations' branches and vectorises. With the code a variable these loops stayed
# scalar, and a pixel took 8-17% longer on one core (8x196 to 2x519).


@numba.njit(fastmath=_FASTMATH, inline="always")
def _activated(y, a, b, bias, code, slope):
    """y = act(a + b + bias), summed in that order; ``b`` None: y = act(a + bias)."""
    if b is None:
        for j in range(y.shape[0]):
            y[j] = _activate(a[j] + bias[j], code, slope)
    else:
        for j in range(y.shape[0]):
            y[j] = _activate(a[j] + b[j] + bias[j], code, slope)


@numba.njit(fastmath=_FASTMATH, inline="always")
def _deltas(delta, a, b, x, code, slope, max_delta):
    """delta = (a + b) * act'(x) (``b`` None: a * act'(x)); returns how many fail the divergence check.

    The check is counted in the float type with a select (see _hidden_backward).
    """
    one = _one(slope)
    zero = one - one
    bad = zero
    for i in range(delta.shape[0]):
        s = a[i] if b is None else a[i] + b[i]
        d = s * _derivative_from_output(x[i], code, slope)
        delta[i] = d
        bad += zero if abs(d) <= max_delta else one  # this way round, NaN counts too
    return bad


@numba.njit(fastmath=_FASTMATH, inline="always")
def _activated_as(y, a, b, bias, code, slope):
    """_activated with ``code`` a constant in each branch."""
    if code == LEAKY_RELU:
        _activated(y, a, b, bias, LEAKY_RELU, slope)
    elif code == RELU:
        _activated(y, a, b, bias, RELU, slope)
    elif code == TANH:
        _activated(y, a, b, bias, TANH, slope)
    elif code == SIGMOID:
        _activated(y, a, b, bias, SIGMOID, slope)
    else:
        _activated(y, a, b, bias, IDENTITY, slope)


@numba.njit(fastmath=_FASTMATH, inline="always")
def _deltas_as(delta, a, b, x, code, slope, max_delta):
    """_deltas with ``code`` a constant in each branch."""
    if code == LEAKY_RELU:
        return _deltas(delta, a, b, x, LEAKY_RELU, slope, max_delta)
    if code == RELU:
        return _deltas(delta, a, b, x, RELU, slope, max_delta)
    if code == TANH:
        return _deltas(delta, a, b, x, TANH, slope, max_delta)
    if code == SIGMOID:
        return _deltas(delta, a, b, x, SIGMOID, slope, max_delta)
    return _deltas(delta, a, b, x, IDENTITY, slope, max_delta)


# -- one hidden layer: both layers in one sweep over the hidden units ----------------------
# A 2 -> H -> 3 network's traffic is its hidden vectors as much as its weights: layer by
# layer, a pixel makes ~35 reads and writes a hidden unit (activations, deltas, back
# signal, each pass of its own) against 18 for its 6 weights and bias, and measured
# 70 us a pixel for 1x45450, 2.5x 4x300 at equal parameter count. One sweep a pass
# touches each unit's numbers once: ~20 accesses. Both cores and one core run the same
# sweeps on the same blocks, so they still round alike.


@numba.njit(fastmath=_FASTMATH, inline="always")
def _hidden_forward(w0t, b0, w1, x0, x1, h, partial, code, slope):
    """h = act(w0t.T @ (x0, x1) + b0); partial = w1 @ h, for a block of hidden units.

    ``w0t`` (2, m) is the first layer's block input-major, ``w1`` (3, m) the
    output layer's block output-major: every loop runs along the m units.
    """
    r0, r1 = w0t[0], w0t[1]
    o0, o1, o2 = w1[0], w1[1], w1[2]
    s0 = s1 = s2 = h.dtype.type(0)
    for j in range(h.shape[0]):
        hj = _activate(r0[j] * x0 + r1[j] * x1 + b0[j], code, slope)
        h[j] = hj
        s0 += o0[j] * hj
        s1 += o1[j] * hj
        s2 += o2[j] * hj
    partial[0], partial[1], partial[2] = s0, s1, s2


@numba.njit(fastmath=_FASTMATH, inline="always")
def _hidden_backward(w0t, b0, w1, x0, x1, h, delta_out, lr0, lr1, code, slope, max_delta):
    """The output layer's backward and update, the hidden delta, the first layer's update, in one sweep.

    Returns how many hidden deltas failed the divergence check (as a float).
    """
    r0, r1 = w0t[0], w0t[1]
    o0, o1, o2 = w1[0], w1[1], w1[2]
    d0, d1, d2 = delta_out[0], delta_out[1], delta_out[2]
    g0, g1, g2 = lr1 * d0, lr1 * d1, lr1 * d2
    e0, e1 = lr0 * x0, lr0 * x1
    # Counted in the weights' float type with a select, not ``if ...: bad += 1``:
    # an int64 count vectorised this loop 8 wide (int64 lanes) instead of 16,
    # and a conditional float add not at all (41 and 229 ps a weight against 36).
    one = _one(x0)
    zero = one - one
    bad = zero
    for j in range(h.shape[0]):
        hj = h[j]
        a0, a1, a2 = o0[j], o1[j], o2[j]
        dj = (a0 * d0 + a1 * d1 + a2 * d2) * _derivative_from_output(hj, code, slope)
        o0[j] = a0 + g0 * hj
        o1[j] = a1 + g1 * hj
        o2[j] = a2 + g2 * hj
        bad += zero if abs(dj) <= max_delta else one  # this way round, NaN counts too
        r0[j] += e0 * dj
        r1[j] += e1 * dj
        b0[j] += lr0 * dj
    return bad


@numba.njit(fastmath=_FASTMATH, inline="always")
def _hidden_forward_as(w0t, b0, w1, x0, x1, h, partial, code, slope):
    """_hidden_forward with ``code`` a constant in each branch, so LLVM drops the activation's
    branches from the loop and vectorises it (with the code a variable it stayed scalar)."""
    if code == LEAKY_RELU:
        _hidden_forward(w0t, b0, w1, x0, x1, h, partial, LEAKY_RELU, slope)
    elif code == RELU:
        _hidden_forward(w0t, b0, w1, x0, x1, h, partial, RELU, slope)
    elif code == TANH:
        _hidden_forward(w0t, b0, w1, x0, x1, h, partial, TANH, slope)
    elif code == SIGMOID:
        _hidden_forward(w0t, b0, w1, x0, x1, h, partial, SIGMOID, slope)
    else:
        _hidden_forward(w0t, b0, w1, x0, x1, h, partial, IDENTITY, slope)


@numba.njit(fastmath=_FASTMATH, inline="always")
def _hidden_backward_as(w0t, b0, w1, x0, x1, h, delta_out, lr0, lr1, code, slope, max_delta):
    """_hidden_backward with ``code`` a constant in each branch (see _hidden_forward_as)."""
    if code == LEAKY_RELU:
        return _hidden_backward(w0t, b0, w1, x0, x1, h, delta_out, lr0, lr1, LEAKY_RELU, slope, max_delta)
    if code == RELU:
        return _hidden_backward(w0t, b0, w1, x0, x1, h, delta_out, lr0, lr1, RELU, slope, max_delta)
    if code == TANH:
        return _hidden_backward(w0t, b0, w1, x0, x1, h, delta_out, lr0, lr1, TANH, slope, max_delta)
    if code == SIGMOID:
        return _hidden_backward(w0t, b0, w1, x0, x1, h, delta_out, lr0, lr1, SIGMOID, slope, max_delta)
    return _hidden_backward(w0t, b0, w1, x0, x1, h, delta_out, lr0, lr1, IDENTITY, slope, max_delta)


# -- the blocks ------------------------------------------------------------------------


@numba.njit
def _own(n, part):
    """Block ``part``'s units [lo, hi) of ``n``: [0, s) and [s, n), s about half and a multiple of 4.

    The sweeps take rows four at a time, and a block of 98 rows (8x196) ends in
    a loop of its own for the last two: splitting 196 as 96 + 100 leaves none,
    and took 8x196's pixel from 22.3 to 21.6 us on one core.
    """
    s = n // 2
    if s >= 4:
        s -= s % 4
    return (0, s) if part == 0 else (s, n)


@numba.njit
def _roles(n_layers):
    """ROW for even layers, COL for odd; the output layer COL after a ROW layer, else REDUNDANT."""
    roles = np.empty(n_layers, dtype=np.int64)
    for layer in range(n_layers):
        roles[layer] = ROW if layer % 2 == 0 else COL
    if roles[n_layers - 1] == ROW:  # its outputs must be whole on both cores for the output delta
        roles[n_layers - 1] = REDUNDANT
    return roles


@numba.njit(inline="always")
def _padded_input(acts, a_off, layer, n_in, transposed):
    """A layer's input activations as a row-major block's backward sweep takes them: with their
    padding in ``acts`` (zeros) after them; a transposed block's sweep runs along its outputs, so
    it gets the n_in activations alone.

    A row-major block's fused backward sweep runs over its whole stored rows,
    zeros included, when its input vector and back signal are padded alike:
    the padded weights stay 0 (updated by x = 0) and only feed the back
    signal's own padding. Without the scalar loop for a row's last
    n_in % 16 numbers, the sweep measured 40-42 ps a weight against 42-45.
    Only for a block that holds its whole input: a COL block's input is half
    a vector, and past its end lie the other block's units.
    """
    return acts[a_off[layer]:a_off[layer] + (n_in if transposed else _stride(n_in))]


@numba.njit
def _padded(n):
    """``n`` rounded up to whole lines, plus one line of gap."""
    return (n + LINE - 1) // LINE * LINE + LINE


@numba.njit
def _block_shape(role, n_in, n_out, part):
    """(outputs, inputs, bias length) of block ``part`` of a layer; COL and REDUNDANT hold the whole bias."""
    lo, hi = _own(n_out if role == ROW else n_in, part)
    if role == ROW:
        return hi - lo, n_in, hi - lo
    if role == COL:
        return n_out, hi - lo, n_out
    return n_out, n_in, n_out


@numba.njit
def _transposed(n_rows, n_cols):
    """Store a block input-major when it has more outputs than inputs: the longer side contiguous."""
    return n_rows > n_cols


@numba.njit
def _stride(n):
    """A stored row of ``n`` numbers padded to whole 64-byte lines.

    Every row then starts on a line, and a 16-wide vector load never straddles
    two lines: unpadded 196-wide rows (8x196) measured 53-58 ps a weight in the
    fused backward sweep, padded to 208 42 (benchmarks/epoch_time.py has the
    whole kernel's figure). The padding holds zeros, and stays zero: only the
    row-major backward sweep reads it (_padded_input).
    """
    return (n + LINE - 1) // LINE * LINE


@numba.njit
def _stored(n_rows, n_cols):
    """(rows, row stride) of a block as stored: its longer side along the rows (_transposed), padded."""
    if _transposed(n_rows, n_cols):
        return n_cols, _stride(n_rows)
    return n_rows, _stride(n_cols)


@numba.njit
def _region(widths, roles, part):
    """Offsets of block ``part``'s weights and bias, layer by layer, in its private region; and its size."""
    n_layers = widths.shape[0] - 1
    w_at = np.empty(n_layers, dtype=np.int64)
    b_at = np.empty(n_layers, dtype=np.int64)
    at = 0
    for layer in range(n_layers):
        rows, cols, n_bias = _block_shape(roles[layer], widths[layer], widths[layer + 1], part)
        lines, stride = _stored(rows, cols)
        w_at[layer] = at
        at += _padded(lines * stride)
        b_at[layer] = at
        at += _padded(n_bias)
    return w_at, b_at, at


@intrinsic
def _as_rows(typingctx, flat, n_rows, row_length):
    """``flat.reshape(n_rows, row_length)`` for a contiguous ``flat`` of exactly that size, as a view.

    numba's reshape calls a general routine at run time, ~40 ns a call, and a
    pixel takes some 45 block views (8x196): this took an 8x16 network's pixel,
    nearly all such overhead, from 1.81 to 1.61 us.
    """
    def codegen(context, builder, signature, args):
        source = context.make_array(signature.args[0])(context, builder, args[0])
        view = context.make_array(signature.return_type)(context, builder)
        rows = context.cast(builder, args[1], signature.args[1], types.intp)
        length = context.cast(builder, args[2], signature.args[2], types.intp)
        itemsize = source.itemsize
        populate_array(view, data=source.data, shape=[rows, length],
                       strides=[builder.mul(length, itemsize), itemsize], itemsize=itemsize,
                       meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, signature.return_type, view._getvalue())

    return types.Array(flat.dtype, 2, "C")(flat, n_rows, row_length), codegen


@numba.njit(fastmath=_FASTMATH, inline="always")
def _layer(store, w_at, b_at, role, n_in, n_out, layer, part):
    """Block ``part`` of a layer: weights (2-D, in its storage order), whether transposed, bias, its units [lo, hi).

    2-D views indexed by range() counters let numba prove indices are
    non-negative and vectorise; flat ``params[row + i]`` indexing measured 10x
    slower (negative-index wraparound checks block SIMD).
    """
    rows, cols, n_bias = _block_shape(role, n_in, n_out, part)
    lo, hi = _own(n_out if role == ROW else n_in, part)
    lines, stride = _stored(rows, cols)
    w = _as_rows(store[w_at[layer]:w_at[layer] + lines * stride], lines, stride)
    return w, _transposed(rows, cols), store[b_at[layer]:b_at[layer] + n_bias], lo, hi


@numba.njit(fastmath=_FASTMATH)
def _copy_blocks(params, widths, w_off, b_off, roles, store, w_at, b_at, part, into_store):
    """Copy block ``part`` of every layer between the flat ``params`` and its region (``into_store``) or back.

    Back, block 0 alone writes what both hold whole (redundant layers, COL biases).
    """
    for layer in range(widths.shape[0] - 1):
        n_in, n_out = widths[layer], widths[layer + 1]
        role = roles[layer]
        rows, cols, n_bias = _block_shape(role, n_in, n_out, part)
        lo, hi = _own(n_out if role == ROW else n_in, part)
        b0 = lo if role == ROW else 0
        full = params[w_off[layer]:w_off[layer] + n_out * n_in].reshape(n_out, n_in)
        if role == ROW:
            full = full[lo:hi]
        elif role == COL:
            full = full[:, lo:hi]
        lines, stride = _stored(rows, cols)
        transposed = _transposed(rows, cols)
        block = _as_rows(store[w_at[layer]:w_at[layer] + lines * stride], lines, stride)[:, :rows if transposed else cols]
        bias = params[b_off[layer] + b0:b_off[layer] + b0 + n_bias]
        own_bias = store[b_at[layer]:b_at[layer] + n_bias]
        if into_store:
            if transposed:
                block[:, :] = full.T
            else:
                block[:, :] = full
            own_bias[:] = bias
        elif role == ROW or role == COL or part == 0:
            if transposed:
                full[:, :] = block.T
            else:
                full[:, :] = block
            if role == ROW or part == 0:
                bias[:] = own_bias


# -- the two-party barrier -------------------------------------------------------------


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


@numba.njit(inline="always")
def _meet(flags, me, n_cores, step, diverged):
    """A barrier on two cores; on one, only the check whether this core diverged."""
    if n_cores == 1:
        return diverged
    return _barrier(flags, me, step, diverged, 0)


# -- one core's share of a call ----------------------------------------------------------


@numba.njit
def _on_lines(n, dtype_of):
    """``n`` zeros of ``dtype_of``'s type starting on a 64-byte line, so rows a whole number of lines long stay on lines."""
    raw = np.zeros(n + 64 // dtype_of.itemsize, dtype=dtype_of.dtype)
    skip = (64 - raw.ctypes.data % 64) % 64 // dtype_of.itemsize
    return raw[skip:skip + n]


@numba.njit
def buffers(widths, a_off, dtype_of):
    """What a call allocates: the blocks' regions, each core's scratch, the partial sums, flags, results."""
    n_layers = widths.shape[0] - 1
    roles = _roles(n_layers)
    region = max(_region(widths, roles, 0)[2], _region(widths, roles, 1)[2])
    work = _on_lines(2 * region, dtype_of).reshape(2, region)  # (block, private region)
    max_width = widths.max()
    row = _padded(a_off[-1]) + 2 * _padded(max_width)
    scratch = _on_lines(2 * row, dtype_of).reshape(2, row)  # (core, ...)
    # (parity, layer, block, unit)
    xfer = _on_lines(4 * n_layers * _padded(max_width), dtype_of).reshape(2, n_layers, 2, _padded(max_width))
    flags = np.zeros(3 * STRIDE, dtype=np.int64)
    result = np.zeros((2, 2), dtype=np.int64)
    return work, scratch, xfer, flags, result


@numba.njit(fastmath=_FASTMATH, nogil=True)
def core(me, n_cores, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
         hidden_code, output_code, slope, max_delta, work, scratch, xfer, flags, result):
    """Core ``me`` of ``n_cores`` trains on ``order``: blocks ``me`` (two cores) or both (one); (status, k) in ``result[me]``."""
    n_layers = widths.shape[0] - 1
    roles = _roles(n_layers)
    first = 0 if n_cores == 1 else me  # this core's blocks: [first, end)
    end = 2 if n_cores == 1 else me + 1
    w_at = np.empty((2, n_layers), dtype=np.int64)
    b_at = np.empty((2, n_layers), dtype=np.int64)
    for part in range(2):
        w_part, b_part, _ = _region(widths, roles, part)
        w_at[part, :] = w_part
        b_at[part, :] = b_part
    for part in range(first, end):
        _copy_blocks(params, widths, w_off, b_off, roles, work[part], w_at[part], b_at[part], part, True)
    a_size, max_width = a_off[-1], widths.max()
    mine = scratch[me]
    acts = mine[:a_size]
    delta = mine[_padded(a_size):_padded(a_size) + max_width]
    back = mine[_padded(a_size) + _padded(max_width):_padded(a_size) + _padded(max_width) + _stride(max_width)]
    n_outputs = widths[n_layers]
    # One hidden layer (ROW then COL), 3 outputs, and blocks wide enough that the
    # first is stored input-major and the second output-major (_transposed).
    fused = n_layers == 2 and n_outputs == 3 and widths[0] == 2 and widths[1] >= 8
    step = np.int64(1)
    if n_cores == 2 and _barrier(flags, me, step, np.int64(0), HANDSHAKE_SPINS) < 0:
        result[me, 0], result[me, 1] = NO_PARTNER, 0
        return
    diverged = np.int64(0)  # 1 + the pixel whose delta, in this core's blocks, failed the check
    for k in range(order.shape[0]):
        p = order[k]
        parity = k % 2
        acts[a_off[0]] = coords[p, 0]
        acts[a_off[0] + 1] = coords[p, 1]
        for layer in range(n_layers):
            n_in, n_out = widths[layer], widths[layer + 1]
            role = roles[layer]
            code = output_code if layer == n_layers - 1 else hidden_code
            x = acts[a_off[layer]:a_off[layer] + n_in]
            y = acts[a_off[layer + 1]:a_off[layer + 1] + n_out]
            if fused and layer == 0:
                w1_in, w1_out = widths[1], widths[2]
                for part in range(first, end):
                    w, t, b, lo, hi = _layer(work[part], w_at[part], b_at[part], role, n_in, n_out, 0, part)
                    w1 = _layer(work[part], w_at[part], b_at[part], COL, w1_in, w1_out, 1, part)[0]
                    _hidden_forward_as(w, b, w1, x[0], x[1], y[lo:hi], xfer[parity, 1, part, :w1_out], code, slope)
            elif role == ROW:
                for part in range(first, end):
                    w, t, b, lo, hi = _layer(work[part], w_at[part], b_at[part], role, n_in, n_out, layer, part)
                    mine_y = y[lo:hi]  # indexed from 0: ``y[j]`` for j from ``lo`` would not vectorise
                    _forward_block(w, t, x, mine_y)
                    _activated_as(mine_y, mine_y, None, b, code, slope)
            elif role == COL:
                for part in range(first, end * (not fused)):  # fused: _hidden_forward left the partials
                    w, t, b, lo, hi = _layer(work[part], w_at[part], b_at[part], role, n_in, n_out, layer, part)
                    _forward_block(w, t, x[lo:hi], xfer[parity, layer, part, :n_out])
                step += 1
                agreed = _meet(flags, me, n_cores, step, diverged)
                if agreed != 0:
                    return _stop(me, first, end, agreed, params, widths, w_off, b_off, roles, work, w_at, b_at, result)
                b = _layer(work[first], w_at[first], b_at[first], role, n_in, n_out, layer, first)[2]
                _activated_as(y, xfer[parity, layer, 0], xfer[parity, layer, 1], b, code, slope)
            else:
                w, t, b, lo, hi = _layer(work[first], w_at[first], b_at[first], role, n_in, n_out, layer, first)
                _forward_block(w, t, x, y)
                _activated_as(y, y, None, b, code, slope)
        # Output delta of 0.5 * sum((t - y)^2) is (t - y) * f'(y).
        y_out = acts[a_off[n_layers]:a_off[n_layers] + n_outputs]
        for j in range(n_outputs):
            delta[j] = (targets[p, j] - y_out[j]) * _derivative_from_output(y_out[j], output_code, slope)
        if _count_bad(delta[:n_outputs], max_delta) and diverged == 0:
            diverged = k + 1
        for layer in range(n_layers - 1, -1, -1):
            n_in, n_out = widths[layer], widths[layer + 1]
            role = roles[layer]
            x = acts[a_off[layer]:a_off[layer] + n_in]
            lr = layer_lr[layer]
            if fused:
                if layer == 1:
                    _update_bias(_layer(work[first], w_at[first], b_at[first], COL, n_in, n_out, 1, first)[2],
                                 delta[:n_out], lr)
                    bad = 0
                    for part in range(first, end):
                        w1 = _layer(work[part], w_at[part], b_at[part], COL, n_in, n_out, 1, part)[0]
                        w, t, b, lo, hi = _layer(work[part], w_at[part], b_at[part], ROW, 2, n_in, 0, part)
                        bad += _hidden_backward_as(w, b, w1, acts[a_off[0]], acts[a_off[0] + 1], x[lo:hi],
                                                delta[:n_out], layer_lr[0], lr, hidden_code, slope, max_delta)
                    if bad and diverged == 0:
                        diverged = k + 1
                continue
            if role == ROW:
                for part in range(first, end):
                    w, t, b, lo, hi = _layer(work[part], w_at[part], b_at[part], role, n_in, n_out, layer, part)
                    if layer == 0:
                        _update_block(w, t, x, delta[lo:hi], lr)
                    else:
                        x_in = _padded_input(acts, a_off, layer, n_in, t)  # the back signal padded alike
                        _backward_block(w, t, x_in, delta[lo:hi], lr, xfer[parity, layer, part, :x_in.shape[0]])
                    _update_bias(b, delta[lo:hi], lr)
                if layer == 0:
                    continue
                step += 1
                agreed = _meet(flags, me, n_cores, step, diverged)
                if agreed != 0:
                    return _stop(me, first, end, agreed, params, widths, w_off, b_off, roles, work, w_at, b_at, result)
                bad = _deltas_as(delta[:n_in], xfer[parity, layer, 0], xfer[parity, layer, 1], x,
                                 hidden_code, slope, max_delta)
            elif role == COL:  # never layer 0, which is ROW
                _update_bias(_layer(work[first], w_at[first], b_at[first], role, n_in, n_out, layer, first)[2],
                             delta[:n_out], lr)
                for part in range(first, end):
                    w, t, b, lo, hi = _layer(work[part], w_at[part], b_at[part], role, n_in, n_out, layer, part)
                    _backward_block(w, t, x[lo:hi], delta[:n_out], lr, back[lo:hi])
                # Only this core's inputs: the rows its blocks of the ROW layer below hold.
                lo, hi = _own(n_in, first)[0], _own(n_in, end - 1)[1]
                bad = _deltas_as(delta[lo:hi], back[lo:hi], None, x[lo:hi], hidden_code, slope, max_delta)
            else:
                w, t, b, lo, hi = _layer(work[first], w_at[first], b_at[first], role, n_in, n_out, layer, first)
                if layer == 0:
                    _update_block(w, t, x, delta[:n_out], lr)
                    _update_bias(b, delta[:n_out], lr)
                    continue
                x_in = _padded_input(acts, a_off, layer, n_in, t)
                _backward_block(w, t, x_in, delta[:n_out], lr, back[:x_in.shape[0]])
                _update_bias(b, delta[:n_out], lr)
                bad = _deltas_as(delta[:n_in], back, None, x, hidden_code, slope, max_delta)
            if bad and diverged == 0:
                diverged = k + 1
    # One last meeting, so a divergence seen in the last pixel's blocks is shared.
    agreed = _meet(flags, me, n_cores, step + 1, diverged)
    if agreed < 0:
        result[me, 0], result[me, 1] = NO_PARTNER, 0
        return
    for part in range(first, end):
        _copy_blocks(params, widths, w_off, b_off, roles, work[part], w_at[part], b_at[part], part, False)
    if agreed > 0:
        result[me, 0], result[me, 1] = DIVERGED, agreed - 1
    else:
        result[me, 0], result[me, 1] = OK, order.shape[0]


@numba.njit
def _stop(me, first, end, agreed, params, widths, w_off, b_off, roles, work, w_at, b_at, result):
    """Leave a meeting that did not agree to go on: the partner is gone, or a block diverged."""
    if agreed < 0:
        result[me, 0], result[me, 1] = NO_PARTNER, 0
        return
    for part in range(first, end):
        _copy_blocks(params, widths, w_off, b_off, roles, work[part], w_at[part], b_at[part], part, False)
    result[me, 0], result[me, 1] = DIVERGED, agreed - 1


@numba.njit(parallel=True, cache=True)
def train_pixels_on(n_cores, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                    hidden_code, output_code, slope, max_delta):
    """Both kernels' one compiled body: ``core`` on ``n_cores`` (1 or 2) threads; returns (status, k).

    One entry with the core count a runtime value, not two entries each with
    its own copy of ``core``: LLVM optimises a copy inlined into a caller in
    that caller's context, and two copies were measured to fuse a multiply-add
    (FMA) in one and not the other, a last-bit difference in 11 of 180,000
    weights after one pixel (3x300, sigmoid, float64). The prange of one
    iteration costs a thread-pool dispatch, ~10-20 us a 1,024-pixel call.
    """
    work, scratch, xfer, flags, result = buffers(widths, a_off, params)
    for me in prange(n_cores):
        # int64, not prange's uint64, so ``first``/``end`` in ``core`` stay integers.
        core(np.int64(me), n_cores, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
             hidden_code, output_code, slope, max_delta, work, scratch, xfer, flags, result)
    if result[0, 0] == NO_PARTNER or (n_cores == 2 and result[1, 0] == NO_PARTNER):
        return NO_PARTNER, 0
    return result[0, 0], result[0, 1]


def train_pixels(params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                 hidden_code, output_code, slope, max_delta):
    """Train on ``targets[order[k]]`` for k = 0.. in turn, updating ``params`` in place, on one core.

    Returns (status, k): status OK with k = len(order), or DIVERGED with k the
    index in ``order`` of the pixel whose error signal exceeded ``max_delta``
    or stopped being finite (the original's "delta above 1000" guard).
    """
    return train_pixels_on(1, params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                           hidden_code, output_code, slope, max_delta)


def layout(widths):
    """Offsets of every weight matrix (row-major, (out, in)) and bias in the flat parameters, and of every activation vector in a core's scratch."""
    widths = np.asarray(widths, dtype=np.int64)
    w_off, b_off = [], []
    offset = 0
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        w_off.append(offset)
        offset += n_in * n_out
        b_off.append(offset)
        offset += n_out
    # Each activation vector starts on a 64-byte line, as the stored rows it meets do (_stride).
    a_off = np.concatenate([[0], np.cumsum([_stride(n) for n in widths])]).astype(np.int64)
    return widths, np.array(w_off, np.int64), np.array(b_off, np.int64), a_off, offset
