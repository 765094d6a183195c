r"""The proximal-gradient solver for a batch of fusions.

Iteration :math:`k` of item :math:`n` with step :math:`\eta_{k,n}`:

.. math::

    y &= \max\bigl(x_k - \eta_{k,n}(\lambda_H \nabla\Psi_1 + \lambda_C \nabla\Psi_2)(x_k),\ 0\bigr) \\
    x_{k+1} &= \operatorname{prox}_{\eta_{k,n} \lambda_{TV} TV,\ x \ge 0}(y)

Every item keeps its own parameters, step shrink, divergence counters and
stopping test, so an item of a batch follows the path it would follow alone
(up to the rounding of sums); each engine call covers all live items at once.

The modules, by job: ``_loop`` (the iterations, stopping, divergence and
callbacks), ``_step`` (one step with momentum and backtracking, the step
size), ``_objective`` (the weighted objective and the engines' keywords from
the per-item values), ``_live`` (the state of the items still iterating, its
subsets and merges), ``_outcome`` (the items that stopped) and ``_haadf_fit``
(the refits of the HAADF model's gain, offset and background).
"""

from ._loop import IterationState, solve
from ._step import MIN_CURVATURE, STEP_GROWTH

__all__ = ["MIN_CURVATURE", "STEP_GROWTH", "IterationState", "solve"]
