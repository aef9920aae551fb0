"""Compile moec's Triton kernels for a real NVIDIA GPU without one: what the GPU would run.

``python -m moec.codegen.triton.aot --arch 90`` takes the grouped-GEMM kernels of an MoE layer
through Triton's whole NVIDIA pipeline (TTIR -> TTGIR -> LLVM -> PTX -> ptxas, the ptxas that ships
with triton) for a chosen compute capability, for every tile configuration moec ships or would try,
and reports per kernel: registers per thread, spilled bytes, shared memory against the
architecture's per-block limit, the matrix instruction used (wgmma on Hopper, mma.sync otherwise)
and its operand types (e4m3.e4m3: an fp8 x fp8 dot), how tiles are loaded (16-byte cp.async vectors,
TMA: cp.async.bulk.tensor), the memory order of the combine's atomics, and the kernel variant the
runtime picks for that architecture (swap-AB, persistent tile queue, TMA descriptors; runtime.variants).
CI has no GPU: this is how it checks that the configurations shipped for the H100 still fit the
hardware after a kernel change, and that fp8 kernels lower for sm_90.  The grouped GEMMs are compiled
in their even-K specialisation (D and F multiples of BLOCK_K, as every real layer here; --ragged-k: the
masked one).  It is a compile check, not a measurement: times need a GPU
(``moec bench --target triton``).

Must run in its own process (MOEC_TRITON_AOT=1 before triton is imported: the interpreter, which
the tests use, replaces the JIT functions).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

def _smem_limits() -> Dict[int, int]:
    """Shared memory one block may use, by compute capability x10, from the target descriptions."""
    from moec.targets.description import smem_block_by_cc
    return smem_block_by_cc()


SMEM_LIMIT = _smem_limits()


def _triton():
    if os.environ.get("MOEC_TRITON_AOT") != "1" or os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("moec.codegen.triton.aot needs MOEC_TRITON_AOT=1 and no TRITON_INTERPRET in its "
                           "process: run `python -m moec.codegen.triton.aot` (or aot_report_subprocess())")
    from moec.codegen.triton import ensure_triton
    triton, _ = ensure_triton()
    from moec.codegen.triton import kernels as K
    return triton, K


def _ptxas_info(triton, ptx: str, cap: int) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas
    arch = f"sm_{cap}{'a' if cap >= 90 else ''}"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        p = subprocess.run([get_ptxas(cap).path, "-v", f"--gpu-name={arch}", src, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    log = p.stdout + p.stderr
    if p.returncode:
        raise RuntimeError(f"ptxas failed for {arch}: {log[-400:]}")
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {"registers": int(regs.group(1)) if regs else None,
            "spill_bytes": int(spill.group(1)) + int(spill.group(2)) if spill else 0}


def compile_kernel(name: str, types: Dict[str, str], consts: Dict[str, object], cap: int = 90, num_warps: int = 4,
                   num_stages: int = 3) -> dict:
    """Compile kernel ``name`` for sm_<cap>.  types: argument -> Triton type ("*bf16", "i32", ...; a
    ":16" suffix promises 16-divisibility, as Triton's launcher specialises such arguments)."""
    triton, K = _triton()
    from triton.backends.compiler import GPUTarget
    fn = getattr(K, name)
    sig, attrs = {}, {}
    for i, arg in enumerate(fn.arg_names):
        if arg in consts:
            sig[arg] = "constexpr"
        elif arg in types:
            t = types[arg]
            if t.endswith(":16"):
                t = t[:-3]
                attrs[(i,)] = [["tt.divisibility", 16]]
            sig[arg] = t
        else:
            raise KeyError(f"{name}: no type or constant for argument {arg!r}")
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", cap, 32), options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = k.asm["ptx"]
    vec = sorted({int(v, 0) for v in re.findall(r"cp\.async\.c[ag]\.shared\.global \[[^\]]*\], \[[^\]]*\], (0x[0-9a-f]+|\d+)",
                                                 ptx)})
    info = {"kernel": name, "arch": f"sm_{cap}", "num_warps": num_warps, "num_stages": num_stages,
            "shared_bytes": k.metadata.shared, "smem_limit": SMEM_LIMIT.get(cap),
            "mma": "wgmma" if "wgmma.mma_async" in ptx else "mma.sync" if "mma.sync" in ptx else "none",
            # operand types of the matrix instructions (wgmma ...f32.e4m3.e4m3: an fp8 x fp8 dot)
            "mma_types": sorted({m.group(1) for m in re.finditer(
                r"(?:wgmma\.mma_async|mma)\.sync\.aligned\.m\d+n\d+k\d+(?:\.row\.col)?\.f32\.(\w+\.\w+)", ptx)}),
            "tma": "cp.async.bulk.tensor" in ptx,
            "cp_async_bytes": vec, "fp8_convert": bool(re.search(r"cvt\.\w+(\.\w+)*\.e4m3x2", ptx)),
            "f32_atomic_add": bool(re.search(r"(red|atom)(\.\w+)*\.global(\.\w+)*\.add(\.\w+)*\.f32", ptx)),
            # the memory order of those atomics (.relaxed, .acq_rel, ...; none written = PTX's default)
            "atomic_sem": _atomic_sems(ptx)}
    info.update(_ptxas_info(triton, ptx, cap))
    return info


def _atomic_sems(ptx: str) -> List[str]:
    """Memory orders of the f32 atomic adds (red/atom ...add...f32) in ptx: "relaxed", "acq_rel", ...;
    "" for an add that names none (PTX's default)."""
    out = set()
    for m in re.finditer(r"\b(?:red|atom)((?:\.\w+)+)", ptx):
        parts = m.group(1).split(".")
        if "add" in parts and any(p.startswith("f32") for p in parts):
            out.add(next((p for p in parts if p in ("relaxed", "acq_rel", "acquire", "release", "sc")), ""))
    return sorted(out)


_DT = {"bf16": "bf16", "f16": "fp16", "f32": "fp32"}


def moe_kernel_reports(cfg: dict, dtype: str = "bf16", wq: str = "none", cap: int = 90,
                       gated: bool = True, group: int = 64, combine: bool = False, a8: bool = False,
                       even_k: bool = True) -> List[dict]:
    """The kernels one moe_experts call launches with tile configuration cfg (split-K epilogues too), in the
    variants the runtime picks for sm_<cap> (runtime.variants: swap-AB, persistent, TMA from the configuration
    or the defaults).  a8: fp8 activations too (w8a8: wq must be fp8), the dots fp8 x fp8.  even_k=False: the
    masked reduction (D or F not a multiple of BLOCK_K) instead of the even-K specialisation."""
    triton, K = _triton()
    from moec.codegen.triton.runtime_names import WQ_CODES
    tdt = _DT[dtype]
    cdt = {"bf16": K.tl.bfloat16, "f16": K.tl.float16, "f32": K.tl.float32}[dtype]
    wtype = {"none": f"*{tdt}", "bf16": f"*{tdt}", "int8": "*i8", "int4": "*u8", "fp8": "*u8"}[wq]
    prec = "ieee" if dtype == "f32" else "tf32"
    s1, s2 = int(cfg.get("SPLIT_K1", 1) or 1), int(cfg.get("SPLIT_K2", 1) or 1)
    ptrs = {n: f"*{tdt}:16" for n in ("x_ptr", "a_ptr", "b_ptr", "rw_ptr", "y_ptr")}
    if combine:  # the combine fused: the down projection adds into an f32 [T, D] output
        ptrs["y_ptr"] = "*fp32:16"
    ptrs.update(w_ptr=wtype + ":16", s_ptr="*fp32:16", z_ptr="*fp32:16", p_ptr="*fp32:16", sorted_ptr="*i64:16",
                bexp_ptr="*i64:16")
    ints = {n: "i32:16" for n in ("D", "F", "stride_x", "K_CHUNK", "M_ROWS")}
    ints.update(n_slots="i32", k_top="i32", n_blocks="i32", alpha="fp32", beta="fp32", limit="fp32")
    types = {**ptrs, **ints}
    if a8:
        if wq != "fp8":
            raise ValueError("fp8 activations go with fp8 weights (w8a8)")
        cdt = K.tl.float8e4nv
    q = dict(WQ=WQ_CODES[wq], HAS_ZP=False, CDT=cdt, PREC=prec, ACT_BF16=False)
    e1 = dict(GATED=gated, INTERLEAVED=False, ACT=0 if gated else 1, CLAMP=False, HAS_BIAS=False, RW_INPUT=False)
    e2 = dict(HAS_BIAS=False, RW_OUTPUT=True, COMBINE=combine)
    from moec.codegen.triton.runtime import launch_params, variants
    g1, w1, st1 = launch_params(cfg, 1)
    g2, w2, st2 = launch_params(cfg, 2)
    BM = cfg["BLOCK_M"]
    wdt = wtype[1:]
    adt = "u8" if a8 else tdt

    def var(which, BN, BK):
        v = variants(cfg, which, cap)
        tma = v["TMA"] and wq != "int4"
        x = dict(SWAP_AB=v["SWAP_AB"], PERSISTENT=bool(v["PERSISTENT"]), TMA=tma, EVEN_K=even_k, A8=a8)
        t = {"q_ptr": "*i32"} if v["PERSISTENT"] else {}
        if not v["PERSISTENT"]:
            x["q_ptr"] = None
        sc = "xs_ptr" if which == 1 else "as_ptr"
        if a8:  # the GEMM's input activations are e4m3 codes with row scales
            t[sc] = "*fp32:16"
            t["x_ptr" if which == 1 else "a_ptr"] = "*u8:16"
        else:
            x[sc] = None
        if tma:
            t["w_desc"] = f"tensordesc<{wdt}[1,{BN},{BK}]>"
            if which == 2:
                t["a_desc"] = f"tensordesc<{adt}[{BM},{BK}]>"
        else:
            x["w_desc"] = None
            if which == 2:
                x["a_desc"] = None
        return x, t
    x1, t1 = var(1, cfg["BLOCK_N1"], cfg["BLOCK_K1"])
    x2, t2 = var(2, cfg["BLOCK_N2"], cfg["BLOCK_K2"])
    out = [compile_kernel("moe_gemm1_kernel", {**types, **t1},
                          dict(**e1, **q, BLOCK_M=BM, BLOCK_N=cfg["BLOCK_N1"], BLOCK_K=cfg["BLOCK_K1"], SPLIT_K=s1,
                               GROUP=group, GROUP_M=g1, **x1), cap, w1, st1),
           compile_kernel("moe_gemm2_kernel", {**types, **t2},
                          dict(**e2, **q, BLOCK_M=BM, BLOCK_N=cfg["BLOCK_N2"], BLOCK_K=cfg["BLOCK_K2"], SPLIT_K=s2,
                               GROUP=group, GROUP_M=g2, **x2), cap, w2, st2)]
    for r, x in zip(out, (x1, x2)):
        r["variant"] = {k: x[k] for k in ("SWAP_AB", "PERSISTENT", "TMA", "A8", "EVEN_K")}
    if s1 > 1:
        out.append(compile_kernel("moe_act_kernel", types, dict(**e1, WQ=q["WQ"], SPLIT_K=s1, BLOCK_M=cfg["BLOCK_M"],
                                                                BLOCK_N=cfg["BLOCK_N1"]), cap, 4, 1))
    if s2 > 1:
        out.append(compile_kernel("moe_down_epilogue_kernel", types,
                                  dict(**e2, WQ=q["WQ"], SPLIT_K=s2, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N2"]),
                                  cap, 4, 1))
    for r in out:
        r["config"] = cfg
        r["dtype"], r["weights"] = dtype, wq
    return out


def problems(r: dict) -> List[str]:
    """What would stop (or cripple) this kernel on the GPU."""
    bad = []
    if r["spill_bytes"]:
        bad.append(f"{r['spill_bytes']} bytes of register spills")
    if r["smem_limit"] and r["shared_bytes"] > r["smem_limit"]:
        bad.append(f"shared memory {r['shared_bytes']} > {r['smem_limit']} bytes ({r['arch']}): launch would fail")
    if r["kernel"] in ("moe_gemm1_kernel", "moe_gemm2_kernel") and r["mma"] == "none" and r["dtype"] != "f32":
        bad.append("no tensor-core instruction")
    v = r.get("variant", {})
    if v.get("TMA") and not r.get("tma"):
        bad.append("TMA descriptors asked for but no cp.async.bulk.tensor in the PTX")
    if v.get("A8") and r["kernel"].startswith("moe_gemm") and r.get("mma_types") != ["e4m3.e4m3"]:
        bad.append(f"w8a8 but the dots are {r.get('mma_types')}, not fp8 x fp8")
    return bad


def align_reports(cap: int = 90) -> List[dict]:
    """The one-program align kernel at the largest slot count runtime.align_kernel_shape accepts, for
    expert counts 8 .. 1024 (the shapes where its registers are tightest)."""
    from moec.codegen.triton.runtime import align_kernel_shape
    out = []
    for E in (8, 64, 256, 512, 1024):
        n = max(m for m in (1 << i for i in range(13)) if align_kernel_shape(m, E) is not None)
        bn, be, warps = align_kernel_shape(n, E)
        nb = min(-(-n // 16) + E, n)
        r = compile_kernel("align_kernel", dict(ids_ptr="*i64:16", sorted_ptr="*i64:16", bexp_ptr="*i64:16", n="i32",
                                                E="i32", n_blocks="i32"),
                           dict(BLOCK_M=16, BN=bn, BE=be, BB=1 << max(0, (nb - 1).bit_length())), cap, warps, 1)
        r.update(key=f"align n={n} E={E}", config={"slots": n, "experts": E}, dtype="i64", weights="-")
        out.append(r)
    return out


def generic_reports(cap: int = 90, dtype: str = "bf16") -> List[dict]:
    """The kernels of the ordinary ops at the shapes the runtime launches them with: the matmul
    (64x64x32 tiles; plain and with the Gemm bias epilogue), the few-row split-K GEMV (a router at decode)
    and its ordered sum, the elementwise binary and unary kernels
    and the row softmax, all storing ``dtype`` (bf16 through the round-to-nearest-even store)."""
    t = "*" + _DT[dtype]
    mm_types = dict(a_ptr=t + ":16", b_ptr=t + ":16", c_ptr=t + ":16", M="i32", N="i32", K="i32",
                    **{s: "i32" for s in ("sab", "sam", "sak", "sbb", "sbk", "sbn", "scb", "scm", "scn")})
    prec = "ieee" if dtype == "f32" else "tf32"
    mm = dict(PREC=prec, BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, WIDEN=False)
    jobs = [
        ("matmul", "matmul_kernel", mm_types, dict(mm, bias_ptr=None, sxm=0, sxn=0, alpha=1.0, beta=1.0,
                                                   HAS_BIAS=False)),
        ("matmul + bias", "matmul_kernel", dict(mm_types, bias_ptr=t + ":16", sxm="i32", sxn="i32", alpha="fp32",
                                                beta="fp32"), dict(mm, HAS_BIAS=True)),
        ("gemv split-K", "gemv_splitk_kernel", dict(a_ptr=t + ":16", b_ptr=t + ":16", p_ptr="*fp32:16", M="i32",
                                                     N="i32", K="i32", sam="i32", sak="i32", sbk="i32", sbn="i32",
                                                     K_CHUNK="i32"),
         dict(PREC=prec, BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, WIDEN=False)),
        ("split-K sum", "splitk_reduce_kernel", dict(p_ptr="*fp32:16", c_ptr=t + ":16", M="i32", N="i32", S="i32",
                                                     scm="i32", scn="i32"),
         dict(bias_ptr=None, sxm=0, sxn=0, alpha=1.0, beta=1.0, HAS_BIAS=False, BLOCK=1024)),
        ("binary add", "binary_kernel", dict(a_ptr=t + ":16", b_ptr=t + ":16", o_ptr=t + ":16", n="i32"),
         dict(OP=0, BLOCK=1024)),
        ("unary exp", "unary_kernel", dict(x_ptr=t + ":16", o_ptr=t + ":16", n="i32"), dict(OP=5, BLOCK=1024)),
        ("softmax 4096", "softmax_kernel", dict(x_ptr=t + ":16", o_ptr=t + ":16", n_cols="i32"),
         dict(LOG=False, BLOCK=4096)),
    ]
    out = []
    for key, name, types, consts in jobs:
        r = compile_kernel(name, types, consts, cap, 4, 2)
        r.update(key=f"{key} {dtype}", config={}, dtype=dtype, weights="-")
        out.append(r)
    return out


def shipped_configs(cap: int = 90) -> Dict[str, dict]:
    """The shipped tile-search files (configs/*.json: per GPU, layer shape and token count) plus the
    autotuning candidates and the search space's representatives for sm_<cap> (tune_moe.aot_space)."""
    from moec.codegen.triton.tune_moe import aot_space
    from moec.codegen.triton.tuning import CANDIDATES, CONFIG_DIR, file_entries
    out = {}
    for name in sorted(os.listdir(CONFIG_DIR)):
        if name.endswith(".json"):
            for m, c in sorted(file_entries(os.path.join(CONFIG_DIR, name)).items()):
                out[f"{name[:-5]}|M={m}"] = c
    for i, c in enumerate(aot_space(cap)):
        out[f"space{i}"] = c
    for i, c in enumerate(CANDIDATES):
        out[f"candidate{i}"] = c
    return out


def _aot_env() -> dict:
    env = dict(os.environ, MOEC_TRITON_AOT="1")
    env.pop("TRITON_INTERPRET", None)
    return env


def aot_report_subprocess(args: List[str], timeout: float = 900) -> dict:
    """Run this module in a fresh process (compile-only triton) and return its JSON report."""
    p = subprocess.run([sys.executable, "-m", "moec.codegen.triton.aot", "--json", *args], capture_output=True,
                       text=True, env=_aot_env(), timeout=timeout)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"moec.codegen.triton.aot failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m moec.codegen.triton.aot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (80 A100, 90 H100/H200)")
    ap.add_argument("--dtype", default="bf16", choices=sorted(_DT))
    ap.add_argument("--weights", default="none", choices=["none", "int8", "int4", "fp8"])
    ap.add_argument("--activations", default="none", choices=["none", "fp8"],
                    help="fp8: w8a8 (with --weights fp8), the grouped GEMMs' dots fp8 x fp8")
    ap.add_argument("--group", type=int, default=64, help="int4 group size")
    ap.add_argument("--combine", action="store_true", help="the down projection with the combine fused")
    ap.add_argument("--ragged-k", action="store_true", help="the masked reduction (D, F not multiples of BLOCK_K) "
                    "instead of the even-K specialisation")
    ap.add_argument("--configs", default="shipped", help="'shipped' or a JSON list of tile configurations")
    ap.add_argument("--match", default="", help="only configuration keys containing this text")
    ap.add_argument("--align", action="store_true", help="the align kernel at its largest shapes instead")
    ap.add_argument("--generic", action="store_true", help="the ordinary ops' kernels (matmul, elementwise, "
                    "softmax) instead")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if os.environ.get("MOEC_TRITON_AOT") != "1":
        return subprocess.call([sys.executable, "-m", "moec.codegen.triton.aot", *(argv or sys.argv[1:])],
                               env=_aot_env())
    if a.align or a.generic:
        reports = align_reports(a.arch) if a.align else generic_reports(a.arch, a.dtype)
        for r in reports:
            r["problems"] = [f"{r['spill_bytes']} bytes of register spills"] if r["spill_bytes"] > 256 else []
        if a.json:
            print(json.dumps({"arch": a.arch, "kernels": reports, "bad": sum(bool(r["problems"]) for r in reports)}))
        else:
            for r in reports:
                print(f"{r['key']:<22} warps {r['num_warps']:>2} regs {r['registers']:>3} spill {r['spill_bytes']:>4} "
                      f"{r['mma'] if r['mma'] != 'none' else '':<8} {'; '.join(r['problems'])}")
        return 1 if any(r["problems"] for r in reports) else 0
    cfgs = shipped_configs(a.arch) if a.configs == "shipped" else {f"cfg{i}": c for i, c in enumerate(json.loads(a.configs))}
    reports, seen = [], {}
    for key, c in cfgs.items():
        if a.match not in key:
            continue
        t = json.dumps(c, sort_keys=True)
        if t in seen:
            continue
        seen[t] = key
        for r in moe_kernel_reports(c, a.dtype, a.weights, a.arch, group=a.group, combine=a.combine,
                                    a8=a.activations == "fp8", even_k=not a.ragged_k):
            r["key"], r["problems"] = key, problems(r)
            reports.append(r)
    bad = [r for r in reports if r["problems"]]
    if a.json:
        print(json.dumps({"arch": a.arch, "kernels": reports, "bad": len(bad)}))
    else:
        for r in reports:
            c = r["config"]
            tiles = f"M{c['BLOCK_M']} N{c['BLOCK_N1']}/{c['BLOCK_N2']} K{c['BLOCK_K1']}/{c['BLOCK_K2']} " \
                    f"w{r['num_warps']} s{r['num_stages']} split{c.get('SPLIT_K1', 1)}/{c.get('SPLIT_K2', 1)} " \
                    f"g{c.get('GROUP_SIZE_M1', '-')}/{c.get('GROUP_SIZE_M2', '-')}"
            v = r.get("variant", {})
            flags = " ".join(n for n, on in (("swapAB", v.get("SWAP_AB")), ("persistent", v.get("PERSISTENT")),
                                              ("TMA", r.get("tma"))) if on)
            print(f"{r['kernel']:<26} {tiles:<40} regs {r['registers']:>3} spill {r['spill_bytes']:>4} "
                  f"smem {r['shared_bytes'] // 1024:>3}/{(r['smem_limit'] or 0) // 1024} KiB {r['mma']:<8} "
                  f"{','.join(r.get('mma_types', []))} {flags} cp.async {r['cp_async_bytes']} {'; '.join(r['problems'])}")
        print(f"{len(reports)} kernels compiled for sm_{a.arch}, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
