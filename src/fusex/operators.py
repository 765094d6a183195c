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

import array_api_compat
import numpy as np

from ._xp import to_numpy

__all__ = ["background_basis", "binomial_smooth", "divergence", "fit_haadf", "gradient", "haadf_model", "haadf_weights"]


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


def background_basis(shape: tuple[int, int], modes: int) -> np.ndarray:
    r"""Smooth, zero-mean functions spanning the HAADF background :math:`B`: low cosine modes.

    .. math::

        \varphi_{kl}(i, j) = \cos\frac{\pi k (i + \tfrac12)}{H} \cos\frac{\pi l (j + \tfrac12)}{W},
        \qquad 0 \le k, l < \texttt{modes},\ (k, l) \ne (0, 0),

    the first terms of the discrete cosine transform (the Neumann-boundary
    eigenfunctions of the Laplacian), so :math:`B` varies over no less than
    about ``H / (modes - 1)`` pixels and cannot follow atomic columns or
    particles.  Each has zero sum, so the offset :math:`c` stays separate.

    Returns
    -------
    numpy.ndarray, shape (modes**2 - 1, H, W)
        float64; empty (0, H, W) for ``modes <= 1``.

    """
    rows, cols = (np.cos(np.pi * np.arange(modes)[:, None] * (np.arange(n) + 0.5) / n) for n in shape)
    functions = [np.outer(rows[k], cols[m]) for k in range(modes) for m in range(modes) if k or m]
    return np.stack(functions) if functions else np.zeros((0, *shape))


def binomial_smooth(u: Any, xp: ModuleType) -> Any:
    """Smooth the last two axes with the 3-tap binomial filter (1, 2, 1) / 4 along each, edges replicated."""
    for axis in (-2, -1):
        n = u.shape[axis]
        dev = array_api_compat.device(u)
        first = xp.take(u, xp.asarray([0, *range(n - 1)], device=dev), axis=axis)
        last = xp.take(u, xp.asarray([*range(1, n), n - 1], device=dev), axis=axis)
        u = 0.25 * first + 0.5 * u + 0.25 * last
    return u


def fit_haadf(haadf: Any, model: Any, mask: Any, basis: Any, *, gain: bool, xp: ModuleType) -> tuple[np.ndarray, Any]:
    r"""Least-squares gain :math:`a`, offset :math:`c` and smooth background :math:`B` of each item's HAADF image.

    Minimizes, for each item and the current element part :math:`M` of the model,

    .. math::

        \tfrac12 \sum_{px} m\, \bigl(b_H - c - B - a M\bigr)^2, \qquad B = \sum_k \beta_k \varphi_k ,

    over :math:`a`, :math:`c` and :math:`\beta` in closed form (normal
    equations of at most ``2 + K`` unknowns, solved on the host).  A gain that
    comes out :math:`\le 0` (the maps do not explain the image) is refused:
    :math:`a` is then 0 and :math:`c, \beta` fit the image alone, which turns
    the HAADF term off for that item (see `docs/theory.md`).

    Parameters
    ----------
    haadf, model : arrays (n, H, W)
        The (normalized) HAADF images :math:`b_H` and :math:`M = \sum_e w_e x_e^\gamma`.
    mask : array (n, H, W) or None
        The HAADF term's pixel mask :math:`m` (None: every pixel counts).
    basis : array (K, H, W)
        The background functions :math:`\varphi_k` (`background_basis`), on the device; K may be 0.
    gain : bool
        Fit :math:`a` and :math:`c` (True), or hold :math:`a = 1`, :math:`c = 0` and fit :math:`B` only.
    xp : namespace
        The array namespace of the inputs.

    Returns
    -------
    a : numpy.ndarray (n,)
        The gains, float64 on the host.
    background : array (n, H, W)
        :math:`c + B`, in the images' namespace and dtype.

    """
    n, h, w = haadf.shape
    smooth = [xp.ones_like(haadf[:, None, ...])] if gain else []
    if basis.shape[0]:
        smooth.append(xp.broadcast_to(basis[None, ...], (n, *basis.shape)))
    columns = [*smooth, model[:, None, ...]] if gain else smooth
    target = haadf if gain else haadf - model
    if not columns:
        return np.ones(n), xp.zeros_like(haadf)
    stacked = xp.concat(columns, axis=1)
    design = xp.reshape(stacked if mask is None else stacked * mask[:, None, ...], (n, -1, h * w))
    flat = xp.reshape(target if mask is None else target * mask, (n, h * w, 1))
    gram = to_numpy(xp.matmul(design, xp.matrix_transpose(design))).astype(np.float64)
    rhs = to_numpy(xp.matmul(design, flat))[..., 0].astype(np.float64)
    coef = np.stack([_solve(g, r) for g, r in zip(gram, rhs, strict=True)])
    a = np.ones(n)
    if gain:
        a = coef[:, -1].copy()
        for i in np.flatnonzero(~(a > 0)):
            coef[i, :-1] = _solve(gram[i, :-1, :-1], rhs[i, :-1])
            a[i] = 0.0
        coef = coef[:, :-1]
    beta = xp.asarray(coef.tolist(), dtype=haadf.dtype, device=array_api_compat.device(haadf))
    background = xp.sum(xp.reshape(beta, (n, -1, 1, 1)) * stacked[:, : coef.shape[1], ...], axis=1)
    return a, background


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Least-squares solution of the normal equations; ``lstsq`` so a degenerate column (a zero map) does no harm."""
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]
