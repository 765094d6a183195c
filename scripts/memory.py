"""Measure the peak memory of a fusion per backend, and the bytes per pixel and element it implies.

Each case runs in a fresh process: the inputs are loaded, the engine is warmed up on a tiny
problem, and a thread samples the resident set size (``/proc/self/statm``) every millisecond
while ``fusex.fuse`` runs; the peak minus the size just before the call is the fusion's working
memory, inputs excluded, result included.  On CUDA backends the library's own peak counter is
used instead (``torch.cuda.max_memory_allocated`` or CuPy's memory pool).

    python scripts/memory.py                       # 3x2048x2048 and 32 x 3x512x512 on the CPU backends
    python scripts/memory.py --backends cupy torch-cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

CASES = {"3x2048x2048": (1, 2048), "32x3x512x512": (32, 512)}
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _measure(backend: str, path: str, n_iter: int) -> dict:
    import fusex

    data = np.load(path)
    haadf, maps = data["haadf"], data["maps"]
    kind = {"numba": (None, None), "numpy": ("numpy", None), "torch": ("torch", "cpu")}
    kind |= {"torch-cuda": ("torch", "cuda"), "cupy": ("cupy", None)}
    name, device = kind[backend]
    params = fusex.FusionParams(n_iter=n_iter, tol=0.0)
    small = fusex.datasets.phantom((32, 32), seed=0)
    fusex.fuse(small.haadf, small.maps, elements=small.elements, params=params, backend=name, device=device)
    gpu = backend in ("torch-cuda", "cupy")
    if gpu:
        return _measure_gpu(backend, haadf, maps, params)
    before, peak, running = _rss(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result = fusex.fuse(haadf, maps, elements=small.elements, params=params, backend=name, device=device)
    running[0] = False
    thread.join()
    peak[0] = max(peak[0], _rss())
    return {"peak": peak[0] - before, "engine": result.engine}


def _measure_gpu(backend: str, haadf: np.ndarray, maps: np.ndarray, params) -> dict:
    import fusex

    if backend == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        h, m = cupy.asarray(haadf), cupy.asarray(maps)
        pool.free_all_blocks()
        before = pool.used_bytes()
        # CuPy keeps no peak counter: a pool callback would slow the run, so sample the pool's total.
        peak, running = [before], [True]

        def sample() -> None:
            while running[0]:
                peak[0] = max(peak[0], pool.total_bytes())
                time.sleep(0.0005)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        result = fusex.fuse(h, m, elements=("Sr", "Ti", "O"), params=params)
        cupy.cuda.get_current_stream().synchronize()
        running[0] = False
        thread.join()
        return {"peak": max(peak[0], pool.total_bytes()) - before, "engine": result.engine}
    import torch

    h, m = torch.as_tensor(haadf, device="cuda"), torch.as_tensor(maps, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fusex.fuse(h, m, elements=("Sr", "Ti", "O"), params=params)
    torch.cuda.synchronize()
    return {"peak": torch.cuda.max_memory_allocated() - before, "engine": result.engine}


def _inputs(items: int, size: int, directory: str) -> str:
    from fusex.datasets import phantom

    sample = phantom((size, size), dose=3.0, seed=0)
    path = os.path.join(directory, f"{items}x{size}.npz")
    np.savez(
        path,
        haadf=np.stack([sample.haadf] * items) if items > 1 else sample.haadf,
        maps=np.stack([sample.maps] * items) if items > 1 else sample.maps,
    )
    return path


def main() -> int:
    """Measure each case and backend in a child process, print a markdown table; return 1 if a case failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["numba", "numpy", "torch"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--n-iter", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], args.n_iter)))
        return 0
    failed = False
    print("| case | backend | engine | peak working memory | bytes per pixel and element |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for case in args.cases:
            items, size = CASES[case]
            path = _inputs(items, size, directory)
            for backend in args.backends:
                command = [sys.executable, __file__, "--n-iter", str(args.n_iter), "--child", backend, path]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                    print(f"| {case} | {backend} | failed: {why} | | |")
                    failed = True
                    continue
                out = json.loads(done.stdout.strip().splitlines()[-1])
                per = out["peak"] / (items * 3 * size * size)
                print(f"| {case} | {backend} | {out['engine']} | {out['peak'] / 2**20:.0f} MiB | {per:.1f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
