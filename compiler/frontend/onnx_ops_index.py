"""ONNX converters: indexing ops."""
from __future__ import annotations

import numpy as np

from moec.ir import DType
from moec.frontend.onnx_import import converter


def _reduction(ctx, attrs):
    r = attrs.get("reduction", "none")
    if r not in ("none", "add", "mul", "max", "min"):
        raise ctx.unsupported(f"reduction='{r}'")
    return r


@converter("Gather", since=1)
def _gather(ctx, node, ins, attrs):
    return [ctx.emit1("moec.gather", [ins[0], ins[1]], {"axis": attrs.get("axis", 0)})]


@converter("GatherElements", since=11)
def _gather_elements(ctx, node, ins, attrs):
    return [ctx.emit1("moec.gather_elements", [ins[0], ins[1]], {"axis": attrs.get("axis", 0)})]


@converter("GatherND", since=11)
def _gather_nd(ctx, node, ins, attrs):
    return [ctx.emit1("moec.gather_nd", [ins[0], ins[1]], {"batch_dims": attrs.get("batch_dims", 0)})]


@converter("ScatterElements", since=11)
def _scatter_elements(ctx, node, ins, attrs):
    return [ctx.emit1("moec.scatter_elements", [ins[0], ins[1], ins[2]],
                      {"axis": attrs.get("axis", 0), "reduction": _reduction(ctx, attrs)})]


@converter("Scatter", since=9)
def _scatter(ctx, node, ins, attrs):
    if ctx.opset >= 11:
        raise ctx.unsupported("Scatter is deprecated at this opset; use ScatterElements")
    return _scatter_elements(ctx, node, ins, attrs)


@converter("ScatterND", since=11)
def _scatter_nd(ctx, node, ins, attrs):
    return [ctx.emit1("moec.scatter_nd", [ins[0], ins[1], ins[2]], {"reduction": _reduction(ctx, attrs)})]


@converter("NonZero", since=9)
def _nonzero(ctx, node, ins, attrs):
    return [ctx.emit1("moec.nonzero", [ins[0]])]


@converter("OneHot", since=9)
def _one_hot(ctx, node, ins, attrs):
    return [ctx.emit1("moec.one_hot", [ins[0], ins[1], ins[2]], {"axis": attrs.get("axis", -1)})]


@converter("CumSum", since=11)
def _cumsum(ctx, node, ins, attrs):
    return [ctx.emit1("moec.cumsum", [ins[0], ins[1]], {"exclusive": bool(attrs.get("exclusive", 0)),
                                                 "reverse": bool(attrs.get("reverse", 0))})]


@converter("TopK", since=1)
def _topk(ctx, node, ins, attrs):
    if ctx.opset < 10:
        k = ctx.const(np.array([attrs["k"]], np.int64))
    else:
        k = ins[1]
        if k.type.dtype != DType.I64:
            k = ctx.emit1("moec.cast", [k], {"to": DType.I64})
    v, i = ctx.emit("moec.topk", [ins[0], k], {"axis": attrs.get("axis", -1),
                                               "largest": bool(attrs.get("largest", 1)),
                                               "sorted": bool(attrs.get("sorted", 1))})
    return [v, i]


def _arg(ir):
    def conv(ctx, node, ins, attrs):
        return [ctx.emit1(ir, [ins[0]], {"axis": attrs.get("axis", 0), "keepdims": bool(attrs.get("keepdims", 1)),
                                         "select_last_index": bool(attrs.get("select_last_index", 0))})]
    return conv


converter("ArgMax", since=1)(_arg("moec.argmax"))
converter("ArgMin", since=1)(_arg("moec.argmin"))
