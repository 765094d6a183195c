"""The CUDA kernels compile with NVRTC for every type they are instantiated with.

No GPU is needed; skipped without NVIDIA's NVRTC library.
"""

import ctypes
import importlib.util
from pathlib import Path

import pytest

from fusex.backends import _cuda_program as _program


def _nvrtc():
    spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)")
    library = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libnvrtc.so.12"
    if not library.exists():
        pytest.skip(f"no {library.name} in {library.parent}")
    return ctypes.CDLL(str(library))


def _compile(nvrtc, source: str, options=_program.OPTIONS, names=()) -> tuple[int, str, dict[str, str]]:
    """Compile as CuPy does for a GPU of compute capability 7.0; return the status, the log and the lowered names."""
    program = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernels.cu", 0, None, None) == 0
    for name in names:
        assert nvrtc.nvrtcAddNameExpression(program, name.encode()) == 0
    flags = [option.encode() for option in (*options, "--gpu-architecture=compute_70")]
    status = nvrtc.nvrtcCompileProgram(program, len(flags), (ctypes.c_char_p * len(flags))(*flags))
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(program, log)
    lowered = {}
    if status == 0:
        for name in names:
            symbol = ctypes.c_char_p()
            assert nvrtc.nvrtcGetLoweredName(program, name.encode(), ctypes.byref(symbol)) == 0, name
            lowered[name] = symbol.value.decode()
    nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
    return status, log.value.decode(errors="replace"), lowered


@pytest.mark.parametrize("ctype", sorted(set(_program.CTYPES.values())))
def test_every_kernel_compiles_for_each_type(ctype):
    # The options and name expressions that cupy_engine passes to cupy.RawModule.
    names = _program.name_expressions(ctype)
    status, log, lowered = _compile(_nvrtc(), _program.source(), names=names)
    assert status == 0, log
    assert set(lowered) == set(names) and len(set(lowered.values())) == len(names)
    assert all(symbol.startswith("_Z") for symbol in lowered.values())  # C++ instantiations, not extern "C"


def test_the_source_is_package_data():
    source = _program.source()
    assert all(f"__global__ void {kernel}(" in source for kernel in _program.KERNELS)


def test_the_dual_floor_comes_from_the_options():
    status, log, _ = _compile(_nvrtc(), _program.source(), options=("-std=c++14",))
    assert status != 0 and "FUSEX_DUAL_FLOOR" in log


def test_a_type_error_inside_a_template_fails_through_its_name_expression():
    # Without the name expression the template is never instantiated, and NVRTC accepts it.
    broken = _program.source() + "template <typename T> __global__ void broken(T* x) { x[0] = x->field; }\n"
    assert _compile(_nvrtc(), broken)[0] == 0
    status, log, _ = _compile(_nvrtc(), broken, names=("broken<float>",))
    assert status != 0 and "field" in log
