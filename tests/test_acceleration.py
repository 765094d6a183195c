"""The accelerated solver: FISTA with restart, the Lipschitz step, warm TV duals and the residual stopping rule."""

import array_api_compat.numpy as npx
import numpy as np
import pytest

import fusex
import fusex.solver._loop as loop
from fusex import FusionParams
from fusex.datasets import phantom
from fusex.tv import tv_prox


@pytest.fixture(scope="module")
def sample():
    return phantom((24, 24), dose=3.0, seed=5)


def _fuse(sample, params, choice=None, backend=None):
    haadf, maps = sample.haadf, sample.maps
    if backend is not None:
        haadf, maps = backend.asarray(haadf), backend.asarray(maps)
    return fusex.fuse(haadf, maps, elements=sample.elements, params=params, backend=choice)


@pytest.mark.slow_on("array_api_strict")  # the generic code, as on NumPy, at many times the cost per operation
def test_fista_reaches_the_fixed_point_of_plain_proximal_gradient(sample, backend):
    # Both with the Lipschitz step and warm duals, run far past convergence: only the path differs.
    # (the plain solver's stiff pixels, where the Poisson curvature is far above 1 / step, settle last)
    # The objective is not convex: from the smoothed start the two settle on different stationary
    # points here (5.329534 and 5.329576), from the counts on the same one.
    tight = FusionParams(tol=0.0, n_iter=500, init="counts")
    for choice in backend.choices:
        fast = _fuse(sample, tight, choice, backend)
        plain = _fuse(sample, tight.replace(accel="none"), choice, backend)
        diff = np.abs(backend.numpy(fast.maps) - backend.numpy(plain.maps))
        assert np.quantile(diff, 0.999) < 2e-4 and diff.max() < 5e-3
        np.testing.assert_allclose(fast.history.total.iloc[-1], plain.history.total.iloc[-1], rtol=1e-6)


def test_momentum_restarts_by_the_gradient_test_with_a_lipschitz_step_and_by_the_objective_with_a_fixed_one(
    sample, monkeypatch
):
    turns, redos = [], []
    step = loop.step_with_backtracking

    def spy(live, eta, beta, *args):
        out = step(live, eta, beta, *args)
        turns.append(0 if out[0].turn is None else int(np.sum(out[0].turn > 0)))
        redos.append(int(out[3].sum()))
        return out

    monkeypatch.setattr(loop, "step_with_backtracking", spy)
    total = _fuse(sample, FusionParams(tol=0.0, n_iter=150)).history.total.to_numpy()
    # the gradient restart redoes no step, and here the objective still does not rise beyond rounding
    assert sum(turns) > 0 and sum(redos) == 0
    assert np.all(np.diff(total) <= 1e-6 * abs(total[0]))
    turns.clear(), redos.clear()
    total = _fuse(sample, FusionParams(tol=0.0, n_iter=150, step=1.0)).history.total.to_numpy()
    # a fixed step keeps the function-value restart: a rising step is redone, the objective never rises
    assert sum(redos) > 0 and sum(turns) == 0
    assert np.all(np.diff(total) <= 1e-6 * abs(total[0]))
    turns.clear(), redos.clear()
    _fuse(sample, FusionParams(tol=0.0, n_iter=40, accel="none"))
    assert sum(turns) == 0 and sum(redos) == 0


@pytest.mark.parametrize("extra", [0, 2])
def test_a_run_of_rising_objectives_restarts_the_momentum_and_cuts_the_step(sample, monkeypatch, extra):
    # the step tests see the smooth terms only, so an inexact prox can let the objective rise step after step:
    # rises are faked from iteration 6 on, as if accepted steps had each raised it
    rises = loop.RISES_BEFORE_RESTART + extra
    steps, momenta, totals = [], [], []
    step, real_refit = loop.step_with_backtracking, loop.refit

    def spy(live, eta, beta, *args):
        steps.append(float(eta[0])), momenta.append(float(beta[0])), totals.append(np.copy(live.total))
        return step(live, eta, beta, *args)

    def rising(stepped, *args, **kwargs):
        # the refit after each step gives the objective the solver compares
        real_refit(stepped, *args, **kwargs)
        if 6 <= len(steps) < 6 + rises:
            stepped.total = totals[-1] + 1.0

    monkeypatch.setattr(loop, "step_with_backtracking", spy)
    monkeypatch.setattr(loop, "refit", rising)
    _fuse(sample, FusionParams(tol=0.0, n_iter=8 + rises, backtracking=False))
    growth = np.array(steps[1:]) / np.array(steps[:-1])
    # the step grows by STEP_GROWTH after every step until the third rise in a row, is cut there and at every
    # further rise of the run, and then grows no more: the last cut step is the item's largest from then on
    first = 5 + loop.RISES_BEFORE_RESTART - 1  # the ratio of the step after the third rise to the one before
    np.testing.assert_allclose(growth[:first], 1.1, rtol=1e-9)
    np.testing.assert_allclose(growth[first : first + extra + 1], 0.5, rtol=1e-9)
    np.testing.assert_allclose(growth[first + extra + 1 :], 1.0, rtol=1e-9)
    assert momenta[first] > 0.0 and np.all(np.array(momenta[first + 1 : first + extra + 2]) == 0.0)
    assert momenta[first + extra + 2] > 0.0


def test_a_directional_tv_fusion_stops_by_the_residual_test():
    # with the TV prox's 10 inner iterations its residual stays near 3e-4 and, at tol=1e-4, it runs to the
    # 500-iteration cap or near it (430); with n_dtv=20 it stops after about 70, at an objective within 3e-5
    sample = phantom(seed=0)
    fuse = {"elements": sample.elements}
    assert fusex.fuse(sample.haadf, sample.maps, params=FusionParams(prior="dtv"), **fuse).stop_reason == "tol"
    result = fusex.fuse(sample.haadf, sample.maps, params=FusionParams(prior="dtv", tol=1e-4), **fuse)
    assert result.stop_reason == "tol" and len(result.history) < 200
    capped = fusex.fuse(sample.haadf, sample.maps, params=FusionParams(prior="dtv", n_dtv=10, tol=1e-4), **fuse)
    assert len(capped.history) > 4 * len(result.history)
    np.testing.assert_allclose(result.history.total.iloc[-1], capped.history.total.iloc[-1], rtol=1e-4)


def test_fista_needs_fewer_iterations_than_plain_to_the_same_objective(sample):
    best = _fuse(sample, FusionParams(tol=0.0, n_iter=2000)).history.total.min()
    gaps = {}
    for accel in ("fista", "none"):
        total = _fuse(sample, FusionParams(tol=0.0, n_iter=400, accel=accel)).history.total.to_numpy()
        reached = np.flatnonzero((total - best) / abs(best) < 1e-4)
        gaps[accel] = int(reached[0]) if reached.size else 10**6
    assert gaps["fista"] < gaps["none"]


@pytest.mark.parametrize("engine", ["generic", "numba"])
def test_a_warm_started_prox_converges_to_the_cold_prox(engine):
    f = np.random.default_rng(3).random((2, 3, 20, 24)).astype(np.float64)
    prox = tv_prox if engine == "generic" else fusex.backends.numba_engine.NumbaEngine().tv_prox
    cold = tv_prox(f, 0.2, 20000, xp=npx)
    dual = np.zeros((2, 3, 2, 20, 24))
    for _ in range(500):
        u, dual = prox(f, 0.2, 10, xp=npx, dual=dual)
    # the dual iteration converges sublinearly: both are within ~1e-4 of the prox
    np.testing.assert_allclose(u, cold, atol=5e-4)
    assert np.abs(u - cold).max() < 0.1 * np.abs(prox(f, 0.2, 10, xp=npx) - cold).max()
    assert np.all(np.hypot(dual[..., 0, :, :], dual[..., 1, :, :]) <= 1 + 1e-12)


@pytest.mark.parametrize("engine", ["generic", "numba"])
def test_chained_warm_starts_without_momentum_are_one_long_prox(engine):
    # "gp" keeps no state but the dual, so 30 calls of 5 iterations are exactly one call of 150.
    f = np.random.default_rng(7).random((1, 2, 18, 22))
    prox = tv_prox if engine == "generic" else fusex.backends.numba_engine.NumbaEngine().tv_prox
    dual = np.zeros((1, 2, 2, 18, 22))
    for _ in range(30):
        u, dual = prox(f, 0.15, 5, method="gp", xp=npx, dual=dual)
    np.testing.assert_allclose(u, prox(f, 0.15, 150, method="gp", xp=npx), atol=1e-12)


@pytest.mark.parametrize("engine", ["generic", "numba"])
def test_a_zero_dual_is_the_cold_start_and_the_callers_dual_is_not_changed(engine):
    f = np.random.default_rng(4).random((1, 2, 16, 16)).astype(np.float32)
    prox = tv_prox if engine == "generic" else fusex.backends.numba_engine.NumbaEngine().tv_prox
    dual = np.zeros((1, 2, 2, 16, 16), np.float32)
    u, out = prox(f, 0.1, 15, xp=npx, dual=dual)
    np.testing.assert_allclose(u, prox(f, 0.1, 15, xp=npx), atol=1e-6)
    assert not dual.any() and out.shape == dual.shape and out.any()


def test_the_warm_prox_matches_between_generic_and_numba_on_a_large_map():
    # 600 x 600 float32 maps run the numba engine's blocked prox in bands of rows, with halos and several sweeps
    side = 600
    assert fusex.backends.numba_engine.tiling(side, side, 4)[0] < side
    f = np.random.default_rng(5).random((1, 1, side, side)).astype(np.float32)
    start = np.random.default_rng(6).uniform(-0.5, 0.5, (1, 1, 2, side, side)).astype(np.float32)
    u_g, d_g = tv_prox(f, 0.1, 10, xp=npx, dual=start)
    u_n, d_n = fusex.backends.numba_engine.NumbaEngine().tv_prox(f, 0.1, 10, xp=npx, dual=start)
    np.testing.assert_allclose(u_n, u_g, atol=1e-5)
    np.testing.assert_allclose(d_n, d_g, atol=1e-5)


def test_the_residual_test_stops_a_converged_fusion_early(sample):
    res = _fuse(sample, FusionParams(n_iter=500))
    assert res.stop_reason == "tol" and res.n_iter < 200
    best = _fuse(sample, FusionParams(tol=0.0, n_iter=1500)).history.total.min()
    # the residual rule stops at a 2e-3 to 7e-3 objective gap on such phantoms (docs/parameters.md)
    assert (res.history.total.iloc[-1] - best) / abs(best) < 1e-2


def test_n_iter_caps_the_iterations(sample):
    res = _fuse(sample, FusionParams(n_iter=4))
    assert res.n_iter == 4 and res.stop_reason == "n_iter"


def test_a_lipschitz_step_backtracks_from_a_too_small_curvature_estimate(sample, monkeypatch):
    # A first estimate 1000x too small makes the first steps far too long: the sufficient-decrease test must cut them.
    first = loop.first_curvature
    monkeypatch.setattr(loop, "first_curvature", lambda *a: first(*a) / 1000)
    res = _fuse(sample, FusionParams(tol=0.0, n_iter=20))
    assert res.history.backtracks.iloc[1] >= 5
    total = res.history.total.to_numpy()
    assert np.all(np.isfinite(total)) and total[-1] < total[0]


def test_published_parameters_keep_the_plain_cold_unit_step_solver():
    p = FusionParams.published()
    assert (p.accel, p.tv_warm, p.step, p.n_tv, p.tol) == ("none", False, 1.0, 14, 0.0)


def test_batch_items_equal_their_solo_fusions_with_acceleration():
    sample = phantom((20, 20), dose=3.0, seed=9)
    params = FusionParams(lambda_tv=[0.005, 0.05], n_iter=60)
    batch = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    for i, tv in enumerate([0.005, 0.05]):
        solo = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params.replace(lambda_tv=tv))
        assert batch.n_iter[i] == solo.n_iter
        np.testing.assert_allclose(batch.maps[i], solo.maps, rtol=1e-4, atol=1e-5)


def _prox_iterations(monkeypatch):
    """Record the inner iterations and the number of maps of every prox call of the numba engine."""
    from fusex.backends.numba_engine import NumbaEngine

    calls = []
    real = NumbaEngine.tv_prox

    def counting(self, f, weight, n_iter, **kwargs):
        calls.append((f.shape[0], n_iter))
        return real(self, f, weight, n_iter, **kwargs)

    monkeypatch.setattr(NumbaEngine, "tv_prox", counting)
    return calls


CLIMBING = phantom((48, 48), dose=3.0, seed=0)  # with lambda_chem 0.04 and lambda_tv 0.1 its objective climbs


def test_an_objective_that_climbs_gets_more_inner_iterations_and_then_stops(monkeypatch):
    pytest.importorskip("numba")
    params = FusionParams(lambda_chem=0.04, lambda_tv=0.1, n_iter=500)
    calls = _prox_iterations(monkeypatch)
    held_params = params.replace(tv_growth=1)  # the inner iterations held at n_tv: the run never stops
    held = fusex.fuse(CLIMBING.haadf, CLIMBING.maps, elements=CLIMBING.elements, params=held_params, engine="numba")
    assert held.stop_reason == "n_iter" and {n for _, n in calls} == {params.n_tv}
    total = held.history.total.to_numpy()
    assert total[-1] > total.min() + 1e-5 * abs(total.min())  # the objective climbed above its lowest and stayed

    calls.clear()
    grown = fusex.fuse(CLIMBING.haadf, CLIMBING.maps, elements=CLIMBING.elements, params=params, engine="numba")
    inner = [n for _, n in calls]
    assert grown.stop_reason == "tol" and grown.n_iter < 100
    assert set(inner) <= {10, 20, 40, 80} and max(inner) > params.n_tv and inner == sorted(inner)
    assert grown.history.total.iloc[-1] < total[-1]
    recorded = grown.history.tv_iterations.to_numpy()
    assert recorded[0] == 0 and np.all(np.diff(recorded[1:]) >= 0) and recorded.max() == max(inner)
    assert set(held.history.tv_iterations.iloc[1:]) == {params.n_tv}


def test_items_of_a_batch_keep_their_own_inner_iterations(monkeypatch):
    pytest.importorskip("numba")
    params = FusionParams(lambda_chem=0.04, lambda_tv=[0.003, 0.1], n_iter=200)
    calls = _prox_iterations(monkeypatch)
    batch = fusex.fuse(CLIMBING.haadf, CLIMBING.maps, elements=CLIMBING.elements, params=params, engine="numba")
    solos = []
    for tv in (0.003, 0.1):
        calls.clear()
        one = params.replace(lambda_tv=tv)
        solo = fusex.fuse(CLIMBING.haadf, CLIMBING.maps, elements=CLIMBING.elements, params=one, engine="numba")
        solos.append((solo, [n for _, n in calls]))
    (steady, steady_inner), (_, climbing_inner) = solos
    assert set(steady_inner) == {params.n_tv}
    # the second item's inner iterations grow while the first still iterates
    assert climbing_inner.index(2 * params.n_tv) < steady.n_iter
    for i, (solo, _) in enumerate(solos):
        assert batch.n_iter[i] == solo.n_iter
        np.testing.assert_array_equal(batch.maps[i], solo.maps)


def test_the_generic_engine_splits_a_batch_by_inner_iterations_too():
    torch = pytest.importorskip("torch")

    params = FusionParams(lambda_chem=0.04, lambda_tv=[0.003, 0.1], n_iter=120)
    haadf, maps = (torch.asarray(a) for a in (CLIMBING.haadf, CLIMBING.maps))
    batch = fusex.fuse(haadf, maps, elements=CLIMBING.elements, params=params)
    for i, tv in enumerate([0.003, 0.1]):
        solo = fusex.fuse(haadf, maps, elements=CLIMBING.elements, params=params.replace(lambda_tv=tv))
        assert batch.n_iter[i] == solo.n_iter
        np.testing.assert_allclose(batch.maps[i].numpy(), solo.maps.numpy(), rtol=1e-5, atol=1e-6)
