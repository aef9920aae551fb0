"""One JSON and one table from a benchmarks/run_gpu.sh run (issue 21's measurement).

    python benchmarks/issue21_report.py OUTDIR

reads what the run's steps left in OUTDIR (steps.tsv: step, exit status, seconds; bf16/, fp8/, int4/:
`moec bench --target triton` reports; tune/*.json: the tile search) and writes OUTDIR/issue21.json and
OUTDIR/issue21.txt: every bench table (per-stage times included) and issue 21's targets, each as
"met", "missed" or "not measured" with the reason.  Ratios are against probes and peers measured in
the same run on the same GPU.
"""
from __future__ import annotations

import glob
import json
import os
import sys


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _row(rep, layer, T):
    if not rep:
        return None
    for r in rep.get("layers", {}).get(layer, {}).get("rows", []):
        if r["tokens"] == T:
            return r
    return None


def targets(bf16, fp8) -> list:
    """Issue 21's performance targets against the bf16 bench (and fp8), in the same run."""
    out = []
    gpu = bf16["gpu"] if bf16 else None

    def add(name, want, got, ok, how):
        out.append({"target": name, "want": want, "got": got,
                    "status": "not measured" if got is None else ("met" if ok else "missed"), "how": how})

    if bf16 and bf16.get("smoke"):
        note = "smoke run on the interpreter: not a measurement"
        for name in ("mixtral 4096 tokens", "mixtral 1024 tokens", "mixtral 1 token", "mixtral 16-128 tokens",
                     "deepseek 4096 tokens", "fp8 w8a8 4096 tokens"):
            out.append({"target": name, "status": "not measured", "how": note})
        return out
    if not bf16:
        return [{"target": "all", "status": "not measured", "how": "no bf16 bench report (see steps)"}]
    r = _row(bf16, "mixtral", 4096)
    add("mixtral 4096 tokens: >= 70% of the bf16 matmul probe and >= 1.3x eager", ">= 0.70, >= 1.3x",
        None if r is None else {"frac_matmul_probe": r["frac_matmul_peak"], "x_eager": r["speedup"].get("eager"),
                                "x_compile": r["speedup"].get("torch.compile")},
        r is not None and r["frac_matmul_peak"] >= 0.70 and r["speedup"].get("eager", 0) >= 1.3,
        "useful FLOPs of the k selected experts / moec time, against the 8192^3 bf16 matmul probe")
    r = _row(bf16, "mixtral", 1024)
    add("mixtral 1024 tokens: >= 60% of the matmul probe", ">= 0.60",
        None if r is None else {"frac_matmul_probe": r["frac_matmul_peak"], "x_eager": r["speedup"].get("eager")},
        r is not None and r["frac_matmul_peak"] >= 0.60, "as above")
    r = _row(bf16, "mixtral", 1)
    add("mixtral 1 token: >= 70% of the copy bandwidth for the selected experts' bytes", ">= 0.70",
        None if r is None else {"frac_copy_bw": r["frac_copy_bw"], "ms": r["ms"]["moec"]},
        r is not None and r["frac_copy_bw"] >= 0.70, "bytes of the touched experts' weights / moec time vs copy probe")
    rows = [x for x in (_row(bf16, "mixtral", T) for T in (16, 128)) if x]
    add("mixtral 16-128 tokens: >= 60% of the copy bandwidth", ">= 0.60",
        {str(x["tokens"]): x["frac_copy_bw"] for x in rows} or None,
        bool(rows) and all(x["frac_copy_bw"] >= 0.60 for x in rows), "as above, at 16 and 128 tokens")
    r = _row(bf16, "deepseek", 4096)
    if r is not None:
        t = r["ms"]["moec"] / 1e3
        flops, bytes_ = r["moec_tflops"] * 1e12 * t, r["moec_tbps_weights"] * 1e12 * t
        p = bf16["probes"]
        t_bytes, t_flops = bytes_ / (p["copy_tbps"] * 1e12), flops / (p["bf16_matmul_tflops"] * 1e12)
        bound = max(t_bytes, t_flops)
        got = {"x_eager": r["speedup"].get("eager"), "bound_bytes_ms": t_bytes * 1e3, "bound_flops_ms": t_flops * 1e3,
               "frac_of_bound": bound / t, "moec_ms": r["ms"]["moec"]}
        ok = r["speedup"].get("eager", 0) >= 5 and bound / t >= 0.85
    else:
        got, ok = None, False
    add("deepseek 4096 tokens: >= 5x eager and >= 85% of max(bytes / copy bw, FLOPs / matmul probe)",
        ">= 5x, >= 0.85", got, ok, "the bench's DeepSeek-V3-shaped layer with its one shared expert (bf16, every token: in the FLOPs and bytes)")
    r8, r16 = _row(fp8, "mixtral", 4096), _row(bf16, "mixtral", 4096)
    w8a8 = bool(fp8) and fp8.get("weights") == "fp8" and fp8.get("activations") == "fp8"
    add("fp8 w8a8 4096 tokens: >= 1.6x moec's bf16", ">= 1.6x",
        None if not (r8 and r16 and w8a8) else {"x_bf16": r16["ms"]["moec"] / r8["ms"]["moec"],
                                                "ms_w8a8": r8["ms"]["moec"], "ms_bf16": r16["ms"]["moec"],
                                                "rel_err_vs_bf16_eager": r8["rel_err_vs_eager"]},
        bool(r8 and r16 and w8a8) and r16["ms"]["moec"] / r8["ms"]["moec"] >= 1.6,
        "the Mixtral-shaped layer, fp8 weights and per-token fp8 activations (fp8 x fp8 wgmma), vs the bf16 run's "
        "moec time" + ("" if w8a8 or not fp8 else "; the fp8 report is not w8a8"))
    for o in out:
        o["gpu"] = gpu
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    outdir = argv[0] if argv else "gpu_out"
    from moec.bench_triton import format_table
    steps = []
    try:
        with open(os.path.join(outdir, "steps.tsv")) as f:
            for line in f:
                name, rc, secs, limit = line.rstrip("\n").split("\t")
                steps.append({"step": name, "rc": int(rc), "seconds": int(secs), "limit": int(limit)})
    except OSError:
        pass
    benches = {k: _load(os.path.join(outdir, k, "bench_triton.json"))
               for k in ("bf16", "variants", "fp8", "int4", "smoke")}
    bf16 = benches["bf16"] or benches["smoke"]
    tune = {}
    for path in sorted(glob.glob(os.path.join(outdir, "tune", "*.json"))):
        if not path.endswith(".search.json"):
            tune[os.path.basename(path)] = _load(path)
    report = {"gpu": (bf16 or {}).get("gpu"), "steps": steps, "targets": targets(bf16, benches["fp8"]),
              "bench": {k: v for k, v in benches.items() if v}, "tile_search": tune}
    with open(os.path.join(outdir, "issue21.json"), "w") as f:
        json.dump(report, f, indent=1)
    lines = [f"issue 21 measurement on {report['gpu']}", ""]
    lines += [f"step {s['step']:<12} rc {s['rc']:>3} {s['seconds']:>4} s (limit {s['limit']} s)" for s in steps]
    lines.append("")
    for t in report["targets"]:
        got = json.dumps(t.get("got")) if t.get("got") is not None else ""
        lines.append(f"[{t['status']:>12}] {t['target']} {got}")
        if t["status"] == "not measured" or t.get("how"):
            lines.append(f"{'':>15}{t.get('how', '')}")
    for k, v in report["bench"].items():
        lines += ["", f"== bench: {k}", format_table(v)]
    for name, data in tune.items():
        ms = sorted((int(m) for m in (data or {}) if m.isdigit()))
        lines += ["", f"== tile search: {name}: token counts {ms}"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "issue21.txt"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
