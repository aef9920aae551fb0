"""C emitters for elementwise ops (runtime: rt_elementwise.c)."""
from __future__ import annotations

from .emitter import c_op

BINARY = {"moec.add": "MOEC_BIN_ADD"}
UNARY = {"moec.relu": "MOEC_UN_RELU"}


def _binary(code):
    def emit(ctx, o):
        a, b = o.operands
        return [f"MOEC_TRY(moec_k_binary(&ctx, {code}, {ctx.t(a)}, {ctx.t(b)}, {ctx.t(o.result)}, "
                f"{ctx.c_dtype(o.result.type.dtype)}));"]
    return emit


def _unary(code):
    def emit(ctx, o):
        return [f"MOEC_TRY(moec_k_unary(&ctx, {code}, {ctx.t(o.operands[0])}, {ctx.t(o.result)}));"]
    return emit


for _name, _code in BINARY.items():
    c_op(_name)(_binary(_code))
for _name, _code in UNARY.items():
    c_op(_name)(_unary(_code))


