"""Labeled input and output through `fuse`."""

import numpy as np
import pytest
import xarray as xr

import fusex
from fusex import FusionParams
from fusex.xarray import label

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
    np.testing.assert_array_equal(res.maps.values, plain.maps)
    np.testing.assert_array_equal(res.haadf_model.values, plain.haadf_model)
    np.testing.assert_array_equal(res.raw.values, sample.maps)
    assert list(res.element.values) == ["Sr", "Ti", "O"] and list(res.z.values) == [38, 22, 8]
    assert res.x.attrs["units"] == "nm" and float(res.x[1]) == pytest.approx(0.05)
    assert res.maps.attrs["long_name"] == "EDS counts"
    np.testing.assert_allclose(res.history_total.values, plain.history["total"].to_numpy())
    assert res.sizes["iteration"] == 5
    assert res.attrs["lambda_tv"] == 0.005 and res.attrs["lambda_haadf"] == pytest.approx(1 / 3)
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
        (lambda ds: (ds.haadf.isel(x=0), ds.maps), "two \\(spatial\\) dimensions"),
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


def test_dask_backed_input_is_refused_with_advice(dataset):
    pytest.importorskip("dask")
    with pytest.raises(TypeError, match=r"dask array.*\.load\(\)"):
        fusex.fuse(dataset.chunk(), params=PARAMS)
