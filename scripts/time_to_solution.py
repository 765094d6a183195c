"""Time to a converged fusion: fusex's accelerated solver against its plain one and the reference package.

For each input, in one run:

1. a reference objective value, the lowest objective of a long run of the
   accelerated solver (``--reference-iterations``, 30 TV inner iterations);
2. for each solver, one run without early stopping, timed per iteration by a
   callback: the time, outer iterations and TV inner iterations until the
   objective is within ``--gap`` (relative) of the reference value;
3. the default fusion as a user runs it (stopping by ``tol``): its time,
   iterations, stop reason and the gap it stops at;
4. the reference package ``multimodal-fusion`` 0.6.0 running its own 50
   iterations on the same input (``--no-reference`` leaves it out);
5. last, `fusex.tune` with its defaults on a 3 x 256 x 256 phantom over one
   default fusion of the same counts (``--tune-size``).

The solvers are ``plain`` (proximal gradient with a unit step, cold TV
starts, 15 inner iterations and the HAADF model refitted every 10th
iteration: the solver of fusex until the accelerated one came) and
``fista`` (the defaults: FISTA with gradient restart, Lipschitz step, warm
TV duals, 10 inner iterations, the HAADF model refitted every iteration,
iterations started at the smoothed counts) and ``fista-counts`` (the same
started at the counts, as ``plain`` and fusex before ``FusionParams.init``).
Both minimize the same objective (the other defaults are shared), so the
same reference value serves both.  Times include the set-up
of each run and exclude numba's compilation (one warm-up run first).

    python scripts/time_to_solution.py --size 512
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import time
from dataclasses import dataclass

import numpy as np

import fusex
from fusex.backends import numba_engine
from fusex.datasets import phantom

SOLVERS = {
    "plain": {"accel": "none", "tv_warm": False, "step": 1.0, "n_tv": 15, "refit_every": 10, "init": "counts"},
    "fista": {},
    "fista-counts": {"init": "counts"},
}


@dataclass
class Run:
    """What one solver took to reach the gap (NaN where it never did)."""

    seconds: float
    iterations: int
    inner: int
    last_gap: float


class _InnerCounter:
    """Count the TV inner iterations of the numba engine (calls times ``n_iter``), whichever solver step made them."""

    def __init__(self) -> None:
        self.total = 0
        self._original = numba_engine.NumbaEngine.tv_prox

    def __enter__(self) -> _InnerCounter:
        counter = self

        def counted(engine, f, weight, n_iter, **kwargs):
            counter.total += n_iter
            return counter._original(engine, f, weight, n_iter, **kwargs)

        numba_engine.NumbaEngine.tv_prox = counted
        return self

    def __exit__(self, *exc: object) -> None:
        numba_engine.NumbaEngine.tv_prox = self._original


def _fuse(sample, params: fusex.FusionParams, callback=None) -> fusex.FusionResult:
    return fusex.fuse(
        sample.haadf, sample.maps, elements=sample.elements, params=params, engine="numba", callback=callback
    )


def _to_gap(sample, params: fusex.FusionParams, best: float, gap: float) -> Run:
    """Run without early stopping; return the time, iterations and inner iterations to ``gap``."""
    marks: list[tuple[float, int]] = []
    with _InnerCounter() as inner:
        start = time.perf_counter()

        def mark(k, state):
            marks.append((time.perf_counter() - start, inner.total))
            return (state.total - best) / abs(best) < gap

        result = _fuse(sample, params.replace(tol=0.0), mark)
    gaps = (result.history.total.to_numpy()[1:] - best) / abs(best)
    reached = np.flatnonzero(gaps < gap)
    if not reached.size:
        return Run(float("nan"), -1, -1, float(gaps[-1]))
    k = int(reached[0])
    return Run(marks[k][0], k + 1, marks[k][1], float(gaps[k]))


def _reference_package(sample, n_iter: int) -> float:
    from multimodal_fusion import DataFusion

    ref = DataFusion(list(sample.elements))
    ref.load_chemical_maps({e: m.copy() for e, m in zip(sample.elements, sample.maps, strict=True)})
    ref.load_haadf(sample.haadf.copy())
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        ref.run(nIter=n_iter, plot_images=False, plot_convergence=False)
        return time.perf_counter() - start


def measure(name: str, sample, args: argparse.Namespace) -> None:
    """Print the table of one input."""
    _fuse(sample, fusex.FusionParams(n_iter=3))  # compile outside the timings
    long = fusex.FusionParams(tol=0.0, n_iter=args.reference_iterations, n_tv=30)
    best = float(_fuse(sample, long).history.total.min())
    cap = fusex.FusionParams(n_iter=args.cap)
    runs = {label: _to_gap(sample, cap.replace(**changes), best, args.gap) for label, changes in SOLVERS.items()}
    start = time.perf_counter()
    default = _fuse(sample, fusex.FusionParams())
    default_seconds = time.perf_counter() - start
    default_gap = (default.history.total.iloc[-1] - best) / abs(best)
    shape = "x".join(str(n) for n in sample.maps.shape)
    print(
        f"\n{name}: {shape} {sample.maps.dtype}, gap {args.gap:g} to the best of {args.reference_iterations} iterations"
    )
    print(f"{'solver':<14}{'seconds':>10}{'iterations':>12}{'TV inner':>10}{'gap':>10}")
    for label, run in runs.items():
        print(f"{label:<14}{run.seconds:>10.3f}{run.iterations:>12d}{run.inner:>10d}{run.last_gap:>10.1e}")
    print(
        f"default fusion (tol={fusex.FusionParams().tol:g}): {default_seconds:.3f} s, {default.n_iter} iterations, "
        f"stopped by {default.stop_reason}, gap {default_gap:.1e}"
    )
    fista = runs["fista"].seconds
    plain = runs["plain"].seconds
    if math.isnan(plain):
        print(f"plain did not reach {args.gap:g} within {args.cap} iterations")
    else:
        print(f"fista vs plain to {args.gap:g}: {plain / fista:.1f}x faster")
    if args.reference:
        ref = _reference_package(sample, 50)
        print(
            f"multimodal-fusion 0.6.0, 50 iterations: {ref:.2f} s; fista to {args.gap:g} is {ref / fista:.1f}x faster"
        )


def measure_tune(size: int) -> None:
    """Print `fusex.tune`'s time (defaults: search, per-element check, refit) over one default fusion's, in one run."""
    sample = phantom((size, size), dose=3.0, seed=0)
    counts = np.round(sample.maps)
    fusex.tune(sample.haadf[:32, :32], counts[:, :32, :32], elements=sample.elements, engine="numba")  # compile
    start = time.perf_counter()
    fusex.fuse(sample.haadf, counts, elements=sample.elements, engine="numba")
    fusion = time.perf_counter() - start
    start = time.perf_counter()
    fusex.tune(sample.haadf, counts, elements=sample.elements, engine="numba")
    search = time.perf_counter() - start
    ratio = search / fusion
    print(f"\ntune at 3x{size}x{size}, 3 counts: {search:.2f} s; one default fusion {fusion:.3f} s; {ratio:.0f}x")


def main() -> None:
    """Parse the options and measure each input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="side of the first phantom (3 x size x size)")
    parser.add_argument("--gap", type=float, default=1e-4, help="relative objective gap to reach")
    parser.add_argument("--cap", type=int, default=600, help="most iterations a solver gets to reach it")
    parser.add_argument("--reference-iterations", type=int, default=1000)
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="skip multimodal-fusion")
    parser.add_argument(
        "--second",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure fusex.datasets.phantom() at its defaults (another size and dose)",
    )
    parser.add_argument("--tune-size", type=int, default=256, help="side of tune's phantom (0: skip tune)")
    args = parser.parse_args()
    measure("phantom, 3 counts", phantom((args.size, args.size), dose=3.0, seed=0), args)
    if args.second:
        measure("fusex.datasets.phantom() defaults", phantom(seed=0), args)
    if args.tune_size:
        measure_tune(args.tune_size)


if __name__ == "__main__":
    main()
