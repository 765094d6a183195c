"""Fixtures over every array backend installed here: ``backend`` (the library, device and helpers) and ``xp``.

``FUSEX_TEST_BACKENDS=numpy,torch-cpu`` narrows the list; backends that are
not installed, and CUDA backends without a GPU, are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from fusex._xp import resolve_backend, to_numpy
from fusex.backends.registry import library, targets

TARGETS = {target.label: target for target in targets()}
ALL_BACKENDS = tuple(TARGETS)


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

    @property
    def choices(self) -> list[str | None]:
        """``backend=`` values that run each of its engines: on NumPy the compiled default and the generic code."""
        return [None, "numpy"] if self.name == "numpy" else [self.backend]


def _make(name: str) -> Backend:
    target = TARGETS[name]
    lib = library(target.library)
    if not lib.installed():
        pytest.skip(f"{name}: {lib.module} is not installed")
    if not lib.usable(target.device):
        pytest.skip(f"{name}: no CUDA GPU on this machine")
    xp, device = resolve_backend(target.library, target.device, None, None)
    return Backend(name, xp, device, target.library)


def _selected() -> list[str]:
    wanted = os.environ.get("FUSEX_TEST_BACKENDS")
    if not wanted:
        return list(ALL_BACKENDS)
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = set(names) - set(ALL_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"FUSEX_TEST_BACKENDS names unknown backends {sorted(unknown)}; use {ALL_BACKENDS}")
    return names


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` the cases of a ``slow_on(*names)`` test that run on one of the named backends."""
    for item in items:
        mark = item.get_closest_marker("slow_on")
        callspec = getattr(item, "callspec", None)
        if mark is not None and callspec is not None and callspec.params.get("backend") in mark.args:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=_selected())
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend under test: its namespace ``xp``, its ``device`` and helpers to move test data in and out."""
    made = _make(request.param)
    if made.backend == "torch":
        import torch

        # the test arrays are tiny: torch's intra-op threads only add overhead (about half of the torch cases' time)
        torch.set_num_threads(1)
    return made


@pytest.fixture
def xp(backend: Backend) -> ModuleType:
    """The array namespace of the backend under test (the same parameter as `backend` in one test)."""
    return backend.xp


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    """A small phantom acquisition in the tutorial's ``.npz`` layout, for the command-line tests."""
    from fusex.datasets import phantom

    sample = phantom((24, 24), seed=4)
    path = tmp_path / "scan.npz"
    np.savez(path, HAADF=sample.haadf, **dict(zip(sample.elements, sample.maps)))
    return path
