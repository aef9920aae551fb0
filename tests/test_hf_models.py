"""Real Hugging Face ``transformers`` MoE blocks (issue 16): built from tiny random configs, imported
through moec's front ends, and checked to be recognised with the right family and routing, and to
compute what the module computes.  Skips without torch / transformers (the ``dev`` extra pins them).

Default run: the torch.export path of each architecture recognised today at one small size, one
full ``moec.compile`` (C build + verification) and one ONNX export of Mixtral.  ``-m slow``: the
rest of the matrix (bf16, dynamo ONNX export)."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from moec.frontend.torch_import import import_torch, tensor_to_numpy  # noqa: E402
from moec.ir.interpreter import run as ir_run  # noqa: E402

import hf_survey as survey  # noqa: E402  (tests/hf_survey.py: the tiny configs, block finder and survey)

D = survey.D

# model type -> (family recognised, routing attributes that must hold[, E when not 4]) on the torch.export
# path of transformers' "batched_mm" experts implementation (or the only one), f32; as the survey
# (tests/hf_survey.py, docs/real_models.md) measured them.  The family is named by the routing math:
# Qwen3-MoE / OLMoE / DeepSeek-V2 / Jamba configs default to no renormalisation, which is Qwen2-MoE's
# routing; Cohere2-MoE and Granite's softmax after top-k; Qwen3.5 / Qwen3-Next renormalise (Mixtral's).
RECOGNISED: dict = {
    "afmoe": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2}),
    "aria_text": ("granite-moe", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}, 8),
    "axk1": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "axk2": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "bailing_hybrid": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "beam": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "cohere2_moe": ("granite-moe", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "dbrx": ("dbrx", {"scoring": "softmax", "norm": "l1", "post": "none", "k": 2}),
    "deepseek_ocr2_text": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "deepseek_v2": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "deepseek_v3": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "deepseek_v32": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "deepseek_v4": ("deepseek-v4", {"scoring": "none", "norm": "sum", "post": "none", "k": 2, "scale": 1.5}),
    "dots1": ("deepseek-v3", {"scoring": "sigmoid", "norm": "none", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "dots3_note_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "ergo": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "scale": 2.828427}),
    "ernie4_5_moe": ("ernie-4.5", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "ernie4_5_vl_moe_text": ("ernie-4.5", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "exaone_moe": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "flex_olmo": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "flint": ("custom", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2}),
    "glm4_moe": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "glm4_moe_lite": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 1.8}),
    "glm4v_moe_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "glm5_next_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "glm_moe_dsa": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.5}),
    "gpt_oss": ("gpt-oss", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "granitemoe": ("granite-moe", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "granitemoe_swa": ("granite-moe", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "granitemoehybrid": ("granite-moe", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "granitemoeshared": ("granite-moe", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "hunyuan_v1_moe": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "hy_v3": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "scale": 2.826}),
    "hy_v4": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.827}),
    "hy_v4_vl_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.827}),
    "inkling2_loop_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "scale": 8.0}),
    "inkling2_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "scale": 8.0}),
    "inkling_text": ("inkling", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "scale": 1.295726}),
    "jamba": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "jetmoe": ("granite-moe", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "kimi_linear": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 2.446}),
    "kolibri1": ("kolibri1", {"scoring": "none", "norm": "none", "post": "sigmoid", "k": 2}),
    "kolibri1_1": ("kolibri1", {"scoring": "none", "norm": "none", "post": "sigmoid", "k": 2}),
    "laguna": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2}),
    "lara_mini": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "lfm2_moe": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2}),
    "llama4_text": ("llama-4", {"scoring": "none", "norm": "none", "post": "sigmoid", "k": 2}),
    "longcat_flash": ("longcat-flash", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2, "scale": 6.0}),
    "mellum": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "mimo_v2_flash": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "minicpm5_moe": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum", "scale": 3.66}),
    "minimax": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "minimax_m2": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2}),
    "minimax_m3_vl_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "scale": 2.0}),
    "mistral4": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "mistral_large4_text": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "mixtral": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "muse_spark_text": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2}),
    "nemotron_h": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "olmoe": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "openai_privacy_filter": ("gpt-oss", {"scoring": "none", "norm": "none", "post": "softmax", "k": 2}),
    "phimoe": ("phimoe", {"scoring": "none", "norm": "none", "post": "sparsemixer", "k": 2}),
    "qwen2_moe": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "qwen3_5_moe_text": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "qwen3_moe": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "qwen3_next": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "qwen3_omni_moe_text": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "qwen3_vl_moe_text": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "qwen4_exp_text": ("mixtral", {"scoring": "softmax", "norm": "sum", "post": "none", "k": 2}),
    "solar_open": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2, "n_group": 2, "topk_group": 1, "group_score": "top2_sum"}),
    "step3p5": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "post": "none", "k": 2}),
    "switch_transformers": ("switch", {"scoring": "softmax", "norm": "none", "post": "none", "k": 1, "capacity": 2}),
    "unlimited_ocr_text": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "post": "none", "k": 2}),
    "zaya": ("zaya", {"scoring": "softmax", "norm": "none", "post": "none", "k": 1}),
}
DEFAULT = ("mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss")  # the rest: -m slow
# experts that are not dispatched on config._experts_implementation (older nn.ModuleList / loop forms)
LEGACY_EXPERTS = (
    "dbrx", "doge", "ergo", "jetmoe", "llama4_text", "nllb-moe", "switch_transformers",
)
# the 2-layer models whose every sparse layer is recognised (torch.export, batched_mm, f32)
CAUSAL_RECOGNISED = (
    "afmoe", "aria_text", "axk1", "axk2", "bailing_hybrid", "beam", "cohere2_moe", "dbrx",
    "deepseek_ocr2_text", "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "dots1",
    "dots3_note_text", "ergo", "ernie4_5_moe", "ernie4_5_vl_moe_text", "exaone_moe", "flex_olmo", "flint",
    "glm4_moe", "glm4_moe_lite", "glm4v_moe_text", "glm5_next_text", "glm_moe_dsa", "gpt_oss", "granitemoe",
    "granitemoe_swa", "granitemoehybrid", "granitemoeshared", "hunyuan_v1_moe", "hy_v3", "hy_v4",
    "hy_v4_vl_text", "inkling2_loop_text", "inkling2_text", "inkling_text", "jamba", "jetmoe", "kimi_linear",
    "kolibri1", "kolibri1_1", "laguna", "lara_mini", "lfm2_moe", "llama4_text", "longcat_flash", "mellum",
    "mimo_v2_flash", "minicpm5_moe", "minimax", "minimax_m2", "minimax_m3_vl_text", "mistral4",
    "mistral_large4_text", "mixtral", "muse_spark_text", "nemotron_h", "olmoe", "openai_privacy_filter",
    "phimoe", "qwen2_moe", "qwen3_5_moe_text", "qwen3_moe", "qwen3_next", "qwen3_omni_moe_text",
    "qwen3_vl_moe_text", "qwen4_exp_text", "solar_open", "step3p5", "switch_transformers",
    "unlimited_ocr_text", "zaya",
)
CAUSAL_DEFAULT = ("mixtral",)
# the recognised ones whose bf16 (dynamic dims) / f32 static-dims block is recognised and exact too (survey)
BF16_RECOGNISED = (
    "afmoe", "aria_text", "axk1", "axk2", "bailing_hybrid", "beam", "cohere2_moe", "dbrx",
    "deepseek_ocr2_text", "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "dots1",
    "dots3_note_text", "ergo", "ernie4_5_moe", "ernie4_5_vl_moe_text", "exaone_moe", "flex_olmo", "flint",
    "glm4_moe", "glm4_moe_lite", "glm4v_moe_text", "glm5_next_text", "glm_moe_dsa", "gpt_oss", "granitemoe",
    "granitemoe_swa", "granitemoehybrid", "granitemoeshared", "hunyuan_v1_moe", "hy_v3", "hy_v4",
    "hy_v4_vl_text", "inkling2_loop_text", "inkling2_text", "inkling_text", "jamba", "jetmoe", "kimi_linear",
    "kolibri1", "kolibri1_1", "laguna", "lara_mini", "lfm2_moe", "llama4_text", "longcat_flash", "mellum",
    "mimo_v2_flash", "minicpm5_moe", "minimax", "minimax_m2", "minimax_m3_vl_text", "mistral4",
    "mistral_large4_text", "mixtral", "muse_spark_text", "nemotron_h", "olmoe", "openai_privacy_filter",
    "phimoe", "qwen2_moe", "qwen3_5_moe_text", "qwen3_moe", "qwen3_next", "qwen3_omni_moe_text",
    "qwen3_vl_moe_text", "qwen4_exp_text", "solar_open", "step3p5", "switch_transformers",
    "unlimited_ocr_text", "zaya",
)
STATIC_RECOGNISED = (
    "afmoe", "aria_text", "axk1", "axk2", "bailing_hybrid", "beam", "cohere2_moe", "dbrx",
    "deepseek_ocr2_text", "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "dots1",
    "dots3_note_text", "ergo", "ernie4_5_moe", "ernie4_5_vl_moe_text", "exaone_moe", "flex_olmo", "flint",
    "glm4_moe", "glm4_moe_lite", "glm4v_moe_text", "glm5_next_text", "glm_moe_dsa", "gpt_oss", "granitemoe",
    "granitemoe_swa", "granitemoehybrid", "granitemoeshared", "hunyuan_v1_moe", "hy_v3", "hy_v4",
    "hy_v4_vl_text", "inkling2_loop_text", "inkling2_text", "inkling_text", "jamba", "jetmoe", "kimi_linear",
    "kolibri1", "kolibri1_1", "laguna", "lara_mini", "lfm2_moe", "llama4_text", "longcat_flash", "mellum",
    "mimo_v2_flash", "minicpm5_moe", "minimax", "minimax_m2", "minimax_m3_vl_text", "mistral4",
    "mistral_large4_text", "mixtral", "muse_spark_text", "nemotron_h", "olmoe", "openai_privacy_filter",
    "phimoe", "qwen2_moe", "qwen3_5_moe_text", "qwen3_moe", "qwen3_next", "qwen3_omni_moe_text",
    "qwen3_vl_moe_text", "qwen4_exp_text", "solar_open", "step3p5", "switch_transformers",
    "unlimited_ocr_text", "zaya",
)


def moe_block(arch: str, impl: str = "batched_mm", dtype=torch.float32):
    """The first sparse-expert block of a tiny random ``arch`` model (hf_survey.build_model: N(0, 0.2)
    block weights, so that routing and experts are far from degenerate)."""
    model = survey.build_model(arch, impl, "bf16" if dtype == torch.bfloat16 else "f32")
    return survey.sparse_blocks(model)[0].eval()


def recognise(module, x, dynamic=True):
    """The import moec.compile(module) makes (torch.export, or its trace front end where torch.export stops on the
    module's own data-dependent code: survey._import_as_compile, as the survey's torch.export column), then the
    pipeline's canonicalize and recognize-moe stages."""
    m = survey._import_as_compile(module, (x,), {0: {0: "B", 1: "S"}} if dynamic else {})
    return m, survey._recognise(m)


def kept_static(m) -> bool:
    """The import kept no dynamic token dims (aria_text's torch.export at [2, 5]: 'Constraints violated (S)', compiled
    for the example's shapes, as moec.compile does then): its module runs at the example's shape only."""
    return all(isinstance(d, int) for d in m.main.args[0].type.shape)


def expected(arch):
    fam, routing, *E = RECOGNISED[arch]
    return fam, routing, (E[0] if E else 4)


def assert_routing(got: dict, want: dict):
    """The routing attributes ``want`` names hold (scales as f32 constants: to 1e-6)."""
    for k, v in want.items():
        assert got.get(k) == (pytest.approx(v, rel=1e-6) if isinstance(v, float) else v), (k, got)


def first_output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def assert_f32_exact(got, blk, xs, want):
    """moec's f32 criterion as the survey applies it (moec.tolerances.f32_check: against the block in float64,
    within max(1, 2x the torch f32 block's own error)); the plain f32 tolerance where the block cannot run in
    float64."""
    from moec.tolerances import f32_check
    try:
        ref = tensor_to_numpy(survey.float64_reference(blk, xs))
    except Exception:  # noqa: BLE001
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        return
    t = f32_check([got], [want], [ref])
    assert t["ok"], t


@pytest.mark.parametrize("arch", [a if a in DEFAULT else pytest.param(a, marks=pytest.mark.slow) for a in sorted(RECOGNISED)])
def test_torch_export_block_is_recognised_and_exact(arch):
    blk = moe_block(arch)
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    m, layers = recognise(blk, x)
    fam, routing, E = expected(arch)
    assert [la["family"] for la in layers] == [fam], layers
    assert_routing(layers[0]["routing"], routing)
    # (the experts' width: the hidden size, or the width a projection before the experts makes: Muse Spark's
    # pre_expert_proj, 32 -> 4096)
    width = getattr(getattr(blk, "pre_expert_proj", None), "out_features", D)
    assert (layers[0]["E"], layers[0]["k"], layers[0]["D"]) == (E, routing["k"], width)
    # no per-row expert matmul left (a top-k may stay where the block also returns its router scores)
    assert not any(o.name == "moec.matmul" and o.results[0].type.rank == 3 for o in m.main.ops)
    assert sum(o.name == "moe.experts" for o in m.main.ops) == 1
    # the rewritten module computes what the torch module computes, at another batch / sequence (at the example's
    # shape where torch.export could not keep the token dims dynamic: aria_text, "Constraints violated (S)")
    for shape in (((2, 5, D),) if kept_static(m) else ((1, 7, D), (3, 1, D))):
        xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = tensor_to_numpy(first_output(blk(xs)))
        got = list(ir_run(m, [tensor_to_numpy(xs)]).values())[0]
        assert_f32_exact(got, blk, xs, want)


# Architectures whose block moec does not recognise today on the torch.export path (batched_mm, f32), each
# with the reason it gives: recognize-moe's own (its recognition trace, as ``moec inspect --explain``
# prints it) or the front end's error.  An improvement or a regression shows here: move an architecture
# to RECOGNISED when it is recognised.  (docs/real_models.md: every path, implementation and dtype.)
NOT_RECOGNISED: dict = {
    # not a per-token MoE layer, so recognize-moe leaves it alone (moe.route routes each token by its own
    # scores): DogeCDMoE's `router_logits.view(2, bsz * seq_len, -1)` splits the [T, 2 sqrt(E)] router logits
    # across tokens, so token t's experts are chosen by the logits of tokens floor(t/2) and floor((T+t)/2) (T
    # = batch x seq; transformers keeps it for the checkpoints' outputs); measured at T = 4, replacing token j
    # changes the other tokens' outputs j -> [t]: 0 -> [1]; 1 -> [2, 3]; 2 -> [0, 1]; 3 -> [2], as that
    # predicts; moec.compile builds it as a plain graph (the moec.compile table)
    "doge": '^router: walking back from the top\\-k, the scores come from',
    # not an MoE layer in this transformers, so recognize-moe leaves it alone: NllbMoeExperts applies one_hot
    # to the router's top-1 mask, which is one-hot already, so the expert run is the mask's value: every token
    # runs expert_1 weighted by its top-1 probability and expert_0 weighted by the rest (its top-2
    # probability), whatever experts the router ranks first; measured on [2, 5]: every token ran expert_0,
    # expert_1 and no other of the 4, and the block equals (1 - moe_token_dropout) (w1 expert_1 + w2 expert_0)
    # to 1e-07 of its largest output; moec.compile builds it as a plain graph (the moec.compile table)
    "nllb-moe": '^experts: the token rows reaching this expert FFN are not the tokens that chose one expert',
}
NOT_RECOGNISED_DEFAULT = ("doge",)  # the rest: -m slow


def why_not(blk, x):
    """recognize-moe's reason for leaving the block alone, or the front end's error line (of the block's
    first output, as the survey measures it: Zaya's block also returns the next layer's router states)."""
    try:
        m, layers = recognise(survey._wrap_first(blk), x)
    except Exception as e:  # noqa: BLE001
        return None, survey._first_line(e)
    return layers, survey._why_not(m)


@pytest.mark.parametrize("arch", [a if a in NOT_RECOGNISED_DEFAULT else pytest.param(a, marks=pytest.mark.slow)
                                  for a in sorted(NOT_RECOGNISED)])
def test_unrecognised_block_says_why(arch):
    blk = moe_block(arch)
    layers, reason = why_not(blk, torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2)))
    assert not layers, f"{arch} is recognised now ({[la['family'] for la in layers]}): move it to RECOGNISED"
    assert re.search(NOT_RECOGNISED[arch], reason), reason


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["eager", "grouped_mm"])
@pytest.mark.parametrize("arch", sorted(a for a in RECOGNISED if a not in LEGACY_EXPERTS))
def test_every_experts_implementation_compiles_as_the_same_layer(arch, impl):
    """moec.compile's front end exports transformers' eager experts as batched_mm (the same function) and keeps
    grouped_mm where its export is recognised (compiler/hf_experts.py): a block set to eager or grouped_mm is
    recognised as the same layer and computes what the module (run with its own implementation) computes."""
    blk = moe_block(arch, impl)
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    m, layers = recognise(blk, x)
    assert [la["family"] for la in layers] == [expected(arch)[0]], layers
    info = json.loads(m.attrs.get("moec.experts_implementation") or "{}")
    if impl == "eager":
        assert info["exported_as"] == "batched_mm", info
    else:  # recognised as exported (nothing replaced), or not, and then exported as batched_mm instead
        assert info == {} or (info["exported_as"] == "batched_mm" and "fallback" in info), info
    # other token counts, unless the export fell back to the example's static shapes (aria_text)
    xs = torch.randn(*((2, 5) if kept_static(m) else (1, 7)), D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = tensor_to_numpy(first_output(blk(xs)))
    assert_f32_exact(list(ir_run(m, [tensor_to_numpy(xs)]).values())[0], blk, xs, want)


@pytest.mark.parametrize("arch", [a if a in CAUSAL_DEFAULT else pytest.param(a, marks=pytest.mark.slow)
                                  for a in sorted(CAUSAL_RECOGNISED)])
def test_two_layer_model_has_every_sparse_layer_recognised(arch):
    """The whole tiny model (input_ids [batch, seq], dynamic) on the torch.export path: as many
    recognised MoE layers as the model has sparse blocks."""
    c = survey.causal_lm_cell(arch)
    assert c.get("status") == "recognised", c
    assert c["recognised"] == c["blocks"] >= 1, c
    assert c["families"] == [expected(arch)[0]], c


@pytest.mark.slow
def test_two_layer_denominator_counts_the_blocks_that_run():
    """ERNIE-4.5-VL's vision experts run only behind ``moe_mm_token_type_ids.any()``, which a text input never
    takes: the 2-layer cell counts the blocks whose forward runs (forward hooks) and names the others."""
    c = survey.causal_lm_cell("ernie4_5_vl_moe_text")
    assert c["blocks_not_run"] and all("vision" in n for n in c["blocks_not_run"]), c
    assert c["blocks"] == 2 and c["recognised"] == 2 and c["status"] == "recognised", c


def test_the_survey_finds_every_moe_architecture_of_the_release():
    """The survey enumerates the library, not a hand-picked list: every model type whose modeling code
    has experts, the text model of a multimodal one first."""
    found = survey.candidates()
    for mod in ("mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss", "dbrx", "jetmoe", "llama4", "phimoe",
                "switch_transformers", "nllb_moe", "qwen3_vl_moe", "ernie4_5_vl_moe"):
        assert mod in found, mod
    assert len(found) >= 70
    assert survey.text_types(found["qwen3_vl_moe"])[0] == "qwen3_vl_moe_text"


@pytest.mark.parametrize("arch,n", [("mixtral", 2), ("jetmoe", 2), ("dbrx", 2), ("doge", 2),
                                    pytest.param("switch_transformers", 4, marks=pytest.mark.slow),
                                    pytest.param("nllb-moe", 4, marks=pytest.mark.slow)])
def test_the_survey_finds_each_layers_sparse_block(arch, n):
    """Stacked-weight experts, older ModuleList / parallel experts (not JetMoE's mixture of attention heads),
    retrieval experts in an embedding (Doge): one block per sparse layer of the 2-layer model (the encoder-decoders:
    2 encoder and 2 decoder layers, every one sparse)."""
    model = survey.build_model(arch)
    blocks = survey.sparse_blocks(model)
    assert all("Attention" not in type(b).__name__ for b in blocks)
    assert len(blocks) == n


@pytest.mark.parametrize("arch", ["doge", pytest.param("nllb-moe", marks=pytest.mark.slow), "mixtral"])
def test_what_is_missing_is_measured_on_the_block(arch):
    """The survey's "what is missing" for a block recognize-moe leaves alone comes from measuring the torch block
    (survey.diagnose): Doge's tokens are routed by other tokens' logits (replacing token j changes the tokens whose
    keys its logits give, exactly as `view(2, bsz * seq_len, -1)` predicts); NLLB-MoE (transformers 5.25) runs expert_1
    and expert_0 on every token whatever its router picks; a real MoE layer (Mixtral) has neither."""
    blk = moe_block(arch)
    if arch == "mixtral":
        assert survey.token_dependence(blk) == {} and survey.diagnose(blk) == ""
        ran = survey.experts_run(blk, torch.randn(2, 5, D))
        assert ran is None  # (stacked experts: not separate modules)
        return
    why = survey.diagnose(blk)
    if arch == "doge":
        assert survey.token_dependence(blk) == {0: [1], 1: [2, 3], 2: [0, 1], 3: [2]}
        assert why.startswith("not a per-token MoE layer") and "floor((T+t)/2)" in why and "as that predicts" in why
    else:
        x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
        assert survey.experts_run(blk, x) == [[0, 1]] * 10
        assert why.startswith("not an MoE layer") and "expert_1 weighted by its top-1 probability" in why
        assert survey._nllb_two_fixed_experts(blk, x) < 1e-5


def test_torchscript_example_reads_switch_dispatch_mask():
    """Switch Transformers' experts take a one-hot dispatch mask [tokens, 1, E], not top-k ids: the experts hit are
    its columns with a one (a token over the capacity selects none)."""
    mask = torch.zeros(6, 1, 4, dtype=torch.int64)
    mask[0, 0, 2] = mask[3, 0, 0] = 1
    assert sorted(survey._hit_ids(mask, 4).tolist()) == [0, 2]
    assert sorted(survey._hit_ids(torch.tensor([[3, 1], [1, 0]]), 4).tolist()) == [0, 1, 1, 3]


def test_router_reshape_of_the_experts_input_is_the_same_tokens():
    """transformers' Mixtral router reshapes ``hidden.reshape(-1, D)`` itself while the experts read
    ``hidden``: both are the same token rows (issue 16's known cause)."""
    import torch.nn.functional as F
    from moec.zoo.modules import MixtralFused

    class RouterReshapes(MixtralFused):
        def forward(self, x3):
            x = x3.view(-1, x3.shape[-1])
            p = F.softmax(self.gate(x.reshape(-1, x.shape[-1])), dim=-1, dtype=torch.float)
            w, ids = torch.topk(p, self.k, dim=-1)
            w = (w / w.sum(dim=-1, keepdim=True)).to(x.dtype)
            out = torch.zeros_like(x)
            for e in range(self.gate_up_proj.shape[0]):
                tok, slot = torch.where(ids == e)
                g, u = F.linear(x[tok], self.gate_up_proj[e]).chunk(2, dim=-1)
                y = F.linear(F.silu(g) * u, self.down_proj[e])
                out = out.index_add(0, tok, y * w[tok, slot].unsqueeze(-1))
            return out.view(x3.shape)

    torch.manual_seed(0)
    mod = RouterReshapes(d=D, f=48, e=4).eval()
    m, layers = recognise(mod, torch.randn(2, 5, D))
    assert [la["family"] for la in layers] == ["mixtral"]
    xs = torch.randn(3, 4, D)
    with torch.no_grad():
        want = mod(xs).numpy()
    np.testing.assert_allclose(list(ir_run(m, [xs.numpy()]).values())[0], want, rtol=1e-4, atol=1e-5)


class _BitwiseDiv(torch.nn.Module):
    def forward(self, x, i):
        m = x > 0
        n = x < 0.5
        y = torch.where(~m, x, -x) + torch.where(m & n, 1.0, 0.0) + torch.where(m | n, 2.0, 0.0) + \
            torch.where(m ^ n, 4.0, 0.0)
        q = torch.div(i, 3, rounding_mode="floor") * 100 + torch.div(i, -3, rounding_mode="trunc")
        return y + torch.div(x, 0.3, rounding_mode="floor") + torch.div(x, 0.3, rounding_mode="trunc"), q


def test_torch_frontend_bitwise_on_bool_and_rounding_division():
    """aten.bitwise_not / and / or / xor (DeepSeek-V3's group mask: ``masked_fill(~mask, ...)``) and
    div with rounding_mode (transformers' grouped_mm offsets) match torch, negative operands included."""
    x = torch.linspace(-2, 2, 24).reshape(4, 6)
    i = torch.arange(-12, 12).reshape(4, 6)
    m = import_torch(_BitwiseDiv(), (x, i), dynamic_dims={})
    got = list(ir_run(m, [x.numpy(), i.numpy()]).values())
    want = _BitwiseDiv()(x, i)
    np.testing.assert_allclose(got[0], want[0].numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[1], want[1].numpy())


def test_bitwise_on_integers_is_refused_clearly():
    from moec.errors import UnsupportedError

    class IntNot(torch.nn.Module):
        def forward(self, i):
            return ~i
    with pytest.raises(UnsupportedError, match="bitwise not of integers"):
        import_torch(IntNot(), (torch.arange(6).reshape(2, 3),), dynamic_dims={})


def test_mixtral_block_compiles_and_verifies(moec_cache):
    """The whole moec.compile path (C build, verification against the module) on the real block."""
    import moec
    blk = moe_block("mixtral")
    x = torch.randn(2, 5, D)
    cm = moec.compile(blk, (x,), dynamic_dims={0: {0: "B", 1: "S"}})
    assert [la["family"] for la in cm.stats.report["moe_layers"]] == ["mixtral"]
    xs = torch.randn(1, 3, D)
    with torch.no_grad():
        want = blk(xs).numpy()
    got = cm(xs)
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    # the report says which criterion judged it (within the plain f32 tolerance: no float64 run was needed) ...
    rep = cm.stats.report
    assert rep["criterion"].startswith("the f32 tolerance") and "f32_vs_float64" not in rep
    assert cm.stats.verification.startswith("verified by the f32 tolerance") and "max abs error" in cm.stats.verification
    # ... and the same artifact against the block with one expert 1% off fails the plain tolerance and then the f32
    # criterion against that block in float64 (tests/test_tolerances_f32.py: the rest)
    import copy

    from moec.verify import verify_against_module
    wrong = copy.deepcopy(blk)
    with torch.no_grad():
        wrong.experts.down_proj[1].mul_(1.01)
    out = verify_against_module(cm.artifact, wrong, (x,), "f32", "mixtral", "cpu", [("B", "S", D)])
    assert not out["verified"] and "against the module in float64 too: moec's f32 error" in out["failure"], out


def export_onnx(blk, path, dynamo: bool):
    """torch.onnx export of a block with dynamic batch and sequence dims (input [batch, seq, hidden])."""
    x = torch.randn(2, 5, D)
    kw = dict(dynamic_shapes=({0: "B", 1: "S"},)) if dynamo else \
        dict(dynamic_axes={"x": {0: "B", 1: "S"}}, opset_version=18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(blk, (x,), str(path), input_names=["x"], dynamo=dynamo, **kw)
    return path


def recognise_onnx(path):
    import onnx
    from moec.frontend.onnx_import import import_model
    m = import_model(onnx.load(str(path)))
    return m, survey._recognise(m)


# the architectures whose batched_mm block both torch.onnx exporters export and moec recognises (survey)
ONNX_RECOGNISED: dict = {
    "dynamo": (
        "afmoe", "aria_text", "axk1", "axk2", "bailing_hybrid", "beam", "cohere2_moe", "deepseek_ocr2_text",
        "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "dots1", "dots3_note_text", "ergo",
        "ernie4_5_moe", "ernie4_5_vl_moe_text", "exaone_moe", "flex_olmo", "flint", "glm4_moe",
        "glm4_moe_lite", "glm4v_moe_text", "glm5_next_text", "glm_moe_dsa", "gpt_oss", "granitemoe",
        "granitemoe_swa", "granitemoehybrid", "granitemoeshared", "hunyuan_v1_moe", "hy_v3", "hy_v4",
        "hy_v4_vl_text", "inkling2_loop_text", "inkling2_text", "inkling_text", "jamba", "jetmoe",
        "kimi_linear", "kolibri1", "kolibri1_1", "laguna", "lara_mini", "lfm2_moe", "llama4_text",
        "longcat_flash", "mellum", "mimo_v2_flash", "minicpm5_moe", "minimax", "minimax_m2",
        "minimax_m3_vl_text", "mistral4", "mistral_large4_text", "mixtral", "muse_spark_text", "nemotron_h",
        "olmoe", "openai_privacy_filter", "phimoe", "qwen2_moe", "qwen3_5_moe_text", "qwen3_moe",
        "qwen3_next", "qwen3_omni_moe_text", "qwen3_vl_moe_text", "qwen4_exp_text", "solar_open", "step3p5",
        "unlimited_ocr_text", "zaya",
    ),
    "torchscript": (
        "afmoe", "aria_text", "axk1", "axk2", "bailing_hybrid", "beam", "cohere2_moe", "dbrx",
        "deepseek_ocr2_text", "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "dots1",
        "dots3_note_text", "ernie4_5_moe", "ernie4_5_vl_moe_text", "exaone_moe", "flex_olmo", "flint",
        "glm4_moe", "glm4_moe_lite", "glm4v_moe_text", "glm5_next_text", "glm_moe_dsa", "gpt_oss",
        "granitemoe", "granitemoe_swa", "granitemoehybrid", "granitemoeshared", "hunyuan_v1_moe", "hy_v3",
        "hy_v4", "hy_v4_vl_text", "inkling2_loop_text", "inkling2_text", "inkling_text", "jamba",
        "kimi_linear", "kolibri1", "kolibri1_1", "laguna", "lara_mini", "lfm2_moe", "llama4_text",
        "longcat_flash", "mellum", "mimo_v2_flash", "minicpm5_moe", "minimax", "minimax_m2",
        "minimax_m3_vl_text", "mistral4", "mistral_large4_text", "mixtral", "muse_spark_text", "nemotron_h",
        "olmoe", "openai_privacy_filter", "phimoe", "qwen2_moe", "qwen3_5_moe_text", "qwen3_moe",
        "qwen3_next", "qwen3_omni_moe_text", "qwen3_vl_moe_text", "qwen4_exp_text", "solar_open", "step3p5",
        "switch_transformers", "unlimited_ocr_text", "zaya",
    ),
}


@pytest.mark.parametrize("arch,dynamo", [
    (a, e == "dynamo") if (a, e) == ("mixtral", "dynamo") else pytest.param(a, e == "dynamo", marks=pytest.mark.slow)
    for e in ("dynamo", "torchscript") for a in ONNX_RECOGNISED[e]])
def test_onnx_export_block_is_recognised_and_exact(arch, dynamo, tmp_path):
    """Both torch.onnx exporters (dynamo: GatherND of the stacked weights; TorchScript: Gather)."""
    blk = moe_block(arch)
    m, layers = recognise_onnx(export_onnx(blk, tmp_path / "b.onnx", dynamo))
    fam, routing, _ = expected(arch)
    assert [la["family"] for la in layers] == [fam], layers
    assert_routing(layers[0]["routing"], routing)
    xs = torch.randn(1, 3, D, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = tensor_to_numpy(first_output(blk(xs)))
    got = list(ir_run(m, [xs.numpy()]).values())[0]
    assert_f32_exact(got, blk, xs, want)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_moec_compile_cli_on_the_onnx_export(dynamo, tmp_path):
    """``moec compile`` (C build, verification against onnxruntime) on the real Mixtral export."""
    from moec.cli import main
    p = export_onnx(moe_block("mixtral"), tmp_path / "b.onnx", dynamo)
    out = tmp_path / "out"
    assert main(["compile", str(p), "--target", "cpu", "-o", str(out)]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"] and [la["family"] for la in rep["moe_layers"]] == ["mixtral"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", BF16_RECOGNISED)
def test_bf16_block_is_recognised(arch):
    """bf16 weights and input (dynamic dims): the same family, and the rewritten module passes moec's
    half-precision criterion (moec.tolerances.half_precision_check, as the survey and moec.compile judge it):
    per token, its error against the block in f32 on the same bf16 weights is within max(floor, c x the
    torch bf16 block's own); at another batch / sequence, or at the example's shape where the import kept no
    dynamic token dims (aria_text)."""
    blk = moe_block(arch, dtype=torch.bfloat16)
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    m, layers = recognise(blk, x)
    assert [la["family"] for la in layers] == [expected(arch)[0]], layers
    info: dict = {}
    assert survey._exact(m, blk, "bf16", not kept_static(m), x, info) <= 1.0, info


def _mixtral_bf16():
    """A bf16 transformers Mixtral block and its recognised module (torch.export path)."""
    blk = moe_block("mixtral", dtype=torch.bfloat16)
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    m, layers = recognise(blk, x)
    assert [la["family"] for la in layers] == ["mixtral"], layers
    return blk, x, m


@pytest.mark.slow
def test_bf16_criterion_fails_a_wrong_build():
    """The bf16 criterion passes the right build of a real bf16 Mixtral block and fails wrong ones: one
    expert's down projection 10% off (a perturbed weight), the renormalisation of the top-k weights dropped
    (a wrong routing), the top-1 expert only.  Each wrong module is the recognised one with that one change,
    judged by the survey's check (moec.tolerances.half_precision_check against the block in f32)."""
    blk, x, m = _mixtral_bf16()
    info: dict = {}
    assert survey._exact(m, blk, "bf16", True, x, info) <= 1.0, info
    chk = info["bf16_check"]
    assert chk["moec_token_rel_err"]["max"] <= chk["allowed"]["max"]
    route = next(o for o in m.ops() if o.name == "moe.route")
    experts = next(o for o in m.ops() if o.name == "moe.experts")
    w_down = experts.operands[5].owner
    assert w_down.name == "moec.constant"
    from moec.ir.core import ResourceRef
    val = w_down.attrs["value"]
    arr = np.array(m.weights[val.key] if isinstance(val, ResourceRef) else val)
    bad = arr.copy()
    bad[1] = (bad[1].astype(np.float32) * 1.1).astype(arr.dtype)
    for change, undo in (
            (lambda: m.weights.set(val.key, bad) if isinstance(val, ResourceRef) else w_down.attrs.update(value=bad),
             lambda: m.weights.set(val.key, arr) if isinstance(val, ResourceRef) else w_down.attrs.update(value=arr)),
            (lambda: route.attrs.update(norm="none"), lambda: route.attrs.update(norm="sum"))):
        change()
        try:
            info = {}
            err = survey._exact(m, blk, "bf16", True, x, info)
        finally:
            undo()
        assert err > 1.0, info
        assert info["bf16_check"]["moec_token_rel_err"]["max"] > info["bf16_check"]["allowed"]["max"]
    assert survey._exact(m, blk, "bf16", True, x) <= 1.0  # (restored)


def test_bf16_criterion_scales_with_the_terms_not_the_element():
    """The derived floor and the per-token measure (tolerances.py): one rounding of the output to bf16 passes
    even against an exact "own run" (the floor); an element where the output cancels to ~0 does not fail
    an element-wise rtol it could never meet; a token 3% off fails, as does 10% on one expert's share."""
    from moec.tolerances import HALF_UNIT_ROUNDOFF, half_precision_check
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((16, 32))
    ref[:, 0] = 1e-4  # cancelled to ~0: any rounding of its terms is "huge" relative to it
    rounded = np.asarray(torch.from_numpy(ref).to(torch.bfloat16).double())
    assert half_precision_check([rounded], [ref], [ref], "bf16")["ok"]
    own = ref + 2 ** -8 / np.sqrt(3) * rng.standard_normal(ref.shape)  # a faithful run: u/sqrt(3) per term
    moec = ref + 2 ** -8 / np.sqrt(3) * rng.standard_normal(ref.shape)  # another one
    t = half_precision_check([moec], [own], [ref], "bf16")
    assert t["ok"] and np.max(np.abs(moec - ref)[:, 0] / np.abs(ref[:, 0])) > 3e-2  # element-wise: 30x off
    assert t["allowed"]["max"] >= 2 * HALF_UNIT_ROUNDOFF["bf16"]
    bad = moec.copy()
    bad[5] *= 1.03
    assert not half_precision_check([bad], [own], [ref], "bf16")["ok"]
    bad = moec.copy()
    bad[::2] += 0.1 * rng.standard_normal((8, 32))  # half the tokens carry 10% of a wrong expert
    assert not half_precision_check([bad], [own], [ref], "bf16")["ok"]


def test_f32_criterion_fails_a_wrong_build():
    """The survey's f32 criterion (moec.tolerances.f32_check: against the block in float64, within max(1, 2 x
    torch's own f32 error)) passes the recognised f32 Mixtral block and fails it with one expert's down
    projection 1% off or the top-k renormalisation dropped."""
    blk = moe_block("mixtral")
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    m, layers = recognise(blk, x)
    assert [la["family"] for la in layers] == ["mixtral"], layers
    info: dict = {}
    assert survey._exact(m, blk, "f32", True, x, info) <= 1.0, info
    assert info["err_vs_f64"] <= 1.0 and info["torch_err_vs_f64"] < 0.5, info  # (here: the plain f32 tolerance)
    route = next(o for o in m.ops() if o.name == "moe.route")
    experts = next(o for o in m.ops() if o.name == "moe.experts")
    w_down = experts.operands[5].owner
    from moec.ir.core import ResourceRef
    val = w_down.attrs["value"]
    arr = np.array(m.weights[val.key] if isinstance(val, ResourceRef) else val)
    bad = arr.copy()
    bad[1] = bad[1] * 1.01
    for change, undo in (
            (lambda: m.weights.set(val.key, bad) if isinstance(val, ResourceRef) else w_down.attrs.update(value=bad),
             lambda: m.weights.set(val.key, arr) if isinstance(val, ResourceRef) else w_down.attrs.update(value=arr)),
            (lambda: route.attrs.update(norm="none"), lambda: route.attrs.update(norm="sum"))):
        change()
        try:
            info = {}
            err = survey._exact(m, blk, "f32", True, x, info)
        finally:
            undo()
        assert err > 1.0, info
    assert survey._exact(m, blk, "f32", True, x) <= 1.0  # (restored)


def test_f32_criterion_allows_the_models_own_rounding_only():
    """f32_check: moec within the f32 tolerance of the float64 math passes whatever the f32 run does; beyond
    it, moec may be as far as twice the f32 run's own error (a wide reduction both round), no further."""
    from moec.tolerances import TOLERANCES, f32_check
    tol = TOLERANCES["f32"]
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 32))
    unit = tol.atol + tol.rtol * np.abs(ref)
    sign = np.sign(rng.standard_normal(ref.shape))
    assert f32_check([ref + 0.9 * unit * sign], [ref], [ref])["ok"]  # floor: within the tolerance
    assert not f32_check([ref + 1.2 * unit * sign], [ref], [ref])["ok"]  # torch exact: the plain tolerance
    own = ref - 1.7 * unit * sign  # the model's own f32 run 1.7 units off (Muse Spark's tiny config: 1.72)
    t = f32_check([ref + 3.0 * unit * sign], [own], [ref])
    assert t["ok"] and t["allowed"] == pytest.approx(3.4), t
    assert not f32_check([ref + 4.0 * unit * sign], [own], [ref])["ok"]
    assert not f32_check([ref * 1.01], [own], [ref])["ok"]  # 1% off: ~100 units
    nan = ref.copy()
    nan[0, 0] = np.nan
    assert not f32_check([nan], [ref], [ref])["ok"]


def test_torchscript_example_hits_every_expert():
    """The TorchScript trace keeps only the eager experts its example hits: the survey's example for that path
    hits every expert (aria_text's [2, 5] example reaches 7 of its 8)."""
    blk = moe_block("aria_text", "eager")
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    assert survey.experts_hit(blk, x) == (7, 8)
    ex = survey.example_input(blk, torch.float32, "torchscript")
    hit, E = survey.experts_hit(blk, ex)
    assert hit == E == 8 and tuple(ex.shape[:2]) != (2, 5)
    assert tuple(survey.example_input(blk, torch.float32, "torch.export").shape[:2]) == (2, 5)


def test_bf16_compile_verification_fails_a_wrong_build():
    """moec.compile's verification of a bf16 block (verify_against_module, the half-precision criterion):
    the build verifies against its module, and the same artifact does not verify against the module with
    one expert's weights 10% off -- the artifact is then a wrong build of that module."""
    import copy

    import moec
    from moec.verify import verify_against_module
    blk = moe_block("mixtral", dtype=torch.bfloat16)
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = moec.compile(survey._wrap_first(blk), (x,), dynamic_dims={0: {0: "B", 1: "S"}}, cache=False)
    assert cm.stats.verified and [la["family"] for la in cm.stats.report["moe_layers"]] == ["mixtral"]
    ok = verify_against_module(cm.artifact, survey._wrap_first(blk), (x,), "f32", "mixtral", "cpu")
    assert ok["verified"], ok
    wrong = copy.deepcopy(blk)
    with torch.no_grad():
        p = next(t for n, t in wrong.named_parameters() if "down" in n)
        p[1].mul_(1.1)
    out = verify_against_module(cm.artifact, survey._wrap_first(wrong), (x,), "f32", "mixtral", "cpu")
    assert not out["verified"] and "error against the f32 model" in out["failure"], out


@pytest.mark.slow
@pytest.mark.parametrize("arch", STATIC_RECOGNISED)
def test_static_dims_block_is_recognised(arch):
    """Exported with static batch / sequence dims: the same family, the same output at that shape."""
    blk = moe_block(arch)
    m, layers = recognise(blk, torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2)), dynamic=False)
    assert [la["family"] for la in layers] == [expected(arch)[0]], layers
    xs = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = tensor_to_numpy(first_output(blk(xs)))
    assert_f32_exact(list(ir_run(m, [xs.numpy()]).values())[0], blk, xs, want)


def test_expectation_tables_are_the_surveys():
    """The tables above are the survey's measurements (docs/real_models.json), so they cannot go stale
    silently: after a survey run, ``python tests/hf_survey.py --tables`` rewrites them."""
    import os
    want = survey.expectation_tables(os.path.join(os.path.dirname(survey.HERE), "docs", "real_models.json"))
    here = globals()
    for name, table in want.items():
        got = here[name]
        if name == "RECOGNISED":
            got = {a: (v[0], v[1], v[2] if len(v) > 2 else 4) for a, v in got.items()}
            table = {a: (f, k, E if E is not None else 4) for a, (f, k, E) in table.items()}
        elif name == "NOT_RECOGNISED":
            table = {a: rx for a, (rx, _) in table.items()}
        elif isinstance(table, dict):
            got = {k: tuple(v) for k, v in got.items()}
            table = {k: tuple(v) for k, v in table.items()}
        else:
            got, table = tuple(got), tuple(table)
        assert got == table, f"{name} differs from docs/real_models.json: run python tests/hf_survey.py --tables"


def test_bf16_models_keep_in_f32_what_transformers_keeps():
    """The survey's bf16 models are what ``from_pretrained(..., dtype=torch.bfloat16)`` loads: the names of
    ``_keep_in_fp32_modules_strict`` (Inkling2's router weight and correction bias, as DeepSeek-V3's) stay
    f32, the experts are bf16.  ``model.to(bf16)`` alone casts the router too, and Inkling2's router, which
    reads an f32 copy of the tokens without casting its weight (``F.linear(hidden.float(), self.weight)``),
    then fails in torch itself, while torch.export's fake tensors let it through to moec."""
    blk = survey.sparse_blocks(survey.build_model("inkling2_text", dtype="bf16"))[0].eval()
    assert blk.gate.weight.dtype == torch.float32 and blk.gate.e_score_correction_bias.dtype == torch.float32
    assert {p.dtype for p in blk.experts.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        y = survey._out0(blk(torch.randn(1, 3, D, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)))
    assert y.dtype == torch.bfloat16 and y.shape == (1, 3, D) and bool(torch.isfinite(y).all())


def test_squeeze_of_dims_not_of_size_one_keeps_them():
    """torch's squeeze() leaves dims that are not 1 (ERNIE-4.5-MoE's ``bias.squeeze()`` on [E])."""
    class Sq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.arange(4.0))

        def forward(self, x):
            return x.squeeze(1) + self.b.squeeze() + x.squeeze(0).sum()

    x = torch.randn(1, 1, 4)
    m = import_torch(Sq(), (x,), dynamic_dims={})
    np.testing.assert_allclose(list(ir_run(m, [x.numpy()]).values())[0], Sq()(x).detach().numpy(), rtol=1e-6)


def test_default_eager_experts_fail_with_the_way_out():
    """A default-config block (eager experts: a data-dependent loop torch.export cannot trace) is refused
    with one error that says how to export it (batched_mm), not only torch's guard message."""
    import torch
    import moec
    from moec.errors import UnsupportedError
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    c = MixtralConfig(hidden_size=32, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    block = MixtralSparseMoeBlock(c).eval()
    with pytest.raises(UnsupportedError, match=r"torch.export failed.*_experts_implementation = \"batched_mm\""):
        moec.compile(block, (torch.randn(2, 5, 32),), cache=False, experts_implementation=None)  # (as it is set)


def test_triton_host_segment_reading_one_value_twice(tmp_path):
    """A host op reading one value twice (Gemma4's and Kolibri1's rotary: ``cat(freqs, freqs)``) on the
    triton target: the segment numbers that value once, so the results it returns are the ones computed
    (before: the second copy shifted every result's number by one and the segment returned its input in
    place of the concat -- the 2-layer models failed with "size of tensor a (8) must match ... (4)")."""
    pytest.importorskip("triton")
    from moec.driver import build_module
    from moec.ir.parser import parse_module
    X, Y = 'tensor<?x4xf32, "T">', 'tensor<?x8xf32, "T">'
    m = parse_module(
        "module {\n"
        f'  func.func @main(%x: {X}) -> ({Y}) attributes {{moec.inputs = ["x"], moec.outputs = ["y"]}} {{\n'
        f'    %c = "moec.concat"(%x, %x) {{axis = -1 : i64}} : ({X}, {X}) -> {Y}\n'
        f'    %k = "moec.cos"(%c) : ({Y}) -> {Y}\n'
        f'    %y = "moec.mul"(%k, %c) : ({Y}, {Y}) -> {Y}\n'
        f'    func.return %y : {Y}\n'
        "  }\n}\n")
    art = build_module(m, str(tmp_path / "out"), target="triton")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    c = np.concatenate([x, x], axis=-1)
    np.testing.assert_allclose(np.asarray(art([x])[0]), np.cos(c) * c, rtol=1e-5, atol=1e-6)
