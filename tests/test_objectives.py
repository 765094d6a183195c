import numpy as np
import pytest

from fusex.objectives import evaluate, smooth_gradient, tv_value

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


@pytest.mark.parametrize(
    ("lam_h", "lam_c"),
    [(1.0, 0.0), (0.0, 1.0), (0.4, 0.3), (0.4, PER_MAP)],
    ids=["haadf", "poisson", "both", "per-map-poisson"],
)
def test_gradient_matches_finite_differences(xp, lam_h, lam_c):
    rng = np.random.default_rng(2)
    x, counts, haadf, weights = _problem(rng)
    args = [xp.asarray(a) for a in (counts, weights)]
    h = xp.asarray(haadf)

    def f(v):
        ev = evaluate(xp.asarray(v), h, *args, gamma=GAMMA, eps=EPS, xp=xp.xp)
        return _total(ev, (lam_h, lam_c, 0.0)), ev

    _, ev = f(x)
    grad = xp.numpy(
        smooth_gradient(xp.asarray(x), args[0], args[1], ev, gamma=GAMMA, eps=EPS, lam_h=lam_h, lam_c=lam_c, xp=xp.xp)
    )
    direction = rng.standard_normal(x.shape)
    t = 1e-6
    numeric = (f(x + t * direction)[0] - f(x - t * direction)[0]) / (2 * t)
    assert np.sum(grad * direction) == pytest.approx(numeric, rel=1e-6)


def test_cost_terms_follow_their_formulas(xp):
    rng = np.random.default_rng(3)
    x, counts, haadf, weights = _problem(rng)
    ev = evaluate(
        xp.asarray(x),
        xp.asarray(haadf),
        xp.asarray(counts),
        xp.asarray(weights),
        gamma=GAMMA,
        eps=EPS,
        xp=xp.xp,
    )
    psi1 = 0.5 * np.sum((haadf - np.sum(weights * x**GAMMA, axis=1)) ** 2)
    psi2 = np.sum(x - counts * np.log(x + EPS), axis=(-2, -1))
    assert ev.haadf.shape == (1,) and ev.poisson.shape == ev.tv.shape == x.shape[:2]
    assert ev.haadf[0] == pytest.approx(psi1, rel=1e-10)
    np.testing.assert_allclose(ev.poisson, psi2, rtol=1e-10)


def test_batch_items_are_evaluated_separately(xp):
    rng = np.random.default_rng(4)
    x, counts, haadf, _ = _problem(rng, shape=(3, 3, 6, 7))
    weights = rng.uniform(0.1, 1.0, (3, 3, 1, 1))
    gammas, epss = [1.0, 1.5, 2.0], [0.1, 0.2, 0.05]
    ev = evaluate(*(xp.asarray(a) for a in (x, haadf, counts, weights)), gamma=gammas, eps=epss, xp=xp.xp)
    for n in range(3):
        alone = evaluate(
            *(xp.asarray(a[n : n + 1]) for a in (x, haadf, counts, weights)), gamma=gammas[n], eps=epss[n], xp=xp.xp
        )
        for term in ("haadf", "poisson", "tv"):
            np.testing.assert_allclose(getattr(ev, term)[n], getattr(alone, term)[0], rtol=1e-12)


def test_tv_value_is_isotropic_with_neumann_boundary(xp):
    u = np.zeros((4, 4))
    u[1:3, 1:3] = 1.0  # a 2x2 square of height 1
    dy = np.diff(u, axis=0, append=u[-1:])
    dx = np.diff(u, axis=1, append=u[:, -1:])
    expected = np.sum(np.sqrt(dy**2 + dx**2))
    assert tv_value(xp.asarray(u), xp.xp) == pytest.approx(expected)
    assert expected == pytest.approx(6 + np.sqrt(2))  # six unit edges and one diagonal corner
