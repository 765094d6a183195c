"""The vectorizable logarithm and power of the numba kernels, against NumPy in extended precision."""

from __future__ import annotations

import numpy as np
import pytest

nb = pytest.importorskip("numba")
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

from fusex.backends._fast_math import fast_log, fast_pow  # noqa: E402

DTYPES = [np.float32, np.float64]


@nb.njit
def _logs(values, out):  # pragma: no cover
    for i in range(values.size):
        out[i] = fast_log(values[i])


@nb.njit
def _powers(values, g, out):  # pragma: no cover
    for i in range(values.size):
        out[i] = fast_pow(values[i], g)


def _normals(dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(3)
    spread = np.geomspace(float(info.tiny), float(info.max), 20001, dtype=np.float64).astype(dtype)
    near_one = rng.uniform(0.7, 1.5, 20000).astype(dtype)
    return np.concatenate([spread[np.isfinite(spread)], near_one, rng.uniform(0.0, 5.0, 20000).astype(dtype)])


def _ulps(ours, exact, dtype):
    """Errors in units of the last place of the exact value (at least the smallest normal's)."""
    info = np.finfo(dtype)
    magnitude = np.clip(np.abs(exact), info.tiny, info.max).astype(dtype)
    spacing = np.spacing(magnitude).astype(np.longdouble)
    return np.abs(ours.astype(np.longdouble) - exact) / spacing


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_logarithm_is_within_3_units_in_the_last_place(dtype):
    y = _normals(dtype)
    y = y[y > 0]
    out = np.empty_like(y)
    _logs(y, out)
    assert out.dtype == dtype
    assert _ulps(out, np.log(y.astype(np.longdouble)), dtype).max() < 3.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_logarithm_of_subnormals_zero_infinity_and_negatives(dtype):
    info = np.finfo(dtype)
    sub = np.array([float(info.smallest_subnormal), float(info.tiny) / 3], dtype=dtype)
    out = np.empty_like(sub)
    _logs(sub, out)
    np.testing.assert_allclose(out, np.log(sub.astype(np.float64)), rtol=float(info.eps) * 4)
    special = np.array([0.0, np.inf, -1.0, np.nan], dtype=dtype)
    out = np.empty_like(special)
    _logs(special, out)
    assert out[0] == -np.inf and out[1] == np.inf and np.isnan(out[2]) and np.isnan(out[3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", [0.7, -0.3, 1.5, 0.05])
def test_the_power_errs_like_exp_of_the_rounded_exponent(dtype, g):
    x = _normals(dtype)
    x = x[x > 0]
    g = dtype(g)
    exact = x.astype(np.longdouble) ** np.longdouble(g)
    info = np.finfo(dtype)
    # normal results only: below 2**-125.5 (2**-1021 in float64) the power is flushed to 0
    inside = (exact > 4 * float(info.tiny)) & (exact < float(info.max) / 2)
    out = np.empty_like(x)
    _powers(x, g, out)
    # t = g log x carries about |t| rounding errors of its own, as in NumPy's exp(g * log(x)) (up to 2.1 (1 + |t|))
    t = np.abs(np.longdouble(g) * np.log(x.astype(np.longdouble)))
    assert np.all(_ulps(out, exact, dtype)[inside] < 3.0 * (1.0 + t[inside]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_power_at_zero_infinity_and_beyond_the_range(dtype):
    info = np.finfo(dtype)
    x = np.array([0.0, np.inf, np.nan, float(info.tiny), float(info.max)], dtype=dtype)
    out = np.empty_like(x)
    _powers(x, dtype(0.5), out)
    assert out[0] == 0 and out[1] == np.inf and np.isnan(out[2])
    # |t| = |log x| / 2 is about 44 (355 in float64) at both ends of the range
    t = np.abs(0.5 * np.log(np.float64(info.max)))
    np.testing.assert_allclose(out[3:], np.sqrt(x[3:].astype(np.float64)), rtol=3 * (1 + t) * float(info.eps))
    _powers(x, dtype(-0.5), out)
    assert out[0] == np.inf and out[1] == 0 and np.isnan(out[2])
    _powers(np.array([0.0, 2.0], dtype=dtype), dtype(0.0), out[:2])
    assert out[0] == 1 and out[1] == 1
    huge = np.array([float(info.max)], dtype=dtype)
    _powers(huge, dtype(1.5), out[:1])
    assert out[0] == np.inf
    _powers(np.array([float(info.tiny)], dtype=dtype), dtype(1.5), out[:1])
    assert out[0] == 0
