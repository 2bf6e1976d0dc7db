"""The exact online-SGD kernel: one pixel at a time, compiled with numba.

This is the 2012 algorithm (docs/original.md) with nothing batched: for each
pixel of a permutation, a forward pass through every layer, the output delta
``target - output`` (half squared error), and a backward pass that updates each
layer as soon as its delta is known.

Cost model (4x300, the headline network): 272,703 parameters, each touched twice
per pixel here rather than three times, because the backward read of W (for the
previous layer's delta) and the update of W are fused into one sweep over each
row. The old value is read before it is written, so the result is identical to
"backward, then step" as PyTorch autograd does it. With float32 weights (1.1 MB)
the whole network stays in L2, so this runs at cache bandwidth.

Parameters live in one flat array so any list of widths compiles to one kernel:
layer ``l`` has ``W`` of shape (widths[l+1], widths[l]) at ``w_off[l]``, row-major
(row = output unit, so the forward dot product reads memory contiguously), and a
bias of length widths[l+1] at ``b_off[l]``.
"""

import numba
import numpy as np

# Activation codes, shared with engines/online.py. Ints, because numba
# specialises better on them than on strings.
IDENTITY, LEAKY_RELU, RELU, TANH, SIGMOID = 0, 1, 2, 3, 4

# Status codes returned by the kernel.
OK, DIVERGED = 0, 1


@numba.njit(inline="always")
def _activate(s, code, slope):
    if code == LEAKY_RELU:
        return s if s >= 0 else s * slope
    if code == RELU:
        return s if s > 0 else s * 0
    if code == TANH:
        return np.tanh(s)
    if code == SIGMOID:
        return 1 / (1 + np.exp(-s))
    return s


@numba.njit(inline="always")
def _derivative_from_output(y, code, slope):
    # Every activation here has a derivative expressible through its output,
    # so the forward pass keeps only outputs. Leaky: the original's
    # "1 or 0.01", decided by the output's sign (the same sign as the input).
    if code == LEAKY_RELU:
        return 1 if y >= 0 else slope
    if code == RELU:
        return 1 if y > 0 else 0
    if code == TANH:
        return 1 - y * y
    if code == SIGMOID:
        return y * (1 - y)
    return 1


# Reassociation lets LLVM vectorise the dot products; no "nnan"/"ninf", because
# the divergence guard must still see NaN and infinity.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(fastmath=_FASTMATH, inline="always")
def _matvec(w, x, y):
    """y = w @ x, four rows at a time so each load of x feeds four dot products.

    Measured on the 300x300 layer: 4.2 us against 4.5 us one row at a time.
    """
    n_out, n_in = w.shape
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
    while j < n_out:
        s = y.dtype.type(0)
        for i in range(n_in):
            s += w[j, i] * x[i]
        y[j] = s
        j += 1


@numba.njit(fastmath=_FASTMATH, inline="always")
def _backward_and_update(w, b, x, delta, lr, back):
    """back = w.T @ delta with the old w, then w += lr * outer(delta, x), b += lr * delta.

    One fused sweep over w, four rows at a time so each load and store of
    ``back`` is shared by four rows: 6.7 us against 9.0 us a row at a time on
    the 300x300 layer. Each weight is read before it is written, so ``back``
    sees the old weights, exactly as "backward, then optimiser step" does.
    """
    n_out, n_in = w.shape
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
        b[j] += g0
        b[j + 1] += g1
        b[j + 2] += g2
        b[j + 3] += g3
        j += 4
    while j < n_out:
        dj = delta[j]
        g = lr * dj
        for i in range(n_in):
            wji = w[j, i]
            back[i] += wji * dj
            w[j, i] = wji + g * x[i]
        b[j] += g
        j += 1


@numba.njit(fastmath=_FASTMATH, inline="always")
def _update(w, b, x, delta, lr):
    """w += lr * outer(delta, x), b += lr * delta: the first layer needs no backward signal."""
    n_out, n_in = w.shape
    for j in range(n_out):
        g = lr * delta[j]
        for i in range(n_in):
            w[j, i] += g * x[i]
        b[j] += g


@numba.njit(fastmath=_FASTMATH, inline="always")
def _layer(params, widths, w_off, b_off, a_off, layer):
    """Views of layer ``layer``: weights (n_out, n_in), bias, input slot and output slot offsets.

    2-D views indexed by range() counters let numba prove indices are
    non-negative and vectorise; flat ``params[row + i]`` indexing measured 10x
    slower (negative-index wraparound checks block SIMD).
    """
    n_in = widths[layer]
    n_out = widths[layer + 1]
    w = params[w_off[layer]:w_off[layer] + n_out * n_in].reshape(n_out, n_in)
    b = params[b_off[layer]:b_off[layer] + n_out]
    return w, b, n_in, n_out


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def _forward(params, widths, w_off, b_off, a_off, acts, x0, x1, hidden_code, output_code, slope):
    """Forward one pixel; layer outputs land in ``acts`` (input at a_off[0])."""
    n_layers = widths.shape[0] - 1
    acts[a_off[0]] = x0
    acts[a_off[0] + 1] = x1
    for layer in range(n_layers):
        w, b, n_in, n_out = _layer(params, widths, w_off, b_off, a_off, layer)
        x = acts[a_off[layer]:a_off[layer] + n_in]
        y = acts[a_off[layer + 1]:a_off[layer + 1] + n_out]
        _matvec(w, x, y)
        code = output_code if layer == n_layers - 1 else hidden_code
        for j in range(n_out):
            y[j] = _activate(y[j] + b[j], code, slope)


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True)
def train_pixels(params, widths, w_off, b_off, a_off, layer_lr, coords, targets, order,
                 hidden_code, output_code, slope, max_delta):
    """Train on ``targets[order[k]]`` for k = 0.. in turn, updating ``params`` in place.

    Returns (status, k): status OK with k = len(order), or DIVERGED with k the
    index in ``order`` of the pixel whose error signal exceeded ``max_delta``
    or stopped being finite (the original's "delta above 1000" guard).
    """
    n_layers = widths.shape[0] - 1
    acts = np.empty(a_off[-1], dtype=params.dtype)
    max_width = 0
    for width in widths:
        max_width = max(max_width, width)
    delta = np.empty(max_width, dtype=params.dtype)
    delta_prev = np.empty(max_width, dtype=params.dtype)
    n_outputs = widths[n_layers]
    for k in range(order.shape[0]):
        p = order[k]
        _forward(params, widths, w_off, b_off, a_off, acts, coords[p, 0], coords[p, 1],
                 hidden_code, output_code, slope)
        # Output delta of 0.5 * sum((t - y)^2) is (t - y) * f'(y).
        y_out = acts[a_off[n_layers]:a_off[n_layers] + n_outputs]
        for j in range(n_outputs):
            d = (targets[p, j] - y_out[j]) * _derivative_from_output(y_out[j], output_code, slope)
            if not (abs(d) <= max_delta):  # written this way round to catch NaN too
                return DIVERGED, k
            delta[j] = d
        for layer in range(n_layers - 1, -1, -1):
            w, b, n_in, n_out = _layer(params, widths, w_off, b_off, a_off, layer)
            x = acts[a_off[layer]:a_off[layer] + n_in]
            if layer == 0:
                _update(w, b, x, delta, layer_lr[0])
                continue
            back = delta_prev[:n_in]
            _backward_and_update(w, b, x, delta[:n_out], layer_lr[layer], back)
            for i in range(n_in):
                d = back[i] * _derivative_from_output(x[i], hidden_code, slope)
                if not (abs(d) <= max_delta):
                    return DIVERGED, k
                delta[i] = d
    return OK, order.shape[0]


def layout(widths):
    """Offsets of every weight matrix, bias and activation vector in the flat arrays."""
    widths = np.asarray(widths, dtype=np.int64)
    w_off, b_off = [], []
    offset = 0
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        w_off.append(offset)
        offset += n_in * n_out
        b_off.append(offset)
        offset += n_out
    a_off = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
    return widths, np.array(w_off, np.int64), np.array(b_off, np.int64), a_off, offset
