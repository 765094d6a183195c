"""HDF5 inputs: HyperSpy's own files (``.hspy`` under another suffix) and plain datasets.

The published tutorial's ``Co3O4_Mn3O4.h5`` is the plain layout: one 2-D
dataset per signal, named ``HAADF`` and by element (``Co``, ``Mn``, ``O``),
without calibration.  Files HyperSpy wrote carry ``file_format = "HyperSpy"``
at the root and are read by RosettaSciIO (optional, GPL).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

__all__ = ["HDF5_SUFFIXES", "is_hyperspy_file", "read_hdf5_signals"]

HDF5_SUFFIXES = (".h5", ".hdf5")
"""Suffixes of HDF5 files, whose layout is told from their contents."""


def _optional(module: str, package: str) -> Any:
    """Import an optional package's module, or say which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"this needs {package}: pip install {package}") from exc


def _h5py() -> Any:
    try:
        return importlib.import_module("h5py")
    except ImportError as exc:
        raise ImportError('reading HDF5 files needs h5py: pip install "fusex[io]"') from exc


def is_hyperspy_file(path: str | os.PathLike) -> bool:
    """Whether an HDF5 file was written by HyperSpy (its root says ``file_format = "HyperSpy"``)."""
    with _h5py().File(path, "r") as f:
        tag = f.attrs.get("file_format", b"")
    return (tag.decode() if isinstance(tag, bytes) else str(tag)) == "HyperSpy"


def read_hdf5_signals(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read an HDF5 file as RosettaSciIO-like signal dicts (``data``, ``axes``, ``metadata``).

    HyperSpy's files go through ``rsciio.hspy``; otherwise every 2-D dataset
    becomes a signal titled by its path in the file (``"HAADF"``, ``"maps/Co"``),
    in pixel units.
    """
    if is_hyperspy_file(path):
        return list(_optional("rsciio.hspy", "rosettasciio").file_reader(str(path)))
    found: list[dict[str, Any]] = []
    h5py = _h5py()

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset) and item.ndim == 2:
            found.append({"data": np.asarray(item[()]), "axes": [], "metadata": {"General": {"title": name}}})

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found
