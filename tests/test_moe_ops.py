"""MoE ops: IR text round trip, reference semantics against direct numpy formulas of
moe-routing.md, and the C kernels against the reference interpreter."""
import numpy as np
import pytest

from helpers import check_ir_text
from moec.driver import build_module
from moec.ir import parse_module, print_module, run, verify_module, WeightStore
from moec.ir.core import IRError

D, F, E = 16, 24, 8


def _module(route_attrs, act="swiglu", k=2, bias=False, shared=False, gate=False, weights_at="none",
            capacity=False, b_in=False, b_out=False, layout="concat", extra_ffn=""):
    from moec.ir.ops.moe import GATED
    I = 2 * F if act in GATED else F
    rng = np.random.default_rng(0)
    ws = WeightStore()
    ws.set("wr", (rng.standard_normal((D, E)) / 3).astype(np.float32))
    ws.set("w_in", (rng.standard_normal((E, I, D)) / 4).astype(np.float32))
    ws.set("w_out", (rng.standard_normal((E, D, F)) / 5).astype(np.float32))
    ws.set("bias", (rng.standard_normal(E) / 10).astype(np.float32))
    ws.set("b_in", (rng.standard_normal((E, I)) / 10).astype(np.float32))
    ws.set("b_out", (rng.standard_normal((E, D)) / 10).astype(np.float32))
    ws.set("s_in", (rng.standard_normal((2, I, D)) / 4).astype(np.float32))
    ws.set("s_out", (rng.standard_normal((2, D, F)) / 5).astype(np.float32))
    ws.set("gate", (rng.standard_normal(D) / 4).astype(np.float32))
    X = 'tensor<?x16xf32, "T">'
    L = 'tensor<?x8xf32, "T">'
    W = f'tensor<?x{k}xf32, "T">'
    ID = f'tensor<?x{k}xi64, "T">'
    ra = ", ".join(f"{key} = {val}" for key, val in route_attrs.items())
    ffn_attrs = f'activation = "{act}", gate_layout = "{layout}"{extra_ffn}'
    lines = [
        'module {',
        f'  func.func @main(%x: {X}) -> ({X}) attributes {{moec.inputs = ["x"], moec.outputs = ["y"]}} {{',
        '    %wr = "moec.constant"() {value = dense_resource<wr> : tensor<16x8xf32>} : () -> tensor<16x8xf32>',
        f'    %w_in = "moec.constant"() {{value = dense_resource<w_in> : tensor<8x{I}x16xf32>}} : () -> tensor<8x{I}x16xf32>',
        f'    %w_out = "moec.constant"() {{value = dense_resource<w_out> : tensor<8x16x{F}xf32>}} : () -> tensor<8x16x{F}xf32>',
        f'    %logits = "moec.matmul"(%x, %wr) : ({X}, tensor<16x8xf32>) -> {L}',
    ]
    route_ops = "%logits"
    route_types = L
    if bias:
        lines.append('    %bias = "moec.constant"() {value = dense_resource<bias> : tensor<8xf32>} : () -> tensor<8xf32>')
        route_ops += ", %bias"
        route_types += ", tensor<8xf32>"
    lines.append(f'    %r:2 = "moe.route"({route_ops}) {{k = {k} : i64{", " + ra if ra else ""}}} : ({route_types}) -> ({W}, {ID})')
    lines.append(f'    %p:2 = "moe.dispatch"(%r#1) {{num_experts = 8 : i64, block = 4 : i64}} : ({ID}) -> (tensor<?xi64>, tensor<9xi64>)')
    extras, etypes, eattrs = "", "", ""
    if b_in:
        lines.append(f'    %b_in = "moec.constant"() {{value = dense_resource<b_in> : tensor<8x{I}xf32>}} : () -> tensor<8x{I}xf32>')
        extras += ", %b_in"; etypes += f", tensor<8x{I}xf32>"; eattrs += ", has_b_in = true"
    if b_out:
        lines.append('    %b_out = "moec.constant"() {value = dense_resource<b_out> : tensor<8x16xf32>} : () -> tensor<8x16xf32>')
        extras += ", %b_out"; etypes += ", tensor<8x16xf32>"; eattrs += ", has_b_out = true"
    if weights_at != "none":
        extras += ", %r#0"; etypes += f", {W}"; eattrs += f', weights_at = "{weights_at}"'
    lines.append(f'    %ye = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out{extras}) {{{ffn_attrs}{eattrs}}} : '
                 f'({X}, {ID}, tensor<?xi64>, tensor<9xi64>, tensor<8x{I}x16xf32>, tensor<8x16x{F}xf32>{etypes}) -> '
                 f'tensor<?x{k}x16xf32, "T">')
    cextra, ctypes_, cattrs = "", "", f"weighted = {'false' if weights_at != 'none' else 'true'}"
    if shared:
        lines.append(f'    %s_in = "moec.constant"() {{value = dense_resource<s_in> : tensor<2x{I}x16xf32>}} : () -> tensor<2x{I}x16xf32>')
        lines.append(f'    %s_out = "moec.constant"() {{value = dense_resource<s_out> : tensor<2x16x{F}xf32>}} : () -> tensor<2x16x{F}xf32>')
        sops, stypes = "%x, %s_in, %s_out", f"{X}, tensor<2x{I}x16xf32>, tensor<2x16x{F}xf32>"
        if gate:
            lines.append('    %gate = "moec.constant"() {value = dense_resource<gate> : tensor<16xf32>} : () -> tensor<16xf32>')
            sops += ", %gate"; stypes += ", tensor<16xf32>"
        lines.append(f'    %sh = "moe.shared_experts"({sops}) {{{ffn_attrs}}} : ({stypes}) -> {X}')
        cextra += ", %sh"; ctypes_ += f", {X}"; cattrs += ", has_shared = true"
    if capacity:
        cextra += ", %x, %r#1"; ctypes_ += f", {X}, {ID}"; cattrs += ", passthrough = true"
    lines.append(f'    %y = "moe.combine"(%ye, %r#0{cextra}) {{{cattrs}}} : (tensor<?x{k}x16xf32, "T">, {W}{ctypes_}) -> {X}')
    lines += [f'    func.return %y : {X}', '  }', '}']
    m = parse_module("\n".join(lines) + "\n", ws)
    verify_module(m)
    return m


CASES = {
    "mixtral": (dict(norm='"sum"'), {}),
    "qwen_no_norm": (dict(), {"k": 4}),
    "dbrx_l1": (dict(norm='"l1"'), {"k": 4}),
    "deepseek_v2_groups": (dict(n_group="4 : i64", topk_group="2 : i64", scale="2.5 : f64"),
                           {"k": 3, "shared": True}),
    "deepseek_v3": (dict(scoring='"sigmoid"', n_group="4 : i64", topk_group="2 : i64", group_score='"top2_sum"',
                         norm='"sum"', norm_eps="1.0e-20 : f64", scale="2.5 : f64"),
                    {"k": 4, "bias": True, "shared": True}),
    "gpt_oss": (dict(scoring='"none"', post='"softmax"'),
                {"k": 2, "b_in": True, "b_out": True, "layout": "interleaved",
                 "extra_ffn": ", alpha = 1.702 : f64, beta = 1.0 : f64, limit = 7.0 : f64"}),
    "granite_folded": (dict(scoring='"none"', post='"softmax"'), {"k": 2, "weights_at": "output"}),
    "llama4": (dict(scoring='"none"', post='"sigmoid"'), {"k": 1, "weights_at": "input", "shared": True}),
    "qwen2_shared_gate": (dict(), {"k": 2, "shared": True, "gate": True}),
    "switch_capacity": (dict(capacity="2 : i64"), {"k": 1, "act": "relu", "capacity": True}),
    "gelu_experts": (dict(norm='"sum"'), {"act": "gelu", "b_out": True}),
    "silu_experts": (dict(), {"act": "silu"}),
}


def _inputs(T, same=False, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, D)).astype(np.float32)
    if same:
        x[:] = x[0]
    return x


@pytest.mark.parametrize("name", sorted(CASES))
def test_moe_ops_c_matches_reference(name, tmp_path):
    ra, kw = CASES[name]
    m = _module(ra, **kw)
    check_ir_text(m)
    art = build_module(m, str(tmp_path / "out"))
    for T, same in [(7, False), (1, False), (6, True)]:
        x = _inputs(T, same)
        want = run(m, {"x": x})["y"]
        got = art([x])[0]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=f"{name} T={T} same={same}")


def test_route_reference_matches_formulas():
    """Reference semantics of moe.route vs the moe-routing.md formulas written out in numpy."""
    from moec.ir.ops.moe import RouteOp
    from moec.ir import Value, TensorType, DType
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((9, 8)).astype(np.float32)
    bias = (rng.standard_normal(8) / 5).astype(np.float32)
    lv = Value(TensorType(DType.F32, ("T", 8)))
    bv = Value(TensorType(DType.F32, (8,)))
    # DeepSeek-V3
    o = RouteOp.create([lv, bv], dict(k=2, scoring="sigmoid", n_group=4, topk_group=2, group_score="top2_sum",
                                       norm="sum", norm_eps=1e-20, scale=2.5))
    w, ids = o.reference(logits, bias)
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    c = s + bias
    for t in range(9):
        g = np.array([np.sort(c[t, i * 2:(i + 1) * 2])[::-1][:2].sum() for i in range(4)])
        keep = np.argsort(-g, kind="stable")[:2]
        cm = np.full(8, -np.inf)
        for gi in keep:
            cm[gi * 2:(gi + 1) * 2] = c[t, gi * 2:(gi + 1) * 2]
        i = np.argsort(-cm, kind="stable")[:2]
        ww = s[t, i] / (s[t, i].sum() + 1e-20) * 2.5
        assert list(ids[t]) == list(i)
        np.testing.assert_allclose(w[t], ww, rtol=1e-6)
    # GPT-OSS: softmax after top-k of raw logits
    o = RouteOp.create([lv], dict(k=2, scoring="none", post="softmax"))
    w, ids = o.reference(logits)
    for t in range(9):
        i = np.argsort(-logits[t], kind="stable")[:2]
        v = logits[t, i].astype(np.float64)
        assert list(ids[t]) == list(i)
        np.testing.assert_allclose(w[t], np.exp(v) / np.exp(v).sum(), rtol=1e-6)
    # ties: lowest index wins
    o = RouteOp.create([lv], dict(k=2))
    w, ids = o.reference(np.zeros((2, 8), np.float32))
    assert ids.tolist() == [[0, 1], [0, 1]]


def test_capacity_drops_tokens_in_order():
    from moec.ir.ops.moe import RouteOp
    from moec.ir import Value, TensorType, DType
    lv = Value(TensorType(DType.F32, ("T", 4)))
    o = RouteOp.create([lv], dict(k=1, capacity=2))
    logits = np.tile(np.array([[0, 5, 0, 0]], np.float32), (4, 1))
    w, ids = o.reference(logits)
    assert ids[:, 0].tolist() == [1, 1, -1, -1] and w[2, 0] == 0


def test_verifier_rejects_bad_moe_ops():
    good = _module(dict(norm='"sum"'))
    from moec.ir import print_module
    text = print_module(good)
    assert "k = 2 : i64, min_weight" in text
    bad = text.replace("k = 2 : i64, min_weight", "k = 9 : i64, min_weight")
    with pytest.raises(IRError, match="moe.route.*k=9"):
        verify_module(parse_module(bad, good.weights))
    bad = text.replace('activation = "swiglu"', 'activation = "relu"', 1)
    with pytest.raises(IRError, match="moe.experts.*w_in has 48 rows"):
        verify_module(parse_module(bad, good.weights))


def test_relu_experts_keep_nan_as_the_reference(tmp_path):
    """moe.experts' relu passes NaN, as moec.relu, onnxruntime's Relu and the reference do (the C
    kernels mapped NaN to 0: a token whose expert input is NaN came out finite)."""
    m0 = _module(dict(capacity="2 : i64"), k=1, act="relu", capacity=True)
    X = 'tensor<?x16xf32, "T">'
    text = print_module(m0)
    text = text.replace(f"@main(%x: {X})", f"@main(%x: {X}, %x2: {X})", 1)
    text = text.replace('moec.inputs = ["x"]', 'moec.inputs = ["x", "x2"]', 1)
    text = text.replace('"moe.experts"(%x,', '"moe.experts"(%x2,', 1)
    assert text.count("%x2") >= 2, "the experts must read the second input"
    m = parse_module(text, m0.weights)
    art = build_module(m, str(tmp_path / "out"))
    x = _inputs(6)
    x2 = _inputs(6, seed=2)
    x2[[1, 4], 3] = np.nan
    want = run(m, {"x": x, "x2": x2})["y"]
    got = art([x, x2])[0]
    assert np.isnan(want[[1, 4]]).all(axis=1).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-5, atol=2e-6)


def test_f32_expert_rows_do_not_depend_on_the_tile_height(tmp_path):
    """The f32 experts' prefill tiles (rt_moe_f32.c: up to FMR rows of an expert at once) run each element's
    FMAs in k order whatever the tile's height: a token's output has the same bits in a batch of 200 tokens
    (experts of ~50 rows: tiles of 12 and a rest) as in the batch's first 37 or 64 tokens (other heights),
    while every expert keeps more than the GEMV's 2 rows."""
    m = _module({})
    art = build_module(m, str(tmp_path / "out"))
    x = _inputs(200, seed=3)
    full = art([x])[0]
    for T in (37, 64):
        np.testing.assert_array_equal(art([x[:T]])[0], full[:T], err_msg=f"T={T}")
