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
    w1 = ctx.require_const(fc1, "fc1_experts_weights")
    w2 = ctx.require_const(fc2, "fc2_experts_weights")
    w3 = None if fc3 is None else ctx.require_const(fc3, "fc3_experts_weights")
    return _build_moe(ctx, node, x, router, w1, b1, w2, b2, w3, b3, attrs, "com.microsoft.MoE")


def _build_moe(ctx, node, x, router, w1, b1, w2, b2, w3, b3, attrs, source):
    act = attrs.get("activation_type", "relu")
    dt = x.type.dtype.np
    w1, w2 = np.asarray(w1).astype(dt), np.asarray(w2).astype(dt)
    w3 = None if w3 is None else np.asarray(w3).astype(dt)
    if act not in _ACT:
        raise ctx.unsupported(f"activation_type '{act}' (supported: {', '.join(_ACT)})")
    if attrs.get("use_sparse_mixer", 0):
        raise ctx.unsupported("use_sparse_mixer=1 (sparsemixer routing) is not supported")
    k = int(attrs.get("k", 1))
    fusion = int(attrs.get("swiglu_fusion", 0))
    if x.type.rank != 2:
        raise ctx.unsupported(f"input of rank {x.type.rank}: only the 2-D packed-token form [T, D] is supported; "
                              "reshape the input to [tokens, hidden] before the MoE node")
    fc3 = w3
    bias1 = None if b1 is None else ctx.require_const(b1, "fc1_experts_bias")
    bias2 = None if b2 is None else ctx.require_const(b2, "fc2_experts_bias")
    E, D, F = w2.shape[0], w2.shape[1], w2.shape[2]
    layout = "concat"
    if act == "swiglu":
        if fusion == 0:
            if fc3 is None:
                raise ctx.error("swiglu with swiglu_fusion=0 needs fc3_experts_weights (the up projection)")
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
        "family": "onnxruntime.MoE", "source": source,
        "routing": {"scoring": "softmax", "k": k, "norm": norm},
        "E": int(E), "k": k, "D": int(D), "F": int(F), "activation": ffn["activation"],
        "shared_experts": 0, "replaced_nodes": [node.name or "MoE"]})
    y = ctx.emit1("moe.combine", [ye, w], {"weighted": True, "layer": name})
    return [y]


def _unpack(q: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Unsigned values from bytes packed along the last axis, low nibble first (4-bit)."""
    q = np.asarray(q, np.uint8)
    if bits == 8:
        return q[..., :n].astype(np.int32)
    lo, hi = q & 0x0F, q >> 4
    out = np.stack([lo, hi], axis=-1).reshape(q.shape[:-1] + (q.shape[-1] * 2,))
    return out[..., :n].astype(np.int32)


def _dequantize(ctx, w, scales, zp, bits, block, K, what):
    """QMoE weights [E, N, K*bits/8] -> float [E, N, K]: (q - zero_point) * scale, per output
    channel or per block of ``block`` inputs."""
    E, N = w.shape[0], w.shape[1]
    q = _unpack(w, bits, K)
    s = np.asarray(scales, np.float32)
    if block:
        nb = K // block
        if s.shape != (E, N, nb):
            raise ctx.error(f"{what} scales have shape {list(s.shape)}, expected {[E, N, nb]}")
        z = (np.full((E, N, nb), 2 ** (bits - 1), np.int32) if zp is None else _unpack(zp, bits, nb))
        qb = q.reshape(E, N, nb, block)
        return ((qb - z[..., None]) * s[..., None]).reshape(E, N, K).astype(np.float32)
    if s.shape != (E, N):
        raise ctx.error(f"{what} scales have shape {list(s.shape)}, expected {[E, N]}")
    z = np.full((E, N), 2 ** (bits - 1), np.int32) if zp is None else _unpack(zp, bits, N)
    return ((q - z[..., None]) * s[..., None]).astype(np.float32)


@converter("QMoE", domain="com.microsoft")
def _qmoe(ctx, node, ins, attrs):
    """Quantised experts, imported by dequantising (the reference semantics of a quantised op);
    the weights stay quantised in the kernels once the quantisation pass lands."""
    ins = list(ins) + [None] * (21 - len(ins))
    x, router = ins[0], ins[1]
    if attrs.get("quant_type", "int") != "int":
        raise ctx.unsupported(f"quant_type '{attrs['quant_type']}' (only integer quantisation)")
    if any(ins[i] is not None for i in range(14, 21)):
        raise ctx.unsupported("router_weights, global or activation scales are not supported")
    if attrs.get("weights_prepacked", 0) == 1:
        raise ctx.unsupported("weights_prepacked=1 (prepacked layouts are runtime specific)")
    bits = int(attrs.get("expert_weight_bits", 4))
    bits1 = int(attrs.get("fc1_expert_weight_bits", bits))
    bits2 = int(attrs.get("fc2_expert_weight_bits", bits))
    block = int(attrs.get("block_size", 0))
    for b in (bits1, bits2):
        if b not in (4, 8):
            raise ctx.unsupported(f"{b}-bit expert weights (supported: 4, 8)")
        if b == 8 and block:
            raise ctx.unsupported("block-wise 8-bit experts: onnxruntime computes them with int8 activations, "
                                  "which moec does not reproduce yet; use per-channel 8-bit or 4-bit blocks")
    D = x.type.shape[-1]
    if not isinstance(D, int):
        raise ctx.unsupported("the hidden size must be static")
    w1q = ctx.require_const(ins[2], "fc1_experts_weights")
    w2q = ctx.require_const(ins[5], "fc2_experts_weights")
    F = w2q.shape[2] * 8 // bits2
    zp = lambda i: None if ins[i] is None else ctx.require_const(ins[i], "zero points")  # noqa: E731
    w1 = _dequantize(ctx, w1q, ctx.require_const(ins[3], "fc1_scales"), zp(11), bits1, block, D, "fc1")
    w2 = _dequantize(ctx, w2q, ctx.require_const(ins[6], "fc2_scales"), zp(12), bits2, block, F, "fc2")
    w3 = None
    if ins[8] is not None:
        w3 = _dequantize(ctx, ctx.require_const(ins[8], "fc3_experts_weights"), ctx.require_const(ins[9], "fc3_scales"),
                         zp(13), bits1, block, D, "fc3")
    return _build_moe(ctx, node, x, router, w1, ins[4], w2, ins[7], w3, ins[10], attrs, "com.microsoft.QMoE")
