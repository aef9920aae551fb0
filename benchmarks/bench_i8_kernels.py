"""The int8-activation GEMM tiles alone (tile_i8: w8a8, tile_w4a8: w4a8) against torch._int_mm and the VNNI ceiling.

Builds benchmarks/bench_narrow_tiles.c (its `gemm` mode) against one or more copies of the C runtime and runs,
interleaved in one process tree: each build's tiles over [M,K]x[K,N] on T threads (column panels split between
threads, the panels packed beforehand as the compiled weights are), a pure vpdpbusd loop of the same instruction
count on the same threads (the ceiling), and torch._int_mm on the same shape and threads (oneDNN, issue 17's int8
probe).  Medians of the repeats, each repeat the best of 20 calls; on a shared host compare within one run only.

    python benchmarks/bench_i8_kernels.py                                    # this checkout's runtime
    python benchmarks/bench_i8_kernels.py --runtime base=/work/main/codegen/c/runtime --runtime new=codegen/c/runtime
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# the 2-layer Mixtral of issue 17 at N = 256 tokens: the experts' phases (about 64 rows per expert), the dense
# projections (every token)
SHAPES = [(64, 1024, 5632), (64, 2816, 1024), (256, 1024, 1024)]


def build(runtime, out):
    sys.path.insert(0, ROOT)
    from moec.targets.description import host_cpu
    srcs = [os.path.join(runtime, f) for f in sorted(os.listdir(runtime)) if f.endswith(".c") and f != "rt_moe_f32.c"]
    cmd = ["gcc", "-O2", "-std=gnu11", "-fno-strict-aliasing", "-fno-math-errno", "-pthread", *host_cpu().cflags,
           "-I" + runtime, os.path.join(HERE, "bench_narrow_tiles.c"), *srcs, "-lm", "-o", out]
    subprocess.run(cmd, check=True)


def int_mm(M, K, N, T, calls=20):
    import torch
    torch.set_num_threads(T)
    a = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    b = torch.randint(-127, 128, (K, N), dtype=torch.int8)
    torch._int_mm(a, b)
    best = 1e9
    for _ in range(calls):
        t0 = time.perf_counter()
        torch._int_mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * M * N * K / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtime", action="append", default=[], help="NAME=DIR of a C runtime (default: this checkout's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES), help="MxKxN,...")
    a = ap.parse_args()
    runtimes = [r.split("=", 1) for r in a.runtime] or [["this", os.path.join(ROOT, "codegen", "c", "runtime")]]
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench_i8_")
    bins = {}
    for name, d in runtimes:
        bins[name] = os.path.join(tmp, "bnt_" + re.sub(r"\W", "_", name))
        build(d, bins[name])
    res = {}  # (shape, what) -> [GOP/s]
    for _ in range(a.repeats):
        for s in shapes:
            M, K, N = s
            for name, b in bins.items():
                out = subprocess.run([b, "gemm", str(M), str(K), str(N), str(a.threads), str(a.group)], check=True,
                                     capture_output=True, text=True).stdout
                g = dict(re.findall(r"(tile_i8|tile_w4a8|vpdpbusd_peak) ([\d.]+)", out))
                for k, v in g.items():
                    res.setdefault((s, k if k == "vpdpbusd_peak" else f"{name} {k}"), []).append(float(v))
            res.setdefault((s, "torch._int_mm"), []).append(int_mm(M, K, N, a.threads))
    print(f"{a.threads} threads, w4a8 group {a.group}, medians of {a.repeats} interleaved repeats (GOP/s; "
          f"fraction of the vpdpbusd loop / of torch._int_mm in the same repeats)")
    for s in shapes:
        peak = statistics.median(res[(s, "vpdpbusd_peak")])
        mm = statistics.median(res[(s, "torch._int_mm")])
        print(f"M={s[0]} K={s[1]} N={s[2]}: vpdpbusd loop {peak:.0f}, torch._int_mm {mm:.0f} ({mm / peak:.0%} of the loop)")
        for (sh, k), v in res.items():
            if sh == s and k not in ("vpdpbusd_peak", "torch._int_mm"):
                m = statistics.median(v)
                print(f"  {k:28s} {m:7.1f}  {m / peak:5.0%} of the loop  {m / mm:5.0%} of _int_mm")


if __name__ == "__main__":
    main()
