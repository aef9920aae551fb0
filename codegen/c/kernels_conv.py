"""C emitter for convolution (runtime: rt_conv.c)."""
from __future__ import annotations

from moec.codegen.c.emitter import c_op


@c_op("moec.conv")
def _conv(ctx, o):
    n, strides, pads, dil = o.spatial()
    x, w = (ctx.t(v) for v in o.operands[:2])
    b = ctx.t(o.operands[2]) if len(o.operands) > 2 else "NULL"
    return [f"MOEC_TRY(moec_k_conv(&ctx, {x}, {w}, {b}, {ctx.c_ints(strides)}, {ctx.c_ints(pads)}, "
            f"{ctx.c_ints(dil)}, {ctx.c_int(o.attrs['group'])}, {ctx.t(o.result)}));"]
