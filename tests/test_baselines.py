"""The simple alternatives to fusion in `fusex.baselines`: blurs with a chosen width, and Poisson-TV alone."""

import numpy as np
import pytest
from scipy import ndimage

from fusex import baselines
from fusex.datasets import nrmse, phantom

pytest.importorskip("skimage", reason="the J-invariant loss uses scikit-image")


def _smooth(seed, shape=(2, 64, 64), low=1.0, high=7.0):
    """Smooth non-negative maps (a blurred random field) and Poisson counts of them."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), (0, 4, 4))
    lo, hi = field.min(axis=(1, 2), keepdims=True), field.max(axis=(1, 2), keepdims=True)
    mean = low + (high - low) * (field - lo) / (hi - lo)
    return mean, rng.poisson(mean).astype(np.float64)


def _steps(sigmas, chosen, reference):
    grid = list(sigmas)
    return np.abs(np.array([grid.index(a) - grid.index(b) for a, b in zip(chosen, reference)]))


def test_gaussian_keeps_totals_and_zero_width_is_identity():
    _, counts = _smooth(0)
    blurred = baselines.gaussian(counts, [2.0, 0.0])
    np.testing.assert_allclose(blurred.sum(axis=(1, 2)), counts.sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_array_equal(blurred[1], counts[1])
    assert blurred[0].std() < 0.8 * counts[0].std()
    assert baselines.gaussian(counts[0], 1.0).shape == counts[0].shape


def test_truth_chosen_gaussian_beats_raw_on_a_phantom():
    sample = phantom((48, 48), dose=3.0, background=0.05, seed=1)
    truth = 3.0 * sample.truth + 0.05
    choice = baselines.gaussian_truth(sample.maps, truth)
    assert np.all(nrmse(choice.maps, truth) < 0.8 * nrmse(sample.maps, truth))
    assert np.all(choice.sigma > 0)
    assert choice.scores.shape == (len(baselines.DEFAULT_SIGMAS), 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_count_split_sigma_is_near_the_truth_chosen_one_on_smooth_maps(seed):
    mean, counts = _smooth(seed)
    data = baselines.gaussian_counts(counts)
    oracle = baselines.gaussian_truth(counts, mean)
    assert np.all(_steps(baselines.DEFAULT_SIGMAS, data.sigma, oracle.sigma) <= 1)
    assert np.all(np.isfinite(data.spread)) and np.all(data.spread >= 0)
    np.testing.assert_allclose(data.maps, baselines.gaussian(counts, data.sigma))


@pytest.mark.parametrize("seed", [0, 1])
def test_jinvariant_loss_is_smallest_near_the_truth_chosen_sigma(seed):
    mean, _ = _smooth(seed)
    noisy = mean + np.random.default_rng(10 + seed).normal(0.0, 1.0, mean.shape)
    data = baselines.gaussian_jinvariant(noisy)
    oracle = baselines.gaussian_truth(noisy, mean)
    assert np.all(_steps(baselines.DEFAULT_SIGMAS, data.sigma, oracle.sigma) <= 1)
    assert np.all(data.sigma > 0)


def test_jinvariant_loss_of_white_noise_matches_theory():
    # with no signal, a pixel predicted by the mean of its 4 neighbours errs by 1 + 1/4 variances,
    # and the map's mean by 1
    noise = np.random.default_rng(3).normal(size=(1, 96, 96))
    neighbours = baselines.jinvariant_loss(noise, lambda m: m)
    constant = baselines.jinvariant_loss(noise, lambda m: np.full_like(m, noise.mean()))
    assert neighbours.value[0] == pytest.approx(1.25, abs=0.06)
    assert constant.value[0] == pytest.approx(1.0, abs=0.01)
    assert 0 < neighbours.spread[0] < 0.1


def test_count_splitting_refuses_maps_that_are_not_counts():
    mean, _ = _smooth(0)
    with pytest.raises(ValueError, match="raw counts"):
        baselines.gaussian_counts(mean)


@pytest.mark.parametrize("sigmas", [[], [-1.0], [[1.0]]])
def test_bad_sigmas_are_refused(sigmas):
    _, counts = _smooth(0)
    with pytest.raises(ValueError, match="sigmas"):
        baselines.gaussian_truth(counts, counts, sigmas)


def test_truth_of_another_shape_is_refused():
    _, counts = _smooth(0)
    with pytest.raises(ValueError, match="truth"):
        baselines.gaussian_truth(counts, counts[:1])


def test_inputs_are_not_mutated():
    mean, counts = _smooth(2, shape=(2, 32, 32))
    before_counts, before_mean = counts.copy(), mean.copy()
    baselines.gaussian(counts, 1.0)
    baselines.gaussian_counts(counts, (0.0, 1.0))
    baselines.gaussian_truth(counts, mean, (0.0, 1.0))
    baselines.gaussian_jinvariant(mean, (0.0, 1.0))
    baselines.jinvariant_loss(mean, lambda m: m * 0.5)
    np.testing.assert_array_equal(counts, before_counts)
    np.testing.assert_array_equal(mean, before_mean)


def test_poisson_tv_ignores_the_haadf_image_and_smooths():
    sample = phantom((32, 32), dose=3.0, seed=4)
    maps = sample.maps.copy()
    first = baselines.poisson_tv(maps, sample.haadf, elements=sample.elements)
    other = baselines.poisson_tv(maps, sample.haadf[::-1], elements=sample.elements)
    default = baselines.poisson_tv(maps, elements=sample.elements)
    np.testing.assert_allclose(first, other, atol=1e-5)
    np.testing.assert_allclose(first, default, atol=1e-5)
    assert first.shape == maps.shape
    assert np.all(first.std(axis=(1, 2)) < maps.std(axis=(1, 2)))
    np.testing.assert_array_equal(maps, sample.maps)
