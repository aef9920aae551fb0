"""Placement, tiling and the cost model for the Ascend target.

make_plan(module, target) decides, op by op, what runs as AscendC kernels on the NPU and what stays on
the host (reported), chooses the cube tile sizes of every grouped matmul with the cost model, and
estimates every kernel's time on the SoC.  All times are ESTIMATES: no NPU was measured.

The expert FFN runs as five kernels (CANN's GroupedMatmul structure):
  moe_gather_rows (AIV) -> grouped_matmul up (AIC) -> moe_activation (AIV) -> grouped_matmul down (AIC)
  -> moe_scatter_rows (AIV);  int8 (int4) weights add moe_dequant_int8 (moe_dequant_int4) (AIV) before each
  grouped matmul, widening the codes to the cube's operand type (f32, or a bf16/f16 model's own type); w8a8
  (int8 weights, aq=int8) instead adds moe_quant_rows_int8 (AIV) before each grouped matmul, which then runs
  int8 x int8 with int32 accumulation; activation / scatter rows apply the row and channel scales.
Router and other constant-weight matmuls ([..., K] rows) run as grouped_matmul with one group; a matmul of two
activations (attention's Q.K^T, P.V) runs as grouped_matmul with one group per batch entry, its right operand
read as B^T (a transpose of the last two dims used only there is a view; otherwise vec_transpose makes it).
Values computed from the input shapes alone (positions, rotary tables, causal masks: every operand a constant,
a shape or such a value) are "tiling": the host evaluates them once per distinct input shape, like a CANN
tiling function, and they reach the kernels as constants of that shape.

Cube cost model (per grouped matmul; G groups of r rows each, balanced routing assumed: G = min(E, T*k)
experts touched, r = ceil(T*k / G)):
  work items    G * ceil(r / baseM) * ceil(N / baseN), dealt round-robin to the AIC cores
  per item      cube   M1*N1*ceil(K/16) cycles (16x16x16 MACs per cycle: the table's fp16 peak / cores /
                       clock); float inputs at half that rate (16x8 fractals), int8 at twice (16x32
                       fractals: the design note's "INT8 about 2x FP16", or the target's int8_tops if given;
                       operand bytes are 1 per element in every MTE term)
                MTE2   GM/L2 -> L1 bytes of the A and B^T tiles / 64 B per cycle per core, + a fixed
                       cost per k-slice (DataCopy setup and queue sync)
                MTE1   L1 -> L0A/L0B bytes / 256 B per cycle per core, + a fixed cost per k-tile
                FIX    L0C -> GM bytes / 128 B per cycle per core
                double-buffered L1/L0: item = max(cube, MTE2, MTE1) (+ FIX unless L0C is double-buffered)
  per core      ceil(items / cores) * mean item time  (load balance over the AIC cores)
  HBM           unique bytes (weights of the touched experts once, A, C) / HBM bandwidth
  estimate      max(per core, HBM) + launch;  the bound named is the largest term
The per-core bandwidths and fixed costs are ASSUMPTIONS (not in the public hardware table): they set
the tile choice's trade-offs, not its legality; capacities (L1 512 KiB, L0A/L0B 64 KiB, L0C 128 KiB,
double-buffered) are hard limits.  The tile sizes minimise this estimate; the artifact re-runs the same
choice with each call's token count (like a CANN host tiling function).
Vector kernels: element operations / (AIV cores * 64 f32 lanes * clock), bytes / HBM bandwidth,
DataCopy issue 0.5 us per copy per core, 5 us launch.
Types: f32 models run the cube on float (at half the fp16 rate); f16 models keep their activations and
weights in half in GM, run the cube on half (the target's fp16 peak, f32 accumulation) and do the vector
math in f32 in the Unified Buffer; bf16 models likewise in bfloat16 (the cube's bf16 rate, equal to fp16's);
every byte count above uses the tensor's own element size (2 for f16 and bf16).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Dict, List, Optional

from moec.ir import Module
from moec.ir.opdef import const_value
from moec.ir.ops.moe import GATED
from moec.codegen.ascend import device_ops, index_ops, kv_ops, vector_ops
from moec.targets.description import TargetDesc

CLOCK_HZ = 1.8e9
LANES_F32 = 64            # 256 B per vector repeat
COPY_ISSUE_S = 0.5e-6
LAUNCH_S = 5e-6
# cube-path assumptions (see the module docstring)
MTE2_B_PER_CYCLE = 64
MTE1_B_PER_CYCLE = 256
FIX_B_PER_CYCLE = 128
STEP_CYCLES = 200         # fixed cost of one L1 k-slice (two Nd2Nz copies + queue sync)
TILE_CYCLES = 32          # fixed cost of one L0 k-tile (LoadData issue + sync)
DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "i8": 1}
CUBE_RATE = {"f32": 0.5, "bf16": 1.0, "f16": 1.0, "i8": 2.0}   # x the fp16 rate
GMM_DTYPE_CODE = {"f32": 0, "bf16": 1, "f16": 2, "i8": 3}
ND2NZ_MAX_D = 65535       # Nd2NzParams.srcDValue is 16-bit: longer reductions cannot be tiled on the cube
NPU_OPS = ("moe.route", "moe.dispatch", "moe.experts", "moe.shared_experts", "moe.combine", "moec.matmul",
           "moec.gemm")
ACT_DTYPES = ("f32", "f16", "bf16")         # activation types of the MoE and cube kernels (x, logits, y)
HALF_DTYPES = ("f16", "bf16")              # 2-byte activations: kept in GM as they are, math in f32


UB_SCRATCH = vector_ops.UB_SCRATCH   # the top of the Unified Buffer is instruction scratch: 184 of 192 KiB usable
L1_RESERVED = 128          # the last 128 bytes of L1 are reserved: 512 KiB - 128 B usable


def _hw(desc: TargetDesc) -> dict:
    """The SoC's figures the tiling and the cost model use (an Ascend description's typed fields)."""
    return {"aiv": int(desc.aiv_cores), "aic": int(desc.cores), "hbm": float(desc.hbm_gbps) * 1e9,
            "cube_f16": float(desc.fp16_tflops) * 1e12,
            "ub": int(desc.ub_bytes) - UB_SCRATCH,
            "l1": int(desc.l1_bytes) - L1_RESERVED, "l0a": int(desc.l0a_bytes),
            "l0b": int(desc.l0b_bytes), "l0c": int(desc.l0c_bytes),
            "l2": int(desc.l2_bytes),
            "i8_rate": CUBE_RATE["i8"]}


def cube_rate(hw: dict, dtype: str) -> float:
    """The cube's rate for ``dtype`` operands, as a multiple of its fp16 rate."""
    return hw["i8_rate"] if dtype == "i8" else CUBE_RATE[dtype]


def act_dtype(o) -> str:
    """The activation type an NPU op runs in: its first float operand's (x, logits, y) -- f32, f16 or bf16."""
    return next((v.type.dtype.mlir for v in o.operands if v.type.dtype.is_float), "f32")


def _dtype_reason(o) -> Optional[str]:
    """None when the op's float operands and results share one type the kernels take (f32, f16 or bf16) and its
    integer operands are i64, else why it stays on the host.  moe.experts' weights (as x, bf16 or int8 by
    ``wq``, checked by the IR) and int8 scales (f32) are not activations and are left out."""
    dt = act_dtype(o)
    if dt not in ACT_DTYPES:
        return f"{dt} activations: the Ascend kernels take f32, f16 and bf16"
    vals = list(o.operands)
    if o.name == "moe.experts":
        e = o.extras()  # (the quantised weights' scales and zero points are left out with the weights)
        vals = vals[:4] + [v for v in (e.b_in, e.b_out, e.rw) if v is not None]
    if o.name == "moe.route" and len(vals) > 1 and vals[1].type.dtype.mlir == "f32":
        vals = vals[:1] + vals[2:]  # an f32 selection bias with half logits: moe_gating reads it as float
    vals += list(o.results)
    if any(not v.type.dtype.is_float and v.type.dtype.mlir != "i64" for v in vals):
        return "only f32/f16/bf16 and i64 tensors are taken by the Ascend MoE kernels"
    others = sorted({v.type.dtype.mlir for v in vals if v.type.dtype.is_float and v.type.dtype.mlir != dt})
    if others:
        return f"mixed float types ({dt} with {', '.join(others)}): the Ascend kernels take one type per op"
    return None


def _batched(m: Module, o) -> bool:
    """A matmul planned as a batched matmul (a cube group per batch entry): B is an activation, or a constant of
    rank >= 3 (a batch of matrices: the 2-D constant-weight path does not take it)."""
    b = o.operands[1]
    return const_value(b, m.weights) is None or (b.type.rank >= 3 and o.operands[0].type.rank >= 2)


def _why_host(m: Module, o, desc: Optional[TargetDesc] = None) -> Optional[str]:
    if o.name not in NPU_OPS:  # ordinary ops: the vector kernels of vector_ops, or the host with a reason
        return device_ops.vector_reason(m, o) or (vector_ops.max_cols_reason(o, desc) if desc else None)
    if o.name == "moe.experts":
        if o.attrs.get("post_norm_eps") is not None:  # vec_rowwise between the down GEMM and moe_scatter_rows
            # (the per-expert weight after it, post_norm_w, is moe_scatter_rows' per-expert channel scale s_out)
            if o.attrs.get("has_b_out") or o.attrs.get("wq", "none") in ("int8",) or o.attrs.get("aq", "none") != "none":
                return "a post-expert RMSNorm (post_norm_eps) after an output bias or int8 scales (moe_scatter_rows " \
                       "applies those after the down GEMM, the norm would have to come after them)"
            D = o.operands[0].type.shape[1]
            if desc is not None and isinstance(D, int) and D > vector_ops.rowwise_max_cols(vector_ops.usable_ub(desc)):
                return f"a post-expert RMSNorm over rows of {D} elements (longer than the Unified Buffer holds)"
        wq = o.attrs.get("wq", "none")
        # the weight storage the kernels take: that of the description's weight modes (w8a8 stores int8)
        modes = desc.weight_modes if desc is not None else ("f32",)
        storage: Dict[str, str] = {}
        for w in modes:
            storage.setdefault("none" if w == "f32" else "int8" if w == "w8a8" else w, w)
        if wq not in storage:
            return (f"{wq} expert weights are not implemented on the Ascend target "
                    f"({', '.join(storage.values())} are)")
        aq = o.attrs.get("aq", "none")
        if aq not in ("none", "int8") or (aq == "int8" and wq != "int8"):
            return f"aq={aq} with {wq} weights is not implemented on the Ascend target (w8a8 is)"
        why = _dtype_reason(o)
        if why:
            return why
        if not _cube_k_ok(o.operands[0].type.shape[1], o.operands[5].type.shape[2] * (2 if wq == "int4" else 1)):
            return f"a reduction longer than {ND2NZ_MAX_D} elements cannot be tiled by Nd2Nz"
        return None
    why = _dtype_reason(o)
    if why:
        return why
    if o.name == "moe.shared_experts" and not _cube_k_ok(o.operands[0].type.shape[1], o.operands[2].type.shape[2]):
        return f"a reduction longer than {ND2NZ_MAX_D} elements cannot be tiled by Nd2Nz"
    if o.name in ("moec.matmul", "moec.gemm"):
        a, b = o.operands[0].type, o.operands[1].type
        if o.name == "moec.matmul" and _batched(m, o):
            # two activation operands (attention's Q.K^T and P.V), or a constant batch of matrices on the right (a
            # Mamba scan's per-step states): batched, one cube group per batch entry
            if a.rank < 2 or b.rank < 2:
                return "a matmul of two activations with a vector operand (rank 1)"
            if not (_cube_k_ok(a.shape[-1]) or not isinstance(a.shape[-1], int)):
                return f"a reduction longer than {ND2NZ_MAX_D} elements cannot be tiled by Nd2Nz"
            return None
        if o.name == "moec.gemm" and (a.rank != 2 or b.rank != 2):
            return "only 2-D gemms run on the NPU"
        if a.rank < 2 or b.rank != 2 or const_value(o.operands[1], m.weights) is None:
            return "only matmuls of a [..., K] activation by a constant 2-D right operand, or batched matmuls of " \
                   "two activations, run on the NPU"
        if o.name == "moec.gemm" and o.attrs["trans_a"]:
            return "transposed left operand"
        if a.dtype.mlir in HALF_DTYPES and not _cube_k_ok(b.shape[1] if o.name == "moec.gemm" and o.attrs["trans_b"]
                                                     else b.shape[0]):
            return f"an {a.dtype.mlir} reduction longer than {ND2NZ_MAX_D} elements: Nd2Nz cannot tile it and the vector " \
                   f"fallback (matmul_rows) is f32 only"
    if o.name == "moe.route" and o.attrs["n_group"] > 32:
        return "more than 32 expert groups"
    # (moe.route's n_shared always-on slots: moe_gating's slots K.. (tiling n_shared); logits [B, S, E]:
    # moe_init_routing counts the capacity per sequence (tiling seq))
    return None


def _cube_k_ok(*ks) -> bool:
    return all(isinstance(k, int) and 0 < k <= ND2NZ_MAX_D for k in ks)


# -- the cube: grouped matmul ------------------------------------------------------------------------
def _split(total: int, tile: int) -> List[tuple]:
    """(size, count) of the tiles covering ``total``: full tiles and the tail."""
    return [(s, c) for s, c in ((tile, total // tile), (total % tile, 1 if total % tile else 0)) if c]


def gmm_estimate(desc: TargetDesc, dtype: str, G: int, r: int, N: int, K: int, tiles: dict,
                 a_shared: bool = False, w_bytes: Optional[float] = None, c_bytes: int = 4) -> dict:
    """Estimate of one grouped matmul: G groups of r rows, C [r, N] = A [r, K] . W[g]^T (see the module
    docstring).  ``w_bytes``: HBM bytes of the weights when they are not ``dtype`` (int8 dequantised);
    ``c_bytes``: 4 for a float C, 2 when the fixpipe writes half (f16 matmuls)."""
    hw = _hw(desc)
    b = DTYPE_BYTES[dtype]
    c0 = 32 // b
    bm, bn, bk, sk = tiles["baseM"], tiles["baseN"], tiles["baseK"], tiles["stepK"]
    kl1 = bk * sk
    f_core = CLOCK_HZ
    if G * r == 0:
        return {"kernel": "grouped_matmul", "estimate_us": 0.0, "bound": "none", "blockDim": 1}
    ms, ns = _split(r, bm), _split(N, bn)
    k_slices, k_tiles = math.ceil(K / kl1), math.ceil(K / bk)
    kc = math.ceil(K / c0) * c0
    tot = {"cube": 0.0, "mte2": 0.0, "mte1": 0.0, "fix": 0.0, "item": 0.0}
    for m, cm in ms:
        for n, cn in ns:
            m16, n16 = math.ceil(m / 16) * 16, math.ceil(n / 16) * 16
            cube = (m16 // 16) * (n16 // 16) * math.ceil(K / 16) / cube_rate(hw, dtype) + k_tiles * 16
            mte2 = (m + n) * K * b / MTE2_B_PER_CYCLE + k_slices * STEP_CYCLES
            mte1 = (m16 + n16) * kc * b / MTE1_B_PER_CYCLE + k_tiles * TILE_CYCLES
            fix = m * n * c_bytes / FIX_B_PER_CYCLE
            item = max(cube, mte2, mte1, fix) if tiles["dbL0C"] == 2 else max(cube, mte2, mte1) + fix
            for key, v in (("cube", cube), ("mte2", mte2), ("mte1", mte1), ("fix", fix), ("item", item)):
                tot[key] += v * cm * cn
    per_group_items = sum(c for _, c in ms) * sum(c for _, c in ns)
    items = G * per_group_items
    cores = min(hw["aic"], items)
    rounds = math.ceil(items / cores)
    scale = rounds / per_group_items / (f_core)   # per-core time of the busiest core, from one group's sums
    t_parts = {k: v * scale for k, v in tot.items()}
    a_bytes = (r if a_shared else G * r) * K * b
    weights = w_bytes if w_bytes is not None else G * N * K * b
    hbm_bytes = weights + a_bytes + G * r * N * c_bytes
    t_hbm = hbm_bytes / hw["hbm"]
    t = max(t_parts["item"], t_hbm) + LAUNCH_S
    terms = {"cube": t_parts["cube"], "L1 fill (MTE2)": t_parts["mte2"], "L0 load (MTE1)": t_parts["mte1"],
             "fixpipe": t_parts["fix"], "HBM": t_hbm, "launch": LAUNCH_S}
    bound = max(terms.items(), key=lambda kv: kv[1])[0]
    flops = 2.0 * G * r * N * K
    peak = hw["cube_f16"] * cube_rate(hw, dtype)
    return {"kernel": "grouped_matmul", "dtype": dtype, "blockDim": cores, "work_items": items,
            "load_balance": round(items / (rounds * cores), 3), "estimate_us": round(t * 1e6, 2), "bound": bound,
            "core_us": round(t_parts["item"] * 1e6, 3),
            "terms_us": {k: round(v * 1e6, 2) for k, v in terms.items()},
            "hbm_fraction": round(t_hbm / t, 4), "fraction_of_cube_peak": round(flops / t / peak, 5),
            "tiles": dict(tiles)}


def _fits(hw: dict, b: int, bm: int, bn: int, bk: int, sk: int) -> Optional[int]:
    """L0C buffers (2, 1) if the double-buffered tiles fit every capacity, else None."""
    if 2 * bm * bk * b > hw["l0a"] or 2 * bn * bk * b > hw["l0b"]:
        return None
    if 2 * (bm + bn) * bk * sk * b > hw["l1"]:
        return None
    if 2 * bm * bn * 4 <= hw["l0c"]:
        return 2
    return 1 if bm * bn * 4 <= hw["l0c"] else None


@lru_cache(maxsize=4096)
def choose_gmm_tiles(desc: TargetDesc, dtype: str, G: int, r: int, N: int, K: int, a_shared: bool = False,
                     w_bytes: Optional[float] = None, c_bytes: int = 4) -> dict:
    """The cube tiles (baseM, baseN, baseK, stepK, dbL0C) that minimise ``gmm_estimate`` among those
    fitting the target's L1/L0 capacities; returns {"tiles": ..., "estimate": ...}."""
    hw = _hw(desc)
    b = DTYPE_BYTES[dtype]
    c0 = 32 // b
    r16, n16 = max(16, math.ceil(max(r, 1) / 16) * 16), max(16, math.ceil(N / 16) * 16)
    kc = max(c0, math.ceil(K / c0) * c0)
    best = None
    for bm in (16, 32, 64, 128, 256):
        if bm > r16 and bm != 16 and bm // 2 >= r16:
            continue
        for bn in (16, 32, 64, 128, 256):
            if bn > n16 and bn // 2 >= n16:
                continue
            # k-tiles are whole fractal columns (C0 elements: 8 for f32, 16 for half, 32 for int8); the
            # smallest is one column, so a reduction of K <= C0 (f32 K <= 8 once found no tile at all) is one
            # zero-padded column (Nd2Nz pads K up to C0, as the hardware's fractal layout requires)
            for bk in (8, 16, 32, 64, 128, 256):
                if bk % c0 or (bk > kc and bk // 2 >= kc):
                    continue
                for sk in (1, 2, 4, 8):
                    if sk > 1 and bk * sk // 2 >= kc:
                        continue
                    db = _fits(hw, b, bm, bn, bk, sk)
                    if db is None:
                        continue
                    tiles = {"baseM": bm, "baseN": bn, "baseK": bk, "stepK": sk, "dbL0C": db}
                    est = gmm_estimate(desc, dtype, G, r, N, K, tiles, a_shared, w_bytes, c_bytes)
                    # ties (an HBM-bound call) go to the least busy cores, the least cube/L0 work, then the larger tiles
                    tu = est["terms_us"]
                    key = (est["estimate_us"], est["core_us"], tu["cube"] + tu["L0 load (MTE1)"], -bm * bn, -bk * sk)
                    if best is None or key < best[0]:
                        best = (key, tiles, est)
    if best is None:  # every dtype has a fitting tile for every shape (a bm=bn=16 one-column tile always fits)
        raise AssertionError(f"choose_gmm_tiles: no cube tile for {dtype} G={G} r={r} N={N} K={K}")
    return {"tiles": best[1], "estimate": best[2]}


def gmm_tiling_fields(tiles: dict) -> dict:
    return {"baseM": tiles["baseM"], "baseN": tiles["baseN"], "baseK": tiles["baseK"], "stepK": tiles["stepK"],
            "dbL0C": tiles["dbL0C"]}


# -- vector kernels --------------------------------------------------------------------------------
def vector_estimate(kind: str, desc: TargetDesc, T: int, sizes: dict, kt: int = 8) -> dict:
    hw = _hw(desc)
    D, F, I, E, k = (sizes.get(x, 0) for x in ("D", "F", "I", "E", "k"))
    rows = sizes.get("rows", T * k)
    chunk = max(1, sizes.get("chunk", 2048))
    b = sizes.get("bytes", 4)     # GEMM inputs written by gather/activation
    xb = sizes.get("xbytes", 4)   # the model's activations (x, logits, weights, y): 2 for f16
    flops = 0
    if kind == "moe_gating":
        ops, bytes_, copies, cores = T * E * 12, T * ((E + k) * xb + k * 4), 3 * T, min(hw["aiv"], max(T, 1))
    elif kind == "moe_init_routing":
        ops, bytes_, copies, cores = T * k * 64 * 4, T * k * 12, 0, 1   # scalar loop on one core
    elif kind == "moe_finalize":
        ops, bytes_, copies, cores = T * k * D * 2, T * (k + 1) * D * xb, T * (k + 2), min(hw["aiv"], max(T, 1))
    elif kind == "moe_gather_rows":
        ops, bytes_ = rows * D * 3, rows * D * (xb + b)
        copies, cores = rows * 2 * math.ceil(D / chunk), min(hw["aiv"], max(rows, 1))
    elif kind == "moe_activation":
        per = 16 if sizes.get("gated") else (32 if sizes.get("act") in ("gelu", "gelu_tanh") else 4)
        extra = sizes.get("extra_loads", 0)
        ops, bytes_ = rows * F * per, rows * (I * 4 + F * b) + E * I * xb * extra
        copies, cores = rows * math.ceil(F / chunk) * (2 + extra * 2), min(hw["aiv"], max(rows, 1))
    elif kind == "moe_scatter_rows":
        extra = sizes.get("extra_loads", 0)
        ops, bytes_ = rows * D * 4, rows * D * (4 + xb) + E * D * xb * extra
        copies, cores = rows * math.ceil(D / chunk) * (2 + extra), min(hw["aiv"], max(rows, 1))
    elif kind in ("moe_dequant_int8", "moe_dequant_int4"):  # codes in (1 or 1/2 byte), the cube's type out
        ob = sizes.get("out_bytes", 4)
        ops = sizes["elems"] * (3 if kind == "moe_dequant_int8" else 12)
        bytes_ = sizes["elems"] * (1 if kind == "moe_dequant_int8" else 0.5) + \
            max(0, sizes["elems"] * ob - hw["l2"])
        copies, cores = 2 * sizes["row_chunks"], min(hw["aiv"], max(sizes["row_chunks"], 1))
    elif kind == "moe_quant_rows_int8":  # two passes over each f32 row (max, then divide/round/cast)
        W = sizes["W"]
        ops, bytes_ = rows * W * 8, rows * (W * 4 * 2 + W + 4)
        copies, cores = rows * 3 * math.ceil(W / chunk), min(hw["aiv"], max(rows, 1))
    else:  # matmul_rows (vector dot products)
        M, N, Kd = sizes["M"], sizes["N"], sizes["Kd"]
        ops, bytes_ = 2 * M * N * Kd, (N * Kd + M * Kd + M * N) * 4
        copies, cores, flops = M * N * -(-Kd // kt) + 2 * M, min(hw["aiv"], max(M, 1)), 2 * M * N * Kd
    t_vec = ops / (cores * LANES_F32 * CLOCK_HZ)
    t_hbm = bytes_ / hw["hbm"]
    t_issue = copies * COPY_ISSUE_S / max(cores, 1) + LAUNCH_S
    t = max(t_vec, t_hbm) + t_issue
    bound = max((t_vec, "vector"), (t_hbm, "HBM"), (t_issue, "copy-issue/launch"))[1]
    est = {"kernel": kind, "tokens": T, "blockDim": cores, "estimate_us": round(t * 1e6, 2),
           "bound": bound, "hbm_fraction": round(t_hbm / t, 4)}
    if flops:
        est["fraction_of_cube_peak"] = round(flops / t / hw["cube_f16"], 5)
    return est


def choose_kt(desc: TargetDesc, sizes: dict, n: int) -> int:
    """matmul_rows' reduction tile: the cost model's best of the tiles that fit the Unified Buffer."""
    hw = _hw(desc)
    best, best_t = 8, float("inf")
    for kt in sorted({min(c, max(8, (n + 7) // 8 * 8)) for c in (256, 512, 1024, 2048, 4096)}):
        need = 4 * kt * 4 + 64 + 6 * 4 * max(sizes.get("N", 0), sizes.get("Kd", 0))
        if need > hw["ub"]:
            continue
        t = vector_estimate("matmul_rows", desc, 64, dict(sizes, M=64), kt)["estimate_us"]
        if t < best_t:
            best, best_t = kt, t
    return min(best, max(8, (n + 7) // 8 * 8))


def vector_chunk(desc: TargetDesc, width: int) -> int:
    """Columns per UB chunk of the FFN row kernels: up to 2048 floats (the activation kernel holds about
    12 chunks: 2 double-buffered queues, 6 scratch rows, interleaved rows twice as wide)."""
    hw = _hw(desc)
    ch = 2048
    while ch > 64 and 12 * ch * 4 > hw["ub"]:
        ch //= 2
    return max(8, min(ch, (width + 7) // 8 * 8))


# -- the expert FFN on the cube ---------------------------------------------------------------------
def ffn_shape(T: int, k: int, E: int, shared: bool):
    """(groups touched, rows per group) under balanced routing; shared experts see every token."""
    if shared:
        return E, T
    rows = T * k
    G = min(E, rows)
    return G, (math.ceil(rows / G) if G else 0)


def ffn_cube_dtype(sizes: dict) -> str:
    """The cube's operand type for an expert FFN: the model's f16, bf16 for --weights bf16, int8 for w8a8,
    else f32."""
    if sizes.get("aq") == "int8":
        return "i8"
    if sizes.get("dtype") in HALF_DTYPES:  # the model's own 2-byte type
        return sizes["dtype"]
    return "bf16" if sizes.get("wq") == "bf16" else "f32"


def ffn_cube_plan(desc: TargetDesc, T: int, sizes: dict) -> dict:
    """Tiles and estimates of the five (six with int8) kernels of one expert FFN call with T tokens."""
    D, F, I, E, k = (sizes[x] for x in ("D", "F", "I", "E", "k"))
    shared, wq = sizes.get("shared", False), sizes.get("wq", "none")
    dtype = ffn_cube_dtype(sizes)
    w8a8 = dtype == "i8"  # int8 codes go to the cube as they are: no dequant kernels
    G, r = ffn_shape(T, k, E, shared)
    rows = G * r if shared else T * k
    wb = {"int8": 1, "int4": 0.5}.get(wq, DTYPE_BYTES[dtype])  # the weights' bytes as stored
    w_up = G * I * D * wb
    w_down = G * D * F * wb
    up = choose_gmm_tiles(desc, dtype, G, r, I, D, shared, float(w_up))
    down = choose_gmm_tiles(desc, dtype, G, r, D, F, False, float(w_down))
    b = 4 if w8a8 else DTYPE_BYTES[dtype]  # w8a8: gather/activation write f32 rows, quantised after
    extra_in = int(sizes.get("has_b_in", False)) + int(wq == "int8")  # (int4: scales applied by the dequant)
    extra_out = int(sizes.get("has_b_out", False)) + int(wq == "int8")
    vs = dict(sizes, rows=rows, bytes=b, xbytes=DTYPE_BYTES[sizes.get("dtype", "f32")],
              gated=sizes.get("act") in GATED)
    parts = []
    if not shared:
        parts.append(vector_estimate("moe_gather_rows", desc, T, dict(vs, chunk=vector_chunk(desc, D))))
    def prepare(N: int, K: int):  # the kernel that readies a projection's int8 operands, if any
        if w8a8:  # the GEMM input rows quantised per row
            parts.append(vector_estimate("moe_quant_rows_int8", desc, T, dict(rows=rows, W=K, chunk=vector_chunk(desc, K))))
        elif wq in ("int8", "int4"):  # the weight codes of the experts used, dequantised to the cube's type
            parts.append(vector_estimate(f"moe_dequant_{wq}", desc, T, {"elems": G * N * K, "out_bytes": DTYPE_BYTES[dtype],
                                                                         "row_chunks": G * N * math.ceil(K / 2048)}))
    prepare(I, D)
    parts.append(dict(up["estimate"], role="up projection", tokens=T))
    parts.append(vector_estimate("moe_activation", desc, T,
                                 dict(vs, chunk=vector_chunk(desc, F), extra_loads=extra_in)))
    prepare(D, F)
    parts.append(dict(down["estimate"], role="down projection", tokens=T))
    parts.append(vector_estimate("moe_scatter_rows", desc, T,
                                 dict(vs, chunk=vector_chunk(desc, D), extra_loads=extra_out)))
    total = sum(p["estimate_us"] for p in parts)
    top = max(parts, key=lambda p: p["estimate_us"])
    hw = _hw(desc)
    flops = 2.0 * G * r * (I * D + D * F)
    hbm_us = sum(p["estimate_us"] * p.get("hbm_fraction", 0) for p in parts)
    est = {"kernel": "moe_expert_ffn", "path": "cube", "dtype": dtype, "tokens": T, "blockDim": hw["aic"],
           "estimate_us": round(total, 2), "bound": top["bound"], "dominant_kernel": top["kernel"] +
           (f" ({top['role']})" if "role" in top else ""), "hbm_fraction": round(hbm_us / total, 4) if total else 0,
           "fraction_of_cube_peak": round(flops / (total * 1e-6) / (hw["cube_f16"] * cube_rate(hw, dtype)), 5)
           if total else 0, "parts": parts}
    return {"tiles": {"up": up["tiles"], "down": down["tiles"]}, "estimate": est}


def matmul_cube_plan(desc: TargetDesc, M: int, N: int, Kd: int, dtype: str = "f32") -> dict:
    """A 2-D matmul as a one-group grouped matmul; f16: half operands and a half C (fixpipe F322F16)."""
    res = choose_gmm_tiles(desc, dtype, 1, M, N, Kd, True, None, DTYPE_BYTES[dtype] if dtype in HALF_DTYPES else 4)
    return {"tiles": res["tiles"], "estimate": dict(res["estimate"], tokens=M, role="matmul")}


TILING_WHY = ("computed from the input shapes alone (no tensor data is read): evaluated by the host with the "
              "tiling, once per distinct input shapes, and copied to GM as a constant of that shape")


def fused_transposes(f) -> Dict[int, int]:
    """{id(transpose op): id(matmul op)} for transposes of the last two dims whose only use is the right operand of
    a batched matmul of two activations: the cube reads B^T ([N, K] per group), which is the transpose's source,
    so the transpose is a view and no copy runs."""
    users: Dict[int, list] = {}
    for o in f.ops:
        for v in o.operands:
            users.setdefault(id(v), []).append(o)
    outs = {id(v) for v in f.outputs}
    fused = {}
    for o in f.ops:
        if o.name != "moec.transpose" or id(o.result) in outs:
            continue
        r = o.operands[0].type.rank
        if r < 2 or list(o.attrs["perm"]) != list(range(r - 2)) + [r - 1, r - 2]:
            continue
        us = users.get(id(o.result), [])
        if len(us) == 1 and us[0].name == "moec.matmul" and us[0].operands[1] is o.result and \
                us[0].operands[0] is not o.result and us[0].operands[1].owner is o:
            fused[id(o)] = id(us[0])
    return fused


def _dim(d, T: int) -> int:
    return d if isinstance(d, int) else T


def batched_matmul_plan(desc: TargetDesc, o, T: int, b_fused: bool) -> dict:
    """A batched matmul of two activations at T tokens (symbolic dims taken as T): G = the batch entries, each a
    cube group of M rows; the right operand is read as B^T (a vec_copy transpose unless ``b_fused``)."""
    a, b = o.operands[0].type, o.operands[1].type
    dt = act_dtype(o)
    batch = [_dim(d, T) for d in (a.shape[:-2] if a.rank >= b.rank else b.shape[:-2])]
    G = max(1, math.prod(batch))
    M, K, N = _dim(a.shape[-2], T), _dim(a.shape[-1], T), _dim(b.shape[-1], T)
    res = choose_gmm_tiles(desc, dt, G, M, N, K, False, None, DTYPE_BYTES[dt] if dt in HALF_DTYPES else 4)
    parts = [dict(res["estimate"], role="batched matmul", tokens=T)]
    if not b_fused:  # vec_transpose: the bytes in and out, one Gather instruction per column and block
        hw = _hw(desc)
        n = G * K * N
        rr = max(8, vector_ops.transpose_rows(DTYPE_BYTES[dt], K, N, hw["ub"]) or 8)
        blocks = G * math.ceil(K / rr)
        cores = min(hw["aiv"], max(1, blocks))
        t_hbm = 2 * DTYPE_BYTES[dt] * n / hw["hbm"]
        t_issue = (blocks * (2 * COPY_ISSUE_S + N * math.ceil(rr * DTYPE_BYTES[dt] / 256) / CLOCK_HZ)) / cores
        t = max(t_hbm, t_issue) + LAUNCH_S
        parts.insert(0, {"kernel": "vec_transpose", "role": "B^T (transpose of the last two dims)", "tokens": T,
                         "blockDim": cores, "estimate_us": round(t * 1e6, 2), "hbm_fraction": round(t_hbm / t, 4),
                         "bound": "HBM" if t_hbm >= t_issue else "copy issue"})
    return {"tiles": res["tiles"], "parts": parts}


def make_plan(m: Module, desc: TargetDesc, tokens=(1, 256)) -> dict:
    f = m.main
    steps: List[dict] = []
    host: Dict[str, str] = {}
    tiling: Dict[str, str] = {}
    estimates: List[dict] = []
    static = set()   # values known from the input shapes alone (constants, shapes and what only they feed)
    fused = fused_transposes(f)
    fused_into = set(fused.values())
    for o in f.ops:
        if o.name == "moec.constant":
            static.add(id(o.result))
            steps.append({"op": o.name, "where": "const"})
            continue
        shape_only = o.name == "moec.shape" or (len(o.operands) > 0 and all(id(v) in static for v in o.operands))
        if shape_only:
            static.update(id(r) for r in o.results)
        if o.name in vector_ops.VIEWS:
            steps.append({"op": o.name, "where": "view"})
            continue
        if shape_only:
            steps.append({"op": o.name, "where": "tiling", "why": TILING_WHY})
            tiling[o.name] = TILING_WHY
            continue
        if id(o) in fused:
            steps.append({"op": o.name, "where": "view", "why": "read as B^T by the batched matmul that uses it"})
            continue
        why = _why_host(m, o, desc)
        if not why and o.name in ("moec.slice", "moec.expand", "moec.split", "moec.tile") and \
                not all(id(v) in static for v in o.operands[1:]):
            why = "its bounds/shape come from tensor data: vec_copy's tiling needs them on the host before the launch"
        if why:
            steps.append({"op": o.name, "where": "host", "why": why})
            host[o.name] = why
            continue
        step = {"op": o.name, "where": "npu", "loc": o.loc}
        if o.name in ("moe.experts", "moe.shared_experts"):
            sh = o.name == "moe.shared_experts"
            w_in, w_out = o.operands[1 if sh else 4].type, o.operands[2 if sh else 5].type
            E, I, D = w_in.shape
            F = w_out.shape[2]
            k = E if sh else o.operands[1].type.shape[1]
            wq = "none" if sh else o.attrs.get("wq", "none")
            aq = "none" if sh else o.attrs.get("aq", "none")
            sizes = {"D": D, "F": F, "I": I, "E": E, "k": k, "shared": sh, "wq": wq, "aq": aq,
                     "act": o.attrs["activation"], "has_b_in": bool(o.attrs.get("has_b_in", False)),
                     "has_b_out": bool(o.attrs.get("has_b_out", False))}
            if act_dtype(o) in HALF_DTYPES:
                sizes["dtype"] = act_dtype(o)
            step["sizes"] = sizes
            pre = ["moe_quant_rows_int8"] if aq == "int8" else ([f"moe_dequant_{wq}"] if wq in ("int8", "int4") else [])
            post = ["vec_rowwise"] if not sh and o.attrs.get("post_norm_eps") is not None else []
            step["kernels"] = ((["moe_gather_rows"] if not sh else []) + pre + ["grouped_matmul", "moe_activation"]
                               + pre + ["grouped_matmul"] + post + ["moe_scatter_rows"] + (["moe_finalize"] if sh else []))
            step["cube_dtype"] = ffn_cube_dtype(sizes)
            plans = {T: ffn_cube_plan(desc, T, sizes) for T in tokens}
            step["tiles"] = {str(T): p["tiles"] for T, p in plans.items()}
            step["estimates"] = [p["estimate"] for p in plans.values()]
        elif o.name == "moec.matmul" and _batched(m, o):
            bf = id(o) in fused_into
            step["batched"] = True
            step["b_fused"] = bf
            step["kernels"] = ([] if bf else ["vec_transpose"]) + ["grouped_matmul"]
            step["cube_dtype"] = act_dtype(o)
            plans = {T: batched_matmul_plan(desc, o, T, bf) for T in tokens}
            step["tiles"] = {str(T): p["tiles"] for T, p in plans.items()}
            step["estimates"] = [dict(p["parts"][-1], estimate_us=round(sum(q["estimate_us"] for q in p["parts"]), 2),
                                      parts=p["parts"]) for p in plans.values()]
        elif o.name in ("moec.matmul", "moec.gemm"):
            a, b = o.operands[0].type, o.operands[1].type
            tb = o.name == "moec.gemm" and o.attrs["trans_b"]
            Kd = b.shape[1] if tb else b.shape[0]   # the constant's: a's own may be unknown (a ? after a reshape)
            N = b.shape[0] if tb else b.shape[1]
            if _cube_k_ok(Kd) and isinstance(N, int):
                step["kernels"] = ["grouped_matmul"]
                step["cube_dtype"] = act_dtype(o)
                plans = {T: matmul_cube_plan(desc, T, N, Kd, act_dtype(o)) for T in tokens}
                step["tiles"] = {str(T): p["tiles"] for T, p in plans.items()}
                step["estimates"] = [p["estimate"] for p in plans.values()]
            else:  # the vector path remains for what the cube cannot tile
                sizes = {"M": 1, "N": N, "Kd": Kd}
                step["kt"] = choose_kt(desc, sizes, Kd)
                step["kernels"] = ["matmul_rows"]
                step["estimates"] = [vector_estimate("matmul_rows", desc, T, dict(sizes, M=T), step["kt"])
                                     for T in tokens]
        elif o.name == "moe.route":
            E = o.operands[0].type.shape[-1]  # (logits [T, E], or [B, S, E] with a per-sequence capacity)
            if not isinstance(E, int):  # (a logits view whose width is not inferred: the dispatch's expert count)
                E = next((u.attrs["num_experts"] for u in f.ops if u.name == "moe.dispatch" and
                          u.operands[0] is o.results[1]), 1)
            sizes = {"E": E, "k": o.attrs["k"] + int(o.attrs.get("n_shared") or 0), "xbytes": DTYPE_BYTES[act_dtype(o)]}
            step["kernels"] = ["moe_gating"] + (["moe_init_routing"] if o.attrs["capacity"] else [])
            step["estimates"] = [vector_estimate("moe_gating", desc, T, sizes) for T in tokens]
        elif o.name == "moe.dispatch":
            sizes = {"E": o.attrs["num_experts"], "k": o.operands[0].type.shape[1]}
            step["kernels"] = ["moe_init_routing"]
            step["estimates"] = [vector_estimate("moe_init_routing", desc, T, sizes) for T in tokens]
        elif o.name not in NPU_OPS:  # an ordinary op on the vector kernels
            hw = _hw(desc)
            step["estimates"] = [index_ops.estimate(o, T, hw, CLOCK_HZ, LAUNCH_S) if index_ops.handles(o) else
                                 kv_ops.estimate(o, T, hw, CLOCK_HZ, LANES_F32, LAUNCH_S) if kv_ops.handles(o) else
                                 vector_ops.estimate(o, T, hw, CLOCK_HZ, LANES_F32, LAUNCH_S) for T in tokens]
            step["kernels"] = [step["estimates"][0]["kernel"]]
        elif o.name == "moe.combine":
            y = o.result.type
            sizes = {"D": y.shape[1], "k": o.operands[0].type.shape[1], "xbytes": DTYPE_BYTES[act_dtype(o)]}
            step["kernels"] = ["moe_finalize"]
            step["estimates"] = [vector_estimate("moe_finalize", desc, T, sizes) for T in tokens]
        for e in step.get("estimates", []):
            e.setdefault("op", o.name)
        estimates.extend(step.get("estimates", []))
        steps.append(step)
    return {"soc": desc.arch, "steps": steps, "host_ops": host, "tiling_ops": tiling, "estimates_are": "estimates from the hardware "
            "table and the documented assumptions of the cost model (codegen/ascend/plan.py); no NPU was "
            "measured", "estimates": estimates}
