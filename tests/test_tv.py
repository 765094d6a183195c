import numpy as np
import pytest

import fusex
from fusex.objectives import tv_magnitude


def _noisy_square(seed=0, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    clean = np.zeros(shape)
    clean[10:30, 8:25] = 1.0
    return clean + 0.3 * rng.standard_normal(shape)


def _rof(u, f, weight):
    import array_api_compat.numpy as xp

    return 0.5 * np.sum((u - f) ** 2) + weight * np.sum(tv_magnitude(u, xp))


def test_matches_skimage_chambolle_minimizer():
    """Same ROF problem, independent algorithm (Chambolle 2004 in scikit-image).

    The ROF problem is strongly convex, so its minimizer is unique.  FGP is
    converged after 3000 iterations (6000 change it by < 1e-5), but
    Chambolle's projection converges as O(1/k): its distance to our answer
    must shrink as it iterates (measured 2.5e-3 at 1e4 and 1.1e-3 at 3e4
    iterations), and at every stage its objective is no lower than ours.
    """
    restoration = pytest.importorskip("skimage.restoration")
    f = _noisy_square()
    ours = fusex.tv_denoise(f, 0.25, n_iter=3000)
    distances = []
    for n in (10_000, 30_000):
        theirs = restoration.denoise_tv_chambolle(f, weight=0.25, eps=1e-14, max_num_iter=n)
        distances.append(np.abs(ours - theirs).max())
        assert _rof(ours, f, 0.25) <= _rof(theirs, f, 0.25)
    assert distances[1] < 0.6 * distances[0]
    assert distances[1] < 2e-3


def test_fgp_converges_faster_than_gp():
    f = _noisy_square(1)
    best = _rof(fusex.tv_denoise(f, 0.3, n_iter=3000), f, 0.3)
    gap_fgp = _rof(fusex.tv_denoise(f, 0.3, n_iter=30, method="fgp"), f, 0.3) - best
    gap_gp = _rof(fusex.tv_denoise(f, 0.3, n_iter=30, method="gp"), f, 0.3) - best
    assert 0 <= gap_fgp < 0.5 * gap_gp


def test_result_is_better_than_perturbations():
    f = _noisy_square(2)
    u = fusex.tv_denoise(f, 0.2, n_iter=2000)
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert _rof(u, f, 0.2) <= _rof(u + 1e-3 * rng.standard_normal(u.shape), f, 0.2)


def test_nonneg_constraint_holds_and_is_the_constrained_minimizer():
    f = _noisy_square(3) - 0.5
    u = fusex.tv_denoise(f, 0.2, n_iter=2000, nonneg=True)
    assert u.min() >= 0
    free = fusex.tv_denoise(f, 0.2, n_iter=2000)
    assert free.min() < 0
    assert _rof(u, f, 0.2) <= _rof(np.clip(free, 0, None), f, 0.2) + 1e-9


def test_zero_weight_returns_a_copy():
    f = _noisy_square(4)
    out = fusex.tv_denoise(f, 0.0)
    np.testing.assert_array_equal(out, f)
    assert out is not f


def test_stack_is_denoised_map_by_map(backend):
    rng = np.random.default_rng(5)
    stack = rng.random((2, 3, 16, 12)).astype(np.float32)
    out = backend.numpy(fusex.tv_denoise(backend.asarray(stack), 0.1, n_iter=20))
    single = fusex.tv_denoise(stack[1, 2], 0.1, n_iter=20)
    np.testing.assert_allclose(out[1, 2], single, atol=1e-5)
    assert out.dtype == np.float32


def test_backends_agree_and_keep_namespace_and_device(backend):
    f = _noisy_square(6).astype(np.float32)
    x = backend.asarray(f)
    out = fusex.tv_denoise(x, 0.2, n_iter=25, nonneg=True)
    assert type(out) is type(x)
    from array_api_compat import device

    assert device(out) == device(x)
    np.testing.assert_allclose(backend.numpy(out), fusex.tv_denoise(f, 0.2, n_iter=25, nonneg=True), atol=1e-5)
    np.testing.assert_array_equal(backend.numpy(x), f)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": -1.0}, "`weight` must be a finite number >= 0"),
        ({"weight": 0.1, "n_iter": -2}, "`n_iter` must be an integer"),
        ({"weight": 0.1, "method": "chambolle"}, "`method` must be 'fgp' or 'gp'"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fusex.tv_denoise(np.ones((4, 4)), **kwargs)


def test_bad_images_are_named():
    with pytest.raises(ValueError, match="`x` must have shape"):
        fusex.tv_denoise(np.ones(5), 0.1)
    with pytest.raises(ValueError, match="`x` contains 1 NaN"):
        fusex.tv_denoise(np.array([[1.0, np.nan], [0.0, 1.0]]), 0.1)
    with pytest.raises(TypeError, match="`x` is a list"):
        fusex.tv_denoise([[1.0, 2.0], [3.0, 4.0]], 0.1)


def test_bool_iteration_count_is_refused():
    with pytest.raises(ValueError, match="`n_iter` must be an integer"):
        fusex.tv_denoise(np.ones((4, 4)), 0.1, n_iter=True)
