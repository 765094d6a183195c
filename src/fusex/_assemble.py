"""Collecting the finished items of batched solves into one `FusionResult`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._batch import History, Live, take_rows
from ._per_item import per_item
from ._xp import convert
from .inputs import FusionProblem, Validated
from .operators import haadf_model
from .params import FusionParams
from .result import FusionResult

__all__ = ["Outcome", "SolvedPart", "assemble"]


@dataclass(frozen=True)
class SolvedPart:
    """The results of some items of a batch, already back in the caller's array library and device."""

    items: np.ndarray
    maps: Any
    haadf_model: Any
    n_iter: np.ndarray
    reason: np.ndarray
    weights: np.ndarray
    lambda_haadf: np.ndarray
    history: History


class Outcome:
    """Maps, HAADF models and stop reasons of a problem's items as they finish (local indices)."""

    def __init__(self, n_items: int, *, rescale_totals: bool = False) -> None:
        self.rescale_totals = rescale_totals
        self.n_iter = np.zeros(n_items, dtype=np.int64)
        self.reason = np.full(n_items, "", dtype=object)
        self._pieces: list[tuple[np.ndarray, Any, Any]] = []

    def add(self, finished: Live, reasons: np.ndarray, iteration: int, xp: Any) -> None:
        """Record finished items (their live state at the iteration they stopped)."""
        self.n_iter[finished.items] = iteration
        self.reason[finished.items] = reasons
        x, x_pow = finished.x, finished.ev.x_pow_m1 * finished.x
        if self.rescale_totals:
            # the Poisson maximum-likelihood scale of each map's shape: sum b / sum x (docs/theory.md)
            total = xp.sum(x, axis=(-2, -1), keepdims=True)
            # a map fused to 0 everywhere stays 0, whatever its scale
            scale = xp.sum(finished.counts, axis=(-2, -1), keepdims=True) / xp.where(total > 0, total, 1.0)
            x, x_pow = scale * x, scale ** per_item(finished.values["gamma"], x, xp) * x_pow
        self._pieces.append((finished.items, x, haadf_model(x_pow, finished.weights, xp)))

    def part(
        self, problem: FusionProblem, history: History, lambda_haadf: np.ndarray, weights: Sequence[Sequence[float]]
    ) -> SolvedPart:
        """Return the finished problem's results, in item order, converted back to the caller's library."""
        xp = problem.xp
        if len(self._pieces) == 1:
            items, maps, models = self._pieces[0]
        else:
            items = np.concatenate([p[0] for p in self._pieces])
            maps = xp.concat([p[1] for p in self._pieces], axis=0)
            models = xp.concat([p[2] for p in self._pieces], axis=0)
        order = np.argsort(items, kind="stable")
        back = problem.input_xp, problem.input_device
        return SolvedPart(
            problem.items,
            convert(take_rows(maps, order, xp), *back),
            convert(take_rows(models, order, xp), *back),
            self.n_iter,
            self.reason,
            np.asarray(weights, dtype=np.float64),
            lambda_haadf,
            history,
        )


def assemble(checked: Validated, params: FusionParams, engine: str, parts: list[SolvedPart]) -> FusionResult:
    """Build the caller-facing result from the solved parts of a batch, shaped like the batch."""
    xp, batch = checked.input_xp, checked.batch_shape
    if len(parts) == 1:
        maps, models = parts[0].maps, parts[0].haadf_model
    else:
        maps = xp.concat([p.maps for p in parts], axis=0)
        models = xp.concat([p.haadf_model for p in parts], axis=0)
    maps = xp.reshape(maps, (*batch, *maps.shape[1:]))
    models = xp.reshape(models, (*batch, *models.shape[1:]))
    reason = np.concatenate([p.reason for p in parts]).reshape(batch).astype(str)
    n_iter = np.concatenate([p.n_iter for p in parts]).reshape(batch)
    rows = np.concatenate([p.weights for p in parts])
    weights: Any = tuple(rows[0].tolist())
    if np.any(rows != rows[0]):
        weights = rows.reshape(*batch, -1)
    resolved = params
    if params.lambda_haadf is None:
        resolved = params.replace(lambda_haadf=float(parts[0].lambda_haadf[0]))
    history = History.join([p.history for p in parts])
    return FusionResult(
        maps=maps,
        haadf_model=models,
        history=history.frame(batched=bool(batch)),
        params=resolved,
        n_iter=n_iter if batch else int(n_iter),
        converged=np.asarray(reason == "tol") if batch else bool(reason == "tol"),
        stop_reason=reason if batch else str(reason),
        elements=checked.elements,
        z=checked.z,
        weights=weights,
        scale=checked.scale,
        engine=engine,
        saturated=checked.saturated,
    )
