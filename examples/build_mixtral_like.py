#!/usr/bin/env python3
"""Build a small Mixtral-like MoE layer as ONNX, the way PyTorch exporters unroll it (no torch needed).

    router:  logits = x @ W_r;  p = softmax(logits);  (w, ids) = topk(p, k);  w = w / sum(w)
    experts: for each expert e (unrolled): tokens routed to e are gathered (Equal/NonZero/Gather),
             y_e = (silu(x_e @ W_gate[e]) * (x_e @ W_up[e])) @ W_down[e], scaled by their routing weight,
             and scatter-added (ScatterND reduction=add) into the output.

Usage: python examples/build_mixtral_like.py [-o examples/mixtral_like.onnx] [--hidden 64] [--ffn 128]
       [--experts 8] [--top-k 2] [--seed 0]
The token count is a dynamic dimension "T".
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(hidden=64, ffn=128, experts=8, top_k=2, seed=0, opset=18) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    D, F, E, K = hidden, ffn, experts, top_k
    inits = {
        "router_w": (rng.standard_normal((D, E)) / np.sqrt(D)).astype(np.float32),
        "k": np.array([K], np.int64),
        "ax1": np.array([1], np.int64),
        "ax0": np.array([0], np.int64),
        "zero_f": np.array(0.0, np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "router_w"], ["logits"], name="router"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="router_softmax"),
        helper.make_node("TopK", ["probs", "k"], ["topk_w_raw", "topk_ids"], axis=-1, name="router_topk"),
        helper.make_node("ReduceSum", ["topk_w_raw", "ax1"], ["topk_sum"], keepdims=1, name="renorm_sum"),
        helper.make_node("Div", ["topk_w_raw", "topk_sum"], ["topk_w"], name="renorm_div"),
        # output accumulator: zeros like x
        helper.make_node("Mul", ["x", "zero_f"], ["acc_0"], name="acc_init"),
    ]
    for e in range(E):
        p = f"e{e}_"
        inits[p + "id"] = np.array(e, np.int64)
        inits[p + "w_gate"] = (rng.standard_normal((D, F)) / np.sqrt(D)).astype(np.float32)
        inits[p + "w_up"] = (rng.standard_normal((D, F)) / np.sqrt(D)).astype(np.float32)
        inits[p + "w_down"] = (rng.standard_normal((F, D)) / np.sqrt(F)).astype(np.float32)
        nodes += [
            helper.make_node("Equal", ["topk_ids", p + "id"], [p + "mask"], name=p + "mask"),
            helper.make_node("Cast", [p + "mask"], [p + "maskf"], to=TensorProto.FLOAT, name=p + "maskf"),
            helper.make_node("Mul", ["topk_w", p + "maskf"], [p + "wk"], name=p + "wk"),
            helper.make_node("ReduceSum", [p + "wk", "ax1"], [p + "w"], keepdims=1, name=p + "w"),
            helper.make_node("ReduceMax", [p + "maskf", "ax1"], [p + "hitf"], keepdims=0, name=p + "hit"),
            helper.make_node("Greater", [p + "hitf", "zero_f"], [p + "hitb"], name=p + "hitb"),
            helper.make_node("NonZero", [p + "hitb"], [p + "nz"], name=p + "nonzero"),
            helper.make_node("Transpose", [p + "nz"], [p + "idx2"], perm=[1, 0], name=p + "idx2"),
            helper.make_node("Squeeze", [p + "nz", "ax0"], [p + "idx"], name=p + "idx"),
            helper.make_node("Gather", ["x", p + "idx"], [p + "xe"], axis=0, name=p + "gather_x"),
            helper.make_node("Gather", [p + "w", p + "idx"], [p + "we"], axis=0, name=p + "gather_w"),
            helper.make_node("MatMul", [p + "xe", p + "w_gate"], [p + "g"], name=p + "gate"),
            helper.make_node("Sigmoid", [p + "g"], [p + "sg"], name=p + "sigmoid"),
            helper.make_node("Mul", [p + "g", p + "sg"], [p + "silu"], name=p + "silu"),
            helper.make_node("MatMul", [p + "xe", p + "w_up"], [p + "u"], name=p + "up"),
            helper.make_node("Mul", [p + "silu", p + "u"], [p + "h"], name=p + "act"),
            helper.make_node("MatMul", [p + "h", p + "w_down"], [p + "ye"], name=p + "down"),
            helper.make_node("Mul", [p + "ye", p + "we"], [p + "yw"], name=p + "scale"),
            helper.make_node("ScatterND", [f"acc_{e}", p + "idx2", p + "yw"], [f"acc_{e + 1}"], reduction="add",
                             name=p + "combine"),
        ]
    nodes.append(helper.make_node("Identity", [f"acc_{E}"], ["y"], name="output"))
    graph = helper.make_graph(
        nodes, "mixtral_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", D])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="moec-examples")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("-o", "--output", default=os.path.join(here, "mixtral_like.onnx"))
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=128)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    m = build(a.hidden, a.ffn, a.experts, a.top_k, a.seed)
    onnx.save(m, a.output)
    print(f"wrote {a.output}: D={a.hidden} F={a.ffn} E={a.experts} k={a.top_k}, {len(m.graph.node)} nodes")


if __name__ == "__main__":
    main()
