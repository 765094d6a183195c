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
from types import ModuleType
from typing import Any

from .operators import divergence, gradient

__all__ = ["tv_prox"]


def tv_prox(f: Any, weight: float, n_iter: int, *, method: str = "fgp", nonneg: bool = True, xp: ModuleType) -> Any:
    """Return the TV prox of ``f`` (``..., H, W``) with weight ``weight`` (generic array-API code).

    See `fusex.tv_denoise` for the public, validated entry point.
    """
    clip = (lambda u: xp.clip(u, min=0.0)) if nonneg else (lambda u: u)
    if weight <= 0 or n_iter == 0:
        return clip(f)
    step = 1.0 / (8.0 * weight)
    py = xp.zeros_like(f)
    px = xp.zeros_like(f)
    ry, rx = py, px
    t = 1.0
    for _ in range(n_iter):
        u = clip(f + weight * divergence(ry, rx, xp))
        gy, gx = gradient(u, xp)
        qy = ry + step * gy
        qx = rx + step * gx
        scale = xp.clip(xp.sqrt(qy * qy + qx * qx), min=1.0)
        qy, qx = qy / scale, qx / scale
        if method == "fgp":
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
            ry, rx = qy + beta * (qy - py), qx + beta * (qx - px)
            t = t_next
        else:
            ry, rx = qy, qx
        py, px = qy, qx
    return clip(f + weight * divergence(py, px, xp))
