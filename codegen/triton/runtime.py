"""Launch helpers for the Triton kernels: what the generated launcher (model_triton.py) calls.

Tensors are torch tensors on the run device ("cuda", or "cpu" under the interpreter).  Tile sizes
come from :mod:`.tuning` (autotuned per layer shape, token bucket and GPU; defaults otherwise).
Ops with no Triton kernel run on the host through the op's reference semantics (numpy, by the IR
walker: host.py); the launcher counts them (``host_ops``), nothing is hidden.
"""
from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from moec.codegen.triton import ensure_triton

triton, DEVICE = ensure_triton()
import torch  # noqa: E402

from moec.codegen.triton import kernels as K  # noqa: E402
from moec.codegen.triton import tuning  # noqa: E402

from moec.ir.ops.moe import (ACTIVATION_CODES, NORM_CODES as NORM, POST_CODES as POST,  # noqa: E402
                           SCORING_CODES as SCORING)

# the activations kernels._act implements, with their codes from ir/ops/moe.py (others: KeyError)
ACT = {a: ACTIVATION_CODES[a] for a in ("swiglu", "gelu", "gelu_tanh", "relu", "silu", "identity", "relu2",
                                        "geglu", "geglu_tanh", "softcap_swiglu")}
from moec.codegen.triton.runtime_names import BINARY, REDUCE, UNARY, WQ_CODES as WQ  # noqa: E402,F401

TORCH_DTYPE = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16,
               "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8, "ui8": torch.uint8,
               "i1": torch.bool}
INTERPRET = DEVICE == "cpu"

# Per-stage timing for the GPU bench (moec.bench_triton): when set, an object whose mark(label) is called
# after the launches of each stage of the MoE layer (align, gemm1, gemm2, combine; the bench marks
# routing itself) -- on a GPU it records a CUDA event, so nothing waits.  None (always, outside the
# bench's profiling pass): one global lookup per stage.
PROFILE = None


def _mark(label: str) -> None:
    if PROFILE is not None:
        PROFILE.mark(label)


def _prec(dt: torch.dtype) -> str:
    # f32 operands: exact IEEE products (the tolerance is f32's); tf32 would lose 13 mantissa bits
    return "ieee" if dt == torch.float32 else "tf32"


def _cdt(dt: torch.dtype):
    """Type of the grouped GEMMs' dot inputs.  Under the interpreter f16/bf16 tiles are widened to f32
    (exact: the products of two 16-bit floats are exact in f32, and accumulation is f32 on the GPU too)
    because Triton's interpreter multiplies bf16 dot inputs as raw integer bit patterns."""
    if INTERPRET:
        return K.tl.float32
    return {torch.float32: K.tl.float32, torch.float16: K.tl.float16, torch.bfloat16: K.tl.bfloat16}[dt]


def _p2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


# -- MoE --------------------------------------------------------------------------------------
def moe_route(logits, bias, *, k, scoring, n_group, topk_group, group_score, post, norm, norm_eps, scale,
              capacity, tie="low", drop=False, min_weight=0.0, jitter_eps=0.0, norm_min=0.0,
              group_fill=float("-inf"), n_shared=0, n_skip=0):
    """moe.route (ir/ops/moe.py).  n_skip: the last n_skip columns are skip classes (Zaya): selected by the kernel
    like the others, then a slot that chose one is dropped (id -1, weight 0)."""
    if n_shared:
        return _route_shared(logits, bias, k=k, scoring=scoring, post=post, norm=norm, norm_eps=norm_eps,
                             scale=scale, tie=tie, drop=drop, min_weight=min_weight, norm_min=norm_min,
                             n_shared=n_shared)
    seq = logits.shape[1] if logits.dim() == 3 else 0  # [B, S, E] (with a capacity): counted per sequence
    logits = logits.contiguous().reshape(-1, logits.shape[-1])
    T, E = logits.shape
    w = torch.empty((T, k), dtype=logits.dtype, device=logits.device)
    ids = torch.empty((T, k), dtype=torch.int64, device=logits.device)
    if T:
        K.route_kernel[(T,)](logits, bias if bias is not None else logits, w, ids, E, logits.stride(0),
                             float(norm_eps), float(scale), K=k, BLOCK_E=_p2(E), BLOCK_K=_p2(k),
                             SCORING=SCORING[scoring], HAS_BIAS=bias is not None, N_GROUP=n_group,
                             TOPK_GROUP=topk_group, GROUP_TOP2=group_score == "top2_sum", BLOCK_G=_p2(n_group),
                             POST=POST[post], NORM=NORM[norm], TIE_HIGH=tie == "high", DROP=bool(drop),
                             min_weight=float(min_weight), jitter_eps=float(jitter_eps),
                             norm_min=float(norm_min), group_fill=float(group_fill))
    if capacity > 0:  # Switch: in token order, the (C+1)-th token choosing an expert is dropped
        oh = torch.nn.functional.one_hot(ids[:, 0].clamp(min=0), E) * (ids[:, :1] >= 0)  # (dropped slots: none)
        cs = torch.cumsum(oh.reshape(-1, seq, E), 1).reshape(T, E) if seq else torch.cumsum(oh, 0)
        pos = (cs * oh).sum(1)
        drop = pos > capacity
        ids = torch.where(drop[:, None], torch.full_like(ids, -1), ids)
        w = torch.where(drop[:, None], torch.zeros_like(w), w)
    if n_skip:
        skip = ids >= E - n_skip
        ids = torch.where(skip, torch.full_like(ids, -1), ids)
        w = torch.where(skip, torch.zeros_like(w), w)
    return w, ids


def _route_shared(logits, bias, *, k, scoring, post, norm, norm_eps, scale, tie, drop, min_weight, norm_min,
                  n_shared):
    """moe.route with always-on experts (n_shared, see ir/ops/moe.py; Inkling): torch ops on the device (the
    route kernel has no such slots; the route is [T, E] small work): the scores of all columns, the top-k of
    the first E - n_shared (+ bias), the always-on experts' slots after them, post / norm / scale over all."""
    x = logits.float()
    T, EL = x.shape
    E = EL - n_shared
    s = torch.softmax(x, -1) if scoring == "softmax" else torch.sigmoid(x) if scoring == "sigmoid" else x
    c = s[:, :E] + (bias.float() if bias is not None else 0)
    key = c.flip(-1) if tie == "high" else c  # (a stable descending sort: ties to the lowest index, or highest)
    order = torch.sort(torch.nan_to_num(key, nan=float("-inf")), dim=-1, descending=True, stable=True).indices[:, :k]
    ids = (E - 1 - order) if tie == "high" else order
    w = torch.cat([torch.gather(s[:, :E], 1, ids), s[:, E:]], dim=1)
    if post == "softmax":
        w = torch.softmax(w, -1)
    elif post == "sigmoid":
        w = torch.sigmoid(w)
    if norm != "none":
        den = (w if norm == "sum" else w.abs()).sum(-1, keepdim=True) + norm_eps
        w = w / torch.where(den < norm_min, torch.full_like(den, norm_min), den)
    w = w * scale
    ids = torch.cat([ids, torch.arange(E, EL, device=x.device).expand(T, n_shared)], dim=1).to(torch.int64)
    if drop:
        keep = w > min_weight
        ids = torch.where(keep, ids, torch.full_like(ids, -1))
        w = torch.where(keep, w, torch.zeros_like(w))
    return w.to(logits.dtype), ids


ALIGN_KERNEL_MAX_WORK = 32768  # one-program align kernel while p2(n) * max(p2(E), p2(n)) stays within this


def align_kernel_shape(n: int, E: int):
    """(BN, BE, num_warps) of the one-program align kernel for n slots over E experts, or None when the
    [n, E] and [n, n] comparisons would not fit one program's registers (sm_90: <= 184 spilled bytes at
    the bound, tests/test_triton_aot.py); the torch plan takes those."""
    bn, be = _p2(n), _p2(E)
    work = bn * max(be, bn)
    if work > ALIGN_KERNEL_MAX_WORK:
        return None
    return bn, be, 4 if work <= 16384 else 8


def plan_blocks(n: int, E: int, block_m: int) -> int:
    """Static upper bound on the expert blocks of a plan: each expert's slots are padded to a multiple
    of block_m, so at most cdiv(n, block_m) + E blocks, and every used block holds >= 1 slot, so at
    most n.  (For 8 slots over 256 experts the grid is 8 blocks, not 257.)"""
    return max(1, min((n + block_m - 1) // block_m + E, n))


def align_plan(ids, E: int, block_m: int):
    """Expert-sorted slot list padded per expert to multiples of block_m (-1 = padding) and the
    expert of each block (-1: unused block), the align/sort dispatch.  Stable: slots keep token
    order within an expert.  No host synchronisation (no .item(), nonzero or bincount): the grid
    is the static bound plan_blocks() and unused blocks exit at once.  Few slots (decode): one
    Triton program builds the whole plan (one launch instead of ~15 small torch ops): align_kernel_shape."""
    flat = ids.reshape(-1)
    n = flat.numel()
    dev = ids.device
    nb = plan_blocks(n, E, block_m)
    sorted_ids = torch.full((nb * block_m,), -1, dtype=torch.int64, device=dev)
    bexp = torch.empty((nb,), dtype=torch.int64, device=dev)
    if n == 0:
        bexp.fill_(-1)
        return sorted_ids, bexp, n
    shape = align_kernel_shape(n, E)
    if shape is not None:
        bn, be, warps = shape
        K.align_kernel[(1,)](flat.contiguous(), sorted_ids, bexp, n, E, nb, BLOCK_M=block_m, BN=bn, BE=be,
                             BB=_p2(nb), num_warps=warps)
        return sorted_ids, bexp, n
    key = torch.where(flat >= 0, flat, torch.full_like(flat, E))
    order = torch.sort(key, stable=True).indices
    counts = torch.zeros(E + 1, dtype=torch.int64, device=dev).scatter_add_(0, key, torch.ones_like(key))[:E]
    nblk = (counts + block_m - 1) // block_m
    bend = torch.cumsum(nblk, 0)
    bstart = bend - nblk
    cstart = torch.cumsum(counts, 0) - counts
    b = torch.arange(nb, device=dev)
    be = torch.searchsorted(bend, b, right=True)
    bexp.copy_(torch.where(be < E, be, torch.full_like(be, -1)))
    se = key[order]
    sec = torch.clamp(se, max=E - 1)
    rank = torch.arange(n, device=dev) - cstart[sec]
    ext = torch.cat([sorted_ids, sorted_ids.new_full((1,), -1)])  # dropped slots land on the extra cell
    pos = torch.where(se < E, bstart[sec] * block_m + rank, torch.full_like(rank, nb * block_m))
    ext[pos] = order
    return ext[:nb * block_m], bexp, n


def split_for(cfg: dict, which: int, KD: int) -> tuple:
    """(SPLIT_K, K_CHUNK) of grouped GEMM `which` (1 or 2): the chunk is a multiple of its BLOCK_K."""
    s = int(cfg.get(f"SPLIT_K{which}", 1) or 1)
    bk = cfg[f"BLOCK_K{which}"]
    steps = triton.cdiv(KD, bk)
    s = max(1, min(s, steps))
    chunk = triton.cdiv(steps, s) * bk
    return triton.cdiv(KD, chunk), chunk


def _cap() -> int:
    """Compute capability x10 of the GPU (0 under the interpreter)."""
    global _CAP
    if _CAP is None:
        _CAP = 0 if INTERPRET else (lambda m: 10 * m[0] + m[1])(torch.cuda.get_device_capability())
    return _CAP


_CAP = None


def variants(cfg: dict, which: int, cap: Optional[int] = None) -> dict:
    """Kernel variants of grouped GEMM `which` from its configuration: SWAP_AB{which} (weights as the
    MMA's 64-row operand: by default where BLOCK_M < 64 <= BLOCK_N), PERSISTENT{which} (a grid of about
    PERSISTENT programs per SM taking tiles from a queue; 0: one program per tile), TMA (weights -- and
    the down projection's sorted activations -- through TMA descriptors: by default on sm_90+, never under
    the interpreter unless the configuration asks).  cap: the GPU's compute capability x10 (default: this
    process's GPU, 0 under the interpreter; aot.py passes the architecture it compiles for)."""
    cap = _cap() if cap is None else cap
    bn = cfg[f"BLOCK_N{which}"]
    swap = cfg.get(f"SWAP_AB{which}")
    if swap is None:
        swap = cfg["BLOCK_M"] < 64 <= bn and cap > 0
    tma = cfg.get("TMA")
    if tma is None:
        tma = cap >= 90
    return {"SWAP_AB": bool(swap), "PERSISTENT": int(cfg.get(f"PERSISTENT{which}", 0) or 0), "TMA": bool(tma)}


def _tma_ok(t) -> bool:
    """A tensor a TMA descriptor can address: 16-byte aligned base and strides, unit last stride."""
    es = t.element_size()
    return (t.data_ptr() % 16 == 0 and t.stride(-1) == 1
            and all((st * es) % 16 == 0 for st in t.stride()[:-1]))


def _desc(t, block):
    from triton.tools.tensor_descriptor import TensorDescriptor
    return TensorDescriptor(t, list(t.shape), list(t.stride()), list(block))


def _programs(n_tiles: int, per_sm: int) -> int:
    """Grid of a persistent kernel: per_sm programs per SM (2 under the interpreter), at most one per tile."""
    from moec.codegen.triton.tuning import sm_count
    return max(1, min(n_tiles, per_sm * (sm_count() or 1) if not INTERPRET else 2))


def quant_fp8_rows(x):
    """(codes uint8 [R, C], scales f32 [R]): dynamic per-row e4m3 quantisation (kernels.quant_fp8_rows_kernel)."""
    R, C = x.shape
    q = torch.empty((R, C), dtype=torch.uint8, device=x.device)
    sc = torch.empty((R,), dtype=torch.float32, device=x.device)
    if R and C:
        K.quant_fp8_rows_kernel[(R,)](x, q, sc, C, x.stride(0), BLOCK=min(1024, _p2(C)))
    return q, sc


def launch_params(cfg: dict, which: int) -> tuple:
    """(GROUP_SIZE_M, num_warps, num_stages) of grouped GEMM `which` (1: up, 2: down).  The up projection's
    are GROUP_SIZE_M1, num_warps, num_stages; the down projection's GROUP_SIZE_M2, num_warps2 and num_stages2,
    each defaulting to the up projection's value (configurations written before the two were tuned apart)."""
    g1, w1, s1 = cfg.get("GROUP_SIZE_M1", tuning.DEFAULT_GROUP_M), cfg.get("num_warps", 4), cfg.get("num_stages", 2)
    if which == 1:
        return int(g1), int(w1), int(s1)
    return int(cfg.get("GROUP_SIZE_M2", g1)), int(cfg.get("num_warps2", w1)), int(cfg.get("num_stages2", s1))


def moe_experts(x, ids, w_in, w_out, *, b_in=None, b_out=None, rw=None, weights_at="none", activation="swiglu",
                gate_layout="concat", alpha=1.0, beta=0.0, limit=float("inf"), wq="none", wq_group=0,
                q=(None, None, None, None), cfg: Optional[dict] = None, combine_out=None, gate_softcap=None,
                up_softcap=None, act_quant="none", post_norm_eps=None, post_norm_w=None):
    """y [T, k, D] = FFN_{ids[t,j]}(x[t]) (* rw[t, j] when weights_at='output').
    post_norm_eps (moe.experts' post-expert RMSNorm, Muse Spark): the FFNs without the output's weight, then
    each routed slot's row normalised (torch ops, f32), times its expert's row of post_norm_w [E, D] when given
    (Ergo), and weighted; not with combine_out (the emitter does not fuse the combine then).
    combine_out (f32 [T, D], zeros): the combine fused -- each slot's row is added into its token's
    row of combine_out by the down projection (atomics) and no y is written; returns combine_out.
    act_quant="fp8" (with wq="fp8": w8a8): x and the activation A quantised per row to e4m3 on the fly
    (quant_fp8_rows), the grouped GEMMs' dots fp8 x fp8 on the GPU with f32 accumulation, the row scales
    applied to the accumulator."""
    if post_norm_eps is not None:
        if combine_out is not None:
            raise ValueError("moe_experts: post_norm_eps with the combine fused")
        at_out = weights_at == "output" and rw is not None
        y = moe_experts(x, ids, w_in, w_out, b_in=b_in, b_out=b_out, rw=None if at_out else rw,
                        weights_at="none" if at_out else weights_at, activation=activation, gate_layout=gate_layout,
                        alpha=alpha, beta=beta, limit=limit, wq=wq, wq_group=wq_group, q=q, cfg=cfg,
                        gate_softcap=gate_softcap, up_softcap=up_softcap, act_quant=act_quant)
        yf = y.float()
        yf = yf * torch.rsqrt(yf.pow(2).mean(-1, keepdim=True) + post_norm_eps)
        if post_norm_w is not None:
            yf = yf * post_norm_w.float()[ids.clamp(min=0)]
        if at_out:
            yf = yf * rw.float()[..., None]
        return torch.where((ids >= 0)[..., None], yf, torch.zeros_like(yf)).to(y.dtype)
    x = x.contiguous()
    T, D = x.shape
    k = ids.shape[1]
    E = w_in.shape[0]
    from moec.ir.ops.moe import GATED
    gated = activation in GATED
    if activation == "softcap_swiglu":  # (kernels._act reads the gate and up caps in alpha and beta)
        alpha, beta = gate_softcap, up_softcap
    F = w_out.shape[2] * (2 if wq == "int4" else 1)
    a8 = act_quant == "fp8"
    if act_quant not in ("none", "fp8") or (a8 and wq != "fp8"):
        raise ValueError(f"moe_experts: activations {act_quant!r} with weights {wq!r} (fp8 activations need fp8 "
                         "weights: w8a8)")
    cfg = cfg or tuning.config_for("moe", dict(T=T, D=D, F=F, E=E, k=k, dtype=str(x.dtype),
                                               wq="fp8a8" if a8 else wq))  # (w8a8: its own tile files)
    BM = cfg["BLOCK_M"]
    fused = combine_out is not None
    # dropped slots stay zero
    y = combine_out if fused else torch.zeros((T * k, D), dtype=x.dtype, device=x.device)
    if T == 0:
        return y if fused else y.reshape(T, k, D)
    sorted_ids, bexp, n_slots = align_plan(ids, E, BM)
    _mark("align")
    nb = bexp.numel()
    rows = sorted_ids.numel()
    cdt = x.dtype
    prec = _prec(cdt)
    s_in, s_out, z_in, z_out = q
    # int4 group size (a compile-time constant of the kernels: 0 = whole row); other modes pin it to 0
    # so that layers of different widths share one compiled kernel
    g1, g2 = ((wq_group or D), (wq_group or F)) if wq == "int4" else (0, 0)
    dummy = x
    gm1, warps1, stages1 = launch_params(cfg, 1)
    gm2, warps2, stages2 = launch_params(cfg, 2)
    A = torch.empty((rows, F), dtype=cdt, device=x.device)
    v1, v2 = variants(cfg, 1), variants(cfg, 2)
    xq, xs = quant_fp8_rows(x) if a8 else (x, None)
    dcdt = K.tl.float8e4nv if a8 and not INTERPRET else _cdt(cdt)  # (the interpreter: exact f32 products)
    # TMA: plain / int8 / fp8 weights in the concatenated gate layout, addressable tensors (else pointers)
    tma_w = wq in ("none", "bf16", "int8", "fp8") and gate_layout != "interleaved" and \
        not (wq == "bf16" and cdt == torch.float32)
    queue = torch.zeros(2, dtype=torch.int32, device=x.device) if v1["PERSISTENT"] or v2["PERSISTENT"] else None
    S1, C1 = split_for(cfg, 1, D)
    S2, C2 = split_for(cfg, 2, F)
    P1 = torch.empty((S1, rows, 2 * F), dtype=torch.float32, device=x.device) if S1 > 1 else dummy
    P2 = torch.empty((S2, rows, D), dtype=torch.float32, device=x.device) if S2 > 1 else dummy
    s_in_, z_in_ = (s_in if s_in is not None else dummy), (z_in if z_in is not None else dummy)
    s_out_, z_out_ = (s_out if s_out is not None else dummy), (z_out if z_out is not None else dummy)
    b_in_, b_out_, rw_ = (b_in if b_in is not None else dummy), (b_out if b_out is not None else dummy), \
        (rw if rw is not None else dummy)
    lim = float(limit) if np.isfinite(limit) else 0.0
    common1 = dict(GATED=gated, INTERLEAVED=gate_layout == "interleaved", ACT=ACT[activation],
                   CLAMP=bool(np.isfinite(limit)), HAS_BIAS=b_in is not None, RW_INPUT=weights_at == "input",
                   WQ=WQ[wq])
    BN1, BK1 = cfg["BLOCK_N1"], cfg["BLOCK_K1"]
    tiles1 = nb * triton.cdiv(F, BN1)
    extra1 = dict(SWAP_AB=v1["SWAP_AB"], EVEN_K=D % BK1 == 0, A8=a8, PERSISTENT=bool(v1["PERSISTENT"]),
                  xs_ptr=xs if a8 else None, q_ptr=queue[0:] if v1["PERSISTENT"] else None)
    if v1["TMA"] and tma_w and _tma_ok(w_in):
        extra1.update(TMA=True, w_desc=_desc(w_in, (1, BN1, BK1)))
    grid1 = (_programs(tiles1 * S1, v1["PERSISTENT"]), 1, 1) if v1["PERSISTENT"] else (tiles1, 1, S1)
    K.moe_gemm1_kernel[grid1](
        xq, w_in, s_in_, z_in_, b_in_, rw_, sorted_ids, bexp, A, P1,
        n_slots, k, D, F, xq.stride(0), float(alpha), float(beta), lim, C1, rows, nb,
        HAS_ZP=z_in is not None, CDT=dcdt, PREC=prec, ACT_BF16=wq == "bf16" and cdt == torch.float32,
        BLOCK_M=BM, BLOCK_N=BN1, BLOCK_K=BK1, SPLIT_K=S1, GROUP=g1, GROUP_M=gm1, num_warps=warps1,
        num_stages=stages1, **common1, **extra1)
    if S1 > 1:
        K.moe_act_kernel[(nb, triton.cdiv(F, BN1))](
            P1, s_in_, b_in_, rw_, sorted_ids, bexp, A, n_slots, F, rows, float(alpha), float(beta), lim,
            SPLIT_K=S1, BLOCK_M=BM, BLOCK_N=BN1, num_warps=4, **common1)
    _mark("gemm1")
    common2 = dict(HAS_BIAS=b_out is not None, RW_OUTPUT=weights_at == "output", WQ=WQ[wq], COMBINE=fused)
    BN2, BK2 = cfg["BLOCK_N2"], cfg["BLOCK_K2"]
    A2, As = quant_fp8_rows(A) if a8 else (A, None)
    tiles2 = nb * triton.cdiv(D, BN2)
    extra2 = dict(SWAP_AB=v2["SWAP_AB"], EVEN_K=F % BK2 == 0, A8=a8, PERSISTENT=bool(v2["PERSISTENT"]),
                  as_ptr=As if a8 else None, q_ptr=queue[1:] if v2["PERSISTENT"] else None)
    if v2["TMA"] and tma_w and _tma_ok(w_out) and _tma_ok(A2):
        extra2.update(TMA=True, w_desc=_desc(w_out, (1, BN2, BK2)), a_desc=_desc(A2, (BM, BK2)))
    grid2 = (_programs(tiles2 * S2, v2["PERSISTENT"]), 1, 1) if v2["PERSISTENT"] else (tiles2, 1, S2)
    K.moe_gemm2_kernel[grid2](
        A2, w_out, s_out_, z_out_, b_out_, rw_, sorted_ids, bexp, y, P2,
        n_slots, k, D, F, C2, rows, nb,
        HAS_ZP=z_out is not None, CDT=dcdt, PREC=prec, ACT_BF16=wq == "bf16" and cdt == torch.float32,
        BLOCK_M=BM, BLOCK_N=BN2, BLOCK_K=BK2, SPLIT_K=S2, GROUP=g2, GROUP_M=gm2, num_warps=warps2,
        num_stages=stages2, **common2, **extra2)
    if S2 > 1:
        K.moe_down_epilogue_kernel[(nb, triton.cdiv(D, BN2))](
            P2, s_out_, b_out_, rw_, sorted_ids, bexp, y, n_slots, k, D, rows, SPLIT_K=S2, BLOCK_M=BM, BLOCK_N=BN2,
            num_warps=4, **common2)
    _mark("gemm2")
    return y if fused else y.reshape(T, k, D)


def deterministic() -> bool:
    """Bitwise-reproducible results (the default): the combine is fused into the down projection only
    where atomics cannot reorder a sum (k <= 2).  MOEC_TRITON_DETERMINISTIC=0 fuses it for any k."""
    return os.environ.get("MOEC_TRITON_DETERMINISTIC", "1") != "0"


def fuse_combine(k: int) -> bool:
    return k <= 2 or not deterministic()


def moe_experts_combine(x, ids, w_in, w_out, *, shared=None, w=None, weighted=False, **ffn):
    """moe.experts followed by its moe.combine (no pass-through): out [T, D] = sum_j (w[t, j] *) y[t, j]
    (+ shared[t]).  Where the sum is order-free (fuse_combine) the down projection adds each slot's row
    into a zeroed f32 output by atomics (routing weights in its epilogue), then the shared term and the
    cast to x's type follow in one elementwise pass (after the slots, so that k = 2 stays order-free);
    otherwise the experts and the combine run as their own kernels."""
    if not fuse_combine(ids.shape[1]):
        y = moe_experts(x, ids, w_in, w_out, **ffn)
        out = moe_combine(y, w, shared, weighted=weighted)
        _mark("combine")
        return out
    if weighted:
        ffn = dict(ffn, rw=w, weights_at="output")
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    _mark("combine")  # (the zeroed f32 output: part of the fused combine)
    moe_experts(x, ids, w_in, w_out, combine_out=out, **ffn)
    if shared is not None:  # add in f32, store in x's type: one kernel
        out = binary("moec.add", out, shared, x.dtype)
    elif x.dtype != torch.float32:
        out = out.to(x.dtype)
    _mark("combine")
    return out


def moe_shared(x, w_in, w_out, gate=None, **ffn):
    """Always-on experts: every token through each of the S experts, summed, times sigmoid(gate.x)."""
    T = x.shape[0]
    S = w_in.shape[0]
    ids = torch.arange(S, device=x.device, dtype=torch.int64).repeat(T, 1)
    out = moe_experts_combine(x, ids, w_in, w_out, **ffn)
    if gate is not None:
        g = matmul(x, gate.reshape(-1, 1)).reshape(-1)
        out = out * torch.sigmoid(g.float()).to(out.dtype)[:, None]
    return out


def moe_combine(y, w, shared=None, x=None, ids=None, *, weighted=True, passthrough=False):
    T, k, D = y.shape
    out = torch.empty((T, D), dtype=y.dtype, device=y.device)
    if T:
        BD = min(1024, _p2(D))
        K.combine_kernel[(T, triton.cdiv(D, BD))](
            y.contiguous(), w.contiguous() if w is not None else y, shared.contiguous() if shared is not None else y,
            out, D, K=k, WEIGHTED=bool(weighted), HAS_SHARED=shared is not None, BLOCK_D=BD)
    if passthrough:
        dropped = torch.all(ids < 0, dim=1)
        out = torch.where(dropped[:, None], x.to(out.dtype), out)
    return out


# -- ordinary ops -----------------------------------------------------------------------------
GEMV_MAX_M = 16


def gemv_plan(M: int, N: int, Kd: int):
    """(slices, chunk, BLOCK_N, BLOCK_K) of the split-K GEMV (kernels.gemv_splitk_kernel) for a matmul of at
    most GEMV_MAX_M rows -- a router at decode --, or None (the plain kernel): used where slicing the reduction
    (each slice >= 4 BLOCK_K steps) gives the GPU about two programs per SM that the plain grid's few output
    tiles do not (4 under the interpreter)."""
    if M > GEMV_MAX_M:
        return None
    bk = 32 if INTERPRET else 64
    bn = max(16, min(64, _p2(N)))
    tiles = triton.cdiv(N, bn)
    steps = triton.cdiv(Kd, bk)
    if INTERPRET:
        want = 4
    else:
        from moec.codegen.triton.tuning import sm_count
        want = 2 * (sm_count() or 132)
    s = min(steps // 4, triton.cdiv(want, tiles), 64)
    if s < 2:
        return None
    chunk = triton.cdiv(steps, s) * bk
    return triton.cdiv(Kd, chunk), chunk, bn, bk


def matmul(a, b, *, bias=None, alpha=1.0, beta=1.0):
    """numpy-style matmul (broadcast batches) for 2-D and batched operands.  ``bias`` (2-D operands only):
    alpha * a @ b + beta * bias, bias broadcast to [M, N], added in f32 before the result's one rounding."""
    squeeze_a = a.dim() == 1
    squeeze_b = b.dim() == 1
    if squeeze_a:
        a = a[None, :]
    if squeeze_b:
        b = b[:, None]
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, Kd = a.shape[-2:]
    N = b.shape[-1]
    dt = torch.promote_types(a.dtype, b.dtype)
    if a.dim() == 2 and b.dim() == 2:  # keep strides (transposed views cost nothing)
        a3, b3 = a.to(dt)[None], b.to(dt)[None]
    else:
        a3 = a.expand(*batch, M, Kd).reshape(-1, M, Kd).to(dt)
        b3 = b.expand(*batch, Kd, N).reshape(-1, Kd, N).to(dt)
    nbt = a3.shape[0]
    extra = {}
    if bias is not None:
        assert nbt == 1 and not (squeeze_a or squeeze_b), "a Gemm bias goes with 2-D operands"
        dt = torch.promote_types(dt, bias.dtype)
        xb = torch.broadcast_to(bias, (M, N))
        extra = dict(bias_ptr=xb, sxm=xb.stride(0), sxn=xb.stride(1), alpha=float(alpha), beta=float(beta),
                     HAS_BIAS=True)
    c = torch.empty((nbt, M, N), dtype=dt, device=a.device)
    gemv = gemv_plan(M, N, Kd) if nbt == 1 and M and N else None
    if gemv is not None:  # few rows, long reduction: split-K GEMV, then the slices summed in order
        S, chunk, BN, BK = gemv
        part = torch.empty((S, M, N), dtype=torch.float32, device=a.device)
        K.gemv_splitk_kernel[(triton.cdiv(N, BN), S)](
            a3, b3, part, M, N, Kd, a3.stride(1), a3.stride(2), b3.stride(1), b3.stride(2), chunk,
            PREC=_prec(a3.dtype), BLOCK_M=GEMV_MAX_M, BLOCK_N=BN, BLOCK_K=BK, WIDEN=INTERPRET and a3.dtype != torch.float32)
        red = {k: v for k, v in extra.items()}
        K.splitk_reduce_kernel[(triton.cdiv(M * N, 1024),)](part, c, M, N, S, c.stride(1), c.stride(2), **red,
                                                             BLOCK=1024)
    elif M and N and nbt:
        BM, BN, BK = (16, 32, 32) if INTERPRET else (64, 64, 32)
        K.matmul_kernel[(triton.cdiv(M, BM), triton.cdiv(N, BN), nbt)](
            a3, b3, c, M, N, Kd, a3.stride(0), a3.stride(1), a3.stride(2), b3.stride(0), b3.stride(1), b3.stride(2),
            c.stride(0), c.stride(1), c.stride(2), PREC=_prec(a3.dtype), BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK,
            WIDEN=INTERPRET and a3.dtype != torch.float32, **extra)
    c = c.reshape(*batch, M, N)
    if squeeze_a:
        c = c.squeeze(-2)
    if squeeze_b:
        c = c.squeeze(-1)
    return c


def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, trans_a=False, trans_b=False):
    """alpha * op(a) @ op(b) + beta * c in one kernel (the sum in f32, rounded once): transposes are strides
    of the matmul kernel (no copies)."""
    a, b = (a.t() if trans_a else a), (b.t() if trans_b else b)
    if c is not None and beta != 0.0:
        return matmul(a, b, bias=c, alpha=alpha, beta=beta)
    if alpha != 1.0:
        return matmul(a, b, bias=torch.zeros((), dtype=a.dtype, device=a.device), alpha=alpha, beta=0.0)
    return matmul(a, b)


def binary(name: str, a, b, out_dtype):
    a, b = torch.broadcast_tensors(a, b)
    dt = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dt).contiguous(), b.to(dt).contiguous()
    out = torch.empty(a.shape, dtype=out_dtype, device=a.device)
    n = a.numel()
    if n:
        K.binary_kernel[(triton.cdiv(n, 1024),)](a, b, out, n, OP=BINARY[name], BLOCK=1024)
    return out


def cast(x, dtype):
    """moec.cast on the device, with its reference semantics: float -> int truncates toward zero (0 where
    not finite or out of range), -> bool is x != 0, to f16/bf16 rounds to nearest even (bf16 via f32)."""
    if dtype == torch.bool:
        return x != 0
    if x.is_floating_point() and not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        xf = torch.trunc(x.to(torch.float64))
        ok = torch.isfinite(xf) & (xf >= info.min) & (xf <= info.max)
        return torch.where(ok, xf, torch.zeros_like(xf)).to(dtype)
    if dtype == torch.bfloat16 and x.dtype not in (torch.float32, torch.bfloat16):
        x = x.to(torch.float32)
    return x.to(dtype)


def unary(name: str, x):
    x = x.contiguous()
    out = torch.empty_like(x)
    n = x.numel()
    if n:
        K.unary_kernel[(triton.cdiv(n, 1024),)](x, out, n, OP=UNARY[name], BLOCK=1024)
    return out


def softmax(x, axis: int, log: bool = False):
    xm = torch.movedim(x, axis, -1).contiguous()
    out = torch.empty_like(xm)
    n = xm.shape[-1]
    rows = xm.numel() // max(n, 1)
    if rows and n:
        K.softmax_kernel[(rows,)](xm, out, n, LOG=log, BLOCK=_p2(n))
    return torch.movedim(out, -1, axis)


def reduce_last(name: str, x):
    x = x.contiguous()
    n = x.shape[-1]
    out = torch.empty(x.shape[:-1], dtype=x.dtype, device=x.device)
    rows = out.numel()
    if rows:
        K.reduce_kernel[(rows,)](x, out, n, OP=REDUCE[name], BLOCK=min(1024, _p2(max(n, 1))))
    return out


def norm(x, scale, bias=None, *, eps: float, rms: bool, scale_full=None):
    """LayerNorm / RMSNorm over the last axis -> (y, mean, inv_std) (mean/inv only for LayerNorm)."""
    x = x.contiguous()
    n = x.shape[-1]
    rows = x.numel() // max(n, 1)
    y = torch.empty_like(x)
    stat_shape = x.shape[:-1] + (1,)
    mean = torch.empty(stat_shape, dtype=torch.float32, device=x.device)
    inv = torch.empty(stat_shape, dtype=torch.float32, device=x.device)
    if rows and n:
        s = scale.expand(x.shape[-1:]).contiguous()
        b = bias.expand(x.shape[-1:]).contiguous() if bias is not None else s
        K.norm_kernel[(rows,)](x, s, b, y, mean, inv, n, float(eps), RMS=rms, HAS_BIAS=bias is not None,
                               BLOCK=_p2(n))
    return y, mean, inv


# -- KV cache (ir/ops/kv.py) -------------------------------------------------------------------
KV_BLOCK_N = 32  # keys per step of the attention's online softmax


def _pos(pos) -> Optional[int]:
    """The position on the host, for the bounds checks the ops' semantics make (one scalar read); None while a CUDA
    graph is being captured (no host read can be: the kernels then keep their reads and writes inside the buffers)."""
    if pos.is_cuda and torch.cuda.is_current_stream_capturing():
        return None
    return int(pos.reshape(-1)[0].item())


def kv_append(cache, new, pos, *, axis: int):
    """moec.kv_append in place: the T rows of ``new`` written into ``cache`` (its own memory: the result is
    ``cache`` itself) at ``pos`` along ``axis``, in the cache's element type (an f16 cache: f32 rows rounded
    to nearest even).  Rows outside pos .. pos+T-1 are not touched."""
    ax = axis % cache.dim()
    M, T = cache.shape[ax], new.shape[ax]
    p = _pos(pos)
    if p is not None and (p < 0 or p + T > M):
        raise ValueError(f"kv_append: rows {p}..{p + T} do not fit a cache of {M}")
    if not cache.is_contiguous():
        raise ValueError("kv_append: the cache buffer must be contiguous")
    new = new.contiguous()
    outer = 1
    for n in cache.shape[:ax]:
        outer *= n
    inner = 1
    for n in cache.shape[ax + 1:]:
        inner *= n
    if outer and T and inner:
        K.kv_append_kernel[(outer * T,)](cache, new, pos, M, T, inner, BLOCK=min(1024, _p2(inner)))
    return cache


def _kv_attention(q, k, v, kn, vn, pos, mask, *, scale: float, window: int, step: bool, causal: bool):
    B, Hq, S, D = q.shape
    Hkv, DV = k.shape[1], v.shape[3]
    y = torch.empty((B, Hq, S, DV), dtype=q.dtype, device=q.device)
    if y.numel() == 0:
        return y
    kn = kn if kn is not None else k
    vn = vn if vn is not None else v
    ms = (0, 0, 0, 0)
    if mask is not None:  # (its last dim is pos + S, the scores' row, or 1: strides 0 where it broadcasts)
        mask = mask.expand(B, Hq, S, mask.shape[-1])
        ms = mask.stride()[:3] + ((0,) if mask.shape[-1] == 1 else mask.stride()[3:])
    K.kv_attention_kernel[(B * Hq * S,)](
        q, k, v, kn, vn, pos, mask if mask is not None else q, y, Hq, S, Hq // Hkv, D, DV, k.shape[2], float(scale),
        int(window),
        *q.stride(), *k.stride(), *v.stride(), *kn.stride(), *vn.stride(), *ms,
        STEP=step, CAUSAL=causal, HAS_MASK=mask is not None, BLOCK_N=KV_BLOCK_N, BLOCK_D=_p2(D), BLOCK_DV=_p2(DV))
    return y


def kv_step_attention(q, k_cache, v_cache, k_new, v_new, pos, *, scale: float, window: int):
    """moec.kv_step_attention: S query rows over the cache's first pos rows (read in place; an f16 cache
    widened to f32 in registers) and the S new keys, one softmax (the op's semantics, ir/ops/kv.py)."""
    p, M, Hq, Hkv = _pos(pos), k_cache.shape[2], q.shape[1], k_cache.shape[1]
    if p is not None and (p < 0 or p > M):
        raise ValueError(f"kv_step_attention: position {p} outside a cache of {M}")
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"kv_step_attention: {Hq} query heads, {Hkv} key/value heads")
    return _kv_attention(q, k_cache, v_cache, k_new, v_new, pos, None, scale=scale, window=window, step=True,
                         causal=True)


def kv_attention(q, k, v, pos, mask=None, *, scale: float, causal: bool):
    """moec.kv_attention: attention over the buffers' first pos + S rows (an f16 cache widened), causal
    aligned to the last S keys, an additive mask broadcasting to [B, Hq, S, pos + S]."""
    p, Hq, Hkv = _pos(pos), q.shape[1], k.shape[1]
    if p is not None and (p < 0 or p + q.shape[2] > min(k.shape[2], v.shape[2])):
        raise ValueError(f"kv_attention: {p + q.shape[2]} rows do not fit caches of {k.shape[2]} / {v.shape[2]}")
    if mask is not None and p is not None and mask.shape[-1] not in (1, p + q.shape[2]):
        raise ValueError(f"kv_attention: a mask of {mask.shape[-1]} columns for {p + q.shape[2]} keys")
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"kv_attention: {Hq} query heads, {Hkv} key/value heads")
    return _kv_attention(q, k, v, None, None, pos, mask, scale=scale, window=0, step=False, causal=causal)


# -- host <-> device (the host segments of host.py) --------------------------------------------
_TORCH_OF_NP = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
                np.dtype(np.float16): torch.float16, np.dtype(np.int64): torch.int64,
                np.dtype(np.int32): torch.int32, np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8,
                np.dtype(np.bool_): torch.bool}


def to_numpy(t) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.view(torch.uint16).cpu().numpy().view(ml_dtypes.bfloat16)
    return t.cpu().numpy()


def from_numpy(a: np.ndarray, device=DEVICE):
    a = np.array(a, order="C", copy=True)  # (not ascontiguousarray: it makes a 0-d array 1-d)
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(a).to(device)


__all__: List[str] = ["cast", "moe_route", "moe_experts", "moe_experts_combine", "moe_shared", "moe_combine", "matmul", "binary", "unary",
                      "softmax", "reduce_last", "align_plan", "kv_append",
                      "kv_attention", "kv_step_attention"]
