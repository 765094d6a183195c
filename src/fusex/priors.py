r"""The smoothness priors of the fusion: total variation, Huber TV and HAADF-guided directional TV.

Each prior is a sum over pixels of a function of the (projected) forward-difference gradient
:math:`\nabla x` (Neumann boundary, `fusex.operators.gradient`):

.. math::

    R(x) = \sum_{px} h_\delta\bigl(\lVert P_\xi \nabla x \rVert_2\bigr), \qquad
    h_\delta(t) = \begin{cases} t^2 / (2\delta) & t \le \delta \\ t - \delta/2 & t > \delta \end{cases},
    \qquad P_\xi = I - \gamma_d\, \xi \xi^\top,

with :math:`h_0(t) = t`.  ``"tv"`` is :math:`\delta = 0, \gamma_d = 0` (isotropic TV);
``"huber"`` is :math:`\delta > 0` (quadratic below :math:`\delta`, so small gradients are
smoothed instead of flattened into staircases); ``"dtv"`` (Ehrhardt & Betcke 2016,
*Multicontrast MRI reconstruction with structure-guided total variation*) is
:math:`\gamma_d > 0` with

.. math::

    \xi = \frac{\nabla b_H}{\sqrt{\lVert \nabla b_H \rVert^2 + \eta^2}},

computed from the HAADF image :math:`b_H`.  Where the HAADF image has an edge,
:math:`P_\xi` removes (a fraction :math:`\gamma_d` of) the map's gradient along
the edge normal, so the prior does not penalize a map edge that is parallel to
a HAADF edge; in flat HAADF regions :math:`\xi \approx 0` and the prior is TV.
The functions here take parameters already shaped to broadcast against the maps.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .operators import gradient

__all__ = ["PRIORS", "directional_field", "prior_magnitude", "project"]

PRIORS = ("tv", "huber", "dtv")
"""The priors a map may carry (`FusionParams.prior`)."""


def directional_field(haadf: Any, eta: float, xp: ModuleType) -> Any:
    r"""Return :math:`\xi` of each HAADF image (``..., H, W``) as ``(..., 2, H, W)`` (y then x component).

    .. math::

        \xi = \nabla b_H / \sqrt{\lVert \nabla b_H \rVert^2 + (\eta\, s)^2}, \qquad
        s = \max_{px} \lVert \nabla b_H \rVert,

    so ``eta`` is relative to each image's largest gradient (the image's units
    drop out) and :math:`\lVert \xi \rVert < 1`.  A flat image gives
    :math:`\xi = 0`, for which directional TV is TV.
    """
    gy, gx = gradient(haadf, xp)
    norm2 = gy * gy + gx * gx
    scale2 = xp.max(norm2, axis=(-2, -1), keepdims=True)
    # A flat image has scale 0: any positive floor keeps xi = 0 / floor = 0 there.
    floor = xp.where(scale2 > 0, (eta * eta) * scale2, xp.ones_like(scale2))
    root = xp.sqrt(norm2 + floor)
    return xp.stack([gy / root, gx / root], axis=-3)


def project(vy: Any, vx: Any, xi_y: Any, xi_x: Any, strength: Any) -> tuple[Any, Any]:
    r"""Apply :math:`P_\xi = I - \gamma_d \xi\xi^\top` to the vector field ``(vy, vx)`` at every pixel.

    :math:`P_\xi` is symmetric, so the same function applies its adjoint.
    """
    along = strength * (xi_y * vy + xi_x * vx)
    return vy - along * xi_y, vx - along * xi_x


def prior_magnitude(x: Any, xp: ModuleType, *, huber_delta: Any = 0.0, strength: Any = 0.0, xi: Any = None) -> Any:
    r"""Per-pixel :math:`h_\delta(\lVert P_\xi \nabla x \rVert_2)`, shaped like ``x``.

    ``huber_delta`` (:math:`\delta`, map units) and ``strength``
    (:math:`\gamma_d`) are numbers or arrays broadcasting against ``x``;
    ``xi`` is None (no direction) or the pair :math:`(\xi_y, \xi_x)`, each
    broadcasting against ``x``.  With every :math:`\delta = 0` and no
    direction this is :math:`\lVert \nabla x \rVert_2`, as in
    `fusex.objectives.tv_magnitude`.
    """
    gy, gx = gradient(x, xp)
    if xi is not None:
        gy, gx = project(gy, gx, xi[0], xi[1], strength)
    t = xp.sqrt(gy * gy + gx * gx)
    if isinstance(huber_delta, float) and huber_delta == 0.0:
        return t
    # A map with delta = 0 is TV: t <= 0 only where t = 0, and 0 / (2 * tiny) = 0 there.
    tiny = float(xp.finfo(x.dtype).smallest_normal)
    safe = max(huber_delta, tiny) if isinstance(huber_delta, float) else xp.clip(huber_delta, min=tiny)
    return xp.where(t <= huber_delta, t * t / (2.0 * safe), t - 0.5 * huber_delta)
