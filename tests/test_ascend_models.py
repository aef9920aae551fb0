"""Whole real models on the Ascend target (issue 16 item 6): tiny random 2-layer transformers CausalLMs (the
survey's configs, tests/hf_survey.py) compiled with ``moec.compile(module, target="ascend")`` (torch.export and
the ATen front end, input_ids [batch, seq]), verified against the module, with every MoE layer recognised and
plan.json's host ops empty: attention (sdpa's safe softmax included), RMSNorm, rotary, embedding gather, top-k,
and the hybrids' depthwise causal conv1d and float cumsums all on the NPU (emulator).

Default run: Mixtral.  ``-m slow``: Qwen2-MoE and the hybrids GraniteMoeHybrid (Mamba2 layers: conv1d, cumsum), Qwen3-Next
(gated-delta layers: conv1d, log1p, reductions over other axes) and Jamba (Mamba: a matmul by a constant batch), and
LongCat-Flash (int64 comparison / Where of the zero-computation experts' ids: vec_index)."""
import json
import os
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# torch.export specialises these exports to the traced sequence length (the graph's dims come out static: the hybrids'
# chunking pads in Python, DSA's indexer takes top-min(k, S), ...), so their artifacts run at that length only
BAKED_LENGTH = ("granitemoehybrid", "qwen3_next", "jamba", "zaya", "diffusion_gemma_text", "deepseek_v32", "doge")


def _lm(arch):
    import hf_survey as h
    model = h.build_model(arch, "batched_mm", "f32")

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return h._out0(self.m(input_ids=input_ids, use_cache=False))

    return Logits(model).eval(), len(h.sparse_blocks(model))


def _check(arch, tmp_path, recognised=True):
    import moec
    lm, blocks = _lm(arch)
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = moec.compile(lm, (ids,), target="ascend", dynamic_dims={0: {1: "S"}}, cache=False)
    rep = cm.stats.report
    assert cm.stats.verified, rep.get("verification")
    if recognised:
        assert len(rep["moe_layers"]) == blocks, rep["moe_layers"]
    with open(os.path.join(cm.stats.outdir, "ascend", "plan.json")) as f:
        plan = json.load(f)
    assert plan["host_ops"] == {}, plan["host_ops"]
    # other tokens, and another length where the export kept the sequence symbolic (the hybrids' Mamba / gated-delta
    # chunking computes its padding in Python: torch.export bakes the traced length into a reshape)
    S2 = 6 if arch in BAKED_LENGTH else 9
    ids2 = torch.randint(3, 128, (1, S2), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = lm(ids2).numpy()
    np.testing.assert_allclose(cm.artifact([ids2.numpy()])[0], want, rtol=1e-4, atol=1e-4)
    assert not cm.artifact.host_ops, cm.artifact.host_ops
    return plan


def test_mixtral_causal_lm_has_no_host_ops(tmp_path):
    _check("mixtral", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2_moe", "granitemoehybrid", "qwen3_next", "jamba", "longcat_flash"])
def test_real_causal_lm_has_no_host_ops(arch, tmp_path):
    plan = _check(arch, tmp_path)
    ops = {st["op"] for st in plan["steps"] if st["where"] == "npu"}
    if arch == "granitemoehybrid":
        assert {"moec.conv", "moec.cumsum"} <= ops, ops
    if arch == "longcat_flash":  # the zero-computation experts' int64 ids: compared and selected on vec_index
        assert {"moec.greater_equal", "moec.select"} <= ops, ops


# architectures whose decoders need the newer NPU ops: (arch, its layers recognised, ops that must run on the NPU)
NEWER_OPS = [("diffusion_gemma_text", True, {"moec.gelu_tanh"}),                     # Gemma's gelu MLP
             ("deepseek_v32", True, {"moec.topk", "moec.scatter_elements"}),         # the DSA indexer's top-k mask
             ("doge", False, {"moec.gather_elements", "moec.topk", "moec.add"}),     # int64 index math
             ("muse_spark_text", True, {"moe.experts", "moec.pow"}),                 # post-expert RMSNorm, pow -0.5
             ("inkling_text", True, {"moe.route", "moe.experts"}),                   # always-on slots (n_shared)
             ("ergo", True, {"moe.experts"})]                                        # post_norm_w on moe_scatter_rows


@pytest.mark.slow
@pytest.mark.parametrize("arch,recognised,want", NEWER_OPS, ids=[a for a, _, _ in NEWER_OPS])
def test_newer_npu_ops_in_real_models(arch, recognised, want, tmp_path):
    plan = _check(arch, tmp_path, recognised=recognised)
    ops = {st["op"] for st in plan["steps"] if st["where"] == "npu"}
    assert want <= ops, ops


@pytest.mark.slow
def test_zaya_causal_lm_has_no_host_ops(tmp_path):
    """ZAYA's layers are recognised (moe.route n_skip: its skip class; its router MLP over state carried from the
    previous layer stays ordinary ops before the route), and the whole decoder runs on the NPU: the grouped
    query/key conv, L2 norms, the router MLP's gelu, the route with its skip class (moe_gating), the experts."""
    plan = _check("zaya", tmp_path)
    ops = {st["op"] for st in plan["steps"] if st["where"] == "npu"}
    assert {"moec.conv", "moe.route", "moe.experts"} <= ops, ops


def measure(arch: str) -> dict:
    """One row of docs/ascend_models.md: the 2-layer CausalLM of ``arch`` compiled for ascend as _check does (verified
    against the module), its recognised layers, plan.json's host ops (name -> reason) and the ops on the NPU."""
    import time
    import moec
    t0 = time.time()
    rec = {"arch": arch}
    try:
        lm, rec["blocks"] = _lm(arch)
        ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(5))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cm = moec.compile(lm, (ids,), target="ascend", dynamic_dims={0: {1: "S"}}, cache=False)
        rep = cm.stats.report
        rec["verified"] = bool(cm.stats.verified)
        rec["layers"] = len(rep.get("moe_layers", []))
        rec["families"] = sorted({la.get("family") for la in rep.get("moe_layers", [])})
        with open(os.path.join(cm.stats.outdir, "ascend", "plan.json")) as f:
            plan = json.load(f)
        rec["host_ops"] = plan["host_ops"]
        rec["npu_ops"] = sorted({s["op"] for s in plan["steps"] if s["where"] == "npu"})
    except Exception as e:  # noqa: BLE001 (a row records why it failed)
        rec["error"] = (type(e).__name__ + ": " + (str(e).splitlines() or [""])[0])[:300]
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


if __name__ == "__main__":  # python tests/test_ascend_models.py ARCH... : one JSON line per architecture
    for a in sys.argv[1:]:
        print(json.dumps(measure(a)), flush=True)
