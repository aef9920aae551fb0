"""`moec bench --target triton`: moec's Triton MoE kernels vs PyTorch on a real GPU, same run.

Peers, on the same layer, weights and inputs (bf16, f32 accumulation everywhere):
  * eager:   the Hugging Face formulation, a Python loop over experts (index the tokens routed to
             each expert, two Linear-style matmuls, index_add back), as the zoo's modules are written;
  * compile: torch.compile of that same function;
  * dense:   every expert on every token as batched matmuls (bmm), then the routing-weight mask.
moec runs its route kernel, the align/sort plan, the two grouped GEMM kernels and the combine
kernel: the same runtime calls a compiled artifact's launcher makes.  The DeepSeek-V3-shaped layer has
its one shared expert (SwiGLU of width F on every token, bf16, added by the combine) in every peer, and in
the FLOPs and bytes.  Tile configurations are
autotuned per (layer, token bucket, GPU) first and cached.  Achieved TFLOP/s (useful FLOPs of the
k selected experts) and TB/s (weights of the experts actually touched, read once) are reported
against peaks measured in the same run (a large bf16 matmul and a device copy).  Each row also has
moec's time per stage (routing, align, gemm1, gemm2, combine: ``ms_stages``), from events recorded
between the stages' launches in a separate pass (moec.codegen.triton.profile).

``--smoke``: the same code on small layers (``smoke_*``) at 1 and 5 tokens, one timed run each, on whatever device there
is -- the CPU under Triton's interpreter in CI, where every field is filled but times mean nothing.

``activations="fp8"`` (with ``weights="fp8"``): w8a8 -- x and the activation quantised per token to e4m3 on the
fly, fp8 x fp8 dots.  ``variants``: each row also timed with swap-AB, the persistent kernel and TMA flipped
from its tile configuration (``ms_variants``, with the relative difference of the result).  ``cuda_graphs``:
each row also replayed as one CUDA graph of the whole layer (``ms_cuda_graph``; on the interpreter the row
says why not).

``weights``: moec's expert weights in bf16 (the default; "f32" means the same here), int8 or fp8 (e4m3,
per output channel scales, dequantised in registers; fp8 needs an sm_89+ GPU), or int4 (W4A16, groups
of 128 along K with f32 scales).  The peers always run
the bf16 weights, so ``rel_err_vs_eager`` then includes the quantisation error, and TB/s counts the
narrow bytes moec actually reads.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Sequence

from moec.codegen.triton import profile

LAYERS = {
    # name: D, F, E, k, routing
    "mixtral": dict(D=4096, F=14336, E=8, k=2, scoring="softmax", n_group=1, topk_group=1, norm="sum",
                    scale=1.0, bias=False),
    "deepseek": dict(D=7168, F=2048, E=256, k=8, scoring="sigmoid", n_group=8, topk_group=4, norm="sum",
                     scale=2.5, bias=True, group_score="top2_sum", shared=1),
    # --smoke: the same two routings at sizes the interpreter runs in seconds
    "smoke_mixtral": dict(D=128, F=64, E=4, k=2, scoring="softmax", n_group=1, topk_group=1, norm="sum",
                          scale=1.0, bias=False),
    "smoke_deepseek": dict(D=64, F=32, E=8, k=4, scoring="sigmoid", n_group=4, topk_group=2, norm="sum",
                           scale=2.5, bias=True, group_score="top2_sum", shared=1),
}
SMOKE_LAYERS = ("smoke_mixtral", "smoke_deepseek")
SMOKE_TOKENS = (1, 5)


_Host = profile.CudaHost  # the GPU's device queries (the interpreter's: profile.InterpreterHost)


def mode_kwargs(mode: str) -> dict:
    """run_triton_bench's weights= / activations= for a weight mode of ``--weights`` (fp8a8: fp8 weights and fp8
    activations; other modes: bf16 activations)."""
    from moec.passes.quantize import wq_aq
    wq, aq = wq_aq(mode)
    return dict(weights=wq, activations=aq if aq != "none" else "bf16")


def _time(fn: Callable, host=_Host, reps: int = 20, warmup: int = 3) -> float:
    return profile.time_fn(fn, host, reps, warmup)


def probes(host=_Host, n: int = 8192, copy_bytes: int = 1 << 30) -> dict:
    """Peaks measured in the same run: an n x n x n bf16 matmul and a device copy of copy_bytes."""
    import torch
    a = torch.randn(n, n, device=host.device, dtype=torch.bfloat16)
    t = _time(lambda: a @ a, host, reps=10)
    src = torch.empty(copy_bytes, dtype=torch.uint8, device=host.device)
    dst = torch.empty_like(src)
    tc = _time(lambda: dst.copy_(src), host, reps=10)
    return {"bf16_matmul_tflops": 2 * n ** 3 / t / 1e12, "copy_tbps": 2 * copy_bytes / tc / 1e12,
            "matmul_n": n, "copy_bytes": copy_bytes}


def make_layer(cfg: dict, seed: int = 0, device: str = "cuda"):
    import torch
    g = torch.Generator(device=device).manual_seed(seed)
    D, F, E = cfg["D"], cfg["F"], cfg["E"]
    bf = torch.bfloat16
    w_router = torch.randn(D, E, device=device, generator=g, dtype=torch.float32) / D ** 0.5
    w_in = (torch.randn(E, 2 * F, D, device=device, generator=g, dtype=bf) / D ** 0.5)
    w_out = (torch.randn(E, D, F, device=device, generator=g, dtype=bf) / F ** 0.5)
    bias = torch.randn(E, device=device, generator=g) * 0.01 if cfg["bias"] else None
    return w_router, w_in, w_out, bias


def make_shared(cfg: dict, seed: int = 1, device: str = "cuda"):
    """The layer's shared (always-on) experts, as DeepSeek-V3 has one: (w_in [S, 2F, D], w_out [S, D, F]) bf16,
    or None (cfg "shared": S, 0 or absent: none)."""
    import torch
    S = cfg.get("shared", 0)
    if not S:
        return None
    g = torch.Generator(device=device).manual_seed(seed)
    D, F = cfg["D"], cfg["F"]
    return (torch.randn(S, 2 * F, D, device=device, generator=g, dtype=torch.bfloat16) / D ** 0.5,
            torch.randn(S, D, F, device=device, generator=g, dtype=torch.bfloat16) / F ** 0.5)


def _shared_eager(x, shared, F):
    """Sum over the shared experts of SwiGLU(x) (eager torch; the peers' formulation)."""
    import torch
    out = 0
    for s in range(shared[0].shape[0]):
        h = x @ shared[0][s].t()
        out = out + (torch.nn.functional.silu(h[:, :F]) * h[:, F:]) @ shared[1][s].t()
    return out


def torch_route(logits, cfg, bias):
    import torch
    E, k = cfg["E"], cfg["k"]
    s = torch.softmax(logits, -1) if cfg["scoring"] == "softmax" else torch.sigmoid(logits)
    c = s + bias if bias is not None else s
    if cfg["n_group"] > 1:
        G = cfg["n_group"]
        cg = c.view(-1, G, E // G)
        gs = cg.topk(2, -1).values.sum(-1) if cfg.get("group_score") == "top2_sum" else cg.max(-1).values
        keep = torch.zeros_like(gs, dtype=torch.bool).scatter_(1, gs.topk(cfg["topk_group"], -1).indices, True)
        c = c.masked_fill(~keep.repeat_interleave(E // G, 1), float("-inf"))
    ids = c.topk(k, -1).indices
    w = s.gather(1, ids)
    if cfg["norm"] == "sum":
        w = w / w.sum(-1, keepdim=True)
    return w * cfg["scale"], ids


def eager_layer(x, w_router, w_in, w_out, bias, cfg, shared=None):
    """Hugging Face style: loop over experts, index the routed tokens, index_add the outputs (plus the shared
    experts on every token)."""
    import torch
    F = cfg["F"]
    logits = x.float() @ w_router
    w, ids = torch_route(logits, cfg, bias)
    out = torch.zeros_like(x)
    for e in range(cfg["E"]):
        tok, slot = torch.where(ids == e)
        if tok.numel() == 0:
            continue
        h = x[tok] @ w_in[e].t()
        a = torch.nn.functional.silu(h[:, :F]) * h[:, F:]
        y = (a @ w_out[e].t()) * w[tok, slot, None].to(x.dtype)
        out.index_add_(0, tok, y)
    return out if shared is None else out + _shared_eager(x, shared, F)


def dense_layer(x, w_router, w_in, w_out, bias, cfg, shared=None):
    """Every expert on every token (bmm), masked by the routing weights."""
    import torch
    F, E = cfg["F"], cfg["E"]
    logits = x.float() @ w_router
    w, ids = torch_route(logits, cfg, bias)
    dense_w = torch.zeros(x.shape[0], E, device=x.device, dtype=x.dtype).scatter_(1, ids, w.to(x.dtype))
    h = torch.bmm(x.unsqueeze(0).expand(E, -1, -1), w_in.transpose(1, 2))
    a = torch.nn.functional.silu(h[..., :F]) * h[..., F:]
    y = torch.bmm(a, w_out.transpose(1, 2))
    out = (y * dense_w.t().unsqueeze(-1)).sum(0)
    return out if shared is None else out + _shared_eager(x, shared, F)


BENCH_WEIGHTS = ("f32", "bf16", "int8", "int4", "fp8")
INT4_GROUP = 128  # the common W4A16 group size (GPTQ / AWQ checkpoints)


def quantize_layer(w_in, w_out, weights: str):
    """(w_in, w_out, wq, q) for moec's kernels: the bf16 weights as they are, or quantised per output
    channel (int8: max|row| / 127, round to nearest even; fp8: max|row| / 448, e4m3fn with saturation),
    or int4 per group of INT4_GROUP along K (symmetric, max|group| / 7, codes + 8, two per byte, low
    nibble first) -- the same codes as moec.passes.quantize, computed here with torch on the GPU."""
    import torch
    if weights in ("f32", "bf16"):
        return w_in, w_out, "none", (None, None, None, None)
    if weights == "int4":
        out = []
        for w in (w_in, w_out):
            g = w.float().reshape(*w.shape[:-1], w.shape[-1] // INT4_GROUP, INT4_GROUP)
            amax = g.abs().amax(-1)
            s = torch.where(amax > 0, amax / 7.0, torch.ones_like(amax))
            c = (torch.round(g / s[..., None]).clamp(-8, 7) + 8).to(torch.uint8).reshape(w.shape)
            out.append(((c[..., 0::2] | (c[..., 1::2] << 4)).contiguous(), s.contiguous()))
        (qi, si), (qo, so) = out
        return qi, qo, "int4", (si, so, None, None)
    out = []
    for w in (w_in, w_out):
        wf = w.float()
        amax = wf.abs().amax(-1)
        lim = 127.0 if weights == "int8" else 448.0
        s = torch.where(amax > 0, amax / lim, torch.ones_like(amax))
        v = wf / s[..., None]
        if weights == "int8":
            qw = torch.round(v).clamp(-127, 127).to(torch.int8)
        else:
            qw = v.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).view(torch.uint8)
        out.append((qw.contiguous(), s.contiguous()))
    (qi, si), (qo, so) = out
    return qi, qo, weights, (si, so, None, None)


def moec_layer(x, w_router, w_in, w_out, bias, cfg, tuned=None, wq="none", q=(None, None, None, None),
               act_quant="none", shared=None):
    from moec.codegen.triton import runtime as rt
    logits = rt.matmul(x.float(), w_router)
    w, ids = rt.moe_route(logits, bias, k=cfg["k"], scoring=cfg["scoring"], n_group=cfg["n_group"],
                          topk_group=cfg["topk_group"], group_score=cfg.get("group_score", "max"), post="none",
                          norm=cfg["norm"], norm_eps=0.0, scale=cfg["scale"], capacity=0)
    profile.mark("routing")  # (the router matmul and the route kernel; per-stage timing only)
    # the shared experts (bf16, every token: moe_shared), added by the combine
    sh = rt.moe_shared(x, shared[0], shared[1]) if shared is not None else None
    # what the generated launcher calls: the combine fused into the down projection where order-free (k <= 2)
    return rt.moe_experts_combine(x, ids, w_in, w_out, shared=sh, w=w, weighted=False, rw=w.to(x.dtype),
                                  weights_at="output",
                                  cfg=tuned, wq=wq, q=q, wq_group=INT4_GROUP if wq == "int4" else 0,
                                  act_quant=act_quant)


# --variants: each row also timed with one kernel variant changed from the row's tile configuration
def variant_configs(cfg: dict) -> Dict[str, dict]:
    """{name: configuration}: the row's configuration with swap-AB flipped in both projections, persistent
    kernels on (1 program per SM) or off, and TMA flipped (runtime.variants' defaults resolved first)."""
    from moec.codegen.triton import runtime as rt
    v1, v2 = rt.variants(cfg, 1), rt.variants(cfg, 2)
    on = bool(v1["PERSISTENT"] or v2["PERSISTENT"])
    return {
        "swap_ab " + ("off" if v1["SWAP_AB"] else "on"): dict(cfg, SWAP_AB1=int(not v1["SWAP_AB"]),
                                                                SWAP_AB2=int(not v2["SWAP_AB"])),
        "persistent " + ("off" if on else "on"): dict(cfg, PERSISTENT1=0 if on else 1, PERSISTENT2=0 if on else 1),
        "tma " + ("off" if v1["TMA"] else "on"): dict(cfg, TMA=int(not v1["TMA"])),
    }


def graph_time(fn: Callable, host, reps: int, warmup: int):
    """(ms of fn replayed as one CUDA graph, None) or (None, why not): decode's launch overhead removed."""
    from moec.codegen.triton.graphs import GraphRunner, unavailable
    why = unavailable(host.device)
    if why:
        return None, why
    g = GraphRunner(lambda _inputs: [fn()])
    try:
        g([])
        return _time(lambda: g([]), host, reps, warmup) * 1e3, None
    except Exception as e:  # noqa: BLE001 - report, do not hide
        return None, f"capture failed: {str(e).splitlines()[0][:200]}"


def run_triton_bench(layers: Sequence[str], tokens: Sequence[int], outdir: str, reps: int = 20,
                     peers: Sequence[str] = ("eager", "compile", "dense"), autotune="all",
                     compile_budget_s: float = 240.0, weights: str = "bf16", smoke: bool = False,
                     warmup: int = 3, activations: str = "bf16", variants: bool = False,
                     cuda_graphs: bool = False) -> dict:
    """The bench (see the module docstring); writes bench_triton.json and bench_triton.txt (the table) into
    outdir.  smoke: allowed on the CPU under Triton's interpreter (small layers: the caller's choice)."""
    import time

    import torch
    from moec.codegen.triton import runtime as rt
    from moec.codegen.triton import tuning
    from moec.errors import UserInputError
    if weights not in BENCH_WEIGHTS:
        raise UserInputError(f"moec bench --target triton: --weights {weights} is not benchmarked on the GPU "
                             f"(choose {', '.join(BENCH_WEIGHTS)})")
    if activations not in ("bf16", "fp8") or (activations == "fp8" and weights != "fp8"):
        raise UserInputError(f"moec bench --target triton: --activations {activations} with --weights {weights} "
                             "(fp8 activations go with fp8 weights: w8a8)")
    act_quant = "fp8" if activations == "fp8" else "none"
    unknown = [n for n in layers if n not in LAYERS]
    if unknown:
        raise UserInputError(f"moec bench --target triton: unknown layer {unknown[0]!r} (choose {', '.join(LAYERS)})")
    host = profile.host_for(rt.DEVICE)
    if not host.available() or (host is not _Host and not smoke):
        raise RuntimeError("moec bench --target triton needs a CUDA GPU (the interpreter is for --smoke and tests, "
                           "not timing)")
    if weights == "fp8":
        from moec.targets.description import detect_triton_target
        from moec.targets.triton_backend import check_fp8_support
        check_fp8_support(detect_triton_target(), "fp8")
    os.makedirs(outdir, exist_ok=True)
    peak = probes(host) if host is _Host else probes(host, n=256, copy_bytes=1 << 22)
    report = {"gpu": host.name(), "device": host.device, "smoke": bool(smoke), "dtype": "bf16",
              "weights": "bf16" if weights == "f32" else weights, "activations": activations, "probes": peak,
              "stages": list(profile.STAGES), "layers": {}}
    for name in layers:
        cfg = LAYERS[name]
        D, F, E, k = cfg["D"], cfg["F"], cfg["E"], cfg["k"]
        w_router, w_in, w_out, bias = make_layer(cfg, device=host.device)
        shared = make_shared(cfg, device=host.device)
        mw_in, mw_out, wq, q = quantize_layer(w_in, w_out, weights)
        wq_key = "fp8a8" if act_quant == "fp8" else wq  # (the tile files' key: w8a8 has its own)
        compiled = torch.compile(eager_layer) if "compile" in peers else None
        compile_spent = 0.0
        rows = []
        for T in tokens:
            x = torch.randn(T, D, device=host.device, dtype=torch.bfloat16)
            tuned = None
            if autotune is True or autotune == "all" or (autotune == "decode" and T * k <= 2 * E):
                p = dict(T=T, D=D, F=F, E=E, k=k, dtype=str(x.dtype), wq=wq_key)
                logits = x.float() @ w_router
                w, ids = torch_route(logits, cfg, bias)
                tuned = tuning.autotune("moe", p, lambda c: rt.moe_experts_combine(
                    x, ids, mw_in, mw_out, w=w, weighted=False, rw=w.to(x.dtype), weights_at="output", cfg=c, wq=wq,
                    q=q, wq_group=INT4_GROUP if wq == "int4" else 0, act_quant=act_quant), reps=5)
            got = moec_layer(x, w_router, mw_in, mw_out, bias, cfg, tuned, wq, q, act_quant, shared)
            want = eager_layer(x, w_router, w_in, w_out, bias, cfg, shared)
            err = float((got.float() - want.float()).norm() / want.float().norm())
            p = dict(T=T, D=D, F=F, E=E, k=k, dtype=str(x.dtype), wq=wq_key)
            row = {"tokens": T, "rel_err_vs_eager": err, "ms": {},
                   "tile_config": tuned or tuning.config_for("moe", p),
                   "tile_source": "autotuned" if tuned else tuning.source_of("moe", p),
                   "combine_fused": rt.fuse_combine(k)}

            def run_moec(tiles=tuned):
                return moec_layer(x, w_router, mw_in, mw_out, bias, cfg, tiles, wq, q, act_quant, shared)
            row["ms"]["moec"] = _time(run_moec, host, reps, warmup) * 1e3
            row["ms_stages"] = profile.time_stages(run_moec, host, reps, min(1, warmup))
            if cuda_graphs:  # the whole layer (router GEMV .. combine) captured and replayed as one graph
                row["ms_cuda_graph"], why = graph_time(run_moec, host, reps, warmup)
                if why:
                    row["cuda_graph_skipped"] = why
            if variants:
                row["ms_variants"] = {}
                for vname, vcfg in variant_configs(row["tile_config"]).items():
                    try:
                        vgot = run_moec(vcfg)
                        verr = float((vgot.float() - got.float()).norm() / got.float().norm().clamp_min(1e-30))
                        row["ms_variants"][vname] = {"ms": _time(lambda: run_moec(vcfg), host, reps, warmup) * 1e3,
                                                     "rel_diff": verr}
                    except Exception as e:  # noqa: BLE001 - a variant that fails is reported, not hidden
                        row["ms_variants"][vname] = {"error": str(e).splitlines()[0][:200]}
            row["ms"]["eager"] = _time(lambda: eager_layer(x, w_router, w_in, w_out, bias, cfg, shared), host, reps,
                                       warmup) * 1e3
            if compiled is not None:
                if compile_spent < compile_budget_s:
                    t0 = time.perf_counter()
                    try:
                        compiled(x, w_router, w_in, w_out, bias, cfg, shared)
                        host.sync()
                        compile_spent += time.perf_counter() - t0
                        row["ms"]["torch.compile"] = _time(
                            lambda: compiled(x, w_router, w_in, w_out, bias, cfg, shared), host, reps, warmup) * 1e3
                    except Exception as e:  # noqa: BLE001 - report, do not hide
                        row["torch.compile_error"] = str(e).splitlines()[0][:200]
                else:
                    row["torch.compile_skipped"] = f"compile budget {compile_budget_s:.0f}s spent"
            if "dense" in peers:
                need = E * T * 2 * F * 2 * 2
                if need < 0.5 * host.free_bytes():
                    row["ms"]["dense bmm"] = _time(lambda: dense_layer(x, w_router, w_in, w_out, bias, cfg, shared), host,
                                                   reps, warmup) * 1e3
                else:
                    row["dense_skipped"] = f"needs {need / 1e9:.0f} GB of activations"
            n_sh = cfg.get("shared", 0)
            flops = 2 * T * (k + n_sh) * (2 * F * D + D * F)  # (the shared experts run on every token)
            touched = min(E, T * k)
            # the touched experts' weights as stored (packed codes and their scales), each read once
            per_expert = sum(t.numel() * t.element_size() for t in (mw_in, mw_out, *q) if t is not None) / E
            bytes_ = touched * per_expert + (sum(t.numel() * t.element_size() for t in shared) if shared else 0)
            t = row["ms"]["moec"] / 1e3
            row["moec_tflops"] = flops / t / 1e12
            row["moec_tbps_weights"] = bytes_ / t / 1e12
            row["frac_matmul_peak"] = row["moec_tflops"] / peak["bf16_matmul_tflops"]
            row["frac_copy_bw"] = row["moec_tbps_weights"] / peak["copy_tbps"]
            row["speedup"] = {p: v / row["ms"]["moec"] for p, v in row["ms"].items() if p != "moec"}
            rows.append(row)
            print(json.dumps({"layer": name, **row}), flush=True)
        report["layers"][name] = {"shape": cfg, "rows": rows}
        w_in = w_out = mw_in = mw_out = q = None  # free the layer's weights before the next
        host.empty_cache()
    with open(os.path.join(outdir, "bench_triton.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(outdir, "bench_triton.txt"), "w") as f:
        f.write(format_table(report) + "\n")
    return report


def format_table(report: dict) -> str:
    p = report["probes"]
    lines = [f"moec bench --target triton on {report['gpu']} (bf16, moec weights {report.get('weights', 'bf16')}, "
             f"activations {report.get('activations', 'bf16')}; "
             f"probes: matmul {p['bf16_matmul_tflops']:.1f} "
             f"TFLOP/s, copy {p['copy_tbps']:.2f} TB/s)"]
    if report.get("smoke"):
        lines.append("smoke run: small layers; on the interpreter the times say nothing about a GPU")
    stages = report.get("stages", list(profile.STAGES))
    for name, L in report["layers"].items():
        lines.append(f"{name}: {L['shape']}")
        lines.append(f"{'tokens':>7} {'moec ms':>9} {'eager x':>8} {'compile x':>10} {'dense x':>8} "
                     f"{'TFLOP/s':>8} {'%peak':>6} {'TB/s':>6} {'%bw':>5} | ms per stage: "
                     + " ".join(f"{st:>8}" for st in stages))
        for r in L["rows"]:
            s = r["speedup"]

            def f(key):
                return f"{s[key]:.2f}" if key in s else "-"
            ms = r.get("ms_stages", {})
            lines.append(f"{r['tokens']:>7} {r['ms']['moec']:>9.3f} {f('eager'):>8} {f('torch.compile'):>10} "
                         f"{f('dense bmm'):>8} {r['moec_tflops']:>8.1f} {100 * r['frac_matmul_peak']:>5.0f}% "
                         f"{r['moec_tbps_weights']:>6.2f} {100 * r['frac_copy_bw']:>4.0f}% |               "
                         + " ".join(f"{ms[st]:>8.3f}" if st in ms else f"{'-':>8}" for st in stages))
        extra = [r for r in L["rows"] if r.get("ms_variants") or "ms_cuda_graph" in r or "cuda_graph_skipped" in r]
        for r in extra:
            parts = []
            if r.get("ms_cuda_graph") is not None:
                parts.append(f"cuda graph {r['ms_cuda_graph']:.3f} ms")
            elif r.get("cuda_graph_skipped"):
                parts.append(f"cuda graph: {r['cuda_graph_skipped']}")
            for vname, v in (r.get("ms_variants") or {}).items():
                parts.append(f"{vname} {v['ms']:.3f} ms" if "ms" in v else f"{vname}: {v['error']}")
            lines.append(f"{r['tokens']:>7} variants: " + "; ".join(parts))
    lines.append("speedup = peer time / moec time (above 1: moec is faster); stages from a separate pass with "
                 "events between the stages (combine fused into gemm2 where the row says combine_fused)")
    return "\n".join(lines)


def main(argv: List[str] = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m moec.bench_triton")
    ap.add_argument("--layers", default="mixtral,deepseek")
    ap.add_argument("--tokens", default="1,16,128,1024,4096")
    ap.add_argument("-o", "--output", default="moec_bench_triton")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--autotune", default="all", choices=["all", "decode", "none"],
                    help="measure tile configurations first for every token count, only for decode (T*k <= 2E), "
                         "or use the shipped defaults / generic rule")
    ap.add_argument("--compile-budget", type=float, default=240.0, help="seconds torch.compile may spend in all")
    ap.add_argument("--weights", default="bf16", choices=BENCH_WEIGHTS)
    ap.add_argument("--activations", default="bf16", choices=["bf16", "fp8"],
                    help="fp8 (with --weights fp8): w8a8, per-token dynamic e4m3 activation scales, fp8 x fp8 dots")
    ap.add_argument("--variants", action="store_true", help="also time each row with swap-AB, persistent and TMA "
                    "flipped from its tile configuration")
    ap.add_argument("--cuda-graphs", action="store_true", help="also time each row replayed as one CUDA graph")
    ap.add_argument("--smoke", action="store_true",
                    help=f"small layers ({', '.join(SMOKE_LAYERS)}) at {SMOKE_TOKENS} tokens, one run each, no "
                         "torch.compile, no autotuning; runs on the CPU under Triton's interpreter")
    a = ap.parse_args(argv)
    if a.smoke:
        rep = run_triton_bench(list(SMOKE_LAYERS), list(SMOKE_TOKENS), a.output, 1, ("eager", "dense"),
                               autotune="none", weights=a.weights, smoke=True, warmup=0, activations=a.activations,
                               variants=a.variants, cuda_graphs=a.cuda_graphs)
    else:
        peers = ("eager", "dense") if a.no_compile else ("eager", "compile", "dense")
        rep = run_triton_bench(a.layers.split(","), [int(t) for t in a.tokens.split(",")], a.output, a.reps, peers,
                               autotune=a.autotune, compile_budget_s=a.compile_budget, weights=a.weights,
                               activations=a.activations, variants=a.variants, cuda_graphs=a.cuda_graphs)
    print(format_table(rep))
    print(f"wrote {os.path.join(a.output, 'bench_triton.json')} and bench_triton.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__: Dict = {}
