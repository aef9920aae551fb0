"""C emitter for the fused decoder ops (ir/ops/attention.py); runtime in runtime/rt_attention.c."""
from __future__ import annotations

from moec.codegen.c.emitter import c_op


@c_op("moec.attention")
def _attention(ctx, o):
    q, k, v = (ctx.t(x) for x in o.operands[:3])
    mask = ctx.t(o.operands[3]) if len(o.operands) > 3 and o.operands[3] is not None else "NULL"
    return [f"MOEC_TRY(moec_k_attention(&ctx, {q}, {k}, {v}, {mask}, {ctx.c_float(o.attrs['scale'])}, "
            f"{1 if o.attrs['causal'] else 0}, {ctx.t(o.result)}));"]


@c_op("moec.rotary")
def _rotary(ctx, o):
    x, c, s = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_rotary(&ctx, {x}, {c}, {s}, {1 if o.attrs['interleaved'] else 0}, {ctx.t(o.result)}));"]
