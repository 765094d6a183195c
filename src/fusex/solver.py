r"""The proximal-gradient loop for a batch of fusions: steps, backtracking, stopping, callbacks.

Iteration :math:`k` of item :math:`n` with step :math:`\eta_{k,n}`:

.. math::

    y &= \max\bigl(x_k - \eta_{k,n}(\lambda_H \nabla\Psi_1 + \lambda_C \nabla\Psi_2)(x_k),\ 0\bigr) \\
    x_{k+1} &= \operatorname{prox}_{\eta_{k,n} \lambda_{TV} TV,\ x \ge 0}(y)

Every item keeps its own parameters, step shrink, divergence counters and
stopping test, so an item of a batch follows the path it would follow alone
(up to the rounding of sums); each engine call covers all live items at once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import array_api_compat
import numpy as np

from ._assemble import Outcome, SolvedPart
from ._batch import History, Live, merge_evaluations, merge_rows
from ._haadf_fit import HaadfFit
from ._xp import to_numpy
from .backends import Engine
from .inputs import FusionProblem
from .objectives import Evaluation
from .operators import haadf_weights
from .params import FusionParams
from .priors import directional_field
from .result import FusionDivergedError
from .schedules import ConstantStep, step_schedule, step_size

__all__ = ["MIN_CURVATURE", "STEP_GROWTH", "IterationState", "solve"]

STEP_GROWTH = 1.1
"""With ``step="lipschitz"``, the factor by which an item's step grows after an iteration that needed no
backtrack, so the step follows the curvature down as well as up (one backtrack per ~7 iterations at most)."""

MIN_CURVATURE = 1e-3
"""Floor of the curvature estimate, so that flat data terms (zero weights) still give finite steps."""

# relative slack of the sufficient-decrease test: the objective's sums carry the rounding of float32 maps
_SLACK = 1e-6

# t after a restarted step: the momentum sequence starts again from t = 1, whose successor this is
_T_AFTER_RESTART = 0.5 * (1.0 + math.sqrt(5.0))


@dataclass(frozen=True)
class IterationState:
    """What a callback sees after each iteration.

    Nothing a callback does to the state reaches the solver: every array in
    it is a read-only NumPy view (``writeable=False``, no copy; NumPy and
    numba backends), or a copy of the iterate for backends without
    read-only arrays (torch, CuPy, array-api-strict), so writing into it
    changes only that copy.

    The callback's return value decides whether the solver goes on:

    * ``None``, ``False``, ``np.False_``, ``0`` go on;
    * ``True``, ``np.True_`` and any other number that is not 0 (``1``,
      ``np.int64(1)``, ``0.5``) stop, with ``stop_reason="callback"``;
    * a 0-d array of booleans or numbers (``state.maps.max() > 2`` in torch)
      counts as its value;
    * anything else (a string, a list, an array with elements) raises
      `TypeError` naming ``callback``.

    Attributes
    ----------
    iteration : int
        1-based iteration number.
    maps : array
        The current iterate, in the compute backend's namespace (read-only
        view or copy, see above): ``(E, H, W)`` for one fusion,
        ``(n, E, H, W)`` for the ``n`` items of a batch still iterating.
    haadf, poisson, tv, total : float or numpy.ndarray
        The cost terms, as in `FusionResult.history` (one per live item for a batch).
    step : float or numpy.ndarray
        The step size used.
    items : numpy.ndarray or None
        Flat indices of the live items of a batch; None for one fusion.

    """

    iteration: int
    maps: Any
    haadf: Any
    poisson: Any
    tv: Any
    total: Any
    step: Any
    items: Any = None


def solve(
    problem: FusionProblem,
    params: FusionParams,
    engine: Engine,
    *,
    callback: Callable[[int, IterationState], Any] | None = None,
    progress: bool = False,
    on_divergence: str = "raise",
) -> SolvedPart:
    """Run the fusion solver on a prepared problem (all its items at once).

    ``callback(iteration, state)`` is called after every iteration; a true
    boolean or non-zero number returned from it stops the solver (see
    `IterationState` for exactly what stops).  ``on_divergence="mark"`` stops a
    diverging item with ``stop_reason="diverged"`` instead of raising.
    """
    xp = problem.xp
    n_items, n_elements = problem.counts.shape[:2]
    values = _item_values(params, problem.batch_shape, problem.elements, problem.items)
    weight_rows = [haadf_weights(params.haadf_weights, problem.z, g, n_elements) for g in values["gamma"]]
    weights = xp.reshape(
        xp.asarray(weight_rows, dtype=problem.counts.dtype, device=problem.device), (n_items, n_elements, 1, 1)
    )
    zeros = np.zeros(n_items)
    values.update(shrink=np.ones(n_items), rises=zeros.copy(), above=zeros.copy(), start=zeros.copy())
    mask = problem.haadf_mask
    direction = _direction(problem, params, values, xp)
    terms = _terms(values, direction)
    ev = engine.evaluate(problem.counts, problem.haadf, problem.counts, weights, xp=xp, mask=mask, **terms)
    live = Live(
        np.arange(n_items),
        problem.counts,
        problem.counts,
        problem.haadf,
        weights,
        ev,
        _total(ev, values),
        values,
        mask,
        direction=direction,
    )
    fit = HaadfFit.start(problem, params, weights)
    if fit is not None:
        _refit(live, fit, engine, xp, smooth=True)
    live.values["start"] = live.total.copy()
    history = History()
    history.record(0, problem.items, *_terms_per_item(live.ev), live.total, np.full(n_items, math.nan), zeros)
    outcome = Outcome(n_items, rescale_totals=params.rescale_totals)
    batched = problem.batch_shape != ()

    lipschitz = params.step == "lipschitz"
    schedule = None if lipschitz else step_schedule(params.step)
    live.values["t"] = np.ones(n_items)
    if params.tv_warm:
        shape = (n_items, n_elements, 2, *problem.counts.shape[-2:])
        live.dual = xp.zeros(shape, dtype=problem.counts.dtype, device=problem.device)
    if lipschitz:
        live.values["curvature"] = _first_curvature(live, engine, xp)
    bar = _progress_bar(params.n_iter) if progress else None
    try:
        for k in range(params.n_iter):
            if fit is not None and fit.due(k):
                _refit(live, fit, engine, xp)
            v = live.values
            eta = 1.0 / v["curvature"] if lipschitz else v["shrink"] * step_size(schedule, k)
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * v["t"] ** 2))
            beta = (v["t"] - 1.0) / t_next if params.accel == "fista" else np.zeros(live.items.size)
            trial, total_new, backtracks, restarted = _step_with_backtracking(live, eta, beta, params, engine, xp)
            history.record(k + 1, problem.items[live.items], *_terms_per_item(trial.ev), total_new, eta, backtracks)
            improved = total_new <= live.total
            v["rises"] = np.where(improved, 0, v["rises"] + 1)
            v["above"] = np.where(total_new > v["start"], v["above"] + 1, 0)
            turned = np.zeros(live.items.size, dtype=bool) if trial.turn is None else trial.turn > 0
            v["t"] = np.where(restarted, _T_AFTER_RESTART, np.where(turned, 1.0, t_next))
            moved, size = trial.moved, trial.size
            if lipschitz:
                grown = np.maximum(v["curvature"] / STEP_GROWTH, MIN_CURVATURE)
                v["curvature"] = np.where(backtracks == 0, grown, v["curvature"])
            residual = moved / np.maximum(size, 1e-30)
            live.x_prev, live.x, live.ev, live.total, live.dual = live.x, trial.x, trial.ev, total_new, trial.dual
            diverged = _diverged(live, params)
            if diverged.any() and on_divergence == "raise":
                row = int(np.flatnonzero(diverged)[0])
                _raise_diverged(live, row, int(problem.items[live.items[row]]), eta, k + 1, history, problem, params)
            reasons = np.where(diverged, "diverged", np.where(residual < params.tol, "tol", ""))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{np.mean(live.total):.5g}", live=live.items.size, refresh=False)
            state = _state(k + 1, live, problem.items[live.items], eta, batched, xp) if callback is not None else None
            if callback is not None and _stops(callback(k + 1, state)):
                reasons = np.where(reasons == "diverged", reasons, "callback")
            if k + 1 == params.n_iter:
                reasons = np.where(reasons == "", "n_iter", reasons)
            live = _retire(live, reasons, k + 1, outcome, xp)
            if not live.items.size:
                break
    finally:
        if bar is not None:
            bar.close()
    return outcome.part(problem, history, values["lambda_haadf"], weight_rows)


def _item_values(
    params: FusionParams, batch_shape: tuple[int, ...], elements: tuple[str, ...], items: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-item host values (``(n,)``; ``(n, E)`` for the per-map weights ``lambda_chem``, ``lambda_tv``)."""
    values = {name: params.item_values(name, batch_shape)[items] for name in ("gamma", "eps")}
    for name in ("lambda_chem", "lambda_tv"):
        values[name] = params.map_values(name, batch_shape, elements)[items]
    if params.lambda_haadf is None:
        values["lambda_haadf"] = np.full(items.shape, 1.0 / len(elements))
    else:
        values["lambda_haadf"] = params.item_values("lambda_haadf", batch_shape)[items]
    priors = np.asarray(params.priors(elements))
    if np.any(priors != "tv"):
        # Only maps with another prior carry these: a zero delta and strength is TV (fusex.priors).
        for name, prior in (("huber_delta", "huber"), ("dtv_strength", "dtv")):
            values[name] = np.where(priors == prior, params.map_values(name, batch_shape, elements)[items], 0.0)
    return values


def _direction(problem: FusionProblem, params: FusionParams, values: dict[str, np.ndarray], xp: Any) -> Any:
    """Return each item's HAADF direction field ``(n, 2, H, W)``, once per fusion; None when no map uses ``"dtv"``."""
    if not np.any(values.get("dtv_strength", 0.0)):
        return None
    return directional_field(problem.haadf, params.dtv_eta, xp)


def _refit(live: Live, fit: HaadfFit, engine: Engine, xp: Any, *, smooth: bool = False) -> None:
    r"""Refit the HAADF model's gain, offset and background at the live iterate, and update the objective.

    Each refit minimizes the objective over them exactly, at fixed maps, so
    the objective never rises at a refit (see ``docs/theory.md``).  Only the
    HAADF term changes: its residual :math:`r = m(b_H - c - B - aM)` is formed
    from the new fit and :math:`x^\gamma = x \cdot x^{\gamma-1}` of the last
    evaluation, so a refit costs a pass over the maps, not an evaluation.
    The start's fit (``smooth``) is fitted on a smoothed iterate and
    evaluated in full.
    """
    if smooth:
        fit.apply(live, xp, smooth=True)
        terms = _terms(live.values, live.direction)
        live.ev = engine.evaluate(live.x, live.haadf, live.counts, live.weights, xp=xp, mask=live.mask, **terms)
    else:
        model = fit.apply(live, xp, x_pow=live.x * live.ev.x_pow_m1)
        residual = live.haadf - model
        if live.mask is not None:
            squares = xp.sum(live.mask * residual * residual, axis=(-2, -1))
            residual = live.mask * residual
        else:
            squares = xp.sum(residual * residual, axis=(-2, -1))
        haadf = 0.5 * np.asarray(to_numpy(squares), dtype=np.float64)
        live.ev = replace(live.ev, haadf=haadf, residual=residual)
    live.total = _total(live.ev, live.values)


def _terms(values: dict[str, np.ndarray], direction: Any = None) -> dict[str, Any]:
    """Keywords of ``engine.evaluate``: gamma, eps and, when a map's prior is not TV, the prior's parameters."""
    return {"gamma": _compact(values["gamma"]), "eps": _compact(values["eps"]), **_prior(values, direction)}


def _prior(values: dict[str, np.ndarray], direction: Any) -> dict[str, Any]:
    """Keywords naming the maps' priors for the engines (none when every map is on TV: the engines' TV path)."""
    if "huber_delta" not in values:
        return {}
    return {
        "huber_delta": _compact(values["huber_delta"]),
        "strength": _compact(values["dtv_strength"]),
        "direction": direction,
    }


def _compact(values: np.ndarray) -> Any:
    """One number when all share it (the engines' fast path), else per item ``(n,)``, else per map ``(n, E)``."""
    flat = values.reshape(-1)
    if np.all(flat == flat[0]):
        return float(flat[0])
    if values.ndim == 2 and np.all(values == values[:, :1]):
        return values[:, 0]
    return values


def _total(ev: Evaluation, values: dict[str, np.ndarray]) -> np.ndarray:
    return _smooth(ev, values) + np.sum(values["lambda_tv"] * ev.tv, axis=-1)


def _smooth(ev: Evaluation, values: dict[str, np.ndarray]) -> np.ndarray:
    """Return the smooth (data) terms of the objective of each item."""
    return values["lambda_haadf"] * ev.haadf + np.sum(values["lambda_chem"] * ev.poisson, axis=-1)


def _terms_per_item(ev: Evaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the unweighted cost terms of each item (per-map ones summed over maps), as the history holds them."""
    return ev.haadf, np.sum(ev.poisson, axis=-1), np.sum(ev.tv, axis=-1)


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


def _advance(live: Live, eta: np.ndarray, beta: np.ndarray, params: FusionParams, engine: Engine, xp: Any) -> _Trial:
    r"""Step from :math:`y = P_{\ge 0}(x_k + \beta (x_k - x_{k-1}))` (:math:`x_k` itself where :math:`\beta = 0`)."""
    v = live.values
    terms = _terms(v, live.direction)
    if live.x_prev is None or not np.any(beta > 0):
        y, ev_y = live.x, live.ev
    else:
        b = xp.asarray(beta.tolist(), dtype=live.x.dtype, device=array_api_compat.device(live.x))
        y = xp.clip(live.x + xp.reshape(b, (-1, 1, 1, 1)) * (live.x - live.x_prev), min=0.0)
        ev_y = engine.evaluate(y, live.haadf, live.counts, live.weights, xp=xp, mask=live.mask, **terms)
    # The sufficient-decrease test holds for a true proximal-gradient step, whose prox alone imposes x >= 0;
    # fixed steps keep the published method's projection before the prox.
    z = _gradient_step(engine, y, ev_y, live, eta, xp, nonneg=params.step != "lipschitz")
    tv_weight = _compact(eta[:, None] * v["lambda_tv"])
    prox = {"method": params.tv_method, "nonneg": True, "xp": xp, **_prior(v, live.direction)}
    if live.dual is None:
        x_new, dual = engine.tv_prox(z, tv_weight, params.n_tv, **prox), None
    else:
        x_new, dual = engine.tv_prox(z, tv_weight, params.n_tv, dual=live.dual, **prox)
    ev_new = engine.evaluate(x_new, live.haadf, live.counts, live.weights, xp=xp, mask=live.mask, **terms)
    d = x_new - y
    moved2, size2 = _dots(d, d, xp), _dots(x_new, x_new, xp)
    bound = None
    if params.step == "lipschitz":
        # Beck & Teboulle's quadratic upper model of the smooth terms at y, evaluated at the new point;
        # the unprojected step z = y - eta grad f(y) gives the slope <grad f(y), d> without another gradient pass
        slope = _dots(y - z, d, xp) / eta
        bound = _smooth(ev_y, v) + slope + moved2 / (2.0 * eta)
    # O'Donoghue & Candes' gradient restart test: > 0 where the step turned against the momentum
    turn = None if params.accel != "fista" or params.step != "lipschitz" else -_dots(d, x_new - live.x, xp)
    return _Trial(y, ev_y, x_new, ev_new, dual, np.sqrt(moved2), np.sqrt(size2), bound, turn)


def _merge_trials(full: _Trial, part: _Trial, rows: np.ndarray, xp: Any) -> _Trial:
    """``full`` with the items ``rows`` replaced by ``part``."""
    return _Trial(
        merge_rows(full.y, part.y, rows, xp),
        merge_evaluations(full.ev_y, part.ev_y, rows, xp),
        merge_rows(full.x, part.x, rows, xp),
        merge_evaluations(full.ev, part.ev, rows, xp),
        None if full.dual is None else merge_rows(full.dual, part.dual, rows, xp),
        _merge_host(full.moved, part.moved, rows),
        _merge_host(full.size, part.size, rows),
        None if full.bound is None else _merge_host(full.bound, part.bound, rows),
        None if full.turn is None else _merge_host(full.turn, part.turn, rows),
    )


def _merge_host(full: np.ndarray, part: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = full.copy()
    out[rows] = part
    return out


def _step_with_backtracking(
    live: Live, eta: np.ndarray, beta: np.ndarray, params: FusionParams, engine: Engine, xp: Any
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
    objectives, the backtracks and which items restarted.
    """
    trial = _advance(live, eta, beta, params, engine, xp)
    total_new = _total(trial.ev, live.values)
    backtracks = np.zeros(live.items.size)
    restarted = np.zeros(live.items.size, dtype=bool)
    while True:
        # "not improved" rather than "rose": a NaN objective must retry too
        failed = ~(total_new <= live.total)
        # With a Lipschitz step the momentum restarts by the gradient test instead (below): no step is redone
        # for it, and rounding-level rises of the objective near the solution do not stall the acceleration.
        retry = np.flatnonzero(failed & (beta > 0)) if trial.bound is None else np.zeros(0, dtype=np.intp)
        if retry.size:
            beta[retry] = 0.0
            restarted[retry] = True
        elif params.backtracking:
            if trial.bound is not None:
                smooth = _smooth(trial.ev, live.values)
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
        redone = _advance(part, eta[retry], beta[retry], params, engine, xp)
        trial = _merge_trials(trial, redone, retry, xp)
        total_new[retry] = _total(redone.ev, part.values)
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
        eps=_compact(v["eps"]),
        coef_h=_compact(eta * v["gamma"] * v["lambda_haadf"]),
        coef_c=_compact(eta[:, None] * v["lambda_chem"]),
        xp=xp,
        nonneg=nonneg,
    )


def _first_curvature(live: Live, engine: Engine, xp: Any) -> np.ndarray:
    r"""Curvature estimate of each item before the first iteration: the secant along a unit gradient step from x0.

    With :math:`z = P_{\ge 0}(x_0 - \nabla f(x_0))` it is
    :math:`\lVert \nabla f(z) - \nabla f(x_0) \rVert / \lVert z - x_0 \rVert`, each gradient read off an
    unprojected step of the engine.  Items that did not move (or gave no finite estimate) get 1; the
    estimate is kept above `MIN_CURVATURE`, so a step stays finite where the data terms are flat.
    """
    terms = _terms(live.values, live.direction)
    ones = np.ones(live.items.size)
    z = _gradient_step(engine, live.x, live.ev, live, ones, xp, nonneg=True)
    ev_z = engine.evaluate(z, live.haadf, live.counts, live.weights, xp=xp, mask=live.mask, **terms)
    # grad f(z) - grad f(x0) = (z - step(z)) - (x0 - step(x0))
    change = (z - _gradient_step(engine, z, ev_z, live, ones, xp, nonneg=False)) - (
        live.x - _gradient_step(engine, live.x, live.ev, live, ones, xp, nonneg=False)
    )
    d = z - live.x
    moved = np.sqrt(_dots(d, d, xp))
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = np.sqrt(_dots(change, change, xp)) / moved
    ok = np.isfinite(estimate) & (moved > 0)
    return np.where(ok, np.maximum(estimate, MIN_CURVATURE), ones)


def _diverged(live: Live, params: FusionParams) -> np.ndarray:
    v, patience = live.values, params.divergence_patience
    bad = ~np.isfinite(live.total)
    if patience:
        bad |= (v["rises"] >= patience) & (live.total > v["start"])
        bad |= v["above"] >= patience
    return bad


def _raise_diverged(
    live: Live,
    row: int,
    item: int,
    eta: np.ndarray,
    k: int,
    history: History,
    problem: FusionProblem,
    params: FusionParams,
) -> None:
    v, total, start = live.values, live.total[row], live.values["start"][row]
    patience = params.divergence_patience
    if not math.isfinite(total):
        why = f"the objective became {total} at iteration {k}"
    elif v["rises"][row] >= patience and total > start:
        why = f"the objective rose for {int(v['rises'][row])} iterations in a row, to {total:.6g} (start {start:.6g})"
    else:
        why = f"the objective stayed above its start {start:.6g} for {patience} iterations (now {total:.6g})"
    where = ""
    if problem.batch_shape:
        where = f" in batch item {tuple(int(i) for i in np.unravel_index(item, problem.batch_shape))}"
    step = float(eta[row])
    raise FusionDivergedError(
        f"fusion diverged{where}: {why} with step size {step:g}. {_advice(params, v, row, step)}",
        iteration=k,
        step=step,
        history=history.frame(batched=False, item=item),
    )


def _advice(params: FusionParams, v: dict[str, np.ndarray], row: int, step: float) -> str:
    """Say what could still help item ``row``, given the settings in force (advice already followed is left out)."""
    smaller = f"FusionParams(step={step / 4:g})"
    decaying = " or a decaying schedule" if isinstance(params.step, (int, float, ConstantStep)) else ""
    # a step must stay below 2 / (curvature of the data terms), which grows as lambda_haadf gamma**2 and lambda_chem/eps
    weights = (
        f"lower the weights in force (lambda_haadf={float(v['lambda_haadf'][row]):g}, "
        f"lambda_chem={float(np.max(v['lambda_chem'][row])):g}) or raise eps (now {float(np.max(v['eps'][row])):g})"
    )
    if not params.backtracking:
        return f"Use a smaller step (e.g. {smaller}){decaying}, or backtracking=True; or {weights}"
    return (
        f"Backtracking is on and had already cut the step to {step:g}, so {weights}; or start from a smaller step "
        f"(e.g. {smaller}){decaying}, and allow more retries per iteration (max_backtracks, now "
        f"{params.max_backtracks})"
    )


def _retire(live: Live, reasons: np.ndarray, iteration: int, outcome: Outcome, xp: Any) -> Live:
    """Set aside the items with a stop reason and return the live state of the others."""
    done = np.flatnonzero(reasons != "")
    if not done.size:
        return live
    outcome.add(live.subset(done, xp), reasons[done], iteration, xp)
    return live.subset(np.flatnonzero(reasons == ""), xp)


def _state(k: int, live: Live, items: np.ndarray, eta: np.ndarray, batched: bool, xp: Any) -> IterationState:
    haadf, poisson, tv = _terms_per_item(live.ev)
    if batched:
        host = (_frozen(a, np) for a in (haadf, poisson, tv, live.total, eta, items))
        return IterationState(k, _frozen(live.x, xp), *host)
    return IterationState(
        k,
        _frozen(live.x[0, ...], xp),
        float(haadf[0]),
        float(poisson[0]),
        float(tv[0]),
        float(live.total[0]),
        float(eta[0]),
    )


def _frozen(x: Any, xp: Any) -> Any:
    """Return a read-only view of a NumPy array, a copy of any other (torch, CuPy, array-api-strict cannot lock one)."""
    if isinstance(x, np.ndarray):
        view = x.view()
        view.flags.writeable = False
        return view
    return xp.asarray(x, copy=True)


def _stops(answer: Any) -> bool:
    """Whether a callback's return value asks the solver to stop (the rules are in `IterationState`)."""
    if answer is None:
        return False
    if isinstance(answer, (bool, np.bool_, numbers.Number)):
        return bool(answer)
    if getattr(answer, "shape", None) == () and _is_numeric_array(answer):
        return bool(answer)
    raise TypeError(
        f"`callback` returned {answer!r} ({type(answer).__name__}); return True or a non-zero number to stop the "
        "solver, and None, False or 0 to go on"
    )


def _is_numeric_array(x: Any) -> bool:
    try:
        space = array_api_compat.array_namespace(x)
    except TypeError:
        return False
    return bool(space.isdtype(x.dtype, ("bool", "numeric")))


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fusex", unit="it")
