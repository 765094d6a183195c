"""One fixture over every array backend installed here.

``FUSEX_TEST_BACKENDS=numpy,torch-cpu`` narrows the list; backends that are
not installed, and CUDA backends without a GPU, are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusex._xp import to_numpy

ALL_BACKENDS = ("numpy", "array_api_strict", "torch-cpu", "torch-cuda", "cupy")


@dataclass(frozen=True)
class Backend:
    """An array library and device under test, with helpers to move test data in and out."""

    name: str
    xp: Any
    device: Any
    backend: str

    def asarray(self, a: Any) -> Any:
        from fusex._xp import convert

        return convert(np.asarray(a), self.xp, self.device)

    @staticmethod
    def numpy(a: Any) -> np.ndarray:
        return np.asarray(to_numpy(a))

    def atol(self, dtype: Any = np.float32) -> float:
        return 1e-5 if np.dtype(dtype) == np.float32 else 1e-10


def _make(name: str) -> Backend:
    if name == "numpy":
        import array_api_compat.numpy as xp

        return Backend(name, xp, "cpu", "numpy")
    if name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict")
        return Backend(name, xp, xp.Device("CPU_DEVICE"), "array_api_strict")
    if name.startswith("torch"):
        torch = pytest.importorskip("torch")
        import array_api_compat.torch as xp

        if name == "torch-cuda" and not torch.cuda.is_available():
            pytest.skip("torch-cuda: no CUDA GPU on this machine")
        return Backend(name, xp, torch.device("cuda", 0) if name == "torch-cuda" else torch.device("cpu"), "torch")
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # cupy raises its own runtime error class without a GPU
        pytest.skip("cupy: no CUDA GPU on this machine")
    import array_api_compat.cupy as xp

    return Backend(name, xp, cupy.cuda.Device(0), "cupy")


def _selected() -> list[str]:
    wanted = os.environ.get("FUSEX_TEST_BACKENDS")
    if not wanted:
        return list(ALL_BACKENDS)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = set(names) - set(ALL_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"FUSEX_TEST_BACKENDS names unknown backends {sorted(unknown)}; use {ALL_BACKENDS}")
    return names


@pytest.fixture(params=_selected())
def xp(request: pytest.FixtureRequest) -> Backend:
    """The backend under test (``xp.xp`` is the namespace, ``xp.device`` the device)."""
    return _make(request.param)


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    """A small phantom acquisition in the tutorial's ``.npz`` layout, for the command-line tests."""
    from fusex.datasets import phantom

    sample = phantom((24, 24), seed=4)
    path = tmp_path / "scan.npz"
    np.savez(path, HAADF=sample.haadf, **dict(zip(sample.elements, sample.maps)))
    return path
