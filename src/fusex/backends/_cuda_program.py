"""What NVRTC compiles for the CUDA engine: the source `kernels.cu`, its options and its kernels' names.

The CUDA engine (`fusex.backends.cupy_engine`) and the CPU test that compiles
the same source through NVRTC (``tests/test_cuda_source.py``) both read this
module, so that what the test compiles is what a GPU runs.  It needs neither
CuPy nor a GPU.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from ._compiled import DUAL_FLOOR

__all__ = ["CTYPES", "KERNELS", "OPTIONS", "name_expression", "name_expressions", "source"]

KERNELS = ("tv_dual_step", "tv_primal", "guided_dual_step", "guided_primal", "evaluate", "gradient_step")
"""The template kernels of `kernels.cu`, each instantiated for every type of `CTYPES`."""

CTYPES = {"float32": "float", "float64": "double"}
"""The C type that each supported dtype (by NumPy name) instantiates the kernels with."""

OPTIONS = ("-std=c++14", f"-DFUSEX_DUAL_FLOOR={DUAL_FLOOR!r}")
"""NVRTC options (CuPy adds the target architecture)."""


@cache
def source() -> str:
    """Return the CUDA C++ source, shipped with the package as ``fusex/backends/kernels.cu``."""
    return files(__package__).joinpath("kernels.cu").read_text(encoding="utf-8")


def name_expression(kernel: str, ctype: str) -> str:
    """Return the name expression of ``kernel`` instantiated for ``ctype``, e.g. ``"tv_primal<float>"``."""
    return f"{kernel}<{ctype}>"


def name_expressions(ctype: str) -> tuple[str, ...]:
    """Return the name expressions of every kernel for ``ctype`` (what one compiled module holds)."""
    return tuple(name_expression(kernel, ctype) for kernel in KERNELS)
