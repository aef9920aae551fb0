"""A plain dense MatMul, moec against onnxruntime in the same run (issue 17 items 1 and 3).

    python benchmarks/bench_dense.py [--tokens 1,8,64,256] [--k 1024] [--n 32000] [--threads 2]
                                     [--repeats 15] [--gemm] [--weights f32,bf16,int8,int4,w8a8]
                                     [--group 64] [--json OUT.json]

``--weights``: moec's weight formats for the layer (``--weights`` applies to every linear layer);
each is timed against onnxruntime f32 and, where onnxruntime has the like, against onnxruntime's own
quantised form of the same model in the same run: int4 vs ``MatMulNBits`` (4 bits, block = --group,
symmetric, accuracy level 4 i.e. int8 activations where MLAS has them), w8a8 and int8 vs
``quantize_dynamic`` (int8 weights per channel, dynamic int8 activations: MatMulInteger).
Times are the minimum and the median of interleaved calls (one moec call, one of each onnxruntime
session, repeated); ratios are of the minima (the least disturbed run on a shared machine) with the
median of the per-round ratios beside it.

Builds Y = X @ W (X [T, K] an input, W [K, N] an initializer; with --gemm a Gemm with transB = 1 and
a bias, as nn.Linear exports), compiles it with moec (verified against onnxruntime once), and times
moec's artifact and an onnxruntime session on the same inputs, interleaved (one moec call, one
onnxruntime call, repeated), both with the same thread count.  Prints per T the medians and the
median of the per-pair ratios moec/ort (below 1: moec faster).  The machines these run on are shared:
take the ratio of one run, not absolute times across runs.

Each timed call starts on a quiet process (``--settle-ms``, default 1000: before every call the bench
waits, up to that long, until no other thread of the process has been runnable for 10 ms).
onnxruntime's pool, with ``allow_spinning`` on (its default), keeps a thread busy for tens of ms after
every run (about 40 ms of CPU in the 100 ms after a [64,1024]x[1024,32000] run on a 2-core host); back
to back, the next engine's call shares the cores with it and the process CPU time of that call counts
it.  The CPU an engine's threads use after its call returns is reported beside (``after_cpu_ms``).
``--settle-ms 0``: back-to-back calls, as before.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
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


def ort_quantised(path: str, kind: str, group: int, tmp: str):
    """onnxruntime's own quantised form of the model at ``path`` (None if this onnxruntime lacks it)."""
    out = os.path.join(tmp, f"ort_{kind}.onnx")
    try:
        if kind.startswith("nbits4"):
            import onnx
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
            level = 4 if kind == "nbits4" else 0  # 4: int8 activations (MLAS's fast path); 0: f32 activations
            q = MatMulNBitsQuantizer(onnx.load(path), bits=4, block_size=group, is_symmetric=True,
                                     accuracy_level=level)
            q.process()
            q.model.save_model_to_file(out, False)
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            quantize_dynamic(path, out, per_channel=True, weight_type=QuantType.QInt8)
    except Exception as e:  # noqa: BLE001 - a baseline this onnxruntime cannot make is left out, said so
        print(f"(onnxruntime {kind} baseline unavailable: {type(e).__name__}: {e})", flush=True)
        return None
    return out


# onnxruntime's own quantised forms per moec mode: int4 vs MatMulNBits with int8 activations (accuracy
# level 4, its fast path) and with f32 activations (level 0: weight-only, as moec's int4)
ORT_LIKE = {"int4": ("nbits4", "nbits4_f32act"), "w8a8": ("dyn_int8",), "int8": ("dyn_int8",)}


def _other_threads_running() -> int:
    """Threads of this process, other than the caller, that are running or runnable (Linux: state R in
    /proc/self/task/*/stat; a spinning pool thread is R even while the scheduler holds it off a busy core,
    a parked one is S).  -1 where /proc is not there."""
    me = str(threading.get_native_id())
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return -1
    n = 0
    for t in tids:
        if t == me:
            continue
        try:
            with open(f"/proc/self/task/{t}/stat") as f:
                st = f.read()
        except OSError:  # the thread ended
            continue
        n += st[st.rindex(")") + 2] == "R"
    return n


def settle(max_s: float, poll_s: float = 0.002, quiet_polls: int = 5, share: float = 0.1) -> float:
    """Wait (at most ``max_s``) until this process's other threads are idle: ``quiet_polls`` polls in a
    row with none of them runnable (where /proc is missing: the process used under ``share`` of a core
    in each poll).  Returns the process CPU seconds used meanwhile (what the previous call's threads went
    on using after it returned)."""
    c0 = time.process_time()
    end = time.perf_counter() + max_s
    quiet = 0
    while quiet < quiet_polls and time.perf_counter() < end:
        w0, u0 = time.perf_counter(), time.process_time()
        time.sleep(poll_s)
        busy = _other_threads_running()
        if busy < 0:
            busy = time.process_time() - u0 >= share * (time.perf_counter() - w0)
        quiet = 0 if busy else quiet + 1
    return time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="1,8,64,256")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--gemm", action="store_true", help="Gemm(X, W, b, transB=1) instead of MatMul(X, W)")
    ap.add_argument("--weights", default="f32", help="comma-separated moec weight modes (f32,bf16,int8,int4,w8a8)")
    ap.add_argument("--group", type=int, default=64, help="int4 group size (moec and MatMulNBits' block)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--ort-spinning", default="1", choices=("0", "1"),
                    help="onnxruntime's session.intra_op.allow_spinning (default 1, its own default).  With 1 its "
                         "pool keeps spinning after every run (a busy thread for tens of ms: 15 ms of CPU in the 50 ms "
                         "after a run on this host), so in an interleaved loop moec's threads share the cores with it")
    ap.add_argument("--settle-ms", type=float, default=1000.0,
                    help="before each timed call wait (at most this long) until the process's threads are idle, "
                         "so one engine's leftover threads (onnxruntime's spinning pool) do not run during the "
                         "other's call; 0: back-to-back calls")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    from moec.driver import CompileOptions, compile_onnx
    from moec.targets.registry import CpuArtifact

    tokens = [int(t) for t in args.tokens.split(",")]
    modes = [w for w in args.weights.split(",") if w]
    model = build_model(args.k, args.n, args.gemm)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dense.onnx")
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", args.ort_spinning)

        def session(p):
            return ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
        sessions = {"ort_f32": session(path)}
        for mode in modes:
            for kind in ORT_LIKE.get(mode, ()):
                if "ort_" + kind not in sessions:
                    qp = ort_quantised(path, kind, args.group, tmp)
                    if qp:
                        sessions["ort_" + kind] = session(qp)
        arts = {}
        for mode in modes:
            out = os.path.join(tmp, "art_" + mode)
            t0 = time.perf_counter()
            res = compile_onnx(path, out, CompileOptions(threads=args.threads, symbol_sizes=(3, 1), weights=mode,
                                                         group_size=args.group))
            wq = res.report.get("weights", {})
            print(f"moec {mode}: compiled in {time.perf_counter() - t0:.1f} s, verified: {res.report['verified']} "
                  f"(max abs err {res.report['max_abs_err']:.3g}); quantised layers {wq.get('quantized_layers')}, "
                  f"weights file {os.path.getsize(os.path.join(out, 'model.weights.bin')) / 1e6:.1f} MB", flush=True)
            arts[mode] = CpuArtifact(out, threads=args.threads)
        for T in tokens:
            x = np.random.default_rng(T).standard_normal((T, args.k)).astype(np.float32)
            want = sessions["ort_f32"].run(None, {"X": x})[0]
            calls = {("moec_" + m): (lambda a=a: a([x])) for m, a in arts.items()}
            calls.update({k: (lambda s=s: s.run(None, {"X": x})) for k, s in sessions.items()})
            errs = {}
            for k, fn in calls.items():
                got = np.asarray(fn()[0])
                errs[k] = float(np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want ** 2)))
                fn()  # warm
            times = {k: [] for k in calls}
            cpu = {k: [] for k in calls}  # process CPU time per call (every thread; less sensitive to a busy host)
            after = {k: [] for k in calls}  # CPU the engine's threads used after the call returned (settle)
            settle(args.settle_ms / 1e3)
            for _ in range(args.repeats):
                for k, fn in calls.items():
                    c0 = time.process_time(); t0 = time.perf_counter(); fn()
                    times[k].append(time.perf_counter() - t0); cpu[k].append(time.process_time() - c0)
                    if args.settle_ms > 0:
                        after[k].append(settle(args.settle_ms / 1e3))
            best = {k: min(v) for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in times.items()}
            for m in arts:
                k = "moec_" + m
                row = {"T": T, "weights": m, "moec_ms_min": best[k] * 1e3, "moec_ms_median": med[k] * 1e3,
                       "rel_rms_err_vs_ort_f32": errs[k],
                       "vs_ort_f32": best[k] / best["ort_f32"],
                       "cpu_ms_median": statistics.median(cpu[k]) * 1e3,
                       "ort_f32_cpu_ms_median": statistics.median(cpu["ort_f32"]) * 1e3,
                       "after_cpu_ms_median": statistics.median(after[k]) * 1e3 if after[k] else None,
                       "ort_f32_after_cpu_ms_median": (statistics.median(after["ort_f32"]) * 1e3
                                                       if after["ort_f32"] else None),
                       "vs_ort_f32_median_of_rounds": statistics.median(
                           [a / b for a, b in zip(times[k], times["ort_f32"])])}
                row["ort_like"] = {}
                for like in ORT_LIKE.get(m, ()):
                    o = "ort_" + like
                    if o in sessions:
                        row["ort_like"][like] = {"ms_min": best[o] * 1e3, "moec_vs": best[k] / best[o],
                                                 "rel_rms_err_vs_ort_f32": errs[o]}
                row["ort_f32_ms_min"] = best["ort_f32"] * 1e3
                rows.append(row)
                extra = "".join(f"  {like} {v['ms_min']:8.2f} ms -> {v['moec_vs']:.2f}x"
                                for like, v in row["ort_like"].items())
                print(f"T={T:4d} {m:5s} moec {row['moec_ms_min']:8.2f} ms (median {row['moec_ms_median']:.2f})  "
                      f"ort f32 {row['ort_f32_ms_min']:8.2f} ms -> {row['vs_ort_f32']:.2f}x "
                      f"(rounds {row['vs_ort_f32_median_of_rounds']:.2f}x; CPU time "
                      f"{row['cpu_ms_median'] / row['ort_f32_cpu_ms_median']:.2f}x){extra}  rel err {errs[k]:.1e}"
                      + (f"  CPU after the call: moec {row['after_cpu_ms_median']:.1f} ms, "
                         f"ort {row['ort_f32_after_cpu_ms_median']:.1f} ms" if after[k] else ""),
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"k": args.k, "n": args.n, "threads": args.threads, "gemm": args.gemm, "group": args.group,
                       "ort_spinning": args.ort_spinning, "settle_ms": args.settle_ms, "load_average": os.getloadavg(),
                       "rows": rows}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
