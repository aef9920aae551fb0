"""Attention (issue 17 item 2): scaled dot-product attention as one op.

Recognised from its math by passes/recognize_decoder.py; fused C kernel in codegen/c/kernels_attention.py
(flash-style: online softmax over key blocks).  Targets run it only where their description lists it
(``TargetDesc.fused_decoder_ops``)."""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import TensorType, broadcast_shapes
from moec.ir.ops.base import same_dtype


def _dims_agree(a, b) -> bool:
    return not (isinstance(a, int) and isinstance(b, int) and a != b)


@op("moec.attention", operands=("q", "k", "v", "mask?"),
    attrs={"scale": Attr("float", 1.0), "causal": Attr("bool", False)}, traits=("pure",))
class AttentionOp(Operation):
    """Scaled dot-product attention with grouped key/value heads.

    q [B, Hq, S, D], k [B, Hkv, T, D], v [B, Hkv, T, Dv], Hq a multiple of Hkv (GQA; MQA: Hkv = 1;
    query head h reads key/value head h // (Hq / Hkv)); mask (optional) an additive f32 tensor that
    broadcasts to [B, Hq, S, T].  For each query row i:

        s_j = scale * (q_i . k_j) + mask_ij      (j < T; causal: s_j = -inf where j > i + T - S)
        y_i = sum_j softmax(s)_j v_j             (a row with no finite s_j gives y_i = 0)

    ``causal`` aligns the query rows with the last S keys (the keys of a cache come first).  Scores are
    f32 (as the decomposed graph computes them); the softmax is taken in f64 here, f32 in the kernel."""

    def infer_types(self):
        dt = same_dtype(self, 0, 1, 2)
        if not dt.is_float:
            raise operand_error(self, "attention needs floating-point q, k, v")
        q, k, v = (x.type for x in self.operands[:3])
        if q.rank != 4 or k.rank != 4 or v.rank != 4:
            raise operand_error(self, f"q, k, v must have rank 4 ([B, H, S, D]), not {q.rank}, {k.rank}, {v.rank}")
        B, Hq, S, D = q.shape
        if not (_dims_agree(B, k.shape[0]) and _dims_agree(B, v.shape[0])):
            raise operand_error(self, "q, k, v batch dims differ")
        if not (_dims_agree(D, k.shape[3]) and _dims_agree(k.shape[1], v.shape[1])
                and _dims_agree(k.shape[2], v.shape[2])):
            raise operand_error(self, f"q {q}, k {k}, v {v} do not fit ([B,Hq,S,D], [B,Hkv,T,D], [B,Hkv,T,Dv])")
        hq, hkv = Hq, k.shape[1]
        if isinstance(hq, int) and isinstance(hkv, int) and (hkv == 0 or hq % hkv):
            raise operand_error(self, f"{hq} query heads are not a multiple of {hkv} key/value heads")
        if len(self.operands) > 3 and self.operands[3] is not None:
            mt = self.operands[3].type
            if mt.rank > 4 or not mt.dtype.is_float:
                raise operand_error(self, f"the mask must be a float tensor of rank <= 4, not {mt}")
            try:
                broadcast_shapes(mt.shape, (B, Hq, S, k.shape[2]))
            except ValueError as e:
                raise operand_error(self, f"the mask does not broadcast to the scores: {e}") from None
        return [TensorType(dt, (B, Hq, S, v.shape[3]))]

    def reference(self, q, k, v, mask=None):
        B, Hq, S, D = q.shape
        Hkv, T = k.shape[1], k.shape[2]
        if k.shape[0] != B or v.shape[0] != B or k.shape[3] != D or v.shape[1] != Hkv or v.shape[2] != T:
            raise ValueError(f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}")
        if Hkv == 0 or Hq % Hkv:
            raise ValueError(f"{Hq} query heads are not a multiple of {Hkv} key/value heads")
        g = Hq // Hkv
        kk = np.repeat(k.astype(np.float32), g, axis=1)
        vv = np.repeat(v.astype(np.float64), g, axis=1)
        s = np.matmul(q.astype(np.float32), np.swapaxes(kk, -1, -2)) * np.float32(self.attrs["scale"])
        if mask is not None:
            s = s + np.broadcast_to(mask.astype(np.float32), s.shape)
        if self.attrs["causal"]:
            i = np.arange(S)[:, None]
            j = np.arange(T)[None, :]
            s = np.where(j > i + (T - S), np.float32(-np.inf), s)
        s = s.astype(np.float64)
        with np.errstate(all="ignore"):
            mx = np.max(s, axis=-1, keepdims=True) if T else np.zeros(s.shape[:-1] + (1,))
            live = ~np.isneginf(mx)  # (NaN scores stay NaN)
            e = np.where(live, np.exp(s - np.where(live, mx, 0.0)), 0.0)
            den = np.sum(e, axis=-1, keepdims=True)
            p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
        y = np.matmul(p, vv)
        return [y.astype(q.dtype)]


@op("moec.rotary", operands=("x", "cos", "sin"), attrs={"interleaved": Attr("bool", False)}, traits=("pure",))
class RotaryOp(Operation):
    """Rotary position embedding: y = x * cos + rot(x) * sin, cos and sin broadcasting to x's shape, the
    last dim D even.  rot(x) = concat(-x[..., D/2:], x[..., :D/2]) (transformers' rotate_half), or with
    ``interleaved`` the pairs (x[2i], x[2i+1]) -> (-x[2i+1], x[2i])."""

    def infer_types(self):
        dt = same_dtype(self, 0, 1, 2)
        x = self.operands[0].type
        if not dt.is_float or x.rank < 1:
            raise operand_error(self, "rotary needs a floating-point x of rank >= 1")
        D = x.shape[-1]
        if isinstance(D, int) and D % 2:
            raise operand_error(self, f"the rotated dim has odd size {D}")
        for v in self.operands[1:]:
            t = v.type
            if t.rank > x.rank or not all(c == 1 or _dims_agree(c, d)
                                          for c, d in zip(t.shape, x.shape[x.rank - t.rank:])):
                raise operand_error(self, f"cos/sin {t} do not broadcast to x {x}")
        return [x]

    def reference(self, x, cos, sin):
        D = x.shape[-1]
        if D % 2:
            raise ValueError(f"the rotated dim has odd size {D}")
        if np.broadcast_shapes(x.shape, cos.shape, sin.shape) != x.shape:
            raise ValueError(f"cos {cos.shape} / sin {sin.shape} do not broadcast to x {x.shape}")
        if self.attrs["interleaved"]:
            rot = np.stack([-x[..., 1::2], x[..., 0::2]], axis=-1).reshape(x.shape)
        else:
            rot = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], axis=-1)
        return [(x * cos + rot * sin).astype(x.dtype)]
