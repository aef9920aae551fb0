"""Reductions and softmax."""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, const_value, norm_axis, op, operand_error
from moec.ir.types import TensorType


class ReduceOp(Operation):
    """Reduce over ``axes`` (empty: all axes, or none at all with noop_with_empty_axes);
    keepdims keeps them as size 1.  The axes come from the attribute, or from the optional
    ``axes`` operand when they are computed at run time."""
    kind = "sum"

    def _axes(self, runtime=None):
        r = self.operands[0].type.rank
        if runtime is not None:
            axes = [int(a) for a in runtime]
        else:
            axes = self.attrs["axes"]
        if not axes:
            return () if self.attrs["noop_with_empty_axes"] else tuple(range(r))
        return tuple(sorted({norm_axis(self, a, r) for a in axes}))

    def infer_types(self):
        x = self.operands[0].type
        if self.kind in ("mean", "l2") and not x.dtype.is_float:
            raise operand_error(self, f"reduce {self.kind} needs a floating-point operand")
        if len(self.operands) > 1:  # axes known at run time
            c = const_value(self.operands[1])
            if c is None:
                n = self.operands[1].type.shape[0] if self.operands[1].type.rank == 1 else None
                if self.attrs["keepdims"]:
                    return [TensorType(x.dtype, (None,) * x.rank)]
                if not isinstance(n, int):
                    raise operand_error(self, "the number of axes must be static")
                return [TensorType(x.dtype, (None,) * (x.rank if n == 0 else x.rank - n))]
            axes = self._axes(np.asarray(c).reshape(-1))
        else:
            axes = self._axes()
        if self.attrs["keepdims"]:
            dims = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            dims = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return [TensorType(x.dtype, dims)]

    def reference(self, x, runtime_axes=None):
        axes = self._axes(None if runtime_axes is None else np.asarray(runtime_axes).reshape(-1))
        kd = self.attrs["keepdims"]
        acc = np.float64 if x.dtype == np.float64 else (np.float32 if x.dtype.kind == "f" or str(x.dtype) == "bfloat16"
                                                        else None)
        xx = x.astype(acc) if acc is not None else x
        if self.kind == "sum":
            r = np.sum(xx, axis=axes, keepdims=kd, dtype=acc or x.dtype)
        elif self.kind == "mean":
            r = np.mean(xx, axis=axes, keepdims=kd)
        elif self.kind in ("max", "min"):
            if x.size:
                r = _max_min(xx, axes, kd, self.kind == "max")
            else:  # empty set: the identity of the reduction
                big = True if x.dtype == np.bool_ else (np.inf if x.dtype.kind == "f" or x.dtype.name == "bfloat16"
                                                           else np.iinfo(x.dtype).max)
                fill = (not big if x.dtype == np.bool_ else -big) if self.kind == "max" else big
                r = np.full(self._empty_shape(x, axes, kd), fill)
        elif self.kind == "l1":
            r = np.sum(np.abs(xx), axis=axes, keepdims=kd)
        else:
            r = np.sqrt(np.sum(np.square(xx), axis=axes, keepdims=kd))
        return [np.asarray(r).astype(x.dtype)]

    @staticmethod
    def _empty_shape(x, axes, kd):
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if kd else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _max_min(x, axes, keepdims, largest):
    """Max/min over ``axes`` as the C runtime scans it: a NaN anywhere gives NaN (onnxruntime's result
    then depends on the NaN's position and its vector lanes, e.g. ReduceMax([0, NaN, 2, .., 7]) = 6:
    moec propagates NaN, as numpy and torch do); among equal values the first in row-major order is
    kept, so the sign of a zero result is that of the first zero (onnxruntime agrees)."""
    if not axes:
        return x.copy()
    r = (np.max if largest else np.min)(x, axis=axes, keepdims=True)
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        return r if keepdims else np.squeeze(r, axis=axes)
    k = len(axes)
    xt = np.moveaxis(x, axes, tuple(range(x.ndim - k, x.ndim)))
    rt = np.moveaxis(r, axes, tuple(range(x.ndim - k, x.ndim)))
    flat = xt.reshape(xt.shape[:x.ndim - k] + (-1,))
    rf = rt.reshape(rt.shape[:x.ndim - k] + (1,))
    first = np.argmax(flat == rf, axis=-1)[..., None]
    pick = np.take_along_axis(flat, first, axis=-1)
    out = np.where(np.isnan(rf), rf, pick).reshape(rt.shape)
    out = np.moveaxis(out, tuple(range(x.ndim - k, x.ndim)), axes)
    return out if keepdims else np.squeeze(out, axis=axes)


_RATTRS = {"axes": Attr("ints", ()), "keepdims": Attr("bool", True), "noop_with_empty_axes": Attr("bool", False)}
for _k in ("sum", "mean", "max", "min", "l1", "l2"):
    _cls = type(f"Reduce{_k.title()}Op", (ReduceOp,), {"kind": _k, "__module__": __name__,
                                                       "__doc__": f"reduce {_k} over axes (empty: all)."})
    globals()[_cls.__name__] = op(f"moec.reduce_{_k}", operands=("x", "axes?"), attrs=_RATTRS, traits=("pure",))(_cls)


def _softmax(x, axis, log):
    acc = np.float64 if x.dtype == np.float64 else np.float32
    xx = x.astype(acc)
    m = np.max(xx, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):
        e = xx - m
        s = np.sum(np.exp(e), axis=axis, keepdims=True)
        r = e - np.log(s) if log else np.exp(e) / s
    return r.astype(x.dtype)


@op("moec.softmax", operands=("x",), attrs={"axis": Attr("int", -1)}, traits=("pure",))
class SoftmaxOp(Operation):
    """exp(x - max) / sum(exp(x - max)) along axis."""

    def infer_types(self):
        x = self.operands[0].type
        norm_axis(self, self.attrs["axis"], x.rank)
        if not x.dtype.is_float:
            raise operand_error(self, "softmax needs a floating-point operand")
        return [x]

    def reference(self, x):
        return [_softmax(x, self.attrs["axis"], False)]


@op("moec.log_softmax", operands=("x",), attrs={"axis": Attr("int", -1)}, traits=("pure",))
class LogSoftmaxOp(SoftmaxOp):
    """x - max - log(sum(exp(x - max))) along axis."""

    def reference(self, x):
        return [_softmax(x, self.attrs["axis"], True)]
