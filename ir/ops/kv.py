"""KV-cache ops (issue 17 item 4): appending new keys/values into a cache buffer of fixed capacity.

``moec.kv_append`` is the in-place form of transformers' ``present = Concat(past, new)``: the cache is a
buffer of capacity M along the sequence axis whose rows ``< pos`` hold the context; the op writes the
T new rows at ``pos`` and returns the buffer.  Targets run it in place (the C kernel writes into the
buffer operand's memory and its result shares that memory: O(T) bytes written per call, never a copy
of the cache); the reference below is its functional meaning."""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import DType, TensorType


@op("moec.kv_append", operands=("cache", "new", "pos"), attrs={"axis": Attr("int", 2)})
class KvAppendOp(Operation):
    """cache [..., M, ...] (M on ``axis``), new [..., T, ...] (the other dims equal), pos an int64 scalar
    or [1]:  result = cache with ``result[..., pos:pos+T, ...] = new``  (0 <= pos, pos + T <= M; else an
    error).  Not pure: the buffer operand is updated in place by the targets."""

    def infer_types(self):
        c, n, p = (x.type for x in self.operands)
        if c.dtype != n.dtype:
            raise operand_error(self, f"cache {c} and new {n} differ in element type")
        if c.rank != n.rank or c.rank == 0:
            raise operand_error(self, f"cache {c} and new {n} must have the same rank (>= 1)")
        ax = self.attrs["axis"]
        if not -c.rank <= ax < c.rank:
            raise operand_error(self, f"axis {ax} is outside rank {c.rank}")
        ax %= c.rank
        for d, (a, b) in enumerate(zip(c.shape, n.shape)):
            if d != ax and isinstance(a, int) and isinstance(b, int) and a != b:
                raise operand_error(self, f"cache {c} and new {n} differ in dimension {d}")
        if p.dtype not in (DType.I64, DType.I32) or p.rank > 1:
            raise operand_error(self, f"pos must be an integer scalar or [1], not {p}")
        return [c]

    def reference(self, cache, new, pos):
        ax = self.attrs["axis"] % cache.ndim
        p = int(np.asarray(pos).reshape(-1)[0])
        t, m = new.shape[ax], cache.shape[ax]
        if p < 0 or p + t > m:
            raise ValueError(f"kv_append: rows {p}..{p + t} do not fit a cache of {m}")
        out = np.array(cache, copy=True)
        idx = [slice(None)] * cache.ndim
        idx[ax] = slice(p, p + t)
        out[tuple(idx)] = new
        return [out]


@op("moec.kv_attention", operands=("q", "k", "v", "pos", "mask?"),
    attrs={"scale": Attr("float", 1.0), "causal": Attr("bool", False)}, traits=("pure",))
class KvAttentionOp(Operation):
    """``moec.attention`` over the valid rows of cache buffers: q [B, Hq, S, D], k [B, Hkv, M, D] and
    v [B, Hkv, M, Dv] buffers of capacity M whose first L = pos + S rows are the keys/values (the S
    newest at pos..L), pos an int64 scalar or [1], mask (optional) broadcasting to [B, Hq, S, L]:

        y = attention(q, k[:, :, :L], v[:, :, :L], mask, scale, causal)   (moec.attention's semantics)

    Rows >= L are never part of the result (a kernel may read them with their scores at -inf)."""

    def infer_types(self):
        q, k, v, p = (x.type for x in self.operands[:4])
        if q.rank != 4 or k.rank != 4 or v.rank != 4:
            raise operand_error(self, f"q, k, v must have rank 4, not {q.rank}, {k.rank}, {v.rank}")
        if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_float:
            raise operand_error(self, "q, k, v must share one floating-point type")
        if p.dtype not in (DType.I64, DType.I32) or p.rank > 1:
            raise operand_error(self, f"pos must be an integer scalar or [1], not {p}")
        if len(self.operands) > 4 and self.operands[4] is not None:
            mt = self.operands[4].type
            if mt.rank > 4 or not mt.dtype.is_float:
                raise operand_error(self, f"the mask must be a float tensor of rank <= 4, not {mt}")
        return [TensorType(q.dtype, (q.shape[0], q.shape[1], q.shape[2], v.shape[3]))]

    def reference(self, q, k, v, pos, mask=None):
        from moec.ir.opdef import OPS
        p = int(np.asarray(pos).reshape(-1)[0])
        L = p + q.shape[2]
        if p < 0 or L > k.shape[2] or L > v.shape[2]:
            raise ValueError(f"kv_attention: {L} rows do not fit caches of {k.shape[2]} / {v.shape[2]}")
        att = OPS["moec.attention"]
        o = att.__new__(att)
        o.attrs = {"scale": self.attrs["scale"], "causal": self.attrs["causal"]}
        return att.reference(o, q, k[:, :, :L], v[:, :, :L], mask)
