"""float8 e4m3fn in numpy: the storage format of ``moe.experts`` weights with ``wq = "fp8"``.

e4m3fn (OCP FP8 "E4M3", torch.float8_e4m3fn, Triton's tl.float8e4nv): 1 sign, 4 exponent (bias 7) and
3 mantissa bits; no infinities; NaN only as 0x7f / 0xff; largest finite value 448 (0x7e).  Normal codes
are (1 + m/8) * 2^(e-7) for e = 1..15, subnormals m * 2^-9.  The IR keeps the bit patterns as uint8
(no ml_dtypes or torch here: ir/ imports neither).

Encoding rounds to nearest, ties to even, and saturates: every finite value beyond 448 (and +-inf)
becomes +-448, NaN becomes 0x7f with the input's sign.  (torch's cast turns overflow into NaN; the
quantiser scales rows so that nothing overflows, and saturation is the safe choice for the rest.)
"""
from __future__ import annotations

import numpy as np

E4M3_MAX = 448.0
_MIN_NORMAL_EXP = -6                    # smallest normal: 2^-6; subnormal step 2^-9


def _decode_table() -> np.ndarray:
    c = np.arange(256, dtype=np.int64)
    e, m = (c >> 3) & 15, c & 7
    mag = np.where(e == 0, m * 2.0 ** -9, (8 + m) * np.exp2(e - 10.0))
    mag = np.where((c & 0x7F) == 0x7F, np.nan, mag)
    return np.where(c & 0x80, -mag, mag).astype(np.float32)


_DECODE = _decode_table()


def decode_e4m3(q: np.ndarray) -> np.ndarray:
    """uint8 e4m3fn bit patterns -> their f32 values (exact: every e4m3 value is an f32)."""
    return _DECODE[np.asarray(q, np.uint8)]


def encode_e4m3(x: np.ndarray) -> np.ndarray:
    """f32 (or f64) values -> uint8 e4m3fn bit patterns: round to nearest even, saturate to +-448."""
    x = np.asarray(x)
    x = x.astype(np.float64) if x.dtype != np.float64 else x   # every step below is exact in f64
    sign = np.signbit(x).astype(np.uint8) << 7
    a = np.abs(x)
    with np.errstate(invalid="ignore"):
        finite_small = a < E4M3_MAX                             # False for NaN and inf
        a_safe = np.where(finite_small, a, 1.0)
        # the exponent of a's leading bit, clamped to the subnormal range: the code's quantum is
        # 2^(e-3), and (e + 6) * 8 + a / quantum is the code (the mantissa's carry into the exponent
        # and the subnormal/normal boundary both fall out of the arithmetic)
        _, ex = np.frexp(a_safe)
        e = np.where(a_safe >= 2.0 ** _MIN_NORMAL_EXP, ex - 1, _MIN_NORMAL_EXP)
        q = np.rint(np.ldexp(a_safe, 3 - e))                    # np.rint: ties to even
        code = np.minimum((e + 6) * 8 + q, 0x7E)                # 0x7f would be NaN: saturate to 448
    code = np.where(finite_small, code, 0x7E)
    code = np.where(np.isnan(x), 0x7F, code).astype(np.uint8)
    return code | sign


__all__ = ["E4M3_MAX", "decode_e4m3", "encode_e4m3"]
