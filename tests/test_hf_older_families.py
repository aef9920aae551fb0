"""Real transformers blocks whose cells the survey left unrecognised for an experts / dispatch reason (issue 16):
PhiMoE's sparsemixer at static dims and in bf16, and the older expert families.  Each cell goes through the
survey's own harness (tests/hf_survey.py run_cell: import, recognize-moe, the recognised graph against the torch
block at the survey's tolerance)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_survey as survey  # noqa: E402  (tests/hf_survey.py)


def _cell(arch, impl, dtype, dims, path, tmp_path, monkeypatch):
    monkeypatch.setenv("MOEC_SURVEY_CACHE", str(tmp_path))  # (ONNX exports made here, not in the user's cache)
    blk = survey.sparse_blocks(survey.build_model(arch, impl, dtype))[0].eval()
    return survey.run_cell(arch, blk, impl, dtype, dims, path, f"test:{arch}")


def _recognised_exact(cell, family):
    assert cell["status"] == "recognised", cell.get("reason")
    assert cell["family"] == family and cell.get("exact") is True, cell


# PhiMoE's second pick scatters -inf at the first; with static dims torch.export folds the fill into a [T, 1]
# constant of -inf (one value everywhere, as a scalar's expand is): the same arg-max chain, i.e. the top-2
@pytest.mark.parametrize("path", ["torch.export", pytest.param("torchscript", marks=pytest.mark.slow)])
def test_phimoe_static_dims(path, tmp_path, monkeypatch):
    cell = _cell("phimoe", "batched_mm", "f32", "static", path, tmp_path, monkeypatch)
    _recognised_exact(cell, "phimoe")
    assert cell["routing"]["post"] == "sparsemixer" and cell["routing"]["k"] == 2


# in bf16 both ONNX exporters compare the bf16 quotient (max - s) / clamp(|s|, max) with 2 eps after a widening
# cast to f32: the same threshold (a cast of the quotient changes no comparison with a constant it holds exactly)
@pytest.mark.parametrize("path,impl", [("torchscript", "batched_mm"), pytest.param("dynamo", "batched_mm",
                                                                                    marks=pytest.mark.slow),
                                       pytest.param("torchscript", "eager", marks=pytest.mark.slow)])
def test_phimoe_bf16_onnx(path, impl, tmp_path, monkeypatch):
    cell = _cell("phimoe", impl, "bf16", "dynamic", path, tmp_path, monkeypatch)
    _recognised_exact(cell, "phimoe")
    assert cell["routing"]["post"] == "sparsemixer"


# -- the older expert families: why each is not a moe.route / moe.experts layer (the survey's "no" reasons) ----
# Each test pins the property of transformers 5.25's code that makes the family differ, from the module itself,
# and (where an export reaches recognition) that moec leaves the layer alone rather than rewrite it wrongly.

def _block(arch, impl="batched_mm"):
    return survey.sparse_blocks(survey.build_model(arch, impl))[0].eval()


def test_nllb_moe_block_runs_experts_0_and_1_whatever_the_router_chose():
    """NllbMoeSparseMLP hands the router's one-hot top-1 mask to NllbMoeExperts, which one-hots it again: class 1
    (the top-1 position) runs expert_1 with the top-1 weight and class 0 (every other position) runs expert_0 with
    the rest (the top-2 weight), times 1 - moe_token_dropout, for every token.  Not a sparse MoE over the chosen
    experts, so there is nothing for moe.route / moe.experts to express; moec does not rewrite it."""
    blk = _block("nllb-moe")
    x = torch.randn(9, survey.D, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = survey._out0(blk(x[None])).reshape(9, -1)
        top1, probs = blk.router(x)[:2]
        w1 = (probs * top1).sum(-1, keepdim=True)
        w2 = (probs * (1 - top1)).sum(-1, keepdim=True)
        keep = 1 - blk.experts.moe_token_dropout
        as_computed = (w1 * blk.experts["expert_1"](x) + w2 * blk.experts["expert_0"](x)) * keep
        ids = probs.topk(2, -1).indices
        chosen = torch.stack([sum(probs[t, e] * blk.experts[f"expert_{int(e)}"](x[t:t + 1])[0] for e in ids[t])
                              for t in range(9)]) * keep
    assert torch.allclose(y, as_computed, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(y, chosen, rtol=1e-2, atol=1e-2)


@pytest.mark.slow
def test_nllb_moe_is_left_alone(tmp_path, monkeypatch):
    """(the export that reaches recognition, TorchScript: the layer is not rewritten as a top-2 MoE)"""
    monkeypatch.setenv("MOEC_SURVEY_CACHE", str(tmp_path))
    cell = survey.run_cell("nllb-moe", _block("nllb-moe"), "-", "f32", "dynamic", "torchscript", "test:nllb")
    assert cell["status"] == "no" and cell["stage"] == "recognise", cell


def test_doge_routing_mixes_tokens():
    """DogeCDMoE views the router logits [B, S, 2*sqrt(E)] as [2, B*S, sqrt(E)] (transformers' own comment: "this
    split mixes router logits across tokens"): a token's experts depend on other tokens' logits, so no per-token
    moe.route expresses it (besides its product-key two-stage top-k and rank-1 experts)."""
    blk = _block("doge")
    x = torch.randn(1, 6, survey.D, generator=torch.Generator().manual_seed(6))
    x2 = x.clone()
    x2[0, 3] += 1.0  # another token only
    with torch.no_grad():
        y, y2 = survey._out0(blk(x)), survey._out0(blk(x2))
    assert not torch.allclose(y[0, 0], y2[0, 0]), "token 0's output must depend on token 3 (cross-token routing)"


def test_switch_capacity_is_per_sequence():
    """SwitchTransformersTop1Router counts expert capacity with a cumsum over the sequence axis of [B, S, E]
    ("so that expert capacity is accounted per sequence"): not the count over all B*S tokens in order (equal at
    batch 1 only), which is why moe.route takes logits [B, S, E] for it (tests/test_hf_expert_forms.py).
    (torch.export and the dynamo exporter also stop at the router's own self.classifier.to(dtype) in forward:
    "Couldn't swap Linear.weight".)"""
    blk = _block("switch_transformers")
    blk.router.expert_capacity = 1
    x = torch.randn(2, 4, survey.D, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        per_seq = torch.cat([survey._out0(blk(x[b:b + 1])) for b in range(2)])
        batched = survey._out0(blk(x))
        flat = survey._out0(blk(x.reshape(1, 8, -1))).reshape(2, 4, -1)
    assert torch.allclose(batched, per_seq, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched, flat, rtol=1e-3, atol=1e-4), "the probe must make the two capacities differ"


@pytest.mark.slow
def test_ergo_is_recognised_with_its_per_expert_weight_after_the_post_expert_norm():
    """ErgoExperts RMS-normalises each route's expert output and scales it by that expert's own learned [D]
    weight (ErgoExpertNorm.weight[E, D] gathered by the id) before the routing weight: moe.experts post_norm_eps
    with post_norm_w (not foldable into w_out: the rms is of the unscaled output).  With that weight all ones the
    norm alone is found (no post_norm_w); tests/test_hf_expert_forms.py checks the values and the look-alikes."""
    from moec.hf_experts import AUTO, import_module
    blk = _block("ergo")
    x = torch.randn(2, 5, survey.D, generator=torch.Generator().manual_seed(2))

    def layers():
        return survey._recognise(import_module(survey._wrap_first(blk), (x,), {0: {0: "B", 1: "S"}}, AUTO))
    got = layers()
    assert len(got) == 1 and "weight" in got[0]["post_expert_norm"], got
    with torch.no_grad():
        blk.experts.post_expert_norm.weight.fill_(1.0)
    got = layers()
    assert len(got) == 1 and got[0].get("post_expert_norm") and "weight" not in got[0]["post_expert_norm"], got
