"""Lazy fusion of dask-backed xarray inputs, on threads and on a local cluster of processes."""

import numpy as np
import pytest
import xarray as xr

import fusex
from fusex.datasets import phantom

pytest.importorskip("dask.array")

PARAMS = fusex.FusionParams(n_iter=8)


@pytest.fixture(scope="module")
def frames():
    samples = [phantom((24, 24), dose=2.0 + i, seed=i) for i in range(4)]
    return xr.Dataset(
        {
            "haadf": (("frame", "y", "x"), np.stack([s.haadf for s in samples])),
            "maps": (("frame", "element", "y", "x"), np.stack([s.maps for s in samples])),
        },
        coords={"element": list(samples[0].elements), "frame": [10, 20, 30, 40]},
    )


@pytest.fixture(scope="module")
def eager(frames):
    return fusex.fuse(frames, params=PARAMS)


def test_dask_input_gives_a_lazy_result_equal_to_the_eager_one(frames, eager):
    lazy = fusex.fuse(frames.chunk({"frame": 2}), params=PARAMS)
    assert lazy.maps.chunks is not None and lazy.maps.dims == ("frame", "element", "y", "x")
    out = lazy.compute(scheduler="threads")
    np.testing.assert_array_equal(out.maps.values, eager.maps.values)
    assert out.haadf_background.dims == ("frame", "y", "x")
    np.testing.assert_array_equal(out.haadf_background.values, eager.haadf_background.values)
    np.testing.assert_array_equal(out.iterations_run.values, eager.iterations_run.values)
    for name in ("haadf_offset_range", "maps_offset_range"):  # to map the fused maps back to counts
        np.testing.assert_array_equal(out[name].values, eager[name].values)
    assert list(out.frame.values) == [10, 20, 30, 40]


def test_the_lazy_result_carries_the_eager_history_padded_to_the_cap(frames):
    params = PARAMS.replace(n_iter=40, tol=1e-2)  # the frames stop at different iterations, before the cap
    eager = fusex.fuse(frames, params=params)
    run = eager.sizes["iteration"]
    assert run < params.n_iter + 1 and len(set(eager.iterations_run.values)) > 1
    out = fusex.fuse(frames.chunk({"frame": 2}), params=params).compute(scheduler="threads")
    assert out.history_total.dims == ("frame", "iteration") and out.sizes["iteration"] == params.n_iter + 1
    np.testing.assert_array_equal(out.iteration.values, np.arange(params.n_iter + 1))
    for column in ("haadf", "poisson", "tv", "total", "step", "backtracks"):
        values = out[f"history_{column}"].values
        np.testing.assert_array_equal(values[:, :run], eager[f"history_{column}"].values)
        assert np.all(np.isnan(values[:, run:]))
    np.testing.assert_array_equal(out.stop_reason.values, eager.stop_reason.values)
    np.testing.assert_array_equal(out.converged.values, eager.converged.values)


def test_chunks_across_pixels_are_merged_with_a_warning(frames, eager):
    with pytest.warns(UserWarning, match=r"split into several chunks along \['y'\].*rechunks"):
        lazy = fusex.fuse(frames.chunk({"frame": 1, "y": 12}), params=PARAMS)
    np.testing.assert_array_equal(lazy.maps.compute(scheduler="threads").values, eager.maps.values)


def test_per_item_parameters_are_refused_with_dask(frames):
    with pytest.raises(ValueError, match=r"per-item parameters .* cannot follow dask chunks"):
        fusex.fuse(frames.chunk({"frame": 2}), params=fusex.FusionParams(lambda_tv=[0.1, 0.2, 0.3, 0.4]))


def test_per_element_weights_run_lazily_and_are_checked_before_computing(frames):
    tv = {"Sr": 0.01, "Ti": 0.002, "O": 0.02}
    params = PARAMS.replace(lambda_tv=tv)
    lazy = fusex.fuse(frames.chunk({"frame": 2}), params=params)
    eager = fusex.fuse(frames, params=params)
    # one builder for both; the lazy result lacks only the z and weight coordinates
    xr.testing.assert_identical(
        lazy.param_lambda_tv.reset_coords(drop=True), eager.param_lambda_tv.reset_coords(drop=True)
    )
    np.testing.assert_array_equal(lazy.param_lambda_tv.sel(frame=10, element=["Sr", "Ti", "O"]), [0.01, 0.002, 0.02])
    np.testing.assert_array_equal(lazy.maps.compute(scheduler="threads").values, eager.maps.values)
    with pytest.raises(ValueError, match="but the maps are"):
        fusex.fuse(frames.chunk({"frame": 2}), params=PARAMS.replace(lambda_tv={"Sr": 0.01, "Ti": 0.01, "Fe": 0.1}))


def test_a_local_cluster_of_processes_gives_the_in_memory_result(frames, eager):
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = fusex.fuse(frames.chunk({"frame": 1}), params=PARAMS)
        out = client.compute(lazy).result()
        workers = client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2
    np.testing.assert_allclose(out.maps.values, eager.maps.values, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out.iterations_run.values, eager.iterations_run.values)


def test_options_that_cannot_run_lazily_are_named(frames):
    lazy = frames.chunk({"frame": 2})
    with pytest.raises(ValueError, match="`callback` cannot follow a lazy fusion"):
        fusex.fuse(lazy, params=PARAMS, callback=lambda k, state: None)
    with pytest.raises(ValueError, match="params='auto' needs the data in memory"):
        fusex.fuse(lazy, params="auto")
    wild = PARAMS.replace(step=1e15, backtracking=False)  # float32 overflows at once (1e60 is refused up front)
    with np.errstate(all="ignore"):
        with pytest.raises(fusex.FusionDivergedError):
            fusex.fuse(lazy, params=wild).compute(scheduler="threads")
        marked = fusex.fuse(lazy, params=wild, on_divergence="mark")  # each chunk finishes, flagged
        assert not marked.converged.compute(scheduler="threads").any()
