"""C emitters for elementwise ops (runtime: rt_elementwise.c)."""
from __future__ import annotations

from moec.codegen.c.emitter import c_op

BINARY = {"moec.add": "ADD", "moec.sub": "SUB", "moec.mul": "MUL", "moec.div": "DIV", "moec.pow": "POW",
          "moec.min": "MIN", "moec.max": "MAX", "moec.equal": "EQ", "moec.greater": "GT",
          "moec.greater_equal": "GE", "moec.less": "LT", "moec.less_equal": "LE", "moec.and": "AND",
          "moec.or": "OR"}
UNARY = {"moec.relu": "RELU", "moec.neg": "NEG", "moec.abs": "ABS", "moec.sign": "SIGN", "moec.floor": "FLOOR",
         "moec.ceil": "CEIL", "moec.sqrt": "SQRT", "moec.reciprocal": "RECIP", "moec.exp": "EXP",
         "moec.log": "LOG", "moec.sin": "SIN", "moec.cos": "COS", "moec.tanh": "TANH", "moec.erf": "ERF",
         "moec.sigmoid": "SIGMOID", "moec.gelu": "GELU", "moec.gelu_tanh": "GELU_TANH", "moec.not": "NOT",
         "moec.log1p": "LOG1P"}


def _binary(code):
    def emit(ctx, o):
        a, b = o.operands
        return [f"MOEC_TRY(moec_k_binary(&ctx, MOEC_BIN_{code}, {ctx.t(a)}, {ctx.t(b)}, {ctx.t(o.result)}, "
                f"{ctx.c_dtype(o.result.type.dtype)}));"]
    return emit


def _unary(code):
    def emit(ctx, o):
        return [f"MOEC_TRY(moec_k_unary(&ctx, MOEC_UN_{code}, {ctx.t(o.operands[0])}, {ctx.t(o.result)}));"]
    return emit


for _name, _code in BINARY.items():
    c_op(_name)(_binary(_code))
for _name, _code in UNARY.items():
    c_op(_name)(_unary(_code))


@c_op("moec.mod")
def _mod(ctx, o):
    return _binary("FMOD" if o.attrs["fmod"] else "MOD")(ctx, o)


@c_op("moec.select")
def _select(ctx, o):
    c, a, b = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_select(&ctx, {c}, {a}, {b}, {ctx.t(o.result)}));"]


@c_op("moec.clip")
def _clip(ctx, o):
    x, lo, hi = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_clip(&ctx, {x}, {lo}, {hi}, {ctx.t(o.result)}));"]


@c_op("moec.cast")
def _cast(ctx, o):
    return [f"MOEC_TRY(moec_k_cast(&ctx, {ctx.t(o.operands[0])}, {ctx.t(o.result)}, "
            f"{ctx.c_dtype(o.attrs['to'])}));"]
