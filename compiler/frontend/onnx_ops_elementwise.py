"""ONNX converters: elementwise ops."""
from __future__ import annotations

import numpy as np

from moec.ir import DType
from moec.frontend.onnx_import import converter, onnx_dtype

_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "equal", "Greater": "greater",
           "GreaterOrEqual": "greater_equal", "Less": "less", "LessOrEqual": "less_equal", "And": "and", "Or": "or"}
_UNARY = {"Neg": "neg", "Abs": "abs", "Sign": "sign", "Floor": "floor", "Ceil": "ceil", "Sqrt": "sqrt",
          "Reciprocal": "reciprocal", "Exp": "exp", "Log": "log", "Sin": "sin", "Cos": "cos", "Tanh": "tanh",
          "Erf": "erf", "Sigmoid": "sigmoid", "Relu": "relu", "Not": "not"}


def _reg_binary(onnx_op, ir):
    @converter(onnx_op, since=7)
    def conv(ctx, node, ins, attrs):
        if attrs.get("broadcast") is not None and ctx.opset < 7:
            raise ctx.unsupported("legacy 'broadcast' attribute")
        return [ctx.emit1(f"moec.{ir}", [ins[0], ins[1]])]


def _reg_unary(onnx_op, ir):
    @converter(onnx_op, since=1)
    def conv(ctx, node, ins, attrs):
        return [ctx.emit1(f"moec.{ir}", [ins[0]])]


for _k, _v in _BINARY.items():
    _reg_binary(_k, _v)
for _k, _v in _UNARY.items():
    _reg_unary(_k, _v)


@converter("Pow", since=7)
def _pow(ctx, node, ins, attrs):
    return [ctx.emit1("moec.pow", [ins[0], ins[1]])]


@converter("Mod", since=10)
def _mod(ctx, node, ins, attrs):
    return [ctx.emit1("moec.mod", [ins[0], ins[1]], {"fmod": bool(attrs.get("fmod", 0))})]


@converter("Gelu", since=20)
def _gelu(ctx, node, ins, attrs):
    approx = attrs.get("approximate", "none")
    if approx not in ("none", "tanh"):
        raise ctx.unsupported(f"attribute approximate='{approx}' (supported: none, tanh)")
    return [ctx.emit1("moec.gelu" if approx == "none" else "moec.gelu_tanh", [ins[0]])]


@converter("Identity", since=1)
def _identity(ctx, node, ins, attrs):
    return [ins[0]]


def _fold(ctx, ir, ins):
    vals = [v for v in ins if v is not None]
    if not vals:
        raise ctx.error("needs at least one input")
    acc = vals[0]
    for v in vals[1:]:
        acc = ctx.emit1(f"moec.{ir}", [acc, v])
    return [acc]


@converter("Min", since=8)
def _min(ctx, node, ins, attrs):
    return _fold(ctx, "min", ins)


@converter("Max", since=8)
def _max(ctx, node, ins, attrs):
    return _fold(ctx, "max", ins)


def _limit(dt: DType, low: bool):
    if dt.is_float:  # ONNX: numeric_limits<T>::lowest() / max(), so Clip(+-inf) with no bound is +-max
        import ml_dtypes
        fi = ml_dtypes.finfo(dt.np)
        return np.array(fi.min if low else fi.max, dt.np)
    info = np.iinfo(dt.np)
    return np.array(info.min if low else info.max, dt.np)


@converter("Clip", since=6)
def _clip(ctx, node, ins, attrs):
    x = ins[0]
    dt = x.type.dtype
    if ctx.opset < 11:
        lo = ctx.const(np.array(attrs.get("min", -3.4028234663852886e38), dt.np))
        hi = ctx.const(np.array(attrs.get("max", 3.4028234663852886e38), dt.np))
    else:
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else ctx.const(_limit(dt, True))
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else ctx.const(_limit(dt, False))
        for v, what in ((lo, "min"), (hi, "max")):
            if v.type.rank != 0:
                if v.type.is_static and v.type.numel() == 1:
                    continue
                raise ctx.unsupported(f"'{what}' must be a scalar")
        if lo.type.rank:
            lo = ctx.emit1("moec.reshape", [lo, ctx.const(np.zeros(0, np.int64))])
        if hi.type.rank:
            hi = ctx.emit1("moec.reshape", [hi, ctx.const(np.zeros(0, np.int64))])
    return [ctx.emit1("moec.clip", [x, lo, hi])]


@converter("Where", since=9)
def _where(ctx, node, ins, attrs):
    return [ctx.emit1("moec.select", [ins[0], ins[1], ins[2]])]


@converter("Cast", since=6)
def _cast(ctx, node, ins, attrs):
    to = onnx_dtype(attrs["to"], f"{ctx.where()}: target ")
    if to == ins[0].type.dtype:
        return [ins[0]]
    return [ctx.emit1("moec.cast", [ins[0]], {"to": to})]


@converter("CastLike", since=15)
def _cast_like(ctx, node, ins, attrs):
    # Cast to the element type of the second input (its values are not read); torch.onnx's dynamo exporter
    # writes it for a type promotion (DeepSeek-V4's bf16 block)
    to = ins[1].type.dtype
    if to == ins[0].type.dtype:
        return [ins[0]]
    return [ctx.emit1("moec.cast", [ins[0]], {"to": to})]


@converter("Dropout", since=7)
def _dropout(ctx, node, ins, attrs):
    x = ins[0]
    if len(ins) > 2 and ins[2] is not None:
        tm = ctx.const_value(ins[2])
        if tm is None or bool(np.asarray(tm).reshape(-1)[0]):
            raise ctx.unsupported("training_mode must be a constant false (moec compiles inference)")
    outs = [x]
    if len(node.output) > 1 and node.output[1]:
        # inference: the mask is all true; built as (x == x) | (x != x) so it needs no shape ops
        eq = ctx.emit1("moec.equal", [x, x])
        outs.append(ctx.emit1("moec.or", [eq, ctx.emit1("moec.not", [eq])]))
    return outs


@converter("IsNaN", since=9)
def _isnan(ctx, node, ins, attrs):
    # exact by IEEE 754: NaN is the only value not equal to itself (transformers' sdpa attention exports this)
    x = ins[0]
    if not x.type.dtype.is_float:
        raise ctx.unsupported(f"input type {x.type.dtype} (IsNaN takes a float tensor)")
    return [ctx.emit1("moec.not", [ctx.emit1("moec.equal", [x, x])])]


@converter("IsInf", since=10)
def _isinf(ctx, node, ins, attrs):
    x = ins[0]
    dt = x.type.dtype
    if not dt.is_float:
        raise ctx.unsupported(f"input type {dt} (IsInf takes a float tensor)")
    pos, neg = int(attrs.get("detect_positive", 1)), int(attrs.get("detect_negative", 1))
    if pos and neg:
        return [ctx.emit1("moec.equal", [ctx.emit1("moec.abs", [x]), ctx.const(np.array(np.inf, dt.np))])]
    if not pos and not neg:  # all false, same shape as x
        eq = ctx.emit1("moec.equal", [x, x])
        return [ctx.emit1("moec.and", [eq, ctx.emit1("moec.not", [eq])])]
    return [ctx.emit1("moec.equal", [x, ctx.const(np.array(np.inf if pos else -np.inf, dt.np))])]


@converter("Softplus", since=1)
def _softplus(ctx, node, ins, attrs):
    """ln(exp(x) + 1), written max(x, 0) + log1p(exp(-|x|)): no overflow for large x, exact near 0
    (DeepSeek-V4's router scores sqrt(softplus(l)) in both torch.onnx exports)."""
    x = ins[0]
    tail = ctx.emit1("moec.log1p", [ctx.emit1("moec.exp", [ctx.emit1("moec.neg", [ctx.emit1("moec.abs", [x])])])])
    return [ctx.emit1("moec.add", [ctx.emit1("moec.relu", [x]), tail])]
