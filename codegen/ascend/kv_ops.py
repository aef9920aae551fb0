"""The KV-cache ops (ir/ops/kv.py) on the NPU: vec_kv (kernels/vector_kernels.cpp), one AIV kernel in three modes.

    moec.kv_step_attention   the decode step's attention over the cache read in place plus the new keys
    moec.kv_attention        attention over a cache buffer's first pos + S rows (no mask operand; a mask: host)
    moec.kv_append           the new rows written into the cache buffer in place (the result is that buffer)

The cache may be f16 under f32 queries (a half-precision cache, compiler/decode.py's ``kv_cache``): its rows
move between GM and the Unified Buffer as half (half the bytes of the DMA), are widened to float by Cast for
the arithmetic and, appended, rounded to half by Cast (CAST_RINT, nearest even: numpy's astype, bit for bit).
Every other operand is f32.  The position is read by the kernel from GM (no host read of tensor data); one
outside the cache sets the kernel's status word and the plan's check step reports the op's error.

Cost model (an ESTIMATE, like vector_ops.estimate): the attention reads every visible cache row once (its own
element size) plus q, the new rows and y; the vector work is ~4 instructions per key element (Mul, the
ReduceSum, the p v Muls + Add) plus the widening Cast; the scalar unit collects one score per key (a V_S round
trip, ~20 cycles each); launch 5 us.  At a context of P positions: max(HBM bytes / bandwidth, vector time,
scalar time) + launch."""
from __future__ import annotations

import struct
from typing import List, Optional

import numpy as np

from moec.codegen.ascend.launch_plan import Sym, smax, smin

KV_OPS = ("moec.kv_step_attention", "moec.kv_attention", "moec.kv_append")
KV_STEP, KV_APPEND, KV_ATTN = 0, 1, 2
FIELDS = (("mode", "i"), ("B", "i"), ("Hq", "i"), ("Hkv", "i"), ("S", "i"), ("D", "i"), ("DV", "i"), ("M", "i"),
          ("window", "i"), ("causal", "i"), ("scale", "f"), ("cdt", "i"), ("nk", "i"), ("pos64", "i"),
          ("outer", "i"), ("T", "i"), ("inner", "i"), ("tile", "i"))   # KvTiling's order
CDT = {"f32": 0, "f16": 2}
SCORE_SCALAR_CYCLES = 20   # one key's score through the scalar unit (V_S sync + GetValue + SetValue): an assumption
NK_MAX = 255               # key rows per tile (DataCopyPad's blockCount, the score tile)


def handles(o) -> bool:
    return o.name in KV_OPS


def kv_reason(m, o) -> Optional[str]:
    """None when `o` runs on vec_kv, else why it stays on the host."""
    ts = [v.type for v in o.operands if v is not None]
    cache = ts[0] if o.name == "moec.kv_append" else ts[1]
    if cache.dtype.mlir not in CDT:
        return f"a {cache.dtype.mlir} cache (vec_kv keeps f32 or f16 caches)"
    floats = [t for i, t in enumerate(ts) if t.dtype.is_float and
              not (o.name == "moec.kv_append" and i == 0) and not (o.name != "moec.kv_append" and i in (1, 2))]
    if any(t.dtype.mlir != "f32" for t in floats):
        return "queries, new keys / values or results that are not f32 (vec_kv computes f32 rows over an f32 or f16 cache)"
    if o.name == "moec.kv_attention" and len(o.operands) > 4 and o.operands[4] is not None:
        return "an attention mask operand (vec_kv takes causal or no masking)"
    if o.name != "moec.kv_append":
        D, DV = ts[0].shape[3], ts[2].shape[3]
        if not (isinstance(D, int) and isinstance(DV, int)):
            return "head sizes not known at compile time (vec_kv sizes its key tiles from them)"
        from moec.codegen.ascend.vector_ops import usable_ub
        from moec.targets.description import ascend_target
        if tile_bytes(8, D, DV, cache.dtype.itemsize, o.name == "moec.kv_step_attention") > usable_ub(ascend_target()):
            return f"heads of {D} / {DV} elements: 8 key rows do not fit the Unified Buffer beside q and acc"
    return None


def _tiling(**kw):
    if any(isinstance(v, Sym) for v in kw.values()):
        from moec.codegen.ascend.launch_plan import Tiling
        return Tiling([(k, kw.get(f, 0)) for f, k in FIELDS])
    return struct.pack("<" + "".join(k for _, k in FIELDS), *[(float if k == "f" else int)(kw.get(f, 0))
                                                               for f, k in FIELDS])


def _rowb(n: int, e: int) -> int:
    """A row of n elements of e bytes in the Unified Buffer: whole 32-byte blocks."""
    return -(-n * e // 32) * 32


def tile_bytes(nk: int, D: int, DV: int, csize: int, step: bool) -> int:
    """The Unified Buffer vec_kv's attention holds with tiles of nk key rows (kv_attn_body's buffers): the raw cache
    rows of keys and values (the cache's type), their float copies for an f16 cache (the same row stride), the new
    rows' float tiles (the step), the scores; q, acc, the p v row, the product row, the reduction scratch and words,
    and 32 bytes of rounding per buffer."""
    dc, dvc = _rowb(D, csize) // csize, _rowb(DV, csize) // csize   # (elements per row in the cache's type)
    b = nk * (dc + dvc) * csize + nk * 4
    if csize != 4:
        b += nk * (dc + dvc) * 4
    if step:
        b += nk * (_rowb(D, 4) + _rowb(DV, 4))
    dm = max(dc, _rowb(D, 4) // 4)
    b += 2 * _rowb(D, 4) + 2 * _rowb(DV, 4) + max(dm, nk) * 4 + 64 + 64
    return b + 13 * 32


def key_tile(ub_bytes: int, D: int, DV: int, csize: int, step: bool) -> int:
    """Key rows per tile: the most (a multiple of 8, at most NK_MAX) whose buffers fit ``ub_bytes``
    (kv_reason keeps heads whose 8-row tiles do not fit on the host)."""
    nk = NK_MAX // 8 * 8
    while nk > 8 and tile_bytes(nk, D, DV, csize, step) > ub_bytes:
        nk -= 8
    return nk


def kv_launch(dev, o, args: List) -> List:
    """Plan `o` on vec_kv (``dev``: a launch_plan.Recorder): its result buffers (kv_append: the cache's own)."""
    from moec.codegen.ascend.vector_ops import usable_ub
    ub = usable_ub(dev.desc)
    status = dev.new((8,), np.int32)
    if o.name == "moec.kv_append":
        cache = dev.buf(args[0])
        new = dev.buf(args[1], np.float32)
        pos = dev.buf(args[2])
        ax = o.attrs["axis"] % len(cache.shape)
        outer = 1
        for d in cache.shape[:ax]:
            outer = outer * d
        inner = 1
        for d in cache.shape[ax + 1:]:
            inner = inner * d
        M, T = cache.shape[ax], new.shape[ax]
        tile = max(64, min(8192, ub // 4 // 8 // 64 * 64))  # (2 float + 2 cache-type buffers, whole 256-byte repeats)
        items = outer * T * ((inner + tile - 1) // tile) if not isinstance(inner, Sym) else outer * T
        tb = _tiling(mode=KV_APPEND, M=M, cdt=CDT[_dt(cache)], pos64=int(pos.dtype == np.int64), outer=outer, T=T,
                     inner=inner, tile=tile)
        with dev.when(outer * T * inner):
            dev.launch("vec_kv", smax(1, smin(dev.cores, items)), [cache, new, pos, status, cache, cache, cache, cache],
                       tb)
        dev.check(status, "moec.kv_append: the new rows do not fit the cache at this position")
        return [cache]
    step = o.name == "moec.kv_step_attention"
    q = dev.buf(args[0], np.float32)
    k, v = dev.buf(args[1]), dev.buf(args[2])
    kn = dev.buf(args[3], np.float32) if step else q
    vn = dev.buf(args[4], np.float32) if step else q
    pos = dev.buf(args[5] if step else args[3])
    B, Hq, S, D = q.shape
    Hkv, M, DV = k.shape[1], k.shape[2], v.shape[3]
    y = dev.new((B, Hq, S, DV), np.float32)
    nk = key_tile(ub, int(D), int(DV), k.dtype.itemsize, step)
    tb = _tiling(mode=KV_STEP if step else KV_ATTN, B=B, Hq=Hq, Hkv=Hkv, S=S, D=D, DV=DV, M=M,
                 window=o.attrs.get("window", 0), causal=int(bool(o.attrs.get("causal", True))),
                 scale=float(o.attrs["scale"]), cdt=CDT[_dt(k)], nk=nk, pos64=int(pos.dtype == np.int64))
    with dev.when(B * Hq * S):
        dev.launch("vec_kv", smax(1, smin(dev.cores, B * Hq * S)),
                   [q, k, v, kn, vn, pos, y, status], tb)
    dev.check(status, f"{o.name}: the position is outside the cache of {M} rows")
    return [y]


def _dt(b) -> str:
    return {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}[np.dtype(b.dtype)]


def estimate(o, T: int, hw: dict, clock_hz: float, lanes: int, launch_s: float) -> dict:
    """Cost-model ESTIMATE of one vec_kv launch at T new tokens, the cache full (its capacity M of positions: the
    longest context the step reads; 1024 where M is symbolic)."""
    def dim(d):
        return d if isinstance(d, int) else T
    cap = (o.operands[0] if o.name == "moec.kv_append" else o.operands[1]).type.shape[2]
    context = cap if isinstance(cap, int) else 1024
    if o.name == "moec.kv_append":
        c, n = o.operands[0].type, o.operands[1].type
        elems = int(np.prod([dim(d) for d in n.shape], dtype=np.int64))
        t_hbm = elems * (4 + c.dtype.itemsize) / hw["hbm"]
        cores = max(1, min(hw["aiv"], elems // max(1, dim(n.shape[-1]))))
        t_vec = elems * 2 / (cores * lanes * clock_hz)
    else:
        q, k = o.operands[0].type, o.operands[1].type
        v = o.operands[2].type
        B, Hq, S, D = (dim(d) for d in q.shape)
        Hkv, DV = dim(k.shape[1]), dim(v.shape[3])
        keys = context + S
        rows = B * Hq * S
        cores = max(1, min(hw["aiv"], rows))
        t_hbm = (B * Hkv * keys * (D + DV) * k.dtype.itemsize + 4 * rows * (D + DV)) / hw["hbm"]
        per_key = 4 * (D + DV) + (D + DV if k.dtype.itemsize == 2 else 0)
        t_vec = rows * keys * per_key / lanes / (cores * clock_hz) * 1.0
        t_scalar = rows * keys * SCORE_SCALAR_CYCLES / (cores * clock_hz)
        t_vec = max(t_vec, t_scalar)
    t = max(t_hbm, t_vec) + launch_s
    bound = max((t_hbm, "HBM"), (t_vec, "vector/scalar"), (launch_s, "launch"))[1]
    return {"kernel": "vec_kv", "tokens": T, "blockDim": cores, "estimate_us": round(t * 1e6, 2), "bound": bound,
            "hbm_fraction": round(t_hbm / t, 4), "context": context}
