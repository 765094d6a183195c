r"""The fitted HAADF model of a solve: gain, offset and smooth background, refitted as the maps improve.

With gain :math:`a`, offset :math:`c` and background :math:`B` the HAADF term reads

.. math::

    \lambda_H \tfrac12 \lVert b_H - c - B - a M(x) \rVert^2
    = \lambda_H \tfrac12 \Bigl\lVert (b_H - c - B) - \sum_e (a w_e) x_e^\gamma \Bigr\rVert^2 ,
    \qquad M(x) = \sum_e w_e x_e^\gamma ,

so the engines keep their kernels: they see the image :math:`b_H - c - B` and
the HAADF weights :math:`a w_e`, and :math:`\lambda_H` and every term of the
objective keep their meaning.  `HaadfFit` holds what the refits need and
rewrites those two on the live state; `refit` updates the objective after
each refit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np

from .._per_item import per_item
from .._xp import to_numpy
from ..backends import Engine
from ..inputs import FusionProblem
from ..operators import HaadfDesign, binomial_smooth, haadf_model
from ..params import FusionParams
from ._live import Live, take_rows
from ._objective import engine_terms, objective

__all__ = ["HaadfFit", "refit"]


@dataclass
class HaadfFit:
    r"""Gain, offset and background of every item of a problem (local item indices), and how to refit them.

    Attributes
    ----------
    raw : array (n, H, W)
        The (normalized) HAADF images :math:`b_H`.
    design : HaadfDesign
        The normal equations' part that does not depend on the maps.
    every : int
        Refit every this many iterations (0: only at the start).
    weights : array (n, E, 1, 1)
        The HAADF weights :math:`w_e` of each item, before the gain enters them.

    """

    raw: Any
    design: HaadfDesign
    every: int
    weights: Any

    @classmethod
    def start(cls, problem: FusionProblem, params: FusionParams, weights: Any) -> HaadfFit | None:
        """Set up the fit for ``problem``; None when the model has nothing to fit (``published()``)."""
        gain = params.haadf_model == "fitted"
        if not gain and params.background is None:
            return None
        xp, haadf = problem.xp, problem.haadf
        modes = params.background_modes if params.background == "smooth" else 0
        design = HaadfDesign(haadf, problem.haadf_mask, modes, gain=gain, xp=xp)
        return cls(haadf, design, params.refit_every, weights)

    @property
    def each_step(self) -> bool:
        """Whether the fit follows every step: refitted at each accelerated step's start and at its end."""
        return self.every == 1

    def due(self, iteration: int) -> bool:
        """Whether to refit before iteration ``iteration`` (0-based; the start's fit is made by the set-up).

        Never when the fit follows `each_step`: the steps refit themselves.
        """
        return self.every > 1 and iteration > 0 and iteration % self.every == 0

    def apply(
        self, live: Live, xp: ModuleType, raw: Any, *, smooth: bool = False, engine: Engine | None = None
    ) -> tuple[np.ndarray, Any, Any]:
        r"""Refit at the live iterate, rewrite its ``weights`` and ``background``; return :math:`a, M(x), c + B`.

        The gains :math:`a` are on the host, one per item.  ``smooth`` fits on the
        iterate smoothed by `fusex.operators.binomial_smooth`: the start's
        iterate is the noisy counts, whose :math:`M(x)` would bias the
        least-squares gain low (noise in a regressor attenuates its coefficient)
        and so inflate the maps.  Otherwise :math:`x^\gamma = x \cdot x^{\gamma-1}` comes from the
        live evaluation, and an ``engine`` with its own pass forms :math:`M` and the fit's moments in it,
        from ``raw``, the live items' rows of `raw`.
        """
        weights = take_rows(self.weights, live.items, xp)
        if smooth:
            x = binomial_smooth(live.x, xp)
            model = haadf_model(x ** per_item(live.values["gamma"], x, xp), weights, xp)
            a, background = self.design.fit(model, live.items)
        elif hasattr(engine, "haadf_moments"):
            model, *moments = engine.haadf_moments(live.x, live.ev.x_pow_m1, weights, raw, live.mask, xp=xp)
            a, background = self.design.fit(model, live.items, tuple(moments))
        else:
            model = haadf_model(live.x * live.ev.x_pow_m1, weights, xp)
            a, background = self.design.fit(model, live.items)
        live.background = background
        live.weights = per_item(a, weights, xp) * weights
        return a, model, background


def refit(live: Live, fit: HaadfFit, engine: Engine, xp: Any, *, smooth: bool = False) -> None:
    r"""Refit the HAADF model's gain, offset and background at the live iterate, and update the objective.

    Each refit minimizes the objective over them exactly, at fixed maps, so
    the objective never rises at a refit (see ``docs/theory.md``).  Only the
    HAADF term changes: its residual :math:`r = m(b_H - c - B - aM)` is formed
    from the new fit and :math:`x^\gamma = x \cdot x^{\gamma-1}` of the last
    evaluation, so a refit costs a pass over the maps, not an evaluation
    (the numba engine's kernels make it two passes in all).
    The start's fit (``smooth``) is fitted on a smoothed iterate and
    evaluated in full.
    """
    raw = take_rows(fit.raw, live.items, xp)
    a, model, background = fit.apply(live, xp, raw, smooth=smooth, engine=engine)
    if smooth:
        live.haadf = raw - background
        terms = engine_terms(live.values, live.direction)
        live.ev = engine.evaluate(live.x, live.haadf, live.counts, live.weights, xp=xp, mask=live.mask, **terms)
    else:
        if hasattr(engine, "haadf_residual"):
            live.haadf, residual, squares = engine.haadf_residual(raw, background, model, a, live.mask, xp=xp)
        else:
            live.haadf = raw - background
            residual = live.haadf - per_item(a, model, xp) * model
            if live.mask is not None:
                squares = xp.sum(live.mask * residual * residual, axis=(-2, -1))
                residual = live.mask * residual
            else:
                squares = xp.sum(residual * residual, axis=(-2, -1))
            squares = np.asarray(to_numpy(squares), dtype=np.float64)
        live.ev = replace(live.ev, haadf=0.5 * squares, residual=residual)
    live.total = objective(live.ev, live.values)
