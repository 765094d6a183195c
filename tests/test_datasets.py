import numpy as np
import pytest

from fusex.datasets import LATTICES, nrmse, phantom


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


def test_nrmse_is_affine_invariant():
    t = np.random.default_rng(0).random((2, 8, 8))
    assert np.allclose(nrmse(3.0 * t + 1.0, t), 0.0, atol=1e-12)
    noisy = t + 0.1 * np.random.default_rng(1).standard_normal(t.shape)
    assert np.all((nrmse(noisy, t) > 0) & (nrmse(noisy, t) < 1))
