"""The held-out scores of count splits: what they estimate, checked against a known truth."""

import numpy as np
import pytest

from fusex._folds import _heldout_nrmse
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
