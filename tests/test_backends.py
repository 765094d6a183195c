"""Engine selection and the report of what this machine can run."""

import builtins
import sys

import numpy as np
import pytest

import fusex
from fusex import FusionParams
from fusex.backends import GENERIC, available, select_engine
from fusex.datasets import phantom


def test_available_reports_every_backend():
    report = available()
    assert set(report) == {"numpy", "numba", "array_api_strict", "torch", "torch-cuda", "cupy"}
    assert report["numpy"] is True
    assert all(isinstance(v, bool) for v in report.values())


def test_auto_picks_numba_for_numpy_and_generic_otherwise():
    import array_api_compat.numpy as npx

    numba_installed = available()["numba"]
    assert select_engine(None, npx).name == ("numba" if numba_installed else "generic")
    assert select_engine("numpy", npx) is GENERIC
    strict = pytest.importorskip("array_api_strict")
    assert select_engine(None, strict) is GENERIC


def test_each_solve_gets_its_own_engine():
    pytest.importorskip("numba")
    import array_api_compat.numpy as npx

    assert select_engine(None, npx) is not select_engine(None, npx)


def test_numba_and_numpy_backends_give_the_same_fusion():
    pytest.importorskip("numba")
    sample = phantom((40, 40), seed=3)
    params = FusionParams(n_iter=15, tol=0.0)
    fast = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, backend="numba")
    plain = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, backend="numpy")
    assert (fast.engine, plain.engine) == ("numba", "generic")
    # float32 sums in different orders; the Poisson term's curvature near zero, up to lambda_chem / eps**2,
    # amplifies them over the iterations
    np.testing.assert_allclose(fast.maps, plain.maps, atol=5e-5)
    np.testing.assert_allclose(fast.history.total, plain.history.total, rtol=1e-5)


def test_tv_denoise_uses_the_same_engines():
    pytest.importorskip("numba")
    f = np.random.default_rng(0).random((2, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(
        fusex.tv_denoise(f, 0.1, 10, backend="numba"), fusex.tv_denoise(f, 0.1, 10, backend="numpy"), atol=1e-6
    )


def test_missing_numba_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.endswith("numba_engine"):
            raise ImportError("no numba")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    for module in [m for m in sys.modules if m == "numba" or m.endswith("numba_engine")]:
        monkeypatch.delitem(sys.modules, module)
    import array_api_compat.numpy as npx

    with pytest.raises(fusex.BackendUnavailableError, match=r'pip install "fusex\[numba\]"'):
        select_engine("numba", npx)
