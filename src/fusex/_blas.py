"""One BLAS thread while fusex computes on the host, held process-wide across overlapping fusions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["one_blas_thread"]

_LOCK = threading.Lock()
_holders = 0
_limit: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Keep NumPy's BLAS on one thread inside; the previous limit comes back when the last holder leaves.

    The limit is process-wide (``threadpoolctl``), so it is held from the first holder that
    enters to the last that leaves: a fusion that runs alongside another keeps one BLAS thread
    from its input checks to its result, and its sums (OpenBLAS's depend on its thread count)
    are those it gets alone.  Holders may nest.
    """
    global _holders, _limit
    with _LOCK:
        if _holders == 0:
            from threadpoolctl import threadpool_limits

            _limit = threadpool_limits(limits=1, user_api="blas")
        _holders += 1
    try:
        yield
    finally:
        with _LOCK:
            _holders -= 1
            if _holders == 0:
                _limit.restore_original_limits()
                _limit = None
