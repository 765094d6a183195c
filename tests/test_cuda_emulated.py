"""The CuPy engine, kernels included, against the generic code without a GPU.

``kernels.cu`` is compiled as C++ for the CPU (``tests/cuda_on_cpu``) and run
behind a NumPy stand-in for CuPy, in a process of its own; the same parity
checks as ``tests/test_cupy_engine.py`` then exercise the engine's launches
and argument lists.  Skipped without a C++20 compiler.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fusex.backends import _cuda_program as program


@pytest.mark.slow  # 13-15 s alone, but its 32-thread warps crawl on a busy 2-core machine (minutes)
def test_the_cuda_engine_matches_the_generic_code_with_its_kernels_run_on_the_cpu(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler (g++)")
    script = Path(__file__).resolve().parent / "cuda_on_cpu" / "parity.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-4000:]
    expected = {program.name_expression(k, c) for k in program.KERNELS for c in program.CTYPES.values()}
    assert set(run.stdout.split()) == expected  # every kernel ran, for each type
