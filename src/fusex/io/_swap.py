"""Swapping two paths in one step: Linux ``renameat2(RENAME_EXCHANGE)`` through ctypes."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import sys
from collections.abc import Callable

__all__ = ["exchange"]

_AT_FDCWD = -100  # paths relative to the working directory, as for rename(2)
_RENAME_EXCHANGE = 2  # from <linux/fs.h>
# A kernel without the call, or a filesystem without the flag (some network and FUSE ones).
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap what the existing paths ``a`` and ``b`` name (files or folders, same filesystem).

    Returns
    -------
    bool
        True once swapped; False, with nothing changed, where this system or
        filesystem cannot swap in one step.

    Raises
    ------
    OSError
        If the swap is possible here but fails (a missing path, no permission).

    """
    func = _renameat2()
    if func is None:
        return False
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))
