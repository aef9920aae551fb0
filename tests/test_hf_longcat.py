"""LongCat-Flash's zero-computation (identity) experts through the TorchScript ONNX exporter (issue 16).

transformers' LongcatFlashMoE sends a slot that chose an identity id c >= n (n expert FFNs) through expert FFN
(c - n) * n // zero_expert_num with weight 0 (its "dummy" id), so a token that also chose that FFN reaches it
through two slots.  The module's ``index_add_`` sums both rows; torch.onnx's TorchScript exporter writes
``index_add_`` as a ScatterElements without reduction over zeros (and warns that duplicated indices make the
model incorrect), which keeps one of them, chosen by the order of an unsorted TopK (sorted=0).  So that export
computes another function than the module on those tokens: recognize-moe must not recognise it as identity
experts (it did, on f32 probes that happened to avoid such tokens, and failed on the bf16 and static-dims
exports, whose probes met one), and its reason says why.  Every other export of the block, where the slots
are summed, stays recognised."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")

import hf_survey as survey  # noqa: E402
from test_hf_models import D, export_onnx, first_output, moe_block, recognise_onnx  # noqa: E402


def _torchscript_eager(blk, tmp_path):
    """The survey's TorchScript export of the block (dynamic dims): traced on its seeded example that reaches
    every expert FFN (the trace unrolls the eager loop over the experts its example hits: survey.example_input)."""
    x = survey.example_input(blk, torch.float32, "torchscript")
    return survey._onnx_export(blk, x, str(tmp_path / "b"), dynamo=False, dynamic=True)


def _collision(blk, ids):
    """Per token: whether two of its slots reach the same expert FFN after LongCat's dummy-id mapping."""
    n, z = blk.num_routed_experts, blk.zero_expert_num
    ffn = torch.where(ids >= n, (ids - n) * n // z, ids)
    return (ffn[:, :, None] == ffn[:, None, :]).sum((1, 2)) > ids.shape[1]


def _tokens(blk, want_collision: bool, count: int = 8):
    """Seeded tokens [1, count, D] of which some (want_collision) or none collide (see _collision)."""
    for seed in range(200):
        x = torch.randn(1, count, D, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            _, _, ids = blk.router(x.reshape(-1, D))
        if bool(_collision(blk, ids).any()) == want_collision:
            return x, _collision(blk, ids)
    pytest.skip("no seed gives such tokens")


def test_torchscript_eager_export_differs_from_the_module_and_is_not_taken_for_identity_experts(tmp_path):
    """Fails before the pairing probes: the f32 export was recognised as longcat-flash (its build then failed
    moec compile's verification against onnxruntime)."""
    ort = pytest.importorskip("onnxruntime")
    blk = moe_block("longcat_flash", "eager")
    p = _torchscript_eager(blk, tmp_path)
    # the evidence, from code no one here wrote: onnxruntime on the export is the module on tokens whose slots
    # reach distinct expert FFNs, and not on those reaching one FFN twice
    sess = ort.InferenceSession(str(p))
    x, hit = _tokens(blk, True, 16)
    with torch.no_grad():
        want = first_output(blk(x)).numpy()
    err = np.abs(sess.run(None, {"x": x.numpy()})[0] - want).reshape(-1, D).max(axis=1)
    assert np.all(err[~hit.numpy()] < 1e-4), err
    assert np.any(err[hit.numpy()] > 1e-2), err  # (which duplicate survives follows onnxruntime's TopK order)

    m, layers = recognise_onnx(p)
    assert layers == []
    from moec.passes.recognition_trace import recognition_of
    rec = [r for r in recognition_of(m) if not r.get("recognised")]
    assert len(rec) == 1 and rec[0]["step"] == "experts", rec
    why = rec[0]["reason"]
    assert why.startswith("the export computes another function than the module"), why
    for part in ("'/b/experts/ScatterElements", "(no reduction) writes twice", "index_add_ sums them",
                 "sorted=0", "batched_mm"):
        assert part in why, why


def test_exports_that_sum_the_slots_stay_recognised(tmp_path):
    """The same block exported as batched_mm (the slots summed over k): longcat-flash, 2 identity experts, exact
    on tokens that reach one FFN through two slots too (the pairing probes do not turn a right layer down)."""
    blk = moe_block("longcat_flash", "batched_mm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = export_onnx(blk, tmp_path / "b.onnx", dynamo=False)
    m, layers = recognise_onnx(p)
    assert [(la["family"], la.get("identity_experts")) for la in layers] == [("longcat-flash", 2)], layers
    from moec.ir.interpreter import run
    x, hit = _tokens(blk, True, 16)
    with torch.no_grad():
        want = first_output(blk(x)).numpy()
    np.testing.assert_allclose(list(run(m, [x.numpy()]).values())[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype,dynamic", [("bf16", True), ("f32", False)], ids=["bf16", "f32-static"])
def test_bf16_and_static_exports_say_why(dtype, dynamic, tmp_path):
    """The survey's other two TorchScript eager cells (their probes met such a token, so they were never
    recognised; the reason said only that no routing candidate matched): the same reason now."""
    tdt = torch.bfloat16 if dtype == "bf16" else torch.float32
    blk = moe_block("longcat_flash", "eager", tdt)
    x = survey.example_input(blk, tdt, "torchscript")
    p = survey._onnx_export(blk, x, str(tmp_path / "b"), dynamo=False, dynamic=dynamic)
    m, layers = recognise_onnx(p)
    assert layers == []
    why = survey._why_not(m)
    assert why.startswith("experts: the export computes another function than the module"), why
    assert "(no reduction) writes twice" in why, why
