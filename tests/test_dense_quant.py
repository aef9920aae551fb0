"""Quantised dense linear layers (issue 17 item 3): ``--weights`` on every MatMul/Gemm with a constant
weight (moec.linear_q, passes/quantize.py; C kernels in rt_moe_f32.c, shared with the experts).

The compiled code is checked against the op's reference semantics (dequantise, then compute in f32)
and the reference itself against an independent numpy computation from the f32 weights; the native
build (AVX-512 BF16 / VNNI where the host has them) and builds with those features off (avx2,
generic: the portable paths) must agree."""
import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from moec.driver import CompileOptions, build_module, compile_onnx
from moec.ir import WeightStore, parse_module, run
from moec.ir.ops.moe import round_bf16
from moec.passes.quantize import QuantizeWeights, quantization_record

DENSE = ("bf16", "int8", "int4", "w8a8")


def _tt(shape):
    dims = "x".join("?" if isinstance(d, str) else str(d) for d in shape)
    names = [d for d in shape if isinstance(d, str)]
    syms = (', "' + ",".join(names) + '"') if names else ""
    return f"tensor<{dims}{'x' if dims else ''}f32{syms}>"


def _module(K, N, ws, router=False):
    """y = x @ W (MatMul), z = Gemm(x, Wt^T, b), r = x @ Wr feeding a moe.route when ``router``."""
    x = _tt(("M", K))
    ops = [f'%w = "moec.constant"() {{value = dense_resource<w> : {_tt((K, N))}}} : () -> {_tt((K, N))}',
           f'%wt = "moec.constant"() {{value = dense_resource<wt> : {_tt((N, K))}}} : () -> {_tt((N, K))}',
           f'%b = "moec.constant"() {{value = dense_resource<b> : {_tt((N,))}}} : () -> {_tt((N,))}',
           f'%y = "moec.matmul"(%x, %w) : ({x}, {_tt((K, N))}) -> {_tt(("M", N))}',
           f'%z = "moec.gemm"(%x, %wt, %b) {{trans_b = true}} : ({x}, {_tt((N, K))}, {_tt((N,))}) -> '
           f'{_tt(("M", N))}']
    outs = [("y", ("M", N)), ("z", ("M", N))]
    text = "\n".join(["module {", f'  func.func @main(%x: {x}) -> ({", ".join(_tt(s) for _, s in outs)}) '
                      f'attributes {{moec.inputs = ["x"], moec.outputs = ["y", "z"]}} {{',
                      *("    " + o for o in ops),
                      f"    func.return %y, %z : {', '.join(_tt(s) for _, s in outs)}", "  }", "}"])
    return parse_module(text, ws)


def _weights(K, N, seed=0):
    rng = np.random.default_rng(seed)
    ws = WeightStore()
    ws.set("w", rng.standard_normal((K, N)).astype(np.float32))
    ws.set("wt", rng.standard_normal((N, K)).astype(np.float32))
    ws.set("b", rng.standard_normal((N,)).astype(np.float32))
    return ws


def _quantised(mode, K, N, group=32, zp=False):
    ws = _weights(K, N)
    m = _module(K, N, ws)
    QuantizeWeights(mode, group, zp, scope="all", dense_modes=DENSE).run(m)
    return m, ws


def _numpy_dense(mode, x, w_nk, group, zp):
    """Independent numpy: quantise w [N, K] and x the documented way, multiply in float64."""
    x = np.asarray(x, np.float64)
    if mode == "bf16":
        wd = round_bf16(w_nk.astype(np.float32)).astype(np.float64)
        x = round_bf16(x.astype(np.float32)).astype(np.float64)
    elif mode in ("int8", "w8a8"):
        s = np.abs(w_nk).max(1) / 127.0
        wd = np.clip(np.rint(w_nk / s[:, None]), -127, 127) * s[:, None]
        if mode == "w8a8":
            sx = np.abs(x).max(1, keepdims=True) / 127.0
            x = np.clip(np.rint(x / sx), -127, 127) * sx
    else:
        N, K = w_nk.shape
        G = group or K
        g = w_nk.reshape(N, K // G, G).astype(np.float64)
        if zp:
            lo, hi = np.minimum(g.min(-1), 0), np.maximum(g.max(-1), 0)
            s = (hi - lo) / 15.0
            z = np.clip(np.rint(-lo / s), 0, 15)
            q = np.clip(np.rint(g / s[..., None]) + z[..., None], 0, 15)
            wd = ((q - z[..., None]) * s[..., None]).reshape(N, K)
        else:
            s = np.abs(g).max(-1) / 7.0
            q = np.clip(np.rint(g / s[..., None]), -8, 7)
            wd = (q * s[..., None]).reshape(N, K)
    return x @ wd.T


@pytest.mark.parametrize("mode,group,zp", [("bf16", 0, False), ("int8", 0, False), ("w8a8", 0, False),
                                           ("int4", 32, False), ("int4", 64, True), ("int4", 0, False)])
def test_reference_semantics_match_independent_numpy(mode, group, zp):
    K, N = 128, 40
    m, ws = _quantised(mode, K, N, group, zp)
    names = [o.name for o in m.main.ops if o.name != "moec.constant"]
    assert names == ["moec.linear_q", "moec.linear_q"], names
    x = np.random.default_rng(1).standard_normal((5, K)).astype(np.float32)
    got = run(m, [x])
    want_y = _numpy_dense(mode, x, ws["w"].T, group, zp)
    want_z = _numpy_dense(mode, x, ws["wt"], group, zp) + ws["b"]
    # f32 evaluation of the same quantised product: a few ulps of the K-term sums
    for g, w in ((got["y"], want_y), (got["z"], want_z)):
        assert np.abs(g - w).max() <= 1e-5 * np.abs(w).max() * np.sqrt(K), (mode, np.abs(g - w).max())


SHAPES = [(1, 64, 40), (2, 64, 33), (3, 128, 65), (9, 96, 100), (70, 256, 70)]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """One build per (mode, arch) of a module with every shape's K (two ops per K)."""
    out = {}
    d = tmp_path_factory.mktemp("dq")

    def get(mode, arch, K, N):
        key = (mode, arch, K, N)
        if key not in out:
            m, ws = _quantised(mode, K, N)
            out[key] = (m, build_module(m, str(d / "_".join(map(str, key))), arch=arch, threads=2))
        return out[key]
    return get


@pytest.mark.parametrize("mode", DENSE)
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_compiled_matches_reference(builds, mode, M, K, N):
    """GEMV (1-2 rows), odd tiles, several row blocks: compiled == reference semantics (f32 tolerance;
    w8a8's products are exact int32 sums, bf16's GEMM inputs are rounded alike on both sides)."""
    m, art = builds(mode, "native", K, N)
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
    want = run(m, [x])
    got = art([x])
    for g, (name, w) in zip(got, want.items()):
        assert g.shape == w.shape
        err = np.abs(g - w).max()
        assert err <= 1e-5 + 1e-5 * np.sqrt(K) * np.abs(w).max(), (mode, name, err)


@pytest.mark.parametrize("arch", ["avx2", "generic"])
@pytest.mark.parametrize("mode", DENSE)
def test_portable_paths_give_the_same_answer(builds, mode, arch):
    """Builds without AVX-512 (no vdpbf16ps, no VNNI, no permute tables) equal the native build."""
    M, K, N = 9, 96, 100
    m, nat = builds(mode, "native", K, N)
    _, port = builds(mode, arch, K, N)
    for rows in (1, M):
        x = np.random.default_rng(7 + rows).standard_normal((rows, K)).astype(np.float32)
        a, b = nat([x]), port([x])
        want = run(m, [x])
        for ga, gb, w in zip(a, b, want.values()):
            tol = 1e-5 + 1e-5 * np.sqrt(K) * np.abs(w).max()
            assert np.abs(ga - gb).max() <= tol and np.abs(gb - w).max() <= tol, (mode, arch, rows)


def test_threads_and_batched_input(tmp_path):
    """A [B, T, K] input (rows = every leading position) and 1 vs 2 threads agree."""
    K, N = 128, 300
    ws = _weights(K, N)
    m = _module(K, N, ws)
    QuantizeWeights("int4", 32, False, scope="all", dense_modes=DENSE).run(m)
    a1 = build_module(m, str(tmp_path / "a"), threads=1)
    a2 = build_module(m, str(tmp_path / "b"), threads=2)
    x = np.random.default_rng(3).standard_normal((40, K)).astype(np.float32)
    r1, r2, want = a1([x]), a2([x]), run(m, [x])
    for g1, g2, w in zip(r1, r2, want.values()):
        assert np.abs(g1 - w).max() <= 1e-4 * np.abs(w).max()
        assert np.abs(g1 - g2).max() <= 1e-4 * np.abs(w).max()


def test_scope_experts_and_target_without_dense_kernels_keep_dense_layers():
    K, N = 64, 32
    for kw, why in (({"scope": "experts", "dense_modes": DENSE}, None),
                    ({"scope": "all", "dense_modes": ()}, "this target has no dense quantised kernels"),
                    ({"scope": "all", "dense_modes": ("bf16",)}, "this target has no dense int8 kernels")):
        m = _module(K, N, _weights(K, N))
        QuantizeWeights("int8", **kw).run(m)
        assert [o.name for o in m.main.ops if o.name != "moec.constant"] == ["moec.matmul", "moec.gemm"]
        rec = quantization_record(m, "int8")
        assert rec["quantized_layers"] == 0
        if why:
            assert rec["dense_kept"] == [{"why": why, "layers": 2}]


def test_record_counts_layers_tensors_and_bytes():
    K, N = 64, 32
    m = _module(K, N, _weights(K, N))
    QuantizeWeights("int8", scope="all", dense_modes=DENSE).run(m)
    rec = quantization_record(m, "int8")
    assert rec["by_scope"] == {"dense": {"layers": 2, "tensors": 2, "bytes_before": 2 * K * N * 4,
                                         "bytes_after": 2 * (K * N + 4 * N)}}
    assert rec["quantized_layers"] == 2 and rec["bytes_after"] == 2 * (K * N + 4 * N)
    json.dumps(rec)


def test_bad_linear_q_is_an_ir_error():
    from moec.ir import IRError
    K, N = 64, 32
    m = _module(K, N, _weights(K, N))
    QuantizeWeights("int4", 32, scope="all", dense_modes=DENSE).run(m)
    lq = next(o for o in m.main.ops if o.name == "moec.linear_q")
    lq.attrs["wq_group"] = 48  # does not divide K
    with pytest.raises(IRError, match="group size"):
        lq.infer_types()


def test_w8a8_flip_criterion():
    """compiler/tolerances.py's w8a8 rule: a token re-rounded independently (Gaussian difference of
    relative RMS 0.013, as measured) passes; a wrong column, a wrong scale or a NaN does not."""
    from moec.tolerances import W8A8_FLIP_TOKEN_BOUND, w8a8_flip_check
    rng = np.random.default_rng(0)
    want = rng.standard_normal((2, 8, 4000)).astype(np.float32)
    got = want.copy()
    got[0, 3] += 0.013 * rng.standard_normal(4000).astype(np.float32)  # one flipped token
    r = w8a8_flip_check([got], [want])
    assert r["ok"] and r["flipped_tokens"] == 1 and r["token_rel_max"] < W8A8_FLIP_TOKEN_BOUND
    bad = got.copy()
    bad[1, 2, 17] += 3.0  # one wrong element: 3 rms, inside the token bound, outside the element bound
    r = w8a8_flip_check([bad], [want])
    assert not r["ok"] and r["element_excess_max"] > 1
    bad = got.copy()
    bad[1, 5] *= 1.1  # a wrong scale
    assert not w8a8_flip_check([bad], [want])["ok"]
    bad = got.copy()
    bad[0, 0, 0] = np.nan
    assert not w8a8_flip_check([bad], [want])["ok"]


@pytest.mark.parametrize("mode,group", [("int8", 64), ("w8a8", 64), ("int4", 16), ("bf16", 64)])
def test_whole_small_model_verifies(mode, group, tmp_path):
    """moec compile --weights MODE on an attention + MLP block (MatMul, MatMul + Add, Gemm transB with a
    bias, a Gemm with alpha 0.5 that stays f32): every other linear layer quantised, verified against
    the quantised reference, quantisation error vs onnxruntime f32 within the documented bound, the
    report says what was quantised and what was kept."""
    from test_dense_gemm import _attention_mlp_model
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(_attention_mlp_model().SerializeToString())
    res = compile_onnx(path, str(tmp_path / "out"), CompileOptions(weights=mode, group_size=group,
                                                                  symbol_sizes=(5, 1, 17)))
    rep = res.report
    assert rep["verified"], rep.get("failure")
    w = rep["weights"]
    # 7 linears: q (MatMul + its bias Add), k and v (fused into one by fuse-shared-linears: they read x), o, the
    # MLP's Gemm and MatMul, the output Gemm with alpha 0.5 (kept f32)
    assert w["by_scope"]["dense"]["layers"] == 5 and "experts" not in w["by_scope"]
    assert [k["layers"] for k in w["dense_kept"]] == [1] and "alpha" in w["dense_kept"][0]["why"]
    assert rep["op_histogram"]["moec.linear_q"] == 5 and rep["op_histogram"]["moec.split"] == 1
    q = rep["quantization_error"]
    assert q["token_rel_median"] <= q["bound_token_rel_median"]


def test_scope_experts_leaves_a_dense_model_alone(tmp_path):
    from test_dense_gemm import _attention_mlp_model
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(_attention_mlp_model().SerializeToString())
    res = compile_onnx(path, str(tmp_path / "out"), CompileOptions(weights="int8", weights_scope="experts",
                                                                  symbol_sizes=(5, 1)))
    w = res.report["weights"]
    assert w["quantized_layers"] == 0 and "warning" in w
    assert "moec.linear_q" not in res.report["op_histogram"]


def test_matmul_plus_bias_add_is_one_layer():
    """MatMul + Add of a bias [N] (torch Linear on the ONNX path): one linear_q with its bias."""
    K, N = 64, 32
    ws = _weights(K, N)
    x = _tt(("M", K))
    text = "\n".join([
        "module {", f'  func.func @main(%x: {x}) -> ({_tt(("M", N))}) attributes {{moec.inputs = ["x"], '
        'moec.outputs = ["y"]} {',
        f'    %w = "moec.constant"() {{value = dense_resource<w> : {_tt((K, N))}}} : () -> {_tt((K, N))}',
        f'    %y0 = "moec.matmul"(%x, %w) : ({x}, {_tt((K, N))}) -> {_tt(("M", N))}',
        f'    %b = "moec.constant"() {{value = dense_resource<b> : {_tt((N,))}}} : () -> {_tt((N,))}',
        f'    %y = "moec.add"(%b, %y0) : ({_tt((N,))}, {_tt(("M", N))}) -> {_tt(("M", N))}',
        f'    func.return %y : {_tt(("M", N))}', "  }", "}"])
    m = parse_module(text, ws)
    QuantizeWeights("int8", scope="all", dense_modes=DENSE).run(m)
    assert [o.name for o in m.main.ops if o.name != "moec.constant"] == ["moec.linear_q"]
    assert m.main.ops[-1].attrs["has_bias"]
    xv = np.random.default_rng(2).standard_normal((3, K)).astype(np.float32)
    want = _numpy_dense("int8", xv, ws["w"].T, 0, False) + ws["b"]
    got = run(m, [xv])["y"]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def _shared_module(S, D, F, act, layout="concat", limit=float("inf"), gate=True, seed=0):
    from moec.ir import DType, Module, TensorType, verify_module
    from moec.ir.core import Function, ResourceRef, Value
    from moec.ir.opdef import OPS
    rng = np.random.default_rng(seed)
    m = Module()
    I = 2 * F if act == "swiglu" else F
    arrs = {"w_in": (rng.standard_normal((S, I, D)) / np.sqrt(D)).astype(np.float32),
            "w_out": (rng.standard_normal((S, D, F)) / np.sqrt(F)).astype(np.float32),
            "gate": rng.standard_normal(D).astype(np.float32)}
    f = Function("main", [Value(TensorType(DType.F32, ("T", D)), "x")], ["x"])
    m.functions.append(f)
    cs = []
    for k in ("w_in", "w_out") + (("gate",) if gate else ()):
        key = m.weights.add(arrs[k], k)
        c = OPS["moec.constant"].create([], {"value": ResourceRef(key)}, k, [TensorType(DType.F32, arrs[k].shape)])
        f.ops.append(c)
        cs.append(c.results[0])
    sh = OPS["moe.shared_experts"].create([f.args[0]] + cs, {"activation": act, "gate_layout": layout,
                                                              "limit": limit, "alpha": 1.702 if limit < 1e9 else 1.0,
                                                              "beta": 1.0 if limit < 1e9 else 0.0}, "shared")
    f.ops.append(sh)
    f.outputs = [sh.results[0]]
    f.output_names = ["y"]
    verify_module(m)
    return m, arrs


@pytest.mark.parametrize("act,layout,limit", [("swiglu", "concat", float("inf")), ("swiglu", "interleaved", 7.0),
                                              ("silu", "concat", float("inf"))])
@pytest.mark.parametrize("mode", ["int8", "int4", "w8a8"])
def test_shared_experts_quantised_as_linear_layers(mode, act, layout, limit, tmp_path):
    """moe.shared_experts becomes linear_q projections (gate and up rows separately) and elementwise
    ops: the module's semantics equal numpy's FFN on the dequantised weights, the build equals the
    module, the f32 error is the format's."""
    from moec.ir.ops.moe import apply_activation, dequantize_weights
    from moec.passes.quantize import quantize_int4, quantize_int8
    S, D, F = 2, 64, 96
    m, arrs = _shared_module(S, D, F, act, layout, limit)
    x = np.random.default_rng(5).standard_normal((6, D)).astype(np.float32)
    want_f32 = run(m, [x])["y"]
    QuantizeWeights(mode, 32, scope="all", dense_modes=DENSE).run(m)
    names = [o.name for o in m.main.ops]
    assert "moe.shared_experts" not in names and names.count("moec.linear_q") == S * (3 if act == "swiglu" else 2)
    assert quantization_record(m, mode)["by_scope"]["shared"]["layers"] == names.count("moec.linear_q")
    got = run(m, [x])["y"]
    # independent: quantise each projection the documented way, then the FFN in float64
    y = np.zeros((6, D))
    for s in range(S):
        def deq(w):
            if mode == "int4":
                q, sc, _ = quantize_int4(w, 32, False)
                return dequantize_weights(q, "int4", 32, sc).astype(np.float64)
            q, sc = quantize_int8(w)
            return dequantize_weights(q, "int8", 0, sc).astype(np.float64)

        def xin(v):
            if mode != "w8a8":
                return v
            sx = np.abs(v).max(1, keepdims=True) / 127.0
            return np.clip(np.rint(v / sx), -127, 127) * sx
        w_in = arrs["w_in"][s]
        if act == "swiglu":
            rg, ru = ((slice(0, 2 * F, 2), slice(1, 2 * F, 2)) if layout == "interleaved" else (slice(0, F), slice(F, None)))
            h = np.concatenate([xin(x.astype(np.float64)) @ deq(w_in[rg]).T, xin(x.astype(np.float64)) @ deq(w_in[ru]).T], 1)
            a = apply_activation(h, {"activation": act, "gate_layout": "concat", "limit": limit,
                                     "alpha": 1.702 if limit < 1e9 else 1.0, "beta": 1.0 if limit < 1e9 else 0.0}, F)
        else:
            h = xin(x.astype(np.float64)) @ deq(w_in).T
            a = h / (1 + np.exp(-h))
        y += xin(a) @ deq(arrs["w_out"][s]).T
    y *= 1 / (1 + np.exp(-(x.astype(np.float64) @ arrs["gate"])))[:, None]
    assert np.abs(got - y).max() <= 1e-4 * np.abs(y).max(), np.abs(got - y).max()
    art = build_module(m, str(tmp_path / "o"))
    got_c = art([x])[0]
    assert np.abs(got_c - got).max() <= 1e-4 * np.abs(got).max()
    rel = np.sqrt(np.mean((got - want_f32) ** 2) / np.mean(want_f32 ** 2))
    assert rel < {"int8": 0.05, "w8a8": 0.07, "int4": 0.5}[mode]


def test_quantisation_error_counts_tokens_of_logits():
    """[B, S, V] logits are B * S tokens (one routing flip is one token over the bound, not the whole
    sequence's median)."""
    from moec.tolerances import quantization_error
    rng = np.random.default_rng(0)
    want = rng.standard_normal((1, 8, 500))
    got = want + 0.01 * rng.standard_normal(want.shape)
    got[0, 3] = rng.standard_normal(500)  # one token routed elsewhere
    q = quantization_error([got], [want], bound=0.07)
    assert q["tokens"] == 8 and q["tokens_over_4x_bound"] == 1 and q["token_rel_median"] < 0.02


def test_a_weight_two_layers_share_is_quantised_once():
    K, N = 64, 32
    ws = _weights(K, N)
    x = _tt(("M", K))
    text = "\n".join([
        "module {", f'  func.func @main(%x: {x}) -> ({_tt(("M", N))}, {_tt(("M", N))}) attributes '
        '{moec.inputs = ["x"], moec.outputs = ["y", "z"]} {',
        f'    %w = "moec.constant"() {{value = dense_resource<w> : {_tt((K, N))}}} : () -> {_tt((K, N))}',
        f'    %y = "moec.matmul"(%x, %w) : ({x}, {_tt((K, N))}) -> {_tt(("M", N))}',
        f'    %x2 = "moec.mul"(%x, %x) : ({x}, {x}) -> {x}',
        f'    %z = "moec.matmul"(%x2, %w) : ({x}, {_tt((K, N))}) -> {_tt(("M", N))}',
        f'    func.return %y, %z : {_tt(("M", N))}, {_tt(("M", N))}', "  }", "}"])
    m = parse_module(text, ws)
    QuantizeWeights("int4", 32, scope="all", dense_modes=DENSE).run(m)
    rec = quantization_record(m, "int4")
    assert rec["by_scope"]["dense"]["layers"] == 2 and rec["by_scope"]["dense"]["tensors"] == 1
    lq = [o for o in m.main.ops if o.name == "moec.linear_q"]
    assert lq[0].operands[1:] == lq[1].operands[1:]  # the same codes and scales
    xv = np.random.default_rng(1).standard_normal((3, K)).astype(np.float32)
    got = run(m, [xv])
    assert np.abs(got["z"] - _numpy_dense("int4", xv * xv, ws["w"].T, 32, False)).max() < 1e-4 * np.abs(got["z"]).max()


@pytest.mark.slow
@pytest.mark.parametrize("arch,mode", [("qwen2_moe", "int8"), ("mixtral", "w8a8"), ("qwen2_moe", "int4")])
def test_real_causal_lm_every_linear_layer(arch, mode, tmp_path, monkeypatch):
    """moec.compile on a real transformers 2-layer CausalLM with --weights MODE: attention projections,
    output layer, routed and (Qwen2-MoE) shared experts quantised, the router kept; verified (the
    quantisation error vs the model's own eager output bounded) and the logits close to eager."""
    torch = pytest.importorskip("torch")
    import moec
    from test_hf_compile import causal_lm
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    model = causal_lm(arch, "batched_mm")
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    cm = moec.compile(model, (ids,), weights=mode, group_size=16, dynamic_dims={0: {0: "B", 1: "S"}})
    rep = cm.stats.report
    assert rep["verified"], rep.get("failure")
    # q, k, v, o (some exports write o_proj as a bmm of the expanded weight: kept) x 2 layers + lm_head
    assert rep["op_histogram"].get("moec.linear_q", 0) >= 7 + (6 if arch == "qwen2_moe" else 0), rep["op_histogram"]
    xs = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(xs, use_cache=False).logits.float().numpy()
    out = cm(xs)
    got = np.asarray(out.detach().numpy() if hasattr(out, "detach") else out, np.float32)
    from moec.tolerances import QUANT_ERROR_BOUNDS, quantization_error
    q = quantization_error([got], [want], QUANT_ERROR_BOUNDS[mode])
    assert q["token_rel_median"] <= QUANT_ERROR_BOUNDS[mode], q
