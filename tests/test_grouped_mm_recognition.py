"""recognize-moe on the sorted ("grouped_mm") form of an MoE layer (issue 16 item 2).

transformers 5.x's ``grouped_mm`` experts (and any code written the same way) flatten the top-k's
(token, slot) pairs, sort them by expert id, count the pairs per expert, run a grouped matmul over the
contiguous row groups (torch._grouped_mm / transformers' grouped_mm_fallback, imported as a per-row
weight gather whose group is found from the cumulative group ends), apply the inverse permutation and
sum over the slot axis.  recognize-moe must find that layer by what it computes: with probe ids, each
token's rows are multiplied by exactly its chosen experts (the group of sorted row r is the expert of
sorted pair r), and the whole rewritten layer equals the original on probe tokens.  Look-alikes that
differ (groups read off the unsorted ids, the permutation applied again instead of inverted) stay
ordinary ops, and say why.

``SortedMoE`` is written here, in moec's tests, from that description; the real transformers blocks
are tested below with tiny configs and ``experts_implementation="grouped_mm"`` kept.
"""
import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moec.passes.base import run_to_fixed_point  # noqa: E402
from moec.passes.pipeline import stages  # noqa: E402
from moec.passes.recognition_trace import recognition_of  # noqa: E402
from moec.targets import target_for  # noqa: E402


class SortedMoE(torch.nn.Module):
    """softmax top-k routing renormalised (Mixtral's routing), SwiGLU experts (``act`` "clamped": the gate
    clamped above and the up part both sides at ``limit``; "gate_clamped": only the gate), written in the sorted
    form.  ``variant``: "exact"; "unsorted_groups" (the grouped matmul's groups counted from the
    sorted ids but the rows left in token order: rows meet other experts' weights); "permute_twice"
    (the sorted rows put back with the permutation itself, not its inverse)."""

    def __init__(self, D=4, F=4, E=4, k=2, variant="exact", seed=0, act="swiglu", limit=3.0, bias=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.E, self.k, self.variant, self.act, self.limit = E, k, variant, act, limit
        self.router = torch.nn.Parameter(torch.randn(D, E, generator=g))
        self.w_in = torch.nn.Parameter(torch.randn(E, D, 2 * F, generator=g) * 0.5)  # [E, in, out]
        self.w_out = torch.nn.Parameter(torch.randn(E, F, D, generator=g) * 0.5)
        # per-expert biases, gathered per row by the sorted ids (as GPT-OSS's grouped_mm experts do)
        self.b_in = torch.nn.Parameter(torch.randn(E, 2 * F, generator=g)) if bias else None
        self.b_out = torch.nn.Parameter(torch.randn(E, D, generator=g)) if bias else None

    def _grouped(self, rows, w, ends):
        """rows [S, K] x w [E, K, N] with rows ends[e-1]..ends[e]-1 in group e: torch._grouped_mm in
        bf16 (torch.export takes it in bf16 only); in f32 the same written out (each row's group is the
        number of group ends at or before it)."""
        if rows.dtype == torch.bfloat16:
            return torch._grouped_mm(rows, w, offs=ends)
        grp = (torch.arange(rows.shape[0])[:, None] >= ends[None, :].long()).sum(-1).clamp(max=self.E - 1)
        return torch.bmm(rows[:, None, :], w[grp]).squeeze(1)

    def forward(self, x):
        T, D = x.shape
        w, ids = torch.topk(torch.softmax(x @ self.router, dim=-1), self.k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        pair_expert, pair_w = ids.reshape(-1), w.reshape(-1)
        srt, order = torch.sort(pair_expert, stable=True)
        if self.variant == "unsorted_groups":
            order = torch.arange(pair_expert.shape[0])
        rows = x[order // self.k]
        per_expert = torch.histc(srt.float(), bins=self.E, min=0, max=self.E - 1)
        ends = torch.cumsum(per_expert, dim=0).to(torch.int32)
        h = self._grouped(rows, self.w_in, ends)
        # "bias_unsorted": the biases gathered by the pairs' ids in token order while the rows are sorted
        row_expert = pair_expert if self.variant == "bias_unsorted" else srt
        if self.b_in is not None:
            h = h + self.b_in[row_expert]
        gate, up = h.chunk(2, dim=-1)
        if self.act in ("clamped", "gate_clamped"):  # SwiGLU clamped at limit (GLM-5-Next, HY-V4); a look-alike
            gate = gate.clamp(max=self.limit)
            up = up.clamp(-self.limit, self.limit) if self.act == "clamped" else up
        y = self._grouped(torch.nn.functional.silu(gate) * up, self.w_out, ends)
        if self.b_out is not None:
            y = y + self.b_out[row_expert]
        y = y * pair_w[order].unsqueeze(-1)
        back = order if self.variant == "permute_twice" else torch.argsort(order)
        return y[back].reshape(T, self.k, D).sum(dim=1)


def _import(module, x, **kw):
    from moec.frontend.torch_import import import_torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_torch(module, (x,), **kw)


def _recognise(m):
    st = dict(stages(target_for("cpu")))
    run_to_fixed_point(m, st["canonicalize"])
    run_to_fixed_point(m, st["recognize-moe"])
    return [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]


def _run(m, x):
    from moec.ir.interpreter import run as ir_run
    return np.asarray(list(ir_run(m, [x.detach().numpy()]).values())[0])


def test_sorted_form_recognised_and_exact():
    from moec.ir import print_module
    mod = SortedMoE().eval()
    m = _import(mod, torch.randn(6, 4))
    layers = _recognise(m)
    assert len(layers) == 1, layers
    la = layers[0]
    assert la["family"] == "mixtral" and (la["E"], la["k"], la["D"], la["F"]) == (4, 2, 4, 4)
    assert la["routing"]["norm"] == "sum" and la["activation"] == "swiglu"
    mlir = print_module(m)
    assert "moe.experts" in mlir and "moec.cumsum" not in mlir and "moec.topk" not in mlir  # (the sort is gone)
    for T in (1, 3, 17):
        x = torch.randn(T, 4, generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            want = mod(x).numpy()
        np.testing.assert_allclose(_run(m, x), want, rtol=1e-5, atol=1e-5)


def test_sorted_form_with_per_row_biases():
    """Biases gathered per row by the sorted ids (GPT-OSS's grouped_mm), the weights by the group found
    from the group ends: the same experts per row, so moe.experts with biases."""
    mod = SortedMoE(bias=True).eval()
    m = _import(mod, torch.randn(6, 4))
    assert [la["family"] for la in _recognise(m)] == ["mixtral"]
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert ex.attrs["has_b_in"] and ex.attrs["has_b_out"]
    x = torch.randn(5, 4)
    with torch.no_grad():
        want = mod(x).numpy()
    np.testing.assert_allclose(_run(m, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant,reason,bias", [
    ("unsorted_groups", "do not apply each token's chosen experts", False),
    ("permute_twice", None, False),
    ("bias_unsorted", "or their biases', differ on probe ids", True),
])
def test_sorted_form_near_misses_stay_unrecognised(variant, reason, bias):
    mod = SortedMoE(variant=variant, bias=bias).eval()
    m = _import(mod, torch.randn(6, 4))
    assert _recognise(m) == []
    rec = next(r for r in recognition_of(m) if r["node"] == "topk")
    assert rec["recognised"] is False
    if reason:
        assert reason in rec["reason"], rec
    x = torch.randn(5, 4)
    with torch.no_grad():
        want = mod(x).numpy()
    np.testing.assert_allclose(_run(m, x), want, rtol=1e-5, atol=1e-5)  # still the same function as ordinary ops


def test_sorted_form_bf16_with_aten_grouped_mm():
    mod = SortedMoE(D=8, F=8).to(torch.bfloat16).eval()
    m = _import(mod, torch.randn(6, 8).to(torch.bfloat16))
    assert any(o.loc and "grouped_mm" in o.loc for o in m.main.ops)
    layers = _recognise(m)
    assert [la["family"] for la in layers] == ["mixtral"]


# -- real transformers blocks, experts_implementation="grouped_mm" kept ---------------------------------

def _hf():
    pytest.importorskip("transformers")
    import test_hf_models as H
    return H


def _grouped_block(arch):
    H = _hf()
    blk = H.moe_block(arch, "grouped_mm")
    assert blk.experts.config._experts_implementation == "grouped_mm"
    return blk, H


@pytest.mark.parametrize("arch,family", [("mixtral", "mixtral"),
                                         pytest.param("qwen2_moe", "qwen2-moe", marks=pytest.mark.slow),
                                         pytest.param("gpt_oss", "gpt-oss", marks=pytest.mark.slow)])
def test_real_grouped_mm_block_recognised_and_exact(arch, family):
    blk, H = _grouped_block(arch)
    x = torch.randn(2, 5, H.D, generator=torch.Generator().manual_seed(2))
    m = _import(blk, x, dynamic_dims={0: {0: "B", 1: "S"}}, experts_implementation=None)
    assert "moec.experts_implementation" not in m.attrs  # (nothing swapped: the sorted form itself)
    assert any(o.loc and "grouped_mm" in o.loc for o in m.main.ops)
    layers = _recognise(m)
    assert [la["family"] for la in layers] == [family], layers
    assert (layers[0]["E"], layers[0]["k"], layers[0]["D"]) == (4, 2, H.D)
    from moec.frontend.torch_import import tensor_to_numpy
    for shape in ((1, 7, H.D), (3, 1, H.D)):
        xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = tensor_to_numpy(H.first_output(blk(xs)))
        np.testing.assert_allclose(_run(m, xs), want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch,family", [("mixtral", "mixtral"), ("qwen2_moe", "qwen2-moe")])
def test_moec_compile_keeps_grouped_mm(arch, family, tmp_path, monkeypatch):
    """moec.compile's default ("auto") exports grouped_mm experts as they are set: recognised, built,
    verified against the module; report.json says nothing was replaced."""
    import moec
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    blk, H = _grouped_block(arch)
    cm = moec.compile(blk, (torch.randn(2, 5, H.D),), dynamic_dims={0: {0: "B", 1: "S"}})
    rep = cm.stats.report
    assert rep["verified"] and [la["family"] for la in rep["moe_layers"]] == [family]
    assert "experts_implementation" not in rep


def test_auto_falls_back_to_batched_mm_when_grouped_mm_is_not_recognised(monkeypatch):
    """The swap is the fallback: a grouped_mm layer recognize-moe does not find (here: recognition made to
    find nothing in the grouped form, as for a family whose sorted form it cannot read) is exported as
    batched_mm when that recognises more, and the report says why."""
    from moec import hf_experts
    blk, H = _grouped_block("mixtral")
    found = iter((0, 1))  # the environment: what recognition finds in the grouped form, then the batched one
    monkeypatch.setattr(hf_experts, "_recognised_layers", lambda m: next(found))
    x = torch.randn(2, 5, H.D)
    m = hf_experts.import_module(blk, (x,), {0: {0: "B", 1: "S"}}, "auto")
    info = json.loads(m.attrs["moec.experts_implementation"])
    assert info["exported_as"] == "batched_mm" and info["replaced"] == {"experts": "grouped_mm"}
    assert "grouped_mm as set: 0 of 1" in info["fallback"] and "(1 recognised)" in info["fallback"]
    assert blk.experts.config._experts_implementation == "grouped_mm"  # (restored)
    m2 = hf_experts.import_module(blk, (x,), {0: {0: "B", 1: "S"}}, "batched_mm")  # an explicit name: as asked
    assert json.loads(m2.attrs["moec.experts_implementation"])["exported_as"] == "batched_mm"


# -- a clamped SwiGLU: the clamp read off the graph (GLM-5-Next's and HY-V4's experts clamp at 10) --------

def test_clamped_swiglu_limit_read_from_the_graph():
    mod = SortedMoE(act="clamped", limit=3.0).eval()
    m = _import(mod, torch.randn(6, 4))
    layers = _recognise(m)
    assert [la["activation"] for la in layers] == ["clamped_swiglu"] and layers[0]["family"] == "mixtral"
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert (ex.attrs["limit"], ex.attrs["alpha"], ex.attrs["beta"]) == (3.0, 1.0, 0.0)
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(1)) * 4  # (activations past the clamp)
    with torch.no_grad():
        want = mod(x).numpy()
    np.testing.assert_allclose(_run(m, x), want, rtol=1e-5, atol=1e-5)


def test_gate_only_clamp_is_not_a_clamped_swiglu():
    """Only the gate clamped: no moe.experts activation computes that; the layer stays ordinary ops."""
    m = _import(SortedMoE(act="gate_clamped", limit=3.0).eval(), torch.randn(6, 4))
    assert _recognise(m) == []
    rec = next(r for r in recognition_of(m) if r["node"] == "topk")
    assert rec["step"] == "experts" and "between the up projection(s) and the down projection" in rec["reason"], rec


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["glm5_next_text", "hy_v4"])
def test_real_clamped_swiglu_experts(arch):
    H = _hf()
    blk = H.moe_block(arch)
    x = torch.randn(2, 5, H.D, generator=torch.Generator().manual_seed(2))
    m, layers = H.recognise(blk, x)
    assert [la["activation"] for la in layers] == ["clamped_swiglu"], layers
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert ex.attrs["limit"] == blk.experts.swiglu_limit == 10.0
    from moec.frontend.torch_import import tensor_to_numpy
    xs = torch.randn(1, 7, H.D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = tensor_to_numpy(H.first_output(blk(xs)))
    np.testing.assert_allclose(_run(m, xs), want, rtol=1e-4, atol=1e-5)


# -- sizes computed from another input's shape (a CausalLM's input_ids) ------------------------------------

def test_shape_only_feed_gives_shapes_not_values():
    """moe_util.ShapeOnly: a probe may feed an argument by its shape (the (token, slot) pair count
    torch.export computes from input_ids' shape); an op that needs its values cannot evaluate."""
    from moec.ir import parse_module
    from moec.passes.moe_util import ShapeOnly, evaluate
    m = parse_module('''module {
  func.func @main(%ids: tensor<?x?xi64, "B,S">) -> (tensor<2xi64>, tensor<?x?xi64, "B,S">) attributes {moec.inputs = ["ids"], moec.outputs = ["n", "y"]} {
    %0 = "moec.shape"(%ids) {start = 0 : i64} : (tensor<?x?xi64, "B,S">) -> tensor<2xi64>
    %1 = "moec.add"(%ids, %ids) : (tensor<?x?xi64, "B,S">, tensor<?x?xi64, "B,S">) -> tensor<?x?xi64, "B,S">
    func.return %0, %1 : tensor<2xi64>, tensor<?x?xi64, "B,S">
  }
}
''')
    f = m.main
    feeds = {id(f.args[0]): ShapeOnly((1, 7), np.int64)}
    assert evaluate(m, f, [f.outputs[0]], feeds)[0].tolist() == [1, 7]
    with pytest.raises(KeyError):
        evaluate(m, f, [f.outputs[1]], feeds)


@pytest.mark.slow
@pytest.mark.parametrize("arch,family", [("mixtral", "mixtral"), ("qwen2_moe", "qwen2-moe")])
def test_two_layer_grouped_mm_model_has_both_layers_recognised(arch, family):
    """A whole tiny CausalLM with grouped_mm experts (input_ids [batch, seq]): the pair count of each
    layer's sort comes from input_ids' shape, which the probes give by shape (moe_util.ShapeOnly)."""
    H = _hf()
    import hf_survey as S
    model = S.build_model(arch, "grouped_mm", "f32")

    class Logits(torch.nn.Module):
        def __init__(self, mdl):
            super().__init__()
            self.m = mdl

        def forward(self, ids):
            return H.first_output(self.m(input_ids=ids, use_cache=False).to_tuple())
    lm = Logits(model).eval()
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(5))
    m = _import(lm, ids, dynamic_dims={0: {0: "B", 1: "S"}}, experts_implementation=None)
    layers = _recognise(m)
    assert [la["family"] for la in layers] == [family] * len(S.sparse_blocks(model)) == [family] * 2
    ids2 = torch.randint(3, 128, (1, 7), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = lm(ids2).numpy()
    from moec.ir.interpreter import run as ir_run
    got = np.asarray(list(ir_run(m, [ids2.numpy()]).values())[0])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
