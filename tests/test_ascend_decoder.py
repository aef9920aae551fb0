"""Ascend target, whole decoder layers (issue 16 item 6): besides the recognised MoE layers, the rest of a
decoder layer runs as AscendC kernels on the emulator -- the embedding gather (vec_gather), RMSNorm's
pow/mean/sqrt/reciprocal/mul chain (vec_elementwise, vec_rowwise), rotary slices/neg/concat and every
transpose/expand/broadcast (vec_copy; V^T by vec_transpose), the projections and attention's two matmuls of
activations (Q.K^T, P.V, batched over heads with the GQA expand; grouped_matmul on the cube), softmax -- and plan.json
lists no host op.  Values computed from the input shapes alone (positions, the rotary cos/sin tables, the
causal mask) are "tiling": evaluated once per input shape, as a CANN host tiling function does.

Default run: a hand-written attention block in ONNX, the layout kernels and vec_mask's float comparisons against
numpy (seconds).  ``-m slow``: the block in f16, and tiny random 2-layer transformers CausalLMs (Mixtral with eager
and with sdpa attention, Qwen2-MoE, DeepSeek-V3) exported by torch.onnx (dynamo), compiled with the CLI and
checked against onnxruntime."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.errors import RuntimeFailure
from moec.targets.registry import get_backend

V, D, H, KV, HD = 50, 32, 4, 2, 8


def _plan(out):
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        return json.load(f)


def _attention_block(dt=np.float32):
    """input_ids [1, S] -> embedding -> RMSNorm -> q/k/v -> rotary -> GQA attention -> o_proj + residual,
    written the way transformers' eager attention exports (ONNX opset 18); f32 or f16."""
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.standard_normal(s) * 0.3).astype(dt)  # noqa: E731
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    inits = {"emb": w(V, D), "g": w(D) + 1, "wq": w(D, H * HD), "wk": w(D, KV * HD), "wv": w(D, KV * HD),
             "wo": w(H * HD, D), "inv_freq": (1.0 / 10000 ** (np.arange(0, HD, 2) / HD)).astype(dt),
             "two": np.array(2.0, dt), "eps": np.array(1e-6, dt),
             "scale": np.array(HD ** -0.5, dt), "zero_f": np.array(0.0, dt),
             "ninf": np.array(np.finfo(dt).min, dt), "ax_last": i64(-1), "ax0": i64(0),
             "ax1": i64(1), "ax2": i64(2), "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
             "q_shape": i64(1, -1, H, HD), "kv_shape": i64(1, -1, KV, HD), "rep": i64(1, KV, H // KV, 1, 1),
             "x_shape": i64(1, H, -1, HD), "o_shape": i64(1, -1, H * HD),
             "h0": i64(0), "h1": i64(HD // 2), "h2": i64(HD), "ax3": i64(3),
             "rs": i64(-1), "re": i64(-(2 ** 63)), "rstep": i64(-1)}
    n = helper.make_node
    nodes = [n("Gather", ["emb", "input_ids"], ["x"]),
             n("Pow", ["x", "two"], ["x2"]), n("ReduceMean", ["x2", "ax_last"], ["ms"], keepdims=1),
             n("Add", ["ms", "eps"], ["mse"]), n("Sqrt", ["mse"], ["sd"]), n("Reciprocal", ["sd"], ["rsd"]),
             n("Mul", ["x", "rsd"], ["xn"]), n("Mul", ["g", "xn"], ["h"]),
             # positions and the rotary tables: from the input's shape alone
             n("Shape", ["input_ids"], ["s1"], start=1), n("Squeeze", ["s1", "ax0"], ["S"]),
             n("Range", ["zero", "S", "one"], ["pos"]), n("Cast", ["pos"], ["posf"], to=TensorProto.FLOAT if dt == np.float32 else TensorProto.FLOAT16),
             n("Unsqueeze", ["posf", "ax1"], ["posc"]), n("Mul", ["posc", "inv_freq"], ["fr"]),
             n("Concat", ["fr", "fr"], ["emb_f"], axis=-1), n("Cos", ["emb_f"], ["cos"]), n("Sin", ["emb_f"], ["sin"]),
             n("Unsqueeze", ["pos", "ax0"], ["kpos"]), n("Unsqueeze", ["pos", "ax1"], ["qpos"]),
             n("LessOrEqual", ["kpos", "qpos"], ["causal"]), n("Where", ["causal", "zero_f", "ninf"], ["mask"])]
    for t, wn, shp, heads in (("q", "wq", "q_shape", H), ("k", "wk", "kv_shape", KV), ("v", "wv", "kv_shape", KV)):
        nodes += [n("MatMul", ["h", wn], [t + "p"]), n("Reshape", [t + "p", shp], [t + "r"]),
                  n("Transpose", [t + "r"], [t + "t"], perm=[0, 2, 1, 3])]
        if t == "v":
            continue
        nodes += [n("Slice", [t + "t", "h0", "h1", "ax3"], [t + "lo"]), n("Slice", [t + "t", "h1", "h2", "ax3"], [t + "hi"]),
                  n("Neg", [t + "hi"], [t + "nh"]), n("Concat", [t + "nh", t + "lo"], [t + "rot"], axis=-1),
                  n("Mul", [t + "t", "cos"], [t + "c"]), n("Mul", [t + "rot", "sin"], [t + "s"]),
                  n("Add", [t + "c", t + "s"], [t + "e"])]
    for t in ("k", "v"):  # GQA: every kv head serves H / KV query heads
        src = "ke" if t == "k" else "vt"
        nodes += [n("Unsqueeze", [src, "ax2"], [t + "u"]), n("Expand", [t + "u", "rep"], [t + "x"]),
                  n("Reshape", [t + "x", "x_shape"], [t + "g"])]
    nodes += [n("Transpose", ["kg"], ["kT"], perm=[0, 1, 3, 2]), n("MatMul", ["qe", "kT"], ["sc"]),
              n("Mul", ["sc", "scale"], ["scs"]), n("Add", ["scs", "mask"], ["scm"]),
              n("Softmax", ["scm"], ["p"], axis=-1), n("MatMul", ["p", "vg"], ["o"]),
              n("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]), n("Reshape", ["ot", "o_shape"], ["of"]),
              n("MatMul", ["of", "wo"], ["op"]), n("Add", ["x", "op"], ["y"]),
              n("Slice", ["y", "rs", "re", "ax_last", "rstep"], ["out"])]  # reversed features: a negative stride
    return make_model(nodes, [("input_ids", np.int64, [1, "S"])], [("out", dt, None)], inits,
                      opset=18, name="attention_block")


def test_attention_block_runs_on_the_npu(tmp_path):
    import onnxruntime as ort
    out = str(tmp_path / "out")
    model = _attention_block()
    r = compile_onnx(model, out, CompileOptions(target="ascend", symbol_sizes=(7, 1)))
    assert r.report["verified"], r.report.get("failure")
    plan = _plan(out)
    assert plan["host_ops"] == {} and r.report["ascend"]["host_ops"] == {}
    where = {}
    for s in plan["steps"]:
        where.setdefault(s["op"], set()).add(s["where"])
    # what reads tensor data runs on the NPU; positions, cos/sin and the mask come from the shape alone
    for op in ("moec.gather", "moec.matmul", "moec.softmax", "moec.neg", "moec.reduce_mean", "moec.pow"):
        assert where[op] == {"npu"}, (op, where[op])
    assert {"moec.cos", "moec.sin", "moec.range", "moec.less_equal", "moec.select"} <= set(plan["tiling_ops"])
    assert "npu" in where["moec.slice"] and "npu" in where["moec.concat"] and "npu" in where["moec.expand"]
    mm = [s for s in plan["steps"] if s["op"] == "moec.matmul"]
    assert sum(bool(s.get("batched")) for s in mm) == 2 and all("grouped_matmul" in s["kernels"] for s in mm)
    assert [s["b_fused"] for s in mm if s.get("batched")] == [True, False]  # K^T read in place; V^T copied

    art = get_backend("ascend", "Ascend910B2").load(out)
    for S in (5, 2, 5):  # a shape seen before reuses its tiling values (cos/sin, mask), not recomputed
        ids = np.random.default_rng(S).integers(-V, V, (1, S))  # negative ids count from the end, as ONNX says
        want = ort.InferenceSession(model.SerializeToString()).run(None, {"input_ids": ids})[0]
        np.testing.assert_allclose(art([ids])[0], want, rtol=1e-5, atol=1e-5)
    assert art.tiling_evals["moec.cos"] == 2, art.tiling_evals
    assert not art.host_ops
    for k in ("vec_gather", "vec_copy", "vec_transpose", "vec_elementwise", "vec_rowwise", "grouped_matmul"):
        assert art.launches.get(k, 0) > 0, (k, art.launches)
    assert art.cube_by_op["moec.matmul"]["mmad_f32"] > 0
    with pytest.raises(RuntimeFailure, match=r"gather: index 50 out of range \[-50, 50\)"):
        art([np.array([[3, 50]])])
    # the cost model prints an estimate for each new kernel (batched matmul parts included)
    import onnx
    from moec.cli import main
    onnx.save(model, str(tmp_path / "block.onnx"))
    assert main(["inspect", str(tmp_path / "block.onnx"), "--target", "ascend"]) == 0


@pytest.mark.parametrize("dt", [np.float32, np.float16])
def test_layout_kernels_against_numpy(dt, tmp_path):
    """vec_transpose (blocks with a tail row block, several batch entries; rows too long for a block fall back to
    vec_copy's strided reads) and vec_copy's slices with negative steps, expands and concats, bit for bit."""
    from moec.codegen.ascend import vector_ops
    m = make_model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1])], [("x", dt, [2, "R", 24])],
                   [("y", dt, None)], name="transpose_last2")
    out = str(tmp_path / "out")
    assert compile_onnx(m, out, CompileOptions(target="ascend", symbol_sizes=(37, 1))).report["verified"]
    art = get_backend("ascend", "Ascend910B2").load(out)
    rng = np.random.default_rng(0)
    for shp in [(3, 37, 24), (1, 5, 3), (2, 9, 1000), (1, 1, 1)]:
        x = rng.standard_normal(shp).astype(dt)
        np.testing.assert_array_equal(vector_ops.transpose_last2(art, x), np.swapaxes(x, -1, -2))
    assert art.launches["vec_transpose"] >= 3 and art.launches.get("vec_copy", 0) >= 1, art.launches
    x = rng.standard_normal((3, 10, 7)).astype(dt)
    o = np.zeros((3, 4, 3), dt)  # x[:, 8:0:-2, ::-3] through the copy's offset and negative strides
    vector_ops.copy_strided(art, x, o, [3, 4, 3], [70, -14, -3], [12, 3, 1], soff=8 * 7 + 6)
    np.testing.assert_array_equal(o, x[:, 8:0:-2, ::-3])
    np.testing.assert_array_equal(vector_ops.expand_to(art, x[:, :1], (3, 5, 7)), np.broadcast_to(x[:, :1], (3, 5, 7)))
    # ScatterND (reduction none) over the first two dims, negative components wrapped; split into uneven parts
    idx = np.array([[0, -1], [2, 3], [1, 0]])
    upd = rng.standard_normal((3, 7)).astype(dt)
    want = x.copy()
    for (i, j), u in zip(idx, upd):
        want[i, j] = u
    sc = type("Op", (), {"name": "moec.scatter_nd", "attrs": {"reduction": "none"}})()
    np.testing.assert_array_equal(vector_ops.scatter_nd_launch(art, sc, [x, idx, upd]), want)
    with pytest.raises(RuntimeFailure, match="out of range"):
        vector_ops.scatter_nd_launch(art, sc, [x, np.array([[3, 0]]), upd[:1]])
    sp = type("Op", (), {"name": "moec.split", "attrs": {"axis": -1}})()
    parts = vector_ops.layout_launch(art, sp, [x, np.array([2, 0, 5])])
    for got, ref in zip(parts, np.split(x, [2, 2], axis=-1)):
        np.testing.assert_array_equal(got, ref)


# a tiny 2-layer decoder: hidden 32, 4 heads over 2 kv heads (GQA), 4 experts, top-2, vocab 128
TINY_LM = dict(hidden_size=32, intermediate_size=64, moe_intermediate_size=48, shared_expert_intermediate_size=48,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4,
               num_local_experts=4, num_experts_per_tok=2, vocab_size=128, max_position_embeddings=64,
               decoder_sparse_step=1, mlp_only_layers=[])
# DeepSeek-V3: multi-head latent attention (no GQA: kv heads = heads, head_dim = the rope part), 2 expert groups
LM_EXTRA = {"deepseek_v3": dict(num_key_value_heads=4, head_dim=None, n_routed_experts=4, n_group=2, topk_group=1,
                                first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
                                qk_nope_head_dim=8, v_head_dim=8, n_shared_experts=1)}


def test_mask_ops_run_on_the_npu(tmp_path):
    """The boolean side of a padding mask on vec_mask: Cast int64 -> bool, And / Or / Not with broadcasts, Where
    with a full and a scalar branch (-inf passes through Select unchanged), against onnxruntime."""
    import onnxruntime as ort
    n = helper.make_node
    nodes = [n("Cast", ["m"], ["c"], to=TensorProto.BOOL), n("And", ["c", "b"], ["d"]), n("Not", ["d"], ["e"]),
             n("Or", ["e", "c"], ["f"]), n("Where", ["f", "x", "ninf"], ["out"])]
    model = make_model(nodes, [("m", np.int64, [2, "S"]), ("b", np.bool_, [1, "S"]), ("x", np.float32, [3, 2, "S"])],
                       [("out", np.float32, None)], {"ninf": np.array(-np.inf, np.float32)}, name="mask_ops")
    out = str(tmp_path / "out")
    assert compile_onnx(model, out, CompileOptions(target="ascend", symbol_sizes=(300, 1))).report["verified"]
    assert _plan(out)["host_ops"] == {}
    art = get_backend("ascend", "Ascend910B2").load(out)
    rng = np.random.default_rng(0)
    feeds = {"m": rng.integers(-2, 3, (2, 2500)) * (1 << 40) * rng.integers(0, 2, (2, 2500)),  # high word only
             "b": rng.integers(0, 2, (1, 2500)).astype(bool), "x": rng.standard_normal((3, 2, 2500)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(art([feeds[k] for k in ("m", "b", "x")])[0], want)
    assert art.launches.get("vec_mask", 0) >= 5 and not art.host_ops


@pytest.mark.parametrize("dt", [np.float32, np.float16])
def test_float_comparisons_on_vec_mask(dt, tmp_path):
    """Equal / Less / LessOrEqual / Greater / GreaterOrEqual and IsNaN / IsInf (which the front end lowers to
    comparisons) on vec_mask's Compare, f32 and f16, full, row, per-row and scalar operands, bit for bit against
    numpy with NaN (unequal to itself, unordered), +-inf, -0 == +0 and subnormals; several chunks and a tail."""
    n = helper.make_node
    nodes = [n("IsNaN", ["x"], ["nan"]), n("Less", ["x", "y"], ["lt"]), n("LessOrEqual", ["x", "z"], ["le"]),
             n("Greater", ["x", "ninf"], ["gt"]), n("GreaterOrEqual", ["y", "x"], ["ge"]), n("Equal", ["x", "y"], ["eq"]),
             n("IsInf", ["x"], ["inf"]), n("Equal", ["x", "x"], ["self"])]
    outs = ["nan", "lt", "le", "gt", "ge", "eq", "inf", "self"]
    model = make_model(nodes, [("x", dt, [2, "S"]), ("y", dt, [1, "S"]), ("z", dt, [2, 1])],
                       [(o, np.bool_, None) for o in outs], {"ninf": np.array(-np.inf, dt)}, name="compare")
    out = str(tmp_path / "out")
    assert compile_onnx(model, out, CompileOptions(target="ascend", symbol_sizes=(300, 1))).report["verified"]
    assert _plan(out)["host_ops"] == {}, _plan(out)["host_ops"]
    art = get_backend("ascend", "Ascend910B2").load(out)
    rng = np.random.default_rng(0)
    tiny = np.finfo(dt).smallest_subnormal
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny, np.finfo(dt).max, 1.0, -1.0], dt)
    S = 2500
    x = rng.choice(special, (2, S)).astype(dt)
    x[:, ::3] = rng.standard_normal((2, len(range(0, S, 3)))).astype(dt)
    y = x[1:].copy()                             # equal where row 1 has no NaN
    y[:, ::2] = rng.choice(special, (1, len(range(0, S, 2))))
    z = np.array([[np.nan], [-0.0]], dt)
    got = art([x, y, z])
    with np.errstate(invalid="ignore"):
        want = [np.isnan(x), x < y, x <= z, x > -np.inf, y >= x, x == y, np.isinf(x), x == x]
    for name, g, w in zip(outs, got, want):
        assert g.dtype == np.bool_ and g.shape == w.shape, (name, g.dtype, g.shape)
        np.testing.assert_array_equal(g, w, err_msg=name)
    assert all(w.any() and not w.all() for w in want[:2] + want[3:]) and not want[2][0].any() and want[2][1].any()
    assert art.launches.get("vec_mask", 0) >= 8 and not art.host_ops, art.launches


def _causal_lm(arch: str, attn: str = "eager"):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForCausalLM
    kw = dict(TINY_LM, **LM_EXTRA.get(arch, {}))
    cfg = AutoConfig.for_model(arch, **{k: v for k, v in kw.items() if v is not None})
    cfg._experts_implementation = "batched_mm"
    cfg._attn_implementation = attn  # transformers' default, sdpa, exports IsNaN on the scores (vec_mask's Compare)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False).logits

    return Logits(model).eval()


@pytest.mark.slow
@pytest.mark.parametrize("arch,layers,attn", [("mixtral", ["mixtral"] * 2, "eager"), ("mixtral", ["mixtral"] * 2, "sdpa"),
                                              ("qwen2_moe", ["qwen2-moe"] * 2, "eager"),
                                              ("deepseek_v3", ["deepseek-v3"] * 2, "eager")])
def test_real_causal_lm_has_no_host_ops(arch, layers, attn, tmp_path):
    """A tiny random 2-layer transformers CausalLM, dynamo ONNX export with input_ids, ``moec compile --target
    ascend``: both MoE layers recognised, every op on the NPU (or tiling), verified against onnxruntime.  sdpa
    attention (transformers' default) exports IsNaN on the attention weights: equal(x, x) runs on vec_mask."""
    import onnxruntime as ort
    import torch
    from moec.cli import main
    lm = _causal_lm(arch, attn)
    path = str(tmp_path / "lm.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lm, (torch.randint(0, 128, (1, 6)),), path, input_names=["input_ids"],
                          output_names=["logits"], dynamo=True, dynamic_shapes=({1: "S"},))
    out = tmp_path / "out"
    assert main(["compile", path, "--target", "ascend", "-o", str(out)]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"] and [la["family"] for la in rep["moe_layers"]] == layers, rep["moe_layers"]
    plan = _plan(str(out))
    assert plan["host_ops"] == {}, plan["host_ops"]
    if attn == "sdpa":
        assert any(st["op"] == "moec.equal" and st["where"] == "npu" and st["kernels"] == ["vec_mask"]
                   for st in plan["steps"]), "IsNaN's comparison is not on vec_mask"
    art = get_backend("ascend", "Ascend910B2").load(str(out))
    sess = ort.InferenceSession(path)
    ids = np.random.default_rng(3).integers(0, 128, (1, 11))
    np.testing.assert_allclose(art([ids])[0], sess.run(None, {"input_ids": ids})[0], rtol=1e-4, atol=1e-5)
    assert not art.host_ops
    for k in ("vec_gather", "vec_copy", "grouped_matmul", "moe_gating", "moe_finalize") + (("vec_mask",) if attn == "sdpa"
                                                                                        else ()):
        assert art.launches.get(k, 0) > 0, (k, art.launches)


@pytest.mark.slow
def test_f16_attention_block_runs_on_the_npu(tmp_path):
    """The same block in f16: half tensors in GM, half cube operands (f32 accumulation).  Checked against moec's
    reference semantics (every op rounds to half) tightly and against onnxruntime loosely: onnxruntime's f16 CPU
    kernels round the intermediates of this 40-op chain differently (the reference and onnxruntime differ by
    about 2e-2 here as well, the emulator and the reference not at all)."""
    import onnxruntime as ort
    from moec.ir.interpreter import run as ir_run
    out = str(tmp_path / "out")
    model = _attention_block(np.float16)
    compile_onnx(model, out, CompileOptions(target="ascend", verify=False))
    assert _plan(out)["host_ops"] == {}
    art = get_backend("ascend", "Ascend910B2").load(out)
    ids = np.random.default_rng(0).integers(0, V, (1, 7))
    got = art([ids])[0].astype(np.float32)
    ref = np.asarray(list(ir_run(art.module, [ids]).values())[0], np.float32)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"input_ids": ids})[0].astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=4e-3, atol=2e-3)
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=5e-2)
    assert art.cube_by_op["moec.matmul"]["mmad_f16"] > 0 and not art.host_ops


@pytest.mark.slow
def test_torchscript_export_with_an_attention_mask(tmp_path):
    """The TorchScript exporter needs an attention_mask input (without one, transformers 5's mask code calls
    aten::diff, which it cannot export); its graph loses the projections' static widths (a ? after a reshape).
    The padding mask's bool logic runs on vec_mask: no host op, checked with padded rows."""
    import torch
    from moec.cli import main

    class WithMask(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    lm = WithMask(_causal_lm("mixtral").m).eval()
    path = str(tmp_path / "lm.onnx")
    ids, am = torch.randint(0, 128, (2, 6)), torch.ones(2, 6, dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lm, (ids, am), path, input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamo=False, opset_version=18,
                          dynamic_axes={"input_ids": {0: "B", 1: "S"}, "attention_mask": {0: "B", 1: "S"}})
    out = tmp_path / "out"
    assert main(["compile", path, "--target", "ascend", "-o", str(out)]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"] and len(rep["moe_layers"]) == 2
    assert _plan(str(out))["host_ops"] == {}
    import onnxruntime as ort
    art = get_backend("ascend", "Ascend910B2").load(str(out))
    ids = np.random.default_rng(5).integers(0, 128, (2, 9))
    am = np.ones((2, 9), np.int64)
    am[0, :3] = 0  # left padding in one row, right padding in the other
    am[1, 7:] = 0
    want = ort.InferenceSession(path).run(None, {"input_ids": ids, "attention_mask": am})[0]
    np.testing.assert_allclose(art([ids, am])[0], want, rtol=1e-4, atol=1e-5)
    assert art.launches.get("vec_mask", 0) > 0 and not art.host_ops
