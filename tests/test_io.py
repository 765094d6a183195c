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
        back[["maps", "raw", "haadf", "haadf_model", "haadf_background", "history_total"]],
        result[["maps", "raw", "haadf", "haadf_model", "haadf_background", "history_total"]],
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


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _garble_a_chunk(path):
    (path / "maps" / "0.0.0").write_bytes(b"\x00not a compressed chunk" * 8)


@pytest.mark.parametrize(
    ("suffix", "damage"),
    [(".npz", _truncate), (".npz", _empty), (".nc", _truncate), (".nc", _empty), (".zarr", _garble_a_chunk)],
    ids=["npz-truncated", "npz-empty", "nc-truncated", "nc-empty", "zarr-garbled-chunk"],
)
def test_a_damaged_file_raises_one_fusex_error_naming_it(tmp_path, npz, suffix, damage):
    damaged = npz if suffix == ".npz" else io.save(io.read(npz), tmp_path / f"scan{suffix}")
    damage(damaged)
    for reader in (io.read, io.read_npz if suffix == ".npz" else io.load):
        with pytest.raises(fusex.UnreadableFileError) as info:
            reader(damaged)
        error = info.value
        assert isinstance(error, OSError) and isinstance(error, ValueError) and isinstance(error, fusex.FusexError)
        assert str(error).startswith(f"cannot read {damaged}: ") and error.path == damaged
        assert "\n" not in str(error)
        if damage is _empty:
            assert "empty" in error.reason


def test_an_unreadable_file_error_survives_pickling(tmp_path):
    import pickle

    error = fusex.UnreadableFileError(tmp_path / "a.npz", "truncated")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is fusex.UnreadableFileError and str(back) == str(error) and back.path == error.path


def test_read_refuses_a_single_npy_array(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(fusex.UnreadableFileError, match=r"single \.npy array"):
        io.read(path)


def test_read_refuses_repeated_elements(tmp_path, npz, sample):
    with pytest.raises(ValueError, match=r"\['Sr'\] more than once"):
        io.read(npz, elements=["Sr", "O", "Sr"])
    ds = xr.Dataset(
        {"haadf": (("y", "x"), sample.haadf), "maps": (("element", "y", "x"), sample.maps)},
        coords={"element": ["Sr", "Sr", "O"]},
    )
    path = tmp_path / "repeated.nc"
    ds.to_netcdf(path)
    for elements in (None, ["Sr", "O"]):
        with pytest.raises(fusex.UnreadableFileError, match=r"repeat \['Sr'\]"):
            io.read(path, elements=elements)


def test_read_names_what_a_dataset_file_lacks(tmp_path, npz):
    path = io.save(io.read(npz), tmp_path / "scan.nc")
    with pytest.raises(fusex.UnreadableFileError, match=r"no map for element\(s\) \['Xx'\]; its maps are"):
        io.read(path, elements=["Sr", "Xx"])
    other = tmp_path / "other.nc"
    xr.Dataset({"v": ("x", np.arange(3.0))}).to_netcdf(other)
    with pytest.raises(fusex.UnreadableFileError, match=r"no 'haadf' and 'maps' variables \(it holds \['v'\]\)"):
        io.read(other)
