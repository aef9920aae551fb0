"""The Triton kernels (one definition each; the generated launcher calls them through runtime.py).

MoE layer = route -> (align/sort plan) -> grouped GEMM 1 (gate/up, activation epilogue) ->
grouped GEMM 2 (down projection, bias, routing weight epilogue) -> combine (sum of the k slots,
shared experts, pass-through).  The grouped GEMMs walk BLOCK_M-row blocks of the expert-sorted
slot list (each block belongs to one expert; padding slots are masked), like vLLM's fused_moe,
in GROUP_SIZE_M tile order (_tile_ids: groups of consecutive expert blocks share their weight tiles
and activation rows in L2).
Weights may be f32 / bf16 / f16, int8 or fp8 e4m3 (per output channel scale) or packed int4 (group
scales, zero point): they are dequantised in registers, tile by tile, before tl.dot; accumulation is f32.
Per-channel scales (int8, fp8) are applied to the accumulator after the dot (WQ codes: runtime.WQ).
"""
from __future__ import annotations

from moec.codegen.triton import ensure_triton

triton, _ = ensure_triton()
import triton.language as tl  # noqa: E402

# activation codes: runtime.ACT (swiglu 0, gelu 1, gelu_tanh 2, relu 3, silu 4, identity 5, relu2 6, geglu 7,
# geglu_tanh 8, softcap_swiglu 9)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _erf(x):
    return tl.math.erf(x)


@triton.jit
def _act(g, u, ACT: tl.constexpr, alpha, beta, limit, CLAMP: tl.constexpr):
    if ACT == 0:
        if CLAMP:
            g = tl.minimum(g, limit)
            u = tl.minimum(tl.maximum(u, -limit), limit)
        return g * _sigmoid(alpha * g) * (u + beta)
    elif ACT == 1:
        return 0.5 * g * (1.0 + _erf(g * 0.7071067811865476))
    elif ACT == 2:  # tanh(y) = 2 sigmoid(2y) - 1
        return 0.5 * g * (1.0 + (2.0 * _sigmoid(2.0 * 0.7978845608028654 * (g + 0.044715 * g * g * g)) - 1.0))
    elif ACT == 3:
        return tl.maximum(g, 0.0)
    elif ACT == 4:
        return g * _sigmoid(g)
    elif ACT == 6:  # squared ReLU
        r = tl.maximum(g, 0.0)
        return r * r
    elif ACT == 7:  # geglu: gelu(g) * u
        return 0.5 * g * (1.0 + _erf(g * 0.7071067811865476)) * u
    elif ACT == 8:  # geglu_tanh
        return 0.5 * g * (1.0 + (2.0 * _sigmoid(2.0 * 0.7978845608028654 * (g + 0.044715 * g * g * g)) - 1.0)) * u
    elif ACT == 9:  # softcap_swiglu: the caps come in alpha (gate) and beta (up); cg tanh(g/cg) = cg (2 sig(2g/cg) - 1)
        return alpha * (2.0 * _sigmoid(2.0 * g / alpha) - 1.0) * _sigmoid(g) * (beta * (2.0 * _sigmoid(2.0 * u / beta) - 1.0))
    else:
        return g


@triton.jit
def _round_bf16(x):
    """f32 -> nearest bf16 (ties to even), kept in f32; bit arithmetic so that the interpreter
    (whose casts truncate) and the GPU agree."""
    u = x.to(tl.uint32, bitcast=True)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return tl.where(x == x, u.to(tl.float32, bitcast=True), x)  # (a NaN's payload could carry into the sign)


@triton.jit
def _cast_to(x, DT: tl.constexpr):
    """x in the output type DT; to bf16 by round to nearest even, the GPU's cvt.rn, written as bit
    arithmetic because the interpreter's bf16 cast truncates (it would disagree with the GPU by an ulp)."""
    if DT == tl.bfloat16:
        return _round_bf16(x.to(tl.float32)).to(DT)
    else:
        return x.to(DT)


@triton.jit
def _widen(x):
    """f16/bf16 operands to f32, where elementwise arithmetic is done (as torch does; the interpreter's
    own bf16 arithmetic works on the bit patterns and is wrong); other types unchanged."""
    if x.dtype == tl.bfloat16 or x.dtype == tl.float16:
        return x.to(tl.float32)
    else:
        return x


# ---------------------------------------------------------------------------------------------
# routing: one program per token
@triton.jit
def route_kernel(logits_ptr, bias_ptr, w_ptr, ids_ptr, E, stride_t, norm_eps, scale,
                 K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr, SCORING: tl.constexpr,
                 HAS_BIAS: tl.constexpr, N_GROUP: tl.constexpr, TOPK_GROUP: tl.constexpr,
                 GROUP_TOP2: tl.constexpr, BLOCK_G: tl.constexpr, POST: tl.constexpr, NORM: tl.constexpr,
                 TIE_HIGH: tl.constexpr = False, DROP: tl.constexpr = False, min_weight=0.0, jitter_eps=0.0,
                 norm_min=0.0, group_fill=-float("inf")):
    t = tl.program_id(0)
    offs = tl.arange(0, BLOCK_E)
    valid = offs < E
    x = tl.load(logits_ptr + t * stride_t + offs, mask=valid, other=-float("inf")).to(tl.float32)
    if SCORING == 0:
        m = tl.max(x, 0)
        ex = tl.where(valid, tl.exp(x - m), 0.0)
        s = ex / tl.sum(ex, 0)
    elif SCORING == 1:
        s = _sigmoid(x)
    else:
        s = x
    c = s
    if HAS_BIAS:
        c = c + tl.load(bias_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    c = tl.where(valid, c, -float("inf"))
    if N_GROUP > 1:
        gsize = E // N_GROUP
        gid = offs // gsize
        garange = tl.arange(0, BLOCK_G)
        gscore = tl.full([BLOCK_G], -float("inf"), tl.float32)
        for g in tl.static_range(N_GROUP):
            cg = tl.where(gid == g, c, -float("inf"))
            m1 = tl.max(cg, 0)
            if GROUP_TOP2:
                i1 = tl.min(tl.where(cg == m1, offs, BLOCK_E), 0)
                m2 = tl.max(tl.where(offs == i1, -float("inf"), cg), 0)
                m1 = m1 + m2
            gscore = tl.where(garange == g, m1, gscore)
        keep = tl.zeros([BLOCK_E], tl.int1)
        for i in tl.static_range(TOPK_GROUP):
            gm = tl.max(gscore, 0)
            gi = tl.min(tl.where(gscore == gm, garange, BLOCK_G), 0)
            gscore = tl.where(garange == gi, -float("inf"), gscore)
            keep = keep | (gid == gi)
        c = tl.where(valid, tl.where(keep, c, group_fill), -float("inf"))
    karange = tl.arange(0, BLOCK_K)
    wv = tl.zeros([BLOCK_K], tl.float32)
    iv = tl.zeros([BLOCK_K], tl.int64)
    # a NaN in c is never the maximum: NaN entries come last, in index order (the reference's order)
    isn = c != c
    cs = tl.where(isn, -float("inf"), c)
    taken = offs >= E
    for i in tl.static_range(K):
        m = tl.max(tl.where(taken, -float("inf"), cs), 0)
        hit = (cs == m) & ~isn & ~taken
        if TIE_HIGH:
            j1 = tl.max(tl.where(hit, offs, -1), 0)
            jn = tl.max(tl.where(isn & ~taken, offs, -1), 0)
        else:
            j1 = tl.min(tl.where(hit, offs, BLOCK_E), 0)
            jn = tl.min(tl.where(isn & ~taken, offs, BLOCK_E), 0)
        idx = tl.where((j1 >= 0) & (j1 < BLOCK_E), j1, jn)
        sv = tl.sum(tl.where(offs == idx, s, 0.0), 0)
        if POST == 3:  # sparsemixer: softmax at idx of s without earlier slots' experts and those past 2 eps
            a = tl.abs(s)
            factor = tl.where(a < sv, sv, a)
            out = taken | ((sv - s) / factor > 2 * jitter_eps)
            sv = 1.0 / tl.sum(tl.where(out, 0.0, tl.exp(tl.where(out, 0.0, s - sv))), 0)
        wv = tl.where(karange == i, sv, wv)
        iv = tl.where(karange == i, idx.to(tl.int64), iv)
        taken = taken | (offs == idx)
    kvalid = karange < K
    if POST == 1:
        wm = tl.max(tl.where(kvalid, wv, -float("inf")), 0)
        we = tl.where(kvalid, tl.exp(wv - wm), 0.0)
        wv = we / tl.sum(we, 0)
    elif POST == 2:
        wv = _sigmoid(wv)
    if NORM != 0:
        if NORM == 1:
            den = tl.sum(tl.where(kvalid, wv, 0.0), 0) + norm_eps
        else:
            den = tl.sum(tl.where(kvalid, tl.abs(wv), 0.0), 0) + norm_eps
        wv = wv / tl.where(den < norm_min, norm_min, den)  # (a NaN sum stays NaN)
    wv = wv * scale
    if DROP:  # a slot whose weight is not > min_weight (NaN too): id -1, weight 0
        keep = wv > min_weight
        iv = tl.where(keep, iv, -1)
        wv = tl.where(keep, wv, 0.0)
    tl.store(w_ptr + t * K + karange, _cast_to(wv, w_ptr.dtype.element_ty), mask=kvalid)
    tl.store(ids_ptr + t * K + karange, iv, mask=kvalid)


# ---------------------------------------------------------------------------------------------
# weight tiles: [BLOCK_N, BLOCK_K] of expert e's rows n (output features), columns k, dequantised
@triton.jit
def _w_tile(w_ptr, s_ptr, z_ptr, e, rows, k0, N, k_hi, KD, WQ: tl.constexpr, HAS_ZP: tl.constexpr,
            CDT: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr):
    """Rows `rows` [BN], reduction indices k0 + [0, BK) (those below k_hi) of w[e] ([N, KD] logical),
    dequantised: the CDT tile [BN, BK]."""
    rmask = rows < N
    ks = k0 + tl.arange(0, BK)
    kmask = ks < k_hi
    rowoff = (e * N + rows[:, None]).to(tl.int64)
    if WQ == 3:  # int4 packed: byte j of a row holds k = 2j (low nibble) and 2j + 1 (high nibble)
        kb = k0 // 2 + tl.arange(0, BK // 2)
        byte = tl.load(w_ptr + rowoff * (KD // 2) + kb[None, :], mask=rmask[:, None] & (2 * kb[None, :] < k_hi),
                       other=0).to(tl.int32)
        q = tl.interleave(byte & 15, (byte >> 4) & 15).to(tl.float32)  # each byte loaded once
        NG = KD // GROUP
        if GROUP % BK == 0:  # the tile lies in one group: one scale (and zero point) per row
            gi = rowoff * NG + k0 // GROUP
            sc = tl.load(s_ptr + gi, mask=rmask[:, None], other=0.0)
            if HAS_ZP:
                zp = tl.load(z_ptr + gi, mask=rmask[:, None], other=0.0)
            else:
                zp = 8.0
            w = (q - zp) * sc
        elif BK % GROUP == 0:  # BK / GROUP groups per tile: [BN, groups] scales, broadcast over a group
            NGT: tl.constexpr = BK // GROUP
            gc = k0 // GROUP + tl.arange(0, NGT)
            gm = rmask[:, None] & (gc[None, :] * GROUP < k_hi)
            sc = tl.load(s_ptr + rowoff * NG + gc[None, :], mask=gm, other=0.0)
            if HAS_ZP:
                zp = tl.load(z_ptr + rowoff * NG + gc[None, :], mask=gm, other=0.0)
            else:
                zp = tl.full(sc.shape, 8.0, tl.float32)
            q3 = tl.reshape(q, (q.shape[0], NGT, GROUP))
            w = tl.reshape((q3 - zp[:, :, None]) * sc[:, :, None], (q.shape[0], BK))
        else:  # groups that neither hold nor tile BK: a scale per element
            gidx = rowoff * NG + ks[None, :] // GROUP
            m2 = rmask[:, None] & kmask[None, :]
            sc = tl.load(s_ptr + gidx, mask=m2, other=0.0)
            if HAS_ZP:
                zp = tl.load(z_ptr + gidx, mask=m2, other=0.0)
            else:
                zp = 8.0
            w = (q - zp) * sc
        return tl.where(rmask[:, None] & kmask[None, :], w, 0.0).to(CDT)
    else:
        w = tl.load(w_ptr + rowoff * KD + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0)
        if WQ == 4:  # fp8: uint8 e4m3fn bit patterns; the widening to CDT (f32/bf16) is exact
            w = w.to(tl.float8e4nv, bitcast=True)
        return w.to(CDT)  # int8, fp8: scale applied per output column after the dot


@triton.jit
def _tile_ids(pid, n_m, n_n, GROUP_M: tl.constexpr):
    """(expert block, column tile) of tile `pid` of a grouped GEMM's 1-D walk over n_m x n_n tiles.
    The tiles are walked in groups of GROUP_M consecutive expert blocks, column tiles within a group
    (the GROUP_SIZE_M order of Triton's matmul tutorial).  The sorted slot list is expert-major, so
    consecutive blocks mostly belong to one expert: a wave of programs then reads the activation rows
    of GROUP_M blocks and the weight tiles of a few columns of their expert, both reused from L2, instead
    of streaming every block's activations once per column tile (expert block fastest) or every
    expert's weights once per block (GROUP_M = 1: column tiles fastest)."""
    in_group = GROUP_M * n_n
    first = (pid // in_group) * GROUP_M
    size = tl.minimum(n_m - first, GROUP_M)
    r = pid % in_group
    return first + r % size, r // size


@triton.jit
def _block_rows(bexp_ptr, sorted_ptr, n_slots, pid_m, BLOCK_M: tl.constexpr):
    """Expert block pid_m: (expert or -1 for an unused block, sorted positions, slots, valid)."""
    e = tl.load(bexp_ptr + pid_m)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slot = tl.load(sorted_ptr + offs_m)
    return e, offs_m, slot, (slot >= 0) & (slot < n_slots)


@triton.jit
def _k_range(KD, K_CHUNK, s, SPLIT_K: tl.constexpr):
    """Slice s's part [lo, hi) of the reduction (split-K: s is the slice, from program axis 2 or the tile queue)."""
    if SPLIT_K == 1:
        lo = 0
        hi = KD
    else:
        lo = s * K_CHUNK
        hi = tl.minimum(KD, lo + K_CHUNK)
    return lo, hi


@triton.jit
def _mma(acc, a, w, PREC: tl.constexpr, SWAP_AB: tl.constexpr):
    """acc += a . w^T for activation rows a [BM, BK] and weight rows w [BN, BK].  SWAP_AB: the accumulator is
    held transposed, acc^T [BN, BM] += w . a^T -- the weights are the MMA's M operand (wgmma needs 64 rows
    there: few tokens per expert fill BLOCK_M = 16 only, the weight tile's BLOCK_N >= 64 fills it)."""
    if SWAP_AB:
        return tl.dot(w, tl.trans(a), acc, input_precision=PREC)
    else:
        return tl.dot(a, tl.trans(w), acc, input_precision=PREC)


@triton.jit
def _acc_init(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SWAP_AB: tl.constexpr):
    if SWAP_AB:
        return tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    else:
        return tl.zeros([BLOCK_M, BLOCK_N], tl.float32)


@triton.jit
def _acc_rows(acc, SWAP_AB: tl.constexpr):
    """The accumulator as [BM, BN] (activation rows first), whichever way _mma held it."""
    if SWAP_AB:
        return tl.trans(acc)
    else:
        return acc


@triton.jit
def _as_cdt(v, CODES: tl.constexpr, CDT: tl.constexpr):
    """A loaded tile as the dot's input type; CODES: uint8 e4m3fn bit patterns (fp8 activations or weights)."""
    if CODES:
        v = v.to(tl.float8e4nv, bitcast=True)
    return v.to(CDT)


@triton.jit
def _w_desc_tile(w_desc, e, row0, k0, WQ: tl.constexpr, CDT: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Weight rows row0 .. row0+BN, columns k0 .. k0+BK of expert e through the 3-D [E, N, K] TMA descriptor
    (rows and columns past the tensor read zeros); plain, int8 or fp8 codes (scales after the dot)."""
    w = tl.reshape(w_desc.load([e.to(tl.int32), row0, k0]), (BN, BK))
    return _as_cdt(w, WQ == 4, CDT)


@triton.jit
def _queue_tiles(q_ptr, n_tiles):
    """The tile queue of a persistent kernel: each call takes the next tile index (>= n_tiles: none left)."""
    return tl.atomic_add(q_ptr, 1, sem="relaxed")


@triton.jit
def _gemm1_features(f, F, GATED: tl.constexpr, INTERLEAVED: tl.constexpr):
    """Rows of w_in holding gate feature f and up feature f (out-of-range features read row N: nothing)."""
    N = 2 * F if GATED else F
    if GATED:
        if INTERLEAVED:
            rg = 2 * f
            ru = 2 * f + 1
        else:
            rg = f
            ru = F + f
    else:
        rg = f
        ru = f
    rg = tl.where(f < F, rg, N)
    ru = tl.where(f < F, ru, N)
    return rg, ru, N


@triton.jit
def _gemm1_epilogue(acc_g, acc_u, e, f, rg, ru, N, F, slot, mvalid, s_ptr, b_ptr, rw_ptr, alpha, beta, limit,
                    GATED: tl.constexpr, ACT: tl.constexpr, CLAMP: tl.constexpr, HAS_BIAS: tl.constexpr,
                    RW_INPUT: tl.constexpr, WQ: tl.constexpr):
    """Channel scales (int8/fp8), routing weight on the input (Llama-4), bias, activation."""
    if WQ == 2 or WQ == 4:  # int8, fp8: per output channel
        acc_g = acc_g * tl.load(s_ptr + e * N + rg, mask=f < F, other=0.0)[None, :]
        if GATED:
            acc_u = acc_u * tl.load(s_ptr + e * N + ru, mask=f < F, other=0.0)[None, :]
    if RW_INPUT:  # Llama-4: the routing weight scales the expert input (linear in x up to the bias)
        rw = tl.load(rw_ptr + slot, mask=mvalid, other=0.0).to(tl.float32)
        acc_g = acc_g * rw[:, None]
        acc_u = acc_u * rw[:, None]
    if HAS_BIAS:
        acc_g += tl.load(b_ptr + e * N + rg, mask=f < F, other=0.0).to(tl.float32)[None, :]
        if GATED:
            acc_u += tl.load(b_ptr + e * N + ru, mask=f < F, other=0.0).to(tl.float32)[None, :]
    return _act(acc_g, acc_u, ACT, alpha, beta, limit, CLAMP)


@triton.jit
def _gemm1_tile(pid, s, x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr, a_ptr, p_ptr, xs_ptr, w_desc,
                n_slots, k_top, D, F, stride_x, alpha, beta, limit, K_CHUNK, M_ROWS, n_blocks,
                GATED: tl.constexpr, INTERLEAVED: tl.constexpr, ACT: tl.constexpr, CLAMP: tl.constexpr,
                HAS_BIAS: tl.constexpr, RW_INPUT: tl.constexpr, WQ: tl.constexpr, HAS_ZP: tl.constexpr,
                CDT: tl.constexpr, PREC: tl.constexpr, ACT_BF16: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                GROUP: tl.constexpr, GROUP_M: tl.constexpr, SWAP_AB: tl.constexpr, TMA: tl.constexpr,
                EVEN_K: tl.constexpr, A8: tl.constexpr):
    """One tile of moe_gemm1_kernel: tile pid of the GROUP_M walk, reduction slice s."""
    pid_m, pid_n = _tile_ids(pid, n_blocks, tl.cdiv(F, BLOCK_N), GROUP_M)
    e, offs_m, slot, mvalid = _block_rows(bexp_ptr, sorted_ptr, n_slots, pid_m, BLOCK_M)
    if e >= 0:
        tok = tl.where(mvalid, slot // k_top, 0)
        f = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rg, ru, N = _gemm1_features(f, F, GATED, INTERLEAVED)
        acc_g = _acc_init(BLOCK_M, BLOCK_N, SWAP_AB)
        acc_u = _acc_init(BLOCK_M, BLOCK_N, SWAP_AB)
        k_lo, k_hi = _k_range(D, K_CHUNK, s, SPLIT_K)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            if EVEN_K:  # D a multiple of BLOCK_K: no bound on the reduction index
                xa = tl.load(x_ptr + tok[:, None].to(tl.int64) * stride_x + ks[None, :], mask=mvalid[:, None],
                             other=0.0)
            else:
                xa = tl.load(x_ptr + tok[:, None].to(tl.int64) * stride_x + ks[None, :],
                             mask=mvalid[:, None] & (ks[None, :] < k_hi), other=0.0)
            if ACT_BF16:  # bf16 weights: the GEMM inputs are bf16 (moe.experts wq=bf16 semantics)
                xa = _round_bf16(xa)
            xa = _as_cdt(xa, A8, CDT)
            if TMA:  # gate rows pid_n * BLOCK_N.. (up rows F + that): past F only columns the store masks
                wg = _w_desc_tile(w_desc, e, pid_n * BLOCK_N, k0, WQ, CDT, BLOCK_N, BLOCK_K)
            else:
                wg = _w_tile(w_ptr, s_ptr, z_ptr, e, rg, k0, N, k_hi, D, WQ, HAS_ZP, CDT, BLOCK_K, GROUP)
            acc_g = _mma(acc_g, xa, wg, PREC, SWAP_AB)
            if GATED:
                if TMA:
                    wu = _w_desc_tile(w_desc, e, F + pid_n * BLOCK_N, k0, WQ, CDT, BLOCK_N, BLOCK_K)
                else:
                    wu = _w_tile(w_ptr, s_ptr, z_ptr, e, ru, k0, N, k_hi, D, WQ, HAS_ZP, CDT, BLOCK_K, GROUP)
                acc_u = _mma(acc_u, xa, wu, PREC, SWAP_AB)
        acc_g = _acc_rows(acc_g, SWAP_AB)
        acc_u = _acc_rows(acc_u, SWAP_AB)
        if A8:  # per-token activation scales (linear: before the split-K sum as well)
            xsc = tl.load(xs_ptr + tok, mask=mvalid, other=0.0)[:, None]
            acc_g = acc_g * xsc
            acc_u = acc_u * xsc
        omask = mvalid[:, None] & (f[None, :] < F)
        if SPLIT_K > 1:
            prow = (s * M_ROWS + offs_m[:, None]).to(tl.int64) * (2 * F)
            tl.store(p_ptr + prow + f[None, :], acc_g, mask=omask)
            if GATED:
                tl.store(p_ptr + prow + F + f[None, :], acc_u, mask=omask)
        else:
            a = _gemm1_epilogue(acc_g, acc_u, e, f, rg, ru, N, F, slot, mvalid, s_ptr, b_ptr, rw_ptr, alpha, beta,
                                limit, GATED, ACT, CLAMP, HAS_BIAS, RW_INPUT, WQ)
            # padding rows of the block stored as zeros: the down projection may read whole blocks (TMA)
            tl.store(a_ptr + offs_m[:, None].to(tl.int64) * F + f[None, :],
                     _cast_to(tl.where(omask, a, 0.0), a_ptr.dtype.element_ty), mask=f[None, :] < F)


@triton.jit
def moe_gemm1_kernel(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr, a_ptr, p_ptr,
                     n_slots, k_top, D, F, stride_x, alpha, beta, limit, K_CHUNK, M_ROWS, n_blocks,
                     GATED: tl.constexpr, INTERLEAVED: tl.constexpr, ACT: tl.constexpr, CLAMP: tl.constexpr,
                     HAS_BIAS: tl.constexpr, RW_INPUT: tl.constexpr, WQ: tl.constexpr, HAS_ZP: tl.constexpr,
                     CDT: tl.constexpr, PREC: tl.constexpr, ACT_BF16: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     SPLIT_K: tl.constexpr = 1, GROUP: tl.constexpr = 0, GROUP_M: tl.constexpr = 1,
                     q_ptr=None, xs_ptr=None, w_desc=None, SWAP_AB: tl.constexpr = False,
                     PERSISTENT: tl.constexpr = False, TMA: tl.constexpr = False, EVEN_K: tl.constexpr = False,
                     A8: tl.constexpr = False):
    """A[p, f] = act(x[tok(p)] . w_in[e, gate f] (+b), x . w_in[e, up f] (+b)) for the padded sorted
    positions p of one BLOCK_M block (expert e) and BLOCK_N features f.
    SPLIT_K > 1 (few rows, long D: the small-token path): slice s of D stores its raw gate/up sums in
    p_ptr [SPLIT_K, M_ROWS, 2, F] (f32); moe_act_kernel finishes.
    Grid: (n_blocks * cdiv(F, BLOCK_N), 1, SPLIT_K), walked in GROUP_M order (_tile_ids).  PERSISTENT: a
    grid of about one program per SM slot, each taking tiles (and slices) from the queue at q_ptr (a zeroed
    int32) until none are left.  SWAP_AB: weights as the MMA's 64-row operand (_mma).  TMA: the weight tiles
    through the 3-D [E, 2F, D] descriptor w_desc (not interleaved, not int4).  EVEN_K: D % BLOCK_K == 0.
    A8: x holds fp8 e4m3 codes (uint8) with a scale per token at xs_ptr (fp8 x fp8 dots where CDT is fp8)."""
    if PERSISTENT:
        n_tiles = n_blocks * tl.cdiv(F, BLOCK_N)
        t = _queue_tiles(q_ptr, n_tiles * SPLIT_K)
        while t < n_tiles * SPLIT_K:
            _gemm1_tile(t % n_tiles, t // n_tiles, x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr,
                        a_ptr, p_ptr, xs_ptr, w_desc, n_slots, k_top, D, F, stride_x, alpha, beta, limit, K_CHUNK,
                        M_ROWS, n_blocks, GATED, INTERLEAVED, ACT, CLAMP, HAS_BIAS, RW_INPUT, WQ, HAS_ZP, CDT, PREC,
                        ACT_BF16, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, GROUP, GROUP_M, SWAP_AB, TMA, EVEN_K, A8)
            t = _queue_tiles(q_ptr, n_tiles * SPLIT_K)
    else:
        _gemm1_tile(tl.program_id(0), tl.program_id(2), x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr,
                    bexp_ptr, a_ptr, p_ptr, xs_ptr, w_desc, n_slots, k_top, D, F, stride_x, alpha, beta, limit,
                    K_CHUNK, M_ROWS, n_blocks, GATED, INTERLEAVED, ACT, CLAMP, HAS_BIAS, RW_INPUT, WQ, HAS_ZP, CDT,
                    PREC, ACT_BF16, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, GROUP, GROUP_M, SWAP_AB, TMA, EVEN_K, A8)


@triton.jit
def moe_act_kernel(p_ptr, s_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr, a_ptr, n_slots, F, M_ROWS, alpha, beta,
                   limit, GATED: tl.constexpr, INTERLEAVED: tl.constexpr, ACT: tl.constexpr, CLAMP: tl.constexpr,
                   HAS_BIAS: tl.constexpr, RW_INPUT: tl.constexpr, WQ: tl.constexpr, SPLIT_K: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Split-K gemm1's epilogue: sum the SPLIT_K partial gate/up sums (fixed order: deterministic),
    then scales, bias and activation exactly as the unsplit kernel does."""
    pid_n = tl.program_id(1)
    e, offs_m, slot, mvalid = _block_rows(bexp_ptr, sorted_ptr, n_slots, tl.program_id(0), BLOCK_M)
    if e < 0:
        return
    f = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rg, ru, N = _gemm1_features(f, F, GATED, INTERLEAVED)
    omask = mvalid[:, None] & (f[None, :] < F)
    acc_g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_u = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for s in tl.static_range(SPLIT_K):
        prow = (s * M_ROWS + offs_m[:, None]).to(tl.int64) * (2 * F)
        acc_g += tl.load(p_ptr + prow + f[None, :], mask=omask, other=0.0)
        if GATED:
            acc_u += tl.load(p_ptr + prow + F + f[None, :], mask=omask, other=0.0)
    a = _gemm1_epilogue(acc_g, acc_u, e, f, rg, ru, N, F, slot, mvalid, s_ptr, b_ptr, rw_ptr, alpha, beta,
                        limit, GATED, ACT, CLAMP, HAS_BIAS, RW_INPUT, WQ)
    tl.store(a_ptr + offs_m[:, None].to(tl.int64) * F + f[None, :], _cast_to(tl.where(omask, a, 0.0),
                                                                             a_ptr.dtype.element_ty),
             mask=f[None, :] < F)  # (padding rows as zeros, as the unsplit kernel)


@triton.jit
def _e4m3_bits(v):
    """f32 v -> its e4m3fn code (uint8), saturated to +-448, round to nearest even, NaN -> NaN: the GPU's cvt.rn
    written as bit arithmetic, because the interpreter's f32 -> fp8 cast mis-rounds at the top of a binade
    (124.3 -> 64).  Normal range: drop 20 of f32's 23 mantissa bits with ties to even (a carry moves into
    the exponent), rebias 127 -> 7; below 2^-6 the subnormal steps of 2^-9: rint(|v| * 512) (8 = 2^-6)."""
    u = tl.minimum(tl.maximum(v, -448.0), 448.0).to(tl.uint32, bitcast=True)  # (min/max drop a NaN: see the end)
    sign = (u >> 31) << 7
    a = u & 0x7FFFFFFF
    r = (a + 0x7FFFF + ((a >> 20) & 1)) & 0xFFF00000
    normal = ((((r >> 23) - 120) << 3) | ((r >> 20) & 7)) & 0x7F
    af = a.to(tl.float32, bitcast=True) * 512.0
    sub = ((af + 8388608.0) - 8388608.0).to(tl.uint32)
    code = tl.where(a >= 0x3C800000, normal, sub)  # 0x3C800000: 2^-6
    return tl.where(v == v, code | sign, 0x7F).to(tl.uint8)  # (NaN: e4m3fn's NaN code)


@triton.jit
def quant_fp8_rows_kernel(x_ptr, q_ptr, s_ptr, n_cols, stride_x, BLOCK: tl.constexpr):
    """Dynamic per-row fp8 quantisation (w8a8 activations): s = max|x[r]| / 448 (1 where the row is all
    zeros), q[r] = e4m3fn(x[r] / s) round to nearest even (_e4m3_bits; NaN stays NaN), as uint8 bit patterns.  One program per row, two passes over the row (amax, then the codes)."""
    r = tl.program_id(0).to(tl.int64)
    amax = tl.zeros([BLOCK], tl.float32)
    for c0 in range(0, n_cols, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + r * stride_x + c, mask=c < n_cols, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(v))
    m = tl.max(amax, 0)
    sc = m / 448.0
    sc = tl.where(sc > 0, sc, 1.0)  # (an all-zero row, or one so small that its scale underflows: codes 0)
    tl.store(s_ptr + r, sc)
    for c0 in range(0, n_cols, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + r * stride_x + c, mask=c < n_cols, other=0.0).to(tl.float32)
        tl.store(q_ptr + r * n_cols + c, _e4m3_bits(v / sc), mask=c < n_cols)


@triton.jit
def _gemm2_epilogue(acc, e, d, D, slot, mvalid, s_ptr, b_ptr, rw_ptr, HAS_BIAS: tl.constexpr,
                    RW_OUTPUT: tl.constexpr, WQ: tl.constexpr):
    if WQ == 2 or WQ == 4:
        acc = acc * tl.load(s_ptr + e * D + d, mask=d < D, other=0.0)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + e * D + d, mask=d < D, other=0.0).to(tl.float32)[None, :]
    if RW_OUTPUT:
        acc = acc * tl.load(rw_ptr + slot, mask=mvalid, other=0.0).to(tl.float32)[:, None]
    return acc


@triton.jit
def _gemm2_store(y_ptr, acc, slot, k_top, d, D, omask, COMBINE: tl.constexpr):
    if COMBINE:  # out[token] += row: the k slots of a token meet here (order-free for k <= 2: 0 + a + b)
        # relaxed order: the sums need atomicity only (nothing reads y_ptr until the kernel ends), not the
        # default acq_rel fences around every add
        tok = slot // k_top
        tl.atomic_add(y_ptr + tok[:, None].to(tl.int64) * D + d[None, :], acc, mask=omask, sem="relaxed")
    else:
        tl.store(y_ptr + slot[:, None].to(tl.int64) * D + d[None, :], _cast_to(acc, y_ptr.dtype.element_ty), mask=omask)


@triton.jit
def _gemm2_tile(pid, s, a_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr, y_ptr, p_ptr, as_ptr, w_desc,
                a_desc, n_slots, k_top, D, F, K_CHUNK, M_ROWS, n_blocks,
                HAS_BIAS: tl.constexpr, RW_OUTPUT: tl.constexpr, WQ: tl.constexpr, HAS_ZP: tl.constexpr,
                CDT: tl.constexpr, PREC: tl.constexpr, ACT_BF16: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                GROUP: tl.constexpr, COMBINE: tl.constexpr, GROUP_M: tl.constexpr, SWAP_AB: tl.constexpr,
                TMA: tl.constexpr, EVEN_K: tl.constexpr, A8: tl.constexpr):
    """One tile of moe_gemm2_kernel: tile pid of the GROUP_M walk, reduction slice s."""
    pid_m, pid_n = _tile_ids(pid, n_blocks, tl.cdiv(D, BLOCK_N), GROUP_M)
    e, offs_m, slot, mvalid = _block_rows(bexp_ptr, sorted_ptr, n_slots, pid_m, BLOCK_M)
    if e >= 0:
        d = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = _acc_init(BLOCK_M, BLOCK_N, SWAP_AB)
        k_lo, k_hi = _k_range(F, K_CHUNK, s, SPLIT_K)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            if TMA:  # the sorted rows through the 2-D descriptor (a used block's padding rows hold zeros)
                aa = a_desc.load([pid_m * BLOCK_M, k0])
            elif EVEN_K:
                aa = tl.load(a_ptr + offs_m[:, None].to(tl.int64) * F + ks[None, :], mask=mvalid[:, None], other=0.0)
            else:
                aa = tl.load(a_ptr + offs_m[:, None].to(tl.int64) * F + ks[None, :],
                             mask=mvalid[:, None] & (ks[None, :] < k_hi), other=0.0)
            if ACT_BF16:
                aa = _round_bf16(aa)
            aa = _as_cdt(aa, A8, CDT)
            if TMA:
                wt = _w_desc_tile(w_desc, e, pid_n * BLOCK_N, k0, WQ, CDT, BLOCK_N, BLOCK_K)
            else:
                wt = _w_tile(w_ptr, s_ptr, z_ptr, e, d, k0, D, k_hi, F, WQ, HAS_ZP, CDT, BLOCK_K, GROUP)
            acc = _mma(acc, aa, wt, PREC, SWAP_AB)
        acc = _acc_rows(acc, SWAP_AB)
        if A8:  # per-row scales of the fp8 activations (sorted positions)
            acc = acc * tl.load(as_ptr + offs_m, mask=mvalid, other=0.0)[:, None]
        omask = mvalid[:, None] & (d[None, :] < D)
        if SPLIT_K > 1:
            prow = (s * M_ROWS + offs_m[:, None]).to(tl.int64) * D
            tl.store(p_ptr + prow + d[None, :], acc, mask=omask)
        else:
            acc = _gemm2_epilogue(acc, e, d, D, slot, mvalid, s_ptr, b_ptr, rw_ptr, HAS_BIAS, RW_OUTPUT, WQ)
            _gemm2_store(y_ptr, acc, slot, k_top, d, D, omask, COMBINE)


@triton.jit
def moe_gemm2_kernel(a_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr, y_ptr, p_ptr,
                     n_slots, k_top, D, F, K_CHUNK, M_ROWS, n_blocks,
                     HAS_BIAS: tl.constexpr, RW_OUTPUT: tl.constexpr, WQ: tl.constexpr, HAS_ZP: tl.constexpr,
                     CDT: tl.constexpr, PREC: tl.constexpr, ACT_BF16: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     SPLIT_K: tl.constexpr = 1, GROUP: tl.constexpr = 0, COMBINE: tl.constexpr = False,
                     GROUP_M: tl.constexpr = 1, q_ptr=None, as_ptr=None, w_desc=None, a_desc=None,
                     SWAP_AB: tl.constexpr = False, PERSISTENT: tl.constexpr = False, TMA: tl.constexpr = False,
                     EVEN_K: tl.constexpr = False, A8: tl.constexpr = False):
    """Y[slot(p), d] = (A[p] . w_out[e, d] + b_out[e, d]) * rw[slot(p)] (the combine's multiply).
    COMBINE: the combine's sum too -- y_ptr is the f32 output [T, D] and each slot's row is atomically
    added to its token's row (_gemm2_store, relaxed order).
    SPLIT_K > 1: raw partial sums of one slice of F into p_ptr [SPLIT_K, M_ROWS, D]; moe_down_epilogue_kernel
    finishes.  Grid: (n_blocks * cdiv(D, BLOCK_N), 1, SPLIT_K), walked in GROUP_M order (_tile_ids);
    PERSISTENT, SWAP_AB, EVEN_K as moe_gemm1_kernel; TMA: weights through the 3-D [E, D, F] descriptor w_desc
    and the sorted activations A through the 2-D [M_ROWS, F] descriptor a_desc.  A8: A holds fp8 codes with a
    scale per sorted row at as_ptr."""
    if PERSISTENT:
        n_tiles = n_blocks * tl.cdiv(D, BLOCK_N)
        t = _queue_tiles(q_ptr, n_tiles * SPLIT_K)
        while t < n_tiles * SPLIT_K:
            _gemm2_tile(t % n_tiles, t // n_tiles, a_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr,
                        y_ptr, p_ptr, as_ptr, w_desc, a_desc, n_slots, k_top, D, F, K_CHUNK, M_ROWS, n_blocks,
                        HAS_BIAS, RW_OUTPUT, WQ, HAS_ZP, CDT, PREC, ACT_BF16, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K,
                        GROUP, COMBINE, GROUP_M, SWAP_AB, TMA, EVEN_K, A8)
            t = _queue_tiles(q_ptr, n_tiles * SPLIT_K)
    else:
        _gemm2_tile(tl.program_id(0), tl.program_id(2), a_ptr, w_ptr, s_ptr, z_ptr, b_ptr, rw_ptr, sorted_ptr,
                    bexp_ptr, y_ptr, p_ptr, as_ptr, w_desc, a_desc, n_slots, k_top, D, F, K_CHUNK, M_ROWS, n_blocks,
                    HAS_BIAS, RW_OUTPUT, WQ, HAS_ZP, CDT, PREC, ACT_BF16, BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K,
                    GROUP, COMBINE, GROUP_M, SWAP_AB, TMA, EVEN_K, A8)


@triton.jit
def moe_down_epilogue_kernel(p_ptr, s_ptr, b_ptr, rw_ptr, sorted_ptr, bexp_ptr, y_ptr, n_slots, k_top, D, M_ROWS,
                             HAS_BIAS: tl.constexpr, RW_OUTPUT: tl.constexpr, WQ: tl.constexpr,
                             SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             COMBINE: tl.constexpr = False):
    """Split-K gemm2's epilogue: sum the partials (fixed order), scale, bias, routing weight, scatter."""
    pid_n = tl.program_id(1)
    e, offs_m, slot, mvalid = _block_rows(bexp_ptr, sorted_ptr, n_slots, tl.program_id(0), BLOCK_M)
    if e < 0:
        return
    d = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    omask = mvalid[:, None] & (d[None, :] < D)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(p_ptr + (s * M_ROWS + offs_m[:, None]).to(tl.int64) * D + d[None, :], mask=omask, other=0.0)
    acc = _gemm2_epilogue(acc, e, d, D, slot, mvalid, s_ptr, b_ptr, rw_ptr, HAS_BIAS, RW_OUTPUT, WQ)
    _gemm2_store(y_ptr, acc, slot, k_top, d, D, omask, COMBINE)


@triton.jit
def align_kernel(ids_ptr, sorted_ptr, bexp_ptr, n, E, n_blocks, BLOCK_M: tl.constexpr, BN: tl.constexpr,
                 BE: tl.constexpr, BB: tl.constexpr):
    """The whole align/sort plan in one program, for few slots (decode): per-expert counts, blocks of
    BLOCK_M, each slot's position (stable: token order within an expert), each block's expert.
    sorted_ptr is pre-filled with -1 (padding); slots with id < 0 (dropped) get no position."""
    i = tl.arange(0, BN)
    iv = i < n
    key = tl.load(ids_ptr + i, mask=iv, other=-1).to(tl.int32)
    key = tl.where(iv, tl.where(key >= 0, key, E), E + 1)
    ex = tl.arange(0, BE)
    counts = tl.sum(((key[None, :] == ex[:, None]) & (ex[:, None] < E)).to(tl.int32), 1)
    nblk = (counts + BLOCK_M - 1) // BLOCK_M
    bend = tl.cumsum(nblk, 0)
    bstart = bend - nblk
    rank = tl.sum(((key[None, :] == key[:, None]) & (i[None, :] < i[:, None])).to(tl.int32), 1)
    own = tl.sum(tl.where(ex[None, :] == key[:, None], bstart[None, :], 0), 1)
    tl.store(sorted_ptr + own * BLOCK_M + rank, i.to(tl.int64), mask=iv & (key < E))
    b = tl.arange(0, BB)
    be = tl.sum((bend[None, :] <= b[:, None]).to(tl.int32), 1)  # experts whose blocks end at or before b
    tl.store(bexp_ptr + b, tl.where(be < E, be, -1).to(tl.int64), mask=b < n_blocks)


@triton.jit
def combine_kernel(y_ptr, w_ptr, sh_ptr, out_ptr, D, K: tl.constexpr, WEIGHTED: tl.constexpr,
                   HAS_SHARED: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[t] = sum_j w[t, j] * y[t, j] (+ shared[t]); one program per (token, BLOCK_D columns)."""
    t = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dm = d < D
    acc = tl.zeros([BLOCK_D], tl.float32)
    for j in tl.static_range(K):
        v = tl.load(y_ptr + (t * K + j).to(tl.int64) * D + d, mask=dm, other=0.0).to(tl.float32)
        if WEIGHTED:
            v = v * tl.load(w_ptr + t * K + j).to(tl.float32)
        acc += v
    if HAS_SHARED:
        acc += tl.load(sh_ptr + t.to(tl.int64) * D + d, mask=dm, other=0.0).to(tl.float32)
    tl.store(out_ptr + t.to(tl.int64) * D + d, _cast_to(acc, out_ptr.dtype.element_ty), mask=dm)


# ---------------------------------------------------------------------------------------------
# ordinary ops
@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sab, sam, sak, sbb, sbk, sbn, scb, scm, scn,
                  PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  WIDEN: tl.constexpr = False, bias_ptr=None, sxm=0, sxn=0, alpha=1.0, beta=1.0,
                  HAS_BIAS: tl.constexpr = False):
    """Batched C[b] = A[b] @ B[b] with arbitrary strides (broadcast batches have stride 0).  WIDEN: f16/bf16
    tiles go to f32 before the dot (exact: their products are exact in f32), for Triton's interpreter,
    whose dot multiplies bf16 bit patterns as integers.  HAS_BIAS (Gemm): C = alpha * A @ B + beta * X
    with X [M, N] by strides (0 where broadcast), in f32 before the one rounding to C's type."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    bt = tl.program_id(2).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + bt * sab + rm[:, None] * sam + rk[None, :] * sak,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        b = tl.load(b_ptr + bt * sbb + rk[:, None] * sbk + rn[None, :] * sbn,
                    mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)
        if WIDEN:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc += tl.dot(a, b, input_precision=PREC)
    if HAS_BIAS:
        xb = tl.load(bias_ptr + rm[:, None] * sxm + rn[None, :] * sxn, mask=(rm[:, None] < M) & (rn[None, :] < N),
                     other=0.0)
        acc = alpha * acc + beta * xb.to(tl.float32)
    tl.store(c_ptr + bt * scb + rm[:, None] * scm + rn[None, :] * scn, _cast_to(acc, c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def gemv_splitk_kernel(a_ptr, b_ptr, p_ptr, M, N, K, sam, sak, sbk, sbn, K_CHUNK, PREC: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, WIDEN: tl.constexpr = False):
    """Few-row matmul (M <= BLOCK_M: a router at decode), split over K: program (n tile, slice s) sums
    A[:, k] B[k, n] over its K_CHUNK slice of the reduction into p_ptr[s] ([S, M, N] f32), so that many
    programs stream the long operand B in parallel instead of one tile walking all of K (a T=1 router
    was one 64x64 program).  splitk_reduce_kernel adds the slices in a fixed order."""
    pid_n = tl.program_id(0)
    s = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    lo = s * K_CHUNK
    hi = tl.minimum(K, lo + K_CHUNK)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(lo, hi, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + rm[:, None] * sam + rk[None, :] * sak, mask=(rm[:, None] < M) & (rk[None, :] < hi),
                    other=0.0)
        b = tl.load(b_ptr + rk[:, None].to(tl.int64) * sbk + rn[None, :] * sbn,
                    mask=(rk[:, None] < hi) & (rn[None, :] < N), other=0.0)
        if WIDEN:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PREC)
    tl.store(p_ptr + (s * M + rm[:, None]) * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def splitk_reduce_kernel(p_ptr, c_ptr, M, N, S, scm, scn, bias_ptr=None, sxm=0, sxn=0, alpha=1.0, beta=1.0,
                         HAS_BIAS: tl.constexpr = False, BLOCK: tl.constexpr = 1024):
    """C = sum over the S slices of p_ptr [S, M, N] in slice order (deterministic), with matmul_kernel's Gemm
    epilogue (alpha * sum + beta * X) and one rounding to C's type."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = i < M * N
    acc = tl.zeros([BLOCK], tl.float32)
    for s in range(0, S):
        acc += tl.load(p_ptr + s * M * N + i, mask=ok, other=0.0)
    m = i // N
    n = i % N
    if HAS_BIAS:
        acc = alpha * acc + beta * tl.load(bias_ptr + m * sxm + n * sxn, mask=ok, other=0.0).to(tl.float32)
    tl.store(c_ptr + m * scm + n * scn, _cast_to(acc, c_ptr.dtype.element_ty), mask=ok)


@triton.jit
def binary_kernel(a_ptr, b_ptr, o_ptr, n, OP: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    a = _widen(tl.load(a_ptr + i, mask=m, other=0))
    b = _widen(tl.load(b_ptr + i, mask=m, other=1))
    if OP == 0:
        r = a + b
    elif OP == 1:
        r = a - b
    elif OP == 2:
        r = a * b
    elif OP == 3:
        r = a / b
    elif OP == 4:
        r = tl.minimum(a, b)
    elif OP == 5:
        r = tl.maximum(a, b)
    elif OP == 6:
        r = a == b
    elif OP == 7:
        r = a > b
    elif OP == 8:
        r = a >= b
    elif OP == 9:
        r = a < b
    elif OP == 10:
        r = a <= b
    elif OP == 11:
        r = a & b
    else:
        r = a | b
    tl.store(o_ptr + i, _cast_to(r, o_ptr.dtype.element_ty), mask=m)


@triton.jit
def unary_kernel(x_ptr, o_ptr, n, OP: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    x = tl.load(x_ptr + i, mask=m, other=0).to(tl.float32)
    if OP == 0:
        r = tl.maximum(x, 0.0)
    elif OP == 1:
        r = -x
    elif OP == 2:
        r = tl.abs(x)
    elif OP == 3:
        r = tl.sqrt(x)
    elif OP == 4:
        r = 1.0 / x
    elif OP == 5:
        r = tl.exp(x)
    elif OP == 6:
        r = tl.log(x)
    elif OP == 7:
        r = 2.0 * _sigmoid(2.0 * x) - 1.0
    elif OP == 8:
        r = _erf(x)
    elif OP == 9:
        r = _sigmoid(x)
    elif OP == 10:
        r = 0.5 * x * (1.0 + _erf(x * 0.7071067811865476))
    elif OP == 11:
        r = x * _sigmoid(x)
    else:
        r = x
    tl.store(o_ptr + i, _cast_to(r, o_ptr.dtype.element_ty), mask=m)


@triton.jit
def softmax_kernel(x_ptr, o_ptr, n_cols, LOG: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BLOCK)
    m = c < n_cols
    x = tl.load(x_ptr + r * n_cols + c, mask=m, other=-float("inf")).to(tl.float32)
    mx = tl.max(x, 0)
    ex = tl.where(m, tl.exp(x - mx), 0.0)
    s = tl.sum(ex, 0)
    if LOG:
        y = x - mx - tl.log(s)
    else:
        y = ex / s
    tl.store(o_ptr + r * n_cols + c, _cast_to(y, o_ptr.dtype.element_ty), mask=m)


@triton.jit
def reduce_kernel(x_ptr, o_ptr, n_cols, OP: tl.constexpr, BLOCK: tl.constexpr):
    """Row reductions over the last axis: 0 sum, 1 max, 2 min, 3 mean."""
    r = tl.program_id(0).to(tl.int64)
    acc_s = tl.zeros([BLOCK], tl.float32)
    acc_x = tl.full([BLOCK], -float("inf"), tl.float32)
    acc_n = tl.full([BLOCK], float("inf"), tl.float32)
    for c0 in range(0, n_cols, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        m = c < n_cols
        x = tl.load(x_ptr + r * n_cols + c, mask=m, other=0.0).to(tl.float32)
        acc_s += x
        acc_x = tl.maximum(acc_x, tl.where(m, x, -float("inf")))
        acc_n = tl.minimum(acc_n, tl.where(m, x, float("inf")))
    if OP == 0:
        y = tl.sum(acc_s, 0)
    elif OP == 1:
        y = tl.max(acc_x, 0)
    elif OP == 2:
        y = tl.min(acc_n, 0)
    else:
        y = tl.sum(acc_s, 0) / n_cols
    tl.store(o_ptr + r, _cast_to(y, o_ptr.dtype.element_ty))


@triton.jit
def norm_kernel(x_ptr, s_ptr, b_ptr, y_ptr, mean_ptr, inv_ptr, n, eps, RMS: tl.constexpr, HAS_BIAS: tl.constexpr,
                BLOCK: tl.constexpr):
    """Row-wise LayerNorm (or RMSNorm) over the last axis; also writes the mean and 1/std rows."""
    r = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BLOCK)
    m = c < n
    x = tl.load(x_ptr + r * n + c, mask=m, other=0.0).to(tl.float32)
    if RMS:
        mean = 0.0
        var = tl.sum(x * x, 0) / n
    else:
        mean = tl.sum(x, 0) / n
        d = tl.where(m, x - mean, 0.0)
        var = tl.sum(d * d, 0) / n
    inv = 1.0 / tl.sqrt(var + eps)
    y = (x - mean) * inv * tl.load(s_ptr + c, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(b_ptr + c, mask=m, other=0.0).to(tl.float32)
    tl.store(y_ptr + r * n + c, _cast_to(y, y_ptr.dtype.element_ty), mask=m)
    if not RMS:
        tl.store(mean_ptr + r, mean)
        tl.store(inv_ptr + r, inv)


# ---------------------------------------------------------------------------------------------
# KV cache (ir/ops/kv.py): appending rows into a cache buffer in place, attention over cache rows.  A cache may
# be f16 under f32 queries (a half-precision cache): kv_append rounds the f32 rows to f16 (nearest even,
# the GPU's cvt.rn and numpy's astype under the interpreter), the attention loads the f16 rows and widens them
# to f32 in registers (exact) before any arithmetic.  One program per query row; an online softmax (running
# max, sum and the p V accumulator in f32) over blocks of BLOCK_N keys.
@triton.jit
def kv_append_kernel(c_ptr, n_ptr, pos_ptr, M, T, INNER, BLOCK: tl.constexpr):
    """cache [OUTER, M, INNER] (contiguous), new [OUTER, T, INNER]: cache[o, pos + t] = new[o, t] in the
    cache's element type (f32 -> f16: round to nearest even).  One program per (o, t) row."""
    r = tl.program_id(0).to(tl.int64)
    o = r // T
    t = r % T
    p = tl.load(pos_ptr).to(tl.int64)
    fits = (p >= 0) & (p + T <= M)  # (checked on the host too; inside a CUDA graph only here: nothing is written)
    src = n_ptr + r * INNER
    dst = c_ptr + (o * M + tl.where(fits, p, 0) + t) * INNER
    lim = tl.where(fits, INNER, 0)
    for c0 in range(0, INNER, BLOCK):
        c = c0 + tl.arange(0, BLOCK)
        m = c < lim
        x = tl.load(src + c, mask=m, other=0.0)
        tl.store(dst + c, x.to(c_ptr.dtype.element_ty), mask=m)  # (f32 -> f16: Triton's default, round to nearest even)


@triton.jit
def _kv_attend(q, m_i, l_i, acc, k_ptr, v_ptr, skn, skd, svn, svd, n_rows, key0, qpos, window, mask_ptr, smj,
               scale, D, DV, VISIBLE_ALL: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Fold rows 0 .. n_rows-1 of one (k, v) head (key positions key0 + j) into the running softmax of a
    query row at position qpos: visible where key position <= qpos (unless VISIBLE_ALL) and, with a
    window W > 0, qpos - key position < W.  Rows load widened to f32 (an f16 cache: exact)."""
    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    lo = tl.where(window > 0, tl.maximum(qpos - window + 1 - key0, 0), 0)
    hi = n_rows
    if not VISIBLE_ALL:
        hi = tl.minimum(n_rows, qpos - key0 + 1)
    for j0 in range(lo, hi, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        jm = (j >= lo) & (j < hi)
        k = tl.load(k_ptr + j[:, None] * skn + d[None, :] * skd, mask=jm[:, None] & (d[None, :] < D),
                    other=0.0).to(tl.float32)
        s = tl.sum(k * q[None, :], 1) * scale
        if HAS_MASK:
            s += tl.load(mask_ptr + (key0 + j) * smj, mask=jm, other=0.0).to(tl.float32)
        s = tl.where(jm, s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # (a block whose scores are all -inf: adds 0)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe)
        v = tl.load(v_ptr + j[:, None] * svn + dv[None, :] * svd, mask=jm[:, None] & (dv[None, :] < DV),
                    other=0.0).to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def kv_attention_kernel(q_ptr, k_ptr, v_ptr, kn_ptr, vn_ptr, pos_ptr, mask_ptr, y_ptr,
                        Hq, S, G, D, DV, M, scale, window,
                        sqb, sqh, sqs, sqd, skb, skh, skn, skd, svb, svh, svn, svd,
                        snb, snh, sns, snd, swb, swh, sws, swd, smb, smh, sms, smj,
                        STEP: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """One query row (b, h, i) per program; y [B, Hq, S, DV] contiguous.  STEP (moec.kv_step_attention): the
    cache's rows 0 .. pos-1 then the S new keys (k_new / v_new, positions pos ..), causal, the window.
    Otherwise (moec.kv_attention): the buffer's rows 0 .. pos+S-1, causal (aligned to the last S keys) or not,
    an additive mask [.., S, pos+S] (strides, 0 where broadcast)."""
    r = tl.program_id(0).to(tl.int64)
    i = r % S
    bh = r // S
    h = bh % Hq
    b = bh // Hq
    g = h // G
    p = tl.load(pos_ptr).to(tl.int64)
    if STEP:  # (the host checks 0 <= p <= M (p + S <= M); inside a CUDA graph the rows read stay in the buffer)
        p = tl.minimum(tl.maximum(p, 0), M)
    else:
        p = tl.minimum(tl.maximum(p, 0), M - S)
    qpos = p + i
    d = tl.arange(0, BLOCK_D)
    q = tl.load(q_ptr + b * sqb + h * sqh + i * sqs + d * sqd, mask=d < D, other=0.0).to(tl.float32)
    m_i = tl.full([], -float("inf"), tl.float32)
    l_i = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_DV], tl.float32)
    kb = k_ptr + b * skb + g * skh
    vb = v_ptr + b * svb + g * svh
    mrow = mask_ptr + b * smb + h * smh + i * sms
    if STEP:
        m_i, l_i, acc = _kv_attend(q, m_i, l_i, acc, kb, vb, skn, skd, svn, svd, p, 0, qpos, window, mrow, smj,
                                   scale, D, DV, False, False, BLOCK_N, BLOCK_D, BLOCK_DV)
        m_i, l_i, acc = _kv_attend(q, m_i, l_i, acc, kn_ptr + b * snb + g * snh, vn_ptr + b * swb + g * swh,
                                   sns, snd, sws, swd, S, p, qpos, window, mrow, smj,
                                   scale, D, DV, False, False, BLOCK_N, BLOCK_D, BLOCK_DV)
    else:
        m_i, l_i, acc = _kv_attend(q, m_i, l_i, acc, kb, vb, skn, skd, svn, svd, p + S, 0, qpos, 0, mrow, smj,
                                   scale, D, DV, not CAUSAL, HAS_MASK, BLOCK_N, BLOCK_D, BLOCK_DV)
    dv = tl.arange(0, BLOCK_DV)
    y = tl.where(l_i > 0, acc / tl.where(l_i > 0, l_i, 1.0), 0.0)  # (a row whose every score is -inf: 0)
    tl.store(y_ptr + r * DV + dv, _cast_to(y, y_ptr.dtype.element_ty), mask=dv < DV)
