"""Element types and tensor types of the moec IR.

A tensor type is an element type plus a shape.  Each dimension is one of

* an ``int`` (static size),
* a ``str`` (a named symbolic size such as ``"T"`` for the token count: two
  dimensions with the same name are equal at run time), or
* ``None`` (unknown: data dependent, e.g. the row count of ``NonZero``).

In the MLIR text form the element types use MLIR's builtin spellings and every
non-static dimension prints as ``?``; the symbol names travel in the tensor
type's encoding attribute as one string, e.g. ``tensor<?x?x64xf32, "T,?">``,
so MLIR tools parse the type as an ordinary ranked tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional, Sequence, Union

import ml_dtypes
import numpy as np

Dim = Union[int, str, None]


class DType(Enum):
    """Element types.  The value is the MLIR spelling."""

    F64 = "f64"
    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    I64 = "i64"
    I32 = "i32"
    I16 = "i16"
    I8 = "i8"
    U8 = "ui8"
    BOOL = "i1"
    I4 = "i4"  # packed: two values per byte in storage
    U4 = "ui4"

    @property
    def mlir(self) -> str:
        return self.value

    @property
    def np(self) -> np.dtype:
        return _TO_NP[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F64, DType.F32, DType.F16, DType.BF16)

    @property
    def is_int(self) -> bool:
        return self in (DType.I64, DType.I32, DType.I16, DType.I8, DType.U8, DType.I4, DType.U4)

    @property
    def is_signed(self) -> bool:
        return self in (DType.I64, DType.I32, DType.I16, DType.I8, DType.I4) or self.is_float

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def itemsize(self) -> int:
        """Storage bytes per element (packed 4-bit types report 1, see ``storage_bytes``)."""
        return max(1, self.bits // 8)

    @staticmethod
    def from_np(dt) -> "DType":
        dt = np.dtype(dt)
        for k, v in _TO_NP.items():
            if v == dt:
                return k
        raise TypeError(f"moec has no element type for numpy dtype {dt}")

    @staticmethod
    def parse(s: str) -> "DType":
        try:
            return DType(s)
        except ValueError:
            raise ValueError(f"unknown element type '{s}'") from None


_TO_NP = {
    DType.F64: np.dtype(np.float64),
    DType.F32: np.dtype(np.float32),
    DType.F16: np.dtype(np.float16),
    DType.BF16: np.dtype(ml_dtypes.bfloat16),
    DType.I64: np.dtype(np.int64),
    DType.I32: np.dtype(np.int32),
    DType.I16: np.dtype(np.int16),
    DType.I8: np.dtype(np.int8),
    DType.U8: np.dtype(np.uint8),
    DType.BOOL: np.dtype(np.bool_),
    DType.I4: np.dtype(ml_dtypes.int4),
    DType.U4: np.dtype(ml_dtypes.uint4),
}
_BITS = {
    DType.F64: 64, DType.F32: 32, DType.F16: 16, DType.BF16: 16, DType.I64: 64, DType.I32: 32,
    DType.I16: 16, DType.I8: 8, DType.U8: 8, DType.BOOL: 8, DType.I4: 4, DType.U4: 4,
}


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple  # tuple[Dim, ...]

    def __post_init__(self):
        for d in self.shape:
            if not (d is None or isinstance(d, str) or (isinstance(d, (int, np.integer)) and d >= 0)):
                raise ValueError(f"bad dimension {d!r} in tensor type")
        object.__setattr__(self, "shape", tuple(int(d) if isinstance(d, (int, np.integer)) else d
                                                for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self) -> Optional[int]:
        if not self.is_static:
            return None
        n = 1
        for d in self.shape:  # python ints: np.prod(int64) wrapped (2^62+1 x 4 gave 4)
            n *= d
        return n

    def storage_bytes(self) -> Optional[int]:
        n = self.numel()
        if n is None:
            return None
        return (n * self.dtype.bits + 7) // 8

    def with_shape(self, shape: Sequence[Dim]) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape)

    def matches(self, shape: Sequence[int], bindings: Optional[dict] = None) -> bool:
        """True when a concrete shape fits this type (binding symbols consistently)."""
        if len(shape) != len(self.shape):
            return False
        b = {} if bindings is None else bindings
        for d, s in zip(self.shape, shape):
            if isinstance(d, int) and d != s:
                return False
            if isinstance(d, str):
                if b.setdefault(d, s) != s:
                    return False
        return True

    def __str__(self) -> str:
        return format_type(self)


def format_type(t: TensorType) -> str:
    dims = "".join(("?" if not isinstance(d, int) else str(d)) + "x" for d in t.shape)
    syms = [d for d in t.shape if not isinstance(d, int)]
    enc = ""
    if any(isinstance(d, str) for d in syms):
        enc = ', "' + ",".join("?" if d is None else _symbol_text(d) for d in syms) + '"'
    return f"tensor<{dims}{t.dtype.mlir}{enc}>"


def _symbol_text(d: str) -> str:
    """A symbol name inside the type's quoted encoding: printable ASCII except ``"\\<>`` as is, every
    other byte of its UTF-8 as ``\\XX`` (what the parser's unquote reads back), so a symbol from the
    input cannot end the string or the type."""
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\<>' else
                   "".join(f"\\{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in d)


def dims_equal(a: Dim, b: Dim) -> bool:
    """Static equality: only when both are the same int or the same symbol."""
    return a is not None and a == b


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    """Result of numpy-broadcasting one dimension pair (None when unknowable)."""
    if a == 1:
        return b
    if b == 1:
        return a
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError(f"dimensions {a} and {b} do not broadcast")
    # one symbolic/unknown, the other a static non-1 size: the static one wins if legal
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return None


def broadcast_shapes(*shapes: Sequence[Dim]) -> tuple:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        d: Dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j >= 0:
                d = broadcast_dims(d, s[j])
        out.append(d)
    return tuple(out)
