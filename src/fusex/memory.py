r"""How much memory a fusion needs, how much the device has free, and how many items to solve at once.

A batch item of ``E`` maps of ``H x W`` pixels in a dtype of ``s`` bytes needs
about :math:`(a E + b)\, H W s` bytes while it is solved; :math:`a` and
:math:`b` depend on the engine (`ARRAYS_PER_ITEM`) and were measured with
``scripts/memory.py`` (see the Memory section of the docs).  When a batch
does not fit in the free memory of the compute device, `fusex.fuse` solves it
in minibatches of `plan_batch_size` items.
"""

from __future__ import annotations

import math
import operator
from types import ModuleType
from typing import Any

import array_api_compat

__all__ = ["ARRAYS_PER_ITEM", "CPU_CHUNK_BYTES", "bytes_per_item", "free_bytes", "plan_batch_size"]

ARRAYS_PER_ITEM: dict[str, tuple[float, float]] = {
    "numba": (12.0, 4.0),
    "cupy": (15.0, 5.0),
    "cupy-kernels-on-torch": (15.0, 5.0),
    "generic": (24.0, 6.0),
}
"""Peak working memory of one item, ``(a, b)``: ``a`` arrays of ``(H, W)`` per map plus ``b`` per item.

Rounded up from measurements (the device copy of the inputs and the result included): numba
11.4 and generic NumPy/torch 22 arrays per map on 3 x 2048 x 2048; CuPy 15 on 3 x 4096 x 4096."""

CPU_CHUNK_BYTES = 16 * 2**20
"""Largest ``(n, E, H, W)`` stack solved at once on a CPU.  The generic engine's many short-lived
temporaries are then recycled by the allocator instead of being mapped and zeroed afresh by the
kernel on every operation (a 50 MB stack ran several times slower per item than 3 MB ones), and
the numba engine's working set stays closer to the caches (64 items of 3 x 256 x 256 at once
ran about 20 % slower than chunks of 4 to 16)."""

_USABLE = 0.8  # leave room for the allocator's fragmentation and the caller's other arrays
_CUDA_GRID_Z = 65535  # the CUDA kernels put the maps of a batch on the grid's z axis


def bytes_per_item(engine: str, n_elements: int, height: int, width: int, itemsize: int) -> int:
    """Estimated peak bytes one batch item needs while it is solved on ``engine``."""
    per_map, per_item = ARRAYS_PER_ITEM.get(engine, ARRAYS_PER_ITEM["generic"])
    return math.ceil((per_map * n_elements + per_item) * height * width * itemsize)


def free_bytes(xp: ModuleType, device: Any) -> int | None:
    """Free memory of the compute device in bytes, counting the array library's cached blocks; None if unknown."""
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        with device:
            free, _ = cupy.cuda.runtime.memGetInfo()
        return int(free + cupy.get_default_memory_pool().free_bytes())
    if array_api_compat.is_torch_namespace(xp) and getattr(device, "type", None) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return _host_available()


def _host_available() -> int | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def plan_batch_size(
    n_items: int,
    shape: tuple[int, int, int],
    itemsize: int,
    engine: str,
    xp: ModuleType,
    device: Any,
    batch_size: int | None = None,
) -> int:
    """Return how many of ``n_items`` items of ``shape = (E, H, W)`` to solve at once.

    An explicit ``batch_size`` is used as given (at most ``n_items``, and on the
    CUDA engines at most 65535 maps, the grid's limit).
    Otherwise the items that fit in 80 % of the device's free memory, and on
    a CPU at most `CPU_CHUNK_BYTES` of maps per stack.
    """
    if batch_size is not None:
        try:
            size = -1 if isinstance(batch_size, bool) else operator.index(batch_size)
        except TypeError:
            size = -1
        if size < 1:
            raise ValueError(
                f"`batch_size` must be an integer >= 1 or None (chosen from free memory), got {batch_size!r}"
            )
        if engine.startswith("cupy"):
            size = min(size, max(1, _CUDA_GRID_Z // shape[0]))
        return min(size, n_items)
    n_elements, height, width = shape
    size = n_items
    free = free_bytes(xp, device)
    if free is not None:
        size = min(size, max(1, int(_USABLE * free) // bytes_per_item(engine, n_elements, height, width, itemsize)))
    if engine.startswith("cupy"):
        size = min(size, max(1, _CUDA_GRID_Z // n_elements))
    elif not _on_gpu(xp, device):
        size = min(size, max(1, CPU_CHUNK_BYTES // (n_elements * height * width * itemsize)))
    return size


def _on_gpu(xp: ModuleType, device: Any) -> bool:
    return array_api_compat.is_cupy_namespace(xp) or getattr(device, "type", None) == "cuda"
