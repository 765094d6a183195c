"""Per-item and per-map scalars: on the device for the generic path, on the host for the compiled kernels."""

import numpy as np
import pytest

from fusex._per_item import (
    any_positive,
    broadcast_maps,
    guided_parameters,
    is_guided,
    item_values,
    map_values,
    map_weights,
    per_item,
)


@pytest.mark.parametrize("value", [0.5, 2, np.float32(0.5), np.asarray(0.5)])
def test_one_number_stays_a_python_float(value):
    like = np.ones((2, 3, 4, 4), dtype=np.float32)
    out = per_item(value, like)
    assert type(out) is float
    assert out == float(value)
    assert (like * out).dtype == np.float32  # a scalar keeps the maps' precision


@pytest.mark.parametrize(("values", "shape"), [([1.0, 2.0], (2, 1, 1, 1)), ([[1, 2, 3], [4, 5, 6]], (2, 3, 1, 1))])
def test_values_broadcast_over_the_axes_after_theirs(backend, values, shape):
    like = backend.asarray(np.ones((2, 3, 4, 4), dtype=np.float32))
    out = per_item(values, like)
    assert tuple(out.shape) == shape
    assert out.dtype == like.dtype
    np.testing.assert_array_equal(np.asarray(values, dtype=np.float32).reshape(shape), backend.numpy(out))


def test_values_given_the_namespace_match_those_found_from_the_array():
    like = np.ones((2, 4, 4), dtype=np.float64)
    values = np.asarray([3.0, 4.0])
    np.testing.assert_array_equal(per_item(values, like, np), per_item(values, like))
    assert per_item(values, like).shape == (2, 1, 1)


def test_host_values_take_the_kernel_dtype_and_are_contiguous():
    out = item_values(0.25, 3, np.float32)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [0.25] * 3)
    np.testing.assert_array_equal(map_values([1.0, 2.0], 2, 3, np.float64), [[1, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(map_values([[1, 2], [3, 4]], 2, 2, np.float64), [[1, 2], [3, 4]])


def test_per_item_and_per_map_values_broadcast_against_each_other():
    weight, delta = broadcast_maps([0.1, 0.2], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(weight, [[0.1] * 3, [0.2] * 3])
    assert delta.shape == (2, 3) and weight.flags.c_contiguous


def test_map_weights_repeat_each_items_weight_over_its_maps_with_step_one_over_8w():
    w, steps = map_weights([0.5, 0.0], 4, np.float64)
    np.testing.assert_array_equal(w, [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(steps, [0.25, 0.25, 0.0, 0.0])  # a zero weight gets a zero step


def test_guided_parameters_give_the_huber_step_and_keep_of_each_map():
    w, step, keep, gamma = guided_parameters(0.5, [[0.0, 4.0]], 0.3, 2, np.float64)
    np.testing.assert_allclose(step, [1 / 4, 1 / 8])  # 1 / (8 w + delta)
    np.testing.assert_allclose(keep, [1.0, 0.5])  # 8 w / (8 w + delta)
    np.testing.assert_array_equal(w, [0.5, 0.5])
    np.testing.assert_array_equal(gamma, [0.3, 0.3])


def test_a_prior_is_guided_by_a_huber_delta_or_by_a_direction_with_a_strength():
    field = np.zeros((1, 2, 4, 4))
    assert not any_positive([0.0, -1.0]) and any_positive([[0.0, 0.1]])
    assert not is_guided(0.0, 0.5, None)  # a strength without a field is plain TV
    assert not is_guided(0.0, 0.0, field)
    assert is_guided(0.0, [0.0, 0.5], field)
    assert is_guided([[0.0, 0.2]], 0.0, None)
