"""Dense linear layers with quantised weights (``--weights`` on the attention projections, the output
layer, dense MLPs: every MatMul/Gemm with a constant weight; passes/quantize.py makes them).

The weight formats are the routed experts' (``moe.experts``, ir/ops/moe.py), for one [N, K] matrix
instead of an [E, N, K] stack, with the same reference semantics: dequantise, then compute in f32.
"""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import DType, TensorType
from moec.ir.ops.moe import QUANT_ATTRS, dequantize_weights, fake_quant_rows_int8, round_bf16


@op("moec.linear_q", operands=("x", "w", "extra*"), traits=("pure",), attrs={
    **QUANT_ATTRS,
    "has_bias": Attr("bool", False, doc="a bias [N] (or [1, N]) follows the scales"),
})
class LinearQOp(Operation):
    """y[..., n] = sum_k x'[..., k] * dequant(w)[n, k] (+ bias[n]), accumulated in f32.

    ``w`` holds the rows as output features, stored as ``wq`` says (bf16 [N, K]; int8 [N, K] with
    per-row scales s [N]; int4 packed [N, K/2] with group scales s [N, K/G] and, with ``wq_zp``,
    zero points z [N, K/G]); ``extra`` is (s, z?) then the bias when ``has_bias``.  x' is x for int8 /
    int4 weights; for bf16 weights x rounded to bf16 (the bf16 dot products take both operands in
    bf16); with ``aq=int8`` (w8a8) each row of x quantised to int8 (``fake_quant_rows_int8``: a
    row is one token's vector, every leading axis being a token axis); with int4 weights (w4a8) a scale
    per ``wq_group`` elements of the row (the weights' groups; 0: the whole row); with ``aq=bf16`` and
    int8 / int4 weights x rounded to bf16 per element, the weights exact (int8 codes, int4 q - z) and the
    scale applied to each group's f32 partial sum (ir/ops/moe.py: the same as bf16(x) @ dequant(w).T up to
    f32 rounding, which is what this reference computes)."""

    def _parts(self):
        ex = list(self.operands[2:])
        mode = self.attrs["wq"]
        nq = (2 if self.attrs["wq_zp"] else 1) if mode in ("int8", "int4", "fp8") else 0
        if len(ex) != nq + int(self.attrs["has_bias"]):
            raise operand_error(self, f"wq={mode} (zero points: {self.attrs['wq_zp']}, bias: "
                                      f"{self.attrs['has_bias']}) needs {nq + int(self.attrs['has_bias'])} extra "
                                      f"operand(s), got {len(ex)}")
        s = ex[0] if nq else None
        z = ex[1] if nq == 2 else None
        b = ex[nq] if self.attrs["has_bias"] else None
        return s, z, b

    def infer_types(self):
        x, w = self.operands[0].type, self.operands[1].type
        mode = self.attrs["wq"]
        if mode == "none":
            raise operand_error(self, "moec.linear_q needs quantised weights (wq != none); use moec.matmul")
        if x.rank < 1 or w.rank != 2:
            raise operand_error(self, f"x must be [..., K] and w [N, K'], got {x} and {w}")
        if x.dtype != DType.F32:
            raise operand_error(self, f"x must be f32, got {x.dtype.mlir}")
        want = {"bf16": DType.BF16, "int8": DType.I8, "int4": DType.U8, "fp8": DType.U8}[mode]
        if w.dtype != want:
            raise operand_error(self, f"w is {w.dtype.mlir}; with wq={mode} it must be {want.mlir}")
        N, Kw = w.shape
        K = x.shape[-1]
        Kl = 2 * Kw if mode == "int4" and isinstance(Kw, int) else Kw
        if isinstance(K, int) and isinstance(Kl, int) and K != Kl:
            raise operand_error(self, f"contraction dims differ: x has {K}, w holds {Kl}")
        s, z, b = self._parts()
        if s is not None:
            if s.type.dtype != DType.F32:
                raise operand_error(self, "scales must be f32")
            if mode == "int4":
                G = self.attrs["wq_group"] or Kl
                if self.attrs["wq_group"] < 0 or (isinstance(Kl, int) and (Kl % 2 or Kl % G)):
                    raise operand_error(self, f"int4 needs an even K ({Kl}) that the group size ({G}) divides")
                want_s = (N, Kl // G if isinstance(Kl, int) else None)
            else:
                want_s = (N,)
            if s.type.rank != len(want_s) or any(isinstance(a, int) and isinstance(c, int) and a != c
                                                 for a, c in zip(s.type.shape, want_s)):
                raise operand_error(self, f"scales must be {list(want_s)}, got {s.type}")
            if z is not None and z.type != s.type:
                raise operand_error(self, f"zero points must match their scales {s.type}, got {z.type}")
        if b is not None and (b.type.dtype != DType.F32 or b.type.shape not in ((N,), (1, N))):
            raise operand_error(self, f"the bias must be f32 [N] or [1, N] (N = {N}), got {b.type}")
        if self.attrs["aq"] == "int8" and mode not in ("int8", "int4"):
            raise operand_error(self, f"aq=int8 (w8a8 / w4a8) needs wq=int8 or int4, got wq={mode}")
        if self.attrs["aq"] == "bf16" and mode not in ("int8", "int4"):
            raise operand_error(self, f"aq=bf16 (bf16 activations) needs wq=int8 or int4, got wq={mode}")
        return [TensorType(DType.F32, tuple(x.shape[:-1]) + (N,))]

    def reference(self, x, w, *extra):
        s, z, b = self._parts()
        ex = list(extra)
        s, z, b = (None if v is None else ex.pop(0) for v in (s, z, b))
        mode = self.attrs["wq"]
        wd = dequantize_weights(w, mode, self.attrs["wq_group"], s, z).astype(np.float32)
        xa = np.asarray(x, np.float32)
        if mode == "bf16" or self.attrs["aq"] == "bf16":
            xa = round_bf16(xa)
        if self.attrs["aq"] == "int8":  # w4a8: a scale per int4 group of each row
            xa = fake_quant_rows_int8(xa, self.attrs["wq_group"] if mode == "int4" else 0)
        y = xa @ wd.T
        if b is not None:
            y = y + np.asarray(b, np.float32).reshape(-1)
        return [np.asarray(y, np.float32)]
