"""Run the CuPy engine's parity checks with its kernels compiled for the CPU (see `fake_cupy`).

Usage: ``python parity.py BUILD_DIR``.  Raises on the first mismatch; prints
the name expressions that were launched, one per line.
"""

import itertools
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import fake_cupy  # noqa: E402

cupy = fake_cupy.install(sys.argv[1])

import array_api_compat.numpy as npx  # noqa: E402
import numpy as np  # noqa: E402

from _engine_cases import (  # noqa: E402
    PRIOR_CASES,
    SHAPES,
    check_evaluate_and_step,
    check_per_item_tv_weights,
    check_prior_prox_and_evaluate,
)
from fusex import tv  # noqa: E402
from fusex.backends.cupy_engine import CupyEngine  # noqa: E402

DTYPES = (np.float32, np.float64)


def tol(dtype):
    # as tests/test_cupy_engine.py
    return {"rtol": 5e-6, "atol": 5e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


for shape, dtype, per_item in itertools.product(SHAPES, DTYPES, (False, True)):
    check_evaluate_and_step(CupyEngine, npx, cupy.asarray, shape, dtype, per_item, tol(dtype))
for shape, dtype in itertools.product(SHAPES, DTYPES):
    check_evaluate_and_step(CupyEngine, npx, cupy.asarray, shape, dtype, True, tol(dtype), masked=True)
check_per_item_tv_weights(CupyEngine, npx, cupy.asarray)
for case, shape, dtype in itertools.product(PRIOR_CASES, SHAPES, DTYPES):
    check_prior_prox_and_evaluate(CupyEngine, npx, cupy.asarray, shape, dtype, case, tol(dtype))

prox_shapes = [(3, 17, 23), (1, 2, 2), (2, 2, 9), (2, 31, 2), (2, 3, 12, 10), (70, 9, 8)]
for shape, dtype, method, nonneg in itertools.product(prox_shapes, DTYPES, ("fgp", "gp"), (True, False)):
    f = cupy.asarray(np.random.default_rng(1).random(shape).astype(dtype) - 0.3)
    for n_iter in (1, 2, 9):
        ours = CupyEngine().tv_prox(f, 0.2, n_iter, method=method, nonneg=nonneg, xp=npx)
        assert ours.dtype == dtype and ours.shape == f.shape
        ref = tv.tv_prox(np.asarray(f), 0.2, n_iter, method=method, nonneg=nonneg, xp=npx)
        np.testing.assert_allclose(ours.get(), ref, **tol(dtype))

# A warm-started TV prox of one map continues the cold one, and the dual it returns is its own:
# the next call on the same engine, which reuses the scratch buffers, leaves it alone.
engine = CupyEngine()
f = cupy.asarray(np.random.default_rng(2).random((1, 16, 16)))
start = cupy.zeros((1, 2, 16, 16))
_, first = engine.tv_prox(f, 0.1, 4, method="gp", xp=npx, dual=start)
kept = first.copy()
second, _ = engine.tv_prox(f, 0.1, 5, method="gp", xp=npx, dual=first)
assert np.array_equal(first, kept) and not np.any(start)
np.testing.assert_allclose(second, tv.tv_prox(np.asarray(f), 0.1, 9, method="gp", xp=npx), rtol=1e-12, atol=1e-12)

print("\n".join(sorted(set(fake_cupy.LAUNCHES))))
