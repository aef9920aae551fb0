"""`moec bench`: time moec's compiled code against onnxruntime on the user's model.

Peers, measured in the same run, interleaved, several repeats, medians:
  * onnxruntime on the model as given (the exported graph),
  * for each MoE layer moec recognises, onnxruntime's fused com.microsoft.MoE op built from the
    same weights (router MatMul + MoE), when the layer's routing and activation fit that op,
  * this machine's measured peaks: an sgemm probe (numpy/BLAS, GFLOP/s) and a memory-copy probe
    (GB/s), so achieved rates can be put against them.
Writes bench.json and bench.png (ratio vs tokens) into the output folder and prints a table.
Benchmarks are not tests: numbers depend on the machine and its load.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from moec.driver import CompileOptions, compile_onnx, load_model_proto
from moec.errors import UserInputError
from moec.ir import Module
from moec.ir.opdef import const_value
from moec.ir.ops.moe import dequantize_weights


def _median_time(fn: Callable[[], object], repeats: int) -> List[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class GemmProbe:
    """This machine's attainable GEMM rate in one arithmetic, the ceiling a model's FLOP rate is put against.

    ``dtype`` "f32": a square f32 matmul through numpy's BLAS, limited to ``threads`` with threadpoolctl when it is
    installed (without it numpy's BLAS runs on its own thread count, said in ``how``; torch's f32 matmul is not
    used: on AVX-512 hosts without Intel's MKL paths it ran at half numpy's OpenBLAS);
    "bf16": torch.matmul of bf16 matrices (oneDNN's avx512_core_bf16 / AMX kernels: products of bf16 values
    summed in f32, the arithmetic of vdpbf16ps);
    "int8": torch._int_mm, int8 x int8 -> int32 (oneDNN's VNNI / AMX-int8 kernels: the arithmetic of
    int8-activation formats such as w8a8 / w4a8 and llama.cpp's q8_0 / q4_0 matmuls).
    torch runs with torch.set_num_threads(threads) inside ``with probe:`` (restored after).  ``with probe:`` sets
    the thread count, ``probe()`` runs one multiplication of ``flops`` operations."""

    DTYPES = ("f32", "bf16", "int8")

    def __init__(self, dtype: str, threads: int, n: int = 1024):
        if dtype not in self.DTYPES:
            raise ValueError(f"GemmProbe: dtype {dtype!r}, not one of {self.DTYPES}")
        self.dtype, self.threads, self.n = dtype, threads, n
        self.flops = 2 * n ** 3
        self._ctx = None
        rng = np.random.default_rng(0)
        if dtype == "f32":
            self.a = rng.standard_normal((n, n)).astype(np.float32)
            self.b = self.a.copy()
            try:
                import threadpoolctl  # noqa: F401
                self.how = f"numpy matmul f32 {n}^3 (BLAS), {threads} threads (threadpoolctl)"
            except ImportError:
                self.how = (f"numpy matmul f32 {n}^3 (BLAS) on the BLAS's own thread count: threadpoolctl is not "
                            f"installed, so the benchmark's {threads} threads are not applied")
            self.fn = lambda: self.a @ self.b
            return
        import torch
        from moec.targets.description import host_cpu
        # on an AMX host oneDNN runs these on the tiles, as moec's bf16 / w8a8 kernels do (codegen/c/runtime/rt_amx.c):
        # the probe is then the tiles' rate, not AVX-512's
        amx = " on AMX tiles" if all(f in host_cpu().isa for f in ("amx_tile", f"amx_{dtype}")) else ""
        if dtype == "bf16":
            self.a = torch.from_numpy(rng.standard_normal((n, n)).astype(np.float32)).to(torch.bfloat16)
            self.b = self.a.clone()
            self.fn = lambda: torch.matmul(self.a, self.b)
            self.how = f"torch.matmul bf16 {n}^3 (oneDNN{amx}), {threads} threads (torch.set_num_threads)"
        else:
            self.a = torch.from_numpy(rng.integers(-127, 128, (n, n), dtype=np.int8))
            self.b = self.a.clone()
            self.fn = lambda: torch._int_mm(self.a, self.b)
            self.how = f"torch._int_mm int8 x int8 -> int32 {n}^3 (oneDNN{amx}), {threads} threads (torch.set_num_threads)"

    def __enter__(self):
        if self.dtype == "f32":
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                return self
            self._ctx = threadpool_limits(limits=self.threads, user_api="blas")
        else:
            import torch
            self._ctx = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc):
        if self.dtype == "f32":
            if self._ctx is not None:
                self._ctx.restore_original_limits()
        else:
            import torch
            torch.set_num_threads(self._ctx)
        self._ctx = None
        return False

    def __call__(self):
        return self.fn()

    def measure(self, repeats: int = 5) -> dict:
        """{"gflops": the best rate of ``repeats`` calls after a warm-up (a ceiling: the least disturbed call),
        "how": ...}."""
        with self:
            self.fn()
            ts = _median_time(self.fn, repeats)
        return {"gflops": self.flops / min(ts) / 1e9, "how": self.how}


def gemm_probe(dtype: str, threads: int, n: int = 1024, repeats: int = 5) -> dict:
    """GemmProbe(dtype, threads, n).measure(repeats); {"error": why} where the probe cannot run (torch missing)."""
    try:
        return GemmProbe(dtype, threads, n).measure(repeats)
    except ImportError as e:
        return {"error": f"{dtype} GEMM probe needs torch ({e})"}


def sgemm_probe(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a square f32 matmul through numpy's BLAS on ``threads`` threads (GemmProbe "f32", best call)."""
    return GemmProbe("f32", threads, n).measure(repeats)["gflops"]


def _chunks(n: int, parts: int):
    return [(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


class _OnThreads:
    """``with _OnThreads(threads, n, work) as run:`` ``run()`` calls ``work(lo, hi)`` over ``threads`` contiguous
    parts of range(n) on as many Python threads (numpy releases the GIL in copies and reductions of plain
    dtypes, so the parts run in parallel); one thread: in the caller's."""

    def __init__(self, threads: int, n: int, work: Callable[[int, int], object]):
        self.threads, self.n, self.work, self.pool = max(1, threads), n, work, None

    def __enter__(self):
        if self.threads == 1:
            return lambda: self.work(0, self.n)
        from concurrent.futures import ThreadPoolExecutor
        self.pool = ThreadPoolExecutor(self.threads)
        parts = _chunks(self.n, self.threads)
        return lambda: [f.result() for f in [self.pool.submit(self.work, lo, hi) for lo, hi in parts]]

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown()
        return False


def copy_probe(mbytes: int = 256, repeats: int = 5, threads: int = 1) -> float:
    """GB/s of a large memory copy (read + write counted), split over ``threads`` threads; the best of ``repeats``
    copies (a ceiling, as STREAM reports)."""
    src = np.ones(mbytes * (1 << 20) // 4, np.float32)
    dst = np.empty_like(src)
    with _OnThreads(threads, src.size, lambda lo, hi: np.copyto(dst[lo:hi], src[lo:hi])) as run:
        run()
        ts = _median_time(run, repeats)
    return 2 * src.nbytes / min(ts) / 1e9


def read_probe(mbytes: int = 256, repeats: int = 5, threads: int = 1) -> float:
    """GB/s of reading a large array once (a max-reduction, only reads counted), split over ``threads`` threads:
    the ceiling of a kernel that streams weights (a decode step), which reads and writes almost nothing else.
    (A copy's read + write rate is not that ceiling: a write costs the bus a read for ownership too.)  The best of
    ``repeats`` passes."""
    src = np.ones(mbytes * (1 << 20) // 4, np.float32)
    with _OnThreads(threads, src.size, lambda lo, hi: np.maximum.reduce(src[lo:hi])) as run:
        run()
        ts = _median_time(run, repeats)
    return src.nbytes / min(ts) / 1e9


@dataclass
class LayerInfo:
    name: str
    E: int
    k: int
    D: int
    F: int
    I: int
    weight_bytes_per_expert: int
    ort_moe: Optional[bytes]  # a com.microsoft.MoE model of this layer, if representable
    ort_moe_why: str = ""


def _weights_of(m: Module, v) -> Optional[np.ndarray]:
    a = const_value(v, m.weights)
    return None if a is None else np.asarray(a)


def _layers(m: Module) -> List[LayerInfo]:
    """Per recognised layer: sizes, and a com.microsoft.MoE model with the same weights."""
    out = []
    f = m.main
    for ex in [o for o in f.ops if o.name == "moe.experts"]:
        w_in, w_out = _weights_of(m, ex.operands[4]), _weights_of(m, ex.operands[5])
        if w_in is None or w_out is None:
            continue
        stored = w_in.nbytes + w_out.nbytes
        qv = [_weights_of(m, v) if v is not None else None for v in ex.quant_operands()]
        stored += sum(a.nbytes for a in qv if a is not None)
        mode, G = ex.attrs["wq"], ex.attrs["wq_group"]
        w_in = np.asarray(dequantize_weights(w_in, mode, G, qv[0], qv[2]), np.float32)
        w_out = np.asarray(dequantize_weights(w_out, mode, G, qv[1], qv[3]), np.float32)
        E, I, D = w_in.shape
        F = w_out.shape[2]
        route = ex.operands[1].owner
        comb = next((u for u in f.ops if u.name == "moe.combine" and u.operands[0] is ex.results[0]), None)
        info = LayerInfo(comb.attrs.get("layer", "moe") if comb else "moe", E, route.attrs["k"], D, F, I,
                         stored // E, None)
        info.ort_moe, info.ort_moe_why = _ort_moe_model(m, ex, route, comb, w_in, w_out)
        out.append(info)
    return out


def _ort_moe_model(m, ex, route, comb, w_in, w_out):
    from onnx import TensorProto, helper, numpy_helper
    a = route.attrs
    if a["scoring"] != "softmax" or a["post"] != "none" or a["norm"] == "l1" or a["n_group"] > 1 \
            or a["capacity"] or a["scale"] != 1.0 or len(route.operands) > 1:
        return None, "routing not expressible with com.microsoft.MoE"
    if comb is None or comb.attrs["has_shared"] or ex.attrs["has_b_in"] or ex.attrs["has_b_out"] \
            or ex.attrs["weights_at"] == "input":
        return None, "shared experts / biases / input weighting not in this comparison"
    logits = route.operands[0]
    mm = logits.owner
    if mm is None or mm.name not in ("moec.matmul", "moec.gemm"):
        return None, "router is not a plain MatMul or Gemm"
    wr = _weights_of(m, mm.operands[1])
    if wr is None:
        return None, "router weight is not constant"
    router_inits = []
    if mm.name == "moec.gemm":  # (nn.Linear as the dynamo exporter writes it: Gemm(x, W, b) with transB)
        ga = mm.attrs
        if ga["trans_a"]:
            return None, "router Gemm transposes its input"
        ins = ["x", "wr"]
        if len(mm.operands) > 2:
            rb = _weights_of(m, mm.operands[2])
            if rb is None:
                return None, "router bias is not constant"
            router_inits.append(numpy_helper.from_array(np.asarray(rb, np.float32), "wr_b"))
            ins.append("wr_b")
        router = helper.make_node("Gemm", ins, ["logits"], alpha=float(ga["alpha"]), beta=float(ga["beta"]),
                                  transB=int(bool(ga["trans_b"])))
    else:
        router = helper.make_node("MatMul", ["x", "wr"], ["logits"])
    act = ex.attrs["activation"]
    attrs = {"k": a["k"], "normalize_routing_weights": int(a["norm"] == "sum")}
    E, I, D = w_in.shape
    F = w_out.shape[2]
    fc1 = w_in
    if act == "swiglu":
        if ex.attrs["limit"] != float("inf") or ex.attrs["alpha"] != 1.0 or ex.attrs["beta"] != 0.0:
            attrs.update(swiglu_limit=ex.attrs["limit"], activation_alpha=ex.attrs["alpha"],
                         activation_beta=ex.attrs["beta"])
        if ex.attrs["gate_layout"] == "concat":  # onnxruntime's CPU kernel wants interleaved rows
            fc1 = np.empty_like(w_in)
            fc1[:, 0::2], fc1[:, 1::2] = w_in[:, :F], w_in[:, F:]
        attrs.update(activation_type="swiglu", swiglu_fusion=1)
    elif act in ("relu", "silu", "identity"):
        attrs["activation_type"] = act
    elif act == "gelu_tanh":
        attrs["activation_type"] = "gelu"
    else:
        return None, f"activation {act} not available in com.microsoft.MoE"
    nodes = [router,
             helper.make_node("MoE", ["x", "logits", "fc1", "", "fc2", ""], ["y"], domain="com.microsoft", **attrs)]
    g = helper.make_graph(nodes, "ort_moe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", D])],
                          [numpy_helper.from_array(np.asarray(wr, np.float32), "wr"),
                           numpy_helper.from_array(np.asarray(fc1, np.float32), "fc1"),
                           numpy_helper.from_array(np.asarray(w_out, np.float32), "fc2")] + router_inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model.SerializeToString(), ""


# `moec bench --target`: moec vs onnxruntime on a model (the compile driver's default target), or the Triton
# kernels' own benchmark on standard layers (bench_triton.py, a GPU tool)
BENCH_TARGETS = ("cpu", "triton")


def run_bench_cli(a) -> int:
    """`moec bench` (arguments as cli.py parses them)."""
    if a.target == "triton":
        from moec import bench_triton
        out = a.output or "moec_bench_triton"
        rep = bench_triton.run_triton_bench(a.layers.split(","), a.tokens or [1, 16, 128, 1024, 4096], out,
                                            **bench_triton.mode_kwargs(a.weights))  # (fp8a8: fp8 x and weights)
        print(bench_triton.format_table(rep))
        print(f"wrote {os.path.join(out, 'bench_triton.json')}")
        return 0
    if not a.model:
        raise UserInputError("moec bench --target cpu needs MODEL (an .onnx file)")
    a.tokens = a.tokens or [1, 8, 64, 256, 1024]
    out = a.output or f"moec_bench_{os.path.splitext(os.path.basename(a.model))[0]}"
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, "bench.json")) \
            and not a.force:
        raise UserInputError(f"output folder '{out}' exists and holds other files; pass --force or choose -o")
    modes = [a.weights] + [w for w in (getattr(a, "also_weights", "") or "").split(",") if w and w != a.weights]
    # every mode checked before the first build, by the driver's own check for the target compiled for
    from moec import targets
    backend = targets.backend(targets.DEFAULT)
    for w in modes:
        try:
            targets.check_options(backend, CompileOptions(weights=w, group_size=a.group_size))
        except UserInputError as e:
            raise UserInputError(f"{'--weights' if w == a.weights else '--also-weights'} {w}: {e}") from None
    gg = [g for g in (getattr(a, "gguf", "") or "").split(",") if g]
    rep = run_bench(a.model, out, a.tokens, modes if len(modes) > 1 else a.weights, a.repeats, a.threads, a.force,
                    a.group_size, hf_model=getattr(a, "hf_model", None), gguf=gg)
    print(format_table(rep))
    print(f"wrote {os.path.join(out, 'bench.json')} and {os.path.join(out, 'bench.png')}")
    return 0


def run_bench(model_path: str, outdir: str, tokens: Sequence[int], weights="f32", repeats: int = 7,
              threads: int = 2, force: bool = False, group_size: int = 64, hf_model: Optional[str] = None,
              gguf: Sequence[str] = ()) -> dict:
    """moec (with ``weights`` storage: one mode, or a list of modes each compiled and timed) vs onnxruntime on
    the f32 model; for a whole model taking input_ids also torch eager on ``hf_model`` (a transformers
    checkpoint directory: f32, and bf16 when moec runs a bf16 build) and llama.cpp on each ``gguf`` file
    (when llama-cpp-python is importable).  Every engine is timed in the same interleaved loop."""
    import onnxruntime as ort
    proto, name = load_model_proto(model_path)
    os.makedirs(outdir, exist_ok=True)
    modes = [weights] if isinstance(weights, str) else list(weights)
    if not modes:
        raise UserInputError("moec bench: no --weights mode given")
    arts, results = {}, {}
    for w in modes:  # the first mode's build is "moec" (or "moec <mode>" when several are timed)
        key = "moec" if len(modes) == 1 else f"moec {w}"
        art_dir = os.path.join(outdir, "artifact" if w == modes[0] else f"artifact_{w}")
        results[key] = compile_onnx(proto, art_dir, CompileOptions(force=True, verify=True, threads=threads,
                                                                   symbol_sizes=(min(tokens), 1), weights=w,
                                                                   group_size=group_size))
        arts[key] = results[key].artifact  # (compile_onnx verified, so loaded, it)
        if w != modes[0]:  # (only the first build's module is read later: a whole model's copies of its
            results[key] = type("Built", (), {"report": results[key].report})  # weights per mode ran out of memory)
    primary = next(iter(arts))
    res = results[primary]
    f = res.module.main
    feeder = BenchInputs(f, res.module)
    peers = whole_model_peers(feeder, hf_model, gguf, threads, max(tokens), modes)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # runs are interleaved with moec's on the same cores: onnxruntime's worker threads must not
    # keep spinning after a run, or they steal the cores from whatever runs next
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model_bytes = proto.SerializeToString()
    try:
        plain = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception:
        proto.ir_version = 10
        plain = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    layers = _layers(res.module)
    fused = []
    for L in layers:
        if L.ort_moe is not None:
            fused.append((L.name, ort.InferenceSession(L.ort_moe, so, providers=["CPUExecutionProvider"])))
    if not feeder.hidden_input:  # (a whole model: its MoE layers see hidden states, not its input)
        fused = []
    gflops_peak = sgemm_probe(threads)
    gbps_peak = copy_probe(threads=threads)
    rows = []
    for T in feeder.token_counts(tokens):
        xs = feeder.inputs(T)
        feed = dict(zip(f.arg_names, xs))
        x2 = xs[0].reshape(-1, xs[0].shape[-1]) if feeder.hidden_input else None  # [tokens, hidden]
        T = feeder.tokens_of(xs)
        runners = {k: (lambda a=a: a(xs)) for k, a in arts.items()}
        runners["onnxruntime"] = lambda: plain.run(None, feed)
        ids = xs[[a for _, a in feeder.args].index(feeder.main)] if feeder.vocab else None
        for pname, make in peers.items():
            runners[pname] = make(ids)
        for lname, s in fused:
            runners[f"onnxruntime MoE op ({lname})"] = (lambda s=s: s.run(None, {"x": x2}))
        for fn in runners.values():  # warm up
            fn()
        times: Dict[str, List[float]] = {k: [] for k in runners}
        for _ in range(repeats):  # interleaved
            for k, fn in runners.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        flops = sum(2 * T * L.k * (L.I * L.D + L.D * L.F) for L in layers)
        touched = sum(min(L.E, T * L.k) * L.weight_bytes_per_expert for L in layers)
        row = {"tokens": T, "input_shapes": {n: list(x.shape) for n, x in feed.items()},
               "ms": {k: v * 1e3 for k, v in med.items()},
               "ratio_vs": {k: med[primary] / v for k, v in med.items() if k not in arts},
               "moec_gflops": flops / med[primary] / 1e9 if flops else None,
               "moec_gbps_weights": touched / med[primary] / 1e9 if touched else None}
        if len(arts) > 1:  # every build against every peer (same run)
            row["ratios"] = {m: {k: med[m] / v for k, v in med.items() if k not in arts} for m in arts}
        rows.append(row)
    report = {"model": name, "target": "cpu", "weights": modes[0] if len(modes) == 1 else modes,
              "moec_keys": list(arts), "threads": threads, "repeats": repeats,
              "peers": {k: getattr(v, "describe", k) for k, v in peers.items()},
              "inputs": feeder.describe(),
              "group_size": group_size if weights == "int4" else None,
              "quantization_error": res.report.get("quantization_error") if len(modes) == 1 else
              {k: r.report.get("quantization_error") for k, r in results.items()},
              "weights_quantized": res.report.get("weights"),
              "probes": {"sgemm_gflops": gflops_peak, "copy_gbps": gbps_peak},
              "layers": [{k: v for k, v in L.__dict__.items() if k != "ort_moe"} for L in layers],
              "rows": rows}
    with open(os.path.join(outdir, "bench.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    _plot(report, os.path.join(outdir, "bench.png"))
    return report


class _Peer:
    """A peer engine of a whole-model bench: ``make(input_ids)`` returns the call to time (one prefill,
    last-position logits)."""

    def __init__(self, make, describe: str):
        self.make, self.describe = make, describe

    def __call__(self, ids):
        return self.make(ids)


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
        return True
    except Exception:  # (ImportError, or a library built for another CPU failing to load)
        return False


def whole_model_peers(feeder: "BenchInputs", hf_model: Optional[str], gguf: Sequence[str], threads: int,
                      max_tokens: int, modes: Sequence[str]) -> Dict[str, _Peer]:
    """torch eager on a transformers checkpoint directory and llama.cpp on GGUF files, for a model taking
    input_ids (batch 1).  Each runs one prefill of the ids from an empty cache and computes the logits of
    the last position only (transformers' ``logits_to_keep=1``; llama.cpp's default)."""
    peers: Dict[str, _Peer] = {}
    if (hf_model or gguf) and feeder.vocab is None:
        raise UserInputError("moec bench: --hf-model / --gguf need a whole model taking input_ids")
    if hf_model:
        if not os.path.isdir(hf_model):
            raise UserInputError(f"--hf-model '{hf_model}': not a directory (a transformers checkpoint, "
                                 "save_pretrained's output)")
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise UserInputError("--hf-model needs torch and transformers (pip install 'moec[dev]')") from None
        torch.set_num_threads(threads)
        dtypes = [("f32", torch.float32)] + ([("bf16", torch.bfloat16)] if "bf16" in modes else [])
        for tag, dt in dtypes:
            try:
                model = AutoModelForCausalLM.from_pretrained(hf_model, dtype=dt).eval()
            except (OSError, ValueError) as e:
                raise UserInputError(f"--hf-model '{hf_model}': transformers cannot load it: "
                                     f"{str(e).splitlines()[0]}") from None

            def make(ids, model=model):
                t = torch.from_numpy(np.asarray(ids, np.int64))

                def run():
                    with torch.inference_mode():
                        return model(input_ids=t, use_cache=False, logits_to_keep=1).logits
                return run
            peers[f"torch eager {tag}"] = _Peer(make, f"transformers {type(model).__name__} from {hf_model}, {tag}, "
                                                     "use_cache=False, logits_to_keep=1")
    if gguf and not llama_cpp_available():
        raise UserInputError("--gguf needs llama-cpp-python (pip install 'moec[bench]'; see benchmarks/README.md)")
    for path in gguf:
        if not os.path.isfile(path):
            raise UserInputError(f"--gguf '{path}': no such file")
        from llama_cpp import Llama
        llm = Llama(model_path=path, n_ctx=max(512, max_tokens), n_batch=max(8, max_tokens),
                    n_ubatch=max(8, max_tokens), n_threads=threads, n_threads_batch=threads, logits_all=False,
                    verbose=False)
        tag = os.path.splitext(os.path.basename(path))[0]

        def make(ids, llm=llm):
            toks = [int(i) for i in np.asarray(ids).reshape(-1)]

            def run():
                llm.reset()  # (eval drops the cache past n_tokens: a prefill from position 0)
                llm.eval(toks)
                # (llm.scores is left unfilled without logits_all: the context's one output row is the last
                # position's logits; a view, copied by the caller if kept)
                return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            return run
        peers[f"llama.cpp {tag}"] = _Peer(make, f"llama-cpp-python Llama({path}), n_threads={threads}, "
                                                "one eval of the ids after reset(), last-position logits")
    return peers


class BenchInputs:
    """Inputs for `moec bench` at a token count, for the input layouts real exports have:

    * one float input [tokens, hidden] (a bare MoE layer),
    * one float input [batch, seq, hidden] (a transformers MoE block): batch 1 (or its static size),
      seq = the token count, tokens = batch x seq,
    * integer input_ids [batch, seq] (a whole model): ids drawn from the range of the embedding table
      they index (the Gather of a constant [vocab, hidden] table), tokens = batch x seq; besides them
      only [batch, seq] integer inputs named like an attention mask (all ones) or position ids
      (0..seq-1) are accepted.
    A static seq dim fixes the token count (the requested counts that differ are skipped).
    Anything else is a UserInputError naming what moec bench accepts."""

    ACCEPTS = ("moec bench drives models with one float [tokens, hidden] or [batch, seq, hidden] input, or "
               "integer input_ids [batch, seq] (plus an optional attention mask / position ids)")

    def __init__(self, f, m: Module):
        self.f, self.m = f, m
        self.args = list(zip(f.arg_names, f.args))
        floats = [(n, a) for n, a in self.args if a.type.dtype.is_float]
        ints = [(n, a) for n, a in self.args if not a.type.dtype.is_float]
        self.hidden_input = bool(floats)
        self.vocab: Optional[int] = None
        if floats:
            n, a = floats[0]
            if len(self.args) != 1 or a.type.rank not in (2, 3) or not isinstance(a.type.shape[-1], int):
                raise UserInputError(f"{self.ACCEPTS}; this model's inputs are "
                                     + ", ".join(f"{nm}: {x.type}" for nm, x in self.args))
            self.main = a
        else:
            ids = [(n, a) for n, a in ints if self._vocab_of(a) is not None and a.type.rank == 2]
            if len(ids) != 1 or any(a.type.rank != 2 or self._extra_kind(n) is None for n, a in ints
                                    if a is not ids[0][1]):
                raise UserInputError(f"{self.ACCEPTS}; this model's inputs are "
                                     + ", ".join(f"{nm}: {x.type}" for nm, x in self.args)
                                     + ("" if ids else " (no integer input indexes a constant embedding table)"))
            self.main = ids[0][1]
            self.vocab = self._vocab_of(self.main)

    def _vocab_of(self, a) -> Optional[int]:
        """Rows of the constant table a Gather indexes with ``a`` (directly or through casts / reshapes)."""
        vals, seen = [a], set()
        while vals:
            v = vals.pop()
            if id(v) in seen:
                continue
            seen.add(id(v))
            for o in self.f.ops:
                if not any(x is v for x in o.operands):
                    continue
                if o.name == "moec.gather" and o.operands[1] is v and o.operands[0].owner is not None \
                        and o.operands[0].owner.name == "moec.constant":
                    dim = o.operands[0].type.shape[o.attrs["axis"]]
                    if isinstance(dim, int):
                        return dim
                if o.name in ("moec.cast", "moec.reshape", "moec.squeeze", "moec.unsqueeze", "moec.flatten"):
                    vals.append(o.results[0])
        return None

    @staticmethod
    def _extra_kind(name: str) -> Optional[str]:
        n = name.lower()
        return "mask" if "mask" in n else ("positions" if "position" in n else None)

    def _batch_seq(self, T: int):
        shape = self.main.type.shape
        b = shape[0] if isinstance(shape[0], int) else 1
        if self.main.type.rank == 2 and self.hidden_input:
            return None, T if not isinstance(shape[0], int) else shape[0]
        s = shape[1] if isinstance(shape[1], int) else T
        return b, s

    def token_counts(self, tokens: Sequence[int]) -> List[int]:
        shape = self.main.type.shape
        seq_dim = 0 if (self.hidden_input and self.main.type.rank == 2) else 1
        if isinstance(shape[seq_dim], int):
            return [shape[seq_dim]]  # a static token / sequence dim: the one size the model takes
        return list(tokens)

    def tokens_of(self, xs) -> int:
        shp = xs[[a for _, a in self.args].index(self.main)].shape
        return int(np.prod(shp[:-1])) if self.hidden_input else int(np.prod(shp))

    def inputs(self, T: int) -> List[np.ndarray]:
        rng = np.random.default_rng(T)
        b, s = self._batch_seq(T)
        out = []
        for n, a in self.args:
            dt = a.type.dtype.np
            if a is self.main and self.hidden_input:
                D = a.type.shape[-1]
                shape = (s, D) if b is None else (b, s, D)
                out.append(rng.standard_normal(shape).astype(dt))
            elif a is self.main:
                out.append(rng.integers(0, self.vocab, (b, s)).astype(dt))
            elif self._extra_kind(n) == "mask":
                out.append(np.ones((b, s), dt))
            else:
                out.append(np.tile(np.arange(s, dtype=dt), (b, 1)))
        return out

    def describe(self) -> dict:
        kind = ("hidden states [tokens, hidden]" if self.hidden_input and self.main.type.rank == 2 else
                "hidden states [batch, seq, hidden] (batch 1, seq = tokens)" if self.hidden_input else
                f"input_ids [batch, seq] (batch 1, seq = tokens; ids drawn from [0, {self.vocab}))")
        return {"kind": kind, "inputs": {n: str(a.type) for n, a in self.args},
                "fused_moe_op_peer": "per MoE layer, fed the model's input as [tokens, hidden]" if self.hidden_input
                else "none: a whole model's MoE layers see hidden states computed inside it"}


def _plot(report: dict, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    toks = [r["tokens"] for r in report["rows"]]
    peers = sorted({k for r in report["rows"] for k in r["ratio_vs"]})
    for p in peers:
        ax.plot(toks, [r["ratio_vs"].get(p, float("nan")) for r in report["rows"]], marker="o", label=f"vs {p}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("tokens")
    ax.set_ylabel("moec time / peer time (lower is better)")
    ax.set_title(f"moec bench: {report['model']} ({report['weights']}, {report['threads']} threads)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(report: dict) -> str:
    lines = [f"moec bench {report['model']} (cpu, {report['weights']}, {report['threads']} threads, median of "
             f"{report['repeats']}; probes: sgemm {report['probes']['sgemm_gflops']:.1f} GFLOP/s, copy "
             f"{report['probes']['copy_gbps']:.1f} GB/s)"]
    peers = sorted({k for r in report["rows"] for k in r["ratio_vs"]})
    keys = report.get("moec_keys") or ["moec"]
    head = f"{'tokens':>7} {keys[0] + ' ms':>14} " + " ".join(f"{p[:28]:>30}" for p in peers) \
        + f" {'GFLOP/s':>8} {'GB/s':>7}"
    lines.append(head)
    for r in report["rows"]:
        cells = []
        for p in peers:
            if p in r["ms"]:
                cells.append(f"{r['ms'][p]:9.2f} ms x{r['ratio_vs'][p]:6.2f}".rjust(30))
            else:
                cells.append("-".rjust(30))
        gf = f"{r['moec_gflops']:8.1f}" if r["moec_gflops"] else f"{'-':>8}"
        gb = f"{r['moec_gbps_weights']:7.1f}" if r["moec_gbps_weights"] else f"{'-':>7}"
        lines.append(f"{r['tokens']:>7} {r['ms'][keys[0]]:14.2f} " + " ".join(cells) + f" {gf} {gb}")
    lines.append(f"ratio = {keys[0]} time / peer time (below 1: moec is faster)")
    if len(keys) > 1:  # every engine's ms per token count
        engines = list(report["rows"][0]["ms"])
        lines.append("ms per engine: " + f"{'engine':<34}" + "".join(f"{r['tokens']:>10}" for r in report["rows"]))
        for e in engines:
            lines.append(" " * 15 + f"{e[:34]:<34}" + "".join(
                f"{r['ms'][e]:10.2f}" if e in r["ms"] else f"{'-':>10}" for r in report["rows"]))
    warn = (report.get("weights_quantized") or {}).get("warning")
    if warn:
        lines.append(f"warning: {warn}")
    return "\n".join(lines)
