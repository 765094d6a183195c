"""fusex: fused multi-modal electron microscopy.

Makes sparse elemental maps (X-EDS, EELS) consistent with the simultaneously
recorded HAADF image, on NumPy, CuPy or torch.
"""

import importlib
from typing import Any

from . import datasets
from ._version import __version__ as __version__
from ._xp import BackendUnavailableError
from .api import fuse, tv_denoise
from .elements import atomic_number
from .errors import FusexError, OutputExistsError, UnreadableFileError
from .labeled import to_input_units
from .params import ConstantStep, ExponentialDecay, FusionParams, PolynomialDecay
from .result import FusionDivergedError, FusionResult
from .solver import IterationState
from .tune import TuneResult, tune

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


def __getattr__(name: str) -> Any:
    # fusex.xarray, the deprecated alias of fusex.labeled, is imported (and warns) only when used
    if name == "xarray":
        return importlib.import_module(".xarray", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
