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

import numpy as np

from .objectives import PerItem, per_item
from .operators import divergence, gradient

__all__ = ["dual_momentum", "steps_for", "tv_prox", "tv_weights"]


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


def tv_prox(f: Any, weight: PerItem, n_iter: int, *, method: str = "fgp", nonneg: bool = True, xp: ModuleType) -> Any:
    """Return the TV prox of ``f`` (``..., H, W``) with weight ``weight`` (generic array-API code).

    ``weight`` is one number, one value per entry of ``f``'s first axis (a
    batch item), or an array matching ``f``'s leading axes (one per map).
    See `fusex.tv_denoise` for the public, validated entry point.
    """
    clip = (lambda u: xp.clip(u, min=0.0)) if nonneg else (lambda u: u)
    weights = tv_weights(weight)
    if max(weights) <= 0 or n_iter == 0:
        return clip(f)
    # A zero weight gets a zero dual step: its dual stays 0 and its prox is the projection of f.
    w = per_item(weight, f, xp)
    step = per_item(steps_for(weight), f, xp)
    py_prev = py = xp.zeros_like(f)
    px_prev = px = xp.zeros_like(f)
    for beta in dual_momentum(n_iter, method):
        ry, rx = py + beta * (py - py_prev), px + beta * (px - px_prev)
        u = clip(f + w * divergence(ry, rx, xp))
        gy, gx = gradient(u, xp)
        qy = ry + step * gy
        qx = rx + step * gx
        scale = xp.clip(xp.sqrt(qy * qy + qx * qx), min=1.0)
        py_prev, px_prev, py, px = py, px, qy / scale, qx / scale
    return clip(f + w * divergence(py, px, xp))


def tv_weights(weight: PerItem) -> list[float]:
    """Return ``weight`` as a flat list of floats (one entry for a shared number)."""
    return [float(weight)] if isinstance(weight, (int, float)) else [float(v) for v in np.ravel(weight)]


def steps_for(weight: PerItem) -> PerItem:
    r"""Dual step :math:`1 / (8 w)` of each weight (same shape), 0 where :math:`w = 0`."""
    if isinstance(weight, (int, float)):
        return 1.0 / (8.0 * weight) if weight > 0 else 0.0
    w = np.asarray(weight, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(w > 0, 1.0 / (8.0 * w), 0.0)
