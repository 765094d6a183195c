r"""The proximal-gradient loop: steps, backtracking, stopping, callbacks.

Iteration :math:`k` with step :math:`\eta_k`:

.. math::

    y &= \max\bigl(x_k - \eta_k(\lambda_H \nabla\Psi_1 + \lambda_C \nabla\Psi_2)(x_k),\ 0\bigr) \\
    x_{k+1} &= \operatorname{prox}_{\eta_k \lambda_{TV} TV,\ x \ge 0}(y)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ._xp import convert
from .backends import Engine
from .inputs import FusionProblem
from .objectives import Evaluation
from .operators import haadf_model, haadf_weights
from .params import FusionParams, step_schedule
from .result import FusionDivergedError, FusionResult

__all__ = ["IterationState", "solve"]

_COLUMNS = ("iteration", "haadf", "poisson", "tv", "total", "step", "backtracks")


@dataclass(frozen=True)
class IterationState:
    """What a callback sees after each iteration.

    Attributes
    ----------
    iteration : int
        1-based iteration number.
    maps : array
        The current iterate (in the compute backend's namespace; do not modify).
    haadf, poisson, tv, total : float
        The cost terms, as in `FusionResult.history`.
    step : float
        The step size used.

    """

    iteration: int
    maps: Any
    haadf: float
    poisson: float
    tv: float
    total: float
    step: float


def solve(
    problem: FusionProblem,
    params: FusionParams,
    engine: Engine,
    *,
    callback: Callable[[int, IterationState], Any] | None = None,
    progress: bool = False,
) -> FusionResult:
    """Run the fusion solver on a prepared problem.

    ``callback(iteration, state)`` is called after every iteration; returning
    ``True`` from it stops the solver.
    """
    xp = problem.xp
    n_elements = problem.counts.shape[0]
    lam_h = 1.0 / n_elements if params.lambda_haadf is None else float(params.lambda_haadf)
    lambdas = (lam_h, float(params.lambda_chem), float(params.lambda_tv))
    weights_tuple = haadf_weights(params.haadf_weights, problem.z, params.gamma, n_elements)
    weights = xp.reshape(
        xp.asarray(weights_tuple, dtype=problem.counts.dtype, device=problem.device), (n_elements, 1, 1)
    )
    terms = dict(gamma=float(params.gamma), eps=float(params.eps))

    def objective(x: Any) -> Evaluation:
        return engine.evaluate(x, problem.haadf, problem.counts, weights, lambdas=lambdas, xp=xp, **terms)

    def step_from(x: Any, ev: Evaluation, eta: float) -> Any:
        y = engine.gradient_step(x, problem.counts, weights, ev, lam_h=lam_h, lam_c=lambdas[1], eta=eta, xp=xp, **terms)
        return engine.tv_prox(y, eta * lambdas[2], params.n_tv, method=params.tv_method, nonneg=True, xp=xp)

    schedule = step_schedule(params.step)
    x = problem.counts
    ev = objective(x)
    rows = [(0, ev.haadf, ev.poisson, ev.tv, ev.total, math.nan, 0)]
    shrink, rises, stop_reason = 1.0, 0, "n_iter"
    bar = _progress_bar(params.n_iter) if progress else None
    try:
        for k in range(params.n_iter):
            eta = shrink * float(schedule(k))
            if not (math.isfinite(eta) and eta > 0):
                raise ValueError(f"the step schedule returned {eta!r} at iteration {k}; it must give finite steps > 0")
            backtracks = 0
            while True:
                x_new = step_from(x, ev, eta)
                ev_new = objective(x_new)
                improved = ev_new.total <= ev.total
                if not params.backtracking or improved or backtracks == params.max_backtracks:
                    break
                backtracks += 1
                eta *= params.backtrack_factor
                shrink *= params.backtrack_factor
            rows.append((k + 1, ev_new.haadf, ev_new.poisson, ev_new.tv, ev_new.total, eta, backtracks))
            rises = 0 if improved else rises + 1
            _check_divergence(ev_new, rows, eta, k + 1, rises, params)
            change = abs(ev.total - ev_new.total) / max(abs(ev.total), 1e-30)
            x, ev = x_new, ev_new
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{ev.total:.5g}", refresh=False)
            if callback is not None:
                state = IterationState(k + 1, x, ev.haadf, ev.poisson, ev.tv, ev.total, eta)
                if callback(k + 1, state) is True:
                    stop_reason = "callback"
                    break
            if change < params.tol:
                stop_reason = "tol"
                break
    finally:
        if bar is not None:
            bar.close()

    back = problem.input_xp, problem.input_device
    return FusionResult(
        maps=convert(x, *back),
        haadf_model=convert(haadf_model(ev.x_pow_m1 * x, weights, xp), *back),
        history=_history(rows),
        params=params.replace(lambda_haadf=lam_h),
        n_iter=len(rows) - 1,
        converged=stop_reason == "tol",
        stop_reason=stop_reason,
        elements=problem.elements,
        z=problem.z,
        weights=weights_tuple,
        scale=problem.scale,
        engine=engine.name,
    )


def _history(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(_COLUMNS)).set_index("iteration")


def _check_divergence(ev: Evaluation, rows: list[tuple], eta: float, k: int, rises: int, params: FusionParams) -> None:
    start = rows[0][4]
    patience = params.divergence_patience
    recent = [row[4] for row in rows[-patience:]]
    if not math.isfinite(ev.total):
        why = f"the objective became {ev.total} at iteration {k}"
    elif patience and rises >= patience and ev.total > start:
        why = f"the objective rose for {rises} iterations in a row, to {ev.total:.6g} (start {start:.6g})"
    elif patience and k >= patience and min(recent) > start:
        why = f"the objective stayed above its start {start:.6g} for {patience} iterations (now {ev.total:.6g})"
    else:
        return
    raise FusionDivergedError(
        f"fusion diverged: {why} with step size {eta:g}. Use a smaller step "
        f"(e.g. FusionParams(step={eta / 4:g})), a decaying schedule, or backtracking=True",
        iteration=k,
        step=eta,
        history=_history(rows),
    )


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fusex", unit="it")
