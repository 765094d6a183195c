"""Parameter choice by count splitting: the splits, the criterion, and its accuracy on phantoms."""

import json

import numpy as np
import pytest
import xarray as xr

import fusex
from fusex.datasets import nrmse, phantom
from fusex.params import PerElement
from fusex.tune import DEFAULT_GRID, split_counts, tune

SMALL_GRID = {"lambda_tv": [0.002, 0.01, 0.05], "lambda_chem": [0.005, 0.02]}


def test_count_splits_are_exact_and_balanced():
    counts = np.random.default_rng(0).poisson(7.0, (3, 40, 50))
    folds = split_counts(counts, 4, np.random.default_rng(1))
    assert folds.shape == (4, 3, 40, 50) and folds.dtype == np.int64 and folds.min() >= 0
    np.testing.assert_array_equal(folds.sum(axis=0), counts)
    np.testing.assert_allclose(folds.sum(axis=(1, 2, 3)) / counts.sum(), 0.25, atol=0.01)
    # thinned Poisson counts are Poisson: mean = variance in each fold
    assert folds[0].var() == pytest.approx(folds[0].mean(), rel=0.05)


def test_maps_that_are_not_counts_are_refused():
    sample = phantom((24, 24), seed=0)
    with pytest.raises(ValueError, match=r"raw counts.*normalization"):
        tune(sample.haadf, sample.maps / sample.maps.max(), elements=sample.elements, grid=SMALL_GRID)
    with pytest.raises(ValueError, match="one acquisition"):
        tune(np.stack([sample.haadf] * 2), np.stack([sample.maps] * 2), elements=sample.elements)
    with pytest.raises(ValueError, match="`grid` may vary"):
        tune(sample.haadf, sample.maps, elements=sample.elements, grid={"n_iter": [10, 20]})
    with pytest.raises(TypeError, match="`maps` is missing"):
        tune(sample.haadf)
    with pytest.raises(ValueError, match="`folds` must be an integer >= 2"):
        tune(sample.haadf, sample.maps, elements=sample.elements, folds=1)


def test_search_is_one_batched_call_with_a_labeled_score_surface(monkeypatch):
    sample = phantom((32, 32), dose=4.0, seed=2)
    calls = []
    fuse = fusex.api.fuse

    def spy(haadf, maps, **kwargs):
        calls.append(tuple(np.shape(maps)))
        return fuse(haadf, maps, **kwargs)

    monkeypatch.setattr(fusex.api, "fuse", spy)
    res = tune(sample.haadf, sample.maps, elements=sample.elements, grid=SMALL_GRID, folds=3, per_element=False)
    assert calls == [(3, 1, 1, 3, 32, 32), (3, 32, 32)]  # the whole search, then the refit
    scores = res.scores
    assert isinstance(scores, xr.Dataset) and scores.total.dims == ("lambda_tv", "lambda_chem")
    assert scores.nrmse.dims == ("lambda_tv", "lambda_chem", "element") and scores.attrs["score"] == "nrmse"
    np.testing.assert_allclose(scores.total, scores.nrmse.mean("element"))
    i, j = np.unravel_index(int(np.nanargmin(scores.total.values)), scores.total.shape)
    assert res.params.lambda_tv == scores.lambda_tv.values[i] and res.params.lambda_chem == scores.lambda_chem.values[j]
    assert res.result.params.lambda_tv == res.params.lambda_tv


def test_each_element_gets_its_own_pick_when_that_scores_better():
    sample = phantom((48, 48), lattice="rocksalt", dose=5.0, seed=2)
    res = tune(sample.haadf, sample.maps, elements=sample.elements, folds=3, refit=False)
    scores = res.scores
    assert scores.attrs["per_element"] == 1
    assert scores.attrs["per_element_total"] < scores.attrs["shared_total"]
    assert scores.attrs["shared_total"] == pytest.approx(float(scores.total.min()))
    for element in sample.elements:
        own = scores.nrmse.sel(element=element)
        i, j = np.unravel_index(int(np.nanargmin(own.values)), own.shape)
        assert res.params.lambda_tv[element] == own.lambda_tv.values[i]
        assert res.params.lambda_chem[element] == own.lambda_chem.values[j]
    shared = tune(sample.haadf, sample.maps, elements=sample.elements, folds=3, refit=False, per_element=False)
    assert isinstance(shared.params.lambda_tv, float) and shared.params.lambda_tv == scores.attrs["chosen_lambda_tv"]


def test_per_element_picks_keep_other_grid_fields_at_the_shared_choice():
    sample = phantom((32, 32), dose=4.0, seed=5)
    grid = {"gamma": [1.5, 1.7, 1.9], "lambda_tv": [0.002, 0.005, 0.01, 0.02, 0.05]}
    res = tune(sample.haadf, sample.maps, elements=sample.elements, grid=grid, folds=2, refit=False)
    gamma = res.scores.attrs["chosen_gamma"]
    assert res.params.gamma == gamma
    picks = json.loads(res.scores.attrs["per_element_lambda_tv"])
    for element in sample.elements:
        own = res.scores.nrmse.sel(element=element, gamma=gamma)
        assert picks[element] == float(own.lambda_tv[int(np.nanargmin(own.values))])
    assert picks != dict.fromkeys(sample.elements, res.scores.attrs["chosen_lambda_tv"])


def test_the_deviance_criterion_weights_each_element_by_its_signal_variance():
    sample = phantom((32, 32), dose=4.0, seed=2)
    res = tune(sample.haadf, sample.maps, elements=sample.elements, grid=SMALL_GRID, folds=2, criterion="deviance")
    scores = res.scores
    assert scores.attrs["score"] == "deviance" and "nrmse" not in scores
    np.testing.assert_allclose(scores.total, (scores.deviance / scores.signal_variance).sum("element"))
    assert np.all(scores.deviance.values > 0)
    with pytest.raises(ValueError, match="`criterion` must be one of"):
        tune(sample.haadf, sample.maps, elements=sample.elements, grid=SMALL_GRID, criterion="likelihood")


def test_the_average_of_the_fold_fits_is_in_counts_of_the_full_dose():
    sample = phantom((32, 32), dose=6.0, seed=9)
    res = tune(sample.haadf, sample.maps, elements=sample.elements, grid=SMALL_GRID, folds=4, refit=False)
    assert res.average.shape == sample.maps.shape and res.average.min() >= 0
    # the affine fits preserve each fold's total; clipping their negative values at zero adds a little
    totals, counts = res.average.sum(axis=(1, 2)), sample.maps.sum(axis=(1, 2))
    assert np.all(totals >= counts * (1 - 1e-6)) and np.all(totals <= 1.03 * counts)
    assert np.all(nrmse(res.average, sample.truth) < nrmse(sample.maps, sample.truth))


def test_maps_given_as_a_mapping_name_the_elements():
    sample = phantom((24, 24), dose=4.0, seed=6)
    res = tune(sample.haadf, dict(zip(sample.elements, sample.maps)), grid=SMALL_GRID, folds=2, refit=False)
    assert list(res.scores.element.values) == list(sample.elements)


def test_fuse_auto_returns_the_tuned_fusion():
    sample = phantom((32, 32), dose=4.0, seed=3)
    auto = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params="auto")
    tuned = tune(sample.haadf, sample.maps, elements=sample.elements)
    assert auto.params == tuned.result.params
    np.testing.assert_array_equal(auto.maps, tuned.result.maps)
    lambda_tv = auto.params.lambda_tv
    assert set(lambda_tv.values() if isinstance(lambda_tv, PerElement) else [lambda_tv]) <= set(
        DEFAULT_GRID["lambda_tv"]
    )
    with pytest.raises(ValueError, match="'auto'"):
        fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params="best")


def test_tune_runs_on_every_backend(xp, monkeypatch):
    sample = phantom((24, 24), dose=4.0, seed=4)
    seen = []
    fuse = fusex.api.fuse

    def spy(haadf, maps, **kwargs):
        seen.append(type(maps))
        return fuse(haadf, maps, **kwargs)

    ref = tune(sample.haadf, sample.maps, elements=sample.elements, grid=SMALL_GRID, folds=2)
    monkeypatch.setattr(fusex.api, "fuse", spy)
    res = tune(xp.asarray(sample.haadf), xp.asarray(sample.maps), elements=sample.elements, grid=SMALL_GRID, folds=2)
    assert len(seen) >= 2 and set(seen) == {type(xp.asarray(sample.maps))}  # the search too runs there
    assert res.params == ref.params
    np.testing.assert_allclose(res.scores.total, ref.scores.total, rtol=1e-3)
    assert type(res.result.maps) is type(res.average) is type(xp.asarray(sample.maps))
    np.testing.assert_allclose(xp.numpy(res.average), ref.average, rtol=1e-3, atol=1e-3)


def test_score_surface_plot():
    pytest.importorskip("matplotlib")
    sample = phantom((24, 24), dose=4.0, seed=5)
    res = tune(sample.haadf, sample.maps, elements=sample.elements, grid=SMALL_GRID, folds=2, refit=False)
    assert res.result is None
    fig = res.plot()
    assert fig.axes and fig.axes[0].get_xlabel() == "lambda_chem"
    one = tune(sample.haadf, sample.maps, elements=sample.elements, grid={"lambda_tv": [0.002, 0.01]}, folds=2)
    assert one.plot().axes[0].get_xlabel() == "lambda_tv"


# Both lattices at 2, 5 and 20 counts per column, including the cases an earlier criterion missed.
# scripts/tune_accuracy.py runs the full sweep (36 cases, seeds 1-6: both estimates meet both bounds in
# every one); docs/tuning.md shows it.
ACCURACY_CASES = [
    ("perovskite", 2.0, 1),
    ("perovskite", 2.0, 3),
    ("perovskite", 5.0, 2),
    ("perovskite", 20.0, 3),
    ("rocksalt", 2.0, 2),
    ("rocksalt", 5.0, 1),
    ("rocksalt", 20.0, 1),
]


@pytest.mark.parametrize(("lattice", "dose", "seed"), ACCURACY_CASES)
def test_tuned_parameters_are_close_to_the_best_chosen_with_the_truth(lattice, dose, seed):
    sample = phantom((96, 96), lattice=lattice, dose=dose, seed=seed)
    tvs, chems = (np.asarray(DEFAULT_GRID[k]) for k in ("lambda_tv", "lambda_chem"))
    grid = fusex.FusionParams(lambda_tv=tvs[:, None].tolist(), lambda_chem=chems.tolist())
    every = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=grid, on_divergence="mark")
    fused = every.to_input_units()
    errors = np.array([[nrmse(fused[i, j], sample.truth) for j in range(chems.size)] for i in range(tvs.size)])
    oracle = errors[np.unravel_index(np.nanargmin(errors.mean(axis=-1)), errors.shape[:2])]
    raw = nrmse(sample.maps, sample.truth)

    tuned = tune(sample.haadf, sample.maps, elements=sample.elements)
    for name, estimate in (("fusion", tuned.result.to_input_units()), ("fold average", tuned.average)):
        mine = nrmse(estimate, sample.truth)
        assert np.all(mine <= 1.15 * oracle), f"{name}: tuned {mine} vs oracle {oracle}"
        assert np.all(mine < raw), f"{name}: tuned {mine} vs raw {raw}"


def test_labeled_input_gives_a_labeled_fusion():
    from fusex.xarray import label

    sample = phantom((24, 24), dose=4.0, seed=7)
    ds = label(sample.haadf, sample.maps, sample.elements)
    res = tune(ds, grid=SMALL_GRID, folds=2, per_element=False)
    plain = tune(sample.haadf, sample.maps, elements=sample.elements, grid=SMALL_GRID, folds=2, per_element=False)
    assert isinstance(res.result, xr.Dataset) and res.params == plain.params
    assert res.result.attrs["lambda_tv"] == plain.params.lambda_tv
    np.testing.assert_allclose(res.result.maps.values, plain.result.to_input_units(), rtol=1e-6)  # input units
    assert isinstance(res.average, xr.DataArray) and res.average.dims == ds.maps.dims
    np.testing.assert_array_equal(res.average.values, plain.average)


def test_other_fields_can_be_searched_and_raw_units_are_fine():
    sample = phantom((24, 24), dose=4.0, seed=8)
    res = tune(sample.haadf, sample.maps, elements=sample.elements, grid={"gamma": [1.4, 1.7, 2.0]}, folds=2)
    assert res.scores.total.dims == ("gamma",) and res.params.gamma in (1.4, 1.7, 2.0)
    raw = tune(
        sample.haadf,
        sample.maps,
        elements=sample.elements,
        params=fusex.FusionParams(normalize="none"),
        grid=SMALL_GRID,
        folds=2,
    )
    assert np.all(np.isfinite(raw.scores.total.values) | raw.scores.diverged.values)
