"""The items of a solve that stopped: maps, HAADF models and backgrounds, stop reasons, gathered as they finish."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._xp import convert
from ..inputs import FusionProblem
from ..operators import haadf_model
from ..result._assembly import SolvedPart
from ..result._history import History
from ._live import Live, take_rows

__all__ = ["Outcome"]


class Outcome:
    """Maps, HAADF models and backgrounds, and stop reasons of a problem's items as they finish (local indices)."""

    def __init__(self, n_items: int, *, rescale_totals: bool = False) -> None:
        self.rescale_totals = rescale_totals
        self.n_iter = np.zeros(n_items, dtype=np.int64)
        self.reason = np.full(n_items, "", dtype=object)
        self._pieces: list[tuple[np.ndarray, Any, Any, Any]] = []

    def add(self, finished: Live, reasons: np.ndarray, iteration: int, xp: Any) -> None:
        """Record finished items (their live state at the iteration they stopped).

        Their HAADF model and background are those of the fit the HAADF term
        made, of the solver's maps before ``rescale_totals`` rescales them
        (the fit is not redone for the rescaled maps); the background is zeros when nothing is fitted.
        """
        self.n_iter[finished.items] = iteration
        self.reason[finished.items] = reasons
        x = finished.x
        model = haadf_model(finished.ev.x_pow_m1 * x, finished.weights, xp)
        if self.rescale_totals:
            # the Poisson maximum-likelihood scale of each map's shape: sum b / sum x (docs/theory.md)
            total = xp.sum(x, axis=(-2, -1), keepdims=True)
            # a map fused to 0 everywhere stays 0, whatever its scale
            x = xp.sum(finished.counts, axis=(-2, -1), keepdims=True) / xp.where(total > 0, total, 1.0) * x
        background = finished.background
        if background is None:
            background = xp.zeros_like(finished.haadf)
        self._pieces.append((finished.items, x, model, background))

    def part(
        self, problem: FusionProblem, history: History, lambda_haadf: np.ndarray, weights: Sequence[Sequence[float]]
    ) -> SolvedPart:
        """Return the finished problem's results, in item order, converted back to the caller's library."""
        xp = problem.xp
        if len(self._pieces) == 1:
            items, maps, models, backgrounds = self._pieces[0]
        else:
            items = np.concatenate([p[0] for p in self._pieces])
            maps = xp.concat([p[1] for p in self._pieces], axis=0)
            models = xp.concat([p[2] for p in self._pieces], axis=0)
            backgrounds = xp.concat([p[3] for p in self._pieces], axis=0)
        order = np.argsort(items, kind="stable")
        back = problem.input_xp, problem.input_device
        return SolvedPart(
            problem.items,
            convert(take_rows(maps, order, xp), *back),
            convert(take_rows(models, order, xp), *back),
            convert(take_rows(backgrounds, order, xp), *back),
            self.n_iter,
            self.reason,
            np.asarray(weights, dtype=np.float64),
            lambda_haadf,
            history,
        )
