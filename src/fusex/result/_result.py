"""The outcome of a fusion: maps, convergence history and provenance; the error of a diverged fusion."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .._per_item import per_item
from ..errors import FusexError
from ..params import FusionParams

__all__ = ["FusionDivergedError", "FusionResult"]


class FusionDivergedError(FusexError, RuntimeError):
    """The solver's iterates blew up or the objective kept rising.

    Attributes
    ----------
    iteration : int
        The iteration at which divergence was detected.
    step : float
        The step size in use at that iteration.
    history : pandas.DataFrame
        The cost terms up to that iteration, to see how it went wrong.

    """

    def __init__(self, message: str, *, iteration: int, step: float, history: pd.DataFrame) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.step = step
        self.history = history


@dataclass(frozen=True)
class FusionResult:
    r"""Result of `fusex.fuse`.

    For a batch of fusions (inputs with leading batch axes, or per-item
    parameters), ``maps``, ``haadf_model`` and ``haadf_background`` carry
    the batch axes in front, ``n_iter``, ``converged`` and ``stop_reason``
    are NumPy arrays of the batch shape, and ``history`` is indexed by
    ``(item, iteration)`` with ``item`` the flat (C-order) index into the batch.

    Attributes
    ----------
    maps : array, shape (..., E, H, W)
        The fused maps, in the normalized units the solver worked in, in the
        caller's array library and on the caller's device.
    haadf_model : array, shape (..., H, W)
        The HAADF image the fused maps predict, :math:`a \sum_e w_e x_e^\gamma`,
        in the normalized HAADF image's units: with ``haadf_model="fitted"``
        the fitted gain :math:`a` is in it, the offset and smooth background
        are not (:math:`a = 1` with ``"minmax"``); they are ``haadf_background``.
    haadf_background : array, shape (..., H, W)
        What the HAADF fit attributed to signal no map holds (support film,
        thickness, unlisted elements): the offset and smooth background
        :math:`c + B = c + \sum_k \beta_k \varphi_k` (`fusex.operators.background_basis`)
        of each item, from the fit at its last iterate (with ``refit_every=1``,
        the default: the solver refits after every step; otherwise the last
        refit's, made at the maps before a later step), in the units, library
        and device of ``haadf_model``.  So ``haadf_model + haadf_background`` is
        the whole model :math:`c + B + a M(x)` the HAADF term compares with
        the normalized image :math:`b_H`.  ``haadf_model="fitted"`` fits
        :math:`c` (and :math:`B` with ``background="smooth"``); ``"minmax"``
        with ``background="smooth"`` fits :math:`B` only (:math:`c = 0`);
        ``"minmax"`` with ``background=None`` (`FusionParams.published`)
        fits nothing, and this is zeros.  Both are the fit's, of the solver's
        maps before ``rescale_totals`` (default) scales each map to its
        counts; the rescaled ``maps`` are not refitted.
    history : pandas.DataFrame
        One row per iteration (row 0 is the starting point) with columns
        ``haadf``, ``poisson``, ``tv`` (the unweighted terms), ``total`` (the
        weighted objective), ``step`` (the step size used), ``backtracks``
        and ``tv_iterations`` (the prior's inner iterations per prox: ``n_tv``,
        or ``n_dtv``, doubled where the objective climbed; 0 at the start).
    params : FusionParams
        The parameters, with ``lambda_haadf`` resolved to its value.
    n_iter : int or numpy.ndarray
        Iterations run.
    converged : bool or numpy.ndarray
        True where the relative fixed-point residual fell below ``params.tol``.
    stop_reason : str or numpy.ndarray
        ``"tol"``, ``"n_iter"``, ``"callback"``, or ``"diverged"`` for items
        stopped by ``fuse(..., on_divergence="mark")``.
    elements : tuple of str
        Labels of the maps.
    z : tuple of int or None
        Atomic numbers used.
    weights : tuple of float or numpy.ndarray
        The HAADF weights :math:`w_e` used; an array ``(..., E)`` when they
        vary over the batch (per-item ``gamma``).
    scale : dict
        The normalization applied: ``(offset, range)`` for ``"haadf"`` and for
        each of ``"maps"``; see `to_input_units`.
    engine : str
        The compute engine that ran: ``"generic"``, ``"numba"``, ``"cupy"`` or
        ``"cupy-kernels-on-torch"``.
    saturated : int or numpy.ndarray
        Number of saturated HAADF pixels left out of the HAADF term (see
        ``fuse(..., saturated=...)``); for a batch, one count per item, an
        integer array of the batch shape.
    sources : tuple of str or None
        What each map is, set by `fusex.tune` (``fuse(params="auto")``):
        ``"fusion"``, or ``"raw"`` / ``"gaussian sigma=..."`` for an element
        whose fusion did not beat that simple treatment of its own counts on
        the held-out score, which then stands in its place in ``maps`` (in the
        same normalized units; ``haadf_model`` and ``haadf_background`` are
        still the fusion's).  None for a plain `fusex.fuse`: every map is
        the fusion's.
    """

    maps: Any
    haadf_model: Any
    haadf_background: Any
    history: pd.DataFrame
    params: FusionParams
    n_iter: Any
    converged: Any
    stop_reason: Any
    elements: tuple[str, ...]
    z: tuple[int, ...] | None
    weights: Any
    scale: dict[str, Any] = field(repr=False)
    engine: str = "generic"
    saturated: Any = 0
    sources: tuple[str, ...] | None = None

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch axes in front of ``(E, H, W)``; ``()`` for one fusion."""
        return tuple(self.maps.shape[:-3])

    def item(self, *index: int) -> FusionResult:
        """Return the result of one fusion of a batch, as if it had been fused alone.

        ``res.item(3)`` for a batch of shape ``(n,)``, ``res.item(1, 2)`` for ``(m, n)``.
        """
        shape = self.batch_shape
        if len(index) != len(shape):
            raise ValueError(f"give one index per batch axis: the batch shape is {shape}, got index {index}")
        index = tuple(int(i) + n if int(i) < 0 else int(i) for i, n in zip(index, shape, strict=True))
        flat = int(np.ravel_multi_index(index, shape))  # raises ValueError for an index out of range
        params = self.params.at(index, shape)
        weights = self.weights
        if isinstance(weights, np.ndarray):
            weights = tuple(float(w) for w in weights[index])
        scale = {
            "haadf": tuple(float(v) for v in self.scale["haadf"][index]),
            "maps": tuple(tuple(float(v) for v in row) for row in self.scale["maps"][index]),
        }
        return replace(
            self,
            maps=self.maps[(*index, ...)],
            haadf_model=self.haadf_model[(*index, ...)],
            haadf_background=self.haadf_background[(*index, ...)],
            history=self.history.loc[flat],
            params=params,
            n_iter=int(self.n_iter[index]),
            converged=bool(self.converged[index]),
            stop_reason=str(self.stop_reason[index]),
            weights=weights,
            scale=scale,
            saturated=int(self.saturated[index]),
        )

    def to_input_units(self) -> Any:
        """Return the fused maps mapped back to the units of the input maps.

        Undoes the normalization, ``x * range + offset``, per map and batch
        item (a new array; ``maps`` is unchanged): ``offset`` is 0 and
        ``range`` the map's maximum for ``normalize="scale"``, the map's
        minimum and range for ``"minmax"``.  With ``normalize="none"`` this is
        a copy of ``maps``.
        """
        scale = np.asarray(self.scale["maps"], dtype=np.float64)
        return self.maps * per_item(scale[..., 1], self.maps) + per_item(scale[..., 0], self.maps)

    def summary(self) -> str:
        """Return a few lines describing the run, for logs and the command line."""
        size = f"{len(self.elements)} maps ({', '.join(self.elements)}) of {tuple(self.maps.shape[-2:])} pixels"
        if not self.batch_shape:
            first, last = self.history.iloc[0], self.history.iloc[-1]
            lines = [
                f"fused {size}",
                f"{self.n_iter} iterations on the {self.engine} engine, stopped by {self.stop_reason}"
                + (" (converged)" if self.converged else ""),
                f"objective {first['total']:.6g} -> {last['total']:.6g}",
            ]
            return "\n".join(lines)
        reasons, counts = np.unique(np.asarray(self.stop_reason), return_counts=True)
        stops = ", ".join(f"{n} by {r}" for r, n in zip(reasons, counts))
        n_iter = np.asarray(self.n_iter)
        return "\n".join(
            [
                f"fused a batch {self.batch_shape} of {size}",
                f"{n_iter.min()}-{n_iter.max()} iterations on the {self.engine} engine; stopped {stops}",
            ]
        )
