"""The convergence history of a solve: per-iteration cost terms of every item, collected on the host."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["HISTORY_COLUMNS", "History"]

HISTORY_COLUMNS = ("haadf", "poisson", "tv", "total", "step", "backtracks", "tv_iterations")


class History:
    """The per-iteration cost terms of every item, collected as host arrays."""

    def __init__(self) -> None:
        self._blocks: list[tuple[int, np.ndarray, tuple[np.ndarray, ...]]] = []

    def record(self, iteration: int, items: np.ndarray, *columns: np.ndarray) -> None:
        """Add one row per item in ``items`` (columns as in `HISTORY_COLUMNS`)."""
        if len(columns) != len(HISTORY_COLUMNS):
            raise ValueError(f"a history row has {len(HISTORY_COLUMNS)} columns {HISTORY_COLUMNS}, got {len(columns)}")
        self._blocks.append((iteration, items.copy(), tuple(np.array(c, dtype=np.float64) for c in columns)))

    @classmethod
    def join(cls, parts: list[History]) -> History:
        """One history holding the rows of several (of disjoint items)."""
        joined = cls()
        for part in parts:
            joined._blocks.extend(part._blocks)
        return joined

    def frame(self, batched: bool, item: int | None = None) -> pd.DataFrame:
        """Return the history as a table: indexed by ``iteration``, or by ``(item, iteration)`` when ``batched``."""
        items = np.concatenate([b[1] for b in self._blocks])
        iterations = np.concatenate([np.full(len(b[1]), b[0]) for b in self._blocks])
        data = {name: np.concatenate([b[2][c] for b in self._blocks]) for c, name in enumerate(HISTORY_COLUMNS)}
        table = pd.DataFrame({"item": items, "iteration": iterations, **data})
        for count in ("backtracks", "tv_iterations"):
            table[count] = table[count].astype(np.int64)
        if item is not None:
            table = table[table["item"] == item]
        if not batched or item is not None:
            return table.drop(columns="item").set_index("iteration").sort_index()
        return table.set_index(["item", "iteration"]).sort_index()
