"""The weighted objective of each item, and the keywords the engines take, from the per-item host values."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..objectives import Evaluation

__all__ = ["compact", "engine_terms", "objective", "prior_terms", "smooth_terms", "terms_per_item"]


def engine_terms(values: dict[str, np.ndarray], direction: Any = None) -> dict[str, Any]:
    """Keywords of ``engine.evaluate``: gamma, eps and, when a map's prior is not TV, the prior's parameters."""
    return {"gamma": compact(values["gamma"]), "eps": compact(values["eps"]), **prior_terms(values, direction)}


def prior_terms(values: dict[str, np.ndarray], direction: Any) -> dict[str, Any]:
    """Keywords naming the maps' priors for the engines (none when every map is on TV: the engines' TV path)."""
    if "huber_delta" not in values:
        return {}
    return {
        "huber_delta": compact(values["huber_delta"]),
        "strength": compact(values["dtv_strength"]),
        "direction": direction,
    }


def compact(values: np.ndarray) -> Any:
    """One number when all share it (the engines' fast path), else per item ``(n,)``, else per map ``(n, E)``."""
    flat = values.reshape(-1)
    if np.all(flat == flat[0]):
        return float(flat[0])
    if values.ndim == 2 and np.all(values == values[:, :1]):
        return values[:, 0]
    return values


def objective(ev: Evaluation, values: dict[str, np.ndarray]) -> np.ndarray:
    r"""Return the objective of each item: the smooth terms plus :math:`\sum_e \lambda_{TV,e} TV(x_e)`."""
    return smooth_terms(ev, values) + np.sum(values["lambda_tv"] * ev.tv, axis=-1)


def smooth_terms(ev: Evaluation, values: dict[str, np.ndarray]) -> np.ndarray:
    """Return the smooth (data) terms of the objective of each item."""
    return values["lambda_haadf"] * ev.haadf + np.sum(values["lambda_chem"] * ev.poisson, axis=-1)


def terms_per_item(ev: Evaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the unweighted cost terms of each item (per-map ones summed over maps), as the history holds them."""
    return ev.haadf, np.sum(ev.poisson, axis=-1), np.sum(ev.tv, axis=-1)
