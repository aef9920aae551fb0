"""onnxruntime contrib ops: com.microsoft.MoE imported directly into moec's MoE ops.

Semantics as onnxruntime's CPU kernels implement them (checked numerically in the tests, ties and
non-finite router rows included):
MoE: router_probs are logits; softmax over all E in f32, top-k of the probabilities with ties to the
highest index (the kernel sorts (probability, index) pairs descending), optional renormalisation over
the k; a slot whose weight is not > 0 (NaN included) is skipped, so a row with a NaN or +Inf logit, or
all -Inf, outputs 0.  QMoE: top-k of the raw logits (ties to the highest index), the weights are the
softmax over the k selected whatever normalize_routing_weights says, slots with weight <= 1e-8 skipped.
Both become moe.route attributes (tie=high, drop, min_weight); ONNX TopK models keep tie=low.

fc1 [E, I, D] and fc2 [E, D, F] with rows as output features, activation "gelu" is the tanh
approximation, SwiGLU: G = min(g, limit), U = clamp(u, -limit, limit), G * sigmoid(alpha G) * (U + beta),
with gate/up interleaved (swiglu_fusion=1), concatenated (2), or in fc1/fc3 (0).
"""
from __future__ import annotations

import numpy as np

from moec.ir.ops.moe import record_moe_layer
from moec.frontend.onnx_import import converter

_ACT = {"relu": "relu", "gelu": "gelu_tanh", "silu": "silu", "identity": "identity", "swiglu": "swiglu"}


def _ort_schema(op_type: str):
    """onnxruntime's schema of com.microsoft.``op_type`` (onnx's checker knows no contrib op), or None."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as C
        return next((x for x in C.get_all_operator_schema() if x.domain == "com.microsoft" and x.name == op_type),
                    None)
    except Exception:  # noqa: BLE001 - an onnxruntime without schemas: the converter's own checks remain
        return None


def _check_contrib_node(ctx, node) -> None:
    """What onnx's checker does for standard ops, from onnxruntime's schema: inputs within the formal
    list with the required ones present, one output at least, every attribute known and of its kind."""
    from onnx import AttributeProto
    sch = _ort_schema(node.op_type)
    if sch is None:
        return
    formal = list(sch.inputs)
    if len(node.input) > len(formal):
        raise ctx.error(f"{len(node.input)} inputs; com.microsoft.{node.op_type} takes at most {len(formal)}")
    for i, f in enumerate(formal):
        optional = str(f.option).endswith("Optional")
        if not optional and (i >= len(node.input) or node.input[i] == ""):
            raise ctx.error(f"required input #{i} '{f.name}' is missing")
    if not len(node.output) or node.output[0] == "" or len(node.output) > max(1, len(sch.outputs)):
        raise ctx.error(f"com.microsoft.{node.op_type} has {len(sch.outputs)} output(s); the node has "
                        f"{len(node.output)}")
    for a in node.attribute:
        want = sch.attributes.get(a.name)
        if want is None:
            raise ctx.error(f"attribute '{a.name}' is not an attribute of com.microsoft.{node.op_type}")
        kind = AttributeProto.AttributeType.Name(a.type) if a.type in AttributeProto.AttributeType.values() \
            else str(a.type)
        if str(want.type).split(".")[-1] != kind:
            raise ctx.error(f"attribute '{a.name}' is {kind}; com.microsoft.{node.op_type} takes "
                            f"{str(want.type).split('.')[-1]}")


def _check_ranks(ctx, x, router, weights) -> None:
    """x [T, D], router_probs [T, E], expert weights [E, rows, cols] (weights: (array or None, name))."""
    if x.type.rank != 2:
        raise ctx.unsupported(f"input of rank {x.type.rank}: only the 2-D packed-token form [T, D] is supported; "
                              "reshape the input to [tokens, hidden] before the MoE node")
    if router is None or router.type.rank != 2:
        raise ctx.error(f"router_probs must be [tokens, experts], got {None if router is None else router.type}")
    for w, what in weights:
        if w is not None and np.ndim(w) != 3:
            raise ctx.error(f"{what} must be 3-D [experts, rows, columns], got shape {list(np.shape(w))}")


@converter("MoE", domain="com.microsoft")
def _moe(ctx, node, ins, attrs):
    _check_contrib_node(ctx, node)
    ins = list(ins) + [None] * (8 - len(ins))
    x, router, fc1, b1, fc2, b2, fc3, b3 = ins[:8]
    w1 = ctx.require_const(fc1, "fc1_experts_weights")
    w2 = ctx.require_const(fc2, "fc2_experts_weights")
    w3 = None if fc3 is None else ctx.require_const(fc3, "fc3_experts_weights")
    _check_ranks(ctx, x, router, [(w1, "fc1_experts_weights"), (w2, "fc2_experts_weights"),
                                  (w3, "fc3_experts_weights")])
    return _build_moe(ctx, node, x, router, w1, b1, w2, b2, w3, b3, attrs, "com.microsoft.MoE")


def _build_moe(ctx, node, x, router, w1, b1, w2, b2, w3, b3, attrs, source, q=None, note=None):
    """``q``: weights kept quantised (from QMoE): {"mode": "int8" | "int4", "group": G (0: per row),
    "s": [s1, s2, s3], "z": [z1, z2, z3] or None}; w1/w2/w3 are then moec's stored formats (int8
    [E, N, K]; int4 packed ui8 [E, N, K/2]) with scales [E, N] (int8) or [E, N, K/G] (int4)."""
    act = attrs.get("activation_type", "relu")
    dt = x.type.dtype.np
    if q is None:
        w1, w2 = np.asarray(w1).astype(dt), np.asarray(w2).astype(dt)
        w3 = None if w3 is None else np.asarray(w3).astype(dt)
    s1, s2, s3 = q["s"] if q else (None, None, None)
    z1, z2, z3 = q["z"] if q and q["z"] else (None, None, None)
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
    pk = 2 if q and q["mode"] == "int4" else 1  # values per stored element along K
    E, D, F = w2.shape[0], w2.shape[1], w2.shape[2] * pk
    layout = "concat"
    if act == "swiglu":
        if fusion == 0:
            if fc3 is None:
                raise ctx.error("swiglu with swiglu_fusion=0 needs fc3_experts_weights (the up projection)")
            w1 = np.concatenate([w1, w3], axis=1)
            if q:
                s1 = np.concatenate([s1, s3], axis=1)
                z1 = None if z1 is None else np.concatenate([z1, z3], axis=1)
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
    if (w1.shape[0], w1.shape[1], w1.shape[2] * pk) != (E, (2 * F if act == "swiglu" else F), D):
        raise ctx.error(f"fc1_experts_weights hold {[w1.shape[0], w1.shape[1], w1.shape[2] * pk]} values, expected "
                        f"{[E, 2 * F if act == 'swiglu' else F, D]} for fc2 {[E, D, F]}")
    limit = float(attrs.get("swiglu_limit", float("inf")))
    ffn = {"activation": _ACT[act], "gate_layout": layout, "alpha": float(attrs.get("activation_alpha", 1.0)),
           "beta": float(attrs.get("activation_beta", 0.0)), "limit": limit}
    if k < 1 or (isinstance(E, int) and k > E):
        raise ctx.error(f"k={k} must be in [1, {E}] (the number of experts)")
    if source == "com.microsoft.QMoE":
        # top-k of the logits, then the softmax of the k selected (always normalised); weights <= 1e-8 skipped
        routing = {"scoring": "none", "post": "softmax", "norm": "none",
                   "min_weight": float(np.float32(1e-8))}
    else:
        # softmax over all experts, top-k of the probabilities, optional renormalisation; weights <= 0 skipped
        routing = {"scoring": "softmax", "norm": "sum" if attrs.get("normalize_routing_weights", 0) else "none",
                   "min_weight": 0.0}
    norm = routing["norm"]
    w, ids = ctx.emit("moe.route", [router], {"k": k, **routing, "tie": "high", "drop": True})
    order, offsets = ctx.emit("moe.dispatch", [ids], {"num_experts": E})
    extra = []
    if bias1 is not None:
        extra.append(ctx.const(bias1, "fc1_bias"))
    if bias2 is not None:
        extra.append(ctx.const(bias2, "fc2_bias"))
    qattrs, qops, winfo = {}, [], note
    if q:
        qattrs = {"wq": q["mode"], "wq_group": q["group"] if q["mode"] == "int4" else 0, "wq_zp": z1 is not None}
        qops = [ctx.const(np.ascontiguousarray(s1, np.float32), "fc1_scales"),
                ctx.const(np.ascontiguousarray(s2, np.float32), "fc2_scales")]
        if z1 is not None:
            qops += [ctx.const(np.ascontiguousarray(z1, np.float32), "fc1_zero_points"),
                     ctx.const(np.ascontiguousarray(z2, np.float32), "fc2_zero_points")]
        winfo = {"mode": q["mode"], "source": "kept quantised from com.microsoft.QMoE",
                 **({"group": q["group"] or "row", "zero_point": z1 is not None} if q["mode"] == "int4" else {})}
    ye = ctx.emit1("moe.experts", [x, ids, order, offsets, ctx.const(np.ascontiguousarray(w1), "fc1"),
                                   ctx.const(np.ascontiguousarray(w2), "fc2")] + extra + qops,
                   {**ffn, "has_b_in": bias1 is not None, "has_b_out": bias2 is not None, **qattrs})
    name = record_moe_layer(ctx.module, {
        "family": "onnxruntime.MoE", "source": source,
        "routing": {**{a: v for a, v in routing.items() if a != "min_weight"}, "k": k, "tie": "high",
                    "drop_weights_at_most": routing["min_weight"]},
        "E": int(E), "k": k, "D": int(D), "F": int(F), "activation": ffn["activation"],
        "shared_experts": 0, "replaced_nodes": [node.name or "MoE"], **({"weights": winfo} if winfo else {})})
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


def _keep_quantised(ctx, wq, scales, zp, bits, block, K, what):
    """QMoE weights in moec's stored formats, or (None, reason) when they do not map exactly.

    8 bits per channel with the default zero point 128: q - 128 is moec's symmetric int8.  4 bits,
    per channel or per block: the bytes are moec's int4 layout (low nibble first); the default zero
    point 8 is moec's symmetric int4, explicit zero points become moec's per-group zero points."""
    E, N = wq.shape[0], wq.shape[1]
    s = np.asarray(scales, np.float32)
    if bits == 8:
        if block:
            return None, "block-wise 8-bit weights"
        if zp is not None and np.any(_unpack(zp, 8, N) != 128):
            return None, "8-bit zero points other than 128"
        if s.shape != (E, N):
            raise ctx.error(f"{what} scales have shape {list(s.shape)}, expected {[E, N]}")
        q = (np.asarray(wq, np.uint8)[..., :K].astype(np.int16) - 128).astype(np.int8)
        return (q, s, None), None
    nb = K // block if block else 1
    if s.shape != ((E, N, nb) if block else (E, N)):
        raise ctx.error(f"{what} scales have shape {list(s.shape)}, expected {[E, N, nb] if block else [E, N]}")
    if K % 2:
        return None, f"odd K ({K}) with 4-bit weights"
    q = np.ascontiguousarray(np.asarray(wq, np.uint8)[..., :K // 2])
    z = None
    if zp is not None:
        z = (_unpack(zp, 4, nb) if block else _unpack(zp, 4, N)[..., None]).astype(np.float32).reshape(E, N, nb)
    return (q, s.reshape(E, N, nb), z), None


@converter("QMoE", domain="com.microsoft")
def _qmoe(ctx, node, ins, attrs):
    """Quantised experts.  Weights that moec's int8/int4 formats hold exactly stay quantised (the
    kernels dequantise in registers); other layouts are imported dequantised (dequantise-then-compute
    is the op's semantics either way), with the reason in the layer record."""
    _check_contrib_node(ctx, node)
    ins = list(ins) + [None] * (21 - len(ins))
    x, router = ins[0], ins[1]
    _check_ranks(ctx, x, router, [(ctx.require_const(ins[i], f"{w}_experts_weights"), f"{w}_experts_weights")
                                  for i, w in ((2, "fc1"), (5, "fc2"), (8, "fc3")) if ins[i] is not None])
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
    if bits1 == bits2 and x.type.dtype.np == np.float32:
        parts, why = [], None
        specs = [(ins[2], ins[3], 11, D, "fc1"), (ins[5], ins[6], 12, F, "fc2")]
        if ins[8] is not None:
            specs.append((ins[8], ins[9], 13, D, "fc3"))
        for wi, si, zi, K, what in specs:
            got, why = _keep_quantised(ctx, ctx.require_const(wi, f"{what}_experts_weights"),
                                       ctx.require_const(si, f"{what}_scales"), zp(zi), bits1, block, K, what)
            if why:
                break
            parts.append(got)
        if why is None and len({p[2] is None for p in parts}) == 1:
            (w1, s1, z1), (w2, s2, z2) = parts[:2]
            w3, s3, z3 = parts[2] if len(parts) > 2 else (None, None, None)
            q = {"mode": "int8" if bits1 == 8 else "int4", "group": block, "s": [s1, s2, s3],
                 "z": [z1, z2, z3] if z1 is not None else None}
            return _build_moe(ctx, node, x, router, w1, ins[4], w2, ins[7], w3, ins[10], attrs,
                              "com.microsoft.QMoE", q)
        note = {"mode": "f32", "source": f"dequantised from com.microsoft.QMoE: {why or 'mixed zero points'} "
                                          "has no exact moec format"}
    else:
        note = {"mode": "f32", "source": "dequantised from com.microsoft.QMoE: "
                                         + ("fc1/fc2 bit widths differ" if bits1 != bits2 else "non-f32 activations")}
    w1 = _dequantize(ctx, w1q, ctx.require_const(ins[3], "fc1_scales"), zp(11), bits1, block, D, "fc1")
    w2 = _dequantize(ctx, w2q, ctx.require_const(ins[6], "fc2_scales"), zp(12), bits2, block, F, "fc2")
    w3 = None
    if ins[8] is not None:
        w3 = _dequantize(ctx, ctx.require_const(ins[8], "fc3_experts_weights"), ctx.require_const(ins[9], "fc3_scales"),
                         zp(13), bits1, block, D, "fc3")
    return _build_moe(ctx, node, x, router, w1, ins[4], w2, ins[7], w3, ins[10], attrs, "com.microsoft.QMoE",
                      note=note)
