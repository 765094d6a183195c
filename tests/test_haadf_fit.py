"""The fitted HAADF model: gain, offset and smooth background from the data, and totals kept."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fusex
from fusex import FusionParams
from fusex.datasets import phantom
from fusex.objectives import tv_magnitude
from fusex.operators import background_basis, fit_haadf
from fusex.solver import _loop as loop
from fusex.solver._objective import engine_terms

SAMPLE = phantom((40, 40), dose=4.0, seed=3)


def _film(shape: tuple[int, int], height: float) -> np.ndarray:
    """A support film thickening across the field of view, within the background's span."""
    y, x = np.mgrid[: shape[0], : shape[1]] / np.array(shape).reshape(2, 1, 1)
    return (height * (0.6 + 0.4 * np.cos(np.pi * (y + 0.5 / shape[0])) * np.cos(np.pi * x))).astype(np.float32)


def _fuse(haadf, maps=SAMPLE.maps, **fields) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fusex.fuse(haadf, maps, elements=SAMPLE.elements, params=FusionParams(**fields), backend="numpy")
    return np.asarray(res.to_input_units(), dtype=np.float64)


def _totals(x: np.ndarray, maps: np.ndarray = SAMPLE.maps) -> np.ndarray:
    return x.sum(axis=(-2, -1)) / maps.sum(axis=(-2, -1))


def test_basis_is_smooth_zero_mean_and_independent():
    basis = background_basis((12, 9), 3)
    assert basis.shape == (8, 12, 9)
    np.testing.assert_allclose(basis.sum(axis=(1, 2)), 0.0, atol=1e-12)
    assert np.linalg.matrix_rank(basis.reshape(8, -1)) == 8
    assert background_basis((5, 5), 1).shape == (0, 5, 5)


def test_gain_offset_and_background_are_recovered(backend, xp):
    rng = np.random.default_rng(0)
    model = rng.random((2, 16, 20))
    basis = background_basis((16, 20), 3)
    background = np.stack([0.3 + 0.2 * basis[1] - 0.1 * basis[4], -0.5 + 0.4 * basis[0]])
    haadf = background + np.array([2.5, 0.7])[:, None, None] * model
    to = backend.asarray
    a, fitted = fit_haadf(to(haadf), to(model), None, 3, gain=True, xp=xp)
    np.testing.assert_allclose(a, [2.5, 0.7], rtol=1e-8)
    np.testing.assert_allclose(backend.numpy(fitted), background, atol=1e-8)


def test_minmax_model_holds_gain_and_offset(backend, xp):
    model = np.random.default_rng(1).random((1, 10, 10))
    basis = background_basis((10, 10), 2)
    haadf = model + 0.25 * basis[2] + 3.0  # the offset is not the background's to take
    to = backend.asarray
    a, fitted = fit_haadf(to(haadf), to(model), None, 2, gain=False, xp=xp)
    np.testing.assert_array_equal(a, [1.0])
    np.testing.assert_allclose(backend.numpy(fitted)[0], 0.25 * basis[2], atol=1e-8)


def test_masked_pixels_do_not_pull_the_fit(backend, xp):
    model = np.random.default_rng(2).random((1, 12, 12))
    haadf = 0.1 + 1.5 * model
    haadf[0, 3, 4] = 1e3  # a saturated pixel, masked out
    mask = np.ones_like(haadf)
    mask[0, 3, 4] = 0.0
    to = backend.asarray
    a, _ = fit_haadf(to(haadf), to(model), to(mask), 0, gain=True, xp=xp)
    np.testing.assert_allclose(a, [1.5], rtol=1e-8)


def test_a_masked_fit_with_a_background_is_the_least_squares_fit_of_the_pixels_left(backend, xp):
    rng = np.random.default_rng(4)
    model = rng.random((2, 14, 11))
    basis = background_basis((14, 11), 3)
    haadf = 0.2 + 0.3 * basis[2] - 0.2 * basis[5] + np.array([1.3, 0.6])[:, None, None] * model
    haadf += 0.01 * rng.standard_normal(haadf.shape)
    mask = (rng.random(haadf.shape) > 0.2).astype(np.float64)
    haadf[mask == 0] = 50.0  # saturated pixels, masked out
    to = backend.asarray
    a, fitted = fit_haadf(to(haadf), to(model), to(mask), 3, gain=True, xp=xp)
    for i in range(2):
        keep = mask[i].ravel() > 0
        design = np.column_stack([np.ones(haadf[i].size), basis.reshape(8, -1).T, model[i].ravel()])[keep]
        coef = np.linalg.lstsq(design, haadf[i].ravel()[keep], rcond=None)[0]
        np.testing.assert_allclose(a[i], coef[-1], rtol=1e-6)
        expected = (np.column_stack([np.ones(haadf[i].size), basis.reshape(8, -1).T]) @ coef[:-1]).reshape(14, 11)
        np.testing.assert_allclose(backend.numpy(fitted)[i], expected, atol=1e-6)


def test_an_anticorrelated_image_switches_the_haadf_term_off():
    model = np.random.default_rng(3).random((1, 8, 8))
    a, fitted = fit_haadf(1.0 - model, model, None, 2, gain=True, xp=np)
    assert a[0] == 0.0
    np.testing.assert_allclose(fitted.mean(), (1.0 - model).mean())


def test_default_totals_are_the_counts(backend):
    arrays = backend.asarray(SAMPLE.haadf), backend.asarray(SAMPLE.maps)
    res = fusex.fuse(*arrays, elements=SAMPLE.elements, backend=backend.backend)
    np.testing.assert_allclose(_totals(backend.numpy(res.to_input_units())), 1.0, rtol=1e-4)


def test_a_support_film_in_the_haadf_does_not_leak_into_the_maps():
    film = _film(SAMPLE.haadf.shape, 2.0 * float(SAMPLE.haadf.max()))
    clean = _fuse(SAMPLE.haadf, rescale_totals=False)
    filmed = _fuse(SAMPLE.haadf + film, rescale_totals=False)
    assert np.all(_totals(filmed) < 1.03)
    change = np.linalg.norm(filmed - clean, axis=(1, 2)) / np.linalg.norm(clean, axis=(1, 2))
    assert np.all(change < 0.4), change
    # without a background the film pulls on the maps; the published model puts it into them
    flat = _fuse(SAMPLE.haadf + film, rescale_totals=False, background=None)
    trusting = _fuse(SAMPLE.haadf + film, rescale_totals=False, haadf_model="minmax", background=None)
    for other, factor in ((flat, 2), (trusting, 10)):
        leak = np.linalg.norm(other - clean, axis=(1, 2)) / np.linalg.norm(clean, axis=(1, 2))
        assert np.max(leak) > factor * np.max(change), leak


def test_the_fitted_gain_keeps_the_haadf_term_from_inflating_the_maps():
    bright = SAMPLE.haadf * 40.0 + 7.0  # another detector gain and offset: the fit does not care
    # Rounding sends the two runs along slightly different paths (restarts are yes/no decisions), so both
    # run to a tight tolerance; 5e-3 counts is a thousandth of these maps' scale.
    tight = {"rescale_totals": False, "tol": 1e-6}
    np.testing.assert_allclose(_fuse(bright, **tight), _fuse(SAMPLE.haadf, **tight), rtol=1e-3, atol=5e-3)
    assert np.all(_totals(_fuse(SAMPLE.haadf, rescale_totals=False)) < 1.03)


def test_stationarity_balances_counts_against_the_prior():
    """At a solution with the gain fitted, sum_e lam_C sum x (1 - b/(x+eps)) = -lam_TV sum_e TV(x_e)."""
    lam_c, lam_tv, eps = 0.02, 0.004, 0.01
    params = FusionParams(
        lambda_chem=lam_c, lambda_tv=lam_tv, eps=eps, refit_every=1, rescale_totals=False, n_iter=1500, tol=0.0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fusex.fuse(SAMPLE.haadf, SAMPLE.maps, elements=SAMPLE.elements, params=params, backend="numpy")
    x = np.asarray(res.maps, dtype=np.float64)
    b = SAMPLE.maps / SAMPLE.maps.max(axis=(1, 2), keepdims=True)  # normalize="scale"
    poisson = lam_c * np.sum(x - b * x / (x + eps))
    prior = lam_tv * float(np.sum(tv_magnitude(x, np)))
    assert abs(poisson + prior) < 0.02 * lam_c * b.sum()
    assert prior > 0.1 * lam_c * b.sum()  # the identity is not 0 = 0


@pytest.mark.parametrize("field", ["haadf_model", "background", "rescale_totals"])
def test_published_keeps_the_reference_model(field):
    p = FusionParams.published()
    assert (p.haadf_model, p.background, p.rescale_totals, p.normalize) == ("minmax", None, False, "minmax")
    assert getattr(p, field) != getattr(FusionParams(), field)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"haadf_model": "free"}, ValueError),
        ({"background": "flat"}, ValueError),
        ({"rescale_totals": "yes"}, TypeError),
        ({"refit_every": -1}, ValueError),
        ({"background_modes": 1.5}, ValueError),
    ],
)
def test_bad_fields_are_refused(fields, error):
    with pytest.raises(error, match=next(iter(fields))):
        FusionParams(**fields)


def test_scale_normalization_keeps_zeros_and_undoes_exactly():
    maps = SAMPLE.maps.copy()
    maps[1, :5] = 0.0
    res = fusex.fuse(SAMPLE.haadf, maps, elements=SAMPLE.elements, params=FusionParams(n_iter=1), backend="numpy")
    assert [s[0] for s in res.scale["maps"]] == [0.0, 0.0, 0.0]
    np.testing.assert_allclose([s[1] for s in res.scale["maps"]], maps.max(axis=(1, 2)))
    np.testing.assert_allclose(
        np.asarray(res.to_input_units()), np.asarray(res.maps) * maps.max(axis=(1, 2))[:, None, None], rtol=1e-6
    )


@pytest.mark.parametrize("masked", [False, True])
def test_a_refit_updates_the_haadf_term_as_a_full_evaluation_would(backend, monkeypatch, masked):
    """The refit forms the new residual from the last evaluation; it must equal evaluating the objective again."""
    checked = []
    real = loop.refit

    def checking(live, fit, engine, xp, *, smooth=False):
        real(live, fit, engine, xp, smooth=smooth)
        full = engine.evaluate(
            live.x,
            live.haadf,
            live.counts,
            live.weights,
            xp=xp,
            mask=live.mask,
            **engine_terms(live.values, live.direction),
        )
        np.testing.assert_allclose(live.ev.haadf, full.haadf, rtol=1e-4)
        np.testing.assert_allclose(backend.numpy(live.ev.residual), backend.numpy(full.residual), atol=1e-5)
        checked.append(smooth)

    monkeypatch.setattr(loop, "refit", checking)
    haadf = SAMPLE.haadf.copy()
    if masked:
        haadf[5:9, 5:9] = haadf.max()  # saturated pixels: the HAADF term runs under a mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fusex.fuse(
            backend.asarray(haadf),
            backend.asarray(SAMPLE.maps),
            elements=SAMPLE.elements,
            params=FusionParams(n_iter=6, tol=0.0),
            saturated=backend.asarray(haadf >= haadf.max()) if masked else None,
        )
    assert checked.count(False) == 6 and checked.count(True) == 1  # the start's, then one after each step


SMALL = phantom((24, 24), seed=0)


def _normalized_haadf(res: fusex.FusionResult) -> np.ndarray:
    offset, span = res.scale["haadf"]
    return (np.asarray(SMALL.haadf, dtype=np.float64) - offset) / span


def _background_fitted_by_numpy(haadf: np.ndarray, maps: np.ndarray, res: fusex.FusionResult) -> np.ndarray:
    """Least-squares c + B of the normalized image at ``maps``, by numpy on the design [1, phi_k, M(x)]."""
    model = np.tensordot(np.asarray(res.weights), maps**res.params.gamma, axes=1)
    basis = background_basis(haadf.shape, res.params.background_modes).reshape(-1, haadf.size)
    design = np.column_stack([np.ones(haadf.size), basis.T, model.ravel()])
    coef = np.linalg.lstsq(design, haadf.ravel(), rcond=None)[0]
    assert coef[-1] > 0  # the maps explain the image, so the gain was kept
    return (design[:, :-1] @ coef[:-1]).reshape(haadf.shape)


def test_the_background_is_the_fit_at_the_last_iterate(backend):
    seen = []

    def keep(iteration, state):
        seen.append(np.array(backend.numpy(state.maps), dtype=np.float64))

    for choice in backend.choices:
        seen.clear()
        arrays = backend.asarray(SMALL.haadf), backend.asarray(SMALL.maps)
        res = fusex.fuse(*arrays, elements=SMALL.elements, backend=choice, callback=keep)
        assert res.saturated == 0 and res.n_iter > 1  # every pixel counts; refits at iterates, not the start
        # the last refit follows the last step: the fit at the solver's last iterate
        expected = _background_fitted_by_numpy(_normalized_haadf(res), seen[res.n_iter - 1], res)
        assert np.ptp(expected) > 0.01 * abs(expected.mean()) > 0  # an offset and a background that varies
        # 2e-6: the fit one iteration off is 4e-5 away
        np.testing.assert_allclose(backend.numpy(res.haadf_background), expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("rescale_totals", [True, False])
def test_the_model_and_the_background_together_fit_the_image(backend, rescale_totals):
    # with rescaled totals too: the model is the fit's, not that of the rescaled maps
    arrays = backend.asarray(SMALL.haadf), backend.asarray(SMALL.maps)
    params = FusionParams(rescale_totals=rescale_totals)
    res = fusex.fuse(*arrays, elements=SMALL.elements, params=params, backend=backend.backend)
    image, model = _normalized_haadf(res), backend.numpy(res.haadf_model).astype(np.float64)
    whole = model + backend.numpy(res.haadf_background)
    assert np.sum((image - whole) ** 2) < 0.2 * np.sum((image - model) ** 2)
    assert np.sum((image - whole) ** 2) < 0.5 * np.sum((image - image.mean()) ** 2)


@pytest.mark.parametrize(
    ("params", "fitted"),
    [
        (FusionParams.published(), "nothing"),
        (FusionParams(haadf_model="minmax", background=None), "nothing"),
        (FusionParams(haadf_model="minmax"), "background"),
        (FusionParams(background=None), "offset"),
    ],
)
def test_the_background_holds_what_each_setting_fits(backend, params, fitted):
    arrays = backend.asarray(SMALL.haadf), backend.asarray(SMALL.maps)
    res = fusex.fuse(*arrays, elements=SMALL.elements, params=params.replace(n_iter=5), backend=backend.backend)
    background = backend.numpy(res.haadf_background)
    assert background.shape == res.haadf_model.shape and background.dtype == backend.numpy(res.haadf_model).dtype
    if fitted == "nothing":
        np.testing.assert_array_equal(background, 0.0)
    elif fitted == "background":  # B alone: its cosine modes have zero sum, and c = 0
        assert np.ptp(background) > 1e-3
        np.testing.assert_allclose(background.sum(), 0.0, atol=1e-4)
    else:  # the offset c alone: one value over the image
        assert abs(background[0, 0]) > 1e-3
        np.testing.assert_allclose(background, background[0, 0], rtol=1e-6)


def test_the_recorded_haadf_term_is_minimized_over_the_fit_at_every_iterate():
    # variable projection: each step ends with a refit at its new iterate, so the HAADF term the history
    # holds is the least-squares residual of the image over offset, background and gain at those maps
    seen = []
    res = fusex.fuse(
        SMALL.haadf,
        SMALL.maps,
        elements=SMALL.elements,
        params=FusionParams(n_iter=8, tol=0.0),
        callback=lambda k, state: seen.append(np.array(state.maps, dtype=np.float64)),
    )
    image = _normalized_haadf(res)
    basis = background_basis(image.shape, res.params.background_modes).reshape(-1, image.size)
    for k, maps in enumerate(seen, start=1):
        model = np.tensordot(np.asarray(res.weights), maps**res.params.gamma, axes=1)
        design = np.column_stack([np.ones(image.size), basis.T, model.ravel()])
        coef = np.linalg.lstsq(design, image.ravel(), rcond=None)[0]
        least = 0.5 * np.sum((image.ravel() - design @ coef) ** 2)
        assert res.history.haadf.iloc[k] == pytest.approx(least, rel=1e-4)


def test_a_model_that_overflowed_gives_a_nan_fit_not_a_refused_gain():
    rng = np.random.default_rng(6)
    model = rng.random((2, 8, 8)).astype(np.float32)
    model[0, 0, 0] = np.nan
    model[1] *= np.float32(3e19)  # finite, but its squares overflow float32
    haadf = 0.2 + rng.random((2, 8, 8)).astype(np.float32)
    with np.errstate(all="ignore"):
        a, background = fit_haadf(haadf, model, None, 3, gain=True, xp=np)
    assert np.all(np.isnan(a)) and np.all(np.isnan(background))
    # (a gain that comes out <= 0 is still refused: test_an_anticorrelated_image_switches_the_haadf_term_off)


def test_a_zero_model_leaves_the_background_to_fit_the_image_alone():
    # zero maps: the model's column is degenerate, so the normal equations are singular
    rng = np.random.default_rng(8)
    haadf = rng.random((1, 12, 10))
    a, background = fit_haadf(haadf, np.zeros_like(haadf), None, 3, gain=True, xp=np)
    design = np.stack([np.ones(haadf[0].size), *(b.ravel() for b in background_basis((12, 10), 3))], axis=1)
    coef = np.linalg.lstsq(design, haadf[0].ravel(), rcond=None)[0]
    assert a[0] == 0.0
    np.testing.assert_allclose(background[0].ravel(), design @ coef, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_a_batch_fits_each_item_exactly_as_it_fits_alone(masked):
    rng = np.random.default_rng(9)
    haadf, model = rng.random((5, 16, 12)), rng.random((5, 16, 12))
    mask = (rng.random((5, 16, 12)) > 0.2).astype(np.float64) if masked else None
    a, background = fit_haadf(haadf, model, mask, 3, gain=True, xp=np)
    for i in range(5):
        alone = fit_haadf(
            haadf[i : i + 1], model[i : i + 1], None if mask is None else mask[i : i + 1], 3, gain=True, xp=np
        )
        assert a[i] == alone[0][0]
        np.testing.assert_array_equal(background[i], alone[1][0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_model_the_background_already_spans_is_refused_in_either_precision(dtype):
    # 1 + a cosine mode: the offset and background columns hold it, so the gain is undetermined
    rng = np.random.default_rng(10)
    mode = background_basis((24, 20), 3)[0]
    haadf = (0.5 + 0.2 * mode + 0.01 * rng.random((24, 20)))[None].astype(dtype)
    a, background = fit_haadf(haadf, (1.0 + mode)[None].astype(dtype), None, 3, gain=True, xp=np)
    assert a[0] == 0.0
    np.testing.assert_allclose(background, fit_haadf(haadf, np.zeros_like(haadf), None, 3, gain=True, xp=np)[1])
