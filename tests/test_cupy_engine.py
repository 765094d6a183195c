"""The fused CUDA kernels against the generic array-API code (needs a GPU and CuPy)."""

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
try:
    cupy.cuda.runtime.getDeviceCount()
except Exception:  # CuPy raises its own runtime error class without a driver or GPU
    pytest.skip("no CUDA GPU", allow_module_level=True)

import array_api_compat.cupy as cpx  # noqa: E402

import fusex  # noqa: E402
from _engine_cases import (  # noqa: E402
    PRIOR_CASES,
    SHAPES,
    check_evaluate_and_step,
    check_per_item_tv_weights,
    check_prior_prox_and_evaluate,
)
from fusex import tv  # noqa: E402
from fusex.backends.cupy_engine import CupyEngine  # noqa: E402
from fusex.datasets import phantom  # noqa: E402


def _tol(dtype):
    return {"rtol": 5e-6, "atol": 5e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_item", [False, True], ids=["shared", "per-item-and-map"])
def test_evaluate_and_gradient_step_match_generic(shape, dtype, per_item):
    check_evaluate_and_step(CupyEngine, cpx, cupy.asarray, shape, dtype, per_item, _tol(dtype))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_evaluate_and_gradient_step_match_generic(shape, dtype):
    check_evaluate_and_step(CupyEngine, cpx, cupy.asarray, shape, dtype, True, _tol(dtype), masked=True)


def test_tv_prox_takes_one_weight_per_item_or_map():
    check_per_item_tv_weights(CupyEngine, cpx, cupy.asarray)


@pytest.mark.parametrize("case", PRIOR_CASES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huber_and_directional_priors_match_generic(case, shape, dtype):
    check_prior_prox_and_evaluate(CupyEngine, cpx, cupy.asarray, shape, dtype, case, _tol(dtype))


@pytest.mark.parametrize("shape", [(3, 17, 23), (1, 2, 2), (2, 2, 9), (2, 31, 2), (2, 3, 12, 10), (70, 9, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("method", ["fgp", "gp"])
@pytest.mark.parametrize("nonneg", [True, False])
def test_tv_prox_matches_generic(shape, dtype, method, nonneg):
    f = cupy.asarray(np.random.default_rng(1).random(shape).astype(dtype) - 0.3)
    for n_iter in (1, 2, 9):
        ours = CupyEngine().tv_prox(f, 0.2, n_iter, method=method, nonneg=nonneg, xp=cpx)
        ref = tv.tv_prox(f, 0.2, n_iter, method=method, nonneg=nonneg, xp=cpx)
        assert ours.dtype == dtype and ours.shape == f.shape
        np.testing.assert_allclose(ours.get(), ref.get(), **_tol(dtype))


def test_the_returned_dual_survives_the_next_call_on_one_map():
    # The last dual iterate lives in a scratch buffer that the engine reuses; the dual it returns is a copy.
    engine = CupyEngine()
    f = cupy.asarray(np.random.default_rng(2).random((1, 16, 16)))
    _, first = engine.tv_prox(f, 0.1, 4, method="gp", xp=cpx, dual=cupy.zeros((1, 2, 16, 16)))
    kept = first.copy()
    second, _ = engine.tv_prox(f, 0.1, 5, method="gp", xp=cpx, dual=first)
    assert cupy.array_equal(first, kept)
    np.testing.assert_allclose(second.get(), tv.tv_prox(f, 0.1, 9, method="gp", xp=cpx).get(), rtol=1e-12, atol=1e-12)


def test_torch_cuda_tensors_use_the_kernels_without_copies():
    torch = pytest.importorskip("torch")
    sample = phantom((48, 48), seed=2)
    params = fusex.FusionParams(n_iter=10, tol=0.0)
    haadf = torch.asarray(sample.haadf, device="cuda")
    maps = torch.asarray(sample.maps, device="cuda")
    res = fusex.fuse(haadf, maps, elements=sample.elements, params=params)
    ref = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, backend="numpy")
    assert res.engine == "cupy-kernels-on-torch"
    assert res.maps.is_cuda
    np.testing.assert_allclose(res.maps.cpu().numpy(), ref.maps, atol=2e-4)


def test_no_array_leaves_the_gpu_inside_the_loop(monkeypatch):
    """Only three cost numbers per iteration cross to the host; whole arrays never do."""
    sample = phantom((64, 64), seed=3)
    haadf, maps = cupy.asarray(sample.haadf), cupy.asarray(sample.maps)
    real_get = cupy.ndarray.get
    sizes = []

    def spy_get(self, *args, **kwargs):
        sizes.append(self.size)
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(cupy.ndarray, "get", spy_get)
    res = fusex.fuse(haadf, maps, elements=sample.elements, params=fusex.FusionParams(n_iter=7, tol=0.0))
    assert res.engine == "cupy" and isinstance(res.maps, cupy.ndarray)
    assert max(sizes) <= 3, sizes
