"""Step-size schedules of the proximal-gradient solver."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ConstantStep", "ExponentialDecay", "PolynomialDecay", "StepSchedule", "step_schedule"]


@dataclass(frozen=True)
class ConstantStep:
    r"""Constant step size, :math:`\eta_k = \eta_0`."""

    eta0: float = 1.0

    def __call__(self, k: int) -> float:
        """Return the step size of iteration ``k`` (from 0)."""
        return float(self.eta0)


@dataclass(frozen=True)
class ExponentialDecay:
    r"""Exponentially decaying step size, :math:`\eta_k = \eta_0 e^{-r k}`."""

    eta0: float = 1.0
    rate: float = 0.01

    def __call__(self, k: int) -> float:
        """Return the step size of iteration ``k`` (from 0)."""
        return float(self.eta0 * math.exp(-self.rate * k))


@dataclass(frozen=True)
class PolynomialDecay:
    r"""Polynomially decaying step size, :math:`\eta_k = \eta_0 (\beta k + 1)^{-\alpha}`."""

    eta0: float = 1.0
    alpha: float = 0.5
    beta: float = 1.0

    def __call__(self, k: int) -> float:
        """Return the step size of iteration ``k`` (from 0)."""
        return float(self.eta0 * (self.beta * k + 1.0) ** (-self.alpha))


StepSchedule = float | ConstantStep | ExponentialDecay | PolynomialDecay | Callable[[int], float]


def step_schedule(step: StepSchedule) -> Callable[[int], float]:
    """Return ``step`` as a callable ``k -> eta``."""
    return ConstantStep(float(step)) if isinstance(step, (int, float)) else step
