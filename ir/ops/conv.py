"""Convolution (ONNX Conv semantics; torch's aten.convolution without transposition)."""
from __future__ import annotations

import itertools
from typing import List

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import TensorType
from moec.ir.ops.base import alloc_guard, same_dtype


def conv_out_dim(size, k: int, stride: int, pad_begin: int, pad_end: int, dilation: int):
    """The output size of one spatial dim: floor((size + pads - dilation * (k - 1) - 1) / stride) + 1;
    a symbolic ``size`` stays that symbol where the conv keeps the length (stride 1, pads = the dilated
    kernel's reach), else is unknown (None)."""
    span = dilation * (k - 1) + 1
    if isinstance(size, int):
        return (size + pad_begin + pad_end - span) // stride + 1
    if size is not None and stride == 1 and pad_begin + pad_end == span - 1:
        return size
    return None


@op("moec.conv", operands=("x", "w", "bias?"),
    attrs={"strides": Attr("ints", [], doc="per spatial dim (empty: all 1)"),
           "pads": Attr("ints", [], doc="begin of every spatial dim, then end of every spatial dim (empty: 0)"),
           "dilations": Attr("ints", [], doc="per spatial dim (empty: all 1)"),
           "group": Attr("int", 1)},
    traits=("pure",))
class ConvOp(Operation):
    """Cross-correlation of x [N, C, S1..Sn] (n >= 1 spatial dims) with w [M, C / group, K1..Kn]:
    out[b, m, o...] = bias[m] + sum_{c, k...} xpad[b, g * C/group + c, o * stride + k * dilation] w[m, c, k...]
    with g = m // (M / group) and xpad x zero-padded by ``pads``; out [N, M, O1..On],
    O = floor((S + pad_begin + pad_end - dilation * (K - 1) - 1) / stride) + 1 (at least 1).
    Floating point only; the sum is accumulated in f64 and rounded once to x's type."""

    def spatial(self):
        n = self.operands[0].type.rank - 2
        a = self.attrs
        strides = list(a["strides"]) or [1] * n
        pads = list(a["pads"]) or [0] * (2 * n)
        dil = list(a["dilations"]) or [1] * n
        return n, strides, pads, dil

    def infer_types(self) -> List[TensorType]:
        dt = same_dtype(self, *range(len(self.operands)))
        x, w = (v.type for v in self.operands[:2])
        if not dt.is_float:
            raise operand_error(self, f"needs floating-point operands, got {dt.mlir}")
        if x.rank < 3:
            raise operand_error(self, f"x must be [N, C, spatial...] (rank >= 3), got rank {x.rank}")
        if w.rank != x.rank:
            raise operand_error(self, f"w must have x's rank {x.rank} ([M, C / group, kernel...]), got {w.rank}")
        n, strides, pads, dil = self.spatial()
        if len(strides) != n or len(pads) != 2 * n or len(dil) != n:
            raise operand_error(self, f"strides / dilations need {n} values and pads {2 * n} ({n} spatial dims), "
                                      f"got {len(strides)}, {len(dil)} and {len(pads)}")
        if any(s < 1 for s in strides) or any(d < 1 for d in dil) or any(p < 0 for p in pads):
            raise operand_error(self, f"strides and dilations must be >= 1 and pads >= 0, got strides {strides}, "
                                      f"dilations {dil}, pads {pads}")
        g = self.attrs["group"]
        if g < 1:
            raise operand_error(self, f"group must be >= 1, got {g}")
        M, Cg = w.shape[0], w.shape[1]
        if not isinstance(M, int) or not isinstance(Cg, int) or not all(isinstance(k, int) for k in w.shape[2:]):
            raise operand_error(self, f"w must have a static shape, got {w.shape}")
        if M % g:
            raise operand_error(self, f"{M} output channels do not divide into {g} groups")
        C = x.shape[1]
        if isinstance(C, int) and C != Cg * g:
            raise operand_error(self, f"x has {C} channels, w expects {Cg} per group x {g} groups = {Cg * g}")
        if len(self.operands) > 2 and self.operands[2].type.shape != (M,):
            raise operand_error(self, f"bias must be [{M}], got {list(self.operands[2].type.shape)}")
        out = [x.shape[0], M]
        for i in range(n):
            o = conv_out_dim(x.shape[2 + i], w.shape[2 + i], strides[i], pads[i], pads[n + i], dil[i])
            if isinstance(o, int) and o < 1:
                raise operand_error(self, f"spatial dim {i}: the dilated kernel ({dil[i] * (w.shape[2 + i] - 1) + 1})"
                                          f" is longer than the padded input ({x.shape[2 + i]} + {pads[i]} + "
                                          f"{pads[n + i]})")
            out.append(o)
        return [TensorType(dt, tuple(out))]

    def reference(self, x, w, bias=None):
        n, strides, pads, dil = self.spatial()
        g = self.attrs["group"]
        N, C = x.shape[:2]
        M, Cg = w.shape[:2]
        if C != Cg * g:
            raise ValueError(f"x has {C} channels, w expects {Cg * g}")
        K = w.shape[2:]
        O = [conv_out_dim(x.shape[2 + i], K[i], strides[i], pads[i], pads[n + i], dil[i]) for i in range(n)]
        if any(o < 1 for o in O):
            raise ValueError(f"the dilated kernel is longer than the padded input (output spatial dims {O})")
        alloc_guard(self, [N, M] + O, 8)
        xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pads[i], pads[n + i]) for i in range(n)])
        xp = xp.reshape((N, g, Cg) + xp.shape[2:])
        wg = w.astype(np.float64).reshape((g, M // g, Cg) + tuple(K))
        acc = np.zeros((N, g, M // g) + tuple(O), np.float64)
        for k in itertools.product(*[range(kk) for kk in K]):
            sl = tuple(slice(k[i] * dil[i], k[i] * dil[i] + strides[i] * (O[i] - 1) + 1, strides[i]) for i in range(n))
            patch = xp[(slice(None), slice(None), slice(None)) + sl]  # [N, g, Cg, O...]
            acc += np.einsum("ngc...,gmc->ngm...", patch, wg[(Ellipsis,) + tuple(k)])
        acc = acc.reshape((N, M) + tuple(O))
        if bias is not None:
            acc += bias.astype(np.float64).reshape((1, M) + (1,) * n)
        return [acc.astype(x.dtype)]
