"""Step-size schedules of the proximal-gradient solver."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ConstantStep", "ExponentialDecay", "PolynomialDecay", "StepSchedule", "step_schedule", "step_size"]


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


def step_size(schedule: Callable[[int], Any], k: int) -> float:
    """Return the step of iteration ``k`` from ``schedule`` as a Python float.

    Raises
    ------
    TypeError
        If the schedule returns anything but one real number (None, an
        array, a boolean, ...).
    ValueError
        If it returns a number that is not finite and > 0.

    """
    value = schedule(k)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"FusionParams.step returned {value!r} ({type(value).__name__}) at iteration {k}; "
            "a step schedule must return one number per iteration"
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"FusionParams.step returned {value!r} at iteration {k}; it must give finite steps > 0")
    return float(value)
