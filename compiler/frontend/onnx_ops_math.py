"""ONNX converters: matrix products, reductions, normalisations."""
from __future__ import annotations

import numpy as np

from moec.ir import DType
from moec.frontend.onnx_import import converter


@converter("MatMul", since=1)
def _matmul(ctx, node, ins, attrs):
    return [ctx.emit1("moec.matmul", [ins[0], ins[1]])]


@converter("Gemm", since=7)
def _gemm(ctx, node, ins, attrs):
    ops = [ins[0], ins[1]] + ([ins[2]] if len(ins) > 2 and ins[2] is not None else [])
    return [ctx.emit1("moec.gemm", ops, {"alpha": attrs.get("alpha", 1.0), "beta": attrs.get("beta", 1.0),
                                         "trans_a": bool(attrs.get("transA", 0)),
                                         "trans_b": bool(attrs.get("transB", 0))})]


@converter("Einsum", since=12)
def _einsum(ctx, node, ins, attrs):
    return [ctx.emit1("moec.einsum", [v for v in ins if v is not None], {"equation": attrs["equation"]})]


# ReduceSum takes axes as an input from opset 13, the other reductions from opset 18.
_REDUCE = {"ReduceSum": ("sum", 13), "ReduceMean": ("mean", 18), "ReduceMax": ("max", 18), "ReduceMin": ("min", 18),
           "ReduceL1": ("l1", 18), "ReduceL2": ("l2", 18)}


def _reg_reduce(onnx_op, kind, axes_input_from):
    @converter(onnx_op, since=1)
    def conv(ctx, node, ins, attrs):
        x = ins[0]
        noop = bool(attrs.get("noop_with_empty_axes", 0))
        a = {"keepdims": bool(attrs.get("keepdims", 1)), "noop_with_empty_axes": noop}
        if kind not in ("max", "min") and x.type.dtype == DType.BOOL:
            raise ctx.unsupported(f"Reduce{kind.title()} on bool")
        if ctx.opset >= axes_input_from:
            axes_v = ins[1] if len(ins) > 1 else None
            c = ctx.const_value(axes_v)
            if axes_v is not None and c is None:  # axes computed at run time
                if axes_v.type.dtype != DType.I64:
                    axes_v = ctx.emit1("moec.cast", [axes_v], {"to": DType.I64})
                return [ctx.emit1(f"moec.reduce_{kind}", [x, axes_v], a)]
            axes = [] if c is None else [int(v) for v in np.asarray(c).reshape(-1)]
        else:
            axes = list(attrs.get("axes", []))
        if not axes and noop:
            return [x]
        return [ctx.emit1(f"moec.reduce_{kind}", [x], {**a, "axes": axes})]


for _op, (_kind, _from) in _REDUCE.items():
    _reg_reduce(_op, _kind, _from)


def _softmax_like(ir):
    def conv(ctx, node, ins, attrs):
        x = ins[0]
        if ctx.opset >= 13:
            return [ctx.emit1(ir, [x], {"axis": attrs.get("axis", -1)})]
        # before opset 13: softmax over the flattened dims [axis, rank)
        axis = attrs.get("axis", 1)
        r = x.type.rank
        a = axis + r if axis < 0 else axis
        if a == r - 1:
            return [ctx.emit1(ir, [x], {"axis": -1})]
        flat = ctx.emit1("moec.flatten", [x], {"axis": a})
        y = ctx.emit1(ir, [flat], {"axis": 1})
        shape = ctx.emit1("moec.shape", [x])
        return [ctx.emit1("moec.reshape", [y, shape], None, x.type)]
    return conv


converter("Softmax", since=1)(_softmax_like("moec.softmax"))
converter("LogSoftmax", since=1)(_softmax_like("moec.log_softmax"))


@converter("LayerNormalization", since=17)
def _layer_norm(ctx, node, ins, attrs):
    if attrs.get("stash_type", 1) != 1:
        raise ctx.unsupported(f"stash_type={attrs['stash_type']} (moec computes statistics in f32 or wider)")
    ops = [ins[0], ins[1]] + ([ins[2]] if len(ins) > 2 and ins[2] is not None else [])
    y, mean, inv = ctx.emit("moec.layer_norm", ops, {"axis": attrs.get("axis", -1),
                                                    "epsilon": attrs.get("epsilon", 1e-5)})
    return [y, mean, inv]


@converter("RMSNormalization", since=23)
def _rms_norm(ctx, node, ins, attrs):
    if attrs.get("stash_type", 1) != 1:
        raise ctx.unsupported(f"stash_type={attrs['stash_type']}")
    return [ctx.emit1("moec.rms_norm", [ins[0], ins[1]], {"axis": attrs.get("axis", -1),
                                                          "epsilon": attrs.get("epsilon", 1e-5)})]


@converter("ReduceLogSumExp", since=1)
def _reduce_logsumexp(ctx, node, ins, attrs):
    """log(sum(exp(x))) over the axes, computed as m + log(sum(exp(x - m))) with m the max over the axes (0 where
    that max is infinite: a row of -inf gives -inf, a +inf gives +inf, a NaN stays NaN), so large inputs do not
    overflow; every step an IR op with its own reference semantics and kernels (Inkling's router: the
    softmax over logsigmoid of the chosen logits, torch.logsumexp in both torch.onnx exports).  Axes as an
    input from opset 18, an attribute before; noop_with_empty_axes and keepdims as for the other reductions."""
    x = ins[0]
    if not x.type.dtype.is_float:
        raise ctx.unsupported(f"input type {x.type.dtype} (ReduceLogSumExp takes a float tensor)")
    noop = bool(attrs.get("noop_with_empty_axes", 0))
    keep = bool(attrs.get("keepdims", 1))
    if ctx.opset >= 18:
        axes_v = ins[1] if len(ins) > 1 else None
        c = ctx.const_value(axes_v)
        if axes_v is not None and c is None:  # axes computed at run time
            if axes_v.type.dtype != DType.I64:
                axes_v = ctx.emit1("moec.cast", [axes_v], {"to": DType.I64})
            axes, extra = None, [axes_v]
        else:
            axes, extra = ([] if c is None else [int(v) for v in np.asarray(c).reshape(-1)]), []
    else:
        axes, extra = list(attrs.get("axes", [])), []
    if axes == [] and noop:
        return [x]

    def reduce(kind, v, keepdims):
        a = {"keepdims": keepdims, "noop_with_empty_axes": noop}
        return ctx.emit1(f"moec.reduce_{kind}", [v] + extra, a if axes is None else {**a, "axes": axes})
    dt = x.type.dtype.np
    m = reduce("max", x, True)
    inf = ctx.emit1("moec.equal", [ctx.emit1("moec.abs", [m]), ctx.const(np.array(np.inf, dt))])
    m0 = ctx.emit1("moec.select", [inf, ctx.const(np.array(0, dt)), m])
    s = reduce("sum", ctx.emit1("moec.exp", [ctx.emit1("moec.sub", [x, m0])]), keep)
    # (without keepdims, the reduced axes of m0 -- each of size 1 -- dropped by a max over them)
    return [ctx.emit1("moec.add", [ctx.emit1("moec.log", [s]), m0 if keep else reduce("max", m0, False)])]
