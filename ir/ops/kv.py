"""KV-cache ops (issue 17 item 4): appending new keys/values into a cache buffer of fixed capacity.

``moec.kv_append`` is the in-place form of transformers' ``present = Concat(past, new)``: the cache is a
buffer of capacity M along the sequence axis whose rows ``< pos`` hold the context; the op writes the
T new rows at ``pos`` and returns the buffer.  Targets run it in place (the C kernel writes into the
buffer operand's memory and its result shares that memory: O(T) bytes written per call, never a copy
of the cache); the reference below is its functional meaning.

**Half-precision caches.**  A cache operand may be f16 where the queries / new keys and values are f32 (a
property of the decode step: compiler/decode.py's ``kv_cache``, what llama.cpp and vLLM keep by default):
``kv_append`` rounds the f32 rows to f16 when it writes them (round to nearest even, numpy's astype), and
the attention ops read the cache's f16 rows widened to f32 (exact).  Every other operand and the result
keep f32; the rounding of the stored keys and values is the only difference from an f32 cache (its size:
tests/test_kv_f16.py)."""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import DType, TensorType


def _cache_types(q: DType) -> tuple:
    """The element types a cache operand may have beside queries of type q: q's, or f16 under f32."""
    return (q, DType.F16) if q == DType.F32 else (q,)


@op("moec.kv_append", operands=("cache", "new", "pos"), attrs={"axis": Attr("int", 2)})
class KvAppendOp(Operation):
    """cache [..., M, ...] (M on ``axis``), new [..., T, ...] (the other dims equal), pos an int64 scalar
    or [1]:  result = cache with ``result[..., pos:pos+T, ...] = new``  (0 <= pos, pos + T <= M; else an
    error); an f16 cache takes f32 rows rounded to f16 (nearest even).  Not pure: the buffer operand is
    updated in place by the targets."""

    def infer_types(self):
        c, n, p = (x.type for x in self.operands)
        if c.dtype != n.dtype and not (c.dtype == DType.F16 and n.dtype == DType.F32):
            raise operand_error(self, f"cache {c} and new {n} differ in element type (an f16 cache takes f16 or "
                                      "f32 rows)")
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
        out[tuple(idx)] = np.asarray(new).astype(out.dtype)  # (f32 -> f16: round to nearest even)
        return [out]


@op("moec.kv_attention", operands=("q", "k", "v", "pos", "mask?"),
    attrs={"scale": Attr("float", 1.0), "causal": Attr("bool", False)}, traits=("pure",))
class KvAttentionOp(Operation):
    """``moec.attention`` over the valid rows of cache buffers: q [B, Hq, S, D], k [B, Hkv, M, D] and
    v [B, Hkv, M, Dv] buffers of capacity M whose first L = pos + S rows are the keys/values (the S
    newest at pos..L), pos an int64 scalar or [1], mask (optional) broadcasting to [B, Hq, S, L]:

        y = attention(q, k[:, :, :L], v[:, :, :L], mask, scale, causal)   (moec.attention's semantics)

    Rows >= L are never part of the result (a kernel may read them with their scores at -inf).  k and v
    may be f16 buffers with an f32 q (a half-precision cache: read widened to f32)."""

    def infer_types(self):
        q, k, v, p = (x.type for x in self.operands[:4])
        if q.rank != 4 or k.rank != 4 or v.rank != 4:
            raise operand_error(self, f"q, k, v must have rank 4, not {q.rank}, {k.rank}, {v.rank}")
        if not q.dtype.is_float or k.dtype != v.dtype or k.dtype not in _cache_types(q.dtype):
            raise operand_error(self, "q, k, v must share one floating-point type (or f32 q and f16 k, v)")
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
        k, v = (np.asarray(x[:, :, :L]).astype(q.dtype) for x in (k, v))  # (an f16 cache: widened, exact)
        return att.reference(o, q, k, v, mask)


@op("moec.kv_step_attention", operands=("q", "k_cache", "v_cache", "k_new", "v_new", "pos"),
    attrs={"scale": Attr("float", 1.0), "window": Attr("int", 0)}, traits=("pure",))
class KvStepAttentionOp(Operation):
    """Attention of S new query rows over a cache read in place plus the S new keys (the decode step's
    attention, compiler/decode.py's KVStep; recognised by passes/recognize_decoder.py):

    q [B, Hq, S, D]; k_cache [B, Hkv, M, D] and v_cache [B, Hkv, M, Dv] (rows, as ``moec.kv_append`` writes
    them and ``moec.kv_attention`` reads them), buffers of capacity M whose positions ``j < pos`` hold the
    context;
    k_new [B, Hkv, S, D], v_new [B, Hkv, S, Dv] the new tokens' keys/values (positions pos .. pos+S-1);
    pos an integer scalar or [1]; Hq a multiple of Hkv (query head h reads kv head h // (Hq / Hkv)).
    Query row i (position pos + i) sees cache key j iff j < pos, new key i' iff i' <= i, and, with a
    ``window`` W > 0, only keys at positions p with pos + i - p < W.  Then, one softmax over both sets:

        s = scale * q_i . k    over the visible keys;    y_i = sum softmax(s) v

    Cache positions >= pos are never part of the result (a kernel reads only the first pos).  The caches
    may be f16 with everything else f32 (a half-precision cache: its rows read widened to f32)."""

    def infer_types(self):
        q, kc, vc, kn, vn, p = (x.type for x in self.operands)
        if any(t.rank != 4 for t in (q, kc, vc, kn, vn)):
            raise operand_error(self, "q, k_cache, v_cache, k_new, v_new must have rank 4")
        if not (q.dtype == kn.dtype == vn.dtype) or not q.dtype.is_float or kc.dtype != vc.dtype \
                or kc.dtype not in _cache_types(q.dtype):
            raise operand_error(self, "q and the keys/values must share one floating-point type (the caches may "
                                      "be f16 with f32 q)")
        if p.dtype not in (DType.I64, DType.I32) or p.rank > 1:
            raise operand_error(self, f"pos must be an integer scalar or [1], not {p}")
        ok = lambda a, b: not (isinstance(a, int) and isinstance(b, int) and a != b)  # noqa: E731
        B, Hq, S, D = q.shape
        Hkv, M, Dv = kc.shape[1], kc.shape[2], vc.shape[3]
        if not (all(ok(B, t.shape[0]) for t in (kc, vc, kn, vn)) and all(ok(Hkv, t.shape[1]) for t in (vc, kn, vn))
                and ok(D, kc.shape[3]) and ok(D, kn.shape[3]) and ok(M, vc.shape[2]) and ok(Dv, vn.shape[3])
                and ok(S, kn.shape[2]) and ok(S, vn.shape[2])):
            raise operand_error(self, f"q {q}, k_cache {kc}, v_cache {vc}, k_new {kn}, v_new {vn} do not fit "
                                "([B,Hq,S,D], [B,Hkv,M,D], [B,Hkv,M,Dv], [B,Hkv,S,D], [B,Hkv,S,Dv])")
        if isinstance(Hq, int) and isinstance(Hkv, int) and (Hkv == 0 or Hq % Hkv):
            raise operand_error(self, f"{Hq} query heads are not a multiple of {Hkv} key/value heads")
        if self.attrs["window"] < 0:
            raise operand_error(self, f"window {self.attrs['window']} must be >= 0 (0: none)")
        return [TensorType(q.dtype, (B, Hq, S, Dv))]

    def reference(self, q, k_cache, v_cache, k_new, v_new, pos):
        p = int(np.asarray(pos).reshape(-1)[0])
        B, Hq, S, D = q.shape
        Hkv, M = k_cache.shape[1], k_cache.shape[2]
        if p < 0 or p > M:
            raise ValueError(f"kv_step_attention: position {p} outside a cache of {M}")
        if Hkv == 0 or Hq % Hkv:
            raise ValueError(f"kv_step_attention: {Hq} query heads, {Hkv} key/value heads")
        g = Hq // Hkv
        f8 = np.float64  # (an f16 cache widened: exact)
        keys = np.concatenate([k_cache[:, :, :p].astype(f8), k_new.astype(f8)], axis=2)    # [B,Hkv,p+S,D]
        vals = np.concatenate([v_cache[:, :, :p].astype(f8), v_new.astype(f8)], axis=2)    # [B,Hkv,p+S,Dv]
        keys, vals = (np.repeat(x, g, axis=1) for x in (keys, vals))
        s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), keys) * self.attrs["scale"]
        qpos = p + np.arange(S)[:, None]
        kpos = np.arange(p + S)[None, :]
        seen = kpos <= qpos
        w = self.attrs["window"]
        if w > 0:
            seen &= qpos - kpos < w
        s = np.where(seen, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        y = np.einsum("bhij,bhjd->bhid", e / e.sum(-1, keepdims=True), vals)
        return [y.astype(q.dtype)]
