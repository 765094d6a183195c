r"""Per-item and per-map scalars of a batch: one number, one value per item, or one per map.

A batch of ``B`` fusions of ``E`` maps each takes its scalars (:math:`\gamma`,
:math:`\epsilon`, the weights, step coefficients, TV weights, Huber :math:`\delta`,
direction strength :math:`\gamma_d`) as a number shared by every item, ``B``
values (one per item) or a ``(B, E)`` array (one per map).  This module turns
them into what the code that uses them needs:

- on the compute device, an array that broadcasts over the pixels (`per_item`);
- on the host, contiguous arrays of a kernel's dtype (`item_values`, `map_values`)
  and the derived TV dual parameters of every map (`map_weights`, `guided_parameters`);
- tests on the host values (`any_positive`, `is_guided`).

Host values are read as float64; nothing here modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "PerItem",
    "any_positive",
    "broadcast_maps",
    "guided_parameters",
    "huber_steps",
    "is_guided",
    "item_values",
    "map_values",
    "map_weights",
    "per_item",
    "steps_for",
]

PerItem = float | Sequence[float]
"""A number shared by every item of a batch, or one value per item (or per map)."""


def per_item(values: Any, like: Any, xp: ModuleType | None = None) -> Any:
    """Return ``values`` as a number, or as an array of ``like``'s dtype that broadcasts over its trailing axes.

    Parameters
    ----------
    values : float, sequence or array on the host
        One number, or values shaped like the leading axes of ``like``: ``B``
        values broadcast over the item axis, a ``(B, E)`` array over the item
        and map axes.
    like : array
        The array the values will combine with.
    xp : module, optional
        ``like``'s array namespace (found from ``like`` when not given).

    Returns
    -------
    float or array
        A Python float for one number (also a 0-d array), so that it combines
        as a scalar; otherwise an array of ``like``'s namespace, dtype and device
        of shape ``values.shape + (1,) * (like.ndim - values.ndim)``.

    """
    if np.ndim(values) == 0:
        return float(values)
    xp = array_api_compat.array_namespace(like) if xp is None else xp
    host = np.asarray(values, dtype=np.float64)
    column = xp.asarray(host.ravel().tolist(), dtype=like.dtype, device=array_api_compat.device(like))
    return xp.reshape(column, host.shape + (1,) * (like.ndim - host.ndim))


def any_positive(values: Any) -> bool:
    """Whether any of ``values`` (a number or an array of them) is above 0."""
    return bool(np.max(np.asarray(values, dtype=np.float64)) > 0)


def is_guided(huber_delta: Any, strength: Any, direction: Any) -> bool:
    """Whether any map's prior is not TV: a Huber ``delta > 0``, or a direction field with a strength > 0."""
    return any_positive(huber_delta) or (direction is not None and any_positive(strength))


def broadcast_maps(*values: Any) -> list[np.ndarray]:
    """Broadcast per-item ``(B,)`` and per-map ``(B, E)`` values (or numbers) against each other, as float64."""
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    return [np.ascontiguousarray(a) for a in np.broadcast_arrays(*arrays)]


def item_values(values: Any, n: int, dtype: Any) -> np.ndarray:
    """Per-item scalars (a number or ``n`` values) as a contiguous array of ``n`` values of ``dtype``."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).astype(dtype))


def map_values(values: Any, n_items: int, n_maps: int, dtype: Any) -> np.ndarray:
    """Per-map scalars (a number, ``n_items`` values or an ``(n_items, n_maps)`` array) as ``(n_items, n_maps)``."""
    host = np.asarray(values, dtype=np.float64)
    if host.ndim == 1:
        host = host[:, None]
    return np.ascontiguousarray(np.broadcast_to(host, (n_items, n_maps)).astype(dtype))


def steps_for(weight: PerItem) -> PerItem:
    r"""Dual step :math:`1 / (8 w)` of each TV weight (same shape), 0 where :math:`w = 0`."""
    if isinstance(weight, (int, float)):
        return 1.0 / (8.0 * weight) if weight > 0 else 0.0
    w = np.asarray(weight, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(w > 0, 1.0 / (8.0 * w), 0.0)


def huber_steps(weight: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Dual step :math:`s = 1/(8w + \delta)` and momentum keep :math:`a = 8w/(8w + \delta)` (0 and 1 where w = 0)."""
    denominator = 8.0 * weight + delta
    live = weight > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(live, 1.0 / denominator, 0.0)
        keep = np.where(live, 8.0 * weight / denominator, 1.0)
    return step, keep


def map_weights(weight: Any, n_maps: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""TV weights and dual steps :math:`1/(8w)` of ``n_maps`` maps, from one weight, one per item or one per map."""
    weights = np.ravel(np.asarray(weight, dtype=np.float64))
    per_map = n_maps // weights.size
    return np.repeat(weights, per_map).astype(dtype), np.repeat(steps_for(weights), per_map).astype(dtype)


def guided_parameters(
    weight: Any, huber_delta: Any, strength: Any, n_maps: int, dtype: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""Return :math:`w`, dual steps :math:`s`, momentum keeps :math:`a` and strengths :math:`\gamma_d` per map.

    Each input is one number, one per item or one per map (see `fusex.tv.tv_prox`), for ``n_maps`` maps;
    :math:`s = 1/(8w + \delta)` and :math:`a = 8w/(8w + \delta)` (`huber_steps`).
    """
    w, delta, gamma = broadcast_maps(weight, huber_delta, strength)
    step, keep = huber_steps(w, delta)
    per_map = n_maps // max(w.size, 1)
    return tuple(np.repeat(a.reshape(-1), per_map).astype(dtype) for a in (w, step, keep, gamma))
