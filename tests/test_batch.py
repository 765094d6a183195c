"""Batched solves: every item follows the path it would follow alone, on every backend."""

import numpy as np
import pandas as pd
import pytest

import fusex
from fusex import FusionDivergedError, FusionParams
from fusex.datasets import phantom
from fusex.result._history import History
from fusex.solver._live import merge_rows, take_rows


def _stack(shape=(24, 24), doses=(2.0, 6.0, 20.0)):
    samples = [phantom(shape, dose=d, seed=i) for i, d in enumerate(doses)]
    return np.stack([s.haadf for s in samples]), np.stack([s.maps for s in samples]), samples[0].elements


# Step 4 makes some items backtrack; tol stops them at different iterations; lambda_tv differs per item.
PARAMS = FusionParams(n_iter=30, tol=2e-3, step=4.0, lambda_tv=(0.002, 0.005, 0.02))


def test_batch_equals_item_by_item(backend):
    haadf, maps, elements = _stack()
    for choice in backend.choices:
        arrays = backend.asarray(haadf), backend.asarray(maps)
        batch = fusex.fuse(*arrays, elements=elements, params=PARAMS, backend=choice)
        assert batch.maps.shape == maps.shape and batch.haadf_model.shape == haadf.shape
        assert batch.haadf_background.shape == haadf.shape
        assert isinstance(batch.history.index, pd.MultiIndex)
        for n in range(3):
            alone = fusex.fuse(
                backend.asarray(haadf[n]),
                backend.asarray(maps[n]),
                elements=elements,
                params=PARAMS.replace(lambda_tv=PARAMS.lambda_tv[n]),
                backend=choice,
            )
            ours, theirs = backend.numpy(batch.maps[n, ...]), backend.numpy(alone.maps)
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
            ours, theirs = backend.numpy(batch.haadf_model[n, ...]), backend.numpy(alone.haadf_model)
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
            ours, theirs = backend.numpy(batch.haadf_background[n, ...]), backend.numpy(alone.haadf_background)
            np.testing.assert_allclose(ours, theirs, atol=1e-6)
            assert batch.n_iter[n] == alone.n_iter and batch.stop_reason[n] == alone.stop_reason
            pd.testing.assert_frame_equal(batch.history.loc[n], alone.history, rtol=1e-5)
        assert len(set(batch.n_iter.tolist())) > 1, "the items should stop at different iterations"
        assert batch.history.backtracks.sum() > 0


def test_one_acquisition_with_a_vector_of_parameters():
    sample = phantom((20, 20), seed=3)
    lambdas = np.array([[0.001, 0.01], [0.003, 0.03]])
    res = fusex.fuse(
        sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=8, lambda_tv=lambdas)
    )
    assert res.maps.shape == (2, 2, 3, 20, 20) and res.n_iter.shape == (2, 2)
    alone = fusex.fuse(
        sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=8, lambda_tv=0.03)
    )
    np.testing.assert_allclose(res.maps[1, 1], alone.maps, rtol=1e-5, atol=1e-6)
    assert res.params.lambda_tv == tuple(map(tuple, lambdas.tolist()))


def test_per_item_gamma_gives_per_item_weights():
    haadf, maps, elements = _stack(doses=(3.0, 3.0))
    res = fusex.fuse(haadf, maps, elements=elements, params=FusionParams(n_iter=3, gamma=[1.4, 2.0]))
    assert res.weights.shape == (2, 3)
    single = fusex.fuse(haadf[1], maps[1], elements=elements, params=FusionParams(n_iter=3, gamma=2.0))
    np.testing.assert_allclose(res.weights[1], single.weights)
    np.testing.assert_allclose(res.maps[1], single.maps, rtol=1e-5, atol=1e-6)


def test_parameters_broadcast_against_batch_axes():
    haadf, maps, elements = _stack(doses=(2.0, 4.0))
    grid_h, grid_m = np.stack([haadf] * 3, axis=1), np.stack([maps] * 3, axis=1)  # (2, 3, ...)
    res = fusex.fuse(grid_h, grid_m, elements=elements, params=FusionParams(n_iter=4, lambda_chem=[0.005, 0.01, 0.02]))
    assert res.maps.shape == (2, 3, 3, 24, 24)
    np.testing.assert_allclose(res.maps[1, 0], res.maps[1, 0])
    alone = fusex.fuse(haadf[1], maps[1], elements=elements, params=FusionParams(n_iter=4, lambda_chem=0.02))
    np.testing.assert_allclose(res.maps[1, 2], alone.maps, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"batch shape \(2, 3\).*per-item parameters' shape \(2,\)"):
        fusex.fuse(grid_h, grid_m, elements=elements, params=FusionParams(lambda_chem=[0.1, 0.2]))


def test_each_item_is_normalized_on_its_own():
    haadf, maps, elements = _stack(doses=(2.0, 50.0))
    res = fusex.fuse(haadf, maps, elements=elements, params=FusionParams(n_iter=2))
    assert res.scale["maps"].shape == (2, 3, 2) and res.scale["haadf"].shape == (2, 2)
    np.testing.assert_allclose(res.scale["maps"][1, :, 1], maps[1].max(axis=(-2, -1)) - maps[1].min(axis=(-2, -1)))
    alone = fusex.fuse(haadf[1], maps[1], elements=elements, params=FusionParams(n_iter=2))
    np.testing.assert_allclose(res.to_input_units()[1], alone.to_input_units(), rtol=1e-5)
    assert "batch (2,)" in res.summary()


def test_a_diverging_item_is_named_or_marked():
    haadf, maps, elements = _stack()
    # the plain solver with a unit step: the Lipschitz step needs backtracking to stay safe
    params = FusionParams(
        n_iter=30, step=1.0, accel="none", backtracking=False, lambda_chem=[0.01, 50.0, 0.01], divergence_patience=5
    )
    with pytest.raises(FusionDivergedError, match=r"in batch item \(1,\)") as info:
        fusex.fuse(haadf, maps, elements=elements, params=params)
    assert info.value.history.index.name == "iteration"
    res = fusex.fuse(haadf, maps, elements=elements, params=params, on_divergence="mark")
    assert list(res.stop_reason) == ["n_iter", "diverged", "n_iter"]
    assert res.n_iter[1] < 30 and res.n_iter[0] == 30
    with pytest.raises(ValueError, match="`on_divergence` must be"):
        fusex.fuse(haadf, maps, elements=elements, on_divergence="ignore")


def test_batch_callback_sees_the_live_items():
    haadf, maps, elements = _stack()
    seen = []

    def callback(k, state):
        seen.append((k, state.items.tolist(), state.total.shape, tuple(state.maps.shape)))
        return k == 3

    res = fusex.fuse(haadf, maps, elements=elements, params=FusionParams(n_iter=10), callback=callback)
    assert seen[0] == (1, [0, 1, 2], (3,), (3, 3, 24, 24))
    assert list(res.stop_reason) == ["callback"] * 3 and list(res.n_iter) == [3, 3, 3]


def test_mismatched_batch_shapes_are_named():
    haadf, maps, elements = _stack()
    with pytest.raises(ValueError, match=r"`haadf` has batch shape \(2,\).*`maps` has batch shape \(3,\)"):
        fusex.fuse(haadf[:2], maps, elements=elements)


def test_take_and_merge_rows(backend, xp):
    full = backend.asarray(np.arange(12.0).reshape(4, 3))
    part = backend.asarray(-np.arange(6.0).reshape(2, 3))
    rows = np.array([3, 1])
    np.testing.assert_array_equal(backend.numpy(take_rows(full, rows, xp)), np.arange(12.0).reshape(4, 3)[[3, 1]])
    merged = backend.numpy(merge_rows(full, part, rows, xp))
    expected = np.arange(12.0).reshape(4, 3)
    expected[[3, 1]] = -np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(merged, expected)


def test_history_table_per_item():
    history = History()
    zeros = np.zeros(2)
    history.record(0, np.array([0, 1]), zeros, zeros, zeros, np.array([5.0, 6.0]), zeros, zeros, zeros)
    history.record(1, np.array([1]), *[np.array([1.0])] * 7)
    table = history.frame(batched=True)
    assert table.index.names == ["item", "iteration"] and len(table) == 3
    assert history.frame(batched=False, item=1)["total"].tolist() == [6.0, 1.0]
    with pytest.raises(ValueError, match="7 columns"):
        history.record(2, np.array([1]), *[np.array([1.0])] * 6)


def test_minibatches_give_the_same_results(backend):
    haadf, maps, elements = _stack(doses=(2.0, 3.0, 5.0, 8.0, 20.0))
    params = FusionParams(n_iter=12, tol=1e-4, lambda_tv=[0.002, 0.004, 0.006, 0.008, 0.01])
    h, m = backend.asarray(haadf), backend.asarray(maps)
    whole = fusex.fuse(h, m, elements=elements, params=params)
    split = fusex.fuse(h, m, elements=elements, params=params, batch_size=2)
    np.testing.assert_allclose(backend.numpy(split.maps), backend.numpy(whole.maps), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(split.n_iter, whole.n_iter)
    # torch sums a batch of 2 and one of 5 in different orders; the restarts carry that rounding a little further
    pd.testing.assert_frame_equal(split.history, whole.history, rtol=1e-5)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        fusex.fuse(h, m, elements=elements, params=params, batch_size=0)


def test_one_item_of_a_batch_reads_like_a_single_result():
    haadf, maps, elements = _stack()
    batch = fusex.fuse(haadf, maps, elements=elements, params=PARAMS)
    alone = fusex.fuse(haadf[2], maps[2], elements=elements, params=PARAMS.replace(lambda_tv=PARAMS.lambda_tv[2]))
    item = batch.item(2)
    assert item.batch_shape == () and item.params == alone.params and item.stop_reason == alone.stop_reason
    np.testing.assert_allclose(item.to_input_units(), alone.to_input_units(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(item.haadf_background, batch.haadf_background[2])
    np.testing.assert_allclose(item.haadf_background, alone.haadf_background, atol=1e-6)
    assert np.ptp(alone.haadf_background) > 0  # a background was fitted
    pd.testing.assert_frame_equal(item.history, alone.history, rtol=1e-5)
    assert item.summary().splitlines()[1] == alone.summary().splitlines()[1]
    with pytest.raises(ValueError, match="one index per batch axis"):
        batch.item(0, 1)


def test_plots_ask_for_one_fusion_of_a_batch():
    pytest.importorskip("matplotlib")
    from fusex import plot

    haadf, maps, elements = _stack(doses=(2.0, 3.0))
    res = fusex.fuse(haadf, maps, elements=elements, params=FusionParams(n_iter=2))
    with pytest.raises(ValueError, match=r"batch \(2,\) of fusions.*result\.item\(0\)"):
        plot.compare_maps(res)
    with pytest.raises(ValueError, match=r"batch \(2,\) of fusions"):
        plot.convergence(res)


def test_item_takes_negative_indices():
    haadf, maps, elements = _stack(doses=(2.0, 3.0))
    res = fusex.fuse(haadf, maps, elements=elements, params=FusionParams(n_iter=2))
    np.testing.assert_array_equal(res.item(-1).maps, res.maps[1])
