"""A NumPy stand-in for the part of CuPy that `fusex.backends.cupy_engine` uses.

Arrays are NumPy arrays (with CuPy's ``.get()``); `RawModule` compiles
``kernels.cu`` with the C++ compiler against ``prelude.h`` and ``launch.h``
and runs each launch on the CPU, thread by thread.  `install` puts this
module in place of ``cupy`` (and NumPy's array-API wrapper in place of
CuPy's), so it must run in a process of its own.
"""

import contextlib
import ctypes
import hashlib
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WARP_KERNELS = {"evaluate"}  # kernels that exchange values between a warp's lanes
LAUNCHES: list[str] = []  # the name expression of every launch, in order


class ndarray(np.ndarray):  # CuPy's name
    def get(self):
        return np.array(self)


def _device(a):
    return a.view(ndarray) if isinstance(a, np.ndarray) else a


def _wrapped(function):
    return lambda *args, **kwargs: _device(function(*args, **kwargs))


def asarray(a, dtype=None):
    return _device(np.array(a, dtype=dtype))  # a copy, as a transfer to the device is


_CTYPES = {
    np.dtype(np.float32): ctypes.c_float,
    np.dtype(np.float64): ctypes.c_double,
    np.dtype(np.int32): ctypes.c_int,
    np.dtype(np.bool_): ctypes.c_bool,
}


class RawKernel:
    def __init__(self, entry, name):
        self._entry, self.name = entry, name

    def __call__(self, grid, block, args):
        assert isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple), self.name
        LAUNCHES.append(self.name)
        values = []
        for arg in args:
            if isinstance(arg, np.ndarray):
                assert arg.flags.c_contiguous, f"{self.name}: a kernel reads arrays in C order"
                values.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                # CuPy passes a scalar by its NumPy type, which must match the kernel's parameter
                assert isinstance(arg, np.generic), f"{self.name}: {type(arg).__name__} argument"
                values.append(_CTYPES[arg.dtype](arg.item()))
        pointers = [ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values]
        self._entry((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), (ctypes.c_void_p * len(values))(*pointers))


class RawModule:
    build = Path(".")  # where the compiled libraries go (set by the caller)

    def __init__(self, *, code, options=(), name_expressions=None):
        assert isinstance(code, str) and isinstance(options, tuple), "RawModule takes a str and a tuple"
        self._code, self._options, self._names = code, options, tuple(name_expressions)
        self._library = None

    def _compile(self):
        defines = [f"#define {m.group(1)} {m.group(2)}" for o in self._options if (m := re.match(r"-D(\w+)=(.*)", o))]
        entries = []
        for name in self._names:
            kernel, ctype = re.fullmatch(r"(\w+)<(\w+)>", name).groups()
            entries.append(f"ENTRY({kernel}, {ctype}, {'true' if kernel in WARP_KERNELS else 'false'})")
        parts = [(HERE / "prelude.h").read_text(), *defines, self._code, (HERE / "launch.h").read_text(), *entries]
        text = "\n".join(parts) + "\n"
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        source, library = self.build / f"kernels_{key}.cpp", self.build / f"kernels_{key}.so"
        if not library.exists():
            source.write_text(text)
            command = ["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", str(source), "-o", str(library)]
            subprocess.run(command, check=True)
        return ctypes.CDLL(str(library))

    def get_function(self, name):
        assert name in self._names, f"{name} is not one of the module's name expressions"
        if self._library is None:
            self._library = self._compile()
        kernel, ctype = re.fullmatch(r"(\w+)<(\w+)>", name).groups()
        return RawKernel(getattr(self._library, f"emu_{kernel}_{ctype}"), name)


def install(build):
    """Stand in for ``cupy`` and ``array_api_compat.cupy`` in this process; compile into ``build``."""
    import array_api_compat
    import array_api_compat.numpy as npx

    module = types.ModuleType("cupy")
    module.ndarray, module.dtype, module.float32, module.float64 = ndarray, np.dtype, np.float32, np.float64
    module.asarray, module.RawModule, module.RawKernel = asarray, RawModule, RawKernel
    for name in ("empty", "empty_like", "zeros", "ones", "ascontiguousarray", "moveaxis", "maximum", "sum"):
        setattr(module, name, _wrapped(getattr(np, name)))
    module.cuda = types.SimpleNamespace(get_current_stream=contextlib.nullcontext, Stream=type("Stream", (), {}))
    RawModule.build = Path(build)
    sys.modules["cupy"] = module
    sys.modules["array_api_compat.cupy"] = npx
    array_api_compat.cupy = npx
    return module
