#!/usr/bin/env python3
"""Build the standard benchmark layers as ONNX, without torch.

    mixtral_like_d1024.onnx   D=1024, F=2816, E=8, k=2, SwiGLU, softmax + renormalised top-2
    deepseek_like_e64.onnx    D=1024, F=512, E=64, k=6, sigmoid scores + correction bias,
                              group-limited (8 groups, top-2-sum score, 3 kept), renorm, scale 2.5,
                              shared experts (2 x 512 = one 1024-wide SwiGLU FFN)

Both are written the way exporters unroll a per-expert loop; moec recognises them.
Usage: python benchmarks/build_layers.py [-o benchmarks/models] [--small]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))


def _expert_loop(nodes, inits, x, ids, w, E, D, F, rng, acc0):
    """Per expert: select its tokens, SwiGLU FFN, scale by its weight, scatter-add into acc."""
    acc = acc0
    for e in range(E):
        p = f"e{e}_"
        inits[p + "id"] = np.array(e, np.int64)
        inits[p + "wg"] = (rng.standard_normal((D, F)) / np.sqrt(D)).astype(np.float32)
        inits[p + "wu"] = (rng.standard_normal((D, F)) / np.sqrt(D)).astype(np.float32)
        inits[p + "wd"] = (rng.standard_normal((F, D)) / np.sqrt(F)).astype(np.float32)
        nodes += [
            helper.make_node("Equal", [ids, p + "id"], [p + "mask"]),
            helper.make_node("Cast", [p + "mask"], [p + "maskf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [w, p + "maskf"], [p + "wk"]),
            helper.make_node("ReduceSum", [p + "wk", "ax1"], [p + "w"], keepdims=1),
            helper.make_node("ReduceMax", [p + "maskf", "ax1"], [p + "hitf"], keepdims=0),
            helper.make_node("Greater", [p + "hitf", "zero_f"], [p + "hitb"]),
            helper.make_node("NonZero", [p + "hitb"], [p + "nz"]),
            helper.make_node("Transpose", [p + "nz"], [p + "idx2"], perm=[1, 0]),
            helper.make_node("Squeeze", [p + "nz", "ax0"], [p + "idx"]),
            helper.make_node("Gather", [x, p + "idx"], [p + "xe"], axis=0),
            helper.make_node("Gather", [p + "w", p + "idx"], [p + "we"], axis=0),
            helper.make_node("MatMul", [p + "xe", p + "wg"], [p + "g"]),
            helper.make_node("Sigmoid", [p + "g"], [p + "sg"]),
            helper.make_node("Mul", [p + "g", p + "sg"], [p + "silu"]),
            helper.make_node("MatMul", [p + "xe", p + "wu"], [p + "u"]),
            helper.make_node("Mul", [p + "silu", p + "u"], [p + "h"]),
            helper.make_node("MatMul", [p + "h", p + "wd"], [p + "ye"]),
            helper.make_node("Mul", [p + "ye", p + "we"], [p + "yw"]),
            helper.make_node("ScatterND", [acc, p + "idx2", p + "yw"], [p + "acc"], reduction="add"),
        ]
        acc = p + "acc"
    return acc


def deepseek_like(D=1024, F=512, E=64, k=6, n_group=8, topk_group=3, scale=2.5, shared_f=1024, seed=0):
    rng = np.random.default_rng(seed)
    G = n_group
    inits = {
        "wr": (rng.standard_normal((D, E)) * 4 / np.sqrt(D)).astype(np.float32),
        "bias": (rng.standard_normal(E) * 0.1).astype(np.float32),
        "k": np.array([k], np.int64), "k2": np.array([2], np.int64), "kg": np.array([topk_group], np.int64),
        "ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64), "ax2": np.array([2], np.int64),
        "axm1": np.array([-1], np.int64), "zero_f": np.array(0.0, np.float32), "one_f": np.array(1.0, np.float32),
        "ninf": np.array(-np.inf, np.float32), "eps": np.array(1e-20, np.float32),
        "scale": np.array(scale, np.float32), "gshape": np.array([0, G, E // G], np.int64),
        "eshape": np.array([0, E], np.int64),
        "sg": (rng.standard_normal((D, shared_f)) / np.sqrt(D)).astype(np.float32),
        "su": (rng.standard_normal((D, shared_f)) / np.sqrt(D)).astype(np.float32),
        "sd": (rng.standard_normal((shared_f, D)) / np.sqrt(shared_f)).astype(np.float32),
    }
    n = [
        helper.make_node("MatMul", ["x", "wr"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["s"]),
        helper.make_node("Add", ["s", "bias"], ["c"]),
        helper.make_node("Reshape", ["c", "gshape"], ["cg"]),                       # [T, G, E/G]
        helper.make_node("TopK", ["cg", "k2"], ["cg2", "cg2i"], axis=-1),
        helper.make_node("ReduceSum", ["cg2", "axm1"], ["gs"], keepdims=0),          # [T, G]
        helper.make_node("TopK", ["gs", "kg"], ["gv", "gi"], axis=-1),
        helper.make_node("Mul", ["gs", "zero_f"], ["gz"]),
        helper.make_node("Add", ["gv", "one_f"], ["gv1"]),
        helper.make_node("Mul", ["gv1", "zero_f"], ["gv0"]),
        helper.make_node("Add", ["gv0", "one_f"], ["gones"]),
        helper.make_node("ScatterElements", ["gz", "gi", "gones"], ["gmask"], axis=1),  # [T, G] 0/1
        helper.make_node("Unsqueeze", ["gmask", "axm1"], ["gm3"]),
        helper.make_node("Expand", ["gm3", "gshape_full"], ["gm3e"]),
        helper.make_node("Reshape", ["gm3e", "eshape"], ["emask"]),                  # [T, E]
        helper.make_node("Equal", ["emask", "zero_f"], ["drop"]),
        helper.make_node("Where", ["drop", "ninf", "c"], ["cm"]),
        helper.make_node("TopK", ["cm", "k"], ["tv", "ids"], axis=-1),
        helper.make_node("GatherElements", ["s", "ids"], ["w0"], axis=1),
        helper.make_node("ReduceSum", ["w0", "ax1"], ["wsum"], keepdims=1),
        helper.make_node("Add", ["wsum", "eps"], ["wden"]),
        helper.make_node("Div", ["w0", "wden"], ["w1"]),
        helper.make_node("Mul", ["w1", "scale"], ["w"]),
        helper.make_node("Mul", ["x", "zero_f"], ["acc0"]),
    ]
    inits["gshape_full"] = np.array([1, G, E // G], np.int64)
    acc = _expert_loop(n, inits, "x", "ids", "w", E, D, F, rng, "acc0")
    n += [helper.make_node("MatMul", ["x", "sg"], ["shg"]), helper.make_node("Sigmoid", ["shg"], ["shs"]),
          helper.make_node("Mul", ["shg", "shs"], ["shsilu"]), helper.make_node("MatMul", ["x", "su"], ["shu"]),
          helper.make_node("Mul", ["shsilu", "shu"], ["shh"]), helper.make_node("MatMul", ["shh", "sd"], ["shy"]),
          helper.make_node("Add", [acc, "shy"], ["y"])]
    g = helper.make_graph(n, "deepseek_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", D])],
                          [numpy_helper.from_array(v, k_) for k_, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=os.path.join(HERE, "models"))
    ap.add_argument("--small", action="store_true", help="small sizes (for a quick check)")
    a = ap.parse_args()
    os.makedirs(a.output, exist_ok=True)
    from build_mixtral_like import build
    if a.small:
        mix, ds = build(hidden=64, ffn=96, experts=8, top_k=2), deepseek_like(D=64, F=32, E=16, k=4, n_group=4,
                                                                                 topk_group=2, shared_f=64)
    else:
        mix, ds = build(hidden=1024, ffn=2816, experts=8, top_k=2), deepseek_like()
    for name, m in (("mixtral_like_d1024", mix), ("deepseek_like_e64", ds)):
        path = os.path.join(a.output, name + ".onnx")
        onnx.save(m, path)
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
