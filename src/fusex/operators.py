r"""Linear and nonlinear operators of the fusion model.

All functions work on the last axes of their inputs, so that leading axes
(elements, batch items) pass through, and take the array namespace ``xp``
explicitly.

Finite differences use Neumann boundaries: the forward difference across the
last row (column) is zero.  `divergence` is the exact negative adjoint of
`gradient`, :math:`\langle \nabla u, p \rangle = -\langle u, \operatorname{div} p \rangle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["divergence", "gradient", "haadf_model", "haadf_weights"]


def gradient(u: Any, xp: ModuleType) -> tuple[Any, Any]:
    r"""Forward differences along the last two axes (Neumann boundary).

    .. math::

        (\nabla_y u)_{i,j} = u_{i+1,j} - u_{i,j} \ (i < H-1), \quad 0 \ (i = H-1)

    and likewise along columns.

    Returns
    -------
    gy, gx : arrays shaped like ``u``

    """
    zero_row = xp.zeros_like(u[..., :1, :])
    zero_col = xp.zeros_like(u[..., :, :1])
    gy = xp.concat([u[..., 1:, :] - u[..., :-1, :], zero_row], axis=-2)
    gx = xp.concat([u[..., :, 1:] - u[..., :, :-1], zero_col], axis=-1)
    return gy, gx


def divergence(py: Any, px: Any, xp: ModuleType) -> Any:
    r"""Backward-difference divergence, the negative adjoint of `gradient`.

    .. math::

        (\operatorname{div} p)_{i} = p_{i}[i < H-1] - p_{i-1}[i > 0]

    along each of the last two axes; the last row of ``py`` and last column
    of ``px`` are ignored, as `gradient` never produces them.
    """
    dy = xp.concat([py[..., :1, :], py[..., 1:-1, :] - py[..., :-2, :], -py[..., -2:-1, :]], axis=-2)
    dx = xp.concat([px[..., :, :1], px[..., :, 1:-1] - px[..., :, :-2], -px[..., :, -2:-1]], axis=-1)
    return dy + dx


def haadf_weights(
    scheme: str | Sequence[float], z: Sequence[int] | None, gamma: float, n_elements: int
) -> tuple[float, ...]:
    r"""Per-element weights :math:`w_e` of the HAADF model.

    Parameters
    ----------
    scheme : str or sequence of float
        ``"none"`` (1), ``"z_mean"`` (:math:`Z_e/\overline{Z}`), ``"z_sum"``
        (:math:`Z_e/\sum Z`), ``"zgamma_mean"`` (:math:`Z_e^\gamma/\overline{Z^\gamma}`),
        ``"zgamma_sum"`` (:math:`Z_e^\gamma/\sum Z^\gamma`), or explicit values.
    z : sequence of int or None
        Atomic numbers, needed by every scheme but ``"none"``.
    gamma : float
        Z-contrast exponent.
    n_elements : int
        Number of elements ``E``.

    """
    if not isinstance(scheme, str):
        weights = tuple(float(w) for w in scheme)
        if len(weights) != n_elements:
            raise ValueError(
                f"FusionParams.haadf_weights has {len(weights)} values but there are {n_elements} maps; "
                "give one per map"
            )
        return weights
    if scheme == "none":
        return (1.0,) * n_elements
    if z is None:
        raise ValueError(
            f"haadf_weights={scheme!r} needs atomic numbers: pass `elements=` (symbols) or `z=`, "
            "or choose haadf_weights='none'"
        )
    base = [float(zi) ** (gamma if scheme.startswith("zgamma") else 1.0) for zi in z]
    norm = sum(base) / (len(base) if scheme.endswith("_mean") else 1.0)
    return tuple(b / norm for b in base)


def haadf_model(x_pow: Any, weights: Any, xp: ModuleType) -> Any:
    r"""HAADF forward model :math:`\sum_e w_e x_e^\gamma` from precomputed :math:`x^\gamma`.

    Parameters
    ----------
    x_pow : array, shape (..., E, H, W)
        The maps raised to ``gamma``.
    weights : array, shape (E, 1, 1)
        The weights :math:`w_e`, broadcastable against ``x_pow``.
    xp : namespace
        The array namespace of the inputs.

    """
    return xp.sum(weights * x_pow, axis=-3)
