import numpy as np
import pytest

from fusex.backends import registry, select_engine
from fusex.objectives import evaluate, tv_magnitude

GAMMA, EPS = 1.7, 0.1


def _problem(rng, shape=(1, 3, 6, 7)):
    x = rng.uniform(0.2, 1.0, shape)
    counts = rng.poisson(3.0, shape).astype(float)
    haadf = rng.uniform(0.0, 1.0, (shape[0], *shape[2:]))
    weights = np.array([0.2, 0.5, 0.3]).reshape(1, -1, 1, 1)
    return x, counts, haadf, weights


def _total(ev, lambdas):
    lam_h, lam_c, lam_tv = (np.asarray(v) for v in lambdas)
    return float(lam_h * ev.haadf[0] + np.sum(lam_c * ev.poisson[0]) + np.sum(lam_tv * ev.tv[0]))


PER_MAP = np.array([[0.2, 0.5, 0.9]])


def _engines(backend):
    """Every engine that runs on this backend's arrays here: the generic code and the compiled ones that apply."""
    xp, device = backend.xp, backend.device
    lib, kind = registry.library_of(xp), registry.device_kind(xp, device)
    return [select_engine(xp, device, r.name) for r in registry.ENGINES if r.applies(lib, kind) and r.installed()]


def _objective(engine, backend, v, fixed, lambdas):
    ev = engine.evaluate(backend.asarray(v), *fixed, gamma=GAMMA, eps=EPS, xp=backend.xp)
    return _total(ev, lambdas), ev


@pytest.mark.parametrize(
    ("lam_h", "lam_c"),
    [(1.0, 0.0), (0.0, 1.0), (0.4, 0.3), (0.4, PER_MAP)],
    ids=["haadf", "poisson", "both", "per-map-poisson"],
)
def test_the_solvers_gradient_step_follows_the_finite_difference_gradient(backend, xp, lam_h, lam_c):
    """Without the projection, ``gradient_step`` is ``x - eta grad f`` for the objective ``evaluate`` reports.

    The coefficients are the solver's: ``coef_h = eta gamma lambda_H`` and ``coef_c = eta lambda_C``.
    """
    rng = np.random.default_rng(2)
    x, counts, haadf, weights = _problem(rng)
    fixed, lambdas = tuple(backend.asarray(a) for a in (haadf, counts, weights)), (lam_h, lam_c, 0.0)
    eta, t = 0.25, 1e-6
    direction = rng.standard_normal(x.shape)
    for engine in _engines(backend):
        _, ev = _objective(engine, backend, x, fixed, lambdas)
        coefs = {"eps": EPS, "coef_h": eta * GAMMA * lam_h, "coef_c": eta * lam_c}
        step = engine.gradient_step(backend.asarray(x), *fixed[1:], ev, **coefs, xp=xp, nonneg=False)
        grad = (x - backend.numpy(step)) / eta
        ahead, behind = (_objective(engine, backend, x + s * direction, fixed, lambdas)[0] for s in (t, -t))
        assert np.sum(grad * direction) == pytest.approx((ahead - behind) / (2 * t), rel=1e-6), engine.name


def test_cost_terms_follow_their_formulas(backend, xp):
    rng = np.random.default_rng(3)
    x, counts, haadf, weights = _problem(rng)
    ev = evaluate(
        backend.asarray(x),
        backend.asarray(haadf),
        backend.asarray(counts),
        backend.asarray(weights),
        gamma=GAMMA,
        eps=EPS,
        xp=xp,
    )
    psi1 = 0.5 * np.sum((haadf - np.sum(weights * x**GAMMA, axis=1)) ** 2)
    psi2 = np.sum(x - counts * np.log(x + EPS), axis=(-2, -1))
    assert ev.haadf.shape == (1,) and ev.poisson.shape == ev.tv.shape == x.shape[:2]
    assert ev.haadf[0] == pytest.approx(psi1, rel=1e-10)
    np.testing.assert_allclose(ev.poisson, psi2, rtol=1e-10)


def test_batch_items_are_evaluated_separately(backend, xp):
    rng = np.random.default_rng(4)
    x, counts, haadf, _ = _problem(rng, shape=(3, 3, 6, 7))
    weights = rng.uniform(0.1, 1.0, (3, 3, 1, 1))
    gammas, epss = [1.0, 1.5, 2.0], [0.1, 0.2, 0.05]
    ev = evaluate(*(backend.asarray(a) for a in (x, haadf, counts, weights)), gamma=gammas, eps=epss, xp=xp)
    for n in range(3):
        alone = evaluate(
            *(backend.asarray(a[n : n + 1]) for a in (x, haadf, counts, weights)), gamma=gammas[n], eps=epss[n], xp=xp
        )
        for term in ("haadf", "poisson", "tv"):
            np.testing.assert_allclose(getattr(ev, term)[n], getattr(alone, term)[0], rtol=1e-12)


def test_tv_is_isotropic_with_neumann_boundary(backend, xp):
    u = np.zeros((4, 4))
    u[1:3, 1:3] = 1.0  # a 2x2 square of height 1
    # forward differences, zero past the last row and column: six unit edges and one diagonal corner
    assert float(xp.sum(tv_magnitude(backend.asarray(u), xp))) == pytest.approx(6 + np.sqrt(2))
