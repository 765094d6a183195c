"""The Huber and HAADF-guided directional TV priors: their prox, their value, and the solver's use of them."""

import array_api_compat.numpy as npx
import numpy as np
import pytest

import fusex
from _engine_cases import PRIOR_CASES, SHAPES, check_prior_prox_and_evaluate, prior_keywords
from fusex import tv
from fusex.objectives import evaluate, prior_values
from fusex.priors import directional_field, prior_magnitude


def _huber_direct(x, delta, xi=None, strength=0.0):
    """Sum of h_delta(|P grad x|) over the pixels of one map, from explicit loops (independent of fusex.priors)."""
    H, W = x.shape
    total = 0.0
    for i in range(H):
        for j in range(W):
            gy = x[i + 1, j] - x[i, j] if i < H - 1 else 0.0
            gx = x[i, j + 1] - x[i, j] if j < W - 1 else 0.0
            if xi is not None:
                along = strength * (xi[0, i, j] * gy + xi[1, i, j] * gx)
                gy, gx = gy - along * xi[0, i, j], gx - along * xi[1, i, j]
            t = np.hypot(gy, gx)
            total += t if delta == 0 else (t * t / (2 * delta) if t <= delta else t - delta / 2)
    return total


def _prox_objective(f, weight, huber_delta=0.0, strength=0.0, direction=None):
    xi = None if direction is None else (direction[0], direction[1])

    def objective(v):
        u = v.reshape(f.shape)
        magnitude = prior_magnitude(u, npx, huber_delta=huber_delta, strength=strength, xi=xi)
        return 0.5 * np.sum((u - f) ** 2) + weight * np.sum(magnitude)

    return objective


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("guided", [False, True], ids=["huber", "huber-and-directional"])
def test_huber_prox_matches_a_direct_minimization(nonneg, guided):
    """The dual iteration's answer minimizes the (smooth) prox objective found by L-BFGS-B on a tiny image."""
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    f = rng.random((5, 6)) - (0.3 if nonneg else 0.0)
    prior = {"huber_delta": 0.2}
    if guided:
        prior.update(strength=0.8, direction=directional_field(rng.random((5, 6)), 0.1, npx))
    ours = tv.tv_prox(f, 0.3, 3000, nonneg=nonneg, xp=npx, **prior)
    objective = _prox_objective(f, 0.3, **prior)
    bounds = [(0.0, None)] * f.size if nonneg else None
    start = np.clip(f, 0, None) if nonneg else f
    direct = optimize.minimize(
        objective,
        start.ravel(),
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-12},
    )
    np.testing.assert_allclose(ours, direct.x.reshape(f.shape), atol=1e-6)
    assert objective(ours.ravel()) <= direct.fun + 1e-10
    assert not np.allclose(ours, tv.tv_prox(f, 0.3, 3000, nonneg=nonneg, xp=npx), atol=1e-3)  # not TV's answer


def test_directional_tv_without_strength_is_tv_exactly():
    """gamma_d = 0 (here for one map of two, the other guided) gives TV's prox and value bit for bit."""
    rng = np.random.default_rng(1)
    f = rng.random((1, 2, 13, 11)) - 0.2
    direction = directional_field(rng.random((1, 13, 11)), 0.1, npx)
    strength = np.array([[0.0, 0.9]])
    guided = tv.tv_prox(f, 0.2, 12, xp=npx, strength=strength, direction=direction)
    np.testing.assert_array_equal(guided[0, 0], tv.tv_prox(f[0, 0], 0.2, 12, xp=npx))
    assert not np.allclose(guided[0, 1], tv.tv_prox(f[0, 1], 0.2, 12, xp=npx))
    values = prior_values(f, npx, 0.0, strength, direction)
    np.testing.assert_array_equal(values[0, 0], prior_values(f, npx)[0, 0])


def test_huber_with_a_vanishing_threshold_tends_to_tv():
    f = np.random.default_rng(2).random((9, 8))
    gaps = [
        np.abs(tv.tv_prox(f, 0.2, 400, xp=npx, huber_delta=d) - tv.tv_prox(f, 0.2, 400, xp=npx)).max()
        for d in (0.1, 1e-3)
    ]
    assert gaps[1] < 0.05 * gaps[0]


@pytest.mark.parametrize("case", PRIOR_CASES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_engine_matches_generic(case, shape, dtype):
    pytest.importorskip("numba")
    from fusex.backends.numba_engine import NumbaEngine

    tol = {"rtol": 2e-6, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    check_prior_prox_and_evaluate(NumbaEngine, npx, np.asarray, shape, dtype, case, tol)


def test_numba_directional_tv_without_strength_is_tv():
    pytest.importorskip("numba")
    from fusex.backends.numba_engine import NumbaEngine

    rng = np.random.default_rng(3)
    f = rng.random((1, 2, 13, 11)) - 0.2
    direction = directional_field(rng.random((1, 13, 11)), 0.1, npx)
    guided = NumbaEngine().tv_prox(f, 0.2, 12, xp=npx, strength=np.array([[0.0, 0.9]]), direction=direction)
    np.testing.assert_allclose(guided[0, 0], NumbaEngine().tv_prox(f[0, 0], 0.2, 12, xp=npx), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", PRIOR_CASES)
def test_generic_code_agrees_across_array_backends(backend, xp, case):
    """array-api-strict (and torch, where installed) run the generic prox and objective like NumPy."""
    shape = (2, 2, 9, 7)
    keywords = prior_keywords(shape, case, np.float64)
    on_device = {k: backend.asarray(v) if k == "direction" else v for k, v in keywords.items()}
    f = np.random.default_rng(7).random(shape) - 0.3
    ours = tv.tv_prox(backend.asarray(f), [0.1, 0.3], 9, xp=xp, **on_device)
    ref = tv.tv_prox(f, [0.1, 0.3], 9, xp=npx, **keywords)
    np.testing.assert_allclose(backend.numpy(ours), ref, rtol=1e-12, atol=1e-12)
    ev = evaluate(
        backend.asarray(f.clip(0)),
        backend.asarray(f[:, 0]),
        backend.asarray(f.clip(0)),
        backend.asarray(np.ones((2, 2, 1, 1))),
        gamma=1.7,
        eps=0.1,
        xp=xp,
        **on_device,
    )
    ref = evaluate(f.clip(0), f[:, 0], f.clip(0), np.ones((2, 2, 1, 1)), gamma=1.7, eps=0.1, xp=npx, **keywords)
    np.testing.assert_allclose(ev.tv, ref.tv, rtol=1e-12)


def test_prior_values_match_their_definition():
    rng = np.random.default_rng(4)
    x = rng.random((1, 2, 6, 5))
    direction = directional_field(rng.random((1, 6, 5)), 0.2, npx)
    delta, strength = np.array([[0.3, 0.0]]), np.array([[0.0, 0.7]])
    values = prior_values(x, npx, delta, strength, direction).sum(axis=(-2, -1))
    assert values[0, 0] == pytest.approx(_huber_direct(x[0, 0], 0.3))
    assert values[0, 1] == pytest.approx(_huber_direct(x[0, 1], 0.0, direction[0], 0.7))


def test_direction_field_is_normalized_and_ignores_gain_and_offset():
    rng = np.random.default_rng(5)
    haadf = rng.random((2, 10, 9))
    xi = directional_field(haadf, 0.1, npx)
    assert xi.shape == (2, 2, 10, 9)
    assert np.all(np.hypot(xi[:, 0], xi[:, 1]) < 1)
    np.testing.assert_allclose(directional_field(3.0 * haadf + 7.0, 0.1, npx), xi, atol=1e-12)
    np.testing.assert_array_equal(directional_field(np.ones((10, 9)), 0.1, npx), 0.0)


# --- the solver ---------------------------------------------------------------------------------------------------


def _small_phantom():
    return fusex.datasets.phantom((32, 32), seed=0, dose=3.0)


def test_the_objective_reports_the_prior_in_use():
    """The history's prior term is the Huber / directional value of the iterate, not its TV."""
    ph = _small_phantom()
    prior = dict(zip(ph.elements, ["tv", "huber", "dtv"], strict=True))
    params = fusex.FusionParams(prior=prior, huber_delta=0.05, dtv_strength=0.9, n_iter=5, tol=0.0)
    seen = []
    fusex.fuse(ph.haadf, ph.maps, elements=ph.elements, params=params, callback=lambda k, s: seen.append(s))
    maps = np.asarray(seen[-1].maps, dtype=np.float64)
    haadf = np.asarray(ph.haadf, dtype=np.float64)
    xi = directional_field((haadf - haadf.min()) / (haadf.max() - haadf.min()), 0.1, npx)
    expected = _huber_direct(maps[0], 0.0) + _huber_direct(maps[1], 0.05) + _huber_direct(maps[2], 0.0, xi, 0.9)
    assert seen[-1].tv == pytest.approx(expected, rel=1e-4)
    assert abs(seen[-1].tv - sum(_huber_direct(m, 0.0) for m in maps)) > 1e-3 * expected


def test_priors_mixed_per_element_equal_separate_fusions():
    """Without the HAADF term the maps decouple: each map of a mixed fusion is that map fused alone with its prior."""
    ph = _small_phantom()
    priors = ["tv", "huber", "dtv"]
    # one inner count for the stack: with a "dtv" map in it every map gets n_dtv, alone only that map does
    fixed = {"lambda_haadf": 0.0, "n_iter": 15, "tol": 0.0, "step": 1.0, "backtracking": False, "accel": "none"}
    fixed["n_dtv"] = fusex.FusionParams().n_tv
    mixed = fusex.fuse(
        ph.haadf,
        ph.maps,
        elements=ph.elements,
        params=fusex.FusionParams(prior=dict(zip(ph.elements, priors)), **fixed),
    )
    for e, (element, prior) in enumerate(zip(ph.elements, priors, strict=True)):
        alone = fusex.fuse(
            ph.haadf, ph.maps[e : e + 1], elements=[element], params=fusex.FusionParams(prior=prior, **fixed)
        )
        np.testing.assert_allclose(np.asarray(mixed.maps)[e], np.asarray(alone.maps)[0], rtol=1e-4, atol=1e-5)
    tv_only = fusex.fuse(ph.haadf, ph.maps, elements=ph.elements, params=fusex.FusionParams(**fixed))
    assert not np.allclose(np.asarray(mixed.maps)[1:], np.asarray(tv_only.maps)[1:], atol=1e-3)


def test_tv_everywhere_takes_the_tv_path():
    """prior="tv" (the default) hands the engines no prior keywords, so TV runs its own, unchanged code."""
    from fusex.solver import _loop, _objective

    items, elements = np.arange(1), ("Sr", "O")
    for params, keywords in (
        (fusex.FusionParams(), {"gamma", "eps"}),
        (
            fusex.FusionParams(prior={"Sr": "tv", "O": "huber"}),
            {"gamma", "eps", "huber_delta", "strength", "direction"},
        ),
    ):
        values = _loop._item_values(params, (), elements, items)
        assert set(_objective.engine_terms(values)) == keywords
    np.testing.assert_array_equal(values["huber_delta"], [[0.0, 0.05]])  # the TV map carries delta 0
    np.testing.assert_array_equal(values["dtv_strength"], [[0.0, 0.0]])


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"prior": "tgv"}, "prior must be one of"),
        ({"prior": {"Sr": "tv", "O": "l2"}}, "prior must be one of"),
        ({"prior": {}}, "prior must be one of"),
        ({"huber_delta": 0.0}, "huber_delta must be > 0"),
        ({"dtv_strength": 1.5}, "dtv_strength must lie in [0, 1]"),
        ({"dtv_eta": -1.0}, "dtv_eta must be > 0"),
    ],
)
def test_bad_prior_parameters_are_refused(changes, mentions):
    with pytest.raises(ValueError, match=mentions.replace("[", r"\[").replace("]", r"\]")):
        fusex.FusionParams(**changes)


def test_priors_per_element():
    params = fusex.FusionParams(prior={"Sr": "tv", "O": "huber"}, huber_delta={"Sr": 0.1, "O": 0.2})
    assert params.priors(["Sr", "O"]) == ("tv", "huber")
    assert fusex.FusionParams(prior="dtv").priors(["Sr", "O"]) == ("dtv", "dtv")
    assert params.to_dict()["prior"] == {"Sr": "tv", "O": "huber"}
    assert hash(params) == hash(fusex.FusionParams(prior={"Sr": "tv", "O": "huber"}, huber_delta={"Sr": 0.1, "O": 0.2}))
    with pytest.raises(ValueError, match="but the maps are"):
        params.priors(["Sr", "Ti"])


def test_a_result_with_priors_per_element_saves_and_loads(tmp_path):
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    from fusex import io
    from fusex import xarray as fx

    ph = fusex.datasets.phantom((16, 16), seed=0)
    params = fusex.FusionParams(
        prior={"Sr": "tv", "Ti": "huber", "O": "dtv"}, huber_delta={"Sr": 0.1, "Ti": 0.05, "O": 0.1}, n_iter=2
    )
    io.save(fusex.fuse(fx.label(ph.haadf, ph.maps, elements=ph.elements), params=params), tmp_path / "out.nc")
    back = io.load(tmp_path / "out.nc")
    assert list(back["param_prior"].values) == ["tv", "huber", "dtv"]
    assert float(back["param_huber_delta"].sel(element="Ti")) == 0.05
