"""Reading inputs, atomic saving, and the round trip of results."""

import numpy as np
import pytest
import xarray as xr

import fusex
from fusex import FusionParams, io


@pytest.fixture(scope="module")
def sample():
    return fusex.datasets.phantom((20, 24), seed=1)


@pytest.fixture
def npz(tmp_path, sample):
    path = tmp_path / "scan.npz"
    np.savez(path, HAADF=sample.haadf, **dict(zip(sample.elements, sample.maps)))
    return path


def test_read_npz_tutorial_layout(npz, sample):
    ds = io.read(npz)
    assert list(ds.element.values) == list(sample.elements)
    np.testing.assert_array_equal(ds.maps.values, sample.maps)
    np.testing.assert_array_equal(ds.haadf.values, sample.haadf)
    assert list(io.read(npz, elements=["O", "Sr"]).element.values) == ["O", "Sr"]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"Sr": np.ones((4, 4))}, "no HAADF array"),
        ({"HAADF": np.ones((4, 4))}, "no elemental maps"),
        ({"HAADF": np.ones((4, 4)), "Sr": np.ones((4, 5))}, "one shape"),
    ],
)
def test_bad_npz_files_are_named(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        io.read(path)


def test_read_refuses_unknown_suffix_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.read(tmp_path / "none.npz")
    (tmp_path / "a.tif").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown file type"):
        io.read(tmp_path / "a.tif")


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_result_round_trip(tmp_path, npz, suffix):
    result = fusex.fuse(io.read(npz), params=FusionParams(n_iter=3))
    path = io.save(result, tmp_path / f"out{suffix}")
    back = io.load(path)
    xr.testing.assert_allclose(
        back[["maps", "raw", "haadf", "haadf_model", "history_total"]],
        result[["maps", "raw", "haadf", "haadf_model", "history_total"]],
    )
    assert back.attrs["gamma"] == result.attrs["gamma"] and back.attrs["engine"] == result.attrs["engine"]
    assert {p.name for p in tmp_path.iterdir()} == {"scan.npz", f"out{suffix}"}  # no temporaries left
    again = fusex.fuse(io.read(path), params=FusionParams(n_iter=3))  # a saved result is a valid input
    assert again.sizes["element"] == 3


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_failed_write_leaves_the_old_file_alone(tmp_path, npz, suffix, monkeypatch):
    result = fusex.fuse(io.read(npz), params=FusionParams(n_iter=2))
    path = io.save(result, tmp_path / f"out{suffix}")
    good = io.load(path)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf" if suffix == ".nc" else "to_zarr", explode)
    with pytest.raises(OSError, match="disk full"):
        io.save(result.assign(maps=result.maps * 0), path)
    xr.testing.assert_identical(io.load(path), good)
    assert {p.name for p in tmp_path.iterdir()} == {"scan.npz", f"out{suffix}"}


def test_save_refuses_unknown_suffix(tmp_path, npz):
    with pytest.raises(ValueError, match=r"\.nc \(netCDF\) or \.zarr"):
        io.save(io.read(npz), tmp_path / "out.h5")


def test_reading_a_result_gives_back_its_inputs(tmp_path, npz, sample):
    path = io.save(fusex.fuse(io.read(npz), params=FusionParams(n_iter=2)), tmp_path / "r.nc")
    again = io.read(path)
    assert set(again.data_vars) == {"haadf", "maps"}
    np.testing.assert_array_equal(again.maps.values, sample.maps)
