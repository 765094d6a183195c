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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._assemble import Outcome, SolvedPart
from ._batch import History, Live, merge_evaluations, merge_rows
from .backends import Engine
from .inputs import FusionProblem
from .objectives import Evaluation
from .operators import haadf_weights
from .params import FusionParams
from .result import FusionDivergedError
from .schedules import step_schedule

__all__ = ["IterationState", "solve"]


@dataclass(frozen=True)
class IterationState:
    """What a callback sees after each iteration.

    Attributes
    ----------
    iteration : int
        1-based iteration number.
    maps : array
        The current iterate (in the compute backend's namespace; do not modify):
        ``(E, H, W)`` for one fusion, ``(n, E, H, W)`` for the ``n`` items of a
        batch still iterating.
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

    ``callback(iteration, state)`` is called after every iteration; returning
    ``True`` from it stops the solver.  ``on_divergence="mark"`` stops a
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
    ev = engine.evaluate(problem.counts, problem.haadf, problem.counts, weights, xp=xp, **_terms(values))
    live = Live(
        np.arange(n_items), problem.counts, problem.counts, problem.haadf, weights, ev, _total(ev, values), values
    )
    live.values["start"] = live.total.copy()
    history = History()
    history.record(0, problem.items, *_terms_per_item(ev), live.total, np.full(n_items, math.nan), zeros)
    outcome = Outcome(n_items)
    batched = problem.batch_shape != ()

    schedule = step_schedule(params.step)
    bar = _progress_bar(params.n_iter) if progress else None
    try:
        for k in range(params.n_iter):
            base = float(schedule(k))
            if not (math.isfinite(base) and base > 0):
                raise ValueError(f"the step schedule returned {base!r} at iteration {k}; it must give finite steps > 0")
            eta = live.values["shrink"] * base
            x_new, ev_new, total_new, backtracks = _step_with_backtracking(live, eta, params, engine, xp)
            history.record(k + 1, problem.items[live.items], *_terms_per_item(ev_new), total_new, eta, backtracks)
            v = live.values
            improved = total_new <= live.total
            v["rises"] = np.where(improved, 0, v["rises"] + 1)
            v["above"] = np.where(total_new > v["start"], v["above"] + 1, 0)
            change = np.abs(live.total - total_new) / np.maximum(np.abs(live.total), 1e-30)
            live.x, live.ev, live.total = x_new, ev_new, total_new
            diverged = _diverged(live, params)
            if diverged.any() and on_divergence == "raise":
                row = int(np.flatnonzero(diverged)[0])
                _raise_diverged(live, row, int(problem.items[live.items[row]]), eta, k + 1, history, problem, params)
            reasons = np.where(diverged, "diverged", np.where(change < params.tol, "tol", ""))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{np.mean(live.total):.5g}", live=live.items.size, refresh=False)
            state = _state(k + 1, live, problem.items[live.items], eta, batched) if callback is not None else None
            if callback is not None and callback(k + 1, state) is True:
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
    return values


def _terms(values: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"gamma": _compact(values["gamma"]), "eps": _compact(values["eps"])}


def _compact(values: np.ndarray) -> Any:
    """One number when all share it (the engines' fast path), else per item ``(n,)``, else per map ``(n, E)``."""
    flat = values.reshape(-1)
    if np.all(flat == flat[0]):
        return float(flat[0])
    if values.ndim == 2 and np.all(values == values[:, :1]):
        return values[:, 0]
    return values


def _total(ev: Evaluation, values: dict[str, np.ndarray]) -> np.ndarray:
    chem = np.sum(values["lambda_chem"] * ev.poisson, axis=-1)
    return values["lambda_haadf"] * ev.haadf + chem + np.sum(values["lambda_tv"] * ev.tv, axis=-1)


def _terms_per_item(ev: Evaluation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the unweighted cost terms of each item (per-map ones summed over maps), as the history holds them."""
    return ev.haadf, np.sum(ev.poisson, axis=-1), np.sum(ev.tv, axis=-1)


def _advance(live: Live, eta: np.ndarray, params: FusionParams, engine: Engine, xp: Any) -> tuple[Any, Evaluation]:
    v = live.values
    y = engine.gradient_step(
        live.x,
        live.counts,
        live.weights,
        live.ev,
        eps=_compact(v["eps"]),
        coef_h=_compact(eta * v["gamma"] * v["lambda_haadf"]),
        coef_c=_compact(eta[:, None] * v["lambda_chem"]),
        xp=xp,
    )
    tv_weight = _compact(eta[:, None] * v["lambda_tv"])
    x_new = engine.tv_prox(y, tv_weight, params.n_tv, method=params.tv_method, nonneg=True, xp=xp)
    return x_new, engine.evaluate(x_new, live.haadf, live.counts, live.weights, xp=xp, **_terms(v))


def _step_with_backtracking(
    live: Live, eta: np.ndarray, params: FusionParams, engine: Engine, xp: Any
) -> tuple[Any, Evaluation, np.ndarray, np.ndarray]:
    """One step of every live item; items whose objective rose retry with smaller steps (``eta`` is updated)."""
    x_new, ev_new = _advance(live, eta, params, engine, xp)
    total_new = _total(ev_new, live.values)
    backtracks = np.zeros(live.items.size)
    while params.backtracking:
        # "not improved" rather than "rose": a NaN objective must retry too
        retry = np.flatnonzero(~(total_new <= live.total) & (backtracks < params.max_backtracks))
        if not retry.size:
            break
        backtracks[retry] += 1
        eta[retry] *= params.backtrack_factor
        live.values["shrink"][retry] *= params.backtrack_factor
        part = live.subset(retry, xp)
        x_part, ev_part = _advance(part, eta[retry], params, engine, xp)
        x_new = merge_rows(x_new, x_part, retry, xp)
        ev_new = merge_evaluations(ev_new, ev_part, retry, xp)
        total_new[retry] = _total(ev_part, part.values)
    return x_new, ev_new, total_new, backtracks


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
        f"fusion diverged{where}: {why} with step size {step:g}. Use a smaller step "
        f"(e.g. FusionParams(step={step / 4:g})), a decaying schedule, or backtracking=True",
        iteration=k,
        step=step,
        history=history.frame(batched=False, item=item),
    )


def _retire(live: Live, reasons: np.ndarray, iteration: int, outcome: Outcome, xp: Any) -> Live:
    """Set aside the items with a stop reason and return the live state of the others."""
    done = np.flatnonzero(reasons != "")
    if not done.size:
        return live
    outcome.add(live.subset(done, xp), reasons[done], iteration, xp)
    return live.subset(np.flatnonzero(reasons == ""), xp)


def _state(k: int, live: Live, items: np.ndarray, eta: np.ndarray, batched: bool) -> IterationState:
    haadf, poisson, tv = _terms_per_item(live.ev)
    if batched:
        return IterationState(k, live.x, haadf, poisson, tv, live.total, eta, items)
    return IterationState(
        k, live.x[0, ...], float(haadf[0]), float(poisson[0]), float(tv[0]), float(live.total[0]), float(eta[0])
    )


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fusex", unit="it")
