"""fusex: fused multi-modal electron microscopy.

Makes sparse elemental maps (X-EDS, EELS) consistent with the simultaneously
recorded HAADF image, on NumPy, CuPy or torch.
"""

from . import datasets
from ._xp import BackendUnavailableError
from .api import fuse, tv_denoise
from .elements import atomic_number
from .errors import FusexError, OutputExistsError, UnreadableFileError
from .params import ConstantStep, ExponentialDecay, FusionParams, PolynomialDecay
from .result import FusionDivergedError, FusionResult
from .solver import IterationState
from .tune import TuneResult, tune
from .xarray import to_input_units

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ConstantStep",
    "ExponentialDecay",
    "FusexError",
    "FusionDivergedError",
    "FusionParams",
    "FusionResult",
    "IterationState",
    "OutputExistsError",
    "PolynomialDecay",
    "TuneResult",
    "UnreadableFileError",
    "atomic_number",
    "datasets",
    "fuse",
    "to_input_units",
    "tune",
    "tv_denoise",
]
