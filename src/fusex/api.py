"""Public entry points: `fuse` and `tv_denoise`."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any

import xarray as xr

from ._eager import RunOptions, fuse_arrays
from ._xp import convert, namespace_of, resolve_backend
from .backends import select_engine
from .backends.registry import resolve_request
from .inputs import as_float, check_finite
from .labeled import fuse_labeled, is_labeled, is_lazy, unwrap
from .params import FusionParams
from .result import FusionResult
from .solver import IterationState
from .tune import tune

__all__ = ["fuse", "tv_denoise"]


def fuse(
    haadf: Any,
    maps: Any = None,
    *,
    elements: Sequence[str] | None = None,
    z: Sequence[int] | None = None,
    params: FusionParams | str | None = None,
    backend: str | None = None,
    device: Any = None,
    callback: Callable[[int, IterationState], Any] | None = None,
    progress: bool = False,
    on_divergence: str = "raise",
    batch_size: int | None = None,
    saturated: Any = "auto",
    negative: str = "raise",
    engine: str = "auto",
) -> FusionResult | xr.Dataset:
    r"""Fuse a HAADF image with elemental maps.

    Solves

    .. math::

        \min_{x \ge 0}\ \lambda_H \tfrac12 \lVert b_H - \textstyle\sum_e w_e x_e^\gamma \rVert^2
        + \lambda_C \sum_e \sum_{px} \bigl(x_e - b_e \log(x_e + \epsilon)\bigr)
        + \lambda_{TV} \sum_e \lVert x_e \rVert_{TV}

    by proximal gradient descent (see `FusionParams` for every knob).

    Parameters
    ----------
    haadf : array (H, W) or (..., H, W), xarray.DataArray or xarray.Dataset
        The HAADF image (NumPy, CuPy or torch; integers are converted to
        float32), or one Dataset holding ``haadf`` and ``maps`` (or one
        variable per element).  Leading axes are batch axes: a stack of
        acquisitions is fused in one vectorized solve.
    maps : array (E, H, W) or (..., E, H, W), sequence of maps, mapping symbol -> map, or DataArray
        The elemental maps (counts, >= 0), in the same library and on the same
        device as ``haadf``, with the same batch axes.  A mapping's keys, or a
        DataArray's ``element`` coordinate, serve as ``elements``.
    elements : sequence of str, optional
        Element symbols, one per map and each once (``"Fe"`` or ``"Fe_Ka"``);
        atomic numbers are looked up from them.  With a mapping or a labeled
        ``element`` coordinate, ``elements`` must hold the same names: in
        another order it reorders the maps (taken by name), and any other
        difference raises `ValueError` naming both lists.
    z : sequence of int, optional
        Atomic numbers, one per map; take precedence over ``elements`` for
        the HAADF weights.
    params : FusionParams or "auto", optional
        Solver parameters; `FusionParams()` by default, and
        `FusionParams.published` for the published method's settings.
        ``"auto"`` chooses the prior and the weights of each element from the
        data (`fusex.tune` with its defaults and this call's ``saturated`` and
        ``negative``: count splitting for raw counts, a J-invariant pixel
        hold-out for other maps) and returns the fusion with them, with a
        Gaussian blur or the raw map in place of an element's fused map where
        fusion does not beat it (``FusionResult.sources`` says which).  Array
        values of ``gamma``, ``lambda_*`` or ``eps`` broadcast against the batch
        axes, one fusion per item.
    backend : str or None
        One of ``"numpy"``, ``"numba"``, ``"torch"``, ``"cupy"``,
        ``"array_api_strict"``; default None.
        ``None`` uses the inputs' library, with the
        compiled numba kernels for NumPy input when numba is installed;
        ``"numpy"`` forces the generic NumPy code.  Results come back in the
        inputs' library and on their device either way.
    device : str or device, optional
        Device to compute on (``"cpu"``, ``"cuda"``, ``"cuda:1"``); ``None``
        keeps the inputs' device.
    callback : callable, optional
        ``callback(iteration, state)`` after every iteration, with an
        `IterationState` whose arrays are read-only NumPy views (NumPy and
        numba backends) or copies (torch, CuPy, array-api-strict), so the
        callback cannot change the fusion.  Returning ``True``, ``np.True_``
        or any non-zero number (or a 0-d array holding one) stops the solver
        (for a batch split into minibatches, the current minibatch);
        ``None``, ``False`` or ``0`` go on; any other value raises
        `TypeError`.
    progress : bool
        Show a tqdm progress bar.
    on_divergence : {"raise", "mark"}
        ``"raise"`` (default) raises `FusionDivergedError` when an item
        diverges; ``"mark"`` stops only that item, with
        ``stop_reason="diverged"``, and lets the rest of a batch finish.
    batch_size : int, optional
        Items of a batch solved at once.  None (default) takes as many as fit
        in the compute device's free memory (see `fusex.memory`); the rest
        follow in further minibatches, with identical results.  A size that
        does not fit raises `InsufficientMemoryError`.
    saturated : "auto", None, number or boolean array (..., H, W)
        HAADF pixels to leave out of the HAADF term (a per-pixel mask in
        :math:`\Psi_1`, and out of its min-max normalization), with a warning
        giving their count.  ``"auto"`` (default) takes the pixels of an
        integer image at its dtype's largest value (65535 for uint16, where
        the detector clipped) when there are at least two; a number takes
        the pixels at or above it (the detector's maximum); a boolean array
        marks them (True = left out); None uses every pixel.  The count is
        ``res.saturated`` (the ``saturated_pixels`` attr of a labeled result).
    negative : {"raise", "clip"}
        Negative map values (from background subtraction) are refused
        (``"raise"``, default, with advice) or set to 0 with a warning
        (``"clip"``).
    engine : str
        The compute engine: ``"auto"`` (default) chooses one for the backend
        and device; see `fusex.backends` for the others and when they apply.

    Returns
    -------
    FusionResult or xarray.Dataset
        Fused maps, HAADF model, per-iteration history and provenance; for
        xarray input, a Dataset with the inputs' coordinates (see
        `fusex.labeled`).

    Raises
    ------
    ValueError, TypeError
        For inconsistent or invalid inputs; the message names the argument.
    FusionDivergedError
        If the iterates become non-finite or the objective keeps rising.
    fusex.errors.InsufficientMemoryError
        Before the solver allocates its working memory, if even one item (or
        ``batch_size`` items) needs more than the compute device has
        available; the message says how much and what to change.

    Examples
    --------
    >>> import fusex
    >>> sample = fusex.datasets.phantom(shape=(64, 64), seed=0)
    >>> res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements)
    >>> res.maps.shape
    (3, 64, 64)

    """
    run = RunOptions(
        backend=backend,
        engine=engine,
        device=device,
        batch_size=batch_size,
        on_divergence=on_divergence,
        progress=progress,
        callback=callback,
    )
    data = {"elements": elements, "z": z, "saturated": saturated, "negative": negative}
    if isinstance(params, str):
        if params != "auto":
            raise ValueError(f"`params` must be a FusionParams, None or 'auto', got {params!r}")
        if is_labeled(haadf, maps) and is_lazy(*unwrap(haadf, maps, elements)[:2]):
            raise ValueError(
                "params='auto' needs the data in memory: tune on one frame (fusex.tune), then fuse the series"
            )
        return tune(haadf, maps, **data, **run.keywords()).result
    if is_labeled(haadf, maps):
        return fuse_labeled(haadf, maps, params=params, run=run, **data)
    return fuse_arrays(haadf, maps, params=params, run=run, **data)


def tv_denoise(
    x: Any,
    weight: float,
    n_iter: int = 50,
    *,
    method: str = "fgp",
    nonneg: bool = False,
    backend: str | None = None,
    device: Any = None,
) -> Any:
    r"""Total-variation denoising, the proximal operator of the fusion's TV term.

    Solves, independently for each map on the last two axes,

    .. math::

        \min_u \tfrac12 \lVert u - x \rVert_2^2 + w \sum_{px} \lVert (\nabla u)_{px} \rVert_2
        \quad (\text{and } u \ge 0 \text{ if } \texttt{nonneg})

    with isotropic forward differences and Neumann boundaries, by dual
    projection (Beck & Teboulle 2009).

    Parameters
    ----------
    x : array, shape (H, W) or (..., H, W)
        One map or a stack of maps (NumPy, CuPy or torch).
    weight : float
        Regularization weight :math:`w >= 0`, in the units of ``x``.
    n_iter : int
        Dual iterations.  Default 50.
    method : {"fgp", "gp"}
        With FISTA momentum (``"fgp"``, default) or without (``"gp"``).
    nonneg : bool
        Constrain the result to be non-negative.
    backend, device :
        As in `fuse`; the result comes back in ``x``'s library and device.

    Returns
    -------
    array
        The denoised maps, shaped like ``x``, a new array.

    """
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight < math.inf:
        raise ValueError(f"`weight` must be a finite number >= 0, got {weight!r}")
    try:
        n_iter = -1 if isinstance(n_iter, bool) else operator.index(n_iter)
    except TypeError:
        n_iter = -1
    if n_iter < 0:
        raise ValueError(f"`n_iter` must be an integer >= 0, got {n_iter!r}")
    if method not in ("fgp", "gp"):
        raise ValueError(f"`method` must be 'fgp' or 'gp', got {method!r}")
    input_xp, input_device = namespace_of(x=x)
    if x.ndim < 2 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"`x` must have shape (..., H, W) with H, W >= 2, got {tuple(x.shape)}")
    xp, dev = resolve_backend(backend, device, input_xp, input_device)
    f = as_float(convert(x, xp, dev), "x", xp)
    check_finite(f, "x", xp)
    prox = select_engine(xp, dev, resolve_request(backend)[1]).tv_prox
    out = prox(f, float(weight), n_iter, method=method, nonneg=nonneg, xp=xp)
    result = convert(out, input_xp, input_device)
    if input_xp.isdtype(x.dtype, "real floating") and result.dtype != x.dtype:
        result = input_xp.astype(result, x.dtype)  # half precision was computed in float32
    return result
