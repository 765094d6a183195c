"""Saturated pixels and negative maps on every path: batches, tune, params="auto", memory, dask, the CLI."""

import importlib
import warnings
from pathlib import Path

import array_api_compat.numpy as npx
import numpy as np
import pytest
import xarray as xr

import fusex
from fusex import memory
from fusex.cli import main
from fusex.errors import InsufficientMemoryError

PARAMS = fusex.FusionParams(n_iter=6)
SMALL_GRID = {"lambda_tv": [0.01, 0.05], "lambda_chem": [0.02]}


@pytest.fixture(scope="module")
def sample():
    return fusex.datasets.phantom((20, 16), dose=4.0, seed=2)


def _clipped(sample, n_saturated, seed=0):
    """The phantom's HAADF as uint16 with ``n_saturated`` pixels at 65535."""
    image = np.round(np.clip(sample.haadf, 0, None) / sample.haadf.max() * 40000).astype(np.uint16)
    image.flat[np.random.default_rng(seed).choice(image.size, n_saturated, replace=False)] = 65535
    return image


@pytest.fixture(scope="module")
def batch(sample):
    """Three frames with 5, 0 and 3 saturated pixels."""
    haadf = np.stack([_clipped(sample, 5, 0), _clipped(sample, 0), _clipped(sample, 3, 1)])
    return haadf, np.stack([sample.maps] * 3)


def test_a_batch_counts_saturated_pixels_per_item_and_item_keeps_its_own(sample, batch):
    haadf, maps = batch
    with pytest.warns(
        UserWarning, match=r"8 saturated pixels \(at 65535, the largest uint16 value\) over its 3 images;"
    ):
        res = fusex.fuse(haadf, maps, elements=sample.elements, params=PARAMS)
    np.testing.assert_array_equal(res.saturated, [5, 0, 3])
    assert [res.item(i).saturated for i in range(3)] == [5, 0, 3]
    with pytest.warns(UserWarning, match=r"3 saturated pixels \(at 65535, the largest uint16 value\);"):
        alone = fusex.fuse(haadf[2], maps[2], elements=sample.elements, params=PARAMS)
    assert alone.saturated == res.item(2).saturated == 3
    labeled = fusex.fuse(
        xr.Dataset(
            {"haadf": (("frame", "y", "x"), haadf), "maps": (("frame", "element", "y", "x"), maps)},
            coords={"element": list(sample.elements)},
        ),
        params=PARAMS,
    )
    assert labeled.attrs["saturated_pixels"] == 8


def test_tune_leaves_the_saturated_pixels_out(sample):
    haadf = _clipped(sample, 6)
    counts = sample.maps.astype(np.int64)
    with pytest.warns(UserWarning, match="6 saturated"):
        masked = fusex.tune(haadf, counts, elements=sample.elements, params=PARAMS, grid=SMALL_GRID, folds=2, widen=0)
    assert masked.result.saturated == 6
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*saturated pixels")
        kept = fusex.tune(
            haadf, counts, elements=sample.elements, params=PARAMS, grid=SMALL_GRID, folds=2, saturated=None, widen=0
        )
    assert kept.result.saturated == 0
    # the search itself saw the mask: its held-out scores differ
    assert not np.allclose(masked.scores["screened"].values, kept.scores["screened"].values)


def test_params_auto_passes_saturated_and_negative_to_tune(sample, monkeypatch):
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(importlib.import_module("fusex.api"), "tune", spy)  # fuse routes "auto" to it
    with pytest.raises(RuntimeError, match="stop here"):
        fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params="auto", saturated=7.0, negative="clip")
    assert seen["saturated"] == 7.0 and seen["negative"] == "clip"


def test_the_memory_estimate_counts_the_mask_plane(sample, monkeypatch):
    plain = memory.bytes_per_item("generic", 3, 20, 16, 4)
    assert memory.bytes_per_item("generic", 3, 20, 16, 4, masked=True) == plain + 20 * 16 * 4
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: plain)
    assert memory.plan_batch_size(1, (3, 20, 16), 4, "generic", npx, "cpu") == 1
    with pytest.raises(InsufficientMemoryError):
        memory.plan_batch_size(1, (3, 20, 16), 4, "generic", npx, "cpu", masked=True)
    haadf = _clipped(sample, 4).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS, backend="numpy")  # fits unmasked
        with pytest.raises(InsufficientMemoryError):
            fusex.fuse(haadf, sample.maps, elements=sample.elements, params=PARAMS, backend="numpy", saturated=40001.0)


def test_a_lazy_fusion_takes_a_mask_and_counts_per_item(sample, batch):
    pytest.importorskip("dask.array")
    haadf, maps = batch
    ds = xr.Dataset(
        {"haadf": (("frame", "y", "x"), haadf), "maps": (("frame", "element", "y", "x"), maps)},
        coords={"element": list(sample.elements)},
    )
    mask = ds["haadf"] == 65535
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        eager = fusex.fuse(ds, params=PARAMS, saturated=mask)
        lazy = fusex.fuse(ds.chunk({"frame": 2}), params=PARAMS, saturated=mask.T)  # any dimension order
        assert lazy["saturated_pixels"].chunks is not None
        out = lazy.compute(scheduler="synchronous")
        plain = fusex.fuse(ds.chunk({"frame": 1}), params=PARAMS, saturated=haadf == 65535).compute(
            scheduler="synchronous"
        )
        one = fusex.fuse(ds.chunk({"frame": 1}), params=PARAMS, saturated=mask.isel(frame=0)).compute(
            scheduler="synchronous"
        )
    np.testing.assert_array_equal(out["saturated_pixels"].values, [5, 0, 3])
    np.testing.assert_array_equal(out["maps"].values, eager["maps"].values)
    np.testing.assert_array_equal(plain["maps"].values, eager["maps"].values)
    np.testing.assert_array_equal(one["saturated_pixels"].values, [5, 5, 5])  # one frame's mask, broadcast
    with pytest.raises(ValueError, match="`saturated` has sizes"):
        fusex.fuse(ds.chunk({"frame": 1}), params=PARAMS, saturated=np.zeros((3, 3), dtype=bool))
    with pytest.raises(TypeError, match="`saturated` has dtype float64"):
        fusex.fuse(ds.chunk({"frame": 1}), params=PARAMS, saturated=np.zeros((20, 16)))


def _npz(path: Path, haadf, maps, elements) -> Path:
    np.savez(path, HAADF=haadf, **dict(zip(elements, maps)))
    return path


def test_the_cli_passes_saturated_and_negative_to_fuse(sample, tmp_path, capsys):
    scan = _npz(tmp_path / "scan.npz", _clipped(sample, 5), sample.maps, sample.elements)
    runs = {"auto": 5, "none": 0, "30000": None}
    for value, expected in runs.items():
        out = tmp_path / f"fused-{value}.nc"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            assert main(["fuse", str(scan), "-o", str(out), "-q", "--saturated", value, "--param", "n_iter=4"]) == 0
        with xr.open_dataset(out) as ds:
            count = int(ds.attrs["saturated_pixels"])
        runs[value] = count
        if expected is not None:
            assert count == expected
    assert runs["30000"] > 5  # every pixel at or above the level
    negative = _npz(tmp_path / "negative.npz", sample.haadf, sample.maps - 0.5, sample.elements)
    assert main(["fuse", str(negative), "-o", str(tmp_path / "n.nc"), "-q", "--param", "n_iter=4"]) == 2
    assert "negative='clip'" in capsys.readouterr().err
    clip = ["fuse", str(negative), "-o", str(tmp_path / "c.nc"), "-q", "--negative", "clip", "--param", "n_iter=4"]
    with pytest.warns(UserWarning, match="clipped at 0"):
        assert main(clip) == 0
    with xr.open_dataset(tmp_path / "c.nc") as ds:
        assert float(ds["raw"].min()) < 0 <= float(ds["maps"].min())


def test_a_bad_saturated_level_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fuse", "scan.npz", "-o", str(tmp_path / "x.nc"), "--saturated", "lots"])
    assert info.value.code == 2
    assert "expected auto, none or a number" in capsys.readouterr().err
