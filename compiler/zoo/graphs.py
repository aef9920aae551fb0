"""MoE graphs built directly with onnx.helper (no torch): the three graph shapes exporters and
hand-written models produce, com.microsoft.MoE models, and near-misses."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D, F, E, K = 64, 96, 8, 2
OPSET = 18


def _model(nodes, inits, name, extra_opsets=(), inputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", D])]
    g = helper.make_graph(nodes, name, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", D])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)] + list(extra_opsets))
    m.ir_version = 10
    onnx.checker.check_model(m)
    return m


def _weights(seed=0, e=E, f=F):
    rng = np.random.default_rng(seed)
    return {
        "router_w": (rng.standard_normal((D, e)) * 4 / np.sqrt(D)).astype(np.float32),
        "w_gate": (rng.standard_normal((e, D, f)) / np.sqrt(D)).astype(np.float32),
        "w_up": (rng.standard_normal((e, D, f)) / np.sqrt(D)).astype(np.float32),
        "w_down": (rng.standard_normal((e, f, D)) / np.sqrt(f)).astype(np.float32),
    }


def unrolled(variant: str = "mixtral", combine: str = "scatternd", mask: str = "equal", seed: int = 0):
    """Per-expert loop: mask of the top-k ids, NonZero, Gather of rows, SwiGLU, weighted
    scatter-add.  ``variant`` selects the routing (or a near-miss)."""
    w = _weights(seed)
    inits = {"router_w": w["router_w"], "k": np.array([K], np.int64), "ax1": np.array([1], np.int64),
             "ax0": np.array([0], np.int64), "zero_f": np.array(0.0, np.float32)}
    if mask == "onehot":
        inits.update(depth=np.array(E, np.int64), onoff=np.array([0.0, 1.0], np.float32))
    n = [helper.make_node("MatMul", ["x", "router_w"], ["logits"], name="router")]
    largest = 0 if variant == "near_smallest" else 1
    if variant == "near_tanh_logits":
        n.append(helper.make_node("Tanh", ["logits"], ["logits2"]))
        n.append(helper.make_node("Softmax", ["logits2"], ["probs"], axis=-1))
    elif variant == "near_softmax_axis0":
        n.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=0))
    else:
        n.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    n.append(helper.make_node("TopK", ["probs", "k"], ["tw", "ids"], axis=-1, largest=largest))
    if variant in ("mixtral", "near_smallest", "near_tanh_logits", "near_softmax_axis0", "near_relu_expert",
                   "near_weight_offset"):
        n += [helper.make_node("ReduceSum", ["tw", "ax1"], ["tsum"], keepdims=1),
              helper.make_node("Div", ["tw", "tsum"], ["topw"])]
        if variant == "near_weight_offset":
            inits["off"] = np.array(0.1, np.float32)
            n[-1] = helper.make_node("Div", ["tw", "tsum"], ["topw0"])
            n.append(helper.make_node("Add", ["topw0", "off"], ["topw"]))
    elif variant == "dbrx":
        n += [helper.make_node("ReduceL1", ["tw", "ax1"], ["tsum"], keepdims=1),
              helper.make_node("Div", ["tw", "tsum"], ["topw"])]
    else:  # qwen2-style: no renormalisation
        n.append(helper.make_node("Identity", ["tw"], ["topw"]))
    n.append(helper.make_node("Mul", ["x", "zero_f"], ["acc_0"]))
    if mask == "onehot":
        n.append(helper.make_node("OneHot", ["ids", "depth", "onoff"], ["oh"], axis=-1))  # [T, k, E]
    for e in range(E):
        p = f"e{e}_"
        if mask == "onehot":
            inits[p + "idx_e"] = np.array([e], np.int64)
        else:
            inits[p + "id"] = np.array(e, np.int64)
        inits[p + "wg"], inits[p + "wu"], inits[p + "wd"] = w["w_gate"][e], w["w_up"][e], w["w_down"][e]
        if mask == "onehot":
            n += [helper.make_node("Gather", ["oh", p + "idx_e"], [p + "m3"], axis=2),
                  helper.make_node("Squeeze", [p + "m3", "ax_last"], [p + "maskf"])]
            inits["ax_last"] = np.array([2], np.int64)
        else:
            n += [helper.make_node("Equal", ["ids", p + "id"], [p + "mask"]),
                  helper.make_node("Cast", [p + "mask"], [p + "maskf"], to=TensorProto.FLOAT)]
        n += [helper.make_node("Mul", ["topw", p + "maskf"], [p + "wk"]),
              helper.make_node("ReduceSum", [p + "wk", "ax1"], [p + "w"], keepdims=1),
              helper.make_node("ReduceMax", [p + "maskf", "ax1"], [p + "hitf"], keepdims=0),
              helper.make_node("Greater", [p + "hitf", "zero_f"], [p + "hitb"]),
              helper.make_node("NonZero", [p + "hitb"], [p + "nz"]),
              helper.make_node("Transpose", [p + "nz"], [p + "idx2"], perm=[1, 0]),
              helper.make_node("Squeeze", [p + "nz", "ax0"], [p + "idx"]),
              helper.make_node("Gather", ["x", p + "idx"], [p + "xe"], axis=0),
              helper.make_node("Gather", [p + "w", p + "idx"], [p + "we"], axis=0),
              helper.make_node("MatMul", [p + "xe", p + "wg"], [p + "g"]),
              helper.make_node("MatMul", [p + "xe", p + "wu"], [p + "u"])]
        if variant == "near_relu_expert" and e == 3:
            n.append(helper.make_node("Relu", [p + "g"], [p + "silu"]))
        else:
            n += [helper.make_node("Sigmoid", [p + "g"], [p + "sg"]),
                  helper.make_node("Mul", [p + "g", p + "sg"], [p + "silu"])]
        n += [helper.make_node("Mul", [p + "silu", p + "u"], [p + "h"]),
              helper.make_node("MatMul", [p + "h", p + "wd"], [p + "ye"]),
              helper.make_node("Mul", [p + "ye", p + "we"], [p + "yw"])]
        if combine == "scatternd":
            n.append(helper.make_node("ScatterND", [f"acc_{e}", p + "idx2", p + "yw"], [f"acc_{e + 1}"],
                                      reduction="add"))
        else:  # ScatterElements into zeros, then Add
            n += [helper.make_node("Unsqueeze", [p + "idx", "ax1"], [p + "i2"]),
                  helper.make_node("Shape", [p + "yw"], [p + "shp"]),
                  helper.make_node("Expand", [p + "i2", p + "shp"], [p + "ie"]),
                  helper.make_node("Mul", ["x", "zero_f"], [p + "z"]),
                  helper.make_node("ScatterElements", [p + "z", p + "ie", p + "yw"], [p + "sc"], axis=0),
                  helper.make_node("Add", [f"acc_{e}", p + "sc"], [f"acc_{e + 1}"])]
    n.append(helper.make_node("Identity", [f"acc_{E}"], ["y"]))
    return _model(n, inits, f"unrolled_{variant}_{combine}_{mask}")


def gathered_bmm(seed=0):
    """Gather the stacked expert weights by the top-k ids and run batched MatMuls."""
    w = _weights(seed)
    inits = {"router_w": w["router_w"], "k": np.array([K], np.int64), "ax1": np.array([1], np.int64),
             "ax2": np.array([2], np.int64), "wg": w["w_gate"], "wu": w["w_up"], "wd": w["w_down"],
             "ax12": np.array([1, 2], np.int64)}
    n = [helper.make_node("MatMul", ["x", "router_w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
         helper.make_node("TopK", ["probs", "k"], ["tw", "ids"], axis=-1),
         helper.make_node("ReduceSum", ["tw", "ax1"], ["tsum"], keepdims=1),
         helper.make_node("Div", ["tw", "tsum"], ["topw"]),
         helper.make_node("Gather", ["wg", "ids"], ["g_w"], axis=0),     # [T, k, D, F]
         helper.make_node("Gather", ["wu", "ids"], ["u_w"], axis=0),
         helper.make_node("Gather", ["wd", "ids"], ["d_w"], axis=0),     # [T, k, F, D]
         helper.make_node("Unsqueeze", ["x", "ax12"], ["x4"]),           # [T, 1, 1, D]
         helper.make_node("MatMul", ["x4", "g_w"], ["g"]),               # [T, k, 1, F]
         helper.make_node("MatMul", ["x4", "u_w"], ["u"]),
         helper.make_node("Sigmoid", ["g"], ["sg"]), helper.make_node("Mul", ["g", "sg"], ["silu"]),
         helper.make_node("Mul", ["silu", "u"], ["h"]),
         helper.make_node("MatMul", ["h", "d_w"], ["ye"]),               # [T, k, 1, D]
         helper.make_node("Squeeze", ["ye", "ax2"], ["ye3"]),            # [T, k, D]
         helper.make_node("Unsqueeze", ["topw", "ax2"], ["w3"]),         # [T, k, 1]
         helper.make_node("Mul", ["ye3", "w3"], ["yw"]),
         helper.make_node("ReduceSum", ["yw", "ax1"], ["y"], keepdims=0)]
    return _model(n, inits, "gathered_bmm")


def dense_mask(seed=0):
    """All experts on all tokens (batched over E), times a [T, E] mask from TopK + ScatterElements."""
    w = _weights(seed)
    inits = {"router_w": w["router_w"], "k": np.array([K], np.int64), "ax1": np.array([1], np.int64),
             "ax0": np.array([0], np.int64), "wg": w["w_gate"], "wu": w["w_up"], "wd": w["w_down"],
             "zero_f": np.array(0.0, np.float32), "reps": np.array([E, 1, 1], np.int64)}
    n = [helper.make_node("MatMul", ["x", "router_w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
         helper.make_node("TopK", ["probs", "k"], ["tw", "ids"], axis=-1),
         helper.make_node("ReduceSum", ["tw", "ax1"], ["tsum"], keepdims=1),
         helper.make_node("Div", ["tw", "tsum"], ["topw"]),
         helper.make_node("Mul", ["logits", "zero_f"], ["z"]),
         helper.make_node("ScatterElements", ["z", "ids", "topw"], ["mask"], axis=1),   # [T, E]
         helper.make_node("Unsqueeze", ["x", "ax0"], ["x3"]),                           # [1, T, D]
         helper.make_node("Tile", ["x3", "reps"], ["xe"]),                              # [E, T, D]
         helper.make_node("MatMul", ["xe", "wg"], ["g"]), helper.make_node("MatMul", ["xe", "wu"], ["u"]),
         helper.make_node("Sigmoid", ["g"], ["sg"]), helper.make_node("Mul", ["g", "sg"], ["silu"]),
         helper.make_node("Mul", ["silu", "u"], ["h"]),
         helper.make_node("MatMul", ["h", "wd"], ["ye"]),                               # [E, T, D]
         helper.make_node("Transpose", ["mask"], ["mt"], perm=[1, 0]),                  # [E, T]
         helper.make_node("Unsqueeze", ["mt", "ax_last"], ["m3"]),                      # [E, T, 1]
         helper.make_node("Mul", ["ye", "m3"], ["yw"]),
         helper.make_node("ReduceSum", ["yw", "ax0"], ["y"], keepdims=0)]
    inits["ax_last"] = np.array([2], np.int64)
    return _model(n, inits, "dense_mask")


def ort_moe(act="silu", k=2, normalize=1, fusion=None, seed=0):
    rng = np.random.default_rng(seed)
    I = 2 * F if act == "swiglu" else F
    inits = {"fc1": (rng.standard_normal((E, I, D)) / np.sqrt(D)).astype(np.float32),
             "fc2": (rng.standard_normal((E, D, F)) / np.sqrt(F)).astype(np.float32)}
    attrs = dict(k=k, activation_type=act, normalize_routing_weights=normalize)
    if fusion is not None:
        attrs["swiglu_fusion"] = fusion
    node = helper.make_node("MoE", ["x", "r", "fc1", "", "fc2", ""], ["y"], domain="com.microsoft", **attrs)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", D]),
              helper.make_tensor_value_info("r", TensorProto.FLOAT, ["T", E])]
    return _model([node], inits, f"ort_moe_{act}", [helper.make_opsetid("com.microsoft", 1)], inputs)


def ort_router_input(x, entry):
    w = (np.random.default_rng(5).standard_normal((D, E)) * 4 / np.sqrt(D)).astype(np.float32)
    return (x @ w).astype(np.float32)


def two_layers(D=32):
    """Two Mixtral-like layers in a residual stream with a LayerNorm in front: x -> LN -> moe_a ->
    + x -> moe_b -> + h."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
    from build_mixtral_like import build
    a = build(hidden=D, ffn=48, experts=4, top_k=2, seed=1)
    b = build(hidden=D, ffn=48, experts=4, top_k=2, seed=2)
    def rename(g, pre):
        m = {}
        for init in g.initializer: m[init.name] = pre + init.name; init.name = m[init.name]
        for n in g.node:
            n.input[:] = [m.get(i, pre + i if i != "x" else i) for i in n.input]
            n.output[:] = [pre + o for o in n.output]
            n.name = pre + n.name
        return g
    ga, gb = rename(a.graph, "a_"), rename(b.graph, "b_")
    nodes = [helper.make_node("LayerNormalization", ["x", "ln_s", "ln_b"], ["xn"], axis=-1)]
    for n in ga.node:
        n.input[:] = ["xn" if i == "x" else i for i in n.input]; nodes.append(n)
    nodes.append(helper.make_node("Add", ["x", "a_y"], ["h"]))
    for n in gb.node:
        n.input[:] = ["h" if i == "x" else i for i in n.input]; nodes.append(n)
    nodes.append(helper.make_node("Add", ["h", "b_y"], ["y"]))
    inits = list(ga.initializer) + list(gb.initializer) + [numpy_helper.from_array(np.ones(D, np.float32), "ln_s"), numpy_helper.from_array(np.zeros(D, np.float32), "ln_b")]
    g = helper.make_graph(nodes, "two_layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", D])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", D])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]); m.ir_version = 10
    return m


GRAPHS = {
    "onnx_unrolled_mixtral": ("mixtral", "onnx_unrolled", lambda: unrolled("mixtral")),
    "onnx_unrolled_mixtral_scatter_add": ("mixtral", "onnx_unrolled", lambda: unrolled("mixtral", "scatter_add")),
    "onnx_unrolled_mixtral_onehot": ("mixtral", "onnx_unrolled", lambda: unrolled("mixtral", mask="onehot")),
    "onnx_unrolled_qwen2": ("qwen2-moe", "onnx_unrolled", lambda: unrolled("qwen2")),
    "onnx_unrolled_dbrx": ("dbrx", "onnx_unrolled", lambda: unrolled("dbrx")),
    "onnx_gathered_bmm_mixtral": ("mixtral", "onnx_gathered_bmm", gathered_bmm),
    "onnx_dense_mixtral": ("mixtral", "onnx_dense", dense_mask),
    "ort_moe_silu": ("onnxruntime.MoE", "ort_moe", lambda: ort_moe("silu")),
    "onnx_two_layers_residual": ("mixtral", "onnx_unrolled", two_layers),
    "ort_moe_swiglu": ("onnxruntime.MoE", "ort_moe", lambda: ort_moe("swiglu", fusion=1)),
    "ort_moe_relu_top1": ("onnxruntime.MoE", "ort_moe", lambda: ort_moe("relu", k=1, normalize=0)),
}

NEAR_MISSES = {
    "near_smallest": "TopK with largest=0: selects the least likely experts",
    "near_tanh_logits": "a tanh between the router logits and the softmax",
    "near_softmax_axis0": "softmax over the tokens instead of the experts",
    "near_relu_expert": "expert 3 uses ReLU instead of SiLU (the experts are not one grouped FFN)",
    "near_weight_offset": "0.1 is added to the renormalised routing weights",
}


def near_misses():
    return {name: (why, unrolled(name)) for name, why in NEAR_MISSES.items()}
