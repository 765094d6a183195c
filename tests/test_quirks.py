"""Real-data quirks: saturated HAADF pixels, all-zero maps and negative map values."""

import warnings

import numpy as np
import pytest

import fusex
from fusex import FusionParams
from fusex.xarray import label

PARAMS = FusionParams(n_iter=8)


@pytest.fixture(scope="module")
def sample():
    return fusex.datasets.phantom((24, 20), seed=1)


def _uint16_haadf(sample, n_saturated=7):
    """The phantom's HAADF as uint16 counts, with ``n_saturated`` pixels clipped at 65535; and their mask."""
    # clipped at 0 first: the phantom's noise dips below 0, which would wrap around to bright uint16 pixels
    h = np.round(np.clip(sample.haadf, 0, None) / sample.haadf.max() * 40000).astype(np.uint16)
    mask = np.zeros(h.shape, dtype=bool)
    mask.flat[np.random.default_rng(0).choice(h.size, n_saturated, replace=False)] = True
    h[mask] = np.iinfo(np.uint16).max
    return h, mask


def test_saturated_pixels_of_an_integer_haadf_are_found_reported_and_left_out(sample):
    haadf, mask = _uint16_haadf(sample)
    before = haadf.copy()
    with pytest.warns(UserWarning, match=r"`haadf` has 7 saturated pixels \(at 65535"):
        res = fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS)
    np.testing.assert_array_equal(haadf, before)  # the caller's image is untouched
    assert res.saturated == 7
    # the min-max normalization ignores them: the range is that of the other pixels
    assert res.scale["haadf"] == (float(haadf[~mask].min()), float(haadf[~mask].max() - haadf[~mask].min()))
    # left out of the HAADF term: whatever the saturated pixels hold, the fusion is the same
    other = haadf.astype(np.float32)
    other[mask] = 3.0e4
    with pytest.warns(UserWarning, match="7 saturated pixels"):
        explicit = fusex.fuse(other, sample.maps, elements=sample.elements, params=PARAMS, saturated=mask)
    np.testing.assert_allclose(explicit.maps, res.maps, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS, saturated=None)
    assert kept.saturated == 0
    assert np.max(np.abs(kept.maps - res.maps)) > 1e-3


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch"])
def test_every_engine_leaves_the_masked_pixels_out(sample, backend):
    if backend != "numpy":
        pytest.importorskip(backend)
    haadf, _ = _uint16_haadf(sample, 30)
    with pytest.warns(UserWarning, match="30 saturated"):
        res = fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS, backend=backend)
    unmasked = fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS, saturated=None)
    assert res.engine == ("numba" if backend == "numba" else "generic")
    assert np.max(np.abs(res.maps - unmasked.maps)) > 1e-3
    with pytest.warns(UserWarning, match="30 saturated"):
        reference = fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS, backend="numpy")
    np.testing.assert_allclose(res.maps, reference.maps, rtol=2e-5, atol=2e-6)


def test_one_pixel_at_the_dtype_maximum_is_not_taken_for_saturation(sample):
    haadf, mask = _uint16_haadf(sample, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS)
    assert res.saturated == 0 and res.scale["haadf"][0] + res.scale["haadf"][1] == 65535
    with pytest.warns(UserWarning, match="1 saturated pixels"):  # unless the caller says so
        assert fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS, saturated=mask).saturated == 1


def test_a_threshold_or_a_float_image(sample):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float images are never taken as saturated by default
        res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=PARAMS)
    assert res.saturated == 0
    level = float(np.quantile(sample.haadf, 0.9))
    expected = int(np.sum(sample.haadf >= level))
    with pytest.warns(UserWarning, match=f"{expected} saturated pixels .*at or above saturated="):
        res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=PARAMS, saturated=level)
    assert res.saturated == expected


def test_a_batch_with_a_mask_per_item_matches_each_item_alone(sample):
    haadf, _ = _uint16_haadf(sample, 5)
    stack = np.stack([haadf, np.roll(haadf, 3, axis=1)])
    maps = np.stack([sample.maps, np.roll(sample.maps, 3, axis=2)])
    with pytest.warns(UserWarning, match="10 saturated"):
        batch = fusex.fuse(stack, maps, elements=sample.elements, params=PARAMS, batch_size=1)
    with pytest.warns(UserWarning, match="5 saturated"):
        second = fusex.fuse(stack[1], maps[1], elements=sample.elements, params=PARAMS)
    np.testing.assert_allclose(batch.maps[1], second.maps, rtol=1e-5, atol=1e-6)


def test_labeled_results_record_the_count(sample):
    haadf, _ = _uint16_haadf(sample, 4)
    ds = label(haadf, sample.maps, sample.elements)
    with pytest.warns(UserWarning, match="4 saturated"):
        out = fusex.fuse(ds, params=PARAMS)
    assert out.attrs["saturated_pixels"] == 4
    mask = ds["haadf"] == np.iinfo(np.uint16).max
    with pytest.warns(UserWarning, match="4 saturated"):
        again = fusex.fuse(ds, params=PARAMS, saturated=mask.T)  # a DataArray mask, in any dimension order
    np.testing.assert_allclose(again["maps"].values, out["maps"].values, rtol=1e-6)


@pytest.mark.parametrize(
    ("saturated", "error", "match"),
    [
        ("yes", ValueError, "`saturated` must be 'auto', None, a number or a boolean mask"),
        (np.zeros((3, 3), dtype=bool), ValueError, r"`saturated` has shape \(3, 3\) but `haadf` has shape"),
        (np.zeros((24, 20)), TypeError, "`saturated` has dtype float64; give a boolean mask"),
        (np.ones((24, 20), dtype=bool), ValueError, "fewer than two pixels"),
    ],
)
def test_bad_saturated_arguments_are_named(sample, saturated, error, match):
    with pytest.raises(error, match=match):
        fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=PARAMS, saturated=saturated)


def test_an_all_zero_map_fuses_to_zeros(sample):
    maps = sample.maps.copy()
    maps[1] = 0
    with pytest.warns(UserWarning, match=r"the map\(s\) \['Ti'\] are zero everywhere"):
        res = fusex.fuse(sample.haadf, maps, elements=sample.elements, params=PARAMS)
    np.testing.assert_array_equal(res.maps[1], 0)
    assert np.all(np.isfinite(res.maps)) and res.maps[0].max() > 0
    assert res.scale["maps"][1] == (0.0, 1.0)
    np.testing.assert_array_equal(res.to_input_units()[1], 0)


def test_a_constant_non_zero_map_is_still_refused(sample):
    maps = sample.maps.copy()
    maps[1] = 3.0
    with pytest.raises(ValueError, match="map 'Ti' of `maps` is constant"):
        fusex.fuse(sample.haadf, maps, elements=sample.elements, params=PARAMS.replace(normalize="minmax"))


def test_negative_values_are_refused_with_advice_or_clipped_on_request(sample):
    maps = sample.maps - 0.5
    with pytest.raises(ValueError, match=r"negative values \(minimum -0.5\) in \d+ pixels.*negative='clip'"):
        fusex.fuse(sample.haadf, maps, elements=sample.elements, params=PARAMS)
    before = maps.copy()
    with pytest.warns(UserWarning, match="clipped at 0"):
        res = fusex.fuse(sample.haadf, maps, elements=sample.elements, params=PARAMS, negative="clip")
    np.testing.assert_array_equal(maps, before)
    clipped = fusex.fuse(sample.haadf, np.clip(maps, 0, None), elements=sample.elements, params=PARAMS)
    np.testing.assert_array_equal(res.maps, clipped.maps)
    with pytest.raises(ValueError, match="`negative` must be 'raise' or 'clip'"):
        fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=PARAMS, negative="ignore")
