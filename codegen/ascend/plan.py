"""Placement, tiling and the cost model for the Ascend target.

make_plan(module, target) decides, op by op, what runs as an AscendC kernel on the NPU and what
stays on the host (reported), picks each kernel's reduction tile by the cost model, and estimates
every kernel's time on the SoC from the hardware table (ESTIMATES: no NPU was measured).

Cost model (per kernel, per token count T):
  vector time  = element operations / (AIV cores used * 64 f32 lanes * clock)   (256 B per repeat)
  HBM time     = bytes moved / HBM bandwidth (weights of the experts touched, read once, plus rows)
  copy issue   = DataCopy calls * 0.5 us / cores used (per-instruction setup of the MTE queues)
  estimate     = max(vector, HBM) + copy issue + 5 us launch
The roofline bound named is whichever of vector / HBM is larger.  For the expert FFN the model also
reports what the cube path (not emitted yet) would be bounded by: FLOPs / fp16 cube peak vs HBM.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from ...ir import Module
from ...ir.opdef import const_value
from ...targets.description import TargetDesc

CLOCK_HZ = 1.8e9
LANES_F32 = 64            # 256 B per vector repeat
COPY_ISSUE_S = 0.5e-6
LAUNCH_S = 5e-6
NPU_OPS = ("moe.route", "moe.dispatch", "moe.experts", "moe.shared_experts", "moe.combine", "moec.matmul",
           "moec.gemm")


def _hw(desc: TargetDesc) -> dict:
    return {"aiv": int(desc.get("aiv_cores", 48)), "aic": int(desc.cores), "hbm": float(desc.get("hbm_gbps", 1600)) * 1e9,
            "cube_f16": float(desc.get("fp16_tflops", 354)) * 1e12, "ub": int(desc.get("ub_bytes", 192 * 1024))}


def _why_host(m: Module, o) -> Optional[str]:
    f32 = all(v.type.dtype.mlir in ("f32", "i64") for v in o.operands)
    if o.name not in NPU_OPS:
        return f"no AscendC kernel for {o.name} yet"
    if not f32:
        return "only f32 kernels are emitted for the Ascend target so far"
    if o.name == "moe.experts" and o.attrs.get("wq", "none") != "none":
        return "quantised weights are not implemented on the Ascend target yet"
    if o.name in ("moec.matmul", "moec.gemm"):
        a, b = o.operands[0].type, o.operands[1].type
        if a.rank != 2 or b.rank != 2 or const_value(o.operands[1], m.weights) is None:
            return "only 2-D matmuls with a constant right operand run on the NPU"
        if o.name == "moec.gemm" and o.attrs["trans_a"]:
            return "transposed left operand"
    if o.name == "moe.route" and o.attrs["n_group"] > 32:
        return "more than 32 expert groups"
    return None


def kernel_estimate(kind: str, desc: TargetDesc, T: int, sizes: dict, kt: int) -> dict:
    hw = _hw(desc)
    D, F, I, E, k = (sizes.get(x, 0) for x in ("D", "F", "I", "E", "k"))
    if kind == "moe_expert_ffn":
        rows = T * k
        touched = min(E, rows)
        macs = rows * (I * D + D * F)
        ops = 2 * macs + rows * F * 8                       # Mul + ReduceSum per element, activation
        bytes_ = touched * (I * D + D * F) * 4 + rows * 2 * D * 4
        copies = rows * (I * -(-D // kt) + D * -(-F // kt)) + 2 * rows
        cores = min(hw["aiv"], max(rows, 1))
        flops = 2 * macs
    elif kind == "moe_gating":
        ops, bytes_, copies, cores, flops = T * E * 12, T * (E + 2 * k) * 4, 3 * T, min(hw["aiv"], max(T, 1)), 0
    elif kind == "moe_init_routing":
        ops, bytes_, copies, cores, flops = T * k * 64 * 4, T * k * 12, 0, 1, 0   # scalar loop on one core
    elif kind == "moe_finalize":
        ops, bytes_, copies, cores, flops = T * k * D * 2, T * (k + 1) * D * 4, T * (k + 2), min(hw["aiv"], max(T, 1)), 0
    else:  # matmul_rows
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
        if kind == "moe_expert_ffn":
            t_cube = max(flops / hw["cube_f16"], t_hbm) + LAUNCH_S
            est["cube_path_bound_us"] = round(t_cube * 1e6, 2)
            est["cube_path_bound"] = "cube" if flops / hw["cube_f16"] >= t_hbm else "HBM"
    return est


def choose_kt(kind: str, desc: TargetDesc, sizes: dict, n: int) -> int:
    """Reduction tile: the cost model's best of the tiles that fit the Unified Buffer."""
    hw = _hw(desc)
    best, best_t = 8, float("inf")
    for kt in sorted({min(c, max(8, (n + 7) // 8 * 8)) for c in (256, 512, 1024, 2048, 4096)}):
        # queue (2 buffers) + product + reduce scratch of kt floats, plus rows of up to 4 * max(D, F)
        need = 4 * kt * 4 + 64 + 6 * 4 * max(sizes.get("D", 0), sizes.get("F", 0), sizes.get("Kd", 0), sizes.get("I", 0))
        if need > hw["ub"]:
            continue
        t = kernel_estimate(kind, desc, 64, sizes, kt)["estimate_us"]
        if t < best_t:
            best, best_t = kt, t
    return min(best, max(8, (n + 7) // 8 * 8))


def make_plan(m: Module, desc: TargetDesc, tokens=(1, 256)) -> dict:
    f = m.main
    steps: List[dict] = []
    host: Dict[str, str] = {}
    estimates: List[dict] = []
    for o in f.ops:
        if o.name == "moec.constant":
            steps.append({"op": o.name, "where": "const"})
            continue
        why = _why_host(m, o)
        if why:
            steps.append({"op": o.name, "where": "host", "why": why})
            host[o.name] = why
            continue
        step = {"op": o.name, "where": "npu", "loc": o.loc}
        if o.name in ("moe.experts", "moe.shared_experts"):
            w_in, w_out = o.operands[1 if o.name == "moe.shared_experts" else 4].type, \
                o.operands[2 if o.name == "moe.shared_experts" else 5].type
            E, I, D = w_in.shape
            F = w_out.shape[2]
            k = E if o.name == "moe.shared_experts" else o.operands[1].type.shape[1]
            sizes = {"D": D, "F": F, "I": I, "E": E, "k": k}
            step["kt"] = choose_kt("moe_expert_ffn", desc, sizes, max(D, F))
            step["kernels"] = ["moe_expert_ffn"] + (["moe_finalize"] if o.name == "moe.shared_experts" else [])
            step["estimates"] = [kernel_estimate("moe_expert_ffn", desc, T, sizes, step["kt"]) for T in tokens]
        elif o.name in ("moec.matmul", "moec.gemm"):
            a, b = o.operands[0].type, o.operands[1].type
            Kd = a.shape[1]
            N = b.shape[0] if o.name == "moec.gemm" and o.attrs["trans_b"] else b.shape[1]
            sizes = {"M": 1, "N": N, "Kd": Kd}
            step["kt"] = choose_kt("matmul_rows", desc, sizes, Kd)
            step["kernels"] = ["matmul_rows"]
            step["estimates"] = [kernel_estimate("matmul_rows", desc, T, dict(sizes, M=T), step["kt"]) for T in tokens]
        elif o.name == "moe.route":
            E = o.operands[0].type.shape[1]
            sizes = {"E": E, "k": o.attrs["k"]}
            step["kernels"] = ["moe_gating"] + (["moe_init_routing"] if o.attrs["capacity"] else [])
            step["estimates"] = [kernel_estimate("moe_gating", desc, T, sizes, 8) for T in tokens]
        elif o.name == "moe.dispatch":
            sizes = {"E": o.attrs["num_experts"], "k": o.operands[0].type.shape[1]}
            step["kernels"] = ["moe_init_routing"]
            step["estimates"] = [kernel_estimate("moe_init_routing", desc, T, sizes, 8) for T in tokens]
        elif o.name == "moe.combine":
            y = o.result.type
            sizes = {"D": y.shape[1], "k": o.operands[0].type.shape[1]}
            step["kernels"] = ["moe_finalize"]
            step["estimates"] = [kernel_estimate("moe_finalize", desc, T, sizes, 8) for T in tokens]
        estimates.extend(step.get("estimates", []))
        steps.append(step)
    return {"soc": desc.arch, "steps": steps, "host_ops": host, "estimates_are": "estimates from the hardware "
            "table (cost model in codegen/ascend/plan.py); no NPU was measured", "estimates": estimates}
