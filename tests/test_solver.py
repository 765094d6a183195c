import math

import numpy as np
import pytest

import fusex
from fusex import ExponentialDecay, FusionDivergedError, FusionParams, PolynomialDecay
from fusex.datasets import phantom


@pytest.fixture(scope="module")
def sample():
    return phantom((48, 48), dose=3.0, seed=11)


def _fuse(sample, **params):
    return fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(**params))


def test_history_records_every_term_and_the_step(sample):
    res = _fuse(sample, n_iter=12, tol=0.0, step=ExponentialDecay(1.0, 0.1))
    h = res.history
    assert list(h.columns) == ["haadf", "poisson", "tv", "total", "step", "backtracks"]
    assert len(h) == 13 and res.n_iter == 12 and h.index[0] == 0
    lam_h = 1 / 3
    np.testing.assert_allclose(h.total, lam_h * h.haadf + 0.01 * h.poisson + 0.005 * h.tv, rtol=1e-12)
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
    with pytest.raises(FusionDivergedError, match="became"):
        _fuse(sample, n_iter=5, step=1e300)


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
