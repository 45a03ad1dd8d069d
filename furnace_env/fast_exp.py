"""``exp`` for the physics kernel's inner loop, written out so that the loop vectorises.

A call to the library's ``exp`` cannot be vectorised, so a sub-step loop that calls it runs
one furnace at a time (98 instead of 65 ns per furnace-step on the development VM,
``docs/benchmarks/env.md``). This ``exp`` is plain arithmetic that the compiler inlines into
SIMD code, and stays within 2 ulp of ``math.exp`` (``tests/test_physics.py``). The plain
numpy reference of the physics (:mod:`furnace_env.physics_reference`) uses ``np.exp``.

Method: ``x = (32 n + j) ln2 / 32 + r`` with ``|r| <= ln2 / 64``, so that
``exp(x) = 2^n 2^(j/32) exp(r)``, with ``exp(r)`` by its Taylor series to ``r^6``
(truncation below 1e-17). The constants are rounded once from 50-digit decimals; the range
reduction must be evaluated as written (no reassociation), or it loses its extra bits.
"""

from __future__ import annotations

import decimal
import math

import numba
import numpy as np

__all__ = ["exp"]

_D = decimal.Context(prec=50)
_EXP_TAB = np.array([float(_D.power(2, _D.divide(j, 32))) for j in range(32)])
_EXP_POW2 = np.array([2.0**n for n in range(-1100, 1024)])
_LN2_32 = float(_D.divide(_D.ln(2), 32))
_LN2_32_HI = float(np.float32(_LN2_32))  # 24 bits: m * hi is exact for |m| < 2^29
_LN2_32_LO = float(_D.subtract(_D.divide(_D.ln(2), 32), decimal.Decimal(_LN2_32_HI)))


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def exp(x):
    """exp(x) for scalars in numba code (see the module docstring); NaN stays NaN."""
    if x != x:
        return x
    x = min(max(x, -740.0), 709.0)
    m = math.floor(x * (1.0 / _LN2_32) + 0.5)
    r = (x - m * _LN2_32_HI) - m * _LN2_32_LO
    mi = int(m)
    j = mi & 31
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))))
    return _EXP_TAB[j] * p * _EXP_POW2[((mi - j) >> 5) + 1100]
