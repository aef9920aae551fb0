"""Elementwise ops: unary math, binary arithmetic / comparison / logic with numpy
broadcasting, select, clip, min/max, cast.

Integer semantics follow onnxruntime: division truncates toward zero, overflow wraps.
Float16/bfloat16 are computed in float32 and rounded once.
"""
from __future__ import annotations

import math

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import DType, TensorType, broadcast_shapes
from moec.ir.ops.base import BinaryOp, UnaryOp

# -- binary arithmetic -------------------------------------------------------------


def _int_div(a, b):
    if np.any(b == 0):
        raise ZeroDivisionError("integer division by zero")
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) ^ (b < 0), -q, q)


def _pow(a, b):
    if a.dtype.kind in "iu":
        return np.power(a.astype(np.int64), b.astype(np.int64)).astype(a.dtype)
    if a.dtype.itemsize < 4:
        return np.power(a.astype(np.float32), b.astype(np.float32))
    return np.power(a, b)


def _f32(fn):
    """Compute half types in f32 (like onnxruntime) and round once."""
    def wrapped(*xs):
        if xs[0].dtype.kind == "f" and xs[0].dtype.itemsize < 4 or str(xs[0].dtype) == "bfloat16":
            return fn(*[x.astype(np.float32) for x in xs])
        return fn(*xs)
    return wrapped


@op("moec.add", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class AddOp(BinaryOp):
    """lhs + rhs."""
    fn = staticmethod(_f32(np.add))


@op("moec.sub", operands=("lhs", "rhs"), traits=("pure", "elementwise"))
class SubOp(BinaryOp):
    """lhs - rhs."""
    fn = staticmethod(_f32(np.subtract))


@op("moec.mul", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class MulOp(BinaryOp):
    """lhs * rhs."""
    fn = staticmethod(_f32(np.multiply))


@op("moec.div", operands=("lhs", "rhs"), traits=("pure", "elementwise"))
class DivOp(BinaryOp):
    """lhs / rhs; integers truncate toward zero (division by zero is an error)."""
    fn = staticmethod(_f32(lambda a, b: _int_div(a, b) if a.dtype.kind in "iu" else np.divide(a, b)))


def _mod(a, b, fmod):
    """Remainder as ONNX Mod (opset 28): with fmod, truncated (C's fmod: the sign of a), else
    floored (a - floor(a / b) * b: the sign of b, Python's %); an integer remainder by zero is an
    error, a float one NaN."""
    if a.dtype.kind in "iu":
        if np.any(b == 0):
            raise ZeroDivisionError("integer remainder by zero")
        a64, b64 = a.astype(np.int64), b.astype(np.int64)
        return np.fmod(a64, b64) if fmod else np.mod(a64, b64)
    return np.fmod(a, b) if fmod else np.mod(a, b)


@op("moec.mod", operands=("lhs", "rhs"), attrs={"fmod": Attr("bool", False)}, traits=("pure", "elementwise"))
class ModOp(BinaryOp):
    """Remainder of lhs / rhs: with fmod, truncated (the sign of lhs, C's fmod); without, floored
    (the sign of rhs, Python's %)."""

    def reference(self, a, b):
        with np.errstate(all="ignore"):
            r = _f32(lambda x, y: _mod(x, y, self.attrs["fmod"]))(a, b)
        return [np.asarray(r).astype(DType.from_np(a.dtype).np, copy=False)]


@op("moec.pow", operands=("base", "exponent"), traits=("pure", "elementwise"))
class PowOp(Operation):
    """base ** exponent; the result has base's type (exponent may be another numeric type)."""

    def infer_types(self):
        a, b = (v.type for v in self.operands)
        try:
            return [TensorType(a.dtype, broadcast_shapes(a.shape, b.shape))]
        except ValueError as e:
            raise operand_error(self, str(e)) from None

    def reference(self, a, b):
        with np.errstate(all="ignore"):
            if a.dtype.kind in "iu":
                r = np.power(a.astype(np.int64), b.astype(np.int64))
            else:
                r = np.power(a.astype(np.float64 if a.dtype == np.float64 else np.float32),
                             b.astype(np.float64 if a.dtype == np.float64 else np.float32))
        return [np.asarray(r).astype(a.dtype)]


@op("moec.min", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class MinOp(BinaryOp):
    """elementwise minimum (NaN propagates)."""
    fn = staticmethod(_f32(np.minimum))


@op("moec.max", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class MaxOp(BinaryOp):
    """elementwise maximum (NaN propagates)."""
    fn = staticmethod(_f32(np.maximum))


class CompareOp(BinaryOp):
    result_dtype = DType.BOOL


@op("moec.equal", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class EqualOp(CompareOp):
    """lhs == rhs -> i1."""
    fn = staticmethod(np.equal)


@op("moec.greater", operands=("lhs", "rhs"), traits=("pure", "elementwise"))
class GreaterOp(CompareOp):
    """lhs > rhs -> i1."""
    fn = staticmethod(np.greater)


@op("moec.greater_equal", operands=("lhs", "rhs"), traits=("pure", "elementwise"))
class GreaterEqualOp(CompareOp):
    """lhs >= rhs -> i1."""
    fn = staticmethod(np.greater_equal)


@op("moec.less", operands=("lhs", "rhs"), traits=("pure", "elementwise"))
class LessOp(CompareOp):
    """lhs < rhs -> i1."""
    fn = staticmethod(np.less)


@op("moec.less_equal", operands=("lhs", "rhs"), traits=("pure", "elementwise"))
class LessEqualOp(CompareOp):
    """lhs <= rhs -> i1."""
    fn = staticmethod(np.less_equal)


class LogicOp(BinaryOp):
    def infer_types(self):
        for v in self.operands:
            if v.type.dtype != DType.BOOL:
                raise operand_error(self, f"operands must be i1, got {v.type.dtype.mlir}")
        return super().infer_types()


@op("moec.and", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class AndOp(LogicOp):
    """logical and of i1 tensors."""
    fn = staticmethod(np.logical_and)


@op("moec.or", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class OrOp(LogicOp):
    """logical or of i1 tensors."""
    fn = staticmethod(np.logical_or)


# -- unary -------------------------------------------------------------------------------

def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x.astype(np.float64) / math.sqrt(2.0)))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _float_math(fn):
    def wrapped(x):
        if x.dtype == np.float64:
            return fn(x)
        return fn(x.astype(np.float32))
    return wrapped


_UNARY = {
    # name: (numpy function, float only?)
    "neg": (np.negative, False), "abs": (np.abs, False), "sign": (np.sign, False),
    "floor": (_float_math(np.floor), True), "ceil": (_float_math(np.ceil), True),
    "sqrt": (_float_math(np.sqrt), True), "reciprocal": (_float_math(np.reciprocal), True),
    "exp": (_float_math(np.exp), True), "log": (_float_math(np.log), True),
    "log1p": (_float_math(np.log1p), True),  # log(1 + x), exact near 0 (torch's softplus / logsigmoid)
    "sin": (_float_math(np.sin), True), "cos": (_float_math(np.cos), True),
    "tanh": (_float_math(np.tanh), True), "erf": (_float_math(_erf), True),
    "sigmoid": (_float_math(lambda x: 1.0 / (1.0 + np.exp(-x))), True),
    # x < 0 ? 0 : x -- NaN and -0.0 pass through unchanged, as in onnxruntime and the C runtime
    "relu": (lambda x: np.where(x < 0, np.zeros((), x.dtype), x).astype(x.dtype), False),
    "gelu": (_float_math(_gelu), True), "gelu_tanh": (_float_math(_gelu_tanh), True),
}


def _declare_unary(name, fn, float_only):
    cls = type(f"{name.title().replace('_', '')}Op", (UnaryOp,), {
        "__doc__": f"elementwise {name}(x); result has x's type" + (" (floating point only)." if float_only else "."),
        "fn": staticmethod(fn), "float_only": float_only, "__module__": __name__})
    return op(f"moec.{name}", operands=("x",), traits=("pure", "elementwise"))(cls)


for _n, (_fn, _fo) in _UNARY.items():
    globals()[f"{_n.title().replace('_', '')}Op"] = _declare_unary(_n, _fn, _fo)


@op("moec.not", operands=("x",), traits=("pure", "elementwise"))
class NotOp(UnaryOp):
    """logical not of an i1 tensor."""
    fn = staticmethod(np.logical_not)

    def infer_types(self):
        if self.operands[0].type.dtype != DType.BOOL:
            raise operand_error(self, "operand must be i1")
        return [self.operands[0].type]


# -- select / clip / cast ----------------------------------------------------------------------

@op("moec.select", operands=("cond", "on_true", "on_false"), traits=("pure", "elementwise"))
class SelectOp(Operation):
    """cond ? on_true : on_false with three-way broadcasting (ONNX Where)."""

    def infer_types(self):
        c, a, b = (v.type for v in self.operands)
        if c.dtype != DType.BOOL:
            raise operand_error(self, f"condition must be i1, got {c.dtype.mlir}")
        if a.dtype != b.dtype:
            raise operand_error(self, f"branches differ: {a.dtype.mlir} vs {b.dtype.mlir}")
        try:
            return [TensorType(a.dtype, broadcast_shapes(c.shape, a.shape, b.shape))]
        except ValueError as e:
            raise operand_error(self, str(e)) from None

    def reference(self, c, a, b):
        return [np.where(c, a, b).astype(a.dtype)]


@op("moec.clip", operands=("x", "lo", "hi"), traits=("pure", "elementwise"))
class ClipOp(Operation):
    """min(max(x, lo), hi) with scalar lo/hi of x's type (NaN in x propagates, zeros keep their sign)."""

    def infer_types(self):
        x, lo, hi = (v.type for v in self.operands)
        if lo.dtype != x.dtype or hi.dtype != x.dtype or lo.rank or hi.rank:
            raise operand_error(self, "lo and hi must be scalars of x's type")
        return [x]

    def reference(self, x, lo, hi):
        # onnxruntime: std::min(std::max(x, lo), hi) -- NaN in x passes through (comparisons with NaN are
        # false) and an x equal to a bound keeps its own sign of zero, e.g. Clip(-1, -0.0, 0.0) = -0.0
        r = np.where(x < lo, lo, x)
        return [np.where(hi < r, hi, r).astype(x.dtype)]


@op("moec.cast", operands=("x",), attrs={"to": Attr("dtype")}, traits=("pure", "elementwise"))
class CastOp(Operation):
    """Convert to another element type: float -> int truncates toward zero, -> i1 is x != 0,
    to f16/bf16 rounds to nearest even."""

    def infer_types(self):
        return [self.operands[0].type.with_dtype(self.attrs["to"])]

    def reference(self, x):
        to = self.attrs["to"]
        if to == DType.BOOL:
            return [(x != 0)]
        with np.errstate(all="ignore"):
            if to.is_int and x.dtype.kind == "f" or str(x.dtype) == "bfloat16" and to.is_int:
                xf = np.trunc(x.astype(np.float64))
                info = np.iinfo(to.np)
                bad = ~np.isfinite(xf) | (xf < info.min) | (xf > info.max)
                r = np.where(bad, 0, xf).astype(np.int64).astype(to.np)
                return [r]
            if to == DType.BF16 and x.dtype != np.float32:
                return [x.astype(np.float32).astype(to.np)]
            return [x.astype(to.np)]
