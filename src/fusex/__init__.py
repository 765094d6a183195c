"""fusex: fused multi-modal electron microscopy.

Makes sparse elemental maps (X-EDS, EELS) consistent with the simultaneously
recorded HAADF image, on NumPy, CuPy or torch.
"""

from . import datasets
from ._xp import BackendUnavailableError
from .api import fuse, tv_denoise
from .elements import atomic_number
from .params import ConstantStep, ExponentialDecay, FusionParams, PolynomialDecay
from .result import FusionDivergedError, FusionResult
from .solver import IterationState
from .tune import TuneResult, tune

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ConstantStep",
    "ExponentialDecay",
    "FusionDivergedError",
    "FusionParams",
    "FusionResult",
    "IterationState",
    "PolynomialDecay",
    "TuneResult",
    "atomic_number",
    "datasets",
    "fuse",
    "tune",
    "tv_denoise",
]
