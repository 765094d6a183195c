from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from fusex.datasets import LATTICES, dysco3, nrmse, phantom, raw_nrmse

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_phantom_shapes_types_and_ranges():
    s = phantom((40, 30), seed=0)
    assert s.haadf.shape == (40, 30) and s.maps.shape == s.truth.shape == (3, 40, 30)
    assert s.haadf.dtype == s.maps.dtype == s.truth.dtype == np.float32
    assert s.elements == tuple(LATTICES["perovskite"]) and s.z == (38, 22, 8)
    assert s.truth.min() >= 0 and s.truth.max() <= 1
    assert np.all(s.maps == np.round(s.maps)) and s.maps.min() >= 0


def test_phantom_is_reproducible_and_dose_scales_counts():
    a, b = phantom(seed=3), phantom(seed=3)
    np.testing.assert_array_equal(a.maps, b.maps)
    low, high = phantom(dose=1.0, seed=1), phantom(dose=50.0, seed=1)
    assert high.maps.mean() > 10 * low.maps.mean()
    assert np.all(nrmse(high.maps, high.truth) < nrmse(low.maps, low.truth))


def test_custom_elements_and_lattices():
    s = phantom((32, 32), elements=["Ba", "Zr", "O"], seed=0)
    assert s.z == (56, 40, 8)
    r = phantom((32, 32), lattice={"Au": [(0.0, 0.0)]}, seed=0)
    assert r.elements == ("Au",) and r.maps.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="3 sites"):
        phantom(elements=["Ba", "Zr"])


def test_raw_nrmse_sees_scale_and_offset_errors():
    t = np.random.default_rng(0).random((2, 8, 8))
    assert np.allclose(raw_nrmse(t, t), 0.0)
    assert np.allclose(raw_nrmse(np.broadcast_to(t.mean(axis=(-2, -1), keepdims=True), t.shape), t), 1.0)
    doubled = raw_nrmse(2.0 * t, t)  # |t| / |t - mean t| for each map, well above what nrmse says (0)
    spread = np.linalg.norm(t - t.mean(axis=(-2, -1), keepdims=True), axis=(-2, -1))
    np.testing.assert_allclose(doubled, np.linalg.norm(t, axis=(-2, -1)) / spread)
    np.testing.assert_allclose(raw_nrmse(np.stack([t, 2.0 * t]), t), [[0.0, 0.0], doubled], atol=1e-12)
    with pytest.raises(ValueError, match="end in `truth`'s shape"):
        raw_nrmse(t[0], t)


def test_nrmse_is_affine_invariant():
    t = np.random.default_rng(0).random((2, 8, 8))
    assert np.allclose(nrmse(3.0 * t + 1.0, t), 0.0, atol=1e-12)
    noisy = t + 0.1 * np.random.default_rng(1).standard_normal(t.shape)
    assert np.all((nrmse(noisy, t) > 0) & (nrmse(noisy, t) < 1))


def test_dysco3_is_the_tutorial_acquisition_with_its_notice_and_citations():
    data = dysco3()
    assert data.haadf.shape == (256, 256) and data.maps.shape == (3, 256, 256)
    assert data.haadf.dtype == data.maps.dtype == np.float32
    assert data.elements == ("Sc", "Dy", "O") and data.z == (21, 66, 8)
    assert 6393 <= data.haadf.min() and data.haadf.max() <= 33573 and 0 <= data.maps.min() and data.maps.max() < 1
    assert "not counts" in data.units
    assert "10.69761/MXVR4353" in data.citation and "10.1038/s41524-021-00692-5" in data.citation
    notice = resources.files("fusex").joinpath("data", "LICENSE-dysco3.txt").read_text()
    assert "Copyright (c) 2023 Microscopy Society of America - EM Journal" in notice and "MIT License" in notice
    data.maps[0] = -1  # every call returns new arrays
    assert dysco3().maps.min() >= 0


def test_dysco3_holds_the_tutorial_file_values():
    if not (SHARED / "PTO_Trilayer_dataset.npz").is_file():
        pytest.skip("the shared data folder is not here")
    with np.load(SHARED / "PTO_Trilayer_dataset.npz") as original:
        data = dysco3()
        np.testing.assert_array_equal(data.haadf, original["HAADF"])
        for e, element in enumerate(data.elements):
            np.testing.assert_array_equal(data.maps[e], original[element])  # float32 loses nothing here
