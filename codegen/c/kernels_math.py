"""C emitters for matrix products, reductions and normalisations (runtime: rt_linalg.c, ...)."""
from __future__ import annotations

from .emitter import c_op


@c_op("moec.matmul")
def _matmul(ctx, o):
    a, b = o.operands
    return [f"MOEC_TRY(moec_k_matmul(&ctx, {ctx.t(a)}, {ctx.t(b)}, {ctx.t(o.result)}));"]
