"""fusex's exceptions: one base class, so that a caller can catch everything fusex raises on purpose."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

__all__ = [
    "BackendUnavailableError",
    "FusexError",
    "InsufficientMemoryError",
    "OutputExistsError",
    "UnreadableFileError",
]


class FusexError(Exception):
    """Base class of the errors fusex raises itself."""


class BackendUnavailableError(FusexError, ImportError):
    """A requested backend, engine or device cannot be used on this machine."""


class InsufficientMemoryError(FusexError, MemoryError):
    """A fusion needs more memory than the compute device has available; raised before it allocates.

    Parameters
    ----------
    message : str
        What was to be solved, the memory needed and available, and what to change.
    needed, available : int
        Estimated bytes needed and bytes available (see `fusex.memory`).
    """

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the byte counts when the error crosses processes (dask workers pickle it).
        return functools.partial(type(self), needed=self.needed, available=self.available), self.args


class UnreadableFileError(FusexError, OSError, ValueError):
    """A file that is missing a part, truncated, corrupt, or not in the format its suffix promises.

    It is an `OSError` (the file let the reader down) and a `ValueError` (its
    content is wrong), so either ``except`` clause catches it.

    Parameters
    ----------
    path : str or os.PathLike
        The file; the message starts with it.
    reason : str
        What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot read {path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason)


class OutputExistsError(FusexError, FileExistsError):
    """`fusex.io.save` refused to replace what is at its target path.

    Parameters
    ----------
    path : str or os.PathLike
        The target.
    reason : str
        What is there and how to proceed.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"will not replace {path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.reason)
