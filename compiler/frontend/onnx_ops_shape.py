"""ONNX converters: shape and data-movement ops.

Result types are refined with the symbolic content of shape tensors (see onnx_import), so
Shape -> Gather -> Concat -> Reshape keeps a dynamic token dimension symbolic.
"""
from __future__ import annotations

import numpy as np

from moec.ir import DType, TensorType
from moec.ir.ops.shape import reshape_dims
from moec.ir.types import broadcast_shapes
from moec.frontend.onnx_import import converter


def _i64(ctx, v):
    """v as an i64 vector value (casting i32)."""
    if v.type.dtype != DType.I64:
        v = ctx.emit1("moec.cast", [v], {"to": DType.I64})
    return v


@converter("Constant", since=1)
def _constant(ctx, node, ins, attrs):
    if "value" in attrs:
        v = attrs["value"]
    elif "value_float" in attrs:
        v = np.array(attrs["value_float"], np.float32)
    elif "value_floats" in attrs:
        v = np.array(attrs["value_floats"], np.float32)
    elif "value_int" in attrs:
        v = np.array(attrs["value_int"], np.int64)
    elif "value_ints" in attrs:
        v = np.array(attrs["value_ints"], np.int64)
    elif "sparse_value" in attrs:
        raise ctx.unsupported("sparse_value constants are not supported")
    else:
        raise ctx.unsupported("string constants (value_string(s)) are not supported")
    v = np.asarray(v)
    if v.dtype == np.dtype(object) or v.dtype.kind in "US":
        raise ctx.unsupported("string constants are not supported")
    out = ctx.const(v, node.output[0])
    return [out]


@converter("Shape", since=1)
def _shape(ctx, node, ins, attrs):
    x = ins[0]
    r = x.type.rank
    s, e = attrs.get("start", 0), attrs.get("end", r)
    s = min(max(s + r if s < 0 else s, 0), r)
    e = min(max(e + r if e < 0 else e, 0), r)
    dims = list(x.type.shape[s:max(e, s)])
    if all(isinstance(d, int) for d in dims):
        return [ctx.const(np.asarray(dims, np.int64))]
    a = {"start": s}
    if e != r:
        a["end"] = e
    out = ctx.emit1("moec.shape", [x], a)
    ctx.set_symbolic(out, dims)
    return [out]


@converter("Reshape", since=5)
def _reshape(ctx, node, ins, attrs):
    x, shape = ins[0], _i64(ctx, ins[1])
    allowzero = bool(attrs.get("allowzero", 0))
    content = ctx.symbolic_content(shape)
    rt = None
    if content is not None:
        rt = TensorType(x.type.dtype, tuple(reshape_dims(x.type.shape, content, allowzero)))
    return [ctx.emit1("moec.reshape", [x, shape], {"allowzero": allowzero}, rt)]


@converter("Flatten", since=1)
def _flatten(ctx, node, ins, attrs):
    return [ctx.emit1("moec.flatten", [ins[0]], {"axis": attrs.get("axis", 1)})]


class _RuntimeAxes(Exception):
    pass


def _axes(ctx, node, ins, attrs, idx=1):
    """Constant axes as a list; None when absent; raises _RuntimeAxes when computed at run time."""
    if ctx.opset >= 13 and node.op_type in ("Squeeze", "Unsqueeze"):
        if len(ins) > idx and ins[idx] is not None:
            c = ctx.const_value(ins[idx])
            if c is None:
                raise _RuntimeAxes()
            return [int(a) for a in np.asarray(c).reshape(-1)]
        return None
    return attrs.get("axes")


@converter("Squeeze", since=1)
def _squeeze(ctx, node, ins, attrs):
    x = ins[0]
    try:
        axes = _axes(ctx, node, ins, attrs)
    except _RuntimeAxes:
        return [ctx.emit1("moec.squeeze", [x, _i64(ctx, ins[1])])]
    if axes is None:
        if not x.type.is_static and any(not isinstance(d, int) for d in x.type.shape):
            raise ctx.unsupported("Squeeze without axes on a tensor with dynamic dims (give the axes)")
        axes = [i for i, d in enumerate(x.type.shape) if d == 1]
    if not axes:
        return [x]
    return [ctx.emit1("moec.squeeze", [x], {"axes": axes})]


@converter("Unsqueeze", since=1)
def _unsqueeze(ctx, node, ins, attrs):
    try:
        axes = _axes(ctx, node, ins, attrs)
    except _RuntimeAxes:
        return [ctx.emit1("moec.unsqueeze", [ins[0], _i64(ctx, ins[1])])]
    if axes is None:
        raise ctx.error("Unsqueeze needs axes")
    return [ctx.emit1("moec.unsqueeze", [ins[0]], {"axes": axes})]


@converter("Transpose", since=1)
def _transpose(ctx, node, ins, attrs):
    x = ins[0]
    perm = attrs.get("perm", list(range(x.type.rank))[::-1])
    if list(perm) == list(range(x.type.rank)):
        return [x]
    return [ctx.emit1("moec.transpose", [x], {"perm": perm})]


@converter("Expand", since=8)
def _expand(ctx, node, ins, attrs):
    x, shape = ins[0], _i64(ctx, ins[1])
    content = ctx.symbolic_content(shape)
    rt = None
    if content is not None:
        try:
            rt = TensorType(x.type.dtype, broadcast_shapes(x.type.shape, content))
        except ValueError as e:
            raise ctx.error(str(e)) from None
    return [ctx.emit1("moec.expand", [x, shape], None, rt)]


@converter("Tile", since=6)
def _tile(ctx, node, ins, attrs):
    x, reps = ins[0], _i64(ctx, ins[1])
    content = ctx.symbolic_content(reps)
    rt = None
    if content is not None and len(content) == x.type.rank:
        dims = []
        for d, r in zip(x.type.shape, content):
            dims.append(d * r if isinstance(d, int) and isinstance(r, int) else (d if r == 1 else None))
        rt = TensorType(x.type.dtype, tuple(dims))
    return [ctx.emit1("moec.tile", [x, reps], None, rt)]


@converter("ConstantOfShape", since=9)
def _constant_of_shape(ctx, node, ins, attrs):
    shape = _i64(ctx, ins[0])
    value = attrs.get("value", np.zeros(1, np.float32))
    value = np.asarray(value).reshape(1)
    if value.dtype == np.dtype(object):
        raise ctx.unsupported("string values")
    content = ctx.symbolic_content(shape)
    rt = TensorType(DType.from_np(value.dtype), tuple(content)) if content is not None else None
    if shape.type.rank == 1 and shape.type.shape[0] == 0:
        return [ctx.const(value.reshape(()))]
    return [ctx.emit1("moec.constant_of_shape", [shape], {"value": value}, rt)]


@converter("Range", since=11)
def _range(ctx, node, ins, attrs):
    # opset 27's stash_type=1 (the default) computes half types in float: moec computes every
    # element as start + i * delta in double, which that matches; stash_type=0 does not
    if attrs.get("stash_type", 1) != 1 and ins[0].type.dtype in (DType.F16, DType.BF16):
        raise ctx.unsupported("stash_type=0 (half-precision intermediate) for Range")
    return [ctx.emit1("moec.range", [ins[0], ins[1], ins[2]])]


@converter("Concat", since=4)
def _concat(ctx, node, ins, attrs):
    xs = [v for v in ins if v is not None]
    if len(xs) == 1:
        return [xs[0]]
    return [ctx.emit1("moec.concat", xs, {"axis": attrs["axis"]})]


@converter("Split", since=2)
def _split(ctx, node, ins, attrs):
    x = ins[0]
    axis = attrs.get("axis", 0)
    n_out = len(node.output)
    r = x.type.rank
    a = axis + r if axis < 0 else axis
    if not 0 <= a < r:
        raise ctx.error(f"axis {axis} out of range for rank {r}")
    sizes_v = None
    if ctx.opset >= 13 and len(ins) > 1 and ins[1] is not None:
        sizes_v = _i64(ctx, ins[1])
    elif ctx.opset < 13 and "split" in attrs:
        sizes_v = ctx.const(np.asarray(attrs["split"], np.int64))
    if sizes_v is None:
        d = x.type.shape[a]
        n = attrs.get("num_outputs", n_out)
        if isinstance(d, int):
            chunk = -(-d // n)
            sizes = [min(chunk, d - i * chunk) for i in range(n)]
            if ctx.opset < 18 and d % n:
                raise ctx.error(f"dimension {d} does not split evenly into {n} outputs")
            sizes_v = ctx.const(np.asarray(sizes, np.int64))
        else:
            # dynamic dim: compute sizes at run time: ceil(d / n), last takes the rest
            dim = ctx.emit1("moec.shape", [x], {"start": a, "end": a + 1})
            nn = ctx.const(np.array([n], np.int64))
            chunk = ctx.emit1("moec.div", [ctx.emit1("moec.add", [dim, ctx.const(np.array([n - 1], np.int64))]), nn])
            parts = [chunk] * (n - 1)
            rest = ctx.emit1("moec.sub", [dim, ctx.emit1("moec.mul", [chunk, ctx.const(np.array([n - 1], np.int64))])])
            sizes_v = ctx.emit1("moec.concat", parts + [rest], {"axis": 0}) if n > 1 else dim
    outs = ctx.emit("moec.split", [x, sizes_v], {"axis": axis})
    if len(outs) != n_out:
        raise ctx.error(f"split gives {len(outs)} parts but the node has {n_out} outputs")
    return outs


@converter("Slice", since=1)
def _slice(ctx, node, ins, attrs):
    x = ins[0]
    if ctx.opset < 10:
        starts = ctx.const(np.asarray(attrs["starts"], np.int64))
        ends = ctx.const(np.asarray(attrs["ends"], np.int64))
        axes_l = attrs.get("axes", list(range(len(attrs["starts"]))))
        axes = ctx.const(np.asarray(axes_l, np.int64))
        steps = ctx.const(np.ones(len(axes_l), np.int64))
    else:
        for i, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
            v = ins[i] if len(ins) > i else None
            if v is not None and (v.type.rank != 1 or v.type.dtype not in (DType.I64, DType.I32)):
                raise ctx.error(f"Slice {what} must be a 1-D int64/int32 tensor, got {v.type}")
        starts, ends = _i64(ctx, ins[1]), _i64(ctx, ins[2])
        n = starts.type.shape[0]
        if len(ins) > 3 and ins[3] is not None:
            axes = _i64(ctx, ins[3])
        else:
            if not isinstance(n, int):
                raise ctx.unsupported("Slice with a dynamic number of starts needs constant axes")
            axes = ctx.const(np.arange(n, dtype=np.int64))
        if len(ins) > 4 and ins[4] is not None:
            steps = _i64(ctx, ins[4])
        else:
            k = axes.type.shape[0]
            steps = ctx.const(np.ones(k, np.int64))
    return [ctx.emit1("moec.slice", [x, starts, ends, axes, steps])]


@converter("Trilu", since=14)
def _trilu(ctx, node, ins, attrs):
    k = ins[1] if len(ins) > 1 and ins[1] is not None else ctx.const(np.array(0, np.int64))
    return [ctx.emit1("moec.trilu", [ins[0], k], {"upper": bool(attrs.get("upper", 1))})]
