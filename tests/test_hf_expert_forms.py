"""Expert forms of real transformers families that ``moe.experts`` / ``moe.route`` gained for them (issue 16).

Ergo (transformers' ErgoExperts): every routed slot's expert output RMS-normalised and then multiplied by its
expert's own learned weight row (ErgoExpertNorm.weight[E, D] gathered by the expert id) before the routing weight:
``moe.experts`` post_norm_eps with post_norm_w [E, D] (the weight comes after the norm, so it cannot be folded into
w_out).  Checked against transformers' own module, on the C and Triton kernels (Ascend keeps the op on the host
with its reason), on the real block against eager, and with look-alikes that must stay unrecognised."""
from __future__ import annotations

import numpy as np
import pytest

from moec.driver import build_module
from moec.ir import DType, TensorType, Value, parse_module, print_module, run
from moec.ir.ops.moe import ExpertsOp, dispatch_plan, ffn
from moec.ir.weights import WeightStore

D, F, E, K = 16, 8, 6, 2  # hidden, expert width, experts, slots chosen


def _experts_op(T, k, E2, eps, pn_w=True, dtype=DType.F32):
    vals = [Value(TensorType(dtype, (T, D))), Value(TensorType(DType.I64, (T, k))),
            Value(TensorType(DType.I64, (None,))), Value(TensorType(DType.I64, (E2 + 1,))),
            Value(TensorType(dtype, (E2, F, D))), Value(TensorType(dtype, (E2, D, F)))]
    if pn_w:
        vals.append(Value(TensorType(DType.F32, (E2, D))))
    return ExpertsOp.create(vals, {"activation": "relu2", "post_norm_eps": eps, "has_post_norm_w": pn_w})


def test_post_norm_w_reference_is_transformers_ergo_expert_norm():
    """moe.experts' post_norm_eps + post_norm_w equals transformers' ErgoExpertNorm applied to each slot's expert
    output (F.rms_norm without a weight, then the gathered per-expert weight row)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.ergo.configuration_ergo import ErgoConfig
    from transformers.models.ergo.modeling_ergo import ErgoExpertNorm
    rng = np.random.default_rng(4)
    T, E2, k = 9, 4, 2
    cfg = ErgoConfig(hidden_size=D, num_experts=E2, rms_norm_eps=1e-6)
    norm = ErgoExpertNorm(cfg)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(rng.standard_normal((E2, D)).astype(np.float32)))
    x = rng.standard_normal((T, D)).astype(np.float32)
    w_in = (rng.standard_normal((E2, F, D)) / 4).astype(np.float32)
    w_out = (rng.standard_normal((E2, D, F)) / 5).astype(np.float32)
    ids = np.stack([rng.permutation(E2)[:k] for _ in range(T)]).astype(np.int64)
    order, off = dispatch_plan(ids, E2, 1)
    op = _experts_op(T, k, E2, 1e-6)
    y = op.reference(x, ids, order, off, w_in, w_out, norm.weight.detach().numpy())[0]
    attrs = {"activation": "relu2"}
    for t in range(T):
        for j in range(k):
            v = ffn(x[t:t + 1], w_in[ids[t, j]], w_out[ids[t, j]], None, None, attrs).astype(np.float32)
            with torch.no_grad():
                want = norm(torch.from_numpy(v), torch.tensor([ids[t, j]])).numpy()
            np.testing.assert_allclose(y[t, j], want[0], rtol=2e-5, atol=2e-6)


def test_post_norm_w_zero_row_as_torch():
    """An expert output that is all zeros: 0 with eps > 0, NaN with eps = 0 (what an export dropping the eps
    computes), as torch's F.rms_norm gives; the per-expert weight does not change that."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as Fn
    T, k, E2 = 3, 1, 2
    x = np.ones((T, D), np.float32)
    w_in = np.ones((E2, F, D), np.float32)
    w_out = np.zeros((E2, D, F), np.float32)  # every expert output 0
    ids = np.zeros((T, k), np.int64)
    order, off = dispatch_plan(ids, E2, 1)
    pn_w = np.full((E2, D), 2.0, np.float32)
    for eps in (1e-12, 0.0):
        y = _experts_op(T, k, E2, eps).reference(x, ids, order, off, w_in, w_out, pn_w)[0]
        want = Fn.rms_norm(torch.zeros(T, D), (D,), eps=eps).numpy() * 2.0
        np.testing.assert_array_equal(np.isnan(y[:, 0]), np.isnan(want))
        np.testing.assert_array_equal(np.nan_to_num(y[:, 0]), np.nan_to_num(want))


def test_post_norm_w_checked():
    """post_norm_w needs post_norm_eps and must be [E, D] of x's type or f32."""
    from moec.ir.opdef import IRError
    with pytest.raises(IRError, match="needs post_norm_eps"):
        _experts_op(3, 1, 2, None)
    vals = list(_experts_op(3, 1, 2, 1e-6).operands)
    vals[6] = Value(TensorType(DType.F32, (3, D)))
    with pytest.raises(IRError, match=r"post_norm_w must be \[E, D\]"):
        ExpertsOp.create(vals, {"activation": "relu2", "post_norm_eps": 1e-6, "has_post_norm_w": True})


def _layer(fold: bool = False, eps: str = "1.0e-06", zero_expert: bool = False):
    """x -> logits -> moe.route (sigmoid, renormalised) -> dispatch -> experts (relu2, post-norm with a per-expert
    weight) -> combine (``fold``: the routing weight applied by the experts at their output; ``zero_expert``:
    expert 0's down projection all zeros, so its rows reach the norm as zeros)."""
    rng = np.random.default_rng(0)
    ws = WeightStore()
    ws.set("wr", (rng.standard_normal((D, E)) / 3).astype(np.float32))
    ws.set("w_in", (rng.standard_normal((E, F, D)) / 4).astype(np.float32))
    w_out = (rng.standard_normal((E, D, F)) / 5).astype(np.float32)
    if zero_expert:
        w_out[0] = 0
    ws.set("w_out", w_out)
    ws.set("pn_w", rng.standard_normal((E, D)).astype(np.float32))
    X, L = 'tensor<?x16xf32, "T">', 'tensor<?x6xf32, "T">'
    W, ID = 'tensor<?x2xf32, "T">', 'tensor<?x2xi64, "T">'
    text = f'''module {{
  func.func @main(%x: {X}) -> ({X}) attributes {{moec.inputs = ["x"], moec.outputs = ["y"]}} {{
    %wr = "moec.constant"() {{value = dense_resource<wr> : tensor<16x6xf32>}} : () -> tensor<16x6xf32>
    %w_in = "moec.constant"() {{value = dense_resource<w_in> : tensor<6x8x16xf32>}} : () -> tensor<6x8x16xf32>
    %w_out = "moec.constant"() {{value = dense_resource<w_out> : tensor<6x16x8xf32>}} : () -> tensor<6x16x8xf32>
    %pn = "moec.constant"() {{value = dense_resource<pn_w> : tensor<6x16xf32>}} : () -> tensor<6x16xf32>
    %logits = "moec.matmul"(%x, %wr) : ({X}, tensor<16x6xf32>) -> {L}
    %r:2 = "moe.route"(%logits) {{k = 2 : i64, scoring = "sigmoid", norm = "sum"}} : ({L}) -> ({W}, {ID})
    %p:2 = "moe.dispatch"(%r#1) {{num_experts = 6 : i64}} : ({ID}) -> (tensor<?xi64>, tensor<7xi64>)
    %yk = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out{", %r#0" if fold else ""}, %pn) {{activation = "relu2"{', weights_at = "output"' if fold else ""}, post_norm_eps = {eps} : f64, has_post_norm_w = true}} : ({X}, {ID}, tensor<?xi64>, tensor<7xi64>, tensor<6x8x16xf32>, tensor<6x16x8xf32>{", " + W if fold else ""}, tensor<6x16xf32>) -> tensor<?x2x16xf32, "T">
    %y = "moe.combine"(%yk, %r#0) {{weighted = {"false" if fold else "true"}}} : (tensor<?x2x16xf32, "T">, {W}) -> {X}
    func.return %y : {X}
  }}
}}'''
    return parse_module(text, ws)


def _inputs(T, same=False):
    x = np.random.default_rng(1).standard_normal((T, D)).astype(np.float32)
    if same:
        x[:] = x[0]
    return x


def test_post_norm_w_prints_and_parses():
    m = _layer()
    text = print_module(m)
    assert "has_post_norm_w = true" in text
    assert print_module(parse_module(text, m.weights)) == text


@pytest.mark.parametrize("fold", [False, True])
def test_post_norm_w_layer_c_matches_reference(fold, tmp_path):
    """The C kernels: each routed slot's output normalised, times its expert's weight row, then its routing weight
    (at the combine, or folded into the experts' output)."""
    m = _layer(fold=fold)
    art = build_module(m, str(tmp_path / "out"))
    for T, same in [(7, False), (1, False), (6, True)]:
        x = _inputs(T, same)
        np.testing.assert_allclose(art([x])[0], run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6, err_msg=f"T={T}")


@pytest.mark.parametrize("eps", ["1.0e-12", "0.0"])
def test_post_norm_w_zero_expert_c_matches_reference(eps, tmp_path):
    """Rows that reach the norm as zeros (an expert whose down projection is 0): the C kernel gives what the
    reference gives (0 with eps > 0; NaN in the tokens routed to it with eps = 0)."""
    m = _layer(eps=eps, zero_expert=True)
    art = build_module(m, str(tmp_path / "out"))
    x = _inputs(16)
    want = run(m, {"x": x})["y"]
    got = art([x])[0]
    assert np.isnan(want).any() == (eps == "0.0")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(want), rtol=2e-5, atol=2e-6)


def test_post_norm_w_experts_on_triton():
    """Triton's moe_experts with post_norm_eps and post_norm_w (the norm and the per-expert weight by torch ops
    after the grouped GEMMs) against the reference, at the combine and folded."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from moec.codegen.triton import runtime as rt
    from moec.passes.moe_util import evaluate
    for fold in (False, True):
        m = _layer(fold=fold)
        ex = next(o for o in m.main.ops if o.name == "moe.experts")
        x = _inputs(7)
        vals = [np.asarray(a) for a in evaluate(m, m.main, ex.operands, {id(m.main.args[0]): x})]
        want = ex.reference(*vals)[0]
        dev = rt.DEVICE
        t = [torch.from_numpy(np.ascontiguousarray(v)).to(dev) for v in vals]
        got = rt.moe_experts(t[0], t[1], t[4], t[5], rw=t[6] if fold else None, weights_at="output" if fold else "none",
                             activation="relu2", post_norm_eps=1e-6, post_norm_w=t[-1])
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fold", [False, True])
def test_post_norm_w_on_ascend(fold, tmp_path):
    """On the NPU (emulator): vec_rowwise's RMS norm, then moe_scatter_rows with the per-expert weight rows as its
    per-expert channel scale (and the routing weight when folded); no host op; equal to the reference."""
    m = _layer(fold=fold)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert "moe.experts" not in art.plan["host_ops"], art.plan["host_ops"]
    for T in (5, 1):
        x = _inputs(T)
        np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6)


# -- the real Ergo block ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ergo_block():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_models import moe_block
    return moe_block("ergo")


def _exact(blk, m):
    import torch
    from test_hf_models import D as HD, assert_f32_exact, first_output
    for shape in ((1, 7, HD), (3, 1, HD)):
        xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = first_output(blk(xs)).numpy()
        got = list(run(m, [xs.numpy()]).values())[0]
        assert_f32_exact(got, blk, xs, want)


def _recognise(blk):
    import torch
    from test_hf_models import D as HD, recognise
    return recognise(blk, torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2)))


def test_ergo_block_is_recognised_and_exact(ergo_block):
    """transformers' ErgoMoE (torch.export): the router is DeepSeek-V3's (sigmoid, correction bias, renormalised
    with eps 1e-20, routed_scaling_factor) and the experts' post-expert norm with its learned per-expert weight
    becomes moe.experts' post_norm_eps + post_norm_w, holding the module's ErgoExpertNorm.weight; equal to eager on
    other shapes."""
    blk = ergo_block
    m, layers = _recognise(blk)
    assert len(layers) == 1, layers
    la = layers[0]
    assert la["family"] == "deepseek-v3" and la["routing"]["scoring"] == "sigmoid" and la["routing"]["norm"] == "sum"
    assert la["post_expert_norm"]["eps"] == pytest.approx(blk.experts.post_expert_norm.eps, rel=1e-6)
    assert "per expert" in la["post_expert_norm"]["weight"]
    ex = [o for o in m.main.ops if o.name == "moe.experts"]
    assert len(ex) == 1 and ex[0].attrs["has_post_norm_w"]
    from moec.ir.opdef import const_value
    got_w = np.asarray(const_value(ex[0].extras().pn_w, m.weights))
    np.testing.assert_array_equal(got_w, blk.experts.post_expert_norm.weight.detach().numpy())
    _exact(blk, m)


@pytest.mark.slow
def test_ergo_block_compiles_and_verifies(ergo_block, tmp_path, monkeypatch):
    """moec.compile on the module: the C build (the post-norm with the per-expert weight) verified against eager."""
    import torch
    import moec
    from test_hf_models import D as HD
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    cm = moec.compile(ergo_block, (torch.randn(2, 5, HD),), dynamic_dims={0: {0: "B", 1: "S"}})
    rep = cm.stats.report
    assert rep["verified"] and len(rep["moe_layers"]) == 1, rep.get("moe_layers")
    assert "per expert" in rep["moe_layers"][0]["post_expert_norm"]["weight"]
    xs = torch.randn(1, 7, HD, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = ergo_block(xs).numpy()
    np.testing.assert_allclose(np.asarray(cm(xs)), want, rtol=1e-4, atol=1e-5)


def _per_token_norm(norm):
    """Look-alike of ErgoExpertNorm: each row's weight row is chosen by the expert id of the row in the reversed
    position (another token's expert: a weight that differs per token, not per expert)."""
    import torch
    import torch.nn.functional as Fn

    class PerTokenNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.eps = norm.weight, norm.eps

        def forward(self, h, expert_ids):
            n = expert_ids.shape[0]
            rows = expert_ids[torch.arange(n - 1, -1, -1)]
            out = Fn.rms_norm(h.float(), (h.shape[-1],), eps=self.eps)
            return (out * self.weight[rows]).to(h.dtype)
    return PerTokenNorm()


@pytest.mark.parametrize("kind", ["per_token", pytest.param("token_scaled", marks=pytest.mark.slow)])
def test_ergo_lookalikes_stay_unrecognised(kind, monkeypatch):
    """Look-alikes of the per-expert weight: a weight row picked by another row's expert id, or
    the expert's row times a factor of the token's own values.  Neither is a weight per expert: moec leaves the
    layer alone, and the graph still computes what eager does."""
    import torch
    from test_hf_models import moe_block
    blk = moe_block("ergo")
    norm = blk.experts.post_expert_norm
    if kind == "per_token":
        blk.experts.post_expert_norm = _per_token_norm(norm)
    else:
        orig = type(norm).forward

        def fwd(self, h, expert_ids):
            return orig(self, h, expert_ids) * (1.0 + 0.5 * torch.tanh(h[..., :1]))
        monkeypatch.setattr(type(norm), "forward", fwd)
    m, layers = _recognise(blk)
    assert layers == [], layers
    _exact(blk, m)


# -- Switch Transformers: capacity counted per sequence (moe.route logits [B, S, E]) -------------------------------

def _route3(B, S, E2, cap):
    from moec.ir.ops.moe import RouteOp
    lv = Value(TensorType(DType.F32, (B, S, E2)))
    return RouteOp.create([lv], {"k": 1, "scoring": "softmax", "capacity": cap})


def test_per_sequence_capacity_reference_is_transformers_switch_router():
    """moe.route with logits [B, S, E] and a capacity equals transformers' SwitchTransformersTop1Router: the top-1
    expert, dropped (id -1) where it is the (C+1)-th or later token of its sequence to choose that expert; the
    weight is the top-1 softmax probability.  The same logits as [B*S, E] (one count over all tokens) differ."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersTop1Router
    B, S, E2, cap = 3, 7, 4, 2
    cfg = SwitchTransformersConfig(d_model=D, num_experts=E2, expert_capacity=cap)
    router = SwitchTransformersTop1Router(cfg).eval()
    x = torch.randn(B, S, D, generator=torch.Generator().manual_seed(3))
    x[1] = x[1, :1]  # a sequence of identical tokens: its expert overflows
    with torch.no_grad():
        mask, probs, logits = router(x)
    want_ids = np.where(mask.sum(-1).numpy() > 0, mask.argmax(-1).numpy(), -1).reshape(-1)
    w, ids = _route3(B, S, E2, cap).reference(logits.numpy())
    np.testing.assert_array_equal(ids[:, 0], want_ids)
    kept = want_ids >= 0
    np.testing.assert_allclose(w[kept, 0], probs.numpy().reshape(-1)[kept], rtol=1e-6)
    assert (w[~kept] == 0).all() and (~kept).sum() >= S - cap
    from moec.ir.ops.moe import RouteOp
    flat = RouteOp.create([Value(TensorType(DType.F32, (None, E2)))], {"k": 1, "scoring": "softmax", "capacity": cap})
    assert not np.array_equal(flat.reference(logits.numpy().reshape(B * S, E2))[1][:, 0], want_ids)


def test_per_sequence_route_checked():
    from moec.ir.opdef import IRError
    from moec.ir.ops.moe import RouteOp
    with pytest.raises(IRError, match="need capacity"):
        RouteOp.create([Value(TensorType(DType.F32, (2, 3, 4)))], {"k": 1, "scoring": "softmax"})
    o = _route3("B", "S", 4, 2)
    assert o.results[1].type.shape == (None, 1)
    assert _route3(2, 3, 4, 2).results[1].type.shape == (6, 1)


def _route_module(cap=2):
    L3 = 'tensor<?x?x4xf32, "B,S">'
    text = f'''module {{
  func.func @main(%l: {L3}) -> (tensor<?x1xf32>, tensor<?x1xi64>) attributes {{moec.inputs = ["l"], moec.outputs = ["w", "ids"]}} {{
    %r:2 = "moe.route"(%l) {{k = 1 : i64, scoring = "softmax", capacity = {cap} : i64}} : ({L3}) -> (tensor<?x1xf32>, tensor<?x1xi64>)
    func.return %r#0, %r#1 : tensor<?x1xf32>, tensor<?x1xi64>
  }}
}}'''
    return parse_module(text, WeightStore())


def _seq_logits(B, S):
    lg = np.random.default_rng(2).standard_normal((B, S, 4)).astype(np.float32)
    lg[1:, :, 2] += 3.0  # sequences after the first all choose expert 2: over capacity
    return lg


def test_per_sequence_route_c_matches_reference(tmp_path):
    m = _route_module()
    art = build_module(m, str(tmp_path / "out"))
    for B, S in [(3, 5), (1, 4), (2, 1)]:
        lg = _seq_logits(B, S)
        got = art([lg])
        want = run(m, {"l": lg})
        np.testing.assert_array_equal(got[1], want["ids"])
        np.testing.assert_allclose(got[0], want["w"], rtol=1e-6, atol=1e-7)
    assert (run(m, {"l": _seq_logits(3, 5)})["ids"].reshape(3, 5) == -1).sum(1).tolist()[1:] == [3, 3]


def test_per_sequence_route_on_triton():
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from moec.codegen.triton import runtime as rt
    lg = _seq_logits(3, 5)
    want_w, want_ids = _route3(3, 5, 4, 2).reference(lg)
    w, ids = rt.moe_route(torch.from_numpy(lg).to(rt.DEVICE), None, k=1, scoring="softmax", n_group=1, topk_group=1,
                          group_score="max", post="none", norm="none", norm_eps=0.0, scale=1.0, capacity=2)
    np.testing.assert_array_equal(ids.cpu().numpy(), want_ids)
    np.testing.assert_allclose(w.cpu().numpy(), want_w, rtol=1e-6, atol=1e-7)


def test_per_sequence_route_on_ascend(tmp_path):
    """On the NPU: moe_init_routing counts the capacity per sequence (more cases: tests/test_ascend_route_slots.py)."""
    m = _route_module()
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert "moe.route" not in art.plan["host_ops"], art.plan["host_ops"]
    lg = _seq_logits(3, 5)
    np.testing.assert_array_equal(np.asarray(art([lg])[1]), run(m, {"l": lg})["ids"])


def _switch_block(cap, per_sequence=True):
    """transformers' SwitchTransformersSparseMLP with a small capacity (so that it binds); ``per_sequence`` False:
    the look-alike whose router counts the capacity over all the batch's tokens (the cumsum over [B*S, E])."""
    import torch
    from test_hf_models import moe_block
    blk = moe_block("switch_transformers")
    blk.router.expert_capacity = cap
    if not per_sequence:
        r = blk.router

        def fwd(hidden_states):
            h = hidden_states.to(r.dtype)
            logits = r.classifier(h)
            probs = torch.nn.functional.softmax(logits, dim=-1)
            idx = torch.nn.functional.one_hot(torch.argmax(probs, dim=-1), num_classes=r.num_experts)
            flat = idx.reshape(-1, r.num_experts)
            prio = torch.cumsum(flat, dim=0).reshape(idx.shape)  # (over every token of the batch)
            return idx * (prio <= r.expert_capacity), torch.max(probs, dim=-1).values.unsqueeze(-1), logits
        r.forward = fwd
    return blk


def _switch_onnx(blk, tmp_path):
    import torch
    from hf_survey import _wrap_first
    from test_hf_models import D as HD
    from moec.frontend.onnx_import import import_model
    import onnx
    x = torch.randn(2, 5, HD, generator=torch.Generator().manual_seed(2))
    p = str(tmp_path / "switch.onnx")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_wrap_first(blk), (x,), p, input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "B", 1: "S"}}, opset_version=18)
    from hf_survey import _recognise
    m = import_model(onnx.load(p))
    return m, _recognise(m)


def _switch_exact(blk, m, art=None):
    import torch
    from test_hf_models import D as HD
    for B, S in ((3, 6), (1, 9), (4, 2)):
        xs = torch.randn(B, S, HD, generator=torch.Generator().manual_seed(5))
        xs[1:] = xs[1:, :1]  # sequences of identical tokens: their expert overflows its capacity
        with torch.no_grad():
            want = blk(xs)
        want = (want[0] if isinstance(want, tuple) else want).numpy()
        got = list(run(m, [xs.numpy()]).values())[0] if art is None else art([xs.numpy()])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"B={B} S={S}")


def test_switch_block_per_sequence_capacity_recognised_and_exact(tmp_path):
    """transformers 5.25's SwitchTransformersSparseMLP through the TorchScript exporter: moe.route's capacity with
    logits [B, S, E] (counted per sequence), over-capacity tokens output 0 (5.x: no pass-through); equal to eager
    on batches whose sequences overflow, in the IR and in the C build."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    blk = _switch_block(2)
    m, layers = _switch_onnx(blk, tmp_path)
    assert len(layers) == 1, layers
    la = layers[0]
    assert la["family"] == "switch" and la["routing"]["capacity"] == 2, la
    assert la["capacity_counted"] == "per sequence" and la["over_capacity_tokens"] == "output 0", la
    _switch_exact(blk, m)
    art = build_module(m, str(tmp_path / "out"))
    _switch_exact(blk, m, art)


@pytest.mark.slow
def test_switch_lookalike_with_a_global_capacity(tmp_path):
    """The look-alike counting the capacity over all the batch's tokens is recognised as that (capacity over all
    tokens), not as the per-sequence count, and equals eager on batches where the two differ."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    blk = _switch_block(2, per_sequence=False)
    m, layers = _switch_onnx(blk, tmp_path)
    assert len(layers) == 1 and layers[0]["capacity_counted"] == "over all tokens", layers
    _switch_exact(blk, m)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,dims", [("bf16", "dynamic"), ("f32", "static")])
def test_switch_torchscript_cells(dtype, dims, tmp_path, monkeypatch):
    """The survey's TorchScript cells of switch_transformers in bf16 (the router kept in f32: its cast of the hidden
    states is in the flattened selection's chain) and at static dims ([8, 128]: sequences longer than the capacity
    of 64, counted per sequence): recognised (switch) and exact by the survey's criterion."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_survey as survey
    monkeypatch.setenv("MOEC_SURVEY_CACHE", str(tmp_path))
    blk = survey.sparse_blocks(survey.build_model("switch_transformers", "batched_mm", dtype))[0].eval()
    cell = survey.run_cell("switch_transformers", blk, "-", dtype, dims, "torchscript", "test:switch")
    assert cell["status"] == "recognised" and cell["family"] == "switch" and cell.get("exact") is True, cell
    assert cell["routing"]["capacity"] == 64


def test_post_norm_w_and_per_sequence_route_built_for_triton(tmp_path):
    """The Triton target end to end (the emitter passes post_norm_w to moe_experts; the route takes [B, S, E]
    logits): equal to the reference."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    m = _layer(fold=True)
    art = build_module(m, str(tmp_path / "experts"), target="triton", run_passes=True)
    x = _inputs(7)
    np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=1e-4, atol=1e-5)
    m = _route_module()
    art = build_module(m, str(tmp_path / "route"), target="triton", run_passes=True)
    lg = _seq_logits(3, 5)
    want = run(m, {"l": lg})
    got = art([lg])
    np.testing.assert_array_equal(np.asarray(got[1]), want["ids"])
    np.testing.assert_allclose(np.asarray(got[0]), want["w"], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_ergo_causal_lm_on_ascend(tmp_path):
    """The 2-layer ErgoForCausalLM through moec.compile(target="ascend") with its batch static (input_ids [1, S]:
    the probes size input_ids' S from the [1, ?, D] view of the tokens, whose dims lost their names in reshapes):
    both layers recognised, verified, no host op (the post-norm weight on moe_scatter_rows)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import test_ascend_models as tam
    tam._check("ergo", tmp_path)
