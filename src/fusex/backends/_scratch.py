"""Scratch memory that a compiled engine keeps for the length of one solve."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


class Scratch:
    """One growing buffer per (role, dtype), handed out as views of the requested shape.

    A batched solve asks for buffers of several sizes (the whole batch, the
    items that backtrack, the items still running); keeping one buffer per
    role at the largest size seen bounds the memory at one set of buffers.

    Parameters
    ----------
    empty : callable
        The array library's ``empty(shape, dtype=...)``.
    """

    def __init__(self, empty: Callable[..., Any]) -> None:
        self._empty = empty
        self.arrays: dict[tuple[str, str], Any] = {}

    def get(self, role: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """Return a C-contiguous buffer of ``shape`` for ``role`` (contents undefined)."""
        key = (role, str(dtype))
        size = math.prod(shape)
        if key not in self.arrays or self.arrays[key].size < size:
            self.arrays.pop(key, None)  # release the smaller buffer before allocating the larger one
            self.arrays[key] = self._empty((size,), dtype=dtype)
        return self.arrays[key][:size].reshape(shape)
