r"""numba kernels for the fusion's hot loops (CPU, parallel over image rows).

Each kernel makes one pass over memory, and inner loops are written without
branches (boundaries are handled by clamped indices or peeled iterations) so
that LLVM vectorizes them.  Scalars arrive already cast to the arrays' dtype,
so float32 work stays float32.  ``fastmath`` allows reassociation and
contraction but not the no-NaN/no-Inf assumptions: a diverging iterate still
shows up as NaN/Inf for the solver to report.  The TV prox kernels may also
approximate functions (``afn``): their projection's :math:`1/\sqrt{q}` becomes
a reciprocal square-root estimate refined by a Newton step, within a few
float32 rounding errors of the exact one.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from ._compiled import DUAL_FLOOR
from ._fast_math import fast_log, fast_pow

_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
_JIT = {"cache": True, "nogil": True, "fastmath": _FASTMATH, "error_model": "numpy"}
# sqrt and a division per pixel bound the dual step; their estimate made the 3 x 512 x 512 prox 1.18x faster
_JIT_PROX = {**_JIT, "fastmath": _FASTMATH | {"afn"}}


@nb.njit(**_JIT, inline="always")
def _primal_row(f, weight, nonneg, i, ry, ry_up, rx, out):  # pragma: no cover
    """Write row ``i`` of u = P_C(f + weight div r) into ``out[:W]``, from the rows of r it reads.

    ``ry`` and ``ry_up`` are rows ``i`` and ``i - 1`` of r_y, ``rx`` is row ``i`` of r_x.
    ``out`` has W + 1 entries; the last repeats ``out[W - 1]``.
    """
    H, W = f.shape
    # The last row of r_y and the last column of r_x never enter div r.
    down = f.dtype.type(1.0 if i < H - 1 else 0.0)
    up = f.dtype.type(1.0 if i > 0 else 0.0)
    for j in range(W):
        out[j] = f[i, j] + weight * (down * ry[j] - up * ry_up[j])
    out[0] += weight * rx[0]
    for j in range(1, W - 1):
        out[j] += weight * (rx[j] - rx[j - 1])
    out[W - 1] -= weight * rx[W - 2]
    if nonneg:
        zero = f.dtype.type(0)
        for j in range(W):
            out[j] = max(out[j], zero)
    # A copy of the last value past the end makes the horizontal difference 0 there (Neumann).
    out[W] = out[W - 1]


@nb.njit(**_JIT, inline="always")
def _extrapolated_row(beta, zero_start, py_prev, px_prev, py_cur, px_cur, i, r):  # pragma: no cover
    """r[0], r[1] = row ``i`` of r = p_cur + beta (p_cur - p_prev); 0 when ``zero_start`` (p is then not read)."""
    W = r.shape[1]
    zero = r.dtype.type(0)
    if zero_start:
        for j in range(W):
            r[0, j] = zero
            r[1, j] = zero
    else:
        for j in range(W):
            r[0, j] = py_cur[i, j] + beta * (py_cur[i, j] - py_prev[i, j])
            r[1, j] = px_cur[i, j] + beta * (px_cur[i, j] - px_prev[i, j])


@nb.njit(**_JIT, inline="always")
def _store_projected(qy, qx, one, floor, py_out, px_out, i, j):  # pragma: no cover
    r"""Store (qy, qx) projected onto the unit disc at [i, j] (each component 0 below ``floor``, `DUAL_FLOOR`).

    ``floor`` comes in the maps' dtype: compared with a float64 constant, every float32 component
    was widened to float64 first.  Under the square root it keeps :math:`1/\sqrt{q}` finite at
    :math:`q = 0`, where the shrink factor is 1 either way.
    """
    shrink = min(one, one / math.sqrt(qy * qy + qx * qx + floor))
    py = qy * shrink
    px = qx * shrink
    zero = one - one
    py_out[i, j] = py if abs(py) >= floor else zero
    px_out[i, j] = px if abs(px) >= floor else zero


@nb.njit(**_JIT, inline="always")
def _dual_rows(
    f, weight, step, keep, beta, nonneg, zero_start, py_prev, px_prev, py_cur, px_cur, py_out, px_out, start, stop
):  # pragma: no cover
    r"""Dual update of rows ``start:stop`` of one map; the band carries its next primal row forward.

    ``keep`` is :math:`a` of the Huber step, :math:`p_{out} = P(a\,r + s\nabla u)` (1 for TV).
    """
    H, W = f.shape
    one = f.dtype.type(1)
    floor = f.dtype.type(DUAL_FLOOR)
    u_cur = np.empty(W + 1, dtype=f.dtype)
    u_next = np.empty(W + 1, dtype=f.dtype)
    # Rows i - 1, i and i + 1 of r, each formed once: the primal rows and the dual row read them from here.
    r = np.empty((3, 2, W), dtype=f.dtype)
    above, at, below = 0, 1, 2
    # Row start - 1 only enters multiplied by 0 when start is 0: zeros keep any garbage out of that product.
    _extrapolated_row(beta, zero_start or start == 0, py_prev, px_prev, py_cur, px_cur, max(start - 1, 0), r[above])
    _extrapolated_row(beta, zero_start, py_prev, px_prev, py_cur, px_cur, start, r[at])
    _primal_row(f, weight, nonneg, start, r[at, 0], r[above, 0], r[at, 1], u_cur)
    for i in range(start, stop):
        if i < H - 1:
            _extrapolated_row(beta, zero_start, py_prev, px_prev, py_cur, px_cur, i + 1, r[below])
            _primal_row(f, weight, nonneg, i + 1, r[below, 0], r[at, 0], r[below, 1], u_next)
        else:
            # On the last row u_next is u_cur itself, so the vertical difference is 0 (Neumann).
            u_next[:] = u_cur
        ry, rx = r[at, 0], r[at, 1]
        for j in range(W):
            qy = keep * ry[j] + step * (u_next[j] - u_cur[j])
            qx = keep * rx[j] + step * (u_cur[j + 1] - u_cur[j])
            _store_projected(qy, qx, one, floor, py_out, px_out, i, j)
        u_cur, u_next = u_next, u_cur
        above, at, below = at, below, above


@nb.njit(**_JIT, inline="always")
def _primal_rows(f, weight, nonneg, py, px, out, start, stop):  # pragma: no cover
    """Out[start:stop] = P_C(f + weight * div p) for one (H, W) map."""
    W = f.shape[1]
    row = np.empty(W + 1, dtype=f.dtype)
    for i in range(start, stop):
        _primal_row(f, weight, nonneg, i, py[i], py[max(i - 1, 0)], px[i], row)
        out[i, :] = row[:W]


@nb.njit(parallel=True, **_JIT)
def evaluate(
    x, haadf, counts, weights, gm1, eps, deltas, strengths, xi, directed, x_pow_m1, residual, partials, mask, masked
):  # pragma: no cover
    r"""Cost terms and HAADF residual of each item, with :math:`x^{\gamma-1}` and :math:`\log(x+\epsilon)` inline.

    ``x`` is (B, E, H, W), ``weights``, the Huber ``deltas`` and the directional ``strengths`` (B, E),
    ``gm1`` (:math:`\gamma - 1`) and ``eps`` (B,), all in x's dtype.  Writes :math:`x^{\gamma-1}`
    into ``x_pow_m1`` (B, E, H, W; 1 where :math:`\gamma = 1`, also at 0) and
    ``residual`` (B, H, W); per-row sums go to ``partials`` (B * H, 1 + 2E) in float64:
    :math:`r^2`, then :math:`x_e - b_e\log(x_e+\epsilon)` and the prior
    :math:`h_\delta(\lVert P_\xi \nabla x_e\rVert)` of each map (:math:`\delta = 0`: TV).  When
    ``directed``, :math:`P_\xi = I - \gamma_d \xi\xi^\top` with the direction field ``xi`` (B, 2, H, W);
    otherwise ``strengths`` and ``xi`` are not read.
    When ``masked``, ``mask`` (B, H, W) weighs the HAADF term: :math:`m r^2` is summed and
    :math:`m r` kept as the residual; otherwise ``mask`` is not read.
    """
    B, E, H, W = x.shape
    for t in prange(B * H):
        n = t // H
        i = t - n * H
        res = residual[n, i]
        for j in range(W):
            res[j] = haadf[n, i, j]
        down = min(i + 1, H - 1)  # on the last row x[down] is x[i]: zero difference
        exponent, offset = gm1[n], eps[n]
        linear = exponent == 0
        one = exponent - exponent + 1
        for e in range(E):
            w = weights[n, e]
            xe = x[n, e]
            powers = x_pow_m1[n, e, i]
            poisson = 0.0
            for j in range(W):
                v = xe[i, j]
                power = one if linear else fast_pow(v, exponent)
                powers[j] = power
                res[j] -= w * power * v
                poisson += v - counts[n, e, i, j] * fast_log(v + offset)
            tv = 0.0
            delta = deltas[n, e]
            if directed:
                gamma_d = strengths[n, e]
                half, inverse = 0.5 * delta, 0.5 / max(delta, 1e-30)
                for j in range(W):
                    right = min(j + 1, W - 1)  # on the last column x[right] is x[j]: zero difference
                    dy = xe[down, j] - xe[i, j]
                    dx = xe[i, right] - xe[i, j]
                    along = gamma_d * (xi[n, 0, i, j] * dy + xi[n, 1, i, j] * dx)
                    dy -= along * xi[n, 0, i, j]
                    dx -= along * xi[n, 1, i, j]
                    g = math.sqrt(dy * dy + dx * dx)
                    tv += g - half if g > delta else g * g * inverse
            elif delta > 0:
                half, inverse = 0.5 * delta, 0.5 / delta
                for j in range(W - 1):
                    dy = xe[down, j] - xe[i, j]
                    dx = xe[i, j + 1] - xe[i, j]
                    g = math.sqrt(dy * dy + dx * dx)
                    tv += g - half if g > delta else g * g * inverse
                g = abs(xe[down, W - 1] - xe[i, W - 1])
                tv += g - half if g > delta else g * g * inverse
            else:
                for j in range(W - 1):
                    dy = xe[down, j] - xe[i, j]
                    dx = xe[i, j + 1] - xe[i, j]
                    tv += math.sqrt(dy * dy + dx * dx)
                tv += abs(xe[down, W - 1] - xe[i, W - 1])
            partials[t, 1 + e] = poisson
            partials[t, 1 + E + e] = tv
        sq = 0.0
        if masked:
            m = mask[n, i]
            for j in range(W):
                sq += m[j] * res[j] * res[j]
                res[j] *= m[j]
        else:
            for j in range(W):
                sq += res[j] * res[j]
        partials[t, 0] = sq


@nb.njit(parallel=True, **_JIT)
def haadf_moments(x, x_pow_m1, weights, image, mask, masked, model, partials):  # pragma: no cover
    r"""HAADF model :math:`M = \sum_e w_e x_e x_e^{\gamma-1}` of each item and the moments of its fit.

    ``x`` and ``x_pow_m1`` are (B, E, H, W), ``weights`` (B, E); writes ``model``
    (B, H, W) and per-row float64 sums into ``partials`` (B * H, 2):
    :math:`m^2 M^2` and :math:`m^2 M b` with the image ``image`` (B, H, W), and
    ``mask`` (B, H, W) :math:`m` when ``masked`` (otherwise :math:`m = 1` and
    ``mask`` is not read).
    """
    B, E, H, W = x.shape
    zero = x.dtype.type(0)
    for t in prange(B * H):
        n = t // H
        i = t - n * H
        row = model[n, i]
        for j in range(W):
            row[j] = zero
        for e in range(E):
            w = weights[n, e]
            for j in range(W):
                row[j] += w * x_pow_m1[n, e, i, j] * x[n, e, i, j]
        squares = cross = 0.0
        if masked:
            m = mask[n, i]
            for j in range(W):
                q = m[j] * m[j] * row[j]
                squares += q * row[j]
                cross += q * image[n, i, j]
        else:
            for j in range(W):
                squares += row[j] * row[j]
                cross += row[j] * image[n, i, j]
        partials[t, 0] = squares
        partials[t, 1] = cross


@nb.njit(parallel=True, **_JIT)
def haadf_residual(raw, background, model, gain, mask, masked, haadf, residual, partials):  # pragma: no cover
    r"""Form the HAADF term at a new fit: :math:`b_H - B`, the residual :math:`m (b_H - B - a M)`, its squares.

    Per item ``gain`` :math:`a`; writes ``haadf`` (:math:`b_H - B`) and
    ``residual`` (B, H, W), and per-row float64 sums of :math:`m\,(b_H - B - a M)^2`
    into ``partials`` (B * H,), ``mask`` :math:`m` as in `evaluate`.
    """
    B, H, W = raw.shape
    for t in prange(B * H):
        n = t // H
        i = t - n * H
        a = gain[n]
        squares = 0.0
        if masked:
            m = mask[n, i]
            for j in range(W):
                h = raw[n, i, j] - background[n, i, j]
                haadf[n, i, j] = h
                r = h - a * model[n, i, j]
                squares += m[j] * r * r
                residual[n, i, j] = m[j] * r
        else:
            for j in range(W):
                h = raw[n, i, j] - background[n, i, j]
                haadf[n, i, j] = h
                r = h - a * model[n, i, j]
                squares += r * r
                residual[n, i, j] = r
        partials[t] = squares


@nb.njit(parallel=True, **_JIT)
def gradient_step(x, counts, weights, x_pow_m1, residual, coef_h, coef_c, eps, floor, out):  # pragma: no cover
    """Out = max(x - coef_c (1 - b/(x+eps)) + coef_h w x**(gamma-1) r, floor).

    ``coef_h`` (= eta gamma lambda_H) and ``eps`` are per item n, ``coef_c`` (= eta lambda_C) per map (B, E);
    ``floor`` is 0 for the projected step and -inf for the plain one.
    """
    B, E, H, W = x.shape
    one = x.dtype.type(1)
    for t in prange(B * H):
        n = t // H
        i = t - n * H
        ep = eps[n]
        for e in range(E):
            cc = coef_c[n, e]
            ch = coef_h[n] * weights[n, e]
            for j in range(W):
                v = x[n, e, i, j]
                g = cc * (one - counts[n, e, i, j] / (v + ep)) - ch * x_pow_m1[n, e, i, j] * residual[n, i, j]
                out[n, e, i, j] = max(v - g, floor)


@nb.njit(parallel=True, **_JIT)
def extrapolate(x, x_prev, beta, out):  # pragma: no cover
    """Out = max(x + beta (x - x_prev), 0), ``beta`` per item n: the accelerated step's start."""
    B, E, H, W = x.shape
    zero = x.dtype.type(0)
    for t in prange(B * H):
        n = t // H
        i = t - n * H
        b = beta[n]
        for e in range(E):
            for j in range(W):
                v = x[n, e, i, j]
                out[n, e, i, j] = max(v + b * (v - x_prev[n, e, i, j]), zero)


@nb.njit(parallel=True, **_JIT)
def step_products(x_new, y, z, x, partials):  # pragma: no cover
    """Row sums, in float64, of the accelerated step's four inner products (`NumbaEngine.step_products`).

    With d = x_new - y, per row of item n: d.d, x_new.x_new, (y - z).d and d.(x_new - x)
    into ``partials[n * H + i]``.
    """
    B, E, H, W = x.shape
    for t in prange(B * H):
        n = t // H
        i = t - n * H
        moved = size = slope = turn = 0.0
        for e in range(E):
            for j in range(W):
                new = np.float64(x_new[n, e, i, j])
                start = np.float64(y[n, e, i, j])
                d = new - start
                moved += d * d
                size += new * new
                slope += (start - np.float64(z[n, e, i, j])) * d
                turn += d * (new - np.float64(x[n, e, i, j]))
        partials[t, 0] = moved
        partials[t, 1] = size
        partials[t, 2] = slope
        partials[t, 3] = turn


@nb.njit(**_JIT, inline="always")
def _guided(vy, vx, xi_y, xi_x, strength):  # pragma: no cover
    """Return P v = v - strength xi (xi . v) at one pixel (P is symmetric: also its adjoint)."""
    along = strength * (xi_y * vy + xi_x * vx)
    return vy - along * xi_y, vx - along * xi_x


@nb.njit(**_JIT, inline="always")
def _directed_primal_row(
    f, w, g, xi, beta, nonneg, zero_start, py_prev, px_prev, py_cur, px_cur, i, vx, out
):  # pragma: no cover
    r"""Write row ``i`` of :math:`u = P_C(f + w \operatorname{div} P_\xi r)` into ``out[:W]``.

    :math:`r = p_{cur} + \beta(p_{cur} - p_{prev})`.  As `_primal_row` (``out`` has W + 1 entries),
    with the directional projection :math:`P_\xi` at every pixel; ``vx`` (W) is scratch for the
    row's :math:`(P_\xi r)_x`.
    """
    H, W = f.shape
    if zero_start:
        for j in range(W):
            out[j] = f[i, j]
    else:
        # The last row of (P r)_y and the last column of (P r)_x never enter the divergence.
        down = f.dtype.type(1.0 if i < H - 1 else 0.0)
        up = f.dtype.type(1.0 if i > 0 else 0.0)
        iu = max(i - 1, 0)
        xy, xx = xi[0], xi[1]
        for j in range(W):
            ry = py_cur[i, j] + beta * (py_cur[i, j] - py_prev[i, j])
            rx = px_cur[i, j] + beta * (px_cur[i, j] - px_prev[i, j])
            vy, vx[j] = _guided(ry, rx, xy[i, j], xx[i, j], g)
            sy = py_cur[iu, j] + beta * (py_cur[iu, j] - py_prev[iu, j])
            sx = px_cur[iu, j] + beta * (px_cur[iu, j] - px_prev[iu, j])
            vy_up, _ = _guided(sy, sx, xy[iu, j], xx[iu, j], g)
            out[j] = f[i, j] + w * (down * vy - up * vy_up)
        out[0] += w * vx[0]
        for j in range(1, W - 1):
            out[j] += w * (vx[j] - vx[j - 1])
        if W > 1:
            out[W - 1] -= w * vx[W - 2]
    if nonneg:
        zero = f.dtype.type(0)
        for j in range(W):
            out[j] = max(out[j], zero)
    out[W] = out[W - 1]


@nb.njit(**_JIT, inline="always")
def _directed_dual_rows(
    f, w, s, a, g, xi, beta, nonneg, zero_start, by, bx, cy, cx, ny, nx, start, stop
):  # pragma: no cover
    r"""One Huber / directional-TV dual step of rows ``start:stop`` of one map (`fusex.tv.tv_prox`'s Notes).

    :math:`p_{out} = P_{\lVert\cdot\rVert\le 1}(a\,r + s\,P_\xi\nabla u)`,
    :math:`u = P_C(f + w \operatorname{div}(P_\xi r))`, :math:`r = p_{cur} + \beta(p_{cur} - p_{before})`
    (0 when ``zero_start``), with the direction field ``xi`` (2, H, W).  Each row of :math:`u` is
    formed once and carried to the next row's step, as in `_dual_rows`, which reads and writes the
    same rows.
    """
    H, W = f.shape
    one = f.dtype.type(1)
    floor = f.dtype.type(DUAL_FLOOR)
    xy, xx = xi[0], xi[1]
    u_cur = np.empty(W + 1, dtype=f.dtype)
    u_next = np.empty(W + 1, dtype=f.dtype)
    vx = np.empty(W, dtype=f.dtype)
    _directed_primal_row(f, w, g, xi, beta, nonneg, zero_start, by, bx, cy, cx, start, vx, u_cur)
    for i in range(start, stop):
        # On the last row u_next is u_cur itself, so the vertical difference is 0 (Neumann).
        _directed_primal_row(f, w, g, xi, beta, nonneg, zero_start, by, bx, cy, cx, min(i + 1, H - 1), vx, u_next)
        for j in range(W):
            gy, gx = _guided(u_next[j] - u_cur[j], u_cur[j + 1] - u_cur[j], xy[i, j], xx[i, j], g)
            if zero_start:
                qy, qx = s * gy, s * gx
            else:
                qy = a * (cy[i, j] + beta * (cy[i, j] - by[i, j])) + s * gy
                qx = a * (cx[i, j] + beta * (cx[i, j] - bx[i, j])) + s * gx
            _store_projected(qy, qx, one, floor, ny, nx, i, j)
        u_cur, u_next = u_next, u_cur


@nb.njit(**_JIT, inline="always")
def _directed_primal_rows(f, w, g, xi, nonneg, py, px, out, start, stop):  # pragma: no cover
    r"""Out[start:stop] = :math:`P_C(f + w \operatorname{div}(P_\xi p))` for one (H, W) map."""
    W = f.shape[1]
    zero = f.dtype.type(0)
    row = np.empty(W + 1, dtype=f.dtype)
    vx = np.empty(W, dtype=f.dtype)
    for i in range(start, stop):
        _directed_primal_row(f, w, g, xi, zero, nonneg, False, py, px, py, px, i, vx, row)
        out[i, :] = row[:W]


@nb.njit(**_JIT, inline="always")
def _field_rows(xi, m, maps_per_field, directed, lo, hi):  # pragma: no cover
    """Rows ``lo:hi`` of map ``m``'s direction field as its (y, x) pair; the stand-in's first row when not ``directed``.

    Two row slices, each contiguous: a slice of the rows axis under xi's component axis would not
    be, and the directional loops would not vectorize.
    """
    k = m // maps_per_field if directed else 0
    rows = slice(lo, hi) if directed else slice(0, 1)
    return xi[k, 0, rows], xi[k, 1, rows]


@nb.njit(**_JIT, inline="always")
def _map_dual_rows(
    directed, f, w, s, a, g, field, beta, nonneg, zero_start, by, bx, cy, cx, ny, nx, start, stop
):  # pragma: no cover
    """One dual step of rows ``start:stop`` of a map: the directional step if it has a direction, else `_dual_rows`."""
    if directed:
        _directed_dual_rows(f, w, s, a, g, field, beta, nonneg, zero_start, by, bx, cy, cx, ny, nx, start, stop)
    else:
        _dual_rows(f, w, s, a, beta, nonneg, zero_start, by, bx, cy, cx, ny, nx, start, stop)


@nb.njit(**_JIT, inline="always")
def _map_primal_rows(directed, f, w, g, field, nonneg, py, px, out, start, stop):  # pragma: no cover
    """Rows ``start:stop`` of a map's primal image from its dual, with the direction's projection if it has one."""
    if directed:
        _directed_primal_rows(f, w, g, field, nonneg, py, px, out, start, stop)
    else:
        _primal_rows(f, w, nonneg, py, px, out, start, stop)


@nb.njit(parallel=True, **_JIT_PROX)
def prox_maps(
    f, weights, steps, keeps, strengths, xi, maps_per_field, guided, betas, nonneg, out, dual, warm
):  # pragma: no cover
    r"""Run the whole prox of each map of an (M, H, W) stack, maps in parallel.

    Each map runs all its dual iterations while its buffers are in cache;
    ``betas`` holds the momentum weight of each dual iteration.  The arguments
    are those of `fusex.backends._compiled.ProxProblem`: per map :math:`w`,
    :math:`s`, :math:`a`, :math:`\gamma_d`, and the direction field
    ``xi[m // maps_per_field]`` (2, H, W).  A map without a direction
    (TV, or Huber: ``strengths[m]`` 0 or not ``guided``) takes the
    row-streamed step, which scales the extrapolated dual by its keep
    :math:`a` (1 for TV); a map with one takes the directional-TV step.  When
    ``warm``, the dual starts from ``dual`` (M, 2, H, W), and the last dual
    iterate is written back there; otherwise ``dual`` is not touched.
    """
    M, H, W = f.shape
    for m in prange(M):
        fm = f[m]
        w, s = weights[m], steps[m]
        p = np.zeros((3, 2, H, W), dtype=f.dtype)
        prev, cur, nxt = 0, 1, 2
        if warm:
            p[cur] = dual[m]
        # Huber differs from TV only by the keep a, so without a direction it streams rows like TV.
        directed = guided and strengths[m] != 0
        field = _field_rows(xi, m, maps_per_field, directed, 0, H)
        keep, g = (keeps[m], strengths[m]) if guided else (f.dtype.type(1), f.dtype.type(0))
        for k in range(betas.shape[0]):
            beta = betas[k]
            # Without momentum p_prev is not read: passing p_cur keeps stale memory out of the sum.
            before = cur if beta == 0.0 else prev
            by, bx, cy, cx, ny, nx = p[before, 0], p[before, 1], p[cur, 0], p[cur, 1], p[nxt, 0], p[nxt, 1]
            zero_start = k == 0 and not warm
            _map_dual_rows(directed, fm, w, s, keep, g, field, beta, nonneg, zero_start, by, bx, cy, cx, ny, nx, 0, H)
            prev, cur, nxt = cur, nxt, prev
        _map_primal_rows(directed, fm, w, g, field, nonneg, p[cur, 0], p[cur, 1], out[m], 0, H)
        if warm:
            dual[m] = p[cur]


@nb.njit(**_JIT, inline="always")
def _copy_rows(src, dst, lo, hi, at):  # pragma: no cover
    """dst[:, at + (0 .. hi - lo)] = src[:, lo:hi] for (2, rows, W) planes."""
    for c in range(2):
        for i in range(lo, hi):
            dst[c, at + i - lo, :] = src[c, i, :]


@nb.njit(parallel=True, **_JIT_PROX)
def blocked_prox(
    f,
    weights,
    steps,
    keeps,
    strengths,
    xi,
    maps_per_field,
    guided,
    betas,
    nonneg,
    out,
    start,
    dual,
    warm,
    band,
    depth,
    state,
    work,
):  # pragma: no cover
    r"""TV, Huber or directional-TV prox of each map of an (M, H, W) stack, several dual iterations per tile in cache.

    The rows of each map are cut into bands of ``band`` rows, and the dual
    iterations into sweeps of at most ``depth``.  In a sweep every (map, band)
    task copies its band and a halo of ``depth + 2`` rows either side into its
    worker's ``work`` buffer ``(3, 2, rows, W)``, runs the sweep's iterations
    there and writes the band back.  One dual iteration reads one row either
    side of each row it writes, so the rows it must get right shrink by one row
    per side each iteration from the halo inward, and after the sweep the band
    (and the row above it, which the primal image reads) is exactly what the
    row-streamed iteration over the whole map gives.  A map in one band needs
    no halo and runs all its iterations in one sweep.

    Between sweeps the last two dual iterates (:math:`p_{k-1}`, :math:`p_k`)
    go through ``state`` ``(2, M, 2, 2, H, W)``, read from one half and
    written to the other, so that no task reads rows another has already
    advanced.  ``start`` ``(M, 2, H, W)`` is the first dual iterate when
    ``warm`` (only read), and ``dual`` receives the last one; ``betas`` holds
    each iteration's momentum weight, with :math:`\beta_0 = \beta_1 = 0`
    (`fusex.tv.dual_momentum`), so no iteration reads a dual that was never
    written.  ``keeps[m]`` is the Huber keep :math:`a` (1 for TV), as in
    `_dual_rows`.  ``strengths``, ``xi``, ``maps_per_field`` and ``guided`` are as in
    `prox_maps`: a map with a direction takes the directional step (`_directed_dual_rows`), which
    reads and writes the same rows as `_dual_rows`, so the same halo keeps its band exact.
    Needs at least one iteration.
    """
    M, H = f.shape[:2]
    n_iter = betas.shape[0]
    n_bands = (H + band - 1) // band
    per_sweep = n_iter if n_bands == 1 else depth
    n_sweeps = (n_iter + per_sweep - 1) // per_sweep
    n_workers = work.shape[0]
    n_tasks = M * n_bands
    for sweep in range(n_sweeps):
        k0 = (n_iter * sweep) // n_sweeps
        k1 = (n_iter * (sweep + 1)) // n_sweeps
        T = k1 - k0
        src = state[sweep % 2]
        dst = state[(sweep + 1) % 2]
        halo = 0 if n_bands == 1 else T + 2
        for worker in prange(n_workers):
            buf = work[worker]
            for task in range(worker, n_tasks, n_workers):
                m = task // n_bands
                a = (task - m * n_bands) * band
                e = min(H, a + band)
                lo = max(0, a - halo)
                hi = min(H, e + halo)
                n = hi - lo
                fm = f[m, lo:hi]
                directed = guided and strengths[m] != 0
                field = _field_rows(xi, m, maps_per_field, directed, lo, hi)
                w, step, keep, g = weights[m], steps[m], keeps[m], strengths[m]
                if k0 == 0:
                    if warm:
                        _copy_rows(start[m], buf[1], lo, hi, 0)
                else:
                    _copy_rows(src[m, 0], buf[0], lo, hi, 0)
                    _copy_rows(src[m, 1], buf[1], lo, hi, 0)
                band_lo, band_hi = a - lo, e - lo
                # The primal image of a row reads p_y of the row above it.
                need_lo = max(0, band_lo - 1)
                prev, cur, nxt = 0, 1, 2
                for k in range(k0, k1):
                    beta = betas[k]
                    before = cur if beta == 0.0 else prev
                    slack = k1 - 1 - k
                    by, bx, cy, cx = buf[before, 0, :n], buf[before, 1, :n], buf[cur, 0, :n], buf[cur, 1, :n]
                    ny, nx = buf[nxt, 0, :n], buf[nxt, 1, :n]
                    first, last = max(0, need_lo - slack), min(n, band_hi + slack)
                    zero = k == 0 and not warm
                    _map_dual_rows(
                        directed, fm, w, step, keep, g, field, beta, nonneg, zero, by, bx, cy, cx, ny, nx, first, last
                    )
                    prev, cur, nxt = cur, nxt, prev
                if k1 < n_iter:
                    for c in range(2):
                        dst[m, 0, c, a:e, :] = buf[prev, c, band_lo:band_hi, :]
                        dst[m, 1, c, a:e, :] = buf[cur, c, band_lo:band_hi, :]
                else:
                    py, px = buf[cur, 0, :n], buf[cur, 1, :n]
                    _map_primal_rows(directed, fm, w, g, field, nonneg, py, px, out[m, lo:hi], band_lo, band_hi)
                    if warm:
                        for c in range(2):
                            dual[m, c, a:e, :] = buf[cur, c, band_lo:band_hi, :]
