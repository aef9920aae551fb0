"""com.microsoft.MoE imported straight into moe.* ops, verified against onnxruntime's own kernel."""
import numpy as np
import pytest
from onnx import helper

from helpers import check_model, make_model

T_, D, F, E = "T", 16, 8, 4


def _moe_model(act, k=2, norm=1, fusion=None, biases=False, extra=None, seed=0):
    rng = np.random.default_rng(seed)
    I = 2 * F if act == "swiglu" else F
    inits = {"fc1": (rng.standard_normal((E, I, D)) / 3).astype(np.float32),
             "fc2": (rng.standard_normal((E, D, F)) / 3).astype(np.float32)}
    ins = ["x", "r", "fc1", "", "fc2", ""]
    if biases:
        inits["b1"] = (rng.standard_normal((E, I)) / 5).astype(np.float32)
        inits["b2"] = (rng.standard_normal((E, D)) / 5).astype(np.float32)
        ins = ["x", "r", "fc1", "b1", "fc2", "b2"]
    attrs = dict(k=k, activation_type=act, normalize_routing_weights=norm, **(extra or {}))
    if fusion is not None:
        attrs["swiglu_fusion"] = fusion
    node = helper.make_node("MoE", ins, ["y"], domain="com.microsoft", name="moe_node", **attrs)
    return make_model([node], [("x", np.float32, [T_, D]), ("r", np.float32, [T_, E])],
                      [("y", np.float32, [T_, D])], inits, opset=17, name=f"ortmoe_{act}",
                      extra_opsets=[helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("act,k,norm,fusion,biases,extra", [
    ("relu", 1, 0, None, False, None),
    ("silu", 2, 1, None, True, None),
    ("gelu", 2, 0, None, False, None),
    ("identity", 2, 1, None, False, None),
    ("swiglu", 2, 1, 1, False, None),
    ("swiglu", 2, 1, 1, True, dict(activation_alpha=1.702, activation_beta=1.0, swiglu_limit=7.0)),
])
def test_com_microsoft_moe(tmp_path, act, k, norm, fusion, biases, extra):
    rep = check_model(_moe_model(act, k, norm, fusion, biases, extra), tmp_path)
    assert len(rep["moe_layers"]) == 1
    layer = rep["moe_layers"][0]
    assert layer["family"] == "onnxruntime.MoE" and layer["E"] == E and layer["k"] == k
    assert layer["replaced_nodes"] == ["moe_node"]


def test_com_microsoft_moe_rejects_sparse_mixer(tmp_path):
    from moec.driver import CompileOptions, compile_onnx
    from moec.errors import UnsupportedError
    m = _moe_model("relu", extra=dict(use_sparse_mixer=1))
    with pytest.raises(UnsupportedError, match="moe_node.*use_sparse_mixer"):
        compile_onnx(m, str(tmp_path / "o"), CompileOptions())


def _quantize(w, bits, block):
    """Symmetric quantisation with the default zero point 2^(bits-1), packed along K (low nibble first)."""
    E, N, K = w.shape
    wb = w.reshape(E, N, K // block, block) if block else w.reshape(E, N, 1, K)
    qmax = 2 ** (bits - 1) - 1
    scale = (np.abs(wb).max(-1) / qmax).astype(np.float32)
    q = (np.clip(np.round(wb / scale[..., None]), -qmax - 1, qmax).astype(np.int32) + 2 ** (bits - 1))
    q = q.reshape(E, N, K).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8) if bits == 4 else q
    return packed, (scale if block else scale.reshape(E, N))


def _zero_points(rng, E, N, nb, bits, block):
    """Random zero points: 8 bits [E, N]; 4 bits packed two per byte, per channel along N ([E, N/2]),
    per block along the blocks ([E, N, ceil(nb/2)], the last high nibble unused when nb is odd)."""
    if bits == 8:
        return rng.integers(100, 156, (E, N)).astype(np.uint8)
    if not block:
        z = rng.integers(3, 13, (E, N)).astype(np.uint8)
    else:
        z = rng.integers(3, 13, (E, N, nb + nb % 2)).astype(np.uint8)
    return (z[..., 0::2] | (z[..., 1::2] << 4)).astype(np.uint8)


@pytest.mark.parametrize("bits,block,act,zp", [(8, 0, "relu", False), (4, 0, "silu", False), (4, 16, "relu", False),
                                               (4, 16, "swiglu", False), (4, 16, "swiglu", True), (4, 0, "relu", True),
                                               (8, 0, "silu", True)])
def test_com_microsoft_qmoe(tmp_path, bits, block, act, zp):
    """QMoE against onnxruntime.  Weights that moec's formats hold exactly (8-bit per channel with zero
    point 128, 4-bit per channel or block with or without zero points) stay quantised in the IR and the
    kernels; 8-bit with other zero points is imported dequantised, and the layer record says which."""
    rng = np.random.default_rng(1)
    D, F = 32, 16  # block sizes are >= 16 and must divide both
    fc3 = act == "swiglu0"
    I = 2 * F if act == "swiglu" else F
    p1, s1 = _quantize((rng.standard_normal((E, I, D)) / 3).astype(np.float32), bits, block)
    p2, s2 = _quantize((rng.standard_normal((E, D, F)) / 3).astype(np.float32), bits, block)
    attrs = dict(k=2, activation_type="swiglu" if fc3 else act, normalize_routing_weights=1, expert_weight_bits=bits)
    if block:
        attrs["block_size"] = block
    if act == "swiglu":
        attrs["swiglu_fusion"] = 1
    inits = {"fc1": p1, "s1": s1, "fc2": p2, "s2": s2}
    names = ["x", "r", "fc1", "s1", "", "fc2", "s2", "", "", "", "", "", "", ""]
    if fc3:
        attrs["swiglu_fusion"] = 0
        inits["fc3"], inits["s3"] = _quantize((rng.standard_normal((E, F, D)) / 3).astype(np.float32), bits, block)
        names[8:10] = ["fc3", "s3"]
    if zp:
        inits["z1"] = _zero_points(rng, E, I, D // block if block else 1, bits, block)
        inits["z2"] = _zero_points(rng, E, D, F // block if block else 1, bits, block)
        names[11:13] = ["z1", "z2"]
        if fc3:
            inits["z3"] = _zero_points(rng, E, F, D // block if block else 1, bits, block)
            names[13] = "z3"
    while names[-1] == "":
        names.pop()
    node = helper.make_node("QMoE", names, ["y"], domain="com.microsoft", name="qmoe_node", **attrs)
    m = make_model([node], [("x", np.float32, [T_, D]), ("r", np.float32, [T_, E])], [("y", np.float32, [T_, D])],
                   inits, opset=17, name=f"qmoe_{bits}_{block}_{act}_{zp}",
                   extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    from moec.driver import CompileOptions, compile_onnx
    r = compile_onnx(m, str(tmp_path / "o"), CompileOptions(force=True, symbol_sizes=(40, 1, 3)))
    rep = r.report
    assert rep["verified"] and rep["oracle"] == "onnxruntime", rep.get("failure")
    assert rep["moe_layers"][0]["source"] == "com.microsoft.QMoE"
    kept = not (bits == 8 and zp)
    w = rep["moe_layers"][0]["weights"]
    assert w["mode"] == (("int8" if bits == 8 else "int4") if kept else "f32"), w
    assert ("kept quantised" in w["source"]) == kept, w
    ex = [o for o in r.module.ops() if o.name == "moe.experts"]
    assert len(ex) == 1 and ex[0].attrs["wq"] == (w["mode"] if kept else "none")
    if kept:
        assert ex[0].attrs["wq_zp"] == (zp and bits == 4)
        assert ex[0].operands[4].type.dtype.mlir == ("i8" if bits == 8 else "ui8")
    assert rep["moe_layers"][0]["source"] == "com.microsoft.QMoE"
