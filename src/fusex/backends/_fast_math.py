r"""Logarithm and power that numba vectorizes, for the kernels' inner loops.

numba compiles ``math.log`` and ``math.exp`` to scalar calls into the C
library, which keep a loop from vectorizing: in the cost terms' kernel they
ran 3x slower than NumPy's SIMD functions on one thread.  These are written
in arithmetic, integer shifts and selects only, so a loop over pixels becomes
AVX-512 code.  `fast_log` and `fast_pow` dispatch on float32 and float64.

**Logarithm.**  :math:`y = 2^k m` with :math:`m \in [\sqrt{1/2}, \sqrt 2)`
taken from the bits of :math:`y`, then
:math:`\log y = k \log 2 + 2\,\mathrm{artanh}\,s`, :math:`s = (m-1)/(m+1)`,
:math:`|s| \le 0.1716`, by its odd series (5 terms in float32, 11 in float64:
the first term left out is below half a rounding error).  Subnormal :math:`y`
is scaled up first; :math:`\log 0 = -\infty`, :math:`\log y` of negative or NaN
:math:`y` is NaN, :math:`\log\infty = \infty`.

**Power.**  :math:`x^g = e^{t}`, :math:`t = g \log x`, with
:math:`t = n \log 2 + r`, :math:`|r| \le \log 2 / 2`, :math:`e^r` by its Taylor
series (degree 7 in float32, 13 in float64) and :math:`2^n` built from its
bits.  Results below the smallest normal number are flushed to 0, above the
largest become :math:`\infty`; :math:`0^g` is 0 for :math:`g > 0`, 1 for
:math:`g = 0` and :math:`\infty` for :math:`g < 0`.  The relative error of
:math:`x^g` is that of :math:`t` (its rounding, about :math:`|t|` units in the
last place) plus a few rounding errors, as with NumPy's
``exp(g * log(x))``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["fast_log", "fast_pow"]

# The artanh series' coefficients 2 / (2j + 1) and the exponential's 1 / k!, highest power first for Horner's rule
_LOG32_SERIES = tuple(2.0 / n for n in range(9, 0, -2))
_LOG64_SERIES = tuple(2.0 / n for n in range(21, 0, -2))
_EXP32_SERIES = tuple(1.0 / math.factorial(k) for k in range(7, -1, -1))
_EXP64_SERIES = tuple(1.0 / math.factorial(k) for k in range(13, -1, -1))
_INLINE = {"inline": "always", "cache": True}


def _bitcast(table: dict, doc: str):
    """Make an intrinsic that reinterprets the bits of a scalar as the type ``table`` maps its type to."""

    @intrinsic
    def cast(typingctx, value):  # pragma: no cover
        target = table.get(value)
        if target is None:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(value), codegen

    cast.__doc__ = doc
    return cast


_bits = _bitcast(
    {types.float32: types.int32, types.float64: types.int64},
    "The bits of a float as the signed integer of its width (no conversion).",
)
_from_bits = _bitcast(
    {types.int32: types.float32, types.int64: types.float64},
    "The float whose bits are the signed integer ``value`` (int32 -> float32, int64 -> float64).",
)


def fast_log(y):
    """Natural logarithm of a float32 or float64 scalar (numba only; see the module docstring)."""
    return math.log(y)


def fast_pow(x, g):
    """``x ** g`` for ``x >= 0`` (float32 or float64 scalars of one type; numba only; see the module docstring)."""
    return x**g


@nb.njit(**_INLINE)
def _log32(y):  # pragma: no cover
    i32 = np.int32
    tiny = y < np.float32(1.1754944e-38)
    scaled = y * np.float32(16777216.0) if tiny else y  # 2**24 brings a subnormal into the normal range
    bits = _bits(scaled)
    # k: the exponent of y relative to sqrt(1/2), so that the remaining factor m lies in [sqrt(1/2), sqrt(2))
    k = i32(i32(bits - i32(0x3F3504F3)) >> i32(23))
    m = _from_bits(i32(bits - i32(k << i32(23))))
    s = (m - np.float32(1.0)) / (m + np.float32(1.0))
    s2 = s * s
    series = np.float32(0.0)
    for c in _LOG32_SERIES:
        series = np.float32(c) + s2 * series
    exponent = np.float32(k) - (np.float32(24.0) if tiny else np.float32(0.0))
    out = exponent * np.float32(0.6931471805599453) + s * series
    out = np.float32(-np.inf) if y == np.float32(0.0) else out
    out = np.float32(np.inf) if y == np.float32(np.inf) else out
    return out if y >= np.float32(0.0) else np.float32(np.nan)


@nb.njit(**_INLINE)
def _log64(y):  # pragma: no cover
    i64 = np.int64
    tiny = y < 2.2250738585072014e-308
    scaled = y * 18014398509481984.0 if tiny else y  # 2**54
    bits = _bits(scaled)
    k = i64(i64(bits - i64(0x3FE6A09E667F3BCD)) >> i64(52))
    m = _from_bits(i64(bits - i64(k << i64(52))))
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    series = 0.0
    for c in _LOG64_SERIES:
        series = c + s2 * series
    exponent = float(k) - (54.0 if tiny else 0.0)
    out = exponent * 0.6931471805599453 + s * series
    out = -np.inf if y == 0.0 else out
    out = np.inf if y == np.inf else out
    return out if y >= 0.0 else np.nan


@nb.njit(**_INLINE)
def _exp32(t):  # pragma: no cover
    i32 = np.int32
    clamped = min(max(t, np.float32(-100.0)), np.float32(100.0))  # keeps n << 23 within int32
    n = np.floor(clamped * np.float32(1.4426950408889634) + np.float32(0.5))
    # log 2 split in two, the first with trailing zero bits: n * its first part is exact
    r = clamped - n * np.float32(0.693145751953125) - n * np.float32(1.428606765330187e-06)
    series = np.float32(0.0)
    for c in _EXP32_SERIES:
        series = np.float32(c) + r * series
    # e**r lies in [0.7, 1.42]: adding n to its exponent's bits multiplies it by 2**n
    out = _from_bits(i32(_bits(series) + i32(i32(n) << i32(23))))
    out = np.float32(0.0) if n < np.float32(-125.0) else out
    # just below log(largest float32): e**r < 1 there, so 2**128 e**r is the largest or below it
    out = np.float32(np.inf) if t > np.float32(88.7228) else out
    return out if t == t else t


@nb.njit(**_INLINE)
def _exp64(t):  # pragma: no cover
    i64 = np.int64
    clamped = min(max(t, -800.0), 800.0)
    n = np.floor(clamped * 1.4426950408889634 + 0.5)
    r = clamped - n * 0.6931471803691238 - n * 1.9082149292705877e-10
    series = 0.0
    for c in _EXP64_SERIES:
        series = c + r * series
    out = _from_bits(i64(_bits(series) + i64(i64(n) << i64(52))))
    out = 0.0 if n < -1021.0 else out
    out = np.inf if t > 709.7827 else out
    return out if t == t else t


@nb.njit(**_INLINE)
def _pow32(x, g):  # pragma: no cover
    zero = np.float32(0.0)
    at_zero = zero if g > zero else (np.float32(1.0) if g == zero else np.float32(np.inf))
    return at_zero if x == zero else _exp32(g * _log32(x))


@nb.njit(**_INLINE)
def _pow64(x, g):  # pragma: no cover
    at_zero = 0.0 if g > 0.0 else (1.0 if g == 0.0 else np.inf)
    return at_zero if x == 0.0 else _exp64(g * _log64(x))


@overload(fast_log, inline="always")
def _fast_log_overload(y):
    log = {types.float32: _log32, types.float64: _log64}.get(y)
    if log is None:
        return None
    return lambda y: log(y)


@overload(fast_pow, inline="always")
def _fast_pow_overload(x, g):
    power = {types.float32: _pow32, types.float64: _pow64}.get(x)
    if power is None or g != x:
        return None
    return lambda x, g: power(x, g)
