"""C emitters for indexing ops (runtime: rt_index.c)."""
from __future__ import annotations

from moec.codegen.c.emitter import c_op

_RED = {"none": "MOEC_RED_NONE", "add": "MOEC_RED_ADD", "mul": "MOEC_RED_MUL", "max": "MOEC_RED_MAX",
        "min": "MOEC_RED_MIN"}


@c_op("moec.gather")
def _gather(ctx, o):
    d, i = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_gather(&ctx, {d}, {i}, {ctx.c_int(o.attrs['axis'])}, {ctx.t(o.result)}));"]


@c_op("moec.gather_elements")
def _gather_el(ctx, o):
    d, i = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_gather_elements(&ctx, {d}, {i}, {ctx.c_int(o.attrs['axis'])}, {ctx.t(o.result)}));"]


@c_op("moec.gather_nd")
def _gather_nd(ctx, o):
    d, i = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_gather_nd(&ctx, {d}, {i}, {ctx.c_int(o.attrs['batch_dims'])}, {ctx.t(o.result)}));"]


@c_op("moec.scatter_elements")
def _scatter_el(ctx, o):
    d, i, u = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_scatter_elements(&ctx, {d}, {i}, {u}, {ctx.c_int(o.attrs['axis'])}, "
            f"{_RED[o.attrs['reduction']]}, {ctx.t(o.result)}));"]


@c_op("moec.scatter_nd")
def _scatter_nd(ctx, o):
    d, i, u = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_scatter_nd(&ctx, {d}, {i}, {u}, {_RED[o.attrs['reduction']]}, {ctx.t(o.result)}));"]


@c_op("moec.nonzero")
def _nonzero(ctx, o):
    return [f"MOEC_TRY(moec_k_nonzero(&ctx, {ctx.t(o.operands[0])}, {ctx.t(o.result)}));"]


@c_op("moec.one_hot")
def _one_hot(ctx, o):
    i, d, v = (ctx.t(x) for x in o.operands)
    return [f"MOEC_TRY(moec_k_one_hot(&ctx, {i}, {d}, {v}, {ctx.c_int(o.attrs['axis'])}, {ctx.t(o.result)}));"]


@c_op("moec.cumsum")
def _cumsum(ctx, o):
    a = o.attrs
    return [f"MOEC_TRY(moec_k_cumsum(&ctx, {ctx.t(o.operands[0])}, {ctx.t(o.operands[1])}, "
            f"{int(a['exclusive'])}, "
            f"{int(a['reverse'])}, {ctx.t(o.result)}));"]


@c_op("moec.topk")
def _topk(ctx, o):
    x, k = (ctx.t(v) for v in o.operands)
    v, i = o.results
    return [f"MOEC_TRY(moec_k_topk(&ctx, {x}, {k}, {ctx.c_int(o.attrs['axis'])}, {int(o.attrs['largest'])}, "
            f"{ctx.t(v)}, {ctx.t(i)}));"]


def _arg(largest):
    def emit(ctx, o):
        a = o.attrs
        return [f"MOEC_TRY(moec_k_argextreme(&ctx, {ctx.t(o.operands[0])}, {ctx.c_int(a['axis'])}, "
                f"{int(a['keepdims'])}, {int(a['select_last_index'])}, {largest}, {ctx.t(o.result)}));"]
    return emit


c_op("moec.argmax")(_arg(1))
c_op("moec.argmin")(_arg(0))
