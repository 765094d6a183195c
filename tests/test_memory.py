import array_api_compat.numpy as npx
import numpy as np
import pytest

import fusex
from fusex import memory
from fusex.datasets import phantom


def test_bytes_per_item_follows_the_engine_table():
    a, b = memory.ARRAYS_PER_ITEM["numba"]
    assert memory.bytes_per_item("numba", 3, 100, 200, 4) == (3 * a + b) * 100 * 200 * 4
    assert memory.bytes_per_item("unknown", 1, 10, 10, 8) == memory.bytes_per_item("generic", 1, 10, 10, 8)


def test_free_host_memory_is_reported():
    free = memory.free_bytes(npx, "cpu")
    assert free is None or free > 0


def test_batch_size_comes_from_free_memory(monkeypatch):
    per_item = memory.bytes_per_item("numba", 3, 256, 256, 4)
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: 10 * per_item)
    assert memory.plan_batch_size(64, (3, 256, 256), 4, "numba", npx, "cpu") == 8  # 80 % of 10 items
    assert memory.plan_batch_size(5, (3, 256, 256), 4, "numba", npx, "cpu") == 5
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: 1)
    assert memory.plan_batch_size(64, (3, 256, 256), 4, "numba", npx, "cpu") == 1  # one item is always tried


def test_cpu_chunks_are_capped(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: None)
    stack = 3 * 256 * 256 * 4
    for engine in ("generic", "numba"):
        assert memory.plan_batch_size(64, (3, 256, 256), 4, engine, npx, "cpu") == memory.CPU_CHUNK_BYTES // stack
    assert memory.plan_batch_size(64, (3, 2048, 2048), 4, "numba", npx, "cpu") == 1
    assert memory.plan_batch_size(10**5, (3, 8, 8), 4, "cupy", npx, "cpu") == 65535 // 3
    assert memory.plan_batch_size(10**5, (3, 8, 8), 4, "cupy", npx, "cpu", batch_size=30000) == 65535 // 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_bad_batch_size_is_named(bad):
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        memory.plan_batch_size(4, (3, 8, 8), 4, "numba", npx, "cpu", bad)


def test_fuse_splits_a_batch_that_does_not_fit(monkeypatch):
    pytest.importorskip("numba")
    samples = [phantom((16, 16), seed=i) for i in range(5)]
    haadf, maps = np.stack([s.haadf for s in samples]), np.stack([s.maps for s in samples])
    sizes = []
    solve = fusex.api.solve

    def spy(problem, *args, **kwargs):
        sizes.append(problem.counts.shape[0])
        return solve(problem, *args, **kwargs)

    monkeypatch.setattr(fusex.api, "solve", spy)
    per_item = memory.bytes_per_item("numba", 3, 16, 16, 4)
    monkeypatch.setattr(memory, "free_bytes", lambda xp, device: int(2.6 * per_item))
    res = fusex.fuse(haadf, maps, elements=samples[0].elements, params=fusex.FusionParams(n_iter=3), backend="numba")
    assert sizes == [2, 2, 1] and res.maps.shape == maps.shape


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_memory_does_not_grow_with_iterations(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    import tracemalloc

    samples = [phantom((96, 96), dose=2.0 + i, seed=i) for i in range(4)]
    haadf, maps = np.stack([s.haadf for s in samples]), np.stack([s.maps for s in samples])
    # step 4 makes items backtrack (subsets of several sizes go through the engine)
    params = fusex.FusionParams(n_iter=4, tol=0.0, step=4.0, lambda_tv=[0.001, 0.004, 0.01, 0.03])

    def peak(n_iter):
        tracemalloc.start()
        try:
            fusex.fuse(haadf, maps, elements=samples[0].elements, params=params.replace(n_iter=n_iter), backend=backend)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(30)  # warm up: compilation, and numba's lazily loaded specializations
    short, long = peak(30), peak(90)
    # the history table grows by a few hundred bytes per iteration; the arrays must not grow at all
    assert long <= 1.02 * short, f"peak memory grew from {short} to {long} bytes with 3x the iterations"
