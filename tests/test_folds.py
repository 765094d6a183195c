"""The held-out scores of count splits: what they estimate, checked against a known truth."""

import numpy as np
import pytest

from fusex._folds import Folds, PixelHoldOut, _heldout_nrmse, pixel_masks
from fusex.datasets import nrmse
from fusex.tune import split_counts


def _smooth_truth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    centres = rng.uniform(0, shape[0], (30, 2))
    peaks = sum(np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 8.0) for cy, cx in centres)
    return peaks / peaks.max()


def _fits_with_known_errors(rng, truth, folds, levels):
    """Per fold, the truth in other units plus independent errors of the given relative sizes."""
    estimate = np.empty((folds, levels.size, 1, *truth.shape))
    for k in range(folds):
        for i, level in enumerate(levels):
            estimate[k, i, 0] = 3.0 * (truth + level * truth.std() * rng.standard_normal(truth.shape)) + 7.0
    actual = [nrmse(estimate[k, :, 0], np.broadcast_to(truth, estimate[k, :, 0].shape)) for k in range(folds)]
    return estimate, np.mean(np.square(actual), axis=0)


@pytest.mark.parametrize("dose", [2.0, 10.0, 50.0])
def test_the_heldout_estimate_is_unbiased_for_the_squared_nrmse(dose):
    """Fits with known errors, scored on thinned Poisson counts, get their NRMSE back on average."""
    rng = np.random.default_rng(int(dose))
    truth = _smooth_truth(rng, (64, 64))
    levels = np.array([0.1, 0.3, 0.6])
    estimated, actual = [], []
    for _ in range(40):
        split = split_counts(rng.poisson(dose * truth)[None], 4, rng)
        estimate, squared = _fits_with_known_errors(rng, truth, 4, levels)
        estimated.append(
            np.square(_heldout_nrmse(estimate, split)[:, 0]) * np.sign(_heldout_nrmse(estimate, split)[:, 0])
        )
        actual.append(squared)
    estimated, actual = np.array(estimated), np.array(actual)
    # unbiased: the mean over random acquisitions is the true squared NRMSE, to within its standard error
    standard_error = estimated.std(axis=0) / np.sqrt(len(estimated))
    assert np.all(np.abs(estimated.mean(axis=0) - actual.mean(axis=0)) < 4 * standard_error + 1e-3)
    # much of one acquisition's noise is common to all candidates: their differences are more precise
    differences = (estimated - estimated[:, :1]) - (actual - actual[:, :1])
    assert np.all(np.abs(differences[:, 1:]).mean(axis=0) < np.abs(estimated - actual)[:, 1:].mean(axis=0))
    assert np.all(np.diff(estimated, axis=1) > 0)


def test_a_constant_estimate_scores_about_one():
    rng = np.random.default_rng(5)
    truth = _smooth_truth(rng, (64, 64))
    split = split_counts(rng.poisson(20.0 * truth)[None], 3, rng)
    flat = np.full((3, 1, 1, *truth.shape), 2.0)
    assert _heldout_nrmse(flat, split)[0, 0] == pytest.approx(1.0, abs=0.03)


def _folds(rng, truth, dose, k=4):
    counts = rng.poisson(dose * truth)[None]
    split = split_counts(counts, k, rng)
    return Folds(truth, (counts[None] - split).astype(np.float64), split, np, None), counts


def test_the_raw_scale_score_ranks_a_2x_inflated_fit_below_the_true_scale():
    """The affine-invariant estimate cannot tell a map from twice that map; the raw-scale one can."""
    rng = np.random.default_rng(3)
    truth = _smooth_truth(rng, (48, 48))
    folds, _ = _folds(rng, truth, 10.0)
    right = 10.0 * truth * 3 / 4  # the expected counts each fit sees, (K-1)/K of the dose
    estimate = np.stack([np.stack([right, 2.0 * right])[:, None]] * 4)  # (K, 2 candidates, E=1, H, W)
    parts = folds.parts(estimate)
    score = folds.values(parts)[:, 0]
    se = parts[:, :, 0].std(axis=0, ddof=1) / 2 / folds.denominator[0]  # over the K = 4 folds
    # the truth errs by nothing (within the score's noise); the inflated map by far more than the raw counts
    assert abs(score[0]) < 3 * se[0] and score[1] - 3 * se[1] > 2.0
    affine = _heldout_nrmse(estimate, folds.split)[:, 0]
    assert affine[0] == pytest.approx(affine[1])


@pytest.mark.parametrize("dose", [1.0, 5.0])
def test_the_raw_scale_score_is_unbiased_and_the_raw_map_scores_its_dose_ratio(dose):
    """Over acquisitions, fits with a known error get it back; a fold's raw counts score K/(K-1) (1 at full dose)."""
    rng = np.random.default_rng(int(dose * 10))
    truth = _smooth_truth(rng, (40, 40))
    estimated, actual, raw = [], [], []
    for _ in range(30):
        folds, counts = _folds(rng, truth, dose)
        error = 0.5 * dose * truth.std() * rng.standard_normal(truth.shape)
        fit = (dose * truth + error) * 3 / 4
        estimate = np.stack([np.stack([fit, folds.fit[k, 0]])[:, None] for k in range(4)])  # raw: its own counts
        values = folds.values(folds.parts(estimate))[:, 0]
        estimated.append(values[0])
        actual.append(np.sum(error**2) / counts.sum())
        raw.append(values[1])
    estimated, actual, raw = map(np.asarray, (estimated, actual, raw))
    se = estimated.std() / np.sqrt(len(estimated))
    assert abs(estimated.mean() - actual.mean()) < 4 * se + 1e-3
    assert raw.mean() == pytest.approx(4 / 3, abs=4 * raw.std() / np.sqrt(len(raw)) + 0.02)


def test_the_signal_variance_is_not_floored_and_comes_with_its_noise():
    rng = np.random.default_rng(2)
    flat = np.ones((40, 40))
    folds, _ = _folds(rng, flat, 2.0)
    signal, noise = folds.signal
    assert abs(signal[0]) < 3 * noise[0]  # a flat map: no signal, and its estimate can be negative
    structured, _ = _folds(rng, _smooth_truth(rng, (40, 40)), 20.0)
    signal, noise = structured.signal
    assert signal[0] > 5 * noise[0]


def test_the_pixel_holdout_never_shows_a_fit_the_pixels_it_scores():
    rng = np.random.default_rng(4)
    maps = rng.normal(size=(2, 16, 16))
    masks = pixel_masks((16, 16), 4, rng)
    assert masks.shape == (4, 16, 16) and np.all(masks.sum(axis=(1, 2)) == 16)
    assert len({m.tobytes() for m in masks}) == 4  # distinct sub-grids
    changed = maps.copy()
    changed[:, masks[0]] += 100.0  # the hidden pixels of mask 0 take other values
    first = PixelHoldOut(maps[0], maps, masks, np, None).inputs[0]
    second = PixelHoldOut(maps[0], changed, masks, np, None).inputs[0]
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="at most 16"):
        pixel_masks((16, 16), 17, rng)


def test_the_pixel_holdout_loss_sees_scale_and_matches_predicting_the_mean():
    rng = np.random.default_rng(5)
    truth = _smooth_truth(rng, (48, 48))
    maps = (truth + 0.05 * rng.standard_normal(truth.shape))[None]
    hold = PixelHoldOut(truth, maps, pixel_masks(truth.shape, 4, rng), np, None)
    mean = np.full((4, 3, 1, 48, 48), maps.mean())
    mean[:, 1] = truth
    mean[:, 2] = 2 * truth
    loss = hold.values(hold.parts(mean))[:, 0]
    assert loss[0] == pytest.approx(1.0, abs=0.1)  # predicting the mean: 1 by construction
    assert loss[1] < 0.2 < 1.0 < loss[2]
