r"""How much memory a fusion needs, how much the device has free, and how many items to solve at once.

A batch item of ``E`` maps of ``H x W`` pixels in a dtype of ``s`` bytes needs
about :math:`(a E + b)\, H W s` bytes while it is solved; :math:`a` and
:math:`b` depend on the engine (its record's ``arrays_per_item`` in
`fusex.backends.registry`, collected in `ARRAYS_PER_ITEM`) and were measured
with ``scripts/memory.py`` (see the Memory section of the docs).  When a batch
does not fit in the free memory of the compute device, `fusex.fuse` solves it
in minibatches of `plan_batch_size` items; when not even one item fits,
`plan_batch_size` raises `InsufficientMemoryError` before the solver
allocates its working memory.

On the host, "available" is the least of what the machine has available
(``MemAvailable``), what this process's memory cgroup still allows (cgroup v2
``memory.max`` or v1 ``memory.limit_in_bytes``, less the usage that cannot be
reclaimed, over the cgroup and its ancestors) and what its resource limits
still allow (``RLIMIT_AS``, set by ``ulimit -v``, and ``RLIMIT_DATA``, less
the address space already mapped).
"""

from __future__ import annotations

import importlib
import math
import operator
from pathlib import Path
from types import ModuleType
from typing import Any

from .backends.registry import ENGINES, LIBRARIES, EngineRecord, device_kind, engine_record, library_of
from .errors import InsufficientMemoryError

__all__ = [
    "ARRAYS_PER_ITEM",
    "CPU_CHUNK_BYTES",
    "bytes_per_item",
    "free_bytes",
    "host_available_bytes",
    "plan_batch_size",
]

ARRAYS_PER_ITEM: dict[str, tuple[float, float]] = {
    name: record.arrays_per_item for record in ENGINES for name in dict.fromkeys((*record.reports, record.name))
}
"""Peak working memory of one item, ``(a, b)``: ``a`` arrays of ``(H, W)`` per map plus ``b`` per item.

Keyed by the names engines report (``FusionResult.engine``) and by the ``engine=`` names, from
the registry's records, which give the measurements they are rounded up from."""

CPU_CHUNK_BYTES = 4 * 2**20
"""Largest ``(n, E, H, W)`` stack solved at once on a CPU: the numba engine's passes then run on maps
that stay in the caches.  On the 2-core development machine (2 MB of L2 per core), 20 iterations per
item of a batch of float32 phantoms took, by chunk (best of 2, one run): 3 x 128 x 128, 1.06 ms with
16-21 items against 1.35 ms with all 64; 3 x 256 x 256, 3.9-4.0 ms with 2-5 items against 4.8 ms with
16; 3 x 512 x 512, 14.3 ms one at a time against 21.3 ms with 4; `tune`'s screening of 20 candidates
(10 iterations) 0.90 s in chunks of 4 against 1.46-1.50 s at once.  Small maps gain from the
chunk's item count instead (3 x 64 x 64: 0.33 ms with 64 items, 0.64 ms with 4).  The generic
engine's many short-lived temporaries are recycled by the allocator in such chunks instead of being
mapped and zeroed afresh by the kernel on every operation (a 50 MB stack ran several times slower
per item than 3 MB ones)."""

_USABLE = 0.8  # leave room for the allocator's fragmentation and the caller's other arrays


def bytes_per_item(
    engine: str, n_elements: int, height: int, width: int, itemsize: int, *, masked: bool = False
) -> int:
    """Estimated peak bytes one batch item needs while it is solved on ``engine``.

    ``masked``: the item carries a HAADF pixel mask (saturated pixels left
    out), one more ``(H, W)`` plane of the dtype on the compute device.  An
    engine name the registry does not list is budgeted as the generic engine,
    the most demanding.
    """
    per_map, per_item = _record(engine).arrays_per_item
    return math.ceil((per_map * n_elements + per_item + (1 if masked else 0)) * height * width * itemsize)


def free_bytes(xp: ModuleType, device: Any) -> int | None:
    """Free memory of the compute device in bytes, counting the array library's cached blocks; None if unknown.

    On a CPU this is `host_available_bytes`.
    """
    lib = library_of(xp)
    if _on_gpu(xp, device) and lib is not None and lib.gpu_free_bytes is not None:
        return lib.gpu_free_bytes(importlib.import_module(lib.module), device)
    return host_available_bytes()


def host_available_bytes() -> int | None:
    """Bytes this process can still allocate on the host; None if nothing is known.

    The least of the machine's available memory (psutil's, or ``MemAvailable``
    in ``/proc/meminfo``), the headroom left by the memory cgroup and by the
    ``RLIMIT_AS`` and ``RLIMIT_DATA`` resource limits.
    """
    known = [b for b in (_system_available(), _cgroup_headroom(), _rlimit_headroom()) if b is not None]
    return min(known) if known else None


def _system_available() -> int | None:
    try:
        import psutil
    except ImportError:
        return _status_field(Path("/proc/meminfo"), "MemAvailable")
    return int(psutil.virtual_memory().available)


def _status_field(path: Path, field: str) -> int | None:
    """Return the value of a ``Field:  123 kB`` line of a /proc file, in bytes."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


_CGROUP_FILES = {
    # version: (directory under the root, limit, usage, reclaimable entry of memory.stat)
    2: ("", "memory.max", "memory.current", "inactive_file"),
    1: ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}
_NO_LIMIT = 2**60  # cgroup v1 writes "unlimited" as a huge page-aligned number


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes the process's memory cgroups still allow: the least of limit - (usage - inactive file cache).

    Every level from the process's cgroup (read from ``membership``) up to
    ``root`` counts, since a parent's limit binds its children.  Inactive
    file cache is left out of the usage because the kernel reclaims it before
    it fails an allocation.  None without a limit (or without cgroups).
    """
    try:
        entries = membership.read_text().splitlines()
    except OSError:
        return None
    headrooms = []
    for entry in entries:
        fields = entry.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, path = fields
        if hierarchy == "0" and not controllers:
            version = 2
        elif "memory" in controllers.split(","):
            version = 1
        else:
            continue
        sub, limit_file, usage_file, reclaimable = _CGROUP_FILES[version]
        base = root / sub if sub else root
        group = base / path.lstrip("/")
        if not group.is_dir():  # a cgroup namespace shows the process at its root
            group = base
        for level in (group, *group.parents):
            headroom = _cgroup_level(level, limit_file, usage_file, reclaimable)
            if headroom is not None:
                headrooms.append(headroom)
            if level == base:
                break
    return max(0, min(headrooms)) if headrooms else None


def _cgroup_level(level: Path, limit_file: str, usage_file: str, reclaimable: str) -> int | None:
    try:
        limit_text = (level / limit_file).read_text().strip()
        if limit_text == "max" or int(limit_text) >= _NO_LIMIT:
            return None
        usage = int((level / usage_file).read_text())
    except (OSError, ValueError):
        return None
    try:
        stat = dict(line.split() for line in (level / "memory.stat").read_text().splitlines())
        usage -= int(stat.get(reclaimable, 0))
    except (OSError, ValueError):
        pass
    return int(limit_text) - max(usage, 0)


def _rlimit_headroom() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    headrooms = []
    for limit, field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            # Without /proc the limit itself still bounds what can be allocated.
            used = _status_field(Path("/proc/self/status"), field) or 0
            headrooms.append(max(0, soft - used))
    return min(headrooms) if headrooms else None


def plan_batch_size(
    n_items: int,
    shape: tuple[int, int, int],
    itemsize: int,
    engine: str,
    xp: ModuleType,
    device: Any,
    batch_size: int | None = None,
    *,
    masked: bool = False,
) -> int:
    """Return how many of ``n_items`` items of ``shape = (E, H, W)`` to solve at once.

    An explicit ``batch_size`` is used as given (at most ``n_items``, and on the
    CUDA engines at most 65535 maps, the grid's limit).
    Otherwise the items that fit in 80 % of the device's free memory (at
    least one), and on a CPU at most `CPU_CHUNK_BYTES` of maps per stack.
    ``masked`` items carry a HAADF pixel mask (see `bytes_per_item`).

    Raises
    ------
    InsufficientMemoryError
        If the items to solve at once (one, or the explicit ``batch_size``)
        need more than the device's free memory by `bytes_per_item`; the
        message gives both and what to change.  Nothing has been allocated.
    """
    n_elements, height, width = shape
    per_item = bytes_per_item(engine, n_elements, height, width, itemsize, masked=masked)
    if batch_size is not None:
        try:
            size = -1 if isinstance(batch_size, bool) else operator.index(batch_size)
        except TypeError:
            size = -1
        if size < 1:
            raise ValueError(
                f"`batch_size` must be an integer >= 1 or None (chosen from free memory), got {batch_size!r}"
            )
        size = min(_grid_limit(size, engine, n_elements), n_items)
        _check_fits(size, per_item, shape, itemsize, engine, xp, device, explicit=True)
        return size
    free = _check_fits(1, per_item, shape, itemsize, engine, xp, device, explicit=False)
    size = n_items
    if free is not None:
        size = min(size, max(1, int(_USABLE * free) // per_item))
    size = _grid_limit(size, engine, n_elements)
    if not _on_gpu(xp, device):
        size = min(size, max(1, CPU_CHUNK_BYTES // (n_elements * height * width * itemsize)))
    return size


def _check_fits(
    size: int,
    per_item: int,
    shape: tuple[int, int, int],
    itemsize: int,
    engine: str,
    xp: ModuleType,
    device: Any,
    *,
    explicit: bool,
) -> int | None:
    """Raise `InsufficientMemoryError` unless ``size`` items fit in the free memory; return that memory."""
    free = free_bytes(xp, device)
    needed = size * per_item
    if free is None or needed <= free:
        return free
    gpu = _on_gpu(xp, device)
    where = f"on {device}" if gpu else "on the host"
    dtype = "float64" if itemsize == 8 else "float32"
    what = f"{size} item{'s' if size > 1 else ''} of {' x '.join(map(str, shape))} {dtype} maps"
    advice = []
    if explicit and per_item <= free:
        fit = free // per_item
        advice.append(f"pass batch_size={fit} or fewer (or None, to split the batch into minibatches that fit)")
    elif size == 1:
        advice.append("this is a single item, so minibatches cannot help")
    advice.append("crop the images, or bin them 2 x 2 (a quarter of the memory)")
    if itemsize == 8:
        advice.append("pass float32 inputs (half the memory)")
    advice.extend(_leaner_engines(engine, xp, device))
    if gpu:
        advice.append("free memory on the GPU, use one with more, or fuse on the host (device='cpu')")
    else:
        advice.append(f"or fuse on a GPU with enough free memory ({_gpu_backends()})")
    source = "" if gpu else " (the least of free RAM, the cgroup limit and ulimit -v)"
    raise InsufficientMemoryError(
        f"fusing {what} needs about {_format_bytes(needed)} {where} with the {engine} engine, "
        f"but only {_format_bytes(free)} is available{source}: " + "; ".join(advice),
        needed=needed,
        available=free,
    )


def _leaner_engines(engine: str, xp: ModuleType, device: Any) -> list[str]:
    """Advice to use each engine that runs on these arrays in less memory than ``engine``."""
    lib, kind = library_of(xp), device_kind(xp, device)
    per_map = _record(engine).arrays_per_item[0]
    return [
        f"use engine={other.name!r} (about {other.arrays_per_item[0] / per_map:.0%} of the memory)"
        for other in ENGINES
        if other.applies(lib, kind) and other.arrays_per_item[0] < per_map
    ]


def _gpu_backends() -> str:
    """How to ask for each array library that runs on a GPU, for the advice."""
    return ", or ".join(
        f"backend={lib.name!r}" + ("" if lib.devices == ("cuda",) else " with device='cuda'")
        for lib in LIBRARIES
        if "cuda" in lib.devices
    )


def _format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _on_gpu(xp: ModuleType, device: Any) -> bool:
    return device_kind(xp, device) == "cuda"


def _record(engine: str) -> EngineRecord:
    """Return the registry's record of an engine name; the generic one, the most demanding, for a name it lacks."""
    try:
        return engine_record(engine)
    except ValueError:
        return ENGINES[-1]


def _grid_limit(size: int, engine: str, n_elements: int) -> int:
    """At most as many items as one kernel launch holds maps (``max_maps``), and at least one."""
    max_maps = _record(engine).max_maps
    return size if max_maps is None else min(size, max(1, max_maps // n_elements))
