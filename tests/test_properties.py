"""Property-based tests of `fusex.tv_denoise` and `fusex.fuse` on random and degenerate NumPy data.

Shapes, dtypes and values are drawn by hypothesis; the backend sweep lives in
the other test modules, so everything here is NumPy.
"""

from __future__ import annotations

import array_api_compat.numpy as xnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fusex
from fusex.objectives import tv_magnitude

SETTINGS = settings(max_examples=25, deadline=None)
FLOAT_DTYPES = (np.float32, np.float64)
INT_DTYPES = (np.uint8, np.uint16, np.int32, np.int64)
SYMBOLS = ("Sr", "Ti", "O", "Fe")
HISTORY_TERMS = ["haadf", "poisson", "tv", "total"]


def slack(dtype: type, scale: float) -> float:
    """Rounding allowance for a quantity of magnitude ``scale`` computed in ``dtype``."""
    return 64 * float(np.finfo(dtype).eps) * scale


def tv64(x: np.ndarray) -> float:
    """Total variation of ``x`` evaluated in float64, so the comparison is not limited by its own rounding."""
    return float(np.sum(tv_magnitude(np.asarray(x, dtype=np.float64), xnp)))


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    """One map (H, W) or a stack (B, H, W), H and W in 2..12, float32 or float64, values in [-100, 100]."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    batch = draw(st.sampled_from([(), (1,), (2,), (3,)]))
    shape = (*batch, draw(st.integers(2, 12)), draw(st.integers(2, 12)))
    values = st.floats(
        -100, 100, width=np.dtype(dtype).itemsize * 8, allow_nan=False, allow_infinity=False, allow_subnormal=False
    )
    return draw(arrays(dtype, shape, elements=values))


tv_options = dict(
    weight=st.one_of(st.just(0.0), st.floats(1e-3, 20.0)),
    n_iter=st.integers(0, 50),
    method=st.sampled_from(["fgp", "gp"]),
    backend=st.sampled_from([None, "numpy"]),
)


@SETTINGS
@given(x=images(), nonneg=st.booleans(), **tv_options)
def test_tv_denoise_shape_dtype_finite_new_array_and_lower_tv(
    x: np.ndarray, weight: float, n_iter: int, method: str, backend: str | None, nonneg: bool
) -> None:
    before = x.copy()
    out = fusex.tv_denoise(x, weight, n_iter, method=method, nonneg=nonneg, backend=backend)

    assert isinstance(out, np.ndarray)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(x, before)  # the input is not modified...
    assert not np.shares_memory(out, x)  # ...nor is it aliased by the result
    scale = float(np.max(np.abs(x))) + weight
    tv_in, tv_out = tv64(x), tv64(out)
    assert tv_out <= tv_in + slack(x.dtype.type, tv_in + scale * x.size), (tv_in, tv_out)
    if nonneg:
        assert np.all(out >= 0)


@SETTINGS
@given(x=images(), **tv_options)
def test_tv_denoise_preserves_each_mean(
    x: np.ndarray, weight: float, n_iter: int, method: str, backend: str | None
) -> None:
    # The divergence with Neumann boundaries sums to zero, so u = f + w div p keeps the mean of every map.
    out = fusex.tv_denoise(x, weight, n_iter, method=method, nonneg=False, backend=backend)
    mean_in = np.mean(x, axis=(-2, -1), dtype=np.float64)
    mean_out = np.mean(out, axis=(-2, -1), dtype=np.float64)
    scale = float(np.max(np.abs(x))) + weight
    np.testing.assert_allclose(mean_out, mean_in, rtol=0, atol=slack(x.dtype.type, scale))


@SETTINGS
@given(x=images(), **tv_options)
def test_tv_denoise_nonneg_equals_clipped_input_without_iterations(
    x: np.ndarray, weight: float, n_iter: int, method: str, backend: str | None
) -> None:
    # With no dual iterations (or no weight) the prox is the identity, followed by the projection on x >= 0.
    np.testing.assert_array_equal(fusex.tv_denoise(x, weight, 0, method=method, backend=backend), x)
    clipped = fusex.tv_denoise(x, 0.0, n_iter, method=method, nonneg=True, backend=backend)
    np.testing.assert_array_equal(clipped, np.maximum(x, 0))


def _non_constant(a: np.ndarray) -> np.ndarray:
    """Make every map of ``a`` (on the last two axes) hold at least two distinct values, keeping it >= 0."""
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1])
    for row in flat:
        if row.min() == row.max():
            row[0] += 1
    return a


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A small fusion problem: HAADF (H, W) and Poisson counts (E, H, W) of one dtype, each map non-constant."""
    n_maps = draw(st.integers(1, 4))
    height, width = draw(st.integers(2, 10)), draw(st.integers(2, 10))
    dtype = draw(st.sampled_from(FLOAT_DTYPES + INT_DTYPES))
    rate = draw(st.floats(0.05, 50.0))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    counts = _non_constant(rng.poisson(rate, size=(n_maps, height, width)))
    if np.issubdtype(dtype, np.integer):
        haadf = rng.integers(0, 200, size=(height, width))
    else:
        haadf = rng.normal(draw(st.floats(-10, 10)), draw(st.floats(0.01, 100)), size=(height, width))
    return _non_constant(haadf).astype(dtype), counts.astype(dtype)


def _as_layout(maps: np.ndarray, layout: str) -> object:
    if layout == "list":
        return list(maps)
    if layout == "dict":
        return dict(zip(SYMBOLS, maps))
    return maps


def _expected_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if np.issubdtype(dtype, np.integer) else dtype


def _check_maps(maps: object, shape: tuple[int, ...]) -> None:
    assert isinstance(maps, np.ndarray)
    assert maps.shape == shape
    assert np.all(np.isfinite(maps))
    assert np.all(maps >= 0)


@SETTINGS
@given(problem=problems(), layout=st.sampled_from(["array", "list", "dict"]))
def test_fuse_random_small_problems(problem: tuple[np.ndarray, np.ndarray], layout: str) -> None:
    haadf, maps = problem
    haadf_before, maps_before = haadf.copy(), maps.copy()
    # tol=0 turns off early stopping, so the number of iterations is known.
    params = fusex.FusionParams(n_iter=3, haadf_weights="none", tol=0.0)
    res = fusex.fuse(haadf, _as_layout(maps, layout), params=params)

    _check_maps(res.maps, maps.shape)
    assert res.maps.dtype == _expected_dtype(maps.dtype)
    assert res.haadf_model.shape == haadf.shape
    assert np.all(np.isfinite(res.haadf_model))
    assert len(res.history) == params.n_iter + 1
    assert res.n_iter == params.n_iter
    assert res.stop_reason == "n_iter"
    assert np.all(np.isfinite(res.history[HISTORY_TERMS].to_numpy()))
    assert len(res.elements) == maps.shape[0]
    np.testing.assert_array_equal(haadf, haadf_before)
    np.testing.assert_array_equal(maps, maps_before)


@SETTINGS
@given(
    n_maps=st.integers(1, 4),
    height=st.integers(2, 10),
    width=st.integers(2, 10),
    where=st.tuples(st.integers(0, 9), st.integers(0, 9)),
    value=st.sampled_from([1, 7, 255, 10**6]),
    dtype=st.sampled_from([np.uint8, np.int64, np.float32, np.float64]),
    haadf_kind=st.sampled_from(["same", "mirrored", "ramp"]),
)
def test_fuse_maps_with_a_single_nonzero_pixel(
    n_maps: int,
    height: int,
    width: int,
    where: tuple[int, int],
    value: int,
    dtype: type,
    haadf_kind: str,
) -> None:
    if dtype == np.uint8:
        value = min(value, np.iinfo(np.uint8).max)
    maps, haadf = _one_pixel(n_maps, height, width, where, value, haadf_kind)
    maps, haadf = maps.astype(dtype), haadf.astype(dtype)
    res = fusex.fuse(haadf, maps, params=fusex.FusionParams(n_iter=3, haadf_weights="none"))
    _check_maps(res.maps, maps.shape)
    assert res.maps.dtype == _expected_dtype(maps.dtype)


def _one_pixel(
    n_maps: int, height: int, width: int, where: tuple[int, int], value: float, haadf_kind: str
) -> tuple[np.ndarray, np.ndarray]:
    """All-zero maps but one pixel, with a HAADF bright at that pixel, at the mirrored one, or a ramp."""
    row, col = where[0] % height, where[1] % width
    maps = np.zeros((n_maps, height, width))
    maps[:, row, col] = value
    haadf = np.zeros((height, width))
    if haadf_kind == "same":
        haadf[row, col] = value
    elif haadf_kind == "mirrored":
        haadf[height - 1 - row, width - 1 - col] = value
    else:
        haadf = np.linspace(0, value, height * width).reshape(height, width)
    return maps, haadf


@pytest.mark.parametrize("n_maps", [1, 2, 3])
@pytest.mark.parametrize("haadf_kind", ["same", "ramp"])
def test_fuse_single_nonzero_pixel_with_default_parameters(n_maps: int, haadf_kind: str) -> None:
    maps, haadf = _one_pixel(n_maps, 5, 5, (4, 4), 1.0, haadf_kind)
    res = fusex.fuse(haadf, maps, elements=SYMBOLS[:n_maps])  # default parameters, 150 iterations
    _check_maps(res.maps, maps.shape)
    assert res.history["total"].iloc[-1] <= res.history["total"].iloc[0]


def test_one_map_without_backtracking_diverges_loudly() -> None:
    # One map at full intensity: the HAADF term's curvature lambda_H * gamma**2 = 2.89 makes a fixed unit
    # step too large; backtracking handles it (above), without it the solver must say so.
    maps, haadf = _one_pixel(1, 5, 5, (4, 4), 1.0, "same")
    params = fusex.FusionParams(
        backtracking=False,
        step=1.0,
        accel="none",
        haadf_model="minmax",
        background=None,
        normalize="minmax",
        init="counts",  # from the full-intensity pixel itself, not a blur of it
    )
    with pytest.raises(fusex.FusionDivergedError, match="step size 1"):
        fusex.fuse(haadf, maps, elements=["Sr"], params=params)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
@pytest.mark.parametrize(
    "haadf, maps",
    [
        ([[0, 1], [2, 3]], [[[0, 1], [1, 0]]]),
        ([[0, 0], [0, 5]], [[[0, 0], [0, 1]], [[3, 0], [0, 0]]]),
        ([[9, 0], [0, 9]], [[[0, 1], [1, 0]], [[1, 0], [0, 1]], [[0, 0], [0, 200]]]),
    ],
    ids=["one-map", "two-maps-one-pixel", "three-maps-checkerboard"],
)
def test_fuse_two_by_two_image(haadf: list, maps: list, dtype: type) -> None:
    haadf, maps = np.asarray(haadf, dtype=dtype), np.asarray(maps, dtype=dtype)
    res = fusex.fuse(haadf, maps, elements=SYMBOLS[: len(maps)])  # default parameters, 150 iterations
    _check_maps(res.maps, (len(maps), 2, 2))
    assert len(res.history) == res.n_iter + 1
    assert np.all(np.isfinite(res.history[HISTORY_TERMS].to_numpy()))


@pytest.mark.parametrize("layout", ["array", "list", "dict"])
def test_fuse_single_element(layout: str) -> None:
    rng = np.random.default_rng(3)
    haadf = rng.random((9, 7))
    maps = _non_constant(rng.poisson(0.5, size=(1, 9, 7)))
    res = fusex.fuse(haadf, _as_layout(maps, layout), z=[38])  # default parameters, 150 iterations
    _check_maps(res.maps, (1, 9, 7))
    assert res.maps.dtype == np.float64  # integer counts become float32, then promote with the float64 HAADF
    assert res.elements == (("Sr",) if layout == "dict" else ("map0",))
    assert res.z == (38,)
