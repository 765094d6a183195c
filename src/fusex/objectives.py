r"""Cost terms of the fusion objective and their gradients.

With :math:`r = b_H - \sum_e w_e x_e^\gamma`:

.. math::

    \Psi_1(x) &= \tfrac12 \lVert r \rVert^2, &
    \partial\Psi_1/\partial x_e &= -\gamma\, w_e\, x_e^{\gamma-1}\, r, \\
    \Psi_2(x) &= \sum_e\sum_{px} x_e - b_e \log(x_e + \epsilon), &
    \partial\Psi_2/\partial x_e &= 1 - b_e / (x_e + \epsilon), \\
    TV(x) &= \sum_e \sum_{px} \lVert (\nabla x_e)_{px} \rVert_2 .

The functions are pure: they take ``xp`` explicitly and never modify their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .operators import gradient, haadf_model

__all__ = ["Evaluation", "evaluate", "gradient_step", "smooth_gradient", "tv_value"]


@dataclass(frozen=True)
class Evaluation:
    r"""The cost terms at a point, and what the next gradient reuses from them.

    Attributes
    ----------
    haadf, poisson, tv : float
        :math:`\Psi_1`, :math:`\Psi_2` and :math:`TV` (unweighted).
    total : float
        :math:`\lambda_H\Psi_1 + \lambda_C\Psi_2 + \lambda_{TV} TV`.
    x_pow_m1 : array
        :math:`x^{\gamma-1}`.
    residual : array
        :math:`r = b_H - \sum_e w_e x_e^\gamma`.

    """

    haadf: float
    poisson: float
    tv: float
    total: float
    x_pow_m1: Any
    residual: Any


def tv_value(x: Any, xp: ModuleType) -> float:
    """Isotropic total variation, summed over all maps (Neumann boundary)."""
    gy, gx = gradient(x, xp)
    return float(xp.sum(xp.sqrt(gy * gy + gx * gx)))


def evaluate(
    x: Any,
    haadf: Any,
    counts: Any,
    weights: Any,
    *,
    gamma: float,
    eps: float,
    lambdas: tuple[float, float, float],
    xp: ModuleType,
) -> Evaluation:
    r"""Evaluate every cost term at ``x``.

    ``x**gamma`` is formed once as :math:`x^{\gamma-1} \cdot x` and kept for
    the gradient, because the power is the costliest operation here.
    """
    x_pow_m1 = x ** (gamma - 1.0)
    residual = haadf - haadf_model(x_pow_m1 * x, weights, xp)
    psi1 = 0.5 * float(xp.sum(residual * residual))
    psi2 = float(xp.sum(x - counts * xp.log(x + eps)))
    tv = tv_value(x, xp)
    lam_h, lam_c, lam_tv = lambdas
    return Evaluation(psi1, psi2, tv, lam_h * psi1 + lam_c * psi2 + lam_tv * tv, x_pow_m1, residual)


def smooth_gradient(
    x: Any,
    counts: Any,
    weights: Any,
    ev: Evaluation,
    *,
    gamma: float,
    eps: float,
    lam_h: float,
    lam_c: float,
    xp: ModuleType,
) -> Any:
    r"""Gradient of :math:`\lambda_H\Psi_1 + \lambda_C\Psi_2` at ``x``, reusing ``ev``."""
    g_haadf = (-gamma * lam_h) * weights * ev.x_pow_m1 * xp.expand_dims(ev.residual, axis=-3)
    return g_haadf + lam_c * (1.0 - counts / (x + eps))


def gradient_step(
    x: Any,
    counts: Any,
    weights: Any,
    ev: Evaluation,
    *,
    gamma: float,
    eps: float,
    lam_h: float,
    lam_c: float,
    eta: float,
    xp: ModuleType,
) -> Any:
    r"""Projected gradient step :math:`\max(x - \eta \nabla(\lambda_H\Psi_1 + \lambda_C\Psi_2), 0)`."""
    grad = smooth_gradient(x, counts, weights, ev, gamma=gamma, eps=eps, lam_h=lam_h, lam_c=lam_c, xp=xp)
    return xp.clip(x - eta * grad, min=0.0)
