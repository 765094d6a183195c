"""Labeled input and output through `fuse`."""

import importlib
import sys

import numpy as np
import pytest
import xarray as xr

import fusex
from fusex import FusionParams
from fusex.datasets import phantom
from fusex.labeled import label

PARAMS = FusionParams(n_iter=4, tol=0.0)


@pytest.fixture(scope="module")
def sample():
    return fusex.datasets.phantom((24, 32), seed=0)


@pytest.fixture
def dataset(sample):
    ds = label(sample.haadf, sample.maps, sample.elements, pixel_size=0.05, unit="nm")
    ds["maps"].attrs["long_name"] = "EDS counts"
    ds.attrs["instrument"] = "a STEM"
    return ds


def test_dataset_in_dataset_out_with_coordinates_and_attrs(sample, dataset):
    res = fusex.fuse(dataset, params=PARAMS)
    plain = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=PARAMS)
    assert isinstance(res, xr.Dataset)
    np.testing.assert_allclose(res.maps.values, plain.to_input_units(), rtol=1e-6)  # in the input maps' units
    h_lo, h_span = plain.scale["haadf"]
    np.testing.assert_allclose(res.haadf_model.values, plain.haadf_model * h_span + h_lo, rtol=1e-6)
    # the normalization's offset is in haadf_model already: the background takes only its range
    np.testing.assert_allclose(res.haadf_background.values, plain.haadf_background * h_span, rtol=1e-6)
    assert res.haadf_background.dims == res.haadf.dims and np.ptp(res.haadf_background.values) > 0
    np.testing.assert_array_equal(res.raw.values, sample.maps)
    assert list(res.element.values) == ["Sr", "Ti", "O"] and list(res.z.values) == [38, 22, 8]
    assert res.x.attrs["units"] == "nm" and float(res.x[1]) == pytest.approx(0.05)
    assert res.maps.attrs["long_name"] == "EDS counts"
    np.testing.assert_allclose(res.history_total.values, plain.history["total"].to_numpy())
    assert res.sizes["iteration"] == 5
    assert res.attrs["lambda_tv"] == FusionParams().lambda_tv and res.attrs["lambda_haadf"] == pytest.approx(1 / 3)
    assert res.attrs["engine"] == plain.engine and res.attrs["iterations_run"] == 4


def test_dataarrays_in_any_dimension_order(sample, dataset):
    maps = dataset.maps.transpose("x", "element", "y")
    res = fusex.fuse(dataset.haadf, maps, params=PARAMS)
    assert res.maps.dims == ("element", "y", "x")
    np.testing.assert_array_equal(res.maps.values, fusex.fuse(dataset, params=PARAMS).maps.values)


def test_one_variable_per_element(sample, dataset):
    maps = {e: dataset.maps.sel(element=e, drop=True) for e in sample.elements}
    res = fusex.fuse(xr.Dataset({"HAADF": dataset.haadf, **maps}), params=PARAMS)
    assert list(res.element.values) == list(sample.elements)
    np.testing.assert_array_equal(res.maps.values, fusex.fuse(dataset, params=PARAMS).maps.values)


def test_torch_backend_returns_numpy_backed_objects(dataset):
    pytest.importorskip("torch")
    res = fusex.fuse(dataset, params=PARAMS, backend="torch")
    assert isinstance(res.maps.data, np.ndarray)
    np.testing.assert_allclose(res.maps.values, fusex.fuse(dataset, params=PARAMS).maps.values, atol=1e-5)


def test_inputs_are_unchanged(dataset):
    before = dataset.copy(deep=True)
    fusex.fuse(dataset, params=PARAMS)
    xr.testing.assert_identical(dataset, before)


def test_misaligned_coordinates_are_refused(dataset):
    shifted = dataset.haadf.assign_coords(x=dataset.x + 0.01)
    with pytest.raises(ValueError, match="coordinates of `haadf` and `maps` do not match"):
        fusex.fuse(shifted, dataset.maps, params=PARAMS)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda ds: (ds.haadf, ds.maps.rename(element="channel")), "no 'element' dimension"),
        (lambda ds: (ds.haadf, ds.maps.isel(x=0)), "lacks the HAADF image's dimension"),
        (lambda ds: (ds.haadf, ds.maps.expand_dims(frame=2)), "dimension.*'frame'.*that `haadf` lacks"),
        (lambda ds: (ds.haadf.isel(x=0), ds.maps), "two spatial dimensions"),
        (lambda ds: (ds.drop_vars("haadf"), None), "no HAADF variable"),
    ],
)
def test_bad_labeled_input_is_named(dataset, mutate, match):
    haadf, maps = mutate(dataset)
    with pytest.raises(ValueError, match=match):
        fusex.fuse(haadf, maps, params=PARAMS)


def test_maps_are_required_for_plain_arrays(sample):
    with pytest.raises(TypeError, match="`maps` is missing"):
        fusex.fuse(sample.haadf)


def test_cupy_backed_dataarrays_stay_on_the_gpu(sample):
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # CuPy raises its own runtime error class without a driver or GPU
        pytest.skip("no CUDA GPU")
    ds = label(cupy.asarray(sample.haadf), cupy.asarray(sample.maps), sample.elements)
    res = fusex.fuse(ds, params=PARAMS)
    assert isinstance(res.maps.data, cupy.ndarray) and isinstance(res.haadf_model.data, cupy.ndarray)
    host = fusex.fuse(label(sample.haadf, sample.maps, sample.elements), params=PARAMS)
    np.testing.assert_allclose(res.maps.data.get(), host.maps.values, atol=2e-4)


def test_bare_dask_arrays_are_refused_with_advice(dataset):
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match=r"dask array.*fusex\.labeled\.label.*\.compute\(\)"):
        fusex.fuse(da.from_array(dataset.haadf.values), da.from_array(dataset.maps.values), params=PARAMS)


def test_extra_dimensions_are_batch_dimensions():
    samples = [phantom((20, 20), dose=2.0 + i, seed=i) for i in range(3)]
    haadf = xr.DataArray(np.stack([s.haadf for s in samples]), dims=("frame", "y", "x"), coords={"frame": [1, 2, 3]})
    maps = xr.DataArray(
        np.stack([s.maps for s in samples], axis=1),  # element first: any order of dimensions is fine
        dims=("element", "frame", "y", "x"),
        coords={"element": list(samples[0].elements), "frame": [1, 2, 3]},
    )
    params = fusex.FusionParams(n_iter=6, lambda_tv=[0.002, 0.005, 0.01])
    ds = fusex.fuse(haadf, maps, params=params)
    assert ds.maps.dims == ("frame", "element", "y", "x") and ds.haadf_model.dims == ("frame", "y", "x")
    assert ds.history_total.dims == ("frame", "iteration") and ds.iterations_run.dims == ("frame",)
    np.testing.assert_allclose(ds.param_lambda_tv.values, [0.002, 0.005, 0.01])
    alone = fusex.fuse(haadf.sel(frame=2), maps.sel(frame=2), params=params.replace(lambda_tv=0.005))
    np.testing.assert_allclose(ds.maps.sel(frame=2).values, alone.maps.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.history_total.sel(frame=2).values, alone.history_total.values, rtol=1e-6)


def test_parameters_that_would_add_batch_axes_are_refused(dataset):
    with pytest.raises(ValueError, match=r"per-item parameters have shape \(3,\).*expand_dims"):
        fusex.fuse(dataset, params=FusionParams(n_iter=2, lambda_tv=[0.001, 0.01, 0.1]))
    swept = fusex.fuse(dataset.expand_dims(sweep=3), params=FusionParams(n_iter=2, lambda_tv=[0.001, 0.01, 0.1]))
    assert swept.maps.dims[0] == "sweep" and swept.param_lambda_tv.dims == ("sweep",)


def test_elements_that_contradict_the_element_coordinate_are_refused_naming_both(dataset):
    with pytest.raises(
        ValueError,
        match=r"`elements` \['O', 'Ti', 'Fe'\] contradicts the 'element' coordinate of `maps` \['Sr', 'Ti', 'O'\]",
    ):
        fusex.fuse(dataset, elements=["O", "Ti", "Fe"], params=PARAMS)


def test_elements_in_another_order_reorder_labeled_maps_by_name(dataset):
    order = ["O", "Sr", "Ti"]
    res = fusex.fuse(dataset, elements=order, params=PARAMS)
    ref = fusex.fuse(dataset.isel(element=[2, 0, 1]), params=PARAMS)
    assert list(res.element.values) == order and list(res.z.values) == [8, 38, 22]
    np.testing.assert_array_equal(res.maps.values, ref.maps.values)
    np.testing.assert_array_equal(res.raw.sel(element="O").values, dataset.maps.sel(element="O").values)


def test_repeated_element_names_are_refused_in_labeled_input(sample, dataset):
    with pytest.raises(ValueError, match=r"`elements` names \['Sr'\] more than once"):
        label(sample.haadf, sample.maps, ["Sr", "Sr", "O"])
    repeated = dataset.assign_coords(element=["Sr", "Sr", "O"])
    with pytest.raises(ValueError, match=r"the 'element' coordinate of `maps` names \['Sr'\] more than once"):
        fusex.fuse(repeated, params=PARAMS)
    unlabeled = dataset.drop_vars("element")
    with pytest.raises(ValueError, match=r"`elements` names \['O'\] more than once"):
        fusex.fuse(unlabeled, elements=["Sr", "O", "O"], params=PARAMS)


def test_labeled_maps_are_in_the_input_units_with_a_units_attr(sample):
    counts = np.random.default_rng(2).poisson(sample.maps * 8).astype(np.int32)
    ds = fusex.fuse(label(sample.haadf, counts, sample.elements), params=PARAMS)
    plain = fusex.fuse(sample.haadf, counts, elements=sample.elements, params=PARAMS)
    assert ds.maps.attrs["units"] == "counts" and ds.attrs["normalization_undone"] == 1
    np.testing.assert_allclose(ds.maps.values, plain.to_input_units(), rtol=1e-6)
    assert abs(float(ds.maps.max()) - counts.max()) < 0.5 * counts.max()  # counts, not [0, 1]
    given = label(sample.haadf, sample.maps, sample.elements)
    given["maps"].attrs["units"] = "counts per 10 ms"
    assert fusex.fuse(given, params=PARAMS).maps.attrs["units"] == "counts per 10 ms"
    assert "units" not in fusex.fuse(label(sample.haadf, sample.maps, sample.elements), params=PARAMS).maps.attrs


def test_to_input_units_reads_results_and_datasets_old_and_new(sample, dataset):
    res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=PARAMS)
    np.testing.assert_array_equal(fusex.to_input_units(res), res.to_input_units())
    ds = fusex.fuse(dataset, params=PARAMS)
    np.testing.assert_array_equal(fusex.to_input_units(ds).values, ds.maps.values)
    # a Dataset of fusex 0.1 held the normalized maps and no normalization_undone attr
    old = ds.copy()
    old["maps"] = old.maps.copy(data=np.asarray(res.maps))
    del old.attrs["normalization_undone"]
    np.testing.assert_allclose(fusex.to_input_units(old).values, ds.maps.values, rtol=1e-6)
    frames = fusex.fuse(dataset.expand_dims(frame=2), params=PARAMS)
    old = frames.copy()
    old["maps"] = old.maps.copy(data=np.stack([np.asarray(res.maps)] * 2))
    del old.attrs["normalization_undone"]
    np.testing.assert_allclose(fusex.to_input_units(old).values, frames.maps.values, rtol=1e-6)
    with pytest.raises(TypeError, match=r"FusionResult or a Dataset from fusex\.fuse"):
        fusex.to_input_units(dataset.maps)


def test_lazy_input_with_parameters_its_dtype_cannot_hold_is_refused_before_computing(dataset):
    pytest.importorskip("dask")
    with pytest.raises(ValueError, match=r"FusionParams.eps=1e-300 is below the smallest normal number .* float32"):
        fusex.fuse(dataset.expand_dims(frame=2).chunk({"frame": 1}), params=FusionParams(eps=1e-300))


def test_fusex_xarray_is_a_deprecated_alias_of_the_labeled_layer(monkeypatch):
    monkeypatch.delitem(sys.modules, "fusex.xarray", raising=False)
    with pytest.warns(DeprecationWarning, match=r"fusex\.xarray is deprecated.*import fusex\.labeled"):
        alias = importlib.import_module("fusex.xarray")
    assert alias.__all__ and all(getattr(alias, name) is getattr(fusex.labeled, name) for name in alias.__all__)
    assert "to_input_units" in alias.__all__ and "label" in alias.__all__
