"""Building the caller-facing `FusionResult` from the solved parts of a batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..inputs import Validated
from ..params import FusionParams
from ._history import History
from ._result import FusionResult

__all__ = ["SolvedPart", "assemble"]


@dataclass(frozen=True)
class SolvedPart:
    """The results of some items of a batch, already back in the caller's array library and device."""

    items: np.ndarray
    maps: Any
    haadf_model: Any
    haadf_background: Any
    n_iter: np.ndarray
    reason: np.ndarray
    weights: np.ndarray
    lambda_haadf: np.ndarray
    history: History


def assemble(checked: Validated, params: FusionParams, engine: str, parts: list[SolvedPart]) -> FusionResult:
    """Build the caller-facing result from the solved parts of a batch, shaped like the batch."""
    xp, batch = checked.input_xp, checked.batch_shape
    if len(parts) == 1:
        maps, models, backgrounds = parts[0].maps, parts[0].haadf_model, parts[0].haadf_background
    else:
        maps = xp.concat([p.maps for p in parts], axis=0)
        models = xp.concat([p.haadf_model for p in parts], axis=0)
        backgrounds = xp.concat([p.haadf_background for p in parts], axis=0)
    maps = xp.reshape(maps, (*batch, *maps.shape[1:]))
    models = xp.reshape(models, (*batch, *models.shape[1:]))
    backgrounds = xp.reshape(backgrounds, (*batch, *backgrounds.shape[1:]))
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
        haadf_background=backgrounds,
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
