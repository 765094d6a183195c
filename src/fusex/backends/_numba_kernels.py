"""numba kernels for the fusion's hot loops (CPU, parallel over image rows).

Each kernel makes one pass over memory, and inner loops are written without
branches (boundaries are handled by clamped indices or peeled iterations) so
that LLVM vectorizes them.  Scalars arrive already cast to the arrays' dtype,
so float32 work stays float32.  ``fastmath`` allows reassociation and
contraction but not the no-NaN/no-Inf assumptions: a diverging iterate still
shows up as NaN/Inf for the solver to report.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
_JIT = {"cache": True, "nogil": True, "fastmath": _FASTMATH, "error_model": "numpy"}


@nb.njit(**_JIT, inline="always")
def _primal_row(f, weight, beta, nonneg, zero_start, py_prev, px_prev, py_cur, px_cur, i, out):  # pragma: no cover
    """Write row ``i`` of u = P(f + weight div r), r = p_cur + beta (p_cur - p_prev), into ``out[:W]``.

    ``zero_start`` means r = 0 (the first dual iteration), so p is not read.
    ``out`` has W + 1 entries; the last repeats ``out[W - 1]``.
    """
    H, W = f.shape
    if zero_start:
        for j in range(W):
            out[j] = f[i, j]
    else:
        # The last row of p_y and the last column of p_x never enter div p.
        down = f.dtype.type(1.0 if i < H - 1 else 0.0)
        up = f.dtype.type(1.0 if i > 0 else 0.0)
        iu = max(i - 1, 0)
        for j in range(W):
            ry = py_cur[i, j] + beta * (py_cur[i, j] - py_prev[i, j])
            ry_up = py_cur[iu, j] + beta * (py_cur[iu, j] - py_prev[iu, j])
            out[j] = f[i, j] + weight * (down * ry - up * ry_up)
        out[0] += weight * (px_cur[i, 0] + beta * (px_cur[i, 0] - px_prev[i, 0]))
        for j in range(1, W - 1):
            rx = px_cur[i, j] + beta * (px_cur[i, j] - px_prev[i, j])
            rx_left = px_cur[i, j - 1] + beta * (px_cur[i, j - 1] - px_prev[i, j - 1])
            out[j] += weight * (rx - rx_left)
        out[W - 1] -= weight * (px_cur[i, W - 2] + beta * (px_cur[i, W - 2] - px_prev[i, W - 2]))
    if nonneg:
        zero = f.dtype.type(0)
        for j in range(W):
            out[j] = max(out[j], zero)
    # A copy of the last value past the end makes the horizontal difference 0 there (Neumann).
    out[W] = out[W - 1]


@nb.njit(**_JIT, inline="always")
def _store_projected(qy, qx, one, py_out, px_out, i, j):  # pragma: no cover
    """Store (qy, qx) projected onto the unit disc at [i, j]."""
    scale = max(math.sqrt(qy * qy + qx * qx), one)
    py_out[i, j] = qy / scale
    px_out[i, j] = qx / scale


@nb.njit(parallel=True, **_JIT)
def dual_step(
    f, weight, step, beta, nonneg, zero_start, py_prev, px_prev, py_cur, px_cur, py_out, px_out, n_blocks
):  # pragma: no cover
    r"""One dual projected-gradient step of the TV prox, for one (H, W) map.

    With :math:`r = p_{cur} + \beta(p_{cur} - p_{prev})` (zero when
    ``zero_start``) and :math:`u = P_C(f + w \operatorname{div} r)`:
    :math:`p_{out} = P_{\lVert\cdot\rVert \le 1}(r + s \nabla u)`.  Rows are
    split into ``n_blocks`` bands; a band carries its next primal row forward,
    so each row of ``u`` is formed about once.
    """
    H, W = f.shape
    rows = (H + n_blocks - 1) // n_blocks
    one = f.dtype.type(1)
    for b in prange(n_blocks):
        start = b * rows
        stop = min(H, start + rows)
        if start >= stop:
            continue
        u_cur = np.empty(W + 1, dtype=f.dtype)
        u_next = np.empty(W + 1, dtype=f.dtype)
        _primal_row(f, weight, beta, nonneg, zero_start, py_prev, px_prev, py_cur, px_cur, start, u_cur)
        for i in range(start, stop):
            # On the last row u_next is u_cur itself, so the vertical difference is 0 (Neumann).
            _primal_row(
                f, weight, beta, nonneg, zero_start, py_prev, px_prev, py_cur, px_cur, min(i + 1, H - 1), u_next
            )
            if zero_start:
                for j in range(W):
                    qy = step * (u_next[j] - u_cur[j])
                    qx = step * (u_cur[j + 1] - u_cur[j])
                    _store_projected(qy, qx, one, py_out, px_out, i, j)
            else:
                for j in range(W):
                    ry = py_cur[i, j] + beta * (py_cur[i, j] - py_prev[i, j])
                    rx = px_cur[i, j] + beta * (px_cur[i, j] - px_prev[i, j])
                    qy = ry + step * (u_next[j] - u_cur[j])
                    qx = rx + step * (u_cur[j + 1] - u_cur[j])
                    _store_projected(qy, qx, one, py_out, px_out, i, j)
            u_cur, u_next = u_next, u_cur


@nb.njit(parallel=True, **_JIT)
def primal(f, weight, nonneg, py, px, out):  # pragma: no cover
    """Out = P_C(f + weight * div p) for one (H, W) map."""
    zero = f.dtype.type(0)
    H, W = f.shape
    for i in prange(H):
        row = np.empty(W + 1, dtype=f.dtype)
        _primal_row(f, weight, zero, nonneg, False, py, px, py, px, i, row)
        out[i, :] = row[:W]


@nb.njit(parallel=True, **_JIT)
def evaluate(x, haadf, counts, weights, x_pow_m1, log_x_eps, residual, partials):  # pragma: no cover
    r"""Cost terms and the HAADF residual from precomputed :math:`x^{\gamma-1}` and :math:`\log(x+\epsilon)`.

    Writes ``residual`` (H, W); per-row sums of :math:`r^2`, of
    :math:`x - b\log(x+\epsilon)` and of :math:`|\nabla x|` go to ``partials``
    (H, 3) in float64.
    """
    E, H, W = x.shape
    for i in prange(H):
        res = residual[i]
        for j in range(W):
            res[j] = haadf[i, j]
        down = min(i + 1, H - 1)  # on the last row x[down] is x[i]: zero difference
        poisson = 0.0
        tv = 0.0
        for e in range(E):
            w = weights[e]
            for j in range(W):
                v = x[e, i, j]
                res[j] -= w * x_pow_m1[e, i, j] * v
                poisson += v - counts[e, i, j] * log_x_eps[e, i, j]
            for j in range(W - 1):
                dy = x[e, down, j] - x[e, i, j]
                dx = x[e, i, j + 1] - x[e, i, j]
                tv += math.sqrt(dy * dy + dx * dx)
            tv += abs(x[e, down, W - 1] - x[e, i, W - 1])
        sq = 0.0
        for j in range(W):
            sq += res[j] * res[j]
        partials[i, 0] = sq
        partials[i, 1] = poisson
        partials[i, 2] = tv


@nb.njit(parallel=True, **_JIT)
def gradient_step(x, counts, weights, x_pow_m1, residual, coef_h, coef_c, eps, out):  # pragma: no cover
    """Out = max(x - coef_c (1 - b/(x+eps)) + coef_h w x**(gamma-1) r, 0), coef_h = eta gamma lambda_H."""
    E, H, W = x.shape
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    for i in prange(H):
        for e in range(E):
            ch = coef_h * weights[e]
            for j in range(W):
                v = x[e, i, j]
                g = coef_c * (one - counts[e, i, j] / (v + eps)) - ch * x_pow_m1[e, i, j] * residual[i, j]
                out[e, i, j] = max(v - g, zero)
