"""How far each backend is from the memory-bandwidth limit of this machine.

Measures the streaming bandwidth (a parallel copy on the CPU, a device copy on
the GPU), then the time of one outer fusion iteration per backend, and prints
both next to the time the iteration's unavoidable memory traffic would take at
that bandwidth.

Unavoidable traffic, in bytes per pixel and element (float32):

* each TV dual iteration reads the map and two dual iterates of two
  components and writes one: (1 + 4 + 2) x 4 = 28 B (20 B without momentum);
* the final primal image of the prox: read map and dual, write image: 16 B;
* gradient step: read x and the counts, write y: 12 B;
* cost terms at the new iterate: read x and the counts: 8 B;

plus the HAADF image (read twice per iteration).  The time per iteration is
the slope between runs of two lengths, so set-up, conversion and compilation
are excluded.

With ``--prox`` it also times the TV prox alone on the CPU (the numba engine,
warm duals, ``--n-tv`` iterations, the fastest of ``--repeats`` calls) against
its own unavoidable traffic, ``n_tv`` x 28 B plus 16 B per pixel: its tiles keep
each band of rows in cache for several dual iterations, so it can run below
that limit.

    python scripts/roofline.py --size 1024 --backends numba,numpy
    python scripts/roofline.py --size 2048 --backends cupy,torch-cuda
    python scripts/roofline.py --size 512 --n-tv 10 --backends numba --prox
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import fusex
from fusex._xp import convert, resolve_backend
from fusex.backends.generic import GENERIC
from fusex.datasets import phantom
from fusex.inputs import prepare
from fusex.solver import solve


def traffic_bytes(size: int, elements: int, n_tv: int, momentum: bool = True, itemsize: int = 4) -> float:
    """Unavoidable bytes moved by one outer iteration (see the module docstring)."""
    per_dual = (7 if momentum else 5) * itemsize
    per_pixel_element = n_tv * per_dual + 4 * itemsize + 3 * itemsize + 2 * itemsize
    return size * size * (elements * per_pixel_element + 2 * itemsize)


def cpu_bandwidth(n_bytes: int = 1 << 28) -> float:
    """Streaming copy bandwidth in bytes/s (read + write counted) with all numba threads."""
    import numba

    @numba.njit(parallel=True, cache=True)
    def copy(src: np.ndarray, dst: np.ndarray) -> None:
        for i in numba.prange(src.shape[0]):
            dst[i] = src[i]

    src = np.ones(n_bytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    copy(src, dst)
    best = min(_timed(lambda: copy(src, dst), lambda: None) for _ in range(7))
    return 2 * src.nbytes / best


def gpu_bandwidth(xp: Any, device: Any, sync: Any, n_bytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    src = convert(np.ones(n_bytes // 4, dtype=np.float32), xp, device)
    dst = xp.empty_like(src)
    dst[...] = src
    best = min(_timed(lambda: dst.__setitem__(Ellipsis, src), sync) for _ in range(10))
    return 2 * n_bytes / best


def _timed(fn: Any, sync: Any) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def _backend(name: str) -> tuple[str, Any, Any, Any]:
    """(fuse backend, namespace, device, synchronize) for a backend label."""
    if name == "torch-cuda":
        import torch

        xp, dev = resolve_backend("torch", "cuda", None, None)
        return "torch", xp, dev, torch.cuda.synchronize
    if name == "torch-cpu":
        xp, dev = resolve_backend("torch", "cpu", None, None)
        return "torch", xp, dev, lambda: None
    if name == "cupy":
        import cupy

        xp, dev = resolve_backend("cupy", None, None, None)
        return "cupy", xp, dev, cupy.cuda.get_current_stream().synchronize
    xp, dev = resolve_backend(name, None, None, None)
    return name, xp, dev, lambda: None


def time_per_iteration(name: str, size: int, elements: int, n_tv: int, iterations: int, repeats: int) -> float:
    """Seconds per outer iteration: slope between runs of 2 and 2 + ``iterations`` iterations.

    A name ending in ``-generic`` (``torch-cuda-generic``, ``cupy-generic``) runs the generic
    array-API code on that backend instead of its compiled kernels, to show what they gain.
    """
    generic = name.endswith("-generic")
    backend, xp, dev, sync = _backend(name.removesuffix("-generic"))
    lattice = {"Sr": [(0.0, 0.0)], "Ti": [(0.5, 0.5)], "O": [(0.5, 0.0)], "Ba": [(0.25, 0.25)], "Zr": [(0.75, 0.75)]}
    sample = phantom((size, size), lattice=dict(list(lattice.items())[:elements]), dose=3.0, seed=0)
    haadf, maps = convert(sample.haadf, xp, dev), convert(sample.maps, xp, dev)

    def run(n: int) -> float:
        params = fusex.FusionParams(n_iter=n, n_tv=n_tv, tol=0.0)
        if generic:
            problem = prepare(
                haadf, maps, elements=sample.elements, z=None, normalize="minmax", backend=None, device=None
            )
            return _timed(lambda: solve(problem, params, GENERIC), sync)
        where = {"engine": "numba"} if backend == "numba" else {"backend": backend}
        return _timed(lambda: fusex.fuse(haadf, maps, elements=sample.elements, params=params, **where), sync)

    run(2)  # compile / warm up
    short = min(run(2) for _ in range(repeats))
    long = min(run(2 + iterations) for _ in range(repeats))
    return (long - short) / iterations


def prox_seconds(size: int, elements: int, n_tv: int, repeats: int) -> float:
    """Seconds of one warm numba TV prox of ``elements`` maps of ``size`` x ``size`` (best of ``repeats``)."""
    import array_api_compat.numpy as npx

    from fusex.backends.numba_engine import NumbaEngine

    maps = phantom((size, size), dose=3.0, seed=0).maps[:elements]
    maps = np.ascontiguousarray(maps / maps.max(), dtype=np.float32)
    dual = np.zeros((maps.shape[0], 2, size, size), np.float32)
    engine = NumbaEngine()
    dual = engine.tv_prox(maps, 0.05, n_tv, xp=npx, dual=dual)[1]  # compile, and a dual as a fusion's would be

    def once() -> float:
        start = time.perf_counter()
        engine.tv_prox(maps, 0.05, n_tv, xp=npx, dual=dual)
        return time.perf_counter() - start

    return min(once() for _ in range(max(repeats, 5)))


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--elements", type=int, default=3)
    parser.add_argument("--n-tv", type=int, default=15)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--backends",
        default="numba,numpy",
        help="numba, numpy, torch-cpu, torch-cuda, cupy; add -generic to skip kernels",
    )
    parser.add_argument("--prox", action="store_true", help="also time the numba TV prox alone against its limit")
    args = parser.parse_args()
    names = args.backends.split(",")
    need = traffic_bytes(args.size, args.elements, args.n_tv)
    gpu = [n for n in names if n.removesuffix("-generic") in ("cupy", "torch-cuda")]
    bandwidth = {}
    if len(gpu) < len(names) or args.prox:
        bandwidth["cpu"] = cpu_bandwidth()
    if gpu:
        _, xp, dev, sync = _backend(gpu[0])
        bandwidth["gpu"] = gpu_bandwidth(xp, dev, sync)
    print(f"{args.elements} x {args.size} x {args.size} float32, {args.n_tv} TV iterations per outer iteration")
    print(f"unavoidable traffic per outer iteration: {need / 1e9:.3f} GB")
    for where, bw in bandwidth.items():
        print(f"{where} streaming bandwidth: {bw / 1e9:.1f} GB/s -> limit {1e3 * need / bw:.2f} ms per iteration")
    print(f"{'backend':<12}{'ms / iteration':>16}{'limit ms':>10}{'x limit':>9}")
    for name in names:
        seconds = time_per_iteration(name, args.size, args.elements, args.n_tv, args.iterations, args.repeats)
        limit = need / bandwidth["gpu" if name in gpu else "cpu"]
        print(f"{name:<12}{1e3 * seconds:>16.2f}{1e3 * limit:>10.2f}{seconds / limit:>9.2f}")
    if args.prox:
        prox_bytes = args.size * args.size * args.elements * (args.n_tv * 28 + 16)
        seconds = prox_seconds(args.size, args.elements, args.n_tv, args.repeats)
        limit = prox_bytes / bandwidth["cpu"]
        print(f"{'TV prox':<12}{1e3 * seconds:>16.2f}{1e3 * limit:>10.2f}{seconds / limit:>9.2f}")


if __name__ == "__main__":
    main()
