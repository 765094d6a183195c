"""Shared cases for the compiled engines' parity tests against the generic code."""

import numpy as np

# (items, elements, H, W): one fusion, a lone 2x2 map, thin maps and a small batch.
SHAPES = [(1, 3, 17, 23), (1, 1, 2, 2), (2, 2, 2, 9), (3, 2, 31, 2)]


def problem(shape, dtype, seed=0):
    """Random iterate, counts, HAADF and weights (B, E, 1, 1) of a batch."""
    rng = np.random.default_rng(seed)
    x = rng.random(shape).astype(dtype)
    x[..., 0, 0] = 0.0  # x = 0 exercises 0**(gamma-1) and log(eps)
    counts = rng.poisson(2.0, shape).astype(dtype)
    haadf = rng.random((shape[0], *shape[2:])).astype(dtype)
    weights = rng.random(shape[:2]).astype(dtype).reshape(*shape[:2], 1, 1)
    return x, counts, haadf, weights


def item_terms(n_items, per_item):
    """Per-item parameters as arrays (different per item) or as shared numbers."""
    if not per_item:
        return {"gamma": 1.7, "eps": 0.1}, {"coef_h": 0.35, "coef_c": 0.014}
    spread = np.linspace(0.0, 1.0, n_items)
    return (
        {"gamma": 1.0 + 0.8 * spread, "eps": 0.05 + 0.1 * spread},
        {"coef_h": 0.2 + 0.3 * spread, "coef_c": 0.01 + 0.02 * spread},
    )
