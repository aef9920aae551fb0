"""Shared base classes for op declarations (no ops are declared here)."""
from __future__ import annotations

from typing import List

import numpy as np

from moec.ir.core import IRError, Operation
from moec.ir.opdef import operand_error
from moec.ir.types import DType, TensorType, broadcast_shapes


class UnaryOp(Operation):
    """Elementwise f(x); result has x's type.  Subclasses set ``fn``."""

    fn = None
    float_only = False

    def infer_types(self) -> List[TensorType]:
        t = self.operands[0].type
        if self.float_only and not t.dtype.is_float:
            raise operand_error(self, f"needs a floating-point operand, got {t.dtype.mlir}")
        return [t]

    def reference(self, x):
        with np.errstate(all="ignore"):
            return [np.asarray(type(self).fn(x)).astype(x.dtype, copy=False)]


class BinaryOp(Operation):
    """Elementwise f(a, b) with numpy broadcasting; same dtypes required."""

    fn = None
    result_dtype = None  # None: same as operands (e.g. BOOL for comparisons)

    def infer_types(self) -> List[TensorType]:
        a, b = (v.type for v in self.operands)
        if a.dtype != b.dtype:
            raise operand_error(self, f"operand types differ: {a.dtype.mlir} vs {b.dtype.mlir}")
        try:
            shape = broadcast_shapes(a.shape, b.shape)
        except ValueError as e:
            raise operand_error(self, f"shapes {a.shape} and {b.shape} do not broadcast: {e}") from None
        return [TensorType(self.result_dtype or a.dtype, shape)]

    def reference(self, a, b):
        with np.errstate(all="ignore"):
            r = type(self).fn(a, b)
        return [np.asarray(r).astype((self.result_dtype or DType.from_np(a.dtype)).np, copy=False)]


def alloc_guard(o: Operation, shape, itemsize: int) -> tuple:
    """``shape`` as ints, after checking that a result of that shape fits the interpreter's size limit:
    shapes that come from data (Expand, Tile, ConstantOfShape, Range, OneHot) must not make the
    reference allocate without bound."""
    from moec.ir.interpreter import max_result_bytes
    dims = tuple(int(s) for s in shape)
    n = itemsize
    for d in dims:
        if d < 0:
            raise ValueError(f"negative dimension {d} in result shape {list(dims)}")
        n *= d
    limit = max_result_bytes()
    if n > limit:
        raise ValueError(f"result shape {list(dims)} would take {n} bytes, more than the interpreter's "
                         f"limit of {limit} (MOEC_INTERP_MAX_BYTES)")
    return dims


def same_dtype(o: Operation, *idx: int) -> DType:
    dts = {o.operands[i].type.dtype for i in idx}
    if len(dts) != 1:
        raise operand_error(o, "operands must have the same element type, got "
                               + ", ".join(sorted(d.mlir for d in dts)))
    return dts.pop()


def require_rank(o: Operation, i: int, ranks) -> None:
    r = o.operands[i].type.rank
    if r not in ranks:
        raise operand_error(o, f"operand #{i} must have rank {' or '.join(map(str, ranks))}, got {r}")


def require_int(o: Operation, i: int) -> None:
    if o.operands[i].type.dtype not in (DType.I64, DType.I32):
        raise operand_error(o, f"operand #{i} must be i64 or i32, got {o.operands[i].type.dtype.mlir}")


__all__ = ["UnaryOp", "BinaryOp", "alloc_guard", "same_dtype", "require_rank", "require_int", "IRError"]
