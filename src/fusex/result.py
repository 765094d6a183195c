"""The outcome of a fusion: maps, convergence history and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import pandas as pd

from .params import FusionParams

__all__ = ["FusionDivergedError", "FusionResult"]


class FusionDivergedError(RuntimeError):
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

    Attributes
    ----------
    maps : array, shape (E, H, W)
        The fused maps, in the normalized units the solver worked in, in the
        caller's array library and on the caller's device.
    haadf_model : array, shape (H, W)
        The HAADF image the fused maps predict, :math:`\sum_e w_e x_e^\gamma`.
    history : pandas.DataFrame
        One row per iteration (row 0 is the starting point) with columns
        ``haadf``, ``poisson``, ``tv`` (the unweighted terms), ``total`` (the
        weighted objective), ``step`` (the step size used) and
        ``backtracks``.
    params : FusionParams
        The parameters, with ``lambda_haadf`` resolved to its value.
    n_iter : int
        Iterations run.
    converged : bool
        True when the relative change of the objective fell below ``params.tol``.
    stop_reason : str
        ``"tol"``, ``"n_iter"`` or ``"callback"``.
    elements : tuple of str
        Labels of the maps.
    z : tuple of int or None
        Atomic numbers used.
    weights : tuple of float
        The HAADF weights :math:`w_e` used.
    scale : dict
        The normalization applied: ``(offset, range)`` for ``"haadf"`` and for
        each of ``"maps"``; see `to_input_units`.
    engine : str
        The compute engine that ran: ``"generic"``, ``"numba"``, ``"cupy"`` or
        ``"cupy-kernels-on-torch"``.
    """

    maps: Any
    haadf_model: Any
    history: pd.DataFrame
    params: FusionParams
    n_iter: int
    converged: bool
    stop_reason: str
    elements: tuple[str, ...]
    z: tuple[int, ...] | None
    weights: tuple[float, ...]
    scale: dict[str, Any] = field(repr=False)
    engine: str = "generic"

    def to_input_units(self) -> Any:
        """Return the fused maps mapped back to the units of the input maps.

        Undoes the min-max normalization, ``x * range + offset``, per map (a
        new array; ``maps`` is unchanged).  With ``normalize="none"`` this is a
        copy of ``maps``.
        """
        rows = [self.maps[i, ...] * span + offset for i, (offset, span) in enumerate(self.scale["maps"])]
        return array_api_compat.array_namespace(self.maps).stack(rows)

    def summary(self) -> str:
        """Return a few lines describing the run, for logs and the command line."""
        first, last = self.history.iloc[0], self.history.iloc[-1]
        lines = [
            f"fused {len(self.elements)} maps ({', '.join(self.elements)}) of {tuple(self.maps.shape[-2:])} pixels",
            f"{self.n_iter} iterations on the {self.engine} engine, stopped by {self.stop_reason}"
            + (" (converged)" if self.converged else ""),
            f"objective {first['total']:.6g} -> {last['total']:.6g}",
        ]
        return "\n".join(lines)
