"""The numba kernels against the generic array-API code they replace."""

import numpy as np
import pytest

pytest.importorskip("numba")

import array_api_compat.numpy as npx

from _engine_cases import SHAPES, check_evaluate_and_step, check_per_item_tv_weights
from fusex import tv
from fusex.backends.numba_engine import NumbaEngine

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return {"rtol": 2e-6, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_item", [False, True], ids=["shared", "per-item-and-map"])
def test_evaluate_and_gradient_step_match_generic(shape, dtype, per_item):
    check_evaluate_and_step(NumbaEngine, npx, np.asarray, shape, dtype, per_item, _tol(dtype))


def test_tv_prox_takes_one_weight_per_item_or_map():
    check_per_item_tv_weights(NumbaEngine, npx, np.asarray)


@pytest.mark.parametrize("shape", [(3, 17, 23), (1, 2, 2), (2, 2, 9), (2, 31, 2), (2, 3, 12, 10), (70, 9, 8)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["fgp", "gp"])
@pytest.mark.parametrize("nonneg", [True, False])
def test_tv_prox_matches_generic(shape, dtype, method, nonneg):
    f = np.random.default_rng(1).random(shape).astype(dtype) - 0.3
    engine = NumbaEngine()
    for n_iter in (1, 2, 9):
        ours = engine.tv_prox(f, 0.2, n_iter, method=method, nonneg=nonneg, xp=npx)
        ref = tv.tv_prox(f, 0.2, n_iter, method=method, nonneg=nonneg, xp=npx)
        assert ours.dtype == dtype and ours.shape == f.shape
        np.testing.assert_allclose(ours, ref, **_tol(dtype))


def test_scratch_memory_never_leaks_into_results():
    """Buffers are reused between calls; garbage (even NaN) in them must not matter."""
    engine = NumbaEngine()
    f = np.random.default_rng(2).random((2, 16, 16)).astype(np.float32)
    first = engine.tv_prox(f, 0.1, 5, xp=npx)
    for buffer in engine._scratch.arrays.values():
        buffer.fill(np.nan)
    np.testing.assert_array_equal(engine.tv_prox(f, 0.1, 5, xp=npx), first)


def test_non_contiguous_input_is_fine():
    f = np.random.default_rng(3).random((20, 30))
    view = f.T
    np.testing.assert_allclose(
        NumbaEngine().tv_prox(view, 0.1, 5, xp=npx), tv.tv_prox(view, 0.1, 5, xp=npx), rtol=1e-12, atol=1e-12
    )


def test_zero_weight_and_zero_iterations_return_the_projection():
    f = np.array([[-1.0, 2.0], [3.0, -4.0]])
    np.testing.assert_array_equal(NumbaEngine().tv_prox(f, 0.0, 5, xp=npx), np.maximum(f, 0))
    np.testing.assert_array_equal(NumbaEngine().tv_prox(f, 0.3, 0, nonneg=False, xp=npx), f)


def test_device_arrays_are_refused_not_copied():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"numba engine computes on NumPy arrays.*torch"):
        NumbaEngine().tv_prox(torch.ones(4, 4), 0.1, 3, xp=npx)


def test_scratch_memory_is_bounded_across_batch_sizes():
    engine = NumbaEngine()
    big = np.random.default_rng(5).random((3, 300, 300)).astype(np.float32)
    for f in (big, big[:1], big, big[:2]):
        engine.tv_prox(f, 0.1, 3, xp=npx)
    sizes = [a.size for a in engine._scratch.arrays.values()]
    assert len(sizes) == 3 and max(sizes) == 2 * 300 * 300  # three dual buffers, one (2, H, W) each
