r"""One step of the live items: momentum, the proximal-gradient step, its acceptance tests and the step size.

An accelerated step starts from :math:`y = P_{\ge 0}(x_k + \beta_k (x_k - x_{k-1}))`
and goes to :math:`x_{k+1} = \operatorname{prox}_{\eta \lambda_{TV} TV,\ x \ge 0}(y - \eta \nabla f(y))`,
:math:`f` the smooth (data) terms (a fixed step projects :math:`y - \eta \nabla f(y)`
onto :math:`x \ge 0` before the prox, as the published method does); a step
that fails its test is redone without momentum or with a smaller :math:`\eta`,
item by item.

Where the HAADF model is refitted every iteration, an accelerated step refits it at
:math:`y` too, before the gradient (variable projection): :math:`f` is then the data
terms minimized over the gain, offset and background, whose gradient at :math:`y` is that
of the terms at the fit of :math:`y`, and the step and its sufficient-decrease test
both use that fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import array_api_compat
import numpy as np

from .._xp import to_numpy
from ..backends import Engine
from ..objectives import Evaluation
from ..params import FusionParams
from ._haadf_fit import HaadfFit, refit
from ._live import Live, merge_evaluations, merge_rows, take_rows
from ._objective import compact, engine_terms, objective, prior_terms, smooth_terms

__all__ = [
    "MIN_CURVATURE",
    "STEP_GROWTH",
    "first_curvature",
    "inner_iterations",
    "step_with_backtracking",
]

STEP_GROWTH = 1.1
"""With ``step="lipschitz"``, the factor by which an item's step grows after an iteration that needed no
backtrack, so the step follows the curvature down as well as up (one backtrack per ~7 iterations at most)."""

MIN_CURVATURE = 1e-3
"""Floor of the curvature estimate, so that flat data terms (zero weights) still give finite steps."""

# relative slack of the sufficient-decrease test: the objective's sums carry the rounding of float32 maps
_SLACK = 1e-6


@dataclass(frozen=True)
class _Trial:
    """One step of the live items: the point it started from (``y``, with its evaluation) and where it went."""

    y: Any
    ev_y: Evaluation
    x: Any
    ev: Evaluation
    dual: Any
    moved: np.ndarray
    size: np.ndarray
    bound: np.ndarray | None = None
    turn: np.ndarray | None = None


def _advance(
    live: Live,
    eta: np.ndarray,
    beta: np.ndarray,
    params: FusionParams,
    engine: Engine,
    xp: Any,
    fit: HaadfFit | None = None,
) -> _Trial:
    r"""Step from :math:`y = P_{\ge 0}(x_k + \beta (x_k - x_{k-1}))` (:math:`x_k` itself where :math:`\beta = 0`).

    With ``fit`` (refitted every iteration) the HAADF model is refitted at :math:`y` for this step alone:
    the live state keeps the fit at :math:`x_k`.
    """
    v = live.values
    terms = engine_terms(v, live.direction)
    model = live  # whose HAADF image and weights the step uses
    if live.x_prev is None or not np.any(beta > 0):
        y, ev_y = live.x, live.ev
    else:
        y = _extrapolate(engine, live, beta, xp)
        ev_y = engine.evaluate(y, live.haadf, live.counts, live.weights, xp=xp, mask=live.mask, **terms)
        if fit is not None and fit.each_step:
            # Refit at y itself: alternating the fit with steps made from the fit at x_k took 1.3-1.5x the
            # iterations to a 1e-4 gap, and two 192-256 px rock salts never got there (docs/theory.md).
            model = replace(live, x=y, ev=ev_y)
            refit(model, fit, engine, xp)
            ev_y = model.ev
    # The sufficient-decrease test holds for a true proximal-gradient step, whose prox alone imposes x >= 0;
    # fixed steps keep the published method's projection before the prox.
    z = _gradient_step(engine, y, ev_y, model, eta, xp, nonneg=params.step != "lipschitz")
    x_new, dual = _prox(engine, z, eta, live, params, xp)
    ev_new = engine.evaluate(x_new, model.haadf, live.counts, model.weights, xp=xp, mask=live.mask, **terms)
    # d = x_new - y: |d|^2, |x_new|^2, <y - z, d> and <d, x_new - x_k>
    moved2, size2, along, against = _step_products(engine, x_new, y, z, live.x, xp)
    bound = None
    if params.step == "lipschitz":
        # Beck & Teboulle's quadratic upper model of the smooth terms at y, evaluated at the new point;
        # the unprojected step z = y - eta grad f(y) gives the slope <grad f(y), d> without another gradient pass
        bound = smooth_terms(ev_y, v) + along / eta + moved2 / (2.0 * eta)
    # O'Donoghue & Candes' gradient restart test: > 0 where the step turned against the momentum
    turn = None if params.accel != "fista" or params.step != "lipschitz" else -against
    return _Trial(y, ev_y, x_new, ev_new, dual, np.sqrt(moved2), np.sqrt(size2), bound, turn)


def _prox(engine: Engine, z: Any, eta: np.ndarray, live: Live, params: FusionParams, xp: Any) -> tuple[Any, Any]:
    r"""Return the prior's prox of each item's ``z`` with weight :math:`\eta \lambda_{TV}`, and its last dual.

    Each item runs its own number of inner iterations (`inner_iterations`): items that share
    one go through the engine together, so an item's prox is the same in a batch as alone.
    """
    counts = inner_iterations(live.values, params, live.direction is not None)
    groups = np.unique(counts)
    if groups.size == 1:
        return _prox_rows(engine, z, eta, live.values, live.direction, live.dual, int(groups[0]), params, xp)
    x_new = xp.zeros_like(z)
    dual = None if live.dual is None else xp.zeros_like(live.dual)
    for count in groups:
        rows = np.flatnonzero(counts == count)
        x_part, dual_part = _prox_rows(
            engine,
            take_rows(z, rows, xp),
            eta[rows],
            {key: value[rows] for key, value in live.values.items()},
            None if live.direction is None else take_rows(live.direction, rows, xp),
            None if live.dual is None else take_rows(live.dual, rows, xp),
            int(count),
            params,
            xp,
        )
        x_new = merge_rows(x_new, x_part, rows, xp, in_place=True)
        if dual is not None:
            dual = merge_rows(dual, dual_part, rows, xp, in_place=True)
    return x_new, dual


def _prox_rows(
    engine: Engine,
    z: Any,
    eta: np.ndarray,
    values: dict[str, np.ndarray],
    direction: Any,
    dual: Any,
    inner: int,
    params: FusionParams,
    xp: Any,
) -> tuple[Any, Any]:
    tv_weight = compact(eta[:, None] * values["lambda_tv"])
    prox = {"method": params.tv_method, "nonneg": True, "xp": xp, **prior_terms(values, direction)}
    if dual is None:
        return engine.tv_prox(z, tv_weight, inner, **prox), None
    return engine.tv_prox(z, tv_weight, inner, dual=dual, **prox)


def inner_iterations(values: dict[str, np.ndarray], params: FusionParams, directed: bool) -> np.ndarray:
    """Return each item's inner iterations of the prox: ``n_tv`` (``n_dtv`` for directional TV) times its factor.

    The factor (``values["inner"]``, 1 at the start) is raised by the solver loop, up to
    ``params.tv_growth``, where warm, inexact proxes let the objective climb; the count never
    passes ``tv_growth * n_tv`` (the directional prior's ``n_dtv`` grows to it too).
    """
    base = params.n_dtv if directed else params.n_tv
    most = max(base, params.tv_growth * params.n_tv)
    return np.minimum(base * values["inner"], most).astype(np.int64)


def _extrapolate(engine: Engine, live: Live, beta: np.ndarray, xp: Any) -> Any:
    r"""Return :math:`y = P_{\ge 0}(x_k + \beta (x_k - x_{k-1}))`, by the engine's own pass if it has one."""
    if hasattr(engine, "extrapolate"):
        return engine.extrapolate(live.x, live.x_prev, beta, xp=xp)
    b = xp.asarray(beta.tolist(), dtype=live.x.dtype, device=array_api_compat.device(live.x))
    return xp.clip(live.x + xp.reshape(b, (-1, 1, 1, 1)) * (live.x - live.x_prev), min=0.0)


def _step_products(engine: Engine, x_new: Any, y: Any, z: Any, x: Any, xp: Any) -> tuple[np.ndarray, ...]:
    """Return the four inner products of a step per item (host, float64), by the engine's own pass if it has one."""
    if hasattr(engine, "step_products"):
        return engine.step_products(x_new, y, z, x, xp=xp)
    d = x_new - y
    return _dots(d, d, xp), _dots(x_new, x_new, xp), _dots(y - z, d, xp), _dots(d, x_new - x, xp)


def _merge_trials(full: _Trial, part: _Trial, rows: np.ndarray, xp: Any, live: Live) -> _Trial:
    """``full`` with the items ``rows`` replaced by ``part``, written over ``full``'s arrays where it can.

    ``full``'s new point, evaluation and dual came from its own step, so nothing else holds them.
    Its start ``y`` is the live iterate itself where the step had no momentum; the redone items
    then start there too, so ``y`` and its evaluation stay as they are.
    """
    own = {"xp": xp, "in_place": True}
    shared = full.y is live.x
    return _Trial(
        full.y if shared else merge_rows(full.y, part.y, rows, **own),
        full.ev_y if shared else merge_evaluations(full.ev_y, part.ev_y, rows, **own),
        merge_rows(full.x, part.x, rows, **own),
        merge_evaluations(full.ev, part.ev, rows, **own),
        None if full.dual is None else merge_rows(full.dual, part.dual, rows, **own),
        _merge_host(full.moved, part.moved, rows),
        _merge_host(full.size, part.size, rows),
        None if full.bound is None else _merge_host(full.bound, part.bound, rows),
        None if full.turn is None else _merge_host(full.turn, part.turn, rows),
    )


def _merge_host(full: np.ndarray, part: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = full.copy()
    out[rows] = part
    return out


def step_with_backtracking(
    live: Live,
    eta: np.ndarray,
    beta: np.ndarray,
    params: FusionParams,
    engine: Engine,
    xp: Any,
    fit: HaadfFit | None = None,
) -> tuple[_Trial, np.ndarray, np.ndarray, np.ndarray]:
    r"""One step of every live item, redone until it is accepted (``eta`` and ``beta`` are updated).

    With a fixed step, an accelerated step that raises the objective is first
    redone from :math:`x_k` without momentum (the function-value restart);
    with ``step="lipschitz"`` the momentum restarts for the next step where
    :math:`\langle y_k - x_{k+1}, x_{k+1} - x_k \rangle > 0` (the gradient
    restart of O'Donoghue & Candès 2015, which costs no extra step; the
    caller resets :math:`t` where ``trial.turn > 0``).  Then, with
    backtracking on, a step is redone with a smaller step size while it
    fails its test: with ``step="lipschitz"`` Beck & Teboulle's sufficient
    decrease :math:`f(x_{k+1}) \le f(y) + \langle \nabla f(y), x_{k+1} - y \rangle
    + \lVert x_{k+1} - y \rVert^2 / (2\eta)` of the smooth terms :math:`f`
    (the item's curvature estimate :math:`1/\eta` grows with each cut),
    otherwise a fall of the objective.  Returns the step, the new
    objectives, the backtracks and which items restarted.  ``fit``: the HAADF fit,
    refitted at each accelerated step's start (`_advance`).
    """
    trial = _advance(live, eta, beta, params, engine, xp, fit)
    total_new = objective(trial.ev, live.values)
    backtracks = np.zeros(live.items.size)
    restarted = np.zeros(live.items.size, dtype=bool)
    while True:
        # "not improved" rather than "rose": a NaN objective must retry too
        failed = ~(total_new <= live.total)
        # With a Lipschitz step the momentum restarts by the gradient test instead: no step is redone for it,
        # and rounding-level rises of the objective near the solution do not each cost a redone step.
        retry = np.flatnonzero(failed & (beta > 0)) if trial.bound is None else np.zeros(0, dtype=np.intp)
        if retry.size:
            beta[retry] = 0.0
            restarted[retry] = True
        elif params.backtracking:
            if trial.bound is not None:
                smooth = smooth_terms(trial.ev, live.values)
                failed = ~(smooth <= trial.bound + _SLACK * np.abs(trial.bound))
            retry = np.flatnonzero(failed & (backtracks < params.max_backtracks))
            if not retry.size:
                break
            backtracks[retry] += 1
            eta[retry] *= params.backtrack_factor
            live.values["shrink"][retry] *= params.backtrack_factor
            if trial.bound is not None:
                live.values["curvature"][retry] /= params.backtrack_factor
        else:
            break
        part = live.subset(retry, xp)
        redone = _advance(part, eta[retry], beta[retry], params, engine, xp, fit)
        trial = _merge_trials(trial, redone, retry, xp, live)
        total_new[retry] = objective(redone.ev, part.values)
    return trial, total_new, backtracks, restarted


def _dots(a: Any, b: Any, xp: Any) -> np.ndarray:
    """Inner product of each item of ``a`` and ``b`` (``(n, E, H, W)``), on the host in float64."""
    n = a.shape[0]
    return np.asarray(to_numpy(xp.linalg.vecdot(xp.reshape(a, (n, -1)), xp.reshape(b, (n, -1)))), dtype=np.float64)


def _gradient_step(
    engine: Engine, x: Any, ev: Evaluation, live: Live, eta: np.ndarray, xp: Any, *, nonneg: bool
) -> Any:
    r"""Return the engine's step :math:`x - \eta \nabla f(x)` of the smooth terms :math:`f`.

    ``nonneg`` projects it onto :math:`x \ge 0`.
    """
    v = live.values
    return engine.gradient_step(
        x,
        live.counts,
        live.weights,
        ev,
        eps=compact(v["eps"]),
        coef_h=compact(eta * v["gamma"] * v["lambda_haadf"]),
        coef_c=compact(eta[:, None] * v["lambda_chem"]),
        xp=xp,
        nonneg=nonneg,
    )


def first_curvature(live: Live, engine: Engine, xp: Any) -> np.ndarray:
    r"""Curvature estimate of each item before the first iteration: the secant along a unit gradient step from x0.

    With :math:`z = P_{\ge 0}(x_0 - \nabla f(x_0))` it is
    :math:`\lVert \nabla f(z) - \nabla f(x_0) \rVert / \lVert z - x_0 \rVert`, each gradient read off an
    unprojected step of the engine.  Items that did not move (or gave no finite estimate) get 1; the
    estimate is kept above `MIN_CURVATURE`, so a step stays finite where the data terms are flat.
    """
    terms = engine_terms(live.values, live.direction)
    ones = np.ones(live.items.size)
    step_x0 = _gradient_step(engine, live.x, live.ev, live, ones, xp, nonneg=False)
    z = xp.clip(step_x0, min=0.0)
    ev_z = engine.evaluate(z, live.haadf, live.counts, live.weights, xp=xp, mask=live.mask, **terms)
    # grad f(z) - grad f(x0) = (z - step(z)) - (x0 - step(x0))
    change = (z - _gradient_step(engine, z, ev_z, live, ones, xp, nonneg=False)) - (live.x - step_x0)
    d = z - live.x
    moved = np.sqrt(_dots(d, d, xp))
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = np.sqrt(_dots(change, change, xp)) / moved
    ok = np.isfinite(estimate) & (moved > 0)
    return np.where(ok, np.maximum(estimate, MIN_CURVATURE), ones)
