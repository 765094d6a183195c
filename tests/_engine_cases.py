"""Shared cases for the compiled engines' parity tests against the generic code."""

import numpy as np

from fusex import objectives, tv
from fusex._xp import to_numpy

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


def item_terms(shape, per_item):
    """Per-item parameters as arrays (different per item; the Poisson coefficient per map too) or shared numbers."""
    if not per_item:
        return {"gamma": 1.7, "eps": 0.1}, {"coef_h": 0.35, "coef_c": 0.014}
    spread = np.linspace(0.0, 1.0, shape[0])
    per_map = np.linspace(0.0, 1.0, shape[0] * shape[1]).reshape(shape[:2])
    return (
        {"gamma": 1.0 + 0.8 * spread, "eps": 0.05 + 0.1 * spread},
        {"coef_h": 0.2 + 0.3 * spread, "coef_c": 0.01 + 0.02 * per_map},
    )


def haadf_mask(shape, dtype, seed=3):
    """A 0/1 HAADF pixel mask (B, H, W) leaving out about a third of the pixels, but never all of an item."""
    keep = np.random.default_rng(seed).random((shape[0], *shape[2:])) > 0.35
    keep[:, 0, 0] = True
    keep[:, -1, -1] = False
    return keep.astype(dtype)


def check_evaluate_and_step(engine, xp, asarray, shape, dtype, per_item, tol, masked=False):
    """Compare an engine's evaluate and gradient_step with the generic code on one case.

    With ``masked``, both get the same HAADF pixel mask (see `haadf_mask`).
    """
    x, counts, haadf, weights = (asarray(a) for a in problem(shape, dtype))
    terms, coefs = item_terms(shape, per_item)
    if masked:
        terms["mask"] = asarray(haadf_mask(shape, dtype))
    ours = engine().evaluate(x, haadf, counts, weights, xp=xp, **terms)
    ref = objectives.evaluate(x, haadf, counts, weights, xp=xp, **terms)
    if masked:  # the masked pixels hold no residual, so they pull on nothing
        assert np.all(to_numpy(ours.residual)[to_numpy(terms["mask"]) == 0] == 0)
    for term in ("haadf", "poisson", "tv"):
        assert getattr(ours, term).shape == ((shape[0],) if term == "haadf" else shape[:2])
        np.testing.assert_allclose(getattr(ours, term), getattr(ref, term), rtol=1e-5 if dtype == np.float32 else 1e-11)
    for name in ("x_pow_m1", "residual"):
        np.testing.assert_allclose(to_numpy(getattr(ours, name)), to_numpy(getattr(ref, name)), **tol)
    step = {"eps": terms["eps"], **coefs, "xp": xp}  # the mask acts through the evaluation's residual
    y = engine().gradient_step(x, counts, weights, ours, **step)
    assert y.dtype == dtype
    np.testing.assert_allclose(to_numpy(y), to_numpy(objectives.gradient_step(x, counts, weights, ref, **step)), **tol)


def check_per_item_tv_weights(engine, xp, asarray):
    """One TV weight per item (one of them 0), or one per map, gives each map its own prox."""
    f = asarray(np.random.default_rng(4).random((3, 2, 12, 10)) - 0.3)
    weights = [0.0, 0.05, 0.3]
    ours = engine().tv_prox(f, weights, 7, xp=xp)
    np.testing.assert_allclose(to_numpy(ours), to_numpy(tv.tv_prox(f, weights, 7, xp=xp)), rtol=1e-12, atol=1e-12)
    for n, w in enumerate(weights):
        alone = engine().tv_prox(f[n], w, 7, xp=xp)
        np.testing.assert_allclose(to_numpy(ours[n]), to_numpy(alone), rtol=1e-12, atol=1e-12)
    per_map = np.array([[0.0, 0.2], [0.05, 0.0], [0.3, 0.01]])
    ours = engine().tv_prox(f, per_map, 7, xp=xp)
    np.testing.assert_allclose(to_numpy(ours), to_numpy(tv.tv_prox(f, per_map, 7, xp=xp)), rtol=1e-12, atol=1e-12)
    for n, e in np.ndindex(per_map.shape):
        alone = engine().tv_prox(f[n, e], float(per_map[n, e]), 7, xp=xp)
        np.testing.assert_allclose(to_numpy(ours[n, e]), to_numpy(alone), rtol=1e-12, atol=1e-12)


PRIOR_CASES = ("huber", "huber-per-map", "dtv", "mixed")
"""Priors other than TV (`prior_keywords`): Huber shared or per map, directional TV, and a mix with TV maps."""


def prior_keywords(shape, case, dtype, seed=5):
    """``tv_prox`` / ``evaluate`` keywords of one `PRIOR_CASES` case for (B, E, H, W) maps (NumPy arrays)."""
    import array_api_compat.numpy as npx

    from fusex.priors import directional_field

    rng = np.random.default_rng(seed)
    direction = directional_field(rng.random((shape[0], *shape[2:])), 0.1, npx).astype(dtype)
    per_map = np.linspace(0.02, 0.3, shape[0] * shape[1]).reshape(shape[:2])
    odd = (np.arange(shape[0] * shape[1]) % 2).reshape(shape[:2]) == 1
    return {
        "huber": {"huber_delta": 0.1},
        "huber-per-map": {"huber_delta": per_map},
        "dtv": {"strength": 0.9, "direction": direction},
        "mixed": {
            "huber_delta": np.where(odd, 0.0, per_map),
            "strength": np.where(odd, 0.9, 0.0),
            "direction": direction,
        },
    }[case]


def check_prior_prox_and_evaluate(engine, xp, asarray, shape, dtype, case, tol):
    """Compare an engine's prox and objective for a non-TV prior with the generic NumPy code, cold and warm."""
    import array_api_compat.numpy as npx

    keywords = prior_keywords(shape, case, dtype)
    on_device = {k: asarray(v) if k == "direction" else v for k, v in keywords.items()}
    f = (np.random.default_rng(6).random(shape) - 0.3).astype(dtype)
    weights = np.linspace(0.05, 0.4, shape[0]).tolist()
    ours = engine().tv_prox(asarray(f), weights, 9, xp=xp, **on_device)
    ref = tv.tv_prox(f, weights, 9, xp=npx, **keywords)
    assert to_numpy(ours).dtype == dtype
    np.testing.assert_allclose(to_numpy(ours), ref, **tol)
    # a warm start from the cold run's dual continues it: 4 + 5 iterations of "gp" are 9
    start = np.zeros((*shape[:2], 2, *shape[2:]), dtype)
    _, dual = engine().tv_prox(asarray(f), weights, 4, method="gp", xp=xp, dual=asarray(start), **on_device)
    assert np.all(start == 0)  # the caller's dual is not written
    second, _ = engine().tv_prox(asarray(f), weights, 5, method="gp", xp=xp, dual=dual, **on_device)
    np.testing.assert_allclose(to_numpy(second), tv.tv_prox(f, weights, 9, method="gp", xp=npx, **keywords), **tol)
    x, counts, haadf, w = problem(shape, dtype)
    ours = engine().evaluate(
        asarray(x), asarray(haadf), asarray(counts), asarray(w), gamma=1.7, eps=0.1, xp=xp, **on_device
    )
    ref = objectives.evaluate(x, haadf, counts, w, gamma=1.7, eps=0.1, xp=npx, **keywords)
    plain = objectives.evaluate(x, haadf, counts, w, gamma=1.7, eps=0.1, xp=npx)
    np.testing.assert_allclose(ours.tv, ref.tv, rtol=1e-5 if dtype == np.float32 else 1e-11)
    assert not np.allclose(ref.tv, plain.tv)  # the prior's value, not TV's
