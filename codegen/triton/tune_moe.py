"""Tile search for the grouped MoE GEMMs: ``python -m moec.codegen.triton.tune_moe``.

One command searches the tile configurations of a layer shape for a list of token counts and writes
the tile-search file the runtime reads (format: tuning.py's docstring, configs/README.md):

    python -m moec.codegen.triton.tune_moe --layer mixtral            # D=4096, F=14336, E=8, k=2
    python -m moec.codegen.triton.tune_moe --E 64 --N 1408 --K 2048 --topk 6 --tokens 1,16,256,4096
    python -m moec.codegen.triton.tune_moe --layer mixtral --dry-run  # the plan: space sizes, runs

How, per token count M:
  * routing: top-k ids drawn from a uniform expert popularity AND from a Zipf-like one (expert of
    popularity rank r chosen with weight 1 / r^s, s = --zipf, ranks a random permutation of the
    experts; k distinct experts per token), positive routing weights summing to 1;
  * for each BLOCK_M of the space (shared by both projections: one align plan), the up-projection and
    down-projection candidates are run side by side (candidate i of each in the same layer run) and
    timed per stage (profile.time_stages: events between the stages' launches), so that the up
    projection's configuration is chosen on gemm1's time and the down projection's on gemm2's, each
    summed over both routings;
  * BLOCK_M is chosen on align + best gemm1 + best gemm2; every candidate's output is checked against
    the first candidate's (a configuration that computes something else is rejected, not timed).
The result is stored per (GPU, E, N=F, K=D, dtype) with the M keys merged into an existing file,
plus a ``.search.json`` log of every time measured.  Without a GPU (Triton's interpreter) the
search runs the same code, and ``--smoke`` keeps the space to two candidates per projection: the
times are the interpreter's and mean nothing; the file is named for the device ``interpreter``.
"""
from __future__ import annotations

import itertools
import json
import os
import time
from typing import Dict, List, Optional, Sequence

DISTS = ("uniform", "zipf")

# the search space per regime (rows per expert = M * k / E): BLOCK_M values, and per projection the
# BLOCK_N, BLOCK_K, GROUP_SIZE_M, SPLIT_K, num_warps, num_stages values (their product, pruned by
# shared memory); few rows stream weights (narrow N, long K, split-K), many rows need big tensor-core tiles
# SWAP_AB (weights as the MMA's 64-row operand) is searched where BLOCK_M < 64 (it needs BLOCK_N >= 64 for
# wgmma: projection_space drops it below), PERSISTENT (programs per SM taking tiles from a queue; 0: a
# program per tile) for many tiles
SPACE = {
    "decode": dict(BLOCK_M=(16,), BLOCK_N=(16, 32, 64, 128), BLOCK_K=(64, 128, 256), GROUP_SIZE_M=(1,),
                   SPLIT_K=(1, 2, 4, 8), num_warps=(4,), num_stages=(3, 4), SWAP_AB=(0, 1), PERSISTENT=(0,)),
    "mid": dict(BLOCK_M=(16, 32, 64), BLOCK_N=(32, 64, 128), BLOCK_K=(64, 128), GROUP_SIZE_M=(1, 8),
                SPLIT_K=(1,), num_warps=(4,), num_stages=(3, 4), SWAP_AB=(0, 1), PERSISTENT=(0,)),
    "prefill": dict(BLOCK_M=(64, 128), BLOCK_N=(64, 128, 256), BLOCK_K=(32, 64, 128), GROUP_SIZE_M=(1, 8, 16, 32),
                    SPLIT_K=(1,), num_warps=(4, 8), num_stages=(3, 4), SWAP_AB=(0,), PERSISTENT=(0, 1, 2)),
}
# --space small: the same regimes, fewer values (a quick search)
SMALL = {
    "decode": dict(SPACE["decode"], BLOCK_N=(16, 32, 64), BLOCK_K=(128, 256), SPLIT_K=(1, 4), num_stages=(4,)),
    "mid": dict(SPACE["mid"], BLOCK_M=(32, 64), BLOCK_N=(32, 128), BLOCK_K=(64, 128), num_stages=(4,)),
    "prefill": dict(SPACE["prefill"], BLOCK_M=(64, 128), BLOCK_N=(128, 256), BLOCK_K=(64,), GROUP_SIZE_M=(1, 8, 16),
                    num_warps=(8,), num_stages=(3,)),
}
SMOKE = {  # the interpreter: two candidates per projection
    r: dict(BLOCK_M=(16,), BLOCK_N=(32,), BLOCK_K=(32,), GROUP_SIZE_M=(1, 4), SPLIT_K=(1,), num_warps=(4,),
            num_stages=(1,), SWAP_AB=(0,), PERSISTENT=(0,)) for r in ("decode", "mid", "prefill")}
SPACES = {"full": SPACE, "small": SMALL, "smoke": SMOKE}


def regime(M: int, k: int, E: int) -> str:
    rows = M * k / max(E, 1)
    return "decode" if rows <= 16 else "mid" if rows <= 128 else "prefill"


def smem_bytes(BM: int, BN: int, BK: int, stages: int, which: int, elt: int = 2) -> int:
    """Shared memory the pipelined tiles of grouped GEMM `which` need (gemm1 loads gate and up tiles)."""
    return stages * (BM * BK + (2 if which == 1 else 1) * BN * BK) * elt


def fits_registers(BM: int, BN: int, num_warps: int, which: int, cap: int = 90) -> bool:
    """Tiles whose accumulators fit the registers (the compile checks of aot.py, sm_90 and sm_80): gemm1 keeps
    a gate and an up accumulator (BM x 2BN f32); at most 128 accumulator values per thread with wgmma (sm_90+,
    BLOCK_M >= 64), 64 with mma.sync (128 spilled 100-370 bytes on sm_80), and below BLOCK_M 64 gemm1's two
    tiles at most 128 columns together (BN 128 spilled there on sm_90)."""
    acc = (2 if which == 1 else 1) * BN
    per_thread = 128 if cap >= 90 and BM >= 64 else 64
    return BM * acc <= per_thread * 32 * num_warps and (BM >= 64 or acc <= 128)


def projection_space(sp: dict, BM: int, which: int, smem_limit: int = 0, cap: int = 90) -> List[dict]:
    """One projection's candidates: {BLOCK_SIZE_N, BLOCK_SIZE_K, GROUP_SIZE_M, SPLIT_K, num_warps, num_stages}
    (those that fit sm_<cap>'s registers, and smem_limit bytes of shared memory when given)."""
    out = []
    for bn, bk, g, s, w, st, sw, pe in itertools.product(sp["BLOCK_N"], sp["BLOCK_K"], sp["GROUP_SIZE_M"],
                                                         sp["SPLIT_K"], sp["num_warps"], sp["num_stages"],
                                                         sp.get("SWAP_AB", (0,)), sp.get("PERSISTENT", (0,))):
        if (smem_limit and smem_bytes(BM, bn, bk, st, which) > smem_limit) or not fits_registers(BM, bn, w, which, cap):
            continue
        if sw and (BM >= 64 or bn < 64):  # (swap-AB is for few rows, with a weight tile wgmma can take)
            continue
        out.append({"BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk, "GROUP_SIZE_M": g, "SPLIT_K": s, "num_warps": w,
                    "num_stages": st, "SWAP_AB": sw, "PERSISTENT": pe})
    return out


def pair_config(BM: int, up: dict, down: dict) -> dict:
    from moec.codegen.triton.tuning import from_entry
    c = from_entry({"BLOCK_SIZE_M": BM, "up": up, "down": down})
    assert c is not None, (BM, up, down)
    return c


def aot_space(cap: int = 90) -> List[dict]:
    """Representatives of the full space for the compile-only checks (aot.py): per regime and BLOCK_M, the
    candidates whose tiles need the most shared memory within sm_<cap>'s per-block limit (the ones that
    would overflow or spill first), one per warp count, up and down paired (the widest tiles of a regime are
    among them, and the largest GROUP_SIZE_M and SPLIT_K at that size, swapped (SWAP_AB) and persistent where the
    regime searches those)."""
    from moec.targets.description import smem_block_by_cc
    SMEM_LIMIT = smem_block_by_cc()  # noqa: N806 - (the limits aot.py checks against)
    out = []
    for r, sp in SPACE.items():
        for BM in sp["BLOCK_M"]:
            for w in sp["num_warps"]:
                best = []
                for which in (1, 2):
                    cands = projection_space(dict(sp, num_warps=(w,)), BM, which, SMEM_LIMIT[cap], cap)
                    if not cands:  # (no tile of this warp count fits: the search has none either)
                        break
                    best.append(max(cands, key=lambda c: (smem_bytes(BM, c["BLOCK_SIZE_N"], c["BLOCK_SIZE_K"],
                                                                     c["num_stages"], which), c["SPLIT_K"],
                                                          c["GROUP_SIZE_M"], c["SWAP_AB"], c["PERSISTENT"])))
                if len(best) == 2:
                    out.append(pair_config(BM, best[0], best[1]))
    return out


def draw_routing(M: int, E: int, k: int, dist: str, zipf_s: float, seed: int):
    """(ids [M, k] int64, weights [M, k] f32): k distinct experts per token, drawn with uniform or Zipf-like
    popularity (weight 1 / rank^s, the ranks a random permutation of the experts); weights sum to 1."""
    import torch
    g = torch.Generator().manual_seed(seed)
    if dist == "uniform":
        pop = torch.ones(E)
    elif dist == "zipf":
        rank = torch.randperm(E, generator=g).double() + 1.0
        pop = (1.0 / rank ** zipf_s).float()
    else:
        raise ValueError(f"unknown routing distribution {dist!r} (choose {', '.join(DISTS)})")
    ids = torch.multinomial(pop.expand(M, E), k, replacement=False, generator=g)
    w = torch.softmax(torch.randn(M, k, generator=g), -1)
    return ids, w


def plan(E: int, N: int, K: int, k: int, tokens: Sequence[int], space: str = "full", smem_limit: int = 0) -> List[dict]:
    """Per token count: regime, BLOCK_M values, candidates per projection, layer runs (x routings)."""
    sp = SPACES[space]
    out = []
    for M in tokens:
        r = regime(M, k, E)
        per_bm = []
        for BM in sp[r]["BLOCK_M"]:
            u = projection_space(sp[r], BM, 1, smem_limit)
            d = projection_space(sp[r], BM, 2, smem_limit)
            per_bm.append({"BLOCK_M": BM, "up": len(u), "down": len(d), "runs": max(len(u), len(d)) * len(DISTS)})
        out.append({"M": M, "regime": r, "per_block_m": per_bm, "runs": sum(b["runs"] for b in per_bm)})
    return out


def _device_limits() -> tuple:
    """(shared memory per block, compute capability x10) of the GPU; (0, 90) without one (no pruning by
    shared memory; registers as on sm_90)."""
    try:
        import torch
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            return int(getattr(p, "shared_memory_per_block_optin", 0) or 0), 10 * p.major + p.minor
    except Exception:  # noqa: BLE001 - no GPU
        pass
    return 0, 90


def search(E: int, N: int, K: int, k: int, tokens: Sequence[int], *, dtype: str = "bf16", space: str = "full",
           zipf_s: float = 1.2, reps: int = 10, warmup: int = 1, out_dir: Optional[str] = None, seed: int = 0,
           log=print, weights: str = "none", activations: str = "none") -> dict:
    """Run the search (module docstring); write the tile-search file; return {"path", "entries", "log"}."""
    import torch

    from moec.codegen.triton import profile, tuning
    from moec.codegen.triton import runtime as rt
    host = profile.host_for(rt.DEVICE)
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    dev = host.device
    g = torch.Generator().manual_seed(seed)
    w_in = (torch.randn(E, 2 * N, K, generator=g) / K ** 0.5).to(tdt).to(dev)
    w_out = (torch.randn(E, K, N, generator=g) / N ** 0.5).to(tdt).to(dev)
    # quantised weights (the bench's codes) and fp8 activations: the file of that mode (fp8_w8a16, fp8_w8a8, ...)
    from moec.bench_triton import quantize_layer
    w_in, w_out, wq, qs = quantize_layer(w_in, w_out, weights if weights != "none" else "bf16")
    act_quant = "fp8" if activations == "fp8" else "none"
    wq_key = "fp8a8" if act_quant == "fp8" else wq
    sp = SPACES[space]
    smem, cap = _device_limits() if dev == "cuda" else (0, 90)
    entries: Dict[int, dict] = {}
    records = []
    import triton
    name = tuning.gpu_name() if dev == "cuda" else "interpreter"
    path = os.path.join(out_dir or tuning.user_config_dir(),
                        tuning.config_file_name(E, N, K, name, tuning.dtype_tag(str(tdt), wq_key)))
    meta = {"triton_version": triton.__version__,
            "moec": {"top_k": k, "routing": list(DISTS), "zipf_s": zipf_s, "space": space, "reps": reps,
                     "weights": weights, "activations": activations,
                     "device": host.name()}}
    for M in tokens:
        t0 = time.perf_counter()
        r = regime(M, k, E)
        x = torch.randn(M, K, generator=g).to(tdt).to(dev)
        routes = []
        for i, dist in enumerate(DISTS):
            ids, w = draw_routing(M, E, k, dist, zipf_s, seed * 1000 + M * 10 + i)
            routes.append((dist, ids.to(dev), w.to(dev)))
        ref: Dict[str, object] = {}
        best = None
        for BM in sp[r]["BLOCK_M"]:
            ups, downs = projection_space(sp[r], BM, 1, smem, cap), projection_space(sp[r], BM, 2, smem, cap)
            if not ups or not downs:
                continue
            t_up: Dict[int, float] = {}
            t_down: Dict[int, float] = {}
            t_align: List[float] = []
            for i in range(max(len(ups), len(downs))):
                iu, idn = i % len(ups), i % len(downs)
                cfg = pair_config(BM, ups[iu], downs[idn])
                ms = {"gemm1": 0.0, "gemm2": 0.0, "align": 0.0}
                rec = {"M": M, "BLOCK_M": BM, "up": ups[iu], "down": downs[idn], "ms": {}}
                try:
                    for dist, ids, w in routes:
                        def run():
                            return rt.moe_experts_combine(x, ids, w_in, w_out, w=w, weighted=False, rw=w.to(tdt),
                                                          weights_at="output", cfg=cfg, wq=wq, q=qs,
                                                          wq_group=128 if wq == "int4" else 0, act_quant=act_quant)
                        y = run().float()
                        if dist not in ref:
                            ref[dist] = y
                        else:
                            err = float((y - ref[dist]).norm() / ref[dist].norm().clamp_min(1e-30))
                            if not err < 2e-2:
                                raise RuntimeError(f"result differs from the first candidate's (rel {err:.3g})")
                        st = profile.time_stages(run, host, reps=reps, warmup=warmup)
                        rec["ms"][dist] = st
                        for key in ms:
                            ms[key] += st.get(key, 0.0)
                except Exception as e:  # noqa: BLE001 - shared memory, resources: recorded, skipped
                    rec["error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                    records.append(rec)
                    continue
                records.append(rec)
                t_up[iu] = min(t_up.get(iu, float("inf")), ms["gemm1"])
                t_down[idn] = min(t_down.get(idn, float("inf")), ms["gemm2"])
                t_align.append(ms["align"])
            if not t_up or not t_down:
                continue
            bu, bd = min(t_up, key=t_up.get), min(t_down, key=t_down.get)
            total = sorted(t_align)[len(t_align) // 2] + t_up[bu] + t_down[bd]
            if best is None or total < best[0]:
                best = (total, pair_config(BM, ups[bu], downs[bd]), t_up[bu], t_down[bd])
        if best is None:
            raise RuntimeError(f"no tile configuration ran for M={M} (E={E}, N={N}, K={K}): see the search log")
        entries[M] = best[1]
        tuning.save_entries(path, {M: best[1]}, meta)  # (each token count as it is found: a time limit loses less)
        with open(path[:-len(".json")] + ".search.json", "w") as f:
            json.dump({"meta": meta, "runs": records}, f, indent=1)
        log(f"M={M:<6} {r:<8} best BLOCK_M {best[1]['BLOCK_M']}: up {tuning.to_entry(best[1])['up']} "
            f"{best[2]:.3f} ms, down {tuning.to_entry(best[1])['down']} {best[3]:.3f} ms "
            f"(sum over {'+'.join(DISTS)} routings; {time.perf_counter() - t0:.0f} s)")
    return {"path": path, "entries": entries, "log": records}


DEFAULT_TOKENS = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096"


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m moec.codegen.triton.tune_moe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer", help="a layer of moec.bench_triton.LAYERS (mixtral, deepseek, ...) for E, N, K, topk")
    ap.add_argument("--E", type=int)
    ap.add_argument("--N", type=int, help="intermediate size F")
    ap.add_argument("--K", type=int, help="hidden size D")
    ap.add_argument("--topk", type=int)
    ap.add_argument("--tokens", default=DEFAULT_TOKENS)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--weights", default="none", choices=["none", "int8", "int4", "fp8"],
                    help="quantised expert weights (the bench's codes): the file of that mode, e.g. fp8_w8a16")
    ap.add_argument("--activations", default="none", choices=["none", "fp8"],
                    help="fp8 (with --weights fp8): w8a8, per-token fp8 activations (file dtype fp8_w8a8)")
    ap.add_argument("--space", default="full", choices=sorted(SPACES))
    ap.add_argument("--zipf", type=float, default=1.2, help="exponent s of the skewed routing (popularity 1/rank^s)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("-o", "--output", help="folder of the tile-search file (default: MOEC_TRITON_CONFIGS, else "
                                           "triton_configs/ under the moec cache dir, which the runtime reads)")
    ap.add_argument("--smoke", action="store_true", help="--space smoke, one timed run, no warm-up: the path runs "
                                                         "(interpreter)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (space sizes, layer runs) and stop")
    a = ap.parse_args(argv)
    from moec.errors import UserInputError
    shape = {}
    if a.layer:
        from moec.bench_triton import LAYERS
        if a.layer not in LAYERS:
            raise UserInputError(f"tune_moe: unknown layer {a.layer!r} (choose {', '.join(LAYERS)})")
        L = LAYERS[a.layer]
        shape = dict(E=L["E"], N=L["F"], K=L["D"], topk=L["k"])
    for key in ("E", "N", "K", "topk"):
        if getattr(a, key) is not None:
            shape[key] = getattr(a, key)
    missing = [k for k in ("E", "N", "K", "topk") if not shape.get(k) or shape[k] < 1]
    if missing:
        raise UserInputError(f"tune_moe: give --layer or positive --{', --'.join(missing)}")
    try:
        tokens = [int(t) for t in a.tokens.split(",")]
    except ValueError:
        raise UserInputError(f"tune_moe: --tokens {a.tokens!r} is not a comma-separated list of integers") from None
    if not tokens or min(tokens) < 1 or shape["topk"] > shape["E"]:
        raise UserInputError("tune_moe: token counts must be >= 1 and topk <= E")
    space, reps, warmup = ("smoke", 1, 0) if a.smoke else (a.space, a.reps, 1)
    if a.activations == "fp8" and a.weights != "fp8":
        raise UserInputError("tune_moe: --activations fp8 goes with --weights fp8 (w8a8)")
    if a.dry_run:
        p = plan(shape["E"], shape["N"], shape["K"], shape["topk"], tokens, space)
        for row in p:
            bms = ", ".join(f"BLOCK_M {b['BLOCK_M']}: {b['up']} up x {b['down']} down candidates" for b in row["per_block_m"])
            print(f"M={row['M']:<6} {row['regime']:<8} {bms}; {row['runs']} layer runs")
        print(f"{sum(r['runs'] for r in p)} layer runs in all (before pruning by the GPU's shared memory); "
              f"routings: {', '.join(DISTS)} (zipf s={a.zipf})")
        return 0
    res = search(shape["E"], shape["N"], shape["K"], shape["topk"], tokens, dtype=a.dtype, space=space,
                 zipf_s=a.zipf, reps=reps, warmup=warmup, out_dir=a.output, weights=a.weights,
                 activations=a.activations)
    print(f"wrote {res['path']}")
    return 0


if __name__ == "__main__":
    from moec.errors import MoecError
    try:
        raise SystemExit(main())
    except MoecError as e:
        import sys
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
