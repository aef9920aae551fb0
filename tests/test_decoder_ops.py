"""Decoder-layer canonicalisations and recognitions (issue 17 item 2): the batched matmul by a broadcast
constant matrix (passes/fold_broadcast_matmul.py) on its own and in a real transformers export."""
from __future__ import annotations

import numpy as np
import pytest

from moec.ir import parse_module, verify_module
from moec.ir.interpreter import run as ir_run
from moec.passes.fold_broadcast_matmul import FoldBroadcastMatmul

_O_PROJ = """module {
  func.func @main(%x: tensor<?x?x4xf32>, %bs: tensor<1xi64>) -> (tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "bs"], moec.outputs = ["y"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %k = "moec.constant"() {value = dense<[4, 3]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s = "moec.concat"(%bs, %k) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64>
    %e = "moec.expand"(%w, %s) : (tensor<4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32>
    %y = "moec.matmul"(%x, %e) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    func.return %y : tensor<?x?x3xf32>
  }
}
"""


@pytest.mark.parametrize("xb,wb", [(3, 3), (1, 3), (3, 1), (1, 1)])
def test_broadcast_matmul_fold_keeps_the_batch_broadcast(xb, wb):
    """Whichever side has the batch (x's batch 1 against the expand's 3, or the other way round), the
    rewritten graph gives the batched matmul's values and shape, and the matmul reads the 2-D weight."""
    m0 = parse_module(_O_PROJ)
    m1 = parse_module(_O_PROJ)
    assert FoldBroadcastMatmul().run(m1)
    verify_module(m1)
    mm = [o for o in m1.main.ops if o.name == "moec.matmul"]
    assert len(mm) == 1 and mm[0].operands[1].type.shape == (4, 3)
    x = np.random.default_rng(xb * 7 + wb).standard_normal((xb, 5, 4)).astype(np.float32)
    bs = np.array([wb], np.int64)
    want = ir_run(m0, [x, bs])["y"]
    got = ir_run(m1, [x, bs])["y"]
    assert got.shape == want.shape == (max(xb, wb), 5, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_real_mixtral_o_proj_becomes_a_quantised_linear(tmp_path, monkeypatch):
    """moec.compile's default dynamic-batch export of a real 2-layer Mixtral writes o_proj as a bmm by
    expand(W.T): after the fold every projection (q, k, v, o x 2 layers) and the output layer are
    linear_q under --weights int8, and the model verifies against its eager output."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import moec
    from test_hf_compile import causal_lm
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    model = causal_lm("mixtral", "batched_mm")
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    cm = moec.compile(model, (ids,), weights="int8", dynamic_dims={0: {0: "B", 1: "S"}})
    rep = cm.stats.report
    assert rep["verified"], rep.get("failure")
    assert rep["op_histogram"].get("moec.linear_q", 0) == 2 * 4 + 1, rep["op_histogram"]


# ---- moec.attention: reference semantics and the fused C kernel ------------------------------------
def _attention_module(B, Hq, Hkv, S, T, D, Dv, scale, causal, mask_shape=None):
    m = "?" if B is None else B
    args = [f"%q: tensor<{m}x{Hq}x{S}x{D}xf32>", f"%k: tensor<{m}x{Hkv}x{T}x{D}xf32>",
            f"%v: tensor<{m}x{Hkv}x{T}x{Dv}xf32>"]
    ops = ["%q", "%k", "%v"]
    types = [a.split(": ")[1] for a in args]
    names = ['"q"', '"k"', '"v"']
    if mask_shape is not None:
        mt = "tensor<" + "x".join(map(str, mask_shape)) + "xf32>"
        args.append(f"%mask: {mt}")
        ops.append("%mask")
        types.append(mt)
        names.append('"mask"')
    out = f"tensor<{m}x{Hq}x{S}x{Dv}xf32>"
    return parse_module(f"""module {{
  func.func @main({", ".join(args)}) -> ({out}) attributes {{moec.inputs = [{", ".join(names)}], moec.outputs = ["y"]}} {{
    %y = "moec.attention"({", ".join(ops)}) {{causal = {str(causal).lower()}, scale = {scale!r} : f64}} : ({", ".join(types)}) -> {out}
    func.return %y : {out}
  }}
}}
""")


ATT_CASES = [  # B, Hq, Hkv, S, T, D, Dv, causal, mask shape
    (2, 4, 2, 5, 5, 8, 8, True, None),          # GQA, causal, one query block
    (1, 3, 1, 37, 37, 16, 12, True, None),      # MQA, several query and key blocks, Dv != D
    (2, 2, 2, 3, 70, 8, 8, True, None),         # a cache: 3 queries over 70 keys (bottom-right causal)
    (1, 2, 1, 20, 20, 8, 8, False, (1, 1, 20, 20)),  # additive mask, not causal
    (2, 4, 4, 1, 9, 8, 8, False, (2, 1, 1, 9)),      # decode row, a padding mask per batch
    (1, 2, 1, 130, 130, 16, 32, True, None),    # three query blocks (the last 2 rows), values read in place
    (1, 2, 2, 67, 67, 8, 32, False, (1, 2, 67, 67)),  # a per-head mask over two query and key blocks
    (1, 3, 3, 29, 70, 16, 16, True, None),      # one query block, no GQA: each task transposes its own keys
]


def _att_inputs(case, seed=0):
    B, Hq, Hkv, S, T, D, Dv, causal, ms = case
    r = np.random.default_rng(seed)
    xs = [r.standard_normal(s).astype(np.float32) for s in ((B, Hq, S, D), (B, Hkv, T, D), (B, Hkv, T, Dv))]
    if ms is not None:
        mask = np.where(r.random(ms) < 0.3, -np.inf, r.standard_normal(ms)).astype(np.float32)
        if ms[-2] == 1:
            mask[..., 0] = -np.inf  # and a fully masked batch row for the second batch entry
            mask[1:, ..., :] = -np.inf
        xs.append(mask)
    return xs


@pytest.mark.parametrize("case", ATT_CASES)
def test_attention_reference_matches_torch_sdpa(case):
    """The op's numpy semantics against torch's own scaled_dot_product_attention (GQA by repeating the
    key/value heads, the causal mask aligned to the last keys as torch's is_causal for S == T)."""
    torch = pytest.importorskip("torch")
    B, Hq, Hkv, S, T, D, Dv, causal, ms = case
    xs = _att_inputs(case)
    m = _attention_module(B, Hq, Hkv, S, T, D, Dv, 0.3, causal, ms)
    got = ir_run(m, xs)["y"]
    q, k, v = (torch.from_numpy(x).double() for x in xs[:3])
    k, v = (t.repeat_interleave(Hq // Hkv, dim=1) for t in (k, v))
    mask = torch.zeros(S, T, dtype=torch.float64)
    if causal:
        mask = mask.masked_fill(torch.ones(S, T, dtype=torch.bool).tril(T - S).logical_not(), -float("inf"))
    if ms is not None:
        mask = mask + torch.from_numpy(xs[3]).double()
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    want = torch.nan_to_num(want, nan=0.0).numpy()  # torch: NaN rows where every key is masked; the op: 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_attention_kernel_matches_reference(tmp_path):
    """The fused C kernel (query blocks of 64, key blocks of 64, online softmax) == the op's semantics
    on every case, with 2 threads."""
    from moec.driver import build_module
    for i, case in enumerate(ATT_CASES):
        B, Hq, Hkv, S, T, D, Dv, causal, ms = case
        m = _attention_module(B, Hq, Hkv, S, T, D, Dv, 0.25, causal, ms)
        art = build_module(m, str(tmp_path / f"a{i}"), threads=2)
        xs = _att_inputs(case, seed=i + 1)
        want = ir_run(m, xs)["y"]
        got = art(xs)[0]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5, err_msg=str(case))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["generic", "avx2"])
def test_attention_kernel_other_vector_widths(arch, tmp_path):
    """The kernel built for 16- and 32-byte vectors (4 and 8 lanes: other key-chunk and column splits)
    == the op's semantics on every case."""
    from moec.driver import build_module
    for i, case in enumerate(ATT_CASES):
        B, Hq, Hkv, S, T, D, Dv, causal, ms = case
        m = _attention_module(B, Hq, Hkv, S, T, D, Dv, 0.25, causal, ms)
        art = build_module(m, str(tmp_path / f"a{i}"), arch=arch, threads=2)
        xs = _att_inputs(case, seed=i + 1)
        np.testing.assert_allclose(art(xs)[0], ir_run(m, xs)["y"], rtol=2e-5, atol=2e-5, err_msg=str(case))


@pytest.mark.slow
def test_attention_kernel_is_sanitizer_clean(tmp_path):
    """The kernel under ASan + UBSan on the cases above (padded row quads, values read in place or
    copied, keys transposed once per head, masks): no report, the op's values."""
    from moec.driver import build_module
    from moec.targets.cpu_harness import build_harness, run_harness
    for i, case in enumerate(ATT_CASES):
        B, Hq, Hkv, S, T, D, Dv, causal, ms = case
        m = _attention_module(B, Hq, Hkv, S, T, D, Dv, 0.25, causal, ms)
        out = str(tmp_path / f"a{i}")
        build_module(m, out, threads=2)
        exe = build_harness(out, sanitize=True)
        xs = _att_inputs(case, seed=i + 1)
        got = run_harness(exe, out, xs, 1)[0]
        np.testing.assert_allclose(got, ir_run(m, xs)["y"], rtol=2e-5, atol=2e-5, err_msg=str(case))


# ---- recognize-decoder on real transformers exports -------------------------------------------------
def _lm_module(arch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import warnings
    import hf_survey as survey
    from test_hf_compile import causal_lm

    class Logits(torch.nn.Module):
        def __init__(self, mdl):
            super().__init__()
            self.m = mdl

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    model = causal_lm(arch, "batched_mm")
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = survey._import_as_compile(Logits(model).eval(), (ids,), {0: {0: "B", 1: "S"}})
    return model, m


def _decoder_stages(m, target):
    from moec.passes.base import run_to_fixed_point
    from moec.passes.pipeline import stages
    st = dict(stages(target))
    for name in ("canonicalize", "recognize-moe", "recognize-decoder"):
        run_to_fixed_point(m, st[name])
    return m


@pytest.mark.parametrize("arch", ["mixtral", pytest.param("qwen2_moe", marks=pytest.mark.slow),
                                  pytest.param("deepseek_v3", marks=pytest.mark.slow)])
def test_real_decoder_layers_recognised_and_exact(arch):
    """A real 2-layer CausalLM through moec.compile's front end (torch.export, dynamic batch and
    sequence): each layer's attention becomes one causal moec.attention (the mask kept as an operand)
    and its RMSNorms moec.rms_norm (2 per layer + the final norm; DeepSeek-V3's MLA adds its latent
    norms), and the module's logits on new token ids of another size equal torch's eager logits."""
    torch = pytest.importorskip("torch")
    from moec.targets import target_for
    model, m = _lm_module(arch)
    _decoder_stages(m, target_for("cpu", "generic"))
    verify_module(m)
    att = [o for o in m.main.ops if o.name == "moec.attention"]
    rms = [o for o in m.main.ops if o.name == "moec.rms_norm"]
    assert len(att) == 2 and all(o.attrs["causal"] for o in att), [o.attrs for o in att]
    assert len(rms) >= 5
    if arch != "deepseek_v3":  # (q and k of each layer; DeepSeek-V3's MLA ropes a slice of q and k)
        assert sum(o.name == "moec.rotary" for o in m.main.ops) == 4
    assert not [o for o in m.main.ops if o.name == "moec.softmax"]
    ids = torch.randint(3, 100, (3, 9), generator=torch.Generator().manual_seed(9))
    got = list(ir_run(m, [ids.numpy()]).values())[0]
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_targets_without_the_kernels_keep_the_decomposed_graph():
    """Triton and Ascend list only the decode step's moec.kv_step_attention among their fused decoder ops (their
    kernels read an f16 cache: tests/test_kv_f16_targets.py): the pass leaves their other attention graphs alone
    (Ascend's whole-decoder launch plans are built from the decomposed ops)."""
    import glob
    import os
    from moec.passes.recognize_decoder import RecognizeDecoder
    from moec.targets import target_for
    path = glob.glob(os.path.join(os.path.dirname(__file__), "golden", "recognize-decoder__sdpa_gqa_causal.mlir"))[0]
    src = open(path).read().partition("// ----- expected\n")[0]
    for name in ("triton", "ascend"):
        m = parse_module(src)
        assert target_for(name).fused_decoder_ops == ("moec.kv_step_attention",)
        assert not RecognizeDecoder(target_for(name)).run(m)
    m = parse_module(src)
    assert RecognizeDecoder(target_for("cpu", "generic")).run(m)


@pytest.mark.slow
def test_real_mixtral_dynamo_onnx_export_recognised(tmp_path):
    """torch.onnx's dynamo exporter writes the attention as ONNX (K^T as a rank-3 transpose between
    reshapes, NaN rows zeroed with IsNaN + Where): the same two causal attentions and five RMSNorms, and
    the logits equal eager.  (The TorchScript exporter fails on this model in torch itself: aten::diff.)"""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import warnings
    import onnx
    from moec.frontend.onnx_import import import_model
    from moec.targets import target_for
    from test_hf_compile import causal_lm
    model = causal_lm("mixtral", "batched_mm")

    class Logits(torch.nn.Module):
        def __init__(self, mdl):
            super().__init__()
            self.m = mdl

        def forward(self, ids):
            return self.m(input_ids=ids, use_cache=False).logits

    ids = torch.randint(3, 100, (2, 5), generator=torch.Generator().manual_seed(5))
    p = str(tmp_path / "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model).eval(), (ids,), p, dynamo=True, dynamic_shapes=({0: "B", 1: "S"},),
                          input_names=["ids"])
    m = _decoder_stages(import_model(onnx.load(p)), target_for("cpu", "generic"))
    att = [o for o in m.main.ops if o.name == "moec.attention"]
    assert len(att) == 2 and all(o.attrs["causal"] for o in att), [o.attrs for o in att]
    assert sum(o.name == "moec.rms_norm" for o in m.main.ops) == 5
    ids2 = torch.randint(3, 100, (3, 7), generator=torch.Generator().manual_seed(9))
    got = list(ir_run(m, [ids2.numpy()]).values())[0]
    with torch.no_grad():
        want = model(input_ids=ids2, use_cache=False).logits.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_reference_and_kernel(interleaved, tmp_path):
    """moec.rotary against the complex-number form of rotary embeddings (interleaved: pairs (x0, x1) as
    x0 + i x1 times cos + i sin; rotate_half: (x[j], x[j + D/2]) as the pair), cos/sin broadcast over
    batch and heads; the C kernel equals the reference."""
    from moec.driver import build_module
    B, H, S, D = 2, 3, 5, 8
    r = np.random.default_rng(3)
    x = r.standard_normal((B, H, S, D)).astype(np.float32)
    ang = r.standard_normal((1, 1, S, D // 2)).astype(np.float32)
    if interleaved:
        cos, sin = np.repeat(np.cos(ang), 2, -1), np.repeat(np.sin(ang), 2, -1)
        z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * ang)
        want = np.stack([z.real, z.imag], -1).reshape(x.shape)
    else:
        cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
        z = (x[..., :D // 2] + 1j * x[..., D // 2:]) * np.exp(1j * ang)
        want = np.concatenate([z.real, z.imag], -1)
    t = f"tensor<{B}x{H}x{S}x{D}xf32>"
    c = f"tensor<1x1x{S}x{D}xf32>"
    m = parse_module(f"""module {{
  func.func @main(%x: {t}, %c: {c}, %s: {c}) -> ({t}) attributes {{moec.inputs = ["x", "c", "s"], moec.outputs = ["y"]}} {{
    %y = "moec.rotary"(%x, %c, %s) {{interleaved = {str(interleaved).lower()}}} : ({t}, {c}, {c}) -> {t}
    func.return %y : {t}
  }}
}}
""")
    got = ir_run(m, [x, cos, sin])["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    art = build_module(m, str(tmp_path / "r"), threads=1)
    np.testing.assert_allclose(art([x, cos, sin])[0], got, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_interleaved_rotary_recognised_in_gptj_export(dynamo, tmp_path):
    """GPT-J's rotary (transformers' own apply_rotary_pos_emb: rotate_every_two = stack(-x[..., 1::2],
    x[..., ::2]) flattened, sin/cos repeat_interleave'd) exported by torch.onnx becomes one
    moec.rotary {interleaved}; the compiled model verifies against onnxruntime"""
    torch = pytest.importorskip("torch")
    gptj = pytest.importorskip("transformers.models.gptj.modeling_gptj")
    from moec.driver import CompileOptions, compile_onnx

    class Rope(torch.nn.Module):
        def forward(self, q, sincos):
            sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
            return gptj.apply_rotary_pos_emb(q, sin, cos)

    B, S, H, D = 1, 6, 2, 8
    pos = gptj.create_sinusoidal_positions(S, D)[None]  # [1, S, D]
    q = torch.randn(B, S, H, D)
    path = str(tmp_path / "rope.onnx")
    kw = dict(dynamo=True) if dynamo else dict(dynamo=False, dynamic_axes={"q": {1: "S"}, "sincos": {1: "S"}})
    torch.onnx.export(Rope(), (q, pos), path, input_names=["q", "sincos"], output_names=["y"], **kw)
    r = compile_onnx(path, str(tmp_path / "out"), CompileOptions(force=True, symbol_sizes=(5, 1, 3)))
    assert r.report["verified"], r.report.get("failure")
    rot = [o for o in r.module.main.ops if o.name == "moec.rotary"]
    assert len(rot) == 1 and rot[0].attrs["interleaved"], [o.name for o in r.module.main.ops]
    with torch.no_grad():
        want = Rope()(q, pos).numpy()
    np.testing.assert_allclose(r.artifact([q.numpy(), pos.numpy()])[0], want, rtol=1e-5, atol=1e-5)
