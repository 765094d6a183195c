"""The generic engine: the array-API code of `fusex.objectives` and `fusex.tv`, on any library and device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import objectives, tv

__all__ = ["GENERIC"]


@dataclass(frozen=True)
class _Functions:
    name: str
    evaluate: Callable[..., objectives.Evaluation]
    gradient_step: Callable[..., Any]
    tv_prox: Callable[..., Any]


GENERIC = _Functions("generic", objectives.evaluate, objectives.gradient_step, tv.tv_prox)
"""The one generic engine object: it keeps no state, so every solve shares it."""
