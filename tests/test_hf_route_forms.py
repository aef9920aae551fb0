"""Routing and expert forms of real transformers families that ``moe.route`` / ``moe.experts`` gained for them
(issue 16): Inkling's always-on experts scored by the router (``moe.route`` n_shared), with the ONNX
ReduceLogSumExp its exports use; checked against transformers' own code, on the kernels, and on the real block
against eager, with a look-alike that must stay unrecognised."""
from __future__ import annotations

import numpy as np
import pytest

from moec.driver import build_module
from moec.ir import DType, TensorType, Value, parse_module, run
from moec.ir.ops.moe import RouteOp
from moec.ir.weights import WeightStore

D, F, E, S, K = 16, 8, 6, 2, 2  # hidden, expert width, routed experts, always-on experts, slots chosen


def _route(**attrs):
    lv = Value(TensorType(DType.F32, ("T", E + S)))
    bv = Value(TensorType(DType.F32, (E,)))
    return RouteOp.create([lv, bv] if attrs.pop("bias", False) else [lv], attrs)


def _by_expert(ids, w):
    """{(token, expert): weight} (transformers' top-k is unsorted: compare the slots as sets)."""
    return {(t, int(e)): float(v) for t in range(ids.shape[0]) for e, v in zip(ids[t], w[t])}


def test_n_shared_reference_is_transformers_inkling_router():
    """moe.route with n_shared (scoring sigmoid, norm sum, the scales' product) against transformers'
    InklingTopkRouter: the same chosen experts and weights, and the always-on experts' weights are its
    shared_gammas (softmax over logsigmoid of the chosen and the shared logits = sigmoid(l) / sum sigmoid)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.inkling.modeling_inkling import InklingTopkRouter

    class Cfg:
        n_routed_experts, n_shared_experts, hidden_size, route_scale, num_experts_per_tok = E, S, D, 2.5, K
    r = InklingTopkRouter(Cfg())
    torch.manual_seed(0)
    with torch.no_grad():
        r.weight.normal_()
        r.global_scale.fill_(0.7)
        r.e_score_correction_bias.normal_()
        x = torch.randn(40, D)
        _, tw, ti, gam = r(x)
        logits = (x @ r.weight.T).numpy()
    scale = float(np.float32(2.5) * np.float32(0.7))
    w, ids = _route(k=K, scoring="sigmoid", norm="sum", scale=scale, n_shared=S, bias=True).reference(
        logits, r.e_score_correction_bias.numpy())
    assert w.shape == ids.shape == (40, K + S)
    np.testing.assert_array_equal(ids[:, K:], np.broadcast_to(np.arange(E, E + S), (40, S)))
    got, want = _by_expert(ids[:, :K], w[:, :K]), _by_expert(ti.numpy(), tw.numpy())
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5)
    np.testing.assert_allclose(w[:, K:], gam.numpy(), rtol=1e-5, atol=1e-7)


def test_n_shared_rejected_where_undefined():
    from moec.ir.opdef import IRError
    with pytest.raises(Exception, match="n_shared"):
        _route(k=2, n_shared=S, n_group=2, topk_group=1)
    with pytest.raises(Exception, match="k=7"):
        _route(k=7, n_shared=S)
    assert IRError is not None


def _layer(route_attrs: str, bias: bool = True, slots: int = K + S, experts_attrs: str = "", fold: bool = False):
    """x -> logits [T, E+S] -> moe.route (n_shared) -> dispatch -> experts (E+S stacked) -> combine (``slots``
    per token; ``experts_attrs`` more moe.experts attributes; ``fold``: the routing weight applied by the
    experts at their output)."""
    rng = np.random.default_rng(0)
    ws = WeightStore()
    ws.set("wr", (rng.standard_normal((D, E + S)) / 3).astype(np.float32))
    ws.set("w_in", (rng.standard_normal((E + S, 2 * F, D)) / 4).astype(np.float32))
    ws.set("w_out", (rng.standard_normal((E + S, D, F)) / 5).astype(np.float32))
    ws.set("bias", (rng.standard_normal(E) / 4).astype(np.float32))
    X, L = 'tensor<?x16xf32, "T">', 'tensor<?x8xf32, "T">'
    W, ID = f'tensor<?x{slots}xf32, "T">', f'tensor<?x{slots}xi64, "T">'
    text = f'''module {{
  func.func @main(%x: {X}) -> ({X}) attributes {{moec.inputs = ["x"], moec.outputs = ["y"]}} {{
    %wr = "moec.constant"() {{value = dense_resource<wr> : tensor<16x8xf32>}} : () -> tensor<16x8xf32>
    %b = "moec.constant"() {{value = dense_resource<bias> : tensor<6xf32>}} : () -> tensor<6xf32>
    %w_in = "moec.constant"() {{value = dense_resource<w_in> : tensor<8x16x16xf32>}} : () -> tensor<8x16x16xf32>
    %w_out = "moec.constant"() {{value = dense_resource<w_out> : tensor<8x16x8xf32>}} : () -> tensor<8x16x8xf32>
    %logits = "moec.matmul"(%x, %wr) : ({X}, tensor<16x8xf32>) -> {L}
    %r:2 = "moe.route"(%logits{", %b" if bias else ""}) {{k = {K} : i64, {route_attrs}}} : ({L}{", tensor<6xf32>" if bias else ""}) -> ({W}, {ID})
    %p:2 = "moe.dispatch"(%r#1) {{num_experts = 8 : i64}} : ({ID}) -> (tensor<?xi64>, tensor<9xi64>)
    %yk = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out{", %r#0" if fold else ""}) {{activation = "swiglu"{', weights_at = "output"' if fold else ""}{experts_attrs}}} : ({X}, {ID}, tensor<?xi64>, tensor<9xi64>, tensor<8x16x16xf32>, tensor<8x16x8xf32>{", " + W if fold else ""}) -> tensor<?x{slots}x16xf32, "T">
    %y = "moe.combine"(%yk, %r#0) {{weighted = {"false" if fold else "true"}}} : (tensor<?x{slots}x16xf32, "T">, {W}) -> {X}
    func.return %y : {X}
  }}
}}'''
    return parse_module(text, ws)


ROUTES = {  # Inkling's, and a softmax over all E+S columns with the weights renormalised over the k+S slots
    "inkling": 'scoring = "sigmoid", norm = "sum", scale = 1.75 : f64, n_shared = 2 : i64',
    "softmax_all": 'scoring = "softmax", norm = "sum", n_shared = 2 : i64',
}


def _inputs(T, same=False):
    x = np.random.default_rng(1).standard_normal((T, D)).astype(np.float32)
    if same:
        x[:] = x[0]
    return x


@pytest.mark.parametrize("name", sorted(ROUTES))
def test_n_shared_layer_c_matches_reference(name, tmp_path):
    m = _layer(ROUTES[name])
    art = build_module(m, str(tmp_path / "out"))
    for T, same in [(7, False), (1, False), (6, True)]:
        x = _inputs(T, same)
        np.testing.assert_allclose(art([x])[0], run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6, err_msg=f"T={T}")


def test_n_shared_route_on_triton():
    """Triton's route (torch ops for the always-on slots) against the reference: weights and ids."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from moec.codegen.triton import runtime as rt
    rng = np.random.default_rng(8)
    logits = (rng.standard_normal((33, E + S)) * 1.5).astype(np.float32)
    logits[4] = 0.25  # ties
    bias = rng.standard_normal(E).astype(np.float32)
    for tie in ("low", "high"):
        a = dict(k=K, scoring="sigmoid", n_group=1, topk_group=1, group_score="max", post="none", norm="sum",
                 norm_eps=0.0, scale=1.75, capacity=0, tie=tie, n_shared=S)
        want_w, want_ids = _route(**a, bias=True).reference(logits, bias)
        w, ids = rt.moe_route(torch.from_numpy(logits).to(rt.DEVICE), torch.from_numpy(bias).to(rt.DEVICE), **a)
        np.testing.assert_array_equal(ids.cpu().numpy(), want_ids)
        np.testing.assert_allclose(w.cpu().numpy(), want_w, rtol=1e-5, atol=1e-6)


def test_n_shared_route_on_ascend(tmp_path):
    """The Ascend moe_gating kernel appends the always-on slots (tiling n_shared): no host op, the result is the
    reference's (more cases: tests/test_ascend_route_slots.py)."""
    m = _layer(ROUTES["inkling"])
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    x = _inputs(5)
    np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6)


# -- ONNX ReduceLogSumExp ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset,keepdims,axes", [(18, 1, [-1]), (18, 0, [1]), (13, 1, [0]), (18, 0, [0, 1]),
                                                  (18, 1, None)])
def test_onnx_reduce_logsumexp_matches_onnxruntime(opset, keepdims, axes):
    """The converter against onnxruntime: large values (exp would overflow f32), a row of -inf (-inf), a +inf
    (+inf), a NaN (NaN, in row reductions); axes as input (opset 18) or attribute (13), keepdims both ways, all axes."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    from moec.frontend.onnx_import import import_model
    ins = ["x"]
    inits = []
    kw = {"keepdims": keepdims}
    if axes is not None and opset >= 18:
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes))
        ins.append("axes")
    elif axes is not None:
        kw["axes"] = axes
    node = helper.make_node("ReduceLogSumExp", ins, ["y"], **kw)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    x[0] *= 300  # exp overflows without the max subtracted
    x[1] = -np.inf
    x[2, 1] = np.inf
    if axes is not None and 0 not in axes:  # (a NaN with a +inf in one reduction: onnxruntime says +inf, log(sum(exp))
        x[3, 2] = np.nan                   # NaN as torch.logsumexp; only rows reduced on their own hold a NaN here)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    m = import_model(model)
    got = run(m, {"x": x})["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- real blocks ------------------------------------------------------------------------------------------------

def _exact(blk, m):
    import torch
    from test_hf_models import D as HD, first_output
    for shape in ((1, 7, HD), (3, 1, HD)):
        xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = first_output(blk(xs)).numpy()
        got = list(run(m, [xs.numpy()]).values())[0]
        # (f32 sums over the block's 4096-wide expert dim (Muse Spark): an absolute bound scaled by the output)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.slow
def test_inkling_block_is_recognised_and_exact():
    """transformers' InklingMoE (torch.export, batched_mm): the routed experts and the shared experts, weighted by
    the router's joint normalisation, become one moe.route (n_shared=1) and one moe.experts of E+1 experts; the
    module's scales (route_scale x global_scale) are the route's scale; equal to eager on other shapes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_models import D as HD, moe_block, recognise
    blk = moe_block("inkling_text")
    with torch.no_grad():  # (a buffer: moe_block leaves it 0) a selection bias that changes the choices
        b = blk.gate.e_score_correction_bias
        b.copy_(torch.linspace(-0.3, 0.3, b.numel()))
    m, layers = recognise(blk, torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2)))
    assert [la["family"] for la in layers] == ["inkling"], layers
    r = layers[0]["routing"]
    assert {k: r[k] for k in ("scoring", "norm", "post", "k", "n_shared")} == \
        {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_shared": 1}
    want_scale = float(np.float32(blk.gate.route_scale) * np.float32(blk.gate.global_scale.item()))
    assert abs(r["scale"] - want_scale) < 1e-6 * want_scale
    assert (layers[0]["E"], layers[0]["shared_experts"], layers[0]["correction_bias"]) == (4, 1, True)
    ex = [o for o in m.main.ops if o.name == "moe.experts"]
    assert len(ex) == 1 and ex[0].operands[4].type.shape[0] == 5
    _exact(blk, m)




def _near_inkling_block():
    """Inkling's block with one change: the shared expert's weight is sigmoid(its logit) alone, and the routed
    weights are renormalised over the chosen experts only (DeepSeek-V3's), not one joint normalisation: moe.route's
    n_shared cannot express it, so the layer must stay unrecognised (and still compute the same)."""
    import torch
    from test_hf_models import moe_block
    blk = moe_block("inkling_text")
    gate = blk.gate

    def forward(hidden_states):
        flat = hidden_states.reshape(-1, gate.hidden_dim)
        logits = torch.nn.functional.linear(flat.float(), gate.weight.float())
        scores = logits.sigmoid()
        routed = scores[..., :-gate.n_shared_experts]
        ids = torch.topk(routed + gate.e_score_correction_bias, gate.top_k, dim=-1, sorted=False)[1]
        w = routed.gather(-1, ids)
        w = w / w.sum(-1, keepdim=True) * gate.route_scale
        return logits[..., :-gate.n_shared_experts], w, ids, scores[..., -gate.n_shared_experts:] * gate.route_scale
    gate.forward = forward
    return blk


def test_near_inkling_lookalike_stays_unrecognised():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_models import D as HD, recognise
    blk = _near_inkling_block()
    m, layers = recognise(blk, torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2)))
    assert layers == []
    assert not any(o.name.startswith("moe.") for o in m.main.ops)
    _exact(blk, m)


# -- Muse Spark: a post-expert RMSNorm (moe.experts post_norm_eps) ---------------------------------------------

def test_post_norm_reference_is_transformers_muse_spark_expert_norm():
    """moe.experts' post_norm_eps with the norm's input scale g folded into w_out's rows equals transformers'
    MuseSparkTextInputScaledRMSNorm applied to each expert's output (scale first, then normalise)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.muse_spark.modeling_muse_spark import MuseSparkTextInputScaledRMSNorm
    from moec.ir.ops.moe import ExpertsOp, dispatch_plan, ffn
    rng = np.random.default_rng(4)
    T, E2, k = 9, 4, 2
    x = rng.standard_normal((T, D)).astype(np.float32)
    w_in = (rng.standard_normal((E2, 2 * F, D)) / 4).astype(np.float32)
    w_out = (rng.standard_normal((E2, D, F)) / 5).astype(np.float32)
    ids = np.stack([rng.permutation(E2)[:k] for _ in range(T)]).astype(np.int64)
    norm = MuseSparkTextInputScaledRMSNorm(D, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(rng.standard_normal(D).astype(np.float32) / 2))
    g = 1.0 + norm.weight.detach().numpy().astype(np.float64)
    order, off = dispatch_plan(ids, E2, 1)
    vals = [Value(TensorType(DType.F32, s)) for s in [(T, D), (T, k)]] + \
        [Value(TensorType(DType.I64, (None,))), Value(TensorType(DType.I64, (E2 + 1,)))] + \
        [Value(TensorType(DType.F32, a.shape)) for a in (w_in, w_out)]
    vals[1] = Value(TensorType(DType.I64, (T, k)))
    op = ExpertsOp.create(vals, {"activation": "swiglu", "post_norm_eps": 1e-6})
    y = op.reference(x, ids, order, off, w_in, (w_out * g[None, :, None]).astype(np.float32))[0]
    attrs = {"activation": "swiglu", "gate_layout": "concat", "alpha": 1.0, "beta": 0.0, "limit": float("inf")}
    for t in range(T):
        for j in range(k):
            v = ffn(x[t:t + 1], w_in[ids[t, j]], w_out[ids[t, j]], None, None, attrs)
            with torch.no_grad():
                want = norm(torch.from_numpy(v.astype(np.float32))).numpy()
            np.testing.assert_allclose(y[t, j], want[0], rtol=2e-5, atol=2e-6)


POST = ', post_norm_eps = 1.0e-06 : f64'


@pytest.mark.parametrize("fold", [False, True])
def test_post_norm_layer_c_matches_reference(fold, tmp_path):
    """The C kernels: each routed slot's output normalised, then weighted (at the combine, or folded into the
    experts' output: the weight after the norm, not before)."""
    m = _layer('scoring = "softmax", norm = "sum"', bias=False, slots=K, experts_attrs=POST, fold=fold)
    art = build_module(m, str(tmp_path / "out"))
    for T, same in [(7, False), (1, False), (6, True)]:
        x = _inputs(T, same)
        np.testing.assert_allclose(art([x])[0], run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6, err_msg=f"T={T}")


def test_post_norm_experts_on_triton():
    """Triton's moe_experts with post_norm_eps (the norm by torch ops after the grouped GEMMs) against the
    reference, at the combine and folded."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from moec.codegen.triton import runtime as rt
    for fold in (False, True):
        m = _layer('scoring = "softmax", norm = "sum"', bias=False, slots=K, experts_attrs=POST, fold=fold)
        ex = next(o for o in m.main.ops if o.name == "moe.experts")
        x = _inputs(7)
        from moec.passes.moe_util import evaluate  # (the values the experts read, by the reference)
        vals = [np.asarray(a) for a in evaluate(m, m.main, ex.operands, {id(m.main.args[0]): x})]
        w_in, w_out = vals[4], vals[5]
        want = ex.reference(*vals)[0]
        dev = rt.DEVICE
        got = rt.moe_experts(torch.from_numpy(x).to(dev), torch.from_numpy(vals[1]).to(dev),
                             torch.from_numpy(np.asarray(w_in)).to(dev), torch.from_numpy(np.asarray(w_out)).to(dev),
                             rw=torch.from_numpy(vals[6]).to(dev) if fold else None,
                             weights_at="output" if fold else "none", post_norm_eps=1e-6)
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-4, atol=1e-5)


def test_post_norm_experts_on_ascend(tmp_path):
    """On the Ascend target the post-expert norm is computed (on the NPU, or on the host with a reason naming it)
    and the layer equals the reference."""
    m = _layer('scoring = "softmax", norm = "sum"', bias=False, slots=K, experts_attrs=POST)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    host = art.plan["host_ops"]
    assert "moe.experts" not in host or "post" in host["moe.experts"], host
    x = _inputs(5)
    np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6)


@pytest.mark.slow
def test_muse_spark_block_is_recognised_and_exact():
    """transformers' MuseSparkMoE (torch.export, batched_mm): the post-expert norm (scale by 1 + w, then RMS
    normalise) becomes moe.experts' post_norm_eps with 1 + w folded into w_out; equal to eager on other shapes."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_models import D as HD, moe_block, recognise
    blk = moe_block("muse_spark_text")
    m, layers = recognise(blk, torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2)))
    assert len(layers) == 1, layers
    assert layers[0]["post_expert_norm"]["eps"] == pytest.approx(blk.experts.post_expert_norm.eps, rel=1e-6)
    assert layers[0]["post_expert_norm"]["input_scale"] is not None
    ex = [o for o in m.main.ops if o.name == "moe.experts"]
    assert len(ex) == 1 and ex[0].attrs["post_norm_eps"] == layers[0]["post_expert_norm"]["eps"]
    _exact(blk, m)


def test_weight_after_the_expert_norm_is_one_post_norm_w_row_per_expert():
    """Muse Spark's block with its post-expert norm replaced by the centred RMSNorm (normalise, then scale by 1 + w:
    a weight after the normalisation, the same for every expert) is moe.experts' post_norm_w with 1 + w as every
    expert's row (tests/test_hf_expert_forms.py: Ergo's learned per-expert rows), and equal to eager."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.muse_spark.modeling_muse_spark import MuseSparkTextCenteredRMSNorm
    from test_hf_models import D as HD, moe_block, recognise
    blk = moe_block("muse_spark_text")
    old = blk.experts.post_expert_norm
    new = MuseSparkTextCenteredRMSNorm(old.weight.numel(), eps=old.eps)
    with torch.no_grad():
        new.weight.copy_(old.weight)
    blk.experts.post_expert_norm = new
    m, layers = recognise(blk, torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2)))
    assert len(layers) == 1 and "per expert" in layers[0]["post_expert_norm"]["weight"], layers
    assert layers[0]["post_expert_norm"]["input_scale"] is None
    _exact(blk, m)

# -- Zaya: a skip class among the router's classes (moe.route n_skip), a router MLP over carried state ---------
# ZayaRouter: logits = router_mlp(down_proj(x) [+ the previous layer's router state * scale]) over E + 1 classes,
# probs = softmax(logits), chosen = top-k(probs + balancing_biases), weights = probs[chosen]; a slot that chose
# the last class (the skip expert) gets weight 0 (and id 0): it contributes nothing.

def _zaya_bias(blk, skip=0.4):
    """A balancing bias under which tokens do choose the skip class (transformers' init gives it -1: never)."""
    import torch
    with torch.no_grad():
        b = blk.gate.balancing_biases if hasattr(blk, "gate") else blk.balancing_biases
        b.copy_(torch.linspace(-0.1, 0.1, b.numel()))
        b[-1] = skip
    return blk


def test_n_skip_reference_is_transformers_zaya_router():
    """moe.route with n_skip=1 (softmax scoring, the balancing bias as the selection bias) against transformers'
    ZayaRouter: the same experts and weights where a real expert is chosen; where the skip class is, the route's
    slot is dropped (id -1, weight 0) and Zaya's has weight 0."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_survey as survey
    from transformers.models.zaya.modeling_zaya import ZayaRouter
    cfg = survey.tiny_config("zaya")
    torch.manual_seed(0)
    r = ZayaRouter(cfg, 0).eval()
    with torch.no_grad():
        for p in r.parameters():  # (as the survey's blocks: N(0, 0.2), peaked probabilities)
            p.copy_(torch.randn(p.shape) * 0.2)
        _zaya_bias(r)
        x = torch.randn(3, 11, cfg.hidden_size)
        logits, probs, idx, _ = r(x)
    bias = r.balancing_biases.numpy()
    n = cfg.num_experts
    w, ids = RouteOp.create([Value(TensorType(DType.F32, ("T", n + 1))), Value(TensorType(DType.F32, (n + 1,)))],
                            {"k": 1, "scoring": "softmax", "n_skip": 1}).reference(logits.numpy(), bias)
    skip = ids == -1
    assert 0 < skip.sum() < skip.size  # (both kinds of token)
    np.testing.assert_array_equal(ids[~skip], idx.numpy()[~skip])
    np.testing.assert_allclose(w, probs.numpy(), rtol=1e-6, atol=1e-7)
    assert (w[skip] == 0).all() and (idx.numpy()[skip] == 0).all()


def test_n_skip_rejected_where_undefined():
    def route(cols, **attrs):
        return RouteOp.create([Value(TensorType(DType.F32, ("T", cols)))], attrs)
    route(5, k=2, n_skip=1)
    for cols, attrs, why in [(5, dict(k=1, n_skip=5), "n_skip=5"), (6, dict(k=1, n_skip=1, n_shared=1), "n_skip"),
                             (6, dict(k=1, n_skip=1, n_group=2, topk_group=1), "n_skip"),
                             (5, dict(k=1, n_skip=1, capacity=4), "n_skip")]:
        with pytest.raises(Exception, match=why):
            route(cols, **attrs)


def _skip_layer(k: int, n_skip: int, skip_bias: float = 0.3):
    """x -> logits [T, E + n_skip] -> moe.route (n_skip, softmax, bias) -> dispatch / experts over E -> combine."""
    rng = np.random.default_rng(2)
    C = E + n_skip
    ws = WeightStore()
    ws.set("wr", (rng.standard_normal((D, C)) / 3).astype(np.float32))
    ws.set("w_in", (rng.standard_normal((E, 2 * F, D)) / 4).astype(np.float32))
    ws.set("w_out", (rng.standard_normal((E, D, F)) / 5).astype(np.float32))
    b = np.zeros(C, np.float32)
    b[E:] = skip_bias  # (the skip classes chosen often)
    ws.set("bias", b)
    X, L = 'tensor<?x16xf32, "T">', f'tensor<?x{C}xf32, "T">'
    W, ID = f'tensor<?x{k}xf32, "T">', f'tensor<?x{k}xi64, "T">'
    text = f'''module {{
  func.func @main(%x: {X}) -> ({X}) attributes {{moec.inputs = ["x"], moec.outputs = ["y"]}} {{
    %wr = "moec.constant"() {{value = dense_resource<wr> : tensor<16x{C}xf32>}} : () -> tensor<16x{C}xf32>
    %b = "moec.constant"() {{value = dense_resource<bias> : tensor<{C}xf32>}} : () -> tensor<{C}xf32>
    %w_in = "moec.constant"() {{value = dense_resource<w_in> : tensor<6x16x16xf32>}} : () -> tensor<6x16x16xf32>
    %w_out = "moec.constant"() {{value = dense_resource<w_out> : tensor<6x16x8xf32>}} : () -> tensor<6x16x8xf32>
    %logits = "moec.matmul"(%x, %wr) : ({X}, tensor<16x{C}xf32>) -> {L}
    %r:2 = "moe.route"(%logits, %b) {{k = {k} : i64, scoring = "softmax", n_skip = {n_skip} : i64}} : ({L}, tensor<{C}xf32>) -> ({W}, {ID})
    %p:2 = "moe.dispatch"(%r#1) {{num_experts = 6 : i64}} : ({ID}) -> (tensor<?xi64>, tensor<7xi64>)
    %yk = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out) {{activation = "swiglu"}} : ({X}, {ID}, tensor<?xi64>, tensor<7xi64>, tensor<6x16x16xf32>, tensor<6x16x8xf32>) -> tensor<?x{k}x16xf32, "T">
    %y = "moe.combine"(%yk, %r#0) {{weighted = true}} : (tensor<?x{k}x16xf32, "T">, {W}) -> {X}
    func.return %y : {X}
  }}
}}'''
    return parse_module(text, ws)


SKIPS = [(2, 1), (1, 2)]  # (k, n_skip): a token with one of its two slots skipped; tokens with nothing at all


def _skip_inputs(T):
    x = _inputs(T)
    x[-1] = 0.0  # (equal logits: the ties go to the lowest class, an expert)
    return x


@pytest.mark.parametrize("k,n_skip", SKIPS)
def test_n_skip_layer_c_matches_reference(k, n_skip, tmp_path):
    m = _skip_layer(k, n_skip)
    route = next(o for o in m.main.ops if o.name == "moe.route")
    x = _skip_inputs(9)
    ids = route.reference(x @ m.weights["wr"], m.weights["bias"])[1]
    assert (ids == -1).any() and (ids >= 0).any() and ((ids == -1).all(1).any() if k == 1 else True)
    art = build_module(m, str(tmp_path / "out"))
    for T in (9, 1):
        x = _skip_inputs(T)
        np.testing.assert_allclose(art([x])[0], run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6, err_msg=f"T={T}")


def test_n_skip_route_on_triton():
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from moec.codegen.triton import runtime as rt
    rng = np.random.default_rng(9)
    for k, n_skip in SKIPS:
        C = E + n_skip
        logits = (rng.standard_normal((29, C)) * 1.5).astype(np.float32)
        bias = np.zeros(C, np.float32)
        bias[E:] = 0.3
        a = dict(k=k, scoring="softmax", n_group=1, topk_group=1, group_score="max", post="none", norm="none",
                 norm_eps=0.0, scale=1.0, capacity=0, n_skip=n_skip)
        want_w, want_ids = RouteOp.create([Value(TensorType(DType.F32, ("T", C))), Value(TensorType(DType.F32, (C,)))],
                                          a).reference(logits, bias)
        assert (want_ids == -1).any()
        w, ids = rt.moe_route(torch.from_numpy(logits).to(rt.DEVICE), torch.from_numpy(bias).to(rt.DEVICE), **a)
        np.testing.assert_array_equal(ids.cpu().numpy(), want_ids)
        np.testing.assert_allclose(w.cpu().numpy(), want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("k,n_skip", SKIPS)
def test_n_skip_layer_on_ascend(k, n_skip, tmp_path):
    """The moe_gating kernel drops the skip classes' slots (emulator): the whole layer on the NPU, no host op."""
    m = _skip_layer(k, n_skip)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert not art.plan["host_ops"], art.plan["host_ops"]
    x = _skip_inputs(7)
    np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6)


def _zaya_block(impl="batched_mm"):
    from test_hf_models import moe_block
    return _zaya_bias(moe_block("zaya", impl))


def _first(blk):
    import hf_survey as survey
    return survey._wrap_first(blk)


def test_zaya_block_is_recognised_and_exact():
    """transformers' ZayaSparseMoeBlock (torch.export, batched_mm), its skip class chosen by some tokens: its
    [batch, seq, E+1] top-k roots the layer, its router MLP stays ordinary ops before moe.route (n_skip=1,
    softmax, the balancing bias as the selection bias), the 4 experts one moe.experts; equal to eager."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_models import D as HD, recognise
    blk = _zaya_block()
    m, layers = recognise(_first(blk), torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2)))
    assert [la["family"] for la in layers] == ["zaya"], layers
    r = layers[0]["routing"]
    assert {k: r[k] for k in ("scoring", "norm", "post", "k", "n_skip")} == \
        {"scoring": "softmax", "norm": "none", "post": "none", "k": 1, "n_skip": 1}
    assert (layers[0]["E"], layers[0]["correction_bias"]) == (4, True)
    route = next(o for o in m.main.ops if o.name == "moe.route")
    mlp = route.operands[0].owner  # (the router's last projection, fed by its MLP: ordinary ops)
    assert mlp is not None and mlp.name in ("moec.matmul", "moec.gemm")
    assert any(o.name == "moec.gelu" for o in m.main.ops)
    _exact(_first(blk), m)


def _compile_and_check(model, x, blk, verify=True):
    import torch
    import moec
    cm = moec.compile(model, None if isinstance(model, str) else (x,), dynamic_dims={0: {0: "B", 1: "S"}}
                      if not isinstance(model, str) else None, verify=verify)
    rep = cm.stats.report
    assert rep["verified"] or not verify, rep.get("failure")
    assert [la["family"] for la in rep["moe_layers"]] == ["zaya"], rep.get("recognition")
    for shape in ((1, 7), (3, 2)):
        xs = torch.randn(*shape, x.shape[-1], generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            want = _first(blk)(xs).numpy()
        got = cm(xs.numpy() if isinstance(model, str) else xs)
        got = got[0] if isinstance(got, (list, tuple)) else got
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


ZAYA_PATHS = [("torch.export", "batched_mm")] + [pytest.param(p, i, marks=pytest.mark.slow) for p, i in (
    ("torch.export", "grouped_mm"), ("dynamo", "batched_mm"), ("torchscript", "batched_mm"),
    ("torchscript", "eager"))]


@pytest.mark.parametrize("path,impl", ZAYA_PATHS)
def test_zaya_block_compiles_exact_on_every_path_that_exports(path, impl, tmp_path, moec_cache):
    """moec.compile (C build, verified against the module / onnxruntime) of the block on each path transformers'
    code exports on (torch.export of eager stops at the data-dependent expert loop; the dynamo exporter fails on
    eager and grouped_mm; TorchScript on grouped_mm's histc: the survey's reasons): the zaya layer, equal to
    eager.  TorchScript's eager trace unrolls the experts its example hits (hf_survey's example hits all): the
    export itself fails in onnxruntime (and moec's interpreter) below as many tokens as experts, so moec.compile
    has no oracle for its verification there; the compiled layer (the loop folded) is compared with eager here."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_survey as survey
    from test_hf_models import D as HD
    blk = _zaya_block(impl)
    x = torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2))
    model = _first(blk)
    if path != "torch.export":
        x = survey.example_input(blk, torch.float32, path)  # (TorchScript: one hitting every expert)
        p = str(tmp_path / "b.onnx")
        kw = dict(dynamic_shapes=({0: "B", 1: "S"},)) if path == "dynamo" else \
            dict(dynamic_axes={"x": {0: "B", 1: "S"}}, opset_version=18)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), p, input_names=["x"], dynamo=path == "dynamo", **kw)
        model = p
    _compile_and_check(model, x, blk, verify=(path, impl) != ("torchscript", "eager"))


def _near_zaya_block():
    """Zaya's block with one change: a slot that chose the skip class keeps its weight (only its id is sent to
    expert 0), so it adds weight x expert 0's output: neither a skip class (nothing) nor an identity expert
    (the token times its weight); the layer must stay unrecognised (and still compute the same)."""
    import torch
    blk = _zaya_block()
    gate = blk.gate

    def forward(hidden_states, router_states=None):
        h = gate.down_proj(hidden_states)
        logits = gate.router_mlp(h)
        probs = torch.softmax(logits, dim=-1)
        _, idx = torch.topk(probs + gate.balancing_biases, gate.top_k, dim=-1)
        w = torch.gather(probs, 2, idx)
        idx = idx.masked_fill(idx == gate.config.num_experts, 0)
        return logits.reshape(-1, gate.num_router_classes), w.reshape(-1, gate.top_k), idx.reshape(-1, gate.top_k), h
    gate.forward = forward
    return blk


def test_near_zaya_lookalike_stays_unrecognised():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_survey as survey
    from test_hf_models import D as HD, recognise
    blk = _near_zaya_block()
    m, layers = recognise(_first(blk), torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2)))
    assert layers == []
    assert not any(o.name.startswith("moe.") for o in m.main.ops)
    assert "identity experts" in survey._why_not(m)
    _exact(_first(blk), m)


@pytest.mark.slow
def test_zaya_causal_lm_both_layers_recognised_and_exact():
    """A 2-layer ZayaForCausalLM (batched_mm, input_ids [batch, seq]): layer 1's router reads layer
    0's router state (router_states * scale added to its own down_proj) -- a router input that is not a function
    of the layer's hidden input: both layers recognised, the logits equal the model's own."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import json
    import hf_survey as survey
    from test_hf_compile import causal_lm, run_ir
    from moec.frontend.torch_import import import_torch
    model = causal_lm("zaya")
    for blk in survey.sparse_blocks(model):
        _zaya_bias(blk)
    assert survey.sparse_blocks(model)[1].gate.use_eda
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    m = import_torch(model, (ids,), dynamic_dims={0: {0: "B", 1: "S"}})
    survey._recognise(m)
    layers = [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]
    assert [(la["family"], la["routing"].get("n_skip")) for la in layers] == [("zaya", 1)] * 2, layers
    for seed in (1, 2):  # (the export's own shape: Zaya's model exports with static dims)
        xs = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = model(xs, use_cache=False).logits.numpy()
        np.testing.assert_allclose(run_ir(m, xs)[0], want, rtol=1e-4, atol=1e-5)


def test_torch_frontend_negates_a_symbolic_size():
    """``h[:, -seq_length:]`` with a dynamic seq_length (ZayaRouter's router_hidden_states_next, the block's second
    output) exports a negation of a symbolic size: 0 - s, at every length."""
    torch = pytest.importorskip("torch")
    from moec.frontend.torch_import import import_torch

    class Tail(torch.nn.Module):
        def forward(self, x):
            s = x.shape[1]
            return x[:, -s:] * 2
    x = torch.randn(2, 5, 3)
    m = import_torch(Tail(), (x,), dynamic_dims={0: {0: "B", 1: "S"}})
    for shape in ((2, 5, 3), (1, 7, 3), (3, 2, 3)):
        xs = torch.randn(*shape)
        np.testing.assert_array_equal(list(run(m, [xs.numpy()]).values())[0], Tail()(xs).numpy())
