"""Scratch memory that a compiled engine keeps for the length of one solve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Scratch:
    """Arrays allocated once per (role, shape, dtype) and handed out again on later calls.

    Parameters
    ----------
    empty : callable
        The array library's ``empty(shape, dtype=...)``.
    """

    def __init__(self, empty: Callable[..., Any]) -> None:
        self._empty = empty
        self.arrays: dict[tuple, Any] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """Return the buffer for ``role``, allocating it on first use (contents undefined)."""
        key = (role, tuple(shape), str(dtype))
        if key not in self.arrays:
            self.arrays[key] = self._empty(shape, dtype=dtype)
        return self.arrays[key]
