"""The CUDA C source compiles with NVRTC (no GPU needed; skipped without NVIDIA's NVRTC library)."""

import ctypes
import importlib.util
from pathlib import Path

import pytest

from fusex.backends._cuda_source import GUIDED_KERNELS, TV_KERNELS


def _nvrtc():
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)")
    library = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libnvrtc.so.12"
    if not library.exists():
        pytest.skip(f"no {library.name} in {library.parent}")
    return ctypes.CDLL(str(library))


def _compile(nvrtc, source: str) -> tuple[int, str]:
    program = ctypes.c_void_p()
    code = source.encode()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), code, b"fusex.cu", 0, None, None) == 0
    options = (ctypes.c_char_p * 2)(b"-std=c++14", b"--gpu-architecture=compute_70")
    status = nvrtc.nvrtcCompileProgram(program, 2, options)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return status, log.value.decode(errors="replace")


@pytest.mark.parametrize("ctype", ["float", "double"])
def test_kernels_compile(ctype):
    nvrtc = _nvrtc()
    # As cupy_engine._module builds it.
    source = f"typedef {ctype} T;\n" + (TV_KERNELS + GUIDED_KERNELS).replace("_T(", f"_{ctype}(")
    status, log = _compile(nvrtc, source)
    assert status == 0, log


def test_a_broken_source_fails_to_compile():
    status, log = _compile(_nvrtc(), "typedef float T;\n" + GUIDED_KERNELS.replace("_T(", "_float("))
    assert status != 0 and "dual_r" in log  # the guided kernels need TV_KERNELS' helpers


@pytest.mark.parametrize("ctype", ["float", "double"])
def test_the_gradient_step_body_compiles(ctype):
    # CuPy wraps an ElementwiseKernel's body in a loop over its arguments; one thread of it does the same here.
    from fusex.backends._cuda_source import GRADIENT_STEP

    params, out, body = GRADIENT_STEP
    inputs = ", ".join(f"const {p.strip()}_in" for p in params.split(","))
    names = [p.split()[-1] for p in params.split(",")]
    unpack = " ".join(f"T {n} = {n}_in;" for n in names)
    source = (
        f"typedef {ctype} T;\n"
        f'extern "C" __global__ void step({inputs}, {out.replace("T ", "T* ")}_ptr) '
        f"{{ {unpack} T {out.split()[-1]}; {body} *{out.split()[-1]}_ptr = {out.split()[-1]}; }}"
    )
    status, log = _compile(_nvrtc(), source)
    assert status == 0, log
