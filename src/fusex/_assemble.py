"""Collecting finished items of a batched solve into one `FusionResult`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._batch import History, Live, take_rows
from ._xp import convert
from .backends import Engine
from .inputs import FusionProblem
from .operators import haadf_model
from .params import FusionParams
from .result import FusionResult

__all__ = ["Outcome", "assemble"]


class Outcome:
    """Maps, HAADF models and stop reasons of the items as they finish."""

    def __init__(self, n_items: int) -> None:
        self.n_iter = np.zeros(n_items, dtype=np.int64)
        self.reason = np.full(n_items, "", dtype=object)
        self._pieces: list[tuple[np.ndarray, Any, Any]] = []

    def add(self, finished: Live, reasons: np.ndarray, iteration: int, xp: Any) -> None:
        """Record finished items (their live state at the iteration they stopped)."""
        self.n_iter[finished.items] = iteration
        self.reason[finished.items] = reasons
        model = haadf_model(finished.ev.x_pow_m1 * finished.x, finished.weights, xp)
        self._pieces.append((finished.items, finished.x, model))

    def arrays(self, xp: Any) -> tuple[Any, Any]:
        """All items' maps ``(B, E, H, W)`` and HAADF models ``(B, H, W)``, in item order."""
        if len(self._pieces) == 1:
            items, maps, models = self._pieces[0]
        else:
            items = np.concatenate([p[0] for p in self._pieces])
            maps = xp.concat([p[1] for p in self._pieces], axis=0)
            models = xp.concat([p[2] for p in self._pieces], axis=0)
        order = np.argsort(items, kind="stable")
        return take_rows(maps, order, xp), take_rows(models, order, xp)


def assemble(
    problem: FusionProblem,
    params: FusionParams,
    engine: Engine,
    outcome: Outcome,
    history: History,
    values: dict[str, np.ndarray],
    weight_rows: list[tuple[float, ...]],
) -> FusionResult:
    """Build the caller-facing result: arrays back in the caller's library, shaped like the batch."""
    xp, batch = problem.xp, problem.batch_shape
    maps, models = outcome.arrays(xp)
    maps = xp.reshape(maps, (*batch, *maps.shape[1:]))
    models = xp.reshape(models, (*batch, *models.shape[1:]))
    back = problem.input_xp, problem.input_device
    lam_h = values["lambda_haadf"]
    if params.lambda_haadf is None:
        resolved = params.replace(lambda_haadf=float(lam_h[0]))
    else:
        resolved = params
    weights: Any = weight_rows[0]
    if any(row != weights for row in weight_rows):
        weights = np.asarray(weight_rows).reshape(*batch, -1)
    reason = outcome.reason.reshape(batch).astype(str)
    n_iter = outcome.n_iter.reshape(batch)
    if not batch:
        reason, n_iter = str(reason), int(n_iter)
    converged = np.asarray(reason == "tol") if batch else reason == "tol"
    return FusionResult(
        maps=convert(maps, *back),
        haadf_model=convert(models, *back),
        history=history.frame(batched=bool(batch)),
        params=resolved,
        n_iter=n_iter,
        converged=converged,
        stop_reason=reason,
        elements=problem.elements,
        z=problem.z,
        weights=weights,
        scale=problem.scale,
        engine=engine.name,
    )
