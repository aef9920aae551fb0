"""Normalisations."""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, norm_axis, op, operand_error
from moec.ir.types import DType, TensorType


@op("moec.layer_norm", operands=("x", "scale", "bias?"), results=3,
    attrs={"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5)}, traits=("pure",))
class LayerNormOp(Operation):
    """Normalise over dims [axis, rank): y = (x - mean) * inv_std * scale + bias,
    inv_std = 1 / sqrt(var + epsilon); also returns mean and inv_std (f32, reduced dims kept as 1)."""

    def infer_types(self):
        x = self.operands[0].type
        a = norm_axis(self, self.attrs["axis"], x.rank)
        if not x.dtype.is_float:
            raise operand_error(self, "layer norm needs a floating-point operand")
        stat = TensorType(DType.F32 if x.dtype != DType.F64 else DType.F64,
                          tuple(d if i < a else 1 for i, d in enumerate(x.shape)))
        return [x, stat, stat]

    def reference(self, x, scale, bias=None):
        a = self.attrs["axis"] % x.ndim
        stat = np.float64 if x.dtype == np.float64 else np.float32
        # statistics in f64, as the C runtime: values near the f32 range's end give the normalised
        # result, not an overflow (onnxruntime gives 0 there; its f32 statistics overflow)
        xx = x.astype(np.float64)
        axes = tuple(range(a, x.ndim))
        with np.errstate(all="ignore"):
            mean = xx.mean(axis=axes, keepdims=True)
            var = ((xx - mean) ** 2).mean(axis=axes, keepdims=True)
            inv = 1.0 / np.sqrt(var + self.attrs["epsilon"])
            y = (xx - mean) * inv * scale.astype(np.float64)
            if bias is not None:
                y = y + bias.astype(np.float64)
            return [y.astype(x.dtype), mean.astype(stat), inv.astype(stat)]


@op("moec.rms_norm", operands=("x", "scale"), attrs={"axis": Attr("int", -1), "epsilon": Attr("float", 1e-5)},
    traits=("pure",))
class RMSNormOp(Operation):
    """y = x / sqrt(mean(x^2 over [axis, rank)) + epsilon) * scale."""

    def infer_types(self):
        x = self.operands[0].type
        norm_axis(self, self.attrs["axis"], x.rank)
        if not x.dtype.is_float:
            raise operand_error(self, "rms norm needs a floating-point operand")
        return [x]

    def reference(self, x, scale):
        a = self.attrs["axis"] % x.ndim
        xx = x.astype(np.float64)  # statistics in f64, as the C runtime
        with np.errstate(all="ignore"):
            ms = np.mean(xx * xx, axis=tuple(range(a, x.ndim)), keepdims=True)
            return [(xx * (1.0 / np.sqrt(ms + self.attrs["epsilon"])) * scale.astype(np.float64)).astype(x.dtype)]
