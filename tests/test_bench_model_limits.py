"""Issue 17's physical limits beside the whole-model table (benchmarks/bench_model.py): the prefill FLOP count
against torch's own FLOP counter on a tiny transformers Mixtral, the decode bytes per token of a moec step module
and of a GGUF, the fractions, and the probes' thread counts.  Small sizes: the default run stays fast."""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _bench_model():
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))
    try:
        import bench_model
    finally:
        sys.path.pop(0)
    return bench_model


# heads != kv heads, head_dim != hidden / heads: the projections' real column counts are counted
TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64)


def test_prefill_flops_equal_torch_flop_counter_on_a_tiny_mixtral():
    """torch.utils.flop_counter on transformers' own Mixtral (eager experts: each expert multiplies only its
    routed tokens; eager attention: the whole T x T square) counts what prefill_flops derives from the config,
    except the scores, which prefill_flops counts over the causal half."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import MixtralConfig, MixtralForCausalLM
    bm = _bench_model()
    cfg = MixtralConfig(**TINY, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = MixtralForCausalLM(cfg).eval()
    model.config._experts_implementation = "eager"
    model.config._attn_implementation = "eager"
    c = bm.text_config(cfg.to_dict())
    assert (c["heads"], c["kv_heads"], c["head_dim"]) == (4, 2, 16)
    T = 7
    ids = torch.randint(0, TINY["vocab_size"], (1, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
    counts = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
    mm = {k: dict(v) for k, v in fc.get_flop_counts().items()}
    got = bm.prefill_flops(c, T)
    L, H, hd = c["layers"], c["heads"], c["head_dim"]
    square = 2 * 2 * H * hd * T * T  # (QK^T and PV over every key, per layer)
    D, q_cols, kv_cols = c["hidden"], H * hd, c["kv_heads"] * hd
    # (every layer but the last on every row; the last layer's k / v on every row, its q, o, the last query's
    # scores over T keys, router and experts on the last row: what a last-position forward needs)
    assert got["attention scores"] == (L - 1) * 2 * 2 * H * hd * (T * (T + 1) // 2) + 2 * 2 * H * hd * T
    proj = 2 * T * D * (2 * q_cols + 2 * kv_cols)
    assert got["attention projections"] == L * proj - 2 * (T - 1) * D * 2 * q_cols
    # (transformers computes every layer on every row: the count of all rows; the last layer's router and experts
    # on the last row only are what a last-position forward needs)
    mlp = 2 * T * c["hidden"] * c["experts"] + 2 * T * c["top_k"] * 3 * c["hidden"] * c["ffn"]
    for layer in range(L):
        attn = mm[f"MixtralForCausalLM.model.layers.{layer}.self_attn"]
        assert sum(v for op, v in attn.items() if "bmm" not in str(op)) == proj
        assert sum(v for op, v in attn.items() if "bmm" in str(op)) == square
        assert counts[f"MixtralForCausalLM.model.layers.{layer}.mlp"] == mlp
    assert got["router"] + got["experts"] == (L - 1) * mlp + mlp // T
    assert counts["MixtralForCausalLM.lm_head"] == got["output layer"]
    causal = 2 * 2 * H * hd * (T * (T + 1) // 2)
    assert fc.get_total_flops() == got["total_all_rows"] - L * causal + L * square
    assert got["total_all_rows"] - got["total"] == (mlp - mlp // T) + 2 * (T - 1) * D * 2 * q_cols + (
        causal - 2 * 2 * H * hd * T)


def _step_module(E=4, k=2, D=16, F=8, V=32, KVH=2, hd=8, cap=12):
    """A decode step's shape in IR: input_ids [1, T] -> embedding gather -> a dense f32 MatMul -> route over E
    (router MatMul) -> moe.experts with int8 weights and f32 scales (w8a8) -> combine; the cache k_0 / v_0 as
    arguments, as moec.decode.KVStep has them."""
    from moec.ir import DType, Function, Module, TensorType, Value, verify_module
    from moec.ir.core import ResourceRef
    from moec.ir.opdef import OPS
    m = Module()
    args = [Value(TensorType(DType.I64, (1, "T")), "input_ids"), Value(TensorType(DType.I64, (1,)), "pos"),
            Value(TensorType(DType.F32, (1, KVH, cap, hd)), "k_0"),
            Value(TensorType(DType.F32, (1, KVH, cap, hd)), "v_0")]
    f = Function("main", args)
    m.functions.append(f)
    rng = np.random.default_rng(0)

    def const(a, hint):
        key = m.weights.add(a, hint)
        return f.add(OPS["moec.constant"].create([], {"value": ResourceRef(key)}, None,
                                                 [TensorType(DType.from_np(a.dtype), a.shape)])).result

    def op(name, ins, attrs=None):
        return f.add(OPS[name].create(ins, attrs or {})).results

    emb = rng.standard_normal((V, D)).astype(np.float32)
    wd = rng.standard_normal((D, D)).astype(np.float32)
    wr = rng.standard_normal((D, E)).astype(np.float32)
    wi = rng.integers(-127, 128, (E, 2 * F, D)).astype(np.int8)
    wo = rng.integers(-127, 128, (E, D, F)).astype(np.int8)
    si, so = rng.random((E, 2 * F)).astype(np.float32), rng.random((E, D)).astype(np.float32)
    x, = op("moec.gather", [const(emb, "emb"), args[0]], {"axis": 0})  # [1, T, D]
    x, = op("moec.reshape", [x, const(np.array([-1, D], np.int64), "shape")])
    x, = op("moec.matmul", [x, const(wd, "dense")])
    logits, = op("moec.matmul", [x, const(wr, "router")])
    rw, ids = op("moe.route", [logits], {"k": k})
    order, off = op("moe.dispatch", [ids], {"num_experts": E})
    y, = op("moe.experts", [x, ids, order, off, const(wi, "wi"), const(wo, "wo"), rw, const(si, "si"),
                            const(so, "so")], {"wq": "int8", "aq": "int8", "weights_at": "output"})
    out, = op("moe.combine", [y, rw])
    f.outputs, f.output_names = [out], ["y"]
    verify_module(m)
    sizes = dict(emb=emb.nbytes, dense=wd.nbytes, router=wr.nbytes,
                 experts=wi.nbytes + wo.nbytes + si.nbytes + so.nbytes,
                 cache=2 * KVH * hd * cap * 4, row=D * 4)
    return m, sizes


def test_decode_bytes_of_a_step_module(tmp_path):
    """k of E of every expert tensor (the int8 codes and their f32 scales), one embedding row, every other
    constant whole, the cache at the context's share of its capacity; the same from the saved artifact files."""
    bm = _bench_model()
    from moec.ir.io import save_module
    m, sz = _step_module(E=4, k=2, cap=12)
    got = bm.module_decode_bytes(m, context=9, capacity=12)
    assert got["experts (k of E)"] == sz["experts"] * 2 // 4
    assert got["gathered rows"] == sz["row"]
    assert got["other weights"] == sz["dense"] + sz["router"] + 2 * 8  # (+ the reshape's shape vector)
    assert got["kv cache"] == sz["cache"] * 9 // 12
    assert got["total"] == sum(v for k, v in got.items() if k != "total")
    assert bm.module_arithmetic(m) == "int8"
    save_module(m, str(tmp_path / "model.mlir"))
    assert bm.moec_decode_bytes(str(tmp_path), 9, 12) == got
    assert bm.moec_arithmetic(str(tmp_path)) == "int8"


def test_gguf_decode_bytes(tmp_path):
    """A GGUF written with gguf-py (q8_0 experts and output layer, f32 embedding): k / E of the expert tensors in
    their stored blocks (34 bytes per 32 values), one embedding row, the rest whole, llama-cpp-python's default
    f16 KV cache at the context."""
    src = os.environ.get("LLAMA_CPP_SRC")
    if not src or not os.path.isdir(os.path.join(src, "gguf-py")):
        pytest.skip("LLAMA_CPP_SRC does not point at llama.cpp's sources (gguf-py/)")
    pytest.importorskip("llama_cpp")
    sys.path.insert(0, os.path.join(src, "gguf-py"))
    try:
        import gguf
    finally:
        sys.path.pop(0)
    bm = _bench_model()
    E, D, F, V = 4, 64, 96, 128
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    Q8 = gguf.GGMLQuantizationType.Q8_0
    exps = gguf.quants.quantize(rng.standard_normal((E, F, D)).astype(np.float32), Q8)
    w.add_tensor("blk.0.ffn_gate_exps.weight", exps, raw_dtype=Q8)
    w.add_tensor("token_embd.weight", rng.standard_normal((V, D)).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(D, np.float32))
    out = gguf.quants.quantize(rng.standard_normal((V, D)).astype(np.float32), Q8)
    w.add_tensor("output.weight", out, raw_dtype=Q8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    cfg = {"layers": 1, "kv_heads": 2, "head_dim": 8, "experts": E, "top_k": 2, "vocab": V}
    got = bm.gguf_decode_bytes(str(tmp_path / "m.gguf"), cfg, 10, src)
    assert got["experts (k of E)"] == E * F * D // 32 * 34 * 2 // E
    assert got["gathered rows"] == D * 4
    assert got["other weights"] == D * 4 + V * D // 32 * 34
    assert got["kv cache"] == 2 * 1 * 2 * 8 * 2 * 10


def test_fractions_and_their_table():
    """The fractions are the achieved rate over the probe's rate in the same run; the table prints them."""
    bm = _bench_model()
    c = bm.text_config({**TINY})
    fl = bm.prefill_flops(c, 4)
    run = {"rows": [{"tokens": 4, "ms": {"moec": 2.0, "llama.cpp model-f32": 4.0}, "probe_ms": {"f32": 1.0},
                     "model_flops": fl}],
           "arithmetic": {"moec": "f32", "llama.cpp model-f32": "f32"},
           "probes": {"f32": {"flops": fl["total"] // 2, "how": "test"}}}
    lim = bm.prefill_limits(run)[0]["engines"]
    assert lim["moec"]["fraction"] == pytest.approx(1.0)
    assert lim["llama.cpp model-f32"]["fraction"] == pytest.approx(0.5)
    dec = {"probes": {"copy_gbps": [10.0, 20.0], "read_gbps": [40.0, 30.0]},
           "rows": [{"context": 8, "engines": {"moec f32": {"tokens_per_s": 100.0}},
                     "bytes_per_token": {"moec f32": {"total": 170_000_000}}}]}
    cell = bm.decode_limits(dec)[0]["engines"]["moec f32"]
    assert cell["gbps"] == pytest.approx(17.0) and cell["of_copy"] == pytest.approx(0.85)
    assert cell["of_read"] == pytest.approx(17 / 40)
    text = "\n".join(bm._prefill_limits_table({"f32": run}) + bm._decode_limits_table({"f32": dec}))
    assert "| f32 | moec | f32 |" in text and "**100%**" in text and "| 50% |" in text
    assert "| f32 | moec f32 | 8 | 170 | 17.0 | 20.0 | **85%** | 40.0 | 42% |" in text


def test_gemm_probe_runs_on_the_benchmark_threads(monkeypatch):
    """numpy's BLAS is limited to the probe's threads inside ``with probe`` (threadpoolctl) and said not to be
    without threadpoolctl; torch's probes set torch's thread count and restore it."""
    from moec.bench import GemmProbe, gemm_probe
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        p = GemmProbe("f32", 1, n=64)
        with p:
            assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
        assert "1 threads (threadpoolctl)" in p.how
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # (the environment: threadpoolctl not installed)
    r = gemm_probe("f32", 1, n=64, repeats=1)
    assert r["gflops"] > 0 and "not applied" in r["how"]
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    p = GemmProbe("int8", want, n=64)
    with p:
        assert torch.get_num_threads() == want
        assert p().dtype == torch.int32
    assert torch.get_num_threads() == before
    assert gemm_probe("bf16", 1, n=64, repeats=1)["gflops"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["f32", "w8a8"])
def test_decode_bytes_of_a_compiled_step(tmp_path, fmt):
    """On a real compiled decode step of a tiny transformers Mixtral: the bytes counted from the artifact are the
    config's: k experts' 3 matrices per layer in the stored type (w8a8: int8 codes plus the f32 scale per output
    row), one embedding row, the cache at the context, and the dense weights (attention projections, router,
    output layer; int8 plus row scales in w8a8, the router kept f32) with the norms and small constants beside."""
    from moec.decode_bench import compile_step_in_child
    from test_bench_model import _tiny_ckpt
    bm = _bench_model()
    ckpt = str(tmp_path / "ckpt")
    model = _tiny_ckpt(ckpt)
    c = bm.text_config(model.config.to_dict())
    art = str(tmp_path / f"moec_{fmt}")
    compile_step_in_child(ckpt, art, fmt, 16, 32)
    got = bm.moec_decode_bytes(art, 10, 16)
    L, D, F, E, k, V = c["layers"], c["hidden"], c["ffn"], c["experts"], c["top_k"], c["vocab"]
    q, kv = c["heads"] * c["head_dim"], c["kv_heads"] * c["head_dim"]
    if fmt == "f32":
        experts = L * k * 3 * D * F * 4
        dense = L * (2 * q * D + 2 * kv * D) * 4 + V * D * 4
    else:
        experts = L * k * (3 * D * F + (2 * F + D) * 4)
        dense = L * ((2 * q * D + 2 * kv * D) + (2 * q + 2 * kv) * 4) + V * D + V * 4
    router = L * D * E * 4
    assert got["experts (k of E)"] == experts
    assert got["gathered rows"] == D * 4
    assert got["kv cache"] == 2 * L * c["kv_heads"] * c["head_dim"] * 10 * 4
    assert dense + router <= got["other weights"] <= dense + router + (2 * L + 1) * D * 4 + 4096
    assert bm.moec_arithmetic(art) == ("f32" if fmt == "f32" else "int8")
