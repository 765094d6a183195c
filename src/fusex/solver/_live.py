"""The live state of a batched solve: the arrays and per-item values of the items still iterating, subsets, merges.

A batched solve keeps only the items that are still iterating.  When items
stop (tolerance reached, divergence), their maps are set aside and the live
arrays shrink to the rest, so finished items cost nothing afterwards.  Index
arrays cross to the device once per such event, never per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ..objectives import Evaluation

__all__ = ["Live", "merge_evaluations", "merge_rows", "take_rows"]


def _device_index(rows: np.ndarray, like: Any, xp: ModuleType) -> Any:
    return xp.asarray([int(r) for r in rows], dtype=xp.int64, device=array_api_compat.device(like))


def take_rows(x: Any, rows: np.ndarray, xp: ModuleType) -> Any:
    """Rows ``rows`` (host integers) of ``x`` along its first axis."""
    if len(rows) == x.shape[0] and np.array_equal(rows, np.arange(len(rows))):
        return x
    if isinstance(x, np.ndarray):
        return x[rows]
    return xp.take(x, _device_index(rows, x, xp), axis=0)


def merge_rows(full: Any, part: Any, rows: np.ndarray, xp: ModuleType, *, in_place: bool = False) -> Any:
    """``full`` with its rows ``rows`` replaced by the rows of ``part``, in order.

    A new array, unless ``in_place`` (for arrays the caller owns): a NumPy ``full`` is then
    written over and returned.
    """
    n = full.shape[0]
    if len(rows) == n:
        return part
    if isinstance(full, np.ndarray) and isinstance(part, np.ndarray):
        # Writing the replaced rows alone, where the array API's gather and select pass over all rows 3 times.
        merged = full if in_place else full.copy()
        merged[rows] = part
        return merged
    position = np.zeros(n, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    spread = xp.take(part, _device_index(position, part, xp), axis=0)
    chosen = np.zeros(n, dtype=bool)
    chosen[rows] = True
    mask = xp.asarray(chosen.tolist(), device=array_api_compat.device(full))
    return xp.where(xp.reshape(mask, (n,) + (1,) * (full.ndim - 1)), spread, full)


@dataclass
class Live:
    """Arrays and per-item host values of the items still iterating (``n`` of them).

    ``items`` are their indices in the whole batch; ``values`` maps the
    per-item parameters and counters (``lam_h``, ``gamma``, ``shrink``,
    ``rises``, ...) to host arrays of length ``n``.  ``mask`` is the HAADF
    pixel mask ``(n, H, W)``, or None when every pixel counts.  ``x_prev``
    is the previous iterate (for momentum; None before the first step) and
    ``dual`` the TV dual of the last prox ``(n, E, 2, H, W)`` (None for cold
    starts).  ``direction`` is the HAADF direction field ``(n, 2, H, W)`` of
    the directional-TV prior (`fusex.priors.directional_field`), or None when no map uses it.
    ``background`` is the offset and smooth background :math:`c + B` the
    HAADF fit assigned each item ``(n, H, W)`` (``haadf`` is the image less
    it), or None while nothing is fitted.
    """

    items: np.ndarray
    x: Any
    counts: Any
    haadf: Any
    weights: Any
    ev: Evaluation
    total: np.ndarray
    values: dict[str, np.ndarray]
    mask: Any = None
    x_prev: Any = None
    dual: Any = None
    direction: Any = None
    background: Any = None

    def subset(self, rows: np.ndarray, xp: ModuleType) -> Live:
        """Return the live state restricted to ``rows`` (host integers into the live items)."""
        ev = self.ev
        return Live(
            self.items[rows],
            take_rows(self.x, rows, xp),
            take_rows(self.counts, rows, xp),
            take_rows(self.haadf, rows, xp),
            take_rows(self.weights, rows, xp),
            Evaluation(
                ev.haadf[rows],
                ev.poisson[rows],
                ev.tv[rows],
                take_rows(ev.x_pow_m1, rows, xp),
                take_rows(ev.residual, rows, xp),
            ),
            self.total[rows],
            {key: value[rows] for key, value in self.values.items()},
            None if self.mask is None else take_rows(self.mask, rows, xp),
            None if self.x_prev is None else take_rows(self.x_prev, rows, xp),
            None if self.dual is None else take_rows(self.dual, rows, xp),
            None if self.direction is None else take_rows(self.direction, rows, xp),
            None if self.background is None else take_rows(self.background, rows, xp),
        )


def merge_evaluations(
    full: Evaluation, part: Evaluation, rows: np.ndarray, xp: ModuleType, *, in_place: bool = False
) -> Evaluation:
    """``full`` with the items ``rows`` replaced by ``part`` (its arrays written over if ``in_place``)."""
    terms = {}
    for name in ("haadf", "poisson", "tv"):
        values = getattr(full, name).copy()
        values[rows] = getattr(part, name)
        terms[name] = values
    return replace(
        full,
        **terms,
        x_pow_m1=merge_rows(full.x_pow_m1, part.x_pow_m1, rows, xp, in_place=in_place),
        residual=merge_rows(full.residual, part.residual, rows, xp, in_place=in_place),
    )
