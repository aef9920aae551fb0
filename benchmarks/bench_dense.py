"""A plain dense MatMul, moec against onnxruntime in the same run (issue 17 item 1).

    python benchmarks/bench_dense.py [--tokens 1,8,64,256] [--k 1024] [--n 32000] [--threads 2]
                                     [--repeats 15] [--gemm] [--json OUT.json]

Builds Y = X @ W (X [T, K] an input, W [K, N] an initializer; with --gemm a Gemm with transB = 1 and
a bias, as nn.Linear exports), compiles it with moec (verified against onnxruntime once), and times
moec's artifact and an onnxruntime session on the same inputs, interleaved (one moec call, one
onnxruntime call, repeated), both with the same thread count.  Prints per T the medians and the
median of the per-pair ratios moec/ort (below 1: moec faster).  The machines these run on are shared:
take the ratio of one run, not absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def build_model(K: int, N: int, gemm: bool, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((N, K) if gemm else (K, N)) / np.sqrt(K)).astype(np.float32)
    inits = [numpy_helper.from_array(W, "W")]
    if gemm:
        inits.append(numpy_helper.from_array((rng.standard_normal(N) / 10).astype(np.float32), "b"))
        node = helper.make_node("Gemm", ["X", "W", "b"], ["Y"], transB=1)
    else:
        node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    g = helper.make_graph([node], "dense", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", N])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], producer_name="bench_dense")
    m.ir_version = 10
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1,8,64,256")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--gemm", action="store_true", help="Gemm(X, W, b, transB=1) instead of MatMul(X, W)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    from moec.driver import CompileOptions, compile_onnx
    from moec.targets.registry import CpuArtifact

    tokens = [int(t) for t in args.tokens.split(",")]
    model = build_model(args.k, args.n, args.gemm)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dense.onnx")
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        out = os.path.join(tmp, "art")
        t0 = time.perf_counter()
        res = compile_onnx(path, out, CompileOptions(threads=args.threads, symbol_sizes=(3, 1)))
        print(f"compiled in {time.perf_counter() - t0:.1f} s, verified: {res.report['verified']} "
              f"(max abs err {res.report['max_abs_err']})", flush=True)
        art = CpuArtifact(out, threads=args.threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        rows = []
        for T in tokens:
            x = np.random.default_rng(T).standard_normal((T, args.k)).astype(np.float32)
            want = sess.run(None, {"X": x})[0]
            got = art([x])[0]
            err = float(np.abs(got - want).max())
            for _ in range(2):  # warm both
                art([x]); sess.run(None, {"X": x})
            tm, to, ratios = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter(); art([x]); a = time.perf_counter() - t0
                t0 = time.perf_counter(); sess.run(None, {"X": x}); b = time.perf_counter() - t0
                tm.append(a); to.append(b); ratios.append(a / b)
            flops = 2.0 * T * args.k * args.n
            row = {"T": T, "moec_ms": statistics.median(tm) * 1e3, "ort_ms": statistics.median(to) * 1e3,
                   "ratio": statistics.median(ratios), "max_abs_err_vs_ort": err,
                   "moec_gflops": flops / statistics.median(tm) / 1e9}
            rows.append(row)
            print(f"T={T:5d}  moec {row['moec_ms']:8.2f} ms  ort {row['ort_ms']:8.2f} ms  moec/ort "
                  f"{row['ratio']:.2f}x  ({row['moec_gflops']:.0f} GFLOP/s; max |moec - ort| {err:.2e})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"k": args.k, "n": args.n, "threads": args.threads, "gemm": args.gemm, "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
