"""The numba kernels against the generic array-API code they replace."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

import array_api_compat.numpy as npx
import numba

from _engine_cases import SHAPES, check_evaluate_and_step, check_per_item_tv_weights, prior_keywords
from fusex import FusionParams, tv
from fusex.backends import numba_engine
from fusex.backends.numba_engine import NumbaEngine, tiling

DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return {"rtol": 2e-6, "atol": 2e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_item", [False, True], ids=["shared", "per-item-and-map"])
def test_evaluate_and_gradient_step_match_generic(shape, dtype, per_item):
    check_evaluate_and_step(NumbaEngine, npx, np.asarray, shape, dtype, per_item, _tol(dtype))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_evaluate_and_gradient_step_match_generic(shape, dtype):
    check_evaluate_and_step(NumbaEngine, npx, np.asarray, shape, dtype, True, _tol(dtype), masked=True)


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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile_rows", [None, 20], ids=["one-band", "bands"])
def test_the_dual_projection_is_exact_at_zero_and_stays_in_the_unit_disc(monkeypatch, tile_rows, dtype):
    """The shrink factor's estimate of 1/sqrt(q) must not turn q = 0 into NaN, nor let |p| pass 1."""
    shape = (2, 50, 40)
    if tile_rows is not None:
        monkeypatch.setattr(numba_engine, "TILE_BYTES", 6 * 40 * np.dtype(dtype).itemsize * tile_rows)
    engine = NumbaEngine()
    flat = np.full(shape, 0.4, dtype=dtype)
    out, dual = engine.tv_prox(flat, 0.3, 7, xp=npx, dual=np.zeros((shape[0], 2, *shape[1:]), dtype))
    np.testing.assert_array_equal(out, flat)
    np.testing.assert_array_equal(dual, 0)
    steep = (np.random.default_rng(4).random(shape) * 50).astype(dtype)
    _, dual = engine.tv_prox(steep, 5.0, 9, xp=npx, dual=np.zeros((shape[0], 2, *shape[1:]), dtype))
    norms = np.sqrt(dual[:, 0].astype(np.float64) ** 2 + dual[:, 1].astype(np.float64) ** 2)
    assert np.all(np.isfinite(dual))
    assert norms.max() <= 1 + 4 * np.finfo(dtype).eps
    assert norms.max() >= 1 - 4 * np.finfo(dtype).eps  # a weight this large saturates some duals


def test_device_arrays_are_refused_not_copied():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"numba engine computes on NumPy arrays.*torch"):
        NumbaEngine().tv_prox(torch.ones(4, 4), 0.1, 3, xp=npx)


def test_scratch_memory_is_bounded_across_batch_sizes(monkeypatch):
    monkeypatch.setattr(numba_engine, "TILE_BYTES", 6 * 40 * 4 * 20)  # 40-pixel rows: bands of 16 rows, sweeps of 4
    engine = NumbaEngine()
    big = np.random.default_rng(5).random((3, 50, 40)).astype(np.float32)
    for f in (big, big[:1], big, big[:2]):
        engine.tv_prox(f, 0.1, 3, xp=npx)
    sizes = {role: a.size for (role, _), a in engine._scratch.arrays.items()}
    workers = 1 if big.size < numba_engine.PARALLEL_MIN_PIXELS else numba.get_num_threads()
    # each worker's tile (band and halos) and the hand-over of two dual iterates of the largest stack between sweeps
    assert sizes == {"tiles": workers * 3 * 2 * (16 + 2 * 6) * 40, "sweeps": 2 * 3 * 2 * 2 * 50 * 40}


def test_the_default_inner_iterations_run_in_one_sweep_of_a_banded_map():
    band, depth = tiling(512, 512, 4)
    assert band < 512 and depth >= FusionParams().n_tv


@pytest.mark.parametrize("tile_rows", [3, 5, 9, 20, 60], ids=lambda r: f"{r}-rows")
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("method", ["fgp", "gp"])
@pytest.mark.parametrize("prior", ["tv", "dtv", "mixed"])
def test_the_blocked_prox_matches_generic_for_any_band_and_sweep(monkeypatch, tile_rows, warm, method, prior):
    """Bands with halos, sweeps of several iterations and their hand-over give the row-streamed iteration.

    Directional TV on every map, or on some maps with Huber and TV on the others (``mixed``).
    """
    monkeypatch.setattr(numba_engine, "TILE_BYTES", 6 * 37 * 8 * tile_rows)
    shape = (1, 2, 41, 37)
    assert (tiling(41, 37, 8)[0] < 41) == (tile_rows < 41)  # several bands unless the map fits
    rng = np.random.default_rng(7)
    f = rng.random(shape) - 0.3
    start = rng.uniform(-0.5, 0.5, (*shape[:2], 2, *shape[2:])) if warm else None
    keywords = {} if prior == "tv" else prior_keywords(shape, prior, np.float64)
    for n_iter in (1, 2, 3, 10, 17):
        ours = NumbaEngine().tv_prox(f, 0.2, n_iter, method=method, xp=npx, dual=start, **keywords)
        ref = tv.tv_prox(f, 0.2, n_iter, method=method, xp=npx, dual=start, **keywords)
        for a, b in zip(ours if warm else [ours], ref if warm else [ref], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("whole", [True, False], ids=["whole-maps", "tiles"])
@pytest.mark.parametrize("prior", ["dtv", "mixed"])
def test_the_directional_prox_matches_generic_whole_or_tiled(monkeypatch, whole, prior):
    """Both ways of running a directional prox: each map whole on one thread, or (map, band) tiles."""
    monkeypatch.setattr(numba_engine, "whole_maps_per_thread", lambda *shape_and_threads: whole)
    monkeypatch.setattr(numba_engine, "TILE_BYTES", 6 * 37 * 8 * 9)  # several bands of 41 rows
    shape = (3, 3, 41, 37)
    keywords = prior_keywords(shape, prior, np.float64)
    rng = np.random.default_rng(11)
    f = rng.random(shape) - 0.3
    start = rng.uniform(-0.5, 0.5, (*shape[:2], 2, *shape[2:]))
    for n_iter in (1, 12, 20):
        ours = NumbaEngine().tv_prox(f, [0.1, 0.2, 0.3], n_iter, xp=npx, dual=start, **keywords)
        ref = tv.tv_prox(f, [0.1, 0.2, 0.3], n_iter, xp=npx, dual=start, **keywords)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_directional_maps_run_whole_only_when_many_small_ones_keep_the_threads_busy():
    assert numba_engine.whole_maps_per_thread(60, 256, 256, 4, 2)
    assert not numba_engine.whole_maps_per_thread(3, 256, 256, 4, 2)  # 3 maps on 2 threads: one idles half the time
    assert not numba_engine.whole_maps_per_thread(60, 512, 512, 4, 2)  # beyond L2 whole: tiles run from cache


_TWO_THREADS = """
import sys, threading
import numba
import numpy as np
import fusex
from fusex.backends.numba_engine import serialized

one = fusex.datasets.phantom((256, 256), seed=0)  # large enough for every kernel to run threaded
many = [fusex.datasets.phantom((64, 64), seed=s) for s in range(4)]  # the one-map-per-thread TV prox
batch = (np.stack([s.haadf for s in many]), np.stack([s.maps for s in many]))
params = fusex.FusionParams(n_iter=4, tol=0.0)


def fuse_both():
    return (
        fusex.fuse(one.haadf, one.maps, elements=one.elements, params=params, backend="numba").maps,
        fusex.fuse(*batch, elements=one.elements, params=params, backend="numba").maps,
    )


start = threading.Barrier(2)
results = [None, None]


def work(k):
    start.wait()
    results[k] = [fuse_both() for _ in range(2)]


threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
alone = fuse_both()
same = all(np.array_equal(a, b) for runs in results for run in runs for a, b in zip(run, alone))
print(numba.threading_layer(), serialized(), same)
sys.exit(0 if same else 1)
"""


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_two_threads_fuse_at_once_under_any_threading_layer(layer):
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_THREADING_LAYER"}
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    run = subprocess.run([sys.executable, "-c", _TWO_THREADS], env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    chosen, serial, same = run.stdout.split()
    assert same == "True"
    assert serial == str(chosen == "workqueue")
    if layer != "default":
        assert chosen == layer


@pytest.mark.parametrize("band_depth", [(1, 1), (2, 3), (5, 8), (16, 4), (40, 2)], ids=str)
def test_the_blocked_prox_on_every_worker_matches_generic_per_map_and_leaves_the_start_alone(monkeypatch, band_depth):
    """Many (map, band) tasks over all threads, Huber and TV maps of their own weights, float32, no projection."""
    monkeypatch.setattr(numba_engine, "tiling", lambda height, width, itemsize: band_depth)
    rng = np.random.default_rng(9)
    shape = (2, 2, 70, 300)  # above PARALLEL_MIN_PIXELS: every numba thread takes tasks
    assert np.prod(shape) >= numba_engine.PARALLEL_MIN_PIXELS
    f = (rng.random(shape) - 0.3).astype(np.float32)
    start = rng.uniform(-0.5, 0.5, (2, 2, 2, 70, 300)).astype(np.float32)
    kept = start.copy()
    weight = np.array([[0.1, 0.3], [0.2, 0.05]])
    delta = np.array([[0.0, 0.05], [0.1, 0.0]])  # Huber on two maps, TV on the others
    for n_iter in (1, 9):
        ours = NumbaEngine().tv_prox(f, weight, n_iter, nonneg=False, xp=npx, dual=start, huber_delta=delta)
        ref = tv.tv_prox(f, weight, n_iter, nonneg=False, xp=npx, dual=start, huber_delta=delta)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_allclose(a, b, **_tol(np.float32))
    np.testing.assert_array_equal(start, kept)


def test_a_solve_keeps_blas_on_one_thread_and_gives_the_limit_back():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import fusex

    def blas_threads():
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("NumPy reports no BLAS library here")
    sample = fusex.datasets.phantom((32, 32), seed=0)
    seen = []
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        fusex.fuse(
            sample.haadf,
            sample.maps,
            elements=sample.elements,
            params=fusex.FusionParams(n_iter=2, tol=0.0),
            engine="numba",
            callback=lambda k, state: seen.append(blas_threads()),
        )
        assert blas_threads() == before
    assert seen and all(threads == [1] * len(before) for threads in seen)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_step_start_and_products_match_the_generic_solver_code(dtype):
    from fusex.solver import _step

    rng = np.random.default_rng(8)
    x, x_prev, x_new, z = (rng.random((3, 2, 17, 23)).astype(dtype) - 0.2 for _ in range(4))
    beta = np.array([0.0, 0.4, 0.9])
    engine = NumbaEngine()
    y = engine.extrapolate(x, x_prev, beta, xp=npx)
    expected = np.clip(x + beta.astype(dtype)[:, None, None, None] * (x - x_prev), 0, None)
    assert y.dtype == dtype and not np.shares_memory(y, x)
    np.testing.assert_allclose(y, expected, **_tol(dtype))
    ours = engine.step_products(x_new, y, z, x, xp=npx)
    generic = _step._step_products(object(), x_new, y, z, x, npx)  # an engine without its own pass
    for a, b in zip(ours, generic, strict=True):
        assert a.dtype == np.float64 and a.shape == (3,)
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("prior", ["tv", "huber", "dtv"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_powers_and_poisson_terms_of_a_batch_match_numpy_item_by_item(dtype, prior):
    # every prior: each prior's loop runs between the maps' power loops, which must not see its values
    rng = np.random.default_rng(5)
    x = rng.random((4, 2, 3, 5)).astype(dtype)
    x[x < 0.3] = 0.0
    counts = rng.poisson(2.0, x.shape).astype(dtype)
    haadf = rng.random((4, 3, 5)).astype(dtype)
    weights = np.ones((4, 2), dtype=dtype)
    gamma = np.array([1.7, 1.7, 1.0, 1.6])  # the third item has gamma = 1: x**0 = 1, also at x = 0
    eps = np.array([0.01, 0.01, 0.01, 0.1])
    extra = {
        "tv": {},
        "huber": {"huber_delta": 0.1},
        "dtv": {"strength": 0.5, "direction": rng.standard_normal((4, 2, 3, 5)).astype(dtype)},
    }[prior]
    ev = NumbaEngine().evaluate(x, haadf, counts, weights, gamma=gamma, eps=eps, xp=np, **extra)
    tight = 2e-6 if dtype == np.float32 else 1e-13
    for n in range(4):
        g, e = dtype(gamma[n] - 1.0), dtype(eps[n])
        np.testing.assert_allclose(ev.x_pow_m1[n], np.power(x[n], g), rtol=tight)
        poisson = np.sum(x[n] - counts[n] * np.log(x[n] + e), axis=(-2, -1), dtype=np.float64)
        np.testing.assert_allclose(ev.poisson[n], poisson, rtol=tight)
    assert np.all(ev.x_pow_m1[2] == 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True], ids=["all-pixels", "masked"])
def test_the_haadf_fit_passes_match_the_generic_fit_code(dtype, masked):
    from fusex.operators import haadf_model

    rng = np.random.default_rng(11)
    x = rng.random((3, 2, 17, 23)).astype(dtype)
    x[x < 0.2] = 0.0
    x_pow_m1 = (x ** dtype(0.7)).astype(dtype)
    weights = rng.random((3, 2, 1, 1)).astype(dtype)
    image, background = (rng.random((3, 17, 23)).astype(dtype) for _ in range(2))
    mask = (rng.random((3, 17, 23)) > 0.2).astype(dtype) if masked else None
    m = np.ones_like(image) if mask is None else mask
    engine = NumbaEngine()
    model, squares, cross = engine.haadf_moments(x, x_pow_m1, weights, image, mask, xp=npx)
    expected = haadf_model(x * x_pow_m1, weights, npx)
    assert model.dtype == dtype and squares.dtype == cross.dtype == np.float64
    np.testing.assert_allclose(model, expected, **_tol(dtype))
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(squares, np.sum((m * expected) ** 2, axis=(1, 2)), rtol=rtol)
    np.testing.assert_allclose(cross, np.sum(m * expected * m * image, axis=(1, 2)), rtol=rtol)

    gain = np.array([0.5, 1.5, np.nan])  # a NaN gain (a model that overflowed) must reach the objective
    haadf, residual, squares = engine.haadf_residual(image, background, model, gain, mask, xp=npx)
    r = (image - background) - gain.astype(dtype)[:, None, None] * model
    np.testing.assert_allclose(haadf, image - background, **_tol(dtype))
    np.testing.assert_allclose(residual[:2], (m * r)[:2], **_tol(dtype))
    np.testing.assert_allclose(squares[:2], np.sum(m * r * r, axis=(1, 2))[:2], rtol=rtol)
    assert np.isnan(squares[2]) and np.all(np.isnan(residual[2][m[2] > 0]))
    assert not np.shares_memory(haadf, image) and not np.shares_memory(residual, background)
