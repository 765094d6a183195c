"""Time fusex against the reference package on the same input, same run.

Prints milliseconds per outer iteration for ``multimodal-fusion`` 0.6.0 and
for fusex (with `FusionParams.published`, so both compute the same thing) on
each requested backend, the speed-up, and the largest per-element relative L2
difference of the results.

    python scripts/compare_reference.py --size 512 --iterations 10
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

import fusex
from fusex.datasets import phantom


def _time_reference(sample, n_iter: int) -> tuple[float, np.ndarray]:
    from multimodal_fusion import DataFusion

    ref = DataFusion(list(sample.elements))
    ref.load_chemical_maps({e: m.copy() for e, m in zip(sample.elements, sample.maps)})
    ref.load_haadf(sample.haadf.copy())
    with contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        ref.run(nIter=n_iter, plot_images=False, plot_convergence=False)
        elapsed = time.perf_counter() - start
    return elapsed / n_iter, np.stack([ref.get_results()[e] for e in sample.elements])


def _time_fusex(sample, n_iter: int, backend: str | None, repeats: int) -> tuple[float, np.ndarray]:
    params = fusex.FusionParams.published(n_iter=n_iter)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, backend=backend)
        best = min(best, time.perf_counter() - start)
    return best / n_iter, res.maps


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="numpy", help="comma-separated fusex backends")
    args = parser.parse_args()
    sample = phantom((args.size, args.size), dose=3.0, seed=0)
    ref_time, ref_maps = _time_reference(sample, args.iterations)
    print(f"3 x {args.size} x {args.size} float32, {args.iterations} outer iterations, published parameters")
    print(f"{'implementation':<28}{'ms / iteration':>16}{'speed-up':>10}{'max rel. L2 diff':>18}")
    print(f"{'multimodal-fusion 0.6.0':<28}{1e3 * ref_time:>16.1f}{1.0:>10.1f}{'-':>18}")
    for backend in args.backends.split(","):
        t, maps = _time_fusex(sample, args.iterations, backend, args.repeats)
        flat_diff, flat_ref = (maps - ref_maps).reshape(3, -1), ref_maps.reshape(3, -1)
        diff = np.max(np.linalg.norm(flat_diff, axis=1) / np.linalg.norm(flat_ref, axis=1))
        print(f"{'fusex ' + backend:<28}{1e3 * t:>16.1f}{ref_time / t:>10.1f}{diff:>18.2e}")


if __name__ == "__main__":
    main()
