"""Zaya's bf16 ONNX exports (issue 16, docs/real_models.md R16): the exported graph's own bf16 run is the ONNX
paths' oracle, not torch's bf16 block.

Both torch.onnx exporters write a bf16 ``nn.Linear`` with bias as MatMul then Add, each rounded to bf16, where
torch's addmm rounds once; the TorchScript exporter also writes GELU as Div, Erf, Add, Mul, Mul, each rounded, with
sqrt(2) stored in bf16 (1.4140625).  Zaya's router is an MLP of three such linears, so the graph's own router
logits carry several more roundings than torch's, and on the survey's input its per-token error against the block
in f32 is 4-6x torch's own (0.038 dynamo / 0.057 TorchScript vs 0.009): the bf16 criterion judged moec's
recognised build (0.035 / 0.055, nearer the f32 block than the graph itself) against torch's run and failed it.

The graph's own run is made by onnxruntime (its CPU provider has no bf16 MatMul: on moec.verify.half_rounded_model,
each op in f32 and rounded where the graph stores bf16) and agrees bit for bit with moec's interpreter on the
unrecognised graph (bit for bit on the survey's input): two implementations of the same per-op semantics."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from moec.verify import half_rounded_model, widen_half_model  # noqa: E402

BF16 = ml_dtypes.bfloat16


def _rb(a):
    """a rounded to bf16 (nearest even), kept in f32."""
    return np.asarray(a, np.float32).astype(BF16).astype(np.float32)


def _run(proto, feeds):
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _linear_model():
    """y = sum_f32(bf16(x @ W) + b) over the last axis, back in bf16: a bf16 linear as the exporters write it
    (MatMul, Add), a widening cast and an f32 reduction, then a narrowing cast.  Weights and bias are multiples
    of 1/4 and 1/16 of at most 8 bits, so every f32 sum is exact whatever its order: only the bf16 roundings
    the graph asks for happen."""
    rng = np.random.default_rng(0)
    W = (rng.integers(-8, 9, (24, 16)) / 4).astype(BF16)
    b = (rng.integers(-64, 65, 16) / 16).astype(BF16)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["lin"]),
             helper.make_node("Cast", ["lin"], ["lin32"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["lin32", "ax"], ["s32"], keepdims=0),
             helper.make_node("Cast", ["s32"], ["y"], to=TensorProto.BFLOAT16)]
    g = helper.make_graph(nodes, "lin", [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["T", 24])],
                          [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["T"]),
                           helper.make_tensor_value_info("lin", TensorProto.BFLOAT16, ["T", 16])],
                          [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b"),
                           numpy_helper.from_array(np.array([-1], np.int64), "ax")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), W, b


def test_half_rounded_model_rounds_each_op_where_the_graph_stores_bf16():
    """half_rounded_model on onnxruntime computes each op in f32 and rounds its bf16 results: the linear rounded
    after the MatMul and again after the Add, the f32 sum not rounded, the narrowing cast once.  The widened copy
    (widen_half_model) rounds nothing, and a single rounding of x @ W + b (torch's addmm) differs on these
    values."""
    m, W, b = _linear_model()
    onnx.checker.check_model(m)
    x = (np.random.default_rng(1).integers(-8, 9, (64, 24)) / 4).astype(BF16)
    X, Wf, bf = x.astype(np.float32), W.astype(np.float32), b.astype(np.float32)
    exact = X @ Wf  # (exact in f32: multiples of 1/16 below 2^11)
    y, l = _run(half_rounded_model(m), {"x": X})
    np.testing.assert_array_equal(l, _rb(_rb(exact) + bf))
    np.testing.assert_array_equal(y, _rb(l.sum(-1)))
    assert np.any(_rb(exact + bf) != l)  # (the data tells one rounding from two)
    _, lw = _run(widen_half_model(m), {"x": X})
    np.testing.assert_array_equal(lw, exact + bf)
    assert half_rounded_model(widen_half_model(m)) is None  # (nothing in a half type)


def test_half_rounded_model_refuses_what_it_cannot_round():
    """A value whose type shape inference cannot give (an op of an unknown domain) is not silently left in f32."""
    m, _, _ = _linear_model()
    m.graph.node.insert(2, helper.make_node("Mystery", ["lin"], ["lin2"], domain="example.none"))
    m.graph.node[3].input[0] = "lin2"
    m.opset_import.append(helper.make_opsetid("example.none", 1))
    assert half_rounded_model(m) is None
    m2, _, _ = _linear_model()
    assert half_rounded_model(m2) is not None


# -- the real Zaya block ---------------------------------------------------------------------------------------

def _zaya_cell(path, dynamo, tmp_path, monkeypatch, build_model=False):
    """(block, export path, imported module, recognised module) of Zaya's first sparse block in bf16, exported
    with batched_mm experts and dynamic dims as the survey exports it."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_survey as survey
    monkeypatch.setenv("MOEC_SURVEY_CACHE", str(tmp_path))
    if build_model:  # (the survey's own block: the whole tiny model built, its sparse weights drawn)
        blk = survey.sparse_blocks(survey.build_model("zaya", "batched_mm", "bf16"))[0].eval()
    else:  # (the block alone, its weights drawn as the survey draws them)
        from transformers.models.zaya.modeling_zaya import ZayaSparseMoeBlock
        blk = ZayaSparseMoeBlock(survey.tiny_config("zaya", "batched_mm"), 0).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in blk.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        blk = blk.to(torch.bfloat16)
    x = survey.example_input(blk, torch.bfloat16, path)
    with survey._quiet():
        p = survey._onnx_export(blk, x, str(tmp_path / f"zaya-{path}"), dynamo, True)
    from moec.frontend.onnx_import import import_model
    plain = import_model(onnx.load(p))
    m = import_model(onnx.load(p))
    layers = survey._recognise(m)
    assert [la["family"] for la in layers] == ["zaya"]
    assert layers[0]["routing"]["n_skip"] == 1
    return survey, blk, p, plain, m


def _check_cell(survey, blk, p, plain, m):
    import torch
    from moec.frontend.torch_import import tensor_to_numpy
    from moec.ir.interpreter import run as ir_run
    info: dict = {}
    x0 = torch.zeros(2, 5, survey.D, dtype=torch.bfloat16)
    err = survey._exact(m, blk, "bf16", True, x0, info, onnx_path=p)
    assert info["onnx_oracle"].startswith("onnxruntime")
    # the graph's own bf16 run (onnxruntime) is moec's interpreter on the unrecognised graph: two implementations of
    # its per-op semantics (bit for bit here; an f32 sum in another order may flip one bf16 rounding elsewhere)
    xs = torch.randn(1, 7, survey.D, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    own, _ = survey._onnx_half_run(p, xs)
    interp = np.asarray(list(ir_run(plain, [tensor_to_numpy(xs)]).values())[0]).astype(np.float64)
    assert np.mean(own == interp) > 0.99
    np.testing.assert_allclose(own, interp, rtol=2 ** -7, atol=2 ** -10)
    # moec's recognised build is nearer the block in f32 than the graph's own bf16 run, and passes
    assert info["err_vs_f32"] <= info["onnx_err_vs_f32"]
    assert err <= 1.0, info
    # without the graph's own run (torch's bf16 block alone) it would not: the exporters' extra roundings
    hc = info["bf16_check"]
    assert info["onnx_err_vs_f32"] > 2 * info["torch_err_vs_f32"]
    assert hc["allowed"]["max"] >= 2 * info["onnx_err_vs_f32"] - 1e-12
    return info


def test_zaya_bf16_torchscript_export_judged_against_its_own_graph(tmp_path, monkeypatch):
    """The TorchScript export of Zaya's bf16 block (batched_mm experts): recognised as zaya; the graph's own bf16
    run, by onnxruntime, equals moec's interpreter on the unrecognised graph; moec's recognised build is nearer the
    block in f32 than that run and within the bf16 criterion against it (it was not against torch's bf16 block)."""
    survey, blk, p, plain, m = _zaya_cell("torchscript", False, tmp_path, monkeypatch)
    _check_cell(survey, blk, p, plain, m)


@pytest.mark.slow
@pytest.mark.parametrize("path,impl", [("dynamo", "batched_mm"), ("torchscript", "eager")])
def test_zaya_bf16_survey_cells(path, impl, tmp_path, monkeypatch):
    """The survey's own cells that failed (R16): dynamo batched_mm and TorchScript eager, through run_cell."""
    pytest.importorskip("transformers")
    import hf_survey as survey
    monkeypatch.setenv("MOEC_SURVEY_CACHE", str(tmp_path))
    mdl = survey.build_model("zaya", impl, "bf16")
    blk = survey.sparse_blocks(mdl)[0].eval()
    c = survey.run_cell("zaya", blk, impl, "bf16", "dynamic", path, mdl.config.to_json_string())
    assert c["status"] == "recognised" and c["family"] == "zaya", c
    assert c["exact"], c
    assert c["err_vs_f32"] <= c["onnx_err_vs_f32"], c
    assert c["onnx_err_vs_f32"] > 2 * c["torch_err_vs_f32"], c
