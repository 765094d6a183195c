"""The solver's loop over the iterations of a batch: stopping, divergence, callbacks and progress."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import array_api_compat
import numpy as np

from ..backends import Engine
from ..inputs import FusionProblem
from ..operators import binomial_smooth, haadf_weights
from ..params import FusionParams
from ..priors import directional_field
from ..result import FusionDivergedError
from ..result._assembly import SolvedPart
from ..result._history import History
from ..schedules import ConstantStep, step_schedule, step_size
from ._haadf_fit import HaadfFit, refit
from ._live import Live
from ._objective import engine_terms, objective, terms_per_item
from ._outcome import Outcome
from ._step import (
    MIN_CURVATURE,
    STEP_GROWTH,
    first_curvature,
    inner_iterations,
    step_with_backtracking,
)

__all__ = ["IterationState", "solve"]

RISES_BEFORE_RESTART = 3
"""Consecutive rises of an item's objective by more than `CLIMB` after which its momentum restarts and its
step is cut."""

CLIMB = 1e-5
"""Relative rise of the objective that counts towards `RISES_BEFORE_RESTART`: float32 rounding near a
solution raises it by up to about 1.5e-6 (128x128 phantoms, every prior), an unstable run by 1e-3 and more."""

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
    start: Any = None,
) -> SolvedPart:
    """Run the fusion solver on a prepared problem (all its items at once).

    ``callback(iteration, state)`` is called after every iteration; a true
    boolean or non-zero number returned from it stops the solver (see
    `IterationState` for exactly what stops).  ``on_divergence="mark"`` stops a
    diverging item with ``stop_reason="diverged"`` instead of raising.
    ``start`` (``(n, E, H, W)`` on the compute backend, normalized units) is
    the first iterate; default the normalized counts, which also stand in
    wherever ``start`` is NaN (an item with no earlier fit of its own).
    The whole solve runs inside the engine's ``session()`` where it has one
    (see `fusex.backends.Engine`).
    """
    with getattr(engine, "session", contextlib.nullcontext)():
        return _solve(problem, params, engine, callback, progress, on_divergence, start)


def _solve(
    problem: FusionProblem,
    params: FusionParams,
    engine: Engine,
    callback: Callable[[int, IterationState], Any] | None,
    progress: bool,
    on_divergence: str,
    start: Any,
) -> SolvedPart:
    xp = problem.xp
    n_items, n_elements = problem.counts.shape[:2]
    values = _item_values(params, problem.batch_shape, problem.elements, problem.items)
    weight_rows = [haadf_weights(params.haadf_weights, problem.z, g, n_elements) for g in values["gamma"]]
    weights = xp.reshape(
        xp.asarray(weight_rows, dtype=problem.counts.dtype, device=problem.device), (n_items, n_elements, 1, 1)
    )
    zeros = np.zeros(n_items)
    values.update(shrink=np.ones(n_items), rises=zeros.copy(), above=zeros.copy(), start=zeros.copy())
    values["climbs"], values["least_curvature"] = zeros.copy(), np.full(n_items, MIN_CURVATURE)
    mask = problem.haadf_mask
    direction = _direction(problem, params, values, xp)
    terms = engine_terms(values, direction)
    x0 = problem.counts
    holes = start is None or bool(xp.any(xp.isnan(start)))
    if params.init == "smoothed" and holes:
        # the counts' noise is far from any fixed point; a blur of them starts nearer the better ones
        x0 = binomial_smooth(binomial_smooth(x0, xp), xp)
    if start is not None:
        x0 = xp.where(xp.isnan(start), x0, xp.clip(start, min=0.0)) if holes else xp.clip(start, min=0.0)
    ev = engine.evaluate(x0, problem.haadf, problem.counts, weights, xp=xp, mask=mask, **terms)
    live = Live(
        np.arange(n_items),
        x0,
        problem.counts,
        problem.haadf,
        weights,
        ev,
        objective(ev, values),
        values,
        mask,
        direction=direction,
    )
    fit = HaadfFit.start(problem, params, weights)
    if fit is not None:
        refit(live, fit, engine, xp, smooth=True)
    live.values["start"] = live.total.copy()
    history = History()
    history.record(0, problem.items, *terms_per_item(live.ev), live.total, np.full(n_items, math.nan), zeros, zeros)
    outcome = Outcome(n_items, rescale_totals=params.rescale_totals)
    batched = problem.batch_shape != ()

    lipschitz = params.step == "lipschitz"
    schedule = None if lipschitz else step_schedule(params.step)
    live.values["t"] = np.ones(n_items)
    if params.tv_warm:
        shape = (n_items, n_elements, 2, *problem.counts.shape[-2:])
        live.dual = xp.zeros(shape, dtype=problem.counts.dtype, device=problem.device)
    if lipschitz:
        live.values["curvature"] = first_curvature(live, engine, xp)
    live.values["inner"], live.values["lowest"] = np.ones(n_items), live.total.copy()
    bar = _progress_bar(params.n_iter) if progress else None
    try:
        for k in range(params.n_iter):
            if fit is not None and fit.due(k):
                refit(live, fit, engine, xp)
            v = live.values
            inner = inner_iterations(v, params, live.direction is not None)
            eta = 1.0 / v["curvature"] if lipschitz else v["shrink"] * step_size(schedule, k)
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * v["t"] ** 2))
            beta = (v["t"] - 1.0) / t_next if params.accel == "fista" else np.zeros(live.items.size)
            trial, total_new, backtracks, restarted = step_with_backtracking(live, eta, beta, params, engine, xp, fit)
            stepped = replace(live, x=trial.x, ev=trial.ev, total=total_new)
            if fit is not None and fit.each_step:
                # the objective recorded, compared and returned is then the one minimized over the fit;
                # a step whose objective is no longer finite keeps it, for the divergence test to see
                refit(stepped, fit, engine, xp)
                total_new = np.where(np.isfinite(total_new), stepped.total, total_new)
            history.record(
                k + 1, problem.items[live.items], *terms_per_item(stepped.ev), total_new, eta, backtracks, inner
            )
            improved = total_new <= live.total
            v["rises"] = np.where(improved, 0, v["rises"] + 1)
            v["above"] = np.where(total_new > v["start"], v["above"] + 1, 0)
            turned = np.zeros(live.items.size, dtype=bool) if trial.turn is None else trial.turn > 0
            # The step tests see the smooth terms only: with an inexact (warm, n_tv-step) prox a run of accepted
            # steps can still raise the whole objective, so such a run restarts the momentum and cuts the step.
            v["climbs"] = np.where(total_new > live.total + CLIMB * np.abs(live.total), v["climbs"] + 1, 0)
            rising = v["climbs"] >= RISES_BEFORE_RESTART
            if lipschitz:
                # Steps tested on the smooth terms can trade the prior for the data through a warm, inexact prox:
                # the objective then creeps up for hundreds of iterations and the residual test never stops
                # (3 x 256^2, lambda_chem 0.04, lambda_tv 0.1: 500 iterations, +1.8e-4 over the last 430; with
                # the inner iterations doubled at each climb it stops after 71, lower). Without climbs, no change.
                climbed = total_new > v["lowest"] + CLIMB * np.abs(v["lowest"])
                v["inner"] = np.where(climbed, np.minimum(2.0 * v["inner"], params.tv_growth), v["inner"])
                v["lowest"] = np.where(climbed, total_new, np.fmin(v["lowest"], total_new))
            v["t"] = np.where(restarted, _T_AFTER_RESTART, np.where(turned | rising, 1.0, t_next))
            moved, size = trial.moved, trial.size
            if lipschitz:
                # a cut step becomes the item's largest: growing back into the climb would repeat it
                cut = v["curvature"] / params.backtrack_factor
                v["least_curvature"] = np.where(rising, cut, v["least_curvature"])
                grown = np.maximum(v["curvature"] / STEP_GROWTH, v["least_curvature"])
                v["curvature"] = np.where(rising, cut, np.where(backtracks == 0, grown, v["curvature"]))
            residual = moved / np.maximum(size, 1e-30)
            live.x_prev, live.x, live.ev, live.total, live.dual = live.x, trial.x, stepped.ev, total_new, trial.dual
            live.haadf, live.weights, live.background = stepped.haadf, stepped.weights, stepped.background
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
    haadf, poisson, tv = terms_per_item(live.ev)
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
