"""Rows of the live state of a batched solve: taking and merging them."""

import numpy as np

from fusex.solver._live import merge_rows, take_rows


def test_merging_replaces_the_rows_in_order_and_leaves_full_alone(backend):
    xp = backend.xp
    full = backend.asarray(np.arange(12.0).reshape(4, 3))
    part = backend.asarray(-np.arange(6.0).reshape(2, 3))
    merged = merge_rows(full, part, np.array([3, 1]), xp)
    np.testing.assert_array_equal(backend.numpy(merged), [[0, 1, 2], [-3, -4, -5], [6, 7, 8], [0, -1, -2]])
    np.testing.assert_array_equal(backend.numpy(full), np.arange(12.0).reshape(4, 3))
    np.testing.assert_array_equal(backend.numpy(take_rows(merged, np.array([3, 1]), xp)), backend.numpy(part))


def test_merging_in_place_writes_over_a_numpy_full_and_returns_it():
    full = np.zeros((3, 2))
    merged = merge_rows(full, np.ones((1, 2)), np.array([2]), np, in_place=True)
    assert merged is full
    np.testing.assert_array_equal(full, [[0, 0], [0, 0], [1, 1]])


def test_merging_every_row_returns_part():
    part = np.ones((2, 2))
    assert merge_rows(np.zeros((2, 2)), part, np.array([0, 1]), np) is part
