"""onnxruntime contrib ops: com.microsoft.MoE imported directly into moec's MoE ops.

Semantics as the installed onnxruntime implements them (checked numerically in the tests):
router_probs are logits (softmax inside), top-k with lowest-index ties, optional renormalisation,
fc1 [E, I, D] and fc2 [E, D, F] with rows as output features, activation "gelu" is the tanh
approximation, SwiGLU: G = min(g, limit), U = clamp(u, -limit, limit), G * sigmoid(alpha G) * (U + beta),
with gate/up interleaved (swiglu_fusion=1), concatenated (2), or in fc1/fc3 (0).
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.moe import record_moe_layer
from .onnx_import import converter

_ACT = {"relu": "relu", "gelu": "gelu_tanh", "silu": "silu", "identity": "identity", "swiglu": "swiglu"}


@converter("MoE", domain="com.microsoft")
def _moe(ctx, node, ins, attrs):
    ins = list(ins) + [None] * (8 - len(ins))
    x, router, fc1, b1, fc2, b2, fc3, b3 = ins[:8]
    act = attrs.get("activation_type", "relu")
    if act not in _ACT:
        raise ctx.unsupported(f"activation_type '{act}' (supported: {', '.join(_ACT)})")
    if attrs.get("use_sparse_mixer", 0):
        raise ctx.unsupported("use_sparse_mixer=1 (sparsemixer routing) is not supported")
    k = int(attrs.get("k", 1))
    fusion = int(attrs.get("swiglu_fusion", 0))
    if x.type.rank != 2:
        raise ctx.unsupported(f"input of rank {x.type.rank}: only the 2-D packed-token form [T, D] is supported; "
                              "reshape the input to [tokens, hidden] before the MoE node")
    w1 = ctx.require_const(fc1, "fc1_experts_weights")
    w2 = ctx.require_const(fc2, "fc2_experts_weights")
    bias1 = None if b1 is None else ctx.require_const(b1, "fc1_experts_bias")
    bias2 = None if b2 is None else ctx.require_const(b2, "fc2_experts_bias")
    E, D, F = w2.shape[0], w2.shape[1], w2.shape[2]
    layout = "concat"
    if act == "swiglu":
        if fusion == 0:
            if fc3 is None:
                raise ctx.error("swiglu with swiglu_fusion=0 needs fc3_experts_weights (the up projection)")
            w3 = ctx.require_const(fc3, "fc3_experts_weights")
            w1 = np.concatenate([w1, w3], axis=1)
            if bias1 is not None or b3 is not None:
                z = np.zeros((E, F), w1.dtype)
                bias1 = np.concatenate([z if bias1 is None else bias1,
                                        z if b3 is None else ctx.require_const(b3, "fc3_experts_bias")], axis=1)
        elif fusion == 1:
            layout = "interleaved"
        elif fusion != 2:
            raise ctx.unsupported(f"swiglu_fusion={fusion}")
    elif fc3 is not None:
        raise ctx.unsupported(f"fc3_experts_weights with activation_type '{act}' is not supported")
    if w1.shape != (E, (2 * F if act == "swiglu" else F), D):
        raise ctx.error(f"fc1_experts_weights has shape {list(w1.shape)}, expected "
                        f"{[E, 2 * F if act == 'swiglu' else F, D]} for fc2 {list(w2.shape)}")
    limit = float(attrs.get("swiglu_limit", float("inf")))
    ffn = {"activation": _ACT[act], "gate_layout": layout, "alpha": float(attrs.get("activation_alpha", 1.0)),
           "beta": float(attrs.get("activation_beta", 0.0)), "limit": limit}
    norm = "sum" if attrs.get("normalize_routing_weights", 0) else "none"
    w, ids = ctx.emit("moe.route", [router], {"k": k, "scoring": "softmax", "norm": norm})
    order, offsets = ctx.emit("moe.dispatch", [ids], {"num_experts": E})
    extra = []
    if bias1 is not None:
        extra.append(ctx.const(bias1, "fc1_bias"))
    if bias2 is not None:
        extra.append(ctx.const(bias2, "fc2_bias"))
    ye = ctx.emit1("moe.experts", [x, ids, order, offsets, ctx.const(w1, "fc1"), ctx.const(w2, "fc2")] + extra,
                   {**ffn, "has_b_in": bias1 is not None, "has_b_out": bias2 is not None})
    name = record_moe_layer(ctx.module, {
        "family": "onnxruntime.MoE", "source": "com.microsoft.MoE",
        "routing": {"scoring": "softmax", "k": k, "norm": norm},
        "E": int(E), "k": k, "D": int(D), "F": int(F), "activation": ffn["activation"],
        "shared_experts": 0, "replaced_nodes": [node.name or "MoE"]})
    y = ctx.emit1("moe.combine", [ye, w], {"weighted": True, "layer": name})
    return [y]
