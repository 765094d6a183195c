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

from ._xp import convert, to_numpy

__all__ = [
    "HaadfDesign",
    "background_basis",
    "background_factors",
    "binomial_smooth",
    "divergence",
    "fit_haadf",
    "gradient",
    "haadf_model",
    "haadf_weights",
]


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


def background_factors(shape: tuple[int, int], modes: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Return the row and column cosines whose products are the functions of `background_basis`.

    Row :math:`k` of the first array is :math:`\cos(\pi k (i + \tfrac12) / H)` over the ``H``
    rows, of the second the same over the ``W`` columns; row 0 of each is 1, so their
    product :math:`(0, 0)` is the constant of the offset :math:`c`.

    Returns
    -------
    rows, cols : numpy.ndarray, shapes (max(modes, 1), H) and (max(modes, 1), W)
        float64.

    """
    return tuple(np.cos(np.pi * np.arange(max(modes, 1))[:, None] * (np.arange(n) + 0.5) / n) for n in shape)


def background_basis(shape: tuple[int, int], modes: int) -> np.ndarray:
    r"""Smooth, zero-mean functions spanning the HAADF background :math:`B`: low cosine modes.

    .. math::

        \varphi_{kl}(i, j) = \cos\frac{\pi k (i + \tfrac12)}{H} \cos\frac{\pi l (j + \tfrac12)}{W},
        \qquad 0 \le k, l < \texttt{modes},\ (k, l) \ne (0, 0),

    the first terms of the discrete cosine transform (the Neumann-boundary
    eigenfunctions of the Laplacian), so :math:`B` varies over no less than
    about ``H / (modes - 1)`` pixels and cannot follow atomic columns or
    particles.  Each has zero sum, so the offset :math:`c` stays separate.
    They are products of the rows of `background_factors`, in the order
    :math:`(k, l)` = (0, 1), (0, 2), ..., (1, 0), ... (row-major, the constant left out).

    Returns
    -------
    numpy.ndarray, shape (modes**2 - 1, H, W)
        float64; empty (0, H, W) for ``modes <= 1``.

    """
    rows, cols = background_factors(shape, modes)
    n = rows.shape[0]
    functions = [np.outer(rows[k], cols[m]) for k in range(n) for m in range(n) if k or m]
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


def fit_haadf(haadf: Any, model: Any, mask: Any, modes: int, *, gain: bool, xp: ModuleType) -> tuple[np.ndarray, Any]:
    r"""Least-squares gain :math:`a`, offset :math:`c` and smooth background :math:`B` of each item's HAADF image.

    Minimizes, for each item and the current element part :math:`M` of the model,

    .. math::

        \tfrac12 \sum_{px} m\, \bigl(b_H - c - B - a M\bigr)^2, \qquad B = \sum_k \beta_k \varphi_k ,

    over :math:`a`, :math:`c` and :math:`\beta` in closed form (normal
    equations of at most ``2 + K`` unknowns, solved on the host).  A gain that
    comes out :math:`\le 0` (the maps do not explain the image), or a model
    the offset and background already span (zero maps), is refused:
    :math:`a` is then 0 and :math:`c, \beta` fit the image alone, which turns
    the HAADF term off for that item (see `docs/theory.md`).  A solver that
    refits often keeps a `HaadfDesign` instead, which does the part that does
    not depend on :math:`M` once.

    Parameters
    ----------
    haadf, model : arrays (n, H, W)
        The (normalized) HAADF images :math:`b_H` and :math:`M = \sum_e w_e x_e^\gamma`.
    mask : array (n, H, W) or None
        The HAADF term's pixel mask :math:`m` (None: every pixel counts).
    modes : int
        Cosine modes per axis of the background functions :math:`\varphi_k`
        (`background_basis`: :math:`K` = ``modes**2 - 1``; 0 or 1: none).
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
    return HaadfDesign(haadf, mask, modes, gain=gain, xp=xp).fit(model, np.arange(haadf.shape[0]))


class HaadfDesign:
    r"""The normal equations of `fit_haadf` without their model column, built once per solve.

    The columns :math:`1, \varphi_1 \dots \varphi_K` and the images do not
    change while the maps do, so their Gram matrix :math:`G` and right-hand side
    are kept; a fit at a new model :math:`M` needs only the inner products of
    :math:`M` with them, :math:`\lVert M \rVert^2` and :math:`\langle M, b_H \rangle`.
    The columns are products :math:`r_k(i)\, c_l(j)` of row and column cosines
    (`background_factors`; :math:`r_0 = c_0 = 1` is the offset's), so all the
    inner products with an image :math:`u` are the small matrix :math:`R\, u\, C^T`,
    and a background is :math:`R^T \beta\, C`: a pass over the image each,
    however many columns, and no column is ever stored as an image.
    The items of a fit are rows of the arrays given here (``items``), so a
    solver can refit the items still iterating.
    """

    def __init__(self, haadf: Any, mask: Any, modes: int, *, gain: bool, xp: ModuleType) -> None:
        n, h, w = haadf.shape
        self.gain, self.xp, self.dtype = gain, xp, haadf.dtype
        self.device = array_api_compat.device(haadf)
        rows, cols = background_factors((h, w), modes)
        m = rows.shape[0]
        # Columns in the order of `background_basis`, the offset's (k, l) = (0, 0) first where it is fitted.
        self.keep = np.array([k * m + j for k in range(m) for j in range(m) if (k or j) or gain], dtype=np.intp)
        self.modes = m
        self.mask = mask
        self.haadf = haadf
        if not self.keep.size:
            return
        self.rows = xp.astype(convert(rows, xp, self.device), self.dtype)  # (m, H)
        self.cols_t = xp.astype(convert(cols.T.copy(), xp, self.device), self.dtype)  # (W, m)
        # sum_ij m^2 r_k r_k' c_l c_l': pairs of rows, m^2, pairs of columns, item by item (m^4 products each).
        # Without a mask the same products of a plane of ones, so an item gets the Gram matrix it gets
        # under a mask of ones (a batch with masks gives its unmasked items one).
        pairs_r = convert((rows[:, None, :] * rows[None, :, :]).reshape(m * m, h), xp, self.device)
        pairs_c = convert((cols[:, None, :] * cols[None, :, :]).reshape(m * m, w).T.copy(), xp, self.device)
        pairs_r, pairs_c = xp.astype(pairs_r, self.dtype), xp.astype(pairs_c, self.dtype)
        keep = np.ix_(self.keep, self.keep)

        def gram(weights: Any) -> np.ndarray:
            four = np.asarray(to_numpy(xp.matmul(xp.matmul(pairs_r, weights), pairs_c)), dtype=np.float64)
            return four.reshape(m, m, m, m).transpose(0, 2, 1, 3).reshape(m * m, m * m)[keep]

        if mask is None:
            self.gram = np.broadcast_to(
                gram(xp.ones((h, w), dtype=self.dtype, device=self.device)), (n, len(self.keep), len(self.keep))
            )
            self.rhs = self._products(haadf)[:, self.keep]
        else:
            squared = mask * mask
            self.gram = np.stack([gram(squared[i, ...]) for i in range(n)])
            self.rhs = self._products(squared * haadf)[:, self.keep]
        # The fixed columns' part of every fit: G^+ and G^+ rhs once, so that a fit with the model's column
        # bordering G is a few products (its Schur complement) for all items at once, not a lstsq per item.
        self.pinv = _pinv(self.gram)
        self.base = _apply(self.pinv, self.rhs)
        # the model's products come in the images' dtype: a complement below their rounding is no information
        self.rounding = max(1e-12, 64.0 * float(xp.finfo(self.dtype).eps))

    def _products(self, images: Any) -> np.ndarray:
        r"""Return the products :math:`\langle u, r_k c_l \rangle` of each image ``(n, H, W)``: ``(n, m*m)``, host."""
        xp = self.xp
        products = xp.matmul(xp.matmul(self.rows, images), self.cols_t)  # (n, m, m), item by item
        return np.asarray(to_numpy(products), dtype=np.float64).reshape(images.shape[0], -1)

    def fit(
        self, model: Any, items: np.ndarray, moments: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, Any]:
        r"""Return the gains ``(n,)`` and backgrounds :math:`c + B` of rows ``items`` at ``model`` ``(n, H, W)``.

        ``moments``, when given, are :math:`\sum m^2 M^2` and :math:`\sum m^2 M b_H` of each item
        (host, float64), computed with the model by an engine's own pass; otherwise they are computed here.
        """
        xp = self.xp
        n = len(items)
        if not self.keep.size:
            return np.ones(n), xp.zeros_like(model)
        rows = xp.asarray(np.asarray(items).tolist(), device=self.device)
        m = None if self.mask is None else xp.take(self.mask, rows, axis=0)
        if m is not None:
            # <m M, m phi_k>: the columns under the mask squared, as in the Gram matrix
            cross = self._products(model * m * m)[:, self.keep]
        else:
            cross = self._products(model)[:, self.keep]
        pinv, base = self.pinv[items], self.base[items]
        if self.gain:
            mm, mb = self._moments(model, rows, m) if moments is None else moments
            coef, a = _bordered(pinv, base, cross, mm, mb, self.rounding)
        else:
            a = np.ones(n)
            coef = base - _apply(pinv, cross)
        beta = np.zeros((n, self.modes * self.modes))
        beta[:, self.keep] = coef
        beta = xp.reshape(xp.asarray(beta.ravel().tolist(), dtype=self.dtype, device=self.device), (n, self.modes, -1))
        # R^T beta C, item by item
        background = xp.matmul(xp.matmul(xp.matrix_transpose(self.rows), beta), xp.matrix_transpose(self.cols_t))
        return a, background

    def _moments(self, model: Any, rows: Any, m: Any) -> tuple[np.ndarray, np.ndarray]:
        r""":math:`\sum m^2 M^2` and :math:`\sum m^2 M b_H` of each item (mask ``m``), on the host in float64."""
        xp = self.xp
        image = xp.take(self.haadf, rows, axis=0)
        if m is not None:
            model, image = model * m, image * m
        mm = np.asarray(to_numpy(xp.sum(model * model, axis=(-2, -1))), dtype=np.float64)
        mb = np.asarray(to_numpy(xp.sum(model * image, axis=(-2, -1))), dtype=np.float64)
        return mm, mb


def _pinv(gram: np.ndarray) -> np.ndarray:
    """Return the pseudo-inverses of the fixed columns' Gram matrices ``(n, c, c)``.

    NaN for an item whose matrix is not finite.  ``pinv`` (an eigendecomposition cut at machine
    precision, as ``lstsq`` cuts) so that a degenerate column (a mask that
    hides a cosine's support) does no harm.
    """
    finite = np.all(np.isfinite(gram), axis=(-2, -1))
    out = np.full(gram.shape, np.nan)
    if np.any(finite):
        out[finite] = np.linalg.pinv(gram[finite], hermitian=True)
    return out


def _apply(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Return ``matrices[i] @ vectors[i]`` for every item.

    By products and row sums, so an item's result never depends on the others: a batch fits each item as it
    fits alone.
    """
    return np.sum(matrices * vectors[:, None, :], axis=-1)


def _bordered(
    pinv: np.ndarray, base: np.ndarray, cross: np.ndarray, mm: np.ndarray, mb: np.ndarray, rounding: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""Solve the normal equations with the model's column bordering the fixed ones, every item at once.

    With the fixed columns' Gram matrix :math:`G` (pseudo-inverse ``pinv``), their right-hand side
    :math:`r` (``base`` :math:`= G^+ r`), the model's products with them :math:`q` (``cross``), with
    itself :math:`\lVert M \rVert^2` (``mm``) and with the image (``mb``), the least-squares solution is

    .. math::

        a = \frac{\langle M, b_H\rangle - q^T G^+ r}{\lVert M\rVert^2 - q^T G^+ q}, \qquad
        \beta = G^+ (r - a q),

    by the Schur complement of :math:`G`.  A gain that comes out :math:`\le 0` (the maps do not explain
    the image), or a model within the fixed columns' span (a complement below ``rounding`` times
    :math:`\lVert M\rVert^2`, the rounding of products in the images' dtype: zero maps), is refused:
    :math:`a = 0`, :math:`\beta = G^+ r`.  A NaN gain (a model that overflowed) stays NaN, for the
    solver to report.

    Returns
    -------
    coef : numpy.ndarray (n, c)
        :math:`\beta`, the fixed columns' coefficients.
    a : numpy.ndarray (n,)
        The gains.

    """
    g_q = _apply(pinv, cross)
    complement = mm - np.sum(cross * g_q, axis=-1)
    numerator = mb - np.sum(cross * base, axis=-1)
    resolved = complement > rounding * np.maximum(mm, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(resolved, numerator / np.where(resolved, complement, 1.0), 0.0)
    bad = ~(np.isfinite(mm) & np.isfinite(mb) & np.all(np.isfinite(cross), axis=-1))
    a = np.where(bad, np.nan, np.where(a <= 0, 0.0, a))
    coef = base - a[:, None] * g_q
    coef = np.where(bad[:, None], np.nan, coef)
    return coef, a
