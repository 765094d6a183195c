import numpy as np
import pytest

from fusex.operators import divergence, gradient, haadf_model, haadf_weights


def test_divergence_is_negative_adjoint_of_gradient(backend, xp):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((2, 7, 9))
    py, px = rng.standard_normal((2, 2, 7, 9))
    gy, gx = gradient(backend.asarray(u), xp)
    lhs = np.sum(backend.numpy(gy) * py + backend.numpy(gx) * px)
    rhs = -np.sum(u * backend.numpy(divergence(backend.asarray(py), backend.asarray(px), xp)))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_gradient_is_forward_difference_with_neumann_boundary(backend, xp):
    u = np.arange(12.0).reshape(3, 4) ** 2
    gy, gx = (backend.numpy(g) for g in gradient(backend.asarray(u), xp))
    np.testing.assert_array_equal(gy[:-1], np.diff(u, axis=0))
    np.testing.assert_array_equal(gy[-1], 0.0)
    np.testing.assert_array_equal(gx[:, :-1], np.diff(u, axis=1))
    np.testing.assert_array_equal(gx[:, -1], 0.0)


def test_gradient_of_constant_is_zero(backend, xp):
    gy, gx = gradient(backend.asarray(np.full((5, 6), 3.5)), xp)
    assert not np.any(backend.numpy(gy)) and not np.any(backend.numpy(gx))


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("none", [1.0, 1.0]),
        ("z_mean", [2 * 8 / 24, 2 * 16 / 24]),
        ("z_sum", [8 / 24, 16 / 24]),
        ("zgamma_mean", [2 * 8**2 / (8**2 + 16**2), 2 * 16**2 / (8**2 + 16**2)]),
        ("zgamma_sum", [8**2 / (8**2 + 16**2), 16**2 / (8**2 + 16**2)]),
        ((0.5, 2.0), [0.5, 2.0]),
    ],
)
def test_haadf_weight_schemes(scheme, expected):
    assert haadf_weights(scheme, (8, 16), 2.0, 2) == pytest.approx(expected)


def test_haadf_weights_need_z_or_say_how():
    with pytest.raises(ValueError, match=r"elements=.*z="):
        haadf_weights("zgamma_sum", None, 1.7, 2)
    with pytest.raises(ValueError, match="one per map"):
        haadf_weights((1.0,), None, 1.7, 2)


def test_haadf_model_is_weighted_sum_over_elements(backend, xp):
    x = np.random.default_rng(1).random((3, 4, 5))
    w = np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    out = haadf_model(backend.asarray(x), backend.asarray(w), xp)
    np.testing.assert_allclose(backend.numpy(out), np.sum(w * x, axis=0), rtol=1e-12)
