"""Recognition of the real transformers MoE families beyond the first slice (issue 16 item 2): the
routing schemes ``moe.route`` gained for them (PhiMoE's sparsemixer, a clamped renormalisation,
a group mask that fills with a value other than -inf), checked against transformers' own routing
code and on every target's route kernel; and the real blocks recognised with the right family and
routing, equal to the torch module on other batch / sequence sizes."""
from __future__ import annotations

import numpy as np
import pytest

from moec.driver import build_module
from moec.ir import DType, TensorType, Value, run
from moec.ir.ops.moe import RouteOp
from test_moe_ops import _inputs, _module

# route attributes the real families need (see ir/ops/moe.py), as IR text for test_moe_ops' layer
NEW_ROUTES = {
    # PhiMoE: top-2 of the raw logits, each slot's weight a masked softmax of all the logits
    "sparsemixer": (dict(scoring='"none"', post='"sparsemixer"', jitter_eps="0.01 : f64"), {"k": 2}),
    # a wide eps keeps more experts in each slot's softmax (the mask matters), k=3
    "sparsemixer_wide": (dict(scoring='"none"', post='"sparsemixer"', jitter_eps="0.3 : f64"), {"k": 3}),
    # ERNIE-4.5: softmax + selection bias, w / clamp(sum, min): a large min so that it bites
    "norm_min": (dict(norm='"sum"', norm_min="0.6 : f64"), {"k": 2, "bias": True}),
    # AXK2: groups not kept get selection score 0, not -inf: raw (negative) logits lose to them
    "group_fill_zero": (dict(scoring='"none"', n_group="4 : i64", topk_group="2 : i64", group_fill="0.0 : f64"),
                        {"k": 4}),
    # Kolibri1: selection by raw logits + bias, weights sigmoid of the chosen logits, renormalised
    "raw_logits_bias_sigmoid": (dict(scoring='"none"', post='"sigmoid"', norm='"sum"'), {"k": 2, "bias": True}),
    # DeepSeek-V4: the graph's own scores (sqrt(softplus(l)), fed as the logits) + bias, renormalised, scaled
    "scores_bias_norm_scale": (dict(scoring='"none"', norm='"sum"', scale="1.5 : f64"), {"k": 2, "bias": True}),
    # ERGO's experts: squared ReLU (an expert activation, on the same path as the routing cases)
    "relu2_experts": (dict(norm='"sum"'), {"k": 2, "act": "relu2", "b_out": True}),
}


def _route(**attrs):
    lv = Value(TensorType(DType.F32, ("T", 8)))
    bv = Value(TensorType(DType.F32, (8,)))
    return RouteOp.create([lv, bv] if attrs.pop("bias", False) else [lv], attrs)


def test_sparsemixer_reference_is_transformers_phimoe_routing():
    """moe.route's sparsemixer (k=2) against transformers' own ``sparsemixer`` in eval mode: the same
    experts and weights, at eps values where the mask keeps one, some and all experts."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.models.phimoe.modeling_phimoe import sparsemixer
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal((64, 8)) * 2).astype(np.float32)
    logits[3] = logits[3, 0]  # a row of ties
    for eps in (0.01, 0.2, 10.0):
        w, ids = _route(k=2, scoring="none", post="sparsemixer", jitter_eps=eps).reference(logits)
        with torch.no_grad():
            tw, tids = sparsemixer(torch.from_numpy(logits), jitter_eps=eps, training=False)
        np.testing.assert_array_equal(ids, tids.numpy())
        np.testing.assert_allclose(w, tw.numpy(), rtol=1e-6, atol=1e-7)
        assert 0 < (w < 0.999).mean() or eps == 0.01


def test_norm_min_and_group_fill_reference():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((32, 8)).astype(np.float32)
    bias = (rng.standard_normal(8) * 2).astype(np.float32)
    w, ids = _route(k=2, scoring="softmax", norm="sum", norm_min=0.5, bias=True).reference(logits, bias)
    s = np.exp(logits - logits.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    want_ids = np.argsort(-(s + bias), axis=1, kind="stable")[:, :2]
    sel = np.take_along_axis(s, want_ids, 1)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(w, sel / np.maximum(sel.sum(1, keepdims=True), 0.5), rtol=1e-6)
    assert (sel.sum(1) < 0.5).any() and (sel.sum(1) > 0.5).any()
    # group fill 0: the groups not kept score 0, so they beat kept experts with negative logits
    w, ids = _route(k=4, scoring="none", n_group=4, topk_group=2, group_fill=0.0).reference(logits)
    for t in range(32):
        g = logits[t].reshape(4, 2).max(1)
        keep = np.argsort(-g, kind="stable")[:2]
        c = np.zeros(8, np.float32)
        for gi in keep:
            c[2 * gi:2 * gi + 2] = logits[t, 2 * gi:2 * gi + 2]
        i = np.argsort(-c, kind="stable")[:4]
        assert list(ids[t]) == list(i)
        np.testing.assert_allclose(w[t], logits[t, i], rtol=1e-6)
    assert any(set(ids[t]) - {2 * g + j for g in np.argsort(-logits[t].reshape(4, 2).max(1), kind="stable")[:2]
                                      for j in (0, 1)} for t in range(32))


def _attrs(ra: dict) -> dict:
    """IR attribute text (test_moe_ops' form) -> python values."""
    out = {}
    for k, v in ra.items():
        v = v.split(" : ")[0]
        out[k] = v.strip('"') if v.startswith('"') else (float(v) if "." in v else int(v))
    return out


@pytest.mark.parametrize("target", ["cpu", "ascend"])
@pytest.mark.parametrize("name", sorted(NEW_ROUTES))
def test_new_route_attributes_on_every_target(name, target, tmp_path):
    """The C and Ascend route kernels compute the new routing attributes as the reference does (a
    whole layer: route -> dispatch -> experts -> combine; Triton's route kernel: the next test)."""
    ra, kw = NEW_ROUTES[name]
    m = _module(ra, **kw)
    art = build_module(m, str(tmp_path / "out"), target=target, run_passes=target == "ascend")
    for T, same in [(7, False), (1, False), (6, True)]:
        x = _inputs(T, same)
        want = run(m, {"x": x})["y"]
        got = np.asarray(art([x])[0])
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=f"{name} {target} T={T}")
    if target == "ascend":
        assert not art.plan["host_ops"], art.plan["host_ops"]


def test_relu2_experts_on_triton(tmp_path):
    """Triton's expert kernels with the squared ReLU, against the reference (interpreter without a GPU)."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    ra, kw = NEW_ROUTES["relu2_experts"]
    m = _module(ra, **kw)
    art = build_module(m, str(tmp_path / "out"), target="triton")
    for T in (7, 1):
        x = _inputs(T)
        np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(k for k in NEW_ROUTES if k != "relu2_experts"))
def test_new_route_attributes_on_triton(name):
    """Triton's route kernel (interpreter without a GPU) against the reference: weights and ids."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from moec.codegen.triton import runtime as rt
    ra, kw = NEW_ROUTES[name]
    a = {"scoring": "softmax", "n_group": 1, "topk_group": 1, "group_score": "max", "post": "none", "norm": "none",
         "norm_eps": 0.0, "scale": 1.0, "capacity": 0, "k": kw["k"], **_attrs(ra)}
    rng = np.random.default_rng(8)
    logits = (rng.standard_normal((33, 8)) * 1.5).astype(np.float32)
    logits[4] = 0.25  # ties
    bias = (rng.standard_normal(8)).astype(np.float32) if kw.get("bias") else None
    want_w, want_ids = _route(**a, bias=bias is not None).reference(*([logits] + ([bias] if bias is not None else [])))
    w, ids = rt.moe_route(torch.from_numpy(logits).to(rt.DEVICE),
                          None if bias is None else torch.from_numpy(bias).to(rt.DEVICE), **a)
    np.testing.assert_array_equal(ids.cpu().numpy(), want_ids)
    np.testing.assert_allclose(w.cpu().numpy(), want_w, rtol=1e-5, atol=1e-6)


# -- real transformers blocks (torch.export path, batched_mm experts; test_hf_models' harness) ----------

# architecture -> (family, routing attributes that must hold, other layer fields that must hold)
FAMILIES = {
    # sparsemixer: two arg-maxes over the logits (the second with the first pick set to -inf) are its top-2
    "phimoe": ("phimoe", {"scoring": "none", "post": "sparsemixer", "norm": "none", "k": 2,
                          "jitter_eps": float(np.float32(0.02)) / 2}, {}),
    # softmax + selection bias, weights / clamp(sum, min=1e-12), two shared experts as one MLP
    "ernie4_5_moe": ("ernie-4.5", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2,
                                   "norm_min": float(np.float32(1e-12))}, {"shared_experts": 1}),
    # sigmoid of the top-k logits scales the experts' input in a dense batched formulation; shared expert
    "llama4_text": ("llama-4", {"scoring": "none", "post": "sigmoid", "norm": "none", "k": 2},
                    {"shared_experts": 1, "routing_weight_scales": "expert input"}),
    # DeepSeek-V3's routing with the groups not kept filled with 0.0 instead of -inf
    "axk2": ("deepseek-v3", {"scoring": "sigmoid", "n_group": 2, "topk_group": 1, "group_fill": 0.0, "k": 2,
                             "norm": "sum", "scale": 2.5}, {}),  # (its shared expert reads [B, S, D]: left beside)
    # softmax + selection bias, scale 6; the ids past the expert FFNs are identity (zero-computation) experts
    "longcat_flash": ("longcat-flash", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2, "scale": 6.0},
                      {"identity_experts": 2}),
    # DeepSeek-V4: selection by sqrt(softplus(l)) + bias, weights those scores renormalised, times 1.5: moe.route
    # reads the graph's own scores (scoring none)
    "deepseek_v4": ("deepseek-v4", {"scoring": "none", "norm": "sum", "post": "none", "k": 2, "scale": 1.5}, {}),
    # Kolibri1: selection by the raw logits + bias, weights sigmoid of the chosen logits
    "kolibri1": ("kolibri1", {"scoring": "none", "post": "sigmoid", "k": 2}, {}),
}
FAST = ("phimoe", "deepseek_v4")


def _block(arch):
    pytest.importorskip("transformers")
    from test_hf_models import moe_block
    blk = moe_block(arch)
    if arch == "axk2":
        import torch
        # selection scores sigmoid + bias < 0 in the kept group: the 0.0 of the masked group wins, so the
        # fill value decides every token's experts (with -inf, the kept group's would be chosen)
        with torch.no_grad():
            blk.gate.e_score_correction_bias.fill_(-1.5)
    if arch == "longcat_flash":
        import torch
        with torch.no_grad():  # (a buffer: moe_block leaves it 0) a selection bias that changes the choices
            b = blk.router.e_score_correction_bias
            b.copy_(torch.linspace(-0.3, 0.3, b.numel()))
    return blk


def _exact(blk, m, D):
    import torch
    from moec.frontend.torch_import import tensor_to_numpy
    from test_hf_models import first_output
    for shape in ((1, 7, D), (3, 1, D)):
        xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = tensor_to_numpy(first_output(blk(xs)))
        got = list(run(m, [tensor_to_numpy(xs)]).values())[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", [a if a in FAST else pytest.param(a, marks=pytest.mark.slow) for a in sorted(FAMILIES)])
def test_real_block_is_recognised_and_exact(arch):
    torch = pytest.importorskip("torch")
    from test_hf_models import D, recognise
    blk = _block(arch)
    m, layers = recognise(blk, torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2)))
    fam, routing, fields = FAMILIES[arch]
    assert [la["family"] for la in layers] == [fam], layers
    assert {k: layers[0]["routing"].get(k) for k in routing} == routing
    assert {k: layers[0][k] for k in fields} == fields
    assert (layers[0]["E"], layers[0]["k"], layers[0]["D"]) == (4, 2, D)
    assert sum(o.name == "moe.experts" for o in m.main.ops) == 1
    _exact(blk, m, D)


ONNX_CELLS = [(a, e) for a in ("phimoe", "ernie4_5_moe", "llama4_text", "axk2", "longcat_flash")
              for e in ("dynamo", "torchscript") if (a, e) != ("longcat_flash", "dynamo")]


@pytest.mark.slow
@pytest.mark.parametrize("arch,exporter", ONNX_CELLS)
def test_onnx_export_of_real_block_is_recognised_and_exact(arch, exporter, tmp_path):
    """Both torch.onnx exporters: the dynamo export writes the -inf fill of PhiMoE's second pick as a
    ConstantOfShape and Llama-4's gate/up split with a positive axis; the same families and routing.
    (LongCat's dynamo export has an ONNX Mod that moec's importer does not take yet.)"""
    torch = pytest.importorskip("torch")
    from hf_survey import _wrap_first
    from test_hf_models import D, export_onnx, first_output, recognise_onnx
    blk = _block(arch)
    m, layers = recognise_onnx(export_onnx(_wrap_first(blk), tmp_path / "b.onnx", exporter == "dynamo"))
    fam, routing, fields = FAMILIES[arch]
    assert [la["family"] for la in layers] == [fam], layers
    assert {k: layers[0]["routing"].get(k) for k in routing} == routing
    xs = torch.randn(1, 3, D, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = first_output(blk(xs)).numpy()
    np.testing.assert_allclose(list(run(m, [xs.numpy()]).values())[0], want, rtol=1e-4, atol=1e-5)


def test_explain_names_a_split_traced_from_the_example_input():
    """transformers 4.x GraniteMoE / JetMoE traced by TorchScript split the sorted token rows by the per-expert
    counts of the example input (``expert_size.tolist()`` became constants): not recognised, and --explain
    says why, naming the Split and its sizes."""
    import gzip
    import os
    pytest.importorskip("onnx")
    import onnx
    from moec.frontend.onnx_import import import_model
    from moec.passes.base import run_to_fixed_point
    from moec.passes.dce import DeadCodeElimination
    from moec.passes.fold_constants import FoldConstants
    from moec.passes.recognize_moe import RecognizeMoE
    from moec.passes.recognition_trace import format_explain, recognition_of
    p = os.path.join(os.path.dirname(__file__), "fixtures", "hf4x", "granitemoe_block_torchscript.onnx.gz")
    if not os.path.exists(p):
        pytest.skip("the 4.x fixtures are not in this checkout")
    m = import_model(onnx.load_from_string(gzip.open(p).read()))
    run_to_fixed_point(m, [FoldConstants(), DeadCodeElimination()])
    run_to_fixed_point(m, [RecognizeMoE(), DeadCodeElimination()])
    assert not m.attrs.get("moec.moe_layers")
    text = "\n".join(format_explain(recognition_of(m)))
    assert "split into per-expert blocks of constant sizes [" in text and "Split" in text, text


# -- the new rules on modules written another way (same math: recognised; other math: near misses) --------

def _variant_module(variant: str):
    """A zoo MixtralFused-style loop (stacked gate_up / down weights, per-expert index_add) whose router is
    ``variant``: the rules added for the real families, spelled differently, and look-alikes that differ."""
    import torch
    import torch.nn.functional as F
    from moec.zoo.modules import MixtralFused

    class Variant(MixtralFused):
        def __init__(self):
            super().__init__(d=16, f=24, e=4 + (2 if "identity" in variant else 0), k=2)
            if "identity" in variant:  # 4 expert FFNs; router outputs 4 and 5 are identity experts
                self.gate_up_proj = torch.nn.Parameter(self.gate_up_proj[:4].clone())
                self.down_proj = torch.nn.Parameter(self.down_proj[:4].clone())
            self.register_buffer("bias", torch.linspace(-0.3, 0.3, self.gate.out_features))

        def route(self, x):
            logits = self.gate(x)
            if variant.startswith("argmax"):  # two arg-maxes: the second over the logits with the first pick masked
                fill = float("-inf") if variant == "argmax_chain" else 0.0
                i1 = logits.argmax(-1, keepdim=True)
                i2 = logits.scatter(-1, i1, fill).argmax(-1, keepdim=True)
                ids = torch.cat([i1, i2], -1)
                w = F.softmax(logits, -1).gather(-1, ids)
                return w / w.sum(-1, keepdim=True), ids
            s = F.softmax(logits, -1)
            ids = torch.topk(s + self.bias, 2, dim=-1).indices
            w = (s + self.bias if variant == "bias_in_weights" else s).gather(-1, ids)
            if variant in ("identity", "identity_scaled"):
                return w * 3.0, ids
            return w / torch.clamp(w.sum(-1, keepdim=True), min=0.05), ids

        def forward(self, x3):
            x = x3.reshape(-1, x3.shape[-1])
            w, ids = self.route(x)
            out = torch.zeros_like(x)
            for e in range(self.gate_up_proj.shape[0]):
                tok, slot = torch.where(ids == e)
                g, u = F.linear(x[tok], self.gate_up_proj[e]).chunk(2, dim=-1)
                y = F.linear(F.silu(g) * u, self.down_proj[e])
                out = out.index_add(0, tok, y * w[tok, slot].unsqueeze(-1))
            if "identity" in variant:  # ids 4, 5: the token itself (LongCat's zero-computation experts)
                scale = 2.0 if variant == "identity_scaled" else 1.0
                wid = torch.where(ids >= 4, w, torch.zeros_like(w)).sum(-1, keepdim=True)
                out = out + scale * x * wid
            return out.view(x3.shape)

    torch.manual_seed(0)
    mod = Variant().eval()
    if variant == "argmax_chain_fill0":
        # logits negative about half the time: a 0 fill makes the second arg-max repeat the first pick on the
        # tokens whose other logits are all negative (top-1 there, top-2 elsewhere: neither routing).  (Every
        # logit negative would make it exactly top-1, which is then recognised as such.)
        mod.gate.bias = torch.nn.Parameter(torch.full((mod.gate.out_features,), -0.5))
    return mod


VARIANTS = {  # variant -> family recognised, or None: a near miss that must stay ordinary ops
    # (softmax(l)[top2] renormalised is the softmax of the top-2 logits: read off the arg-maxes of l, that is
    # Granite's softmax after top-k, the same numbers as Mixtral's)
    "argmax_chain": "granite-moe", "clamp_floor": "ernie-4.5", "identity": "longcat-flash",
    "argmax_chain_fill0": None, "bias_in_weights": None, "identity_scaled": None,
}


@pytest.mark.parametrize("variant", [v if v in ("argmax_chain", "bias_in_weights") else
                                     pytest.param(v, marks=pytest.mark.slow) for v in sorted(VARIANTS)])
def test_new_rules_follow_the_math_not_the_spelling(variant):
    torch = pytest.importorskip("torch")
    from test_hf_models import recognise
    mod = _variant_module(variant)
    m, layers = recognise(mod, torch.randn(2, 5, 16))
    want_fam = VARIANTS[variant]
    assert [la["family"] for la in layers] == ([want_fam] if want_fam else []), layers
    xs = torch.randn(3, 4, 16)
    with torch.no_grad():
        want = mod(xs).numpy()
    np.testing.assert_allclose(list(run(m, [xs.numpy()]).values())[0], want, rtol=1e-4, atol=1e-5)
    if want_fam == "ernie-4.5":
        assert layers[0]["routing"]["norm_min"] == pytest.approx(0.05)


# -- Gemma4 / DiffusionGemma: the router reads its own RMSNorm of the residual, the experts another; the routing
# weights are scaled by per_expert_scale[ids] ----------------------------------------------------------------

def _gemma4_moe(impl="batched_mm", look_alike=None, arch="gemma4"):
    """The MoE lines of transformers' Gemma4TextDecoderLayer (DiffusionGemma's are the same) around the real
    router, experts and RMSNorm classes: ``router(flat)``, ``experts(pre_feedforward_layernorm_2(flat), ...)``.
    ``look_alike="swapped_scale"``: each slot scaled by the factor of the token's other chosen expert (not a
    factor of the expert it scales: must stay ordinary ops)."""
    import torch
    if arch == "gemma4":
        from transformers import Gemma4TextConfig as Cfg
        from transformers.models.gemma4.modeling_gemma4 import Gemma4RMSNorm as Norm
        from transformers.models.gemma4.modeling_gemma4 import Gemma4TextExperts as Experts
        from transformers.models.gemma4.modeling_gemma4 import Gemma4TextRouter as Router
    else:
        from transformers.models.diffusion_gemma.configuration_diffusion_gemma import DiffusionGemmaTextConfig as Cfg
        from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaRMSNorm as Norm
        from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextExperts as Experts
        from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaTextRouter as Router

    class GemmaMoE(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.router, self.experts = Router(cfg), Experts(cfg)
            self.pre_feedforward_layernorm_2 = Norm(cfg.hidden_size, eps=cfg.rms_norm_eps)

        def forward(self, residual):
            flat = residual.reshape(-1, residual.shape[-1])
            _, w, ids = self.router(flat)
            if look_alike == "swapped_scale":
                s = self.router.per_expert_scale
                w = w / s[ids] * s[ids[:, [1, 0]]]
            h = self.experts(self.pre_feedforward_layernorm_2(flat), ids, w)
            return h.reshape(residual.shape)

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = Cfg(hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_experts=4, top_k_experts=2,
                  enable_moe_block=True, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=16, vocab_size=64)
    cfg._experts_implementation = impl
    mod = GemmaMoE(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # N(0, 0.2) weights; norm scales and per_expert_scale around 1
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    return mod


@pytest.mark.parametrize("arch,impl,look_alike", [
    ("gemma4", "batched_mm", None), ("gemma4", "batched_mm", "swapped_scale"),
    pytest.param("gemma4", "grouped_mm", None, marks=pytest.mark.slow),
    pytest.param("diffusion_gemma", "batched_mm", None, marks=pytest.mark.slow)])
def test_gemma4_router_on_its_own_norm_with_per_expert_scale(arch, impl, look_alike):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_models import recognise
    mod = _gemma4_moe(impl, look_alike, arch)
    m, layers = recognise(mod, torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2)))
    if look_alike:
        assert layers == []
    else:
        assert [la["family"] for la in layers] == ["gemma4"], layers
        la = layers[0]
        assert {k: la["routing"][k] for k in ("scoring", "norm", "post", "k")} == \
            {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}
        assert (la["E"], la["D"], la["F"], la["activation"]) == (4, 32, 16, "geglu_tanh")
        assert "expert_scale" in la and "router_input" in la
    xs = torch.randn(3, 4, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = mod(xs).numpy()
    np.testing.assert_allclose(list(run(m, [xs.numpy()]).values())[0], want, rtol=1e-4, atol=1e-5)


# -- bf16 exports: the slot sum runs in f32 between casts, the router reads an f32 copy of the bf16 tokens --------

@pytest.mark.slow
@pytest.mark.parametrize("arch,exporter", [("qwen3_moe", "dynamo"), ("deepseek_v3", "dynamo"),
                                           ("deepseek_v2", "torchscript")])
def test_bf16_onnx_export_of_real_block_is_recognised(arch, exporter, tmp_path):
    """Both exporters' bf16 blocks: dynamo sums the k expert outputs in f32 between Casts (the layer output is
    the cast back after the sum), DeepSeek-V3's router reads hidden.type(float32) while the experts read the
    bf16 tokens; the families of the f32 export."""
    torch = pytest.importorskip("torch")
    from hf_survey import _wrap_first
    import warnings
    from test_hf_models import D, moe_block, recognise_onnx
    blk = moe_block(arch, dtype=torch.bfloat16)
    want = {"qwen3_moe": "qwen2-moe", "deepseek_v3": "deepseek-v3", "deepseek_v2": "qwen2-moe"}[arch]
    x = torch.randn(2, 5, D).to(torch.bfloat16)
    kw = dict(dynamic_shapes=({0: "B", 1: "S"},)) if exporter == "dynamo" else \
        dict(dynamic_axes={"x": {0: "B", 1: "S"}}, opset_version=18)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_wrap_first(blk), (x,), str(tmp_path / "b.onnx"), input_names=["x"],
                          dynamo=exporter == "dynamo", **kw)
    m, layers = recognise_onnx(tmp_path / "b.onnx")
    assert [la["family"] for la in layers] == [want], layers
    assert (layers[0]["E"], layers[0]["k"], layers[0]["D"]) == (4, 2, D)


@pytest.mark.slow
def test_gemma4_bf16_block_is_recognised():
    """bf16: the per-expert scale folded into the bf16 down projection is proved on the layer's f32 analogue
    (unrounded product) and kept rounded to bf16."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from test_hf_models import recognise
    mod = _gemma4_moe().to(torch.bfloat16)
    m, layers = recognise(mod, torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16))
    assert [la["family"] for la in layers] == ["gemma4"], layers
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert all(v.type.dtype == DType.BF16 and np.asarray(m.weights[v.owner.attrs["value"].key]).dtype.name == "bfloat16"
               for v in ex.operands[4:6])


def test_onnx_softplus_is_ln_of_exp_plus_one():
    """The ONNX Softplus converter (DeepSeek-V4's router in both torch.onnx exports) against numpy, far tails
    included (no overflow at 1e4, ln 2 at 0)."""
    from helpers import make_model
    from moec.frontend.onnx_import import import_model
    from onnx import helper
    node = helper.make_node("Softplus", ["x"], ["y"])
    m = import_model(make_model([node], [("x", np.float32, [9])], [("y", np.float32, [9])]))
    x = np.array([-1e4, -30, -2, -1e-6, 0, 1e-6, 2, 30, 1e4], np.float32)
    got = list(run(m, [x]).values())[0]
    want = np.logaddexp(0, x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("D,E", [(1024, 4), (2048, 4)])
def test_renormalisation_kept_at_wide_hidden_and_few_experts(D, E):
    """A real Mixtral block at hidden 1024-2048 with 4 experts (weights N(0, 0.02)): the router's folded transposed
    weight [D, E] once got probe values scaled by its last dim (E), so every probe saturated the softmax, a
    renormalised top-2 and an unnormalised one agreed on all of them, and the block was recognised as qwen2-moe
    without its renormalisation (found by the f32 criterion's verification, moec 2.25e3 units off)."""
    import torch
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    from moec.frontend.torch_import import import_torch
    from moec.passes.base import run_to_fixed_point
    from moec.passes.pipeline import stages
    from moec.targets import target_for
    import json
    torch.manual_seed(0)
    cfg = MixtralConfig(hidden_size=D, intermediate_size=32, num_local_experts=E, num_experts_per_tok=2)
    blk = MixtralSparseMoeBlock(cfg).eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.02)
    m = import_torch(blk, (torch.randn(2, 5, D),))
    st = dict(stages(target_for("cpu")))
    run_to_fixed_point(m, st["canonicalize"])
    run_to_fixed_point(m, st["recognize-moe"])
    layers = [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]
    assert len(layers) == 1 and layers[0]["family"] == "mixtral", layers
    assert layers[0]["routing"]["norm"] == "sum", layers
