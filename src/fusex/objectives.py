r"""Cost terms of the fusion objective and their gradients, for a batch of items.

Arrays carry a leading item axis: maps ``x`` and counts ``b`` are
``(B, E, H, W)``, the HAADF image ``(B, H, W)`` and the weights ``(B, E, 1, 1)``.
Per-item scalars (:math:`\gamma`, :math:`\epsilon`, step coefficients) are
numbers shared by every item or sequences of ``B`` values; the Poisson step
coefficient may also be a ``(B, E)`` array, one per map.  With
:math:`r = b_H - \sum_e w_e x_e^\gamma`, for each item:

.. math::

    \Psi_1(x) &= \tfrac12 \lVert r \rVert^2, &
    \partial\Psi_1/\partial x_e &= -\gamma\, w_e\, x_e^{\gamma-1}\, r, \\
    \Psi_2(x) &= \sum_e\sum_{px} x_e - b_e \log(x_e + \epsilon), &
    \partial\Psi_2/\partial x_e &= 1 - b_e / (x_e + \epsilon), \\
    TV(x) &= \sum_e \sum_{px} \lVert (\nabla x_e)_{px} \rVert_2 .

A per-pixel HAADF mask :math:`m \in \{0, 1\}` (pixels left out, such as
saturated ones) turns :math:`\Psi_1` into :math:`\tfrac12 \sum_{px} m\, r^2`
and :math:`r` into :math:`m\, r` in its gradient.

The functions are pure: they take ``xp`` explicitly and never modify their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ._per_item import PerItem, any_positive, is_guided, per_item
from ._xp import to_numpy
from .operators import gradient, haadf_model
from .priors import prior_magnitude

__all__ = [
    "Evaluation",
    "evaluate",
    "gradient_step",
    "prior_values",
    "split_sums",
]


@dataclass(frozen=True)
class Evaluation:
    r"""The cost terms of each item at a point, and what the next gradient reuses from them.

    Attributes
    ----------
    haadf : numpy.ndarray, shape (B,)
        :math:`\Psi_1` of each item, on the host.
    poisson, tv : numpy.ndarray, shape (B, E)
        :math:`\Psi_2` and :math:`TV` (unweighted) of each map of each item, on
        the host: per map, so that elements can carry their own weights.
    x_pow_m1 : array, shape (B, E, H, W)
        :math:`x^{\gamma-1}`.
    residual : array, shape (B, H, W)
        :math:`r = b_H - \sum_e w_e x_e^\gamma`.

    """

    haadf: Any
    poisson: Any
    tv: Any
    x_pow_m1: Any
    residual: Any


def tv_magnitude(x: Any, xp: ModuleType) -> Any:
    r"""Per-pixel :math:`\lVert \nabla x \rVert_2` (Neumann boundary), shaped like ``x``."""
    gy, gx = gradient(x, xp)
    return xp.sqrt(gy * gy + gx * gx)


def prior_values(
    x: Any, xp: ModuleType, huber_delta: PerItem = 0.0, strength: PerItem = 0.0, direction: Any = None
) -> Any:
    r"""Per-pixel value of each map's prior (`fusex.priors.prior_magnitude`), shaped like ``x`` (``(B, E, H, W)``).

    ``huber_delta`` and ``strength`` are numbers, per item ``(B,)`` or per map
    ``(B, E)``; ``direction`` is :math:`\xi`, ``(B, 2, H, W)``, or None.  Every
    map on TV (no :math:`\delta`, no direction) gives `tv_magnitude` itself.
    """
    if not is_guided(huber_delta, strength, direction):
        return tv_magnitude(x, xp)
    directed = direction is not None and any_positive(strength)
    xi = (direction[:, 0:1, ...], direction[:, 1:2, ...]) if directed else None
    delta, gamma_d = (per_item(v, x, xp) for v in (huber_delta, strength))
    return prior_magnitude(x, xp, huber_delta=delta, strength=gamma_d, xi=xi)


def evaluate(
    x: Any,
    haadf: Any,
    counts: Any,
    weights: Any,
    *,
    gamma: PerItem,
    eps: PerItem,
    xp: ModuleType,
    mask: Any = None,
    huber_delta: PerItem = 0.0,
    strength: PerItem = 0.0,
    direction: Any = None,
) -> Evaluation:
    r"""Evaluate every cost term of each item at ``x`` (``(B, E, H, W)``).

    ``x**gamma`` is formed once as :math:`x^{\gamma-1} \cdot x` and kept for
    the gradient, because the power is the costliest operation here.  The
    sums, ``(B, 1 + 2E)``, cross to the host in one transfer.

    ``mask``, ``(B, H, W)`` of the maps' dtype, weighs the HAADF term per
    pixel: :math:`\Psi_1 = \tfrac12 \sum_{px} m\, r^2` (1 keeps a pixel, 0
    leaves it out, e.g. a saturated one).  The residual kept for the gradient
    is then :math:`m\, r`, so `gradient_step` needs no mask of its own.

    ``huber_delta``, ``strength`` and ``direction`` (``(B, 2, H, W)``) name
    the prior of each map as in `fusex.tv.tv_prox`; its value
    (`prior_values`) takes the place of :math:`TV` in ``Evaluation.tv``.
    """
    x_pow_m1 = x ** (per_item(gamma, x, xp) - 1.0)
    residual = haadf - haadf_model(x_pow_m1 * x, weights, xp)
    squares = residual * residual
    if mask is not None:
        squares = mask * squares
        residual = mask * residual
    sums = xp.concat(
        [
            xp.sum(squares, axis=(-2, -1))[:, None],
            xp.sum(x - counts * xp.log(x + per_item(eps, x, xp)), axis=(-2, -1)),
            xp.sum(prior_values(x, xp, huber_delta, strength, direction), axis=(-2, -1)),
        ],
        axis=-1,
    )
    return split_sums(to_numpy(sums).astype("float64"), x_pow_m1, residual)


def split_sums(sums: np.ndarray, x_pow_m1: Any, residual: Any) -> Evaluation:
    r"""Build an `Evaluation` from host sums ``(B, 1 + 2E)``: :math:`\lVert r \rVert^2`, then Psi_2 and TV per map."""
    n_maps = (sums.shape[1] - 1) // 2
    return Evaluation(0.5 * sums[:, 0], sums[:, 1 : 1 + n_maps], sums[:, 1 + n_maps :], x_pow_m1, residual)


def gradient_step(
    x: Any,
    counts: Any,
    weights: Any,
    ev: Evaluation,
    *,
    eps: PerItem,
    coef_h: PerItem,
    coef_c: PerItem,
    xp: ModuleType,
    nonneg: bool = True,
) -> Any:
    r"""Projected gradient step :math:`\max(x - \eta \nabla(\lambda_H\Psi_1 + \lambda_C\Psi_2), 0)`.

    ``coef_h`` is :math:`\eta\gamma\lambda_H` and ``coef_c`` is :math:`\eta\lambda_C`, per item.
    ``nonneg=False`` leaves out the projection onto :math:`x \ge 0`, for a
    prox that imposes it itself (then the step is a true proximal-gradient step).
    """
    c_h, c_c = per_item(coef_h, x, xp), per_item(coef_c, x, xp)
    g = c_c * (1.0 - counts / (x + per_item(eps, x, xp))) - c_h * weights * ev.x_pow_m1 * xp.expand_dims(
        ev.residual, axis=-3
    )
    return xp.clip(x - g, min=0.0) if nonneg else x - g
