r"""Total-variation proximal operator (denoising) by dual projection.

`tv_prox` solves, for each map :math:`f` on the last two axes,

.. math::

    \min_{u \,(\ge 0)} \tfrac12 \lVert u - f \rVert^2 + \lambda \lVert u \rVert_{TV}

through its dual (Beck & Teboulle 2009, *Fast gradient-based algorithms for
constrained total variation image denoising and deblurring problems*):
:math:`u = P_C(f + \lambda \operatorname{div} p)`,
:math:`p \leftarrow P_{\lVert p \rVert \le 1}(p + \tfrac{1}{8\lambda} \nabla u)`,
with FISTA momentum on :math:`p` (``"fgp"``) or without it (``"gp"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from ._per_item import PerItem, any_positive, broadcast_maps, huber_steps, is_guided, per_item, steps_for
from .operators import divergence, gradient
from .priors import project

__all__ = ["dual_momentum", "tv_prox"]


def dual_momentum(n_iter: int, method: str) -> Iterator[float]:
    r"""Yield the momentum weight of each dual iteration :math:`k = 0 .. n-1`.

    The extrapolated dual point is :math:`r_k = p_k + \beta_k (p_k - p_{k-1})`.

    FISTA's sequence for ``"fgp"`` (:math:`t_0 = 1`,
    :math:`t_{k+1} = (1 + \sqrt{1 + 4 t_k^2}) / 2`, :math:`\beta_{k+1} = (t_k - 1)/t_{k+1}`,
    so :math:`\beta_0 = \beta_1 = 0`); all zeros for ``"gp"``.
    """
    t, beta = 1.0, 0.0
    for _ in range(n_iter):
        yield beta
        if method == "fgp":
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
            t = t_next


def tv_prox(
    f: Any,
    weight: PerItem,
    n_iter: int,
    *,
    method: str = "fgp",
    nonneg: bool = True,
    xp: ModuleType,
    huber_delta: PerItem = 0.0,
    strength: PerItem = 0.0,
    direction: Any = None,
    dual: Any = None,
) -> Any:
    r"""Return the prox of ``f`` (``..., H, W``) for the prior with weight ``weight`` (generic array-API code).

    ``weight`` is one number, one value per entry of ``f``'s first axis (a
    batch item), or an array matching ``f``'s leading axes (one per map).
    See `fusex.tv_denoise` for the public, validated entry point.

    The prior is TV unless the keywords say otherwise (see `fusex.priors`):
    ``huber_delta`` (:math:`\delta`) and ``strength`` (:math:`\gamma_d`) are
    shaped like ``weight``; ``direction`` is :math:`\xi`, ``(..., 2, H, W)``:
    ``f``'s shape with its map axis replaced by the y and x components, one
    field shared by the maps of an item (``(2, H, W)`` for one map).

    ``dual`` (``..., 2, H, W``: :math:`p_y, p_x` of each map, the map axes of
    ``f`` followed by the two components) warm-starts the dual iteration;
    the call then returns ``(u, dual_out)``, the prox and the last dual
    iterate, to seed the next call.  The dual is kept in its unit-disc form
    :math:`\lVert p \rVert \le 1` (the dual of :math:`w\,TV` divided by
    :math:`w`), so it stays feasible, and needs no rescaling, when the
    weight changes between calls; a zero ``dual`` is the cold start.

    Notes
    -----
    With :math:`h_\delta(t) = \max_{\lvert q\rvert \le 1} q t - \tfrac{\delta}{2} q^2`
    (the Huber function's dual form) and :math:`P_\xi` symmetric, the prox
    :math:`\min_{u \ge 0} \tfrac12\lVert u - f\rVert^2 + w\sum h_\delta(\lVert P_\xi\nabla u\rVert)`
    has the dual problem (without the constraint :math:`u \ge 0`; with it, the
    first term becomes Beck & Teboulle's projected form, with the same gradient)

    .. math::

        \min_{\lVert p \rVert \le 1}\ \tfrac12 \lVert f + w \operatorname{div}(P_\xi p) \rVert^2
        + \tfrac{w\delta}{2} \lVert p \rVert^2,

    whose gradient is :math:`-w P_\xi \nabla u + w \delta p` with
    :math:`u = P_C(f + w \operatorname{div}(P_\xi p))`, Lipschitz with constant
    :math:`8 w^2 + w\delta` (:math:`\lVert \operatorname{div} \rVert^2 \le 8`,
    :math:`\lVert P_\xi \rVert \le 1` for :math:`0 \le \gamma_d \le 1`).  The
    projected gradient step of length :math:`1 / (8w^2 + w\delta)` is

    .. math::

        p \leftarrow P_{\lVert\cdot\rVert\le 1}\bigl(a\, r + s\, P_\xi \nabla u\bigr), \qquad
        s = \frac{1}{8w + \delta}, \quad a = 1 - s\delta = \frac{8w}{8w + \delta},

    at the (momentum-extrapolated) dual point :math:`r`; :math:`\delta = 0`,
    :math:`\gamma_d = 0` is the TV step above.
    """
    clip = (lambda u: xp.clip(u, min=0.0)) if nonneg else (lambda u: u)
    if not any_positive(weight) or n_iter == 0:
        return clip(f) if dual is None else (clip(f), dual)
    if is_guided(huber_delta, strength, direction):
        return _general_prox(f, weight, n_iter, method, clip, xp, huber_delta, strength, direction, dual)
    # A zero weight gets a zero dual step: its dual stays 0 and its prox is the projection of f.
    w = per_item(weight, f, xp)
    step = per_item(steps_for(weight), f, xp)
    py_prev = py = xp.zeros_like(f) if dual is None else dual[..., 0, :, :]
    px_prev = px = xp.zeros_like(f) if dual is None else dual[..., 1, :, :]
    for beta in dual_momentum(n_iter, method):
        ry, rx = py + beta * (py - py_prev), px + beta * (px - px_prev)
        u = clip(f + w * divergence(ry, rx, xp))
        gy, gx = gradient(u, xp)
        qy = ry + step * gy
        qx = rx + step * gx
        scale = xp.clip(xp.sqrt(qy * qy + qx * qx), min=1.0)
        py_prev, px_prev, py, px = py, px, qy / scale, qx / scale
    u = clip(f + w * divergence(py, px, xp))
    return u if dual is None else (u, xp.stack([py, px], axis=-3))


def _general_prox(
    f: Any,
    weight: PerItem,
    n_iter: int,
    method: str,
    clip: Any,
    xp: ModuleType,
    huber_delta: PerItem,
    strength: PerItem,
    direction: Any,
    dual: Any = None,
) -> Any:
    """Run the dual iteration of `tv_prox` for Huber and directional priors (TV keeps its own loop)."""
    w_host, d_host, g_host = broadcast_maps(weight, huber_delta, strength)
    step_host, keep_host = huber_steps(w_host, d_host)
    w, step, keep, gam = (per_item(a, f, xp) for a in (w_host, step_host, keep_host, g_host))
    if direction is None:
        xi = None
    else:
        xi_y, xi_x = direction[..., 0, :, :], direction[..., 1, :, :]
        xi = (xi_y, xi_x) if f.ndim == 2 else (xp.expand_dims(xi_y, axis=-3), xp.expand_dims(xi_x, axis=-3))

    def guided(vy: Any, vx: Any) -> tuple[Any, Any]:
        return (vy, vx) if xi is None else project(vy, vx, xi[0], xi[1], gam)

    py_prev = py = xp.zeros_like(f) if dual is None else dual[..., 0, :, :]
    px_prev = px = xp.zeros_like(f) if dual is None else dual[..., 1, :, :]
    for beta in dual_momentum(n_iter, method):
        ry, rx = py + beta * (py - py_prev), px + beta * (px - px_prev)
        u = clip(f + w * divergence(*guided(ry, rx), xp))
        gy, gx = guided(*gradient(u, xp))
        qy = keep * ry + step * gy
        qx = keep * rx + step * gx
        scale = xp.clip(xp.sqrt(qy * qy + qx * qx), min=1.0)
        py_prev, px_prev, py, px = py, px, qy / scale, qx / scale
    u = clip(f + w * divergence(*guided(py, px), xp))
    return u if dual is None else (u, xp.stack([py, px], axis=-3))
