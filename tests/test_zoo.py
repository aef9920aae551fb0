"""The model zoo end to end: every entry runs in onnxruntime like its PyTorch module, compiles
for the C target, verifies against onnxruntime, and has its MoE layer recognised with the right
family (no per-expert loop left); near-misses stay unrecognised and still verify."""

import numpy as np
import pytest

from helpers import check_ir_text
from moec.driver import CompileOptions, compile_onnx
from zoo import ZOO, zoo_inputs
from zoo.graphs import near_misses

torch = pytest.importorskip("torch")

# graph shapes the recognition passes do not rewrite yet (they compile and verify as ordinary ops)
NOT_YET = {}
BY_NAME = {e.name: e for e in ZOO}
SHARED = {"qwen2-moe", "deepseek-v2", "deepseek-v3", "llama-4"}


def _not_yet(e):
    return NOT_YET.get(e.family) or NOT_YET.get(e.shape)


@pytest.mark.parametrize("name", [e.name for e in ZOO if e.module_cls is not None])
def test_export_matches_torch(name):
    import onnxruntime as ort
    e = BY_NAME[name]
    model, mod = e.build(), e.torch_module()
    sess = ort.InferenceSession(model.SerializeToString())
    for T, kind in ((9, "random"), (6, "identical"), (1, "single")):
        feeds = zoo_inputs(e, T, kind)
        with torch.no_grad():
            want = mod(torch.from_numpy(feeds["x"])).numpy()
        got = sess.run(None, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{name} {kind}")


@pytest.mark.parametrize("name", [e.name for e in ZOO])
def test_compiles_verifies_and_is_recognised(name, tmp_path):
    e = BY_NAME[name]
    r = compile_onnx(e.build(), str(tmp_path / "out"), CompileOptions(symbol_sizes=(6, 1, 4)))
    rep = r.report
    assert rep["verified"] and rep["oracle"] == "onnxruntime"
    check_ir_text(r.module)
    layers = rep["moe_layers"]
    hist = rep["op_histogram"]
    if _not_yet(e):
        assert layers == [], f"unexpectedly recognised: {layers}"
        pytest.xfail(_not_yet(e))
    n_layers = 2 if "two_layers" in e.name else 1
    assert [layer["family"] for layer in layers] == [e.family] * n_layers
    # after the passes no per-expert loop is left: no data-dependent row selection, no per-expert GEMMs
    assert "moec.nonzero" not in hist and "moec.scatter_nd" not in hist and "moec.scatter_elements" not in hist
    assert hist.get("moe.experts") == n_layers
    per_expert = hist.get("moec.matmul", 0) + hist.get("moec.gemm", 0)
    router = 0 if e.shape == "ort_moe" else n_layers  # com.microsoft.MoE takes the router logits as an input
    assert per_expert == router, f"{per_expert} matmuls left (only the router's is expected)"
    # shared experts are absorbed into the layer, with Qwen2-MoE's sigmoid gate
    if e.module_cls is not None:
        want_shared = e.family in SHARED
        assert layers[0]["shared_experts"] == int(want_shared)
        assert hist.get("moe.shared_experts", 0) == int(want_shared)
        assert layers[0]["shared_expert_gate"] == (e.family == "qwen2-moe")


def test_identical_tokens_and_single_token(tmp_path):
    """Batches where every token is the same (most experts get no tokens) and one token."""
    from moec.targets.registry import CpuArtifact
    import onnxruntime as ort
    for name in ("mixtral_dynamo", "deepseekv3_torchscript", "gptoss_dynamo"):
        e = BY_NAME[name]
        model = e.build()
        out = str(tmp_path / name)
        compile_onnx(model, out, CompileOptions(verify=False))
        art = CpuArtifact(out)
        sess = ort.InferenceSession(model.SerializeToString())
        for T, kind in ((8, "identical"), (1, "single")):
            feeds = zoo_inputs(e, T, kind)
            np.testing.assert_allclose(art([feeds["x"]])[0], sess.run(None, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("name", sorted(near_misses()))
def test_near_misses_are_not_recognised_and_still_verify(name, dtype, tmp_path):
    """f16: the numeric proofs allow a few f16 roundings, which must still not admit a look-alike"""
    why, model = near_misses()[name]
    if dtype == "f16":
        from helpers import to_f16
        model = to_f16(model)
    r = compile_onnx(model, str(tmp_path / "o"), CompileOptions())
    assert r.report["verified"], why
    assert r.report["moe_layers"] == [], f"recognised a look-alike ({why})"


QUANT_MODES = [("bf16", 0), ("int8", 0), ("int4", 16), ("w8a8", 0)]


def _weight_mode_params():
    """Every zoo model in every weight mode; by default model i in mode i % 4 (every model quantised, every
    mode on a quarter of the zoo: each family in two modes), the rest with -m slow."""
    for i, name in enumerate(e.name for e in ZOO if not _not_yet(e)):
        for j, (mode, group) in enumerate(QUANT_MODES):
            yield pytest.param(name, mode, group, id=f"{name}-{mode}",
                               marks=[] if j == i % len(QUANT_MODES) else [pytest.mark.slow])


@pytest.mark.parametrize("name,mode,group", list(_weight_mode_params()))
def test_every_zoo_model_in_every_weight_mode(name, mode, group, tmp_path):
    """Quantised routed-expert weights: verified against the dequantised reference (f32 tolerance),
    quantisation error vs onnxruntime's f32 result within the documented bound.  A 40-token batch
    takes the prefill (packed panel) path, 1 token the decode path."""
    e = BY_NAME[name]
    r = compile_onnx(e.build(), str(tmp_path / "out"),
                     CompileOptions(symbol_sizes=(40, 1), weights=mode, group_size=group))
    rep = r.report
    assert rep["verified"], rep.get("failure")
    q = rep["quantization_error"]
    assert q["token_rel_median"] <= q["bound_token_rel_median"]
    if "two_layers" not in name:  # one layer: the router sees unquantised inputs, no token may jump
        assert q["tokens_over_4x_bound"] == 0, q
    for layer in rep["moe_layers"]:
        assert layer["weights"]["mode"] == mode, layer["weights"]
        if mode == "w8a8":
            assert "per token" in layer["weights"]["activations"]
