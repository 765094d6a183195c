import math

import array_api_compat.numpy as npx
import numpy as np
import pytest

import fusex
from fusex import ExponentialDecay, FusionDivergedError, FusionParams, PolynomialDecay
from fusex._eager import fuse_arrays
from fusex.datasets import phantom
from fusex.objectives import tv_magnitude
from fusex.operators import binomial_smooth
from fusex.xarray import label


@pytest.fixture(scope="module")
def sample():
    return phantom((48, 48), dose=3.0, seed=11)


def _fuse(sample, **params):
    return fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(**params))


def test_history_records_every_term_and_the_step(sample):
    res = _fuse(sample, n_iter=12, tol=0.0, step=ExponentialDecay(1.0, 0.1))
    h = res.history
    assert list(h.columns) == ["haadf", "poisson", "tv", "total", "step", "backtracks", "tv_iterations"]
    assert len(h) == 13 and res.n_iter == 12 and h.index[0] == 0
    lam_h, p = 1 / 3, res.params
    np.testing.assert_allclose(h.total, lam_h * h.haadf + p.lambda_chem * h.poisson + p.lambda_tv * h.tv, rtol=1e-12)
    np.testing.assert_allclose(h.step.iloc[1:], np.exp(-0.1 * np.arange(12)), rtol=1e-12)
    assert math.isnan(h.step.iloc[0])
    assert res.params.lambda_haadf == pytest.approx(lam_h)
    assert not res.converged and res.stop_reason == "n_iter"


def test_objective_decreases_with_default_parameters(sample):
    total = _fuse(sample, n_iter=40, tol=0.0).history.total.to_numpy()
    assert np.all(np.diff(total) <= 1e-9 * abs(total[0]))


def test_tol_stops_early_and_reports_convergence(sample):
    res = _fuse(sample, n_iter=500, tol=1e-4)
    assert res.converged and res.stop_reason == "tol" and res.n_iter < 500
    last, before = res.history.total.iloc[-1], res.history.total.iloc[-2]
    assert abs(before - last) / abs(before) < 1e-4


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (0.5, [0.5, 0.5, 0.5]),
        (PolynomialDecay(1.0, alpha=0.5, beta=2.0), [1.0, 3**-0.5, 5**-0.5]),
        (lambda k: 1.0 / (k + 1), [1.0, 0.5, 1 / 3]),
    ],
)
def test_step_schedules(sample, schedule, expected):
    res = _fuse(sample, n_iter=3, tol=0.0, step=schedule)
    np.testing.assert_allclose(res.history.step.iloc[1:], expected)


def test_too_large_step_raises_diverged_error_naming_the_step(sample):
    with pytest.raises(FusionDivergedError, match=r"step size 100\b.*smaller step") as info:
        _fuse(sample, n_iter=60, step=100.0, backtracking=False)
    assert info.value.step == 100.0
    assert info.value.iteration <= 60 and len(info.value.history) == info.value.iteration + 1


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_non_finite_step_result_raises(sample):
    # float64 holds x**gamma of this step's move, so the parameters pass and the squared residual overflows
    haadf, maps = sample.haadf.astype(np.float64), sample.maps.astype(np.float64)
    with pytest.raises(FusionDivergedError, match="became"):
        fusex.fuse(haadf, maps, elements=sample.elements, params=FusionParams(n_iter=5, step=1e100, backtracking=False))


def test_backtracking_rescues_a_step_that_makes_the_objective_nan(sample):
    # in float32 a step of 1e60 overflows x to inf, and the Poisson term to inf - inf = NaN
    with np.errstate(all="ignore"):
        res = _fuse(sample, n_iter=5, tol=0.0, step=1e60, backtracking=True, max_backtracks=250)
    assert res.history.backtracks.iloc[1] > 0 and np.all(np.isfinite(res.maps))


def test_backtracking_rescues_a_too_large_step(sample):
    res = _fuse(sample, n_iter=30, tol=0.0, step=100.0, backtracking=True)
    total = res.history.total.to_numpy()
    assert np.all(np.diff(total) <= 0)
    assert res.history.backtracks.sum() > 0
    assert res.history.step.iloc[-1] < 100.0


def test_callback_sees_each_iteration_and_can_stop(sample):
    seen = []

    def callback(k, state):
        seen.append((k, state.total, state.step, tuple(state.maps.shape)))
        return k == 4

    res = fusex.fuse(
        sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=50, tol=0.0), callback=callback
    )
    assert [s[0] for s in seen] == [1, 2, 3, 4]
    assert res.stop_reason == "callback" and res.n_iter == 4
    assert seen[-1][1] == pytest.approx(res.history.total.iloc[-1])
    assert seen[0][3] == (3, 48, 48)


def test_progress_bar_goes_to_stderr_and_nothing_to_stdout(sample, capsys):
    fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=3), progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert "fusex" in err


def test_solver_never_prints(sample, capsys):
    _fuse(sample, n_iter=3)
    assert capsys.readouterr() == ("", "")


# per-element weights: each map's own lambda_chem and lambda_tv, on every backend


def test_without_the_haadf_term_each_map_is_fused_alone_with_its_own_weights(backend):
    # lambda_haadf = 0 decouples the maps exactly (a fixed unit step, no backtracking, restart or early stop
    # that would couple them through the shared objective), so the per-element fusion of three maps
    # must equal three one-map fusions with scalar weights.
    sample = phantom((20, 24), seed=7)
    tv = {"Sr": 0.002, "Ti": 0.0, "O": 0.03}
    chem = {"Sr": 0.02, "Ti": 0.005, "O": 0.01}
    base = FusionParams(
        lambda_haadf=0.0, n_iter=12, step=1.0, accel="none", backtracking=False, tol=0.0, divergence_patience=0
    )
    haadf = backend.asarray(sample.haadf)
    for choice in backend.choices:
        res = fusex.fuse(
            haadf,
            backend.asarray(sample.maps),
            elements=sample.elements,
            params=base.replace(lambda_tv=tv, lambda_chem=chem),
            backend=choice,
        )
        for e, name in enumerate(sample.elements):
            alone = fusex.fuse(
                haadf,
                backend.asarray(sample.maps[e : e + 1]),
                elements=[name],
                params=base.replace(lambda_tv=tv[name], lambda_chem=chem[name]),
                backend=choice,
            )
            ours, theirs = backend.numpy(res.maps[e, ...]), backend.numpy(alone.maps[0, ...])
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_equal_per_element_weights_equal_shared_ones(backend):
    sample = phantom((24, 24), seed=8)
    args = (backend.asarray(sample.haadf), backend.asarray(sample.maps))
    shared = FusionParams(n_iter=20, lambda_tv=0.01, lambda_chem=0.02)
    mapped = shared.replace(
        lambda_tv=dict.fromkeys(sample.elements, 0.01), lambda_chem=dict.fromkeys(sample.elements, 0.02)
    )
    for choice in backend.choices:
        a = fusex.fuse(*args, elements=sample.elements, params=shared, backend=choice)
        b = fusex.fuse(*args, elements=sample.elements, params=mapped, backend=choice)
        np.testing.assert_allclose(backend.numpy(b.maps), backend.numpy(a.maps), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.history.total, a.history.total, rtol=1e-5)


def test_the_objective_weighs_each_maps_terms_by_its_own_weights():
    sample = phantom((24, 24), seed=9)
    tv = {"Sr": 0.001, "Ti": 0.01, "O": 0.05}
    params = FusionParams(n_iter=1, lambda_tv=tv, init="counts")
    res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    start = res.history.iloc[0]
    x0 = (sample.maps - sample.maps.min(axis=(1, 2), keepdims=True)) / np.ptp(sample.maps, axis=(1, 2), keepdims=True)
    per_map_tv = tv_magnitude(x0, npx).sum(axis=(1, 2))
    weighted = sum(tv[e] * per_map_tv[i] for i, e in enumerate(sample.elements))
    expected = start.haadf / 3 + res.params.lambda_chem * start.poisson + weighted
    assert start.tv == pytest.approx(per_map_tv.sum(), rel=1e-5)
    assert start.total == pytest.approx(expected, rel=1e-5)


def test_the_default_start_is_the_normalized_maps_blurred_twice_by_the_binomial_filter():
    sample = phantom((24, 24), seed=9)
    res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=1))
    x0 = (sample.maps - sample.maps.min(axis=(1, 2), keepdims=True)) / np.ptp(sample.maps, axis=(1, 2), keepdims=True)
    smoothed = binomial_smooth(binomial_smooth(x0, npx), npx)
    assert smoothed.sum() == pytest.approx(x0.sum(), rel=1e-2)  # the blur keeps the mass (edges replicated)
    assert res.history.iloc[0].tv == pytest.approx(tv_magnitude(smoothed, npx).sum(), rel=1e-5)


def test_a_smoothed_start_ends_lower_than_one_at_the_counts_at_one_count_per_column():
    sample = phantom((64, 64), lattice="rocksalt", dose=1.0, seed=8)
    counts = np.round(sample.maps)
    ends = {
        init: fusex.fuse(
            sample.haadf, counts, elements=sample.elements, params=FusionParams(init=init)
        ).history.total.iloc[-1]
        for init in ("counts", "smoothed")
    }
    assert ends["smoothed"] < ends["counts"]


def test_per_element_weights_with_a_batch_equal_item_by_item():
    sample = phantom((20, 20), seed=10)
    tv = {"Sr": [0.001, 0.02], "Ti": 0.005, "O": [0.01, 0.0]}
    params = FusionParams(n_iter=15, lambda_tv=tv)
    batch = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    assert batch.batch_shape == (2,)
    for n in range(2):
        one = batch.item(n)
        assert dict(one.params.lambda_tv) == {"Sr": tv["Sr"][n], "Ti": 0.005, "O": tv["O"][n]}
        alone = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=one.params)
        np.testing.assert_allclose(one.maps, alone.maps, rtol=1e-5, atol=1e-6)


def test_a_mapping_that_misses_a_map_is_refused_before_solving():
    sample = phantom((16, 16), seed=11)
    with pytest.raises(ValueError, match=r"lambda_chem gives values for \['Sr', 'Ti'\], but the maps are"):
        fusex.fuse(
            sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(lambda_chem={"Sr": 1, "Ti": 2})
        )


def test_labeled_results_carry_the_per_element_weights():
    sample = phantom((16, 16), seed=12)
    ds = fusex.fuse(
        label(sample.haadf, sample.maps, sample.elements),
        params=FusionParams(n_iter=3, lambda_tv={"Sr": 0.01, "Ti": 0.02, "O": 0.03}),
    )
    assert ds["param_lambda_tv"].dims == ("element",)
    np.testing.assert_allclose(ds["param_lambda_tv"].sel(element="O"), 0.03)
    assert "lambda_tv" not in ds.attrs and '"O": 0.03' in ds.attrs["fusex_params"]


def test_the_divergence_advice_follows_the_settings_in_force(sample):
    haadf, maps = sample.haadf.astype(np.float64), sample.maps.astype(np.float64)
    with pytest.raises(FusionDivergedError) as info:
        with np.errstate(all="ignore"):
            # the plain solver with a unit step on the unfitted model: the accelerated one with its Lipschitz step,
            # or the gain refitted every iteration, copes with this weight
            params = FusionParams(n_iter=30, lambda_haadf=1e30, step=1.0, accel="none", tv_warm=False, refit_every=0)
            fusex.fuse(haadf, maps, elements=sample.elements, params=params)
    message = str(info.value)
    assert "backtracking=True" not in message  # it is on already
    assert "Backtracking is on" in message and "lambda_haadf=1e+30" in message and "max_backtracks, now 20" in message
    with pytest.raises(FusionDivergedError, match=r"or backtracking=True; or lower the weights in force") as info:
        _fuse(sample, n_iter=60, step=100.0, backtracking=False)
    assert "decaying schedule" in str(info.value)
    with pytest.raises(FusionDivergedError) as info:
        _fuse(sample, n_iter=60, step=ExponentialDecay(100.0, 1e-9), backtracking=False)
    assert "decaying schedule" not in str(info.value)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"eps": 1e-300}, r"FusionParams.eps=1e-300 is below the smallest normal number of the compute dtype float32"),
        ({"lambda_chem": 1e30}, r"FusionParams.lambda_chem=1e\+30 with eps=0.01 cannot be computed in float32"),
    ],
)
def test_parameters_float32_cannot_hold_are_refused_before_solving(sample, changes, match):
    assert sample.maps.dtype == np.float32
    seen = []
    with pytest.raises(ValueError, match=match):
        fusex.fuse(
            sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(**changes), callback=seen.append
        )
    assert not seen


@pytest.mark.parametrize(("returned", "kind"), [(None, "NoneType"), (np.ones(2), "ndarray")])
def test_a_step_schedule_returning_no_number_names_step(sample, returned, kind):
    with pytest.raises(TypeError, match=rf"FusionParams.step returned .* \({kind}\) at iteration 0"):
        _fuse(sample, n_iter=3, step=lambda k: returned)


def test_a_callback_sees_read_only_numpy_views(sample):
    flags = []

    def callback(k, state):
        flags.append(state.maps.flags.writeable)
        with pytest.raises(ValueError, match="read-only"):
            state.maps[...] = 0

    _fuse(sample, n_iter=3, tol=0.0)
    fusex.fuse(
        sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=3, tol=0.0), callback=callback
    )
    assert flags == [False, False, False]


def test_a_batch_callback_sees_read_only_arrays(sample):
    seen = []

    def callback(k, state):
        seen.append([a.flags.writeable for a in (state.maps, state.total, state.step, state.items, state.haadf)])

    params = FusionParams(n_iter=2, tol=0.0, lambda_tv=[0.01, 0.02])
    fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, callback=callback)
    assert seen == [[False] * 5] * 2


def test_a_callback_cannot_change_the_fusion(sample, backend):
    haadf, maps = backend.asarray(sample.haadf), backend.asarray(sample.maps)
    params = FusionParams(n_iter=4, tol=0.0)

    def vandal(k, state):
        try:
            state.maps[...] = 0  # a copy on backends without read-only arrays
        except ValueError:
            pass  # a read-only NumPy view

    plain = fusex.fuse(haadf, maps, elements=sample.elements, params=params)
    watched = fusex.fuse(haadf, maps, elements=sample.elements, params=params, callback=vandal)
    np.testing.assert_array_equal(backend.numpy(watched.maps), backend.numpy(plain.maps))


@pytest.mark.parametrize("answer", [True, np.True_, 1, np.int64(2), 0.5, np.float32(1.0), np.array(True)])
def test_any_true_boolean_or_non_zero_number_stops(sample, answer):
    res = _fuse_with_callback(sample, lambda k, state: answer)
    assert res.stop_reason == "callback" and res.n_iter == 1


@pytest.mark.parametrize("answer", [None, False, np.False_, 0, np.int64(0), 0.0, np.array(0)])
def test_none_false_or_zero_goes_on(sample, answer):
    res = _fuse_with_callback(sample, lambda k, state: answer)
    assert res.stop_reason == "n_iter" and res.n_iter == 3


@pytest.mark.parametrize("answer", ["stop", [True], np.array([True, False]), {"stop": True}])
def test_any_other_callback_answer_raises_naming_callback(sample, answer):
    with pytest.raises(TypeError, match=r"`callback` returned .* return True or a non-zero number to stop"):
        _fuse_with_callback(sample, lambda k, state: answer)


def _fuse_with_callback(sample, callback):
    params = FusionParams(n_iter=3, tol=0.0)
    return fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, callback=callback)


@pytest.mark.parametrize("holes", [False, True])
def test_a_given_start_replaces_the_start_of_init_wherever_it_is_not_nan(holes):
    sample = phantom((24, 24), seed=13)
    start = np.full((1, *sample.maps.shape), 0.3, dtype=sample.maps.dtype)
    if holes:
        start[0, 1] = np.nan  # this map starts from its counts, smoothed or not as init says
    maps = {
        init: fuse_arrays(
            sample.haadf,
            sample.maps,
            elements=sample.elements,
            params=FusionParams(n_iter=2, tol=0.0, init=init),
            start=start,
        ).maps
        for init in ("counts", "smoothed")
    }
    assert np.array_equal(maps["counts"], maps["smoothed"]) != holes
