"""C emitters for shape and data-movement ops (runtime: rt_shape.c)."""
from __future__ import annotations

from moec.codegen.c.emitter import c_op


def _t(ctx, o):
    return [ctx.t(v) for v in o.operands]


@c_op("moec.shape")
def _shape(ctx, o):
    end = o.attrs.get("end")
    return [f"MOEC_TRY(moec_k_shape(&ctx, {ctx.t(o.operands[0])}, {ctx.c_int(o.attrs['start'])}, "
            f"{ctx.c_int(end or 0)}, {0 if end is None else 1}, {ctx.t(o.result)}));"]


@c_op("moec.reshape", aliases={0: 0})
def _reshape(ctx, o):
    x, s = _t(ctx, o)
    return [f"MOEC_TRY(moec_k_reshape(&ctx, {x}, {s}, {1 if o.attrs['allowzero'] else 0}, {ctx.t(o.result)}));"]


@c_op("moec.flatten", aliases={0: 0})
def _flatten(ctx, o):
    return [f"MOEC_TRY(moec_k_flatten(&ctx, {ctx.t(o.operands[0])}, {ctx.c_int(o.attrs['axis'])}, {ctx.t(o.result)}));"]


@c_op("moec.squeeze", aliases={0: 0})
def _squeeze(ctx, o):
    if len(o.operands) > 1:
        return [f"MOEC_TRY(moec_k_squeeze_dyn(&ctx, {ctx.t(o.operands[0])}, {ctx.t(o.operands[1])}, 0, {ctx.t(o.result)}));"]
    axes = o.attrs["axes"]
    return [f"MOEC_TRY(moec_k_squeeze(&ctx, {ctx.t(o.operands[0])}, {ctx.c_ints(axes)}, {len(axes)}, {ctx.t(o.result)}));"]


@c_op("moec.unsqueeze", aliases={0: 0})
def _unsqueeze(ctx, o):
    if len(o.operands) > 1:
        return [f"MOEC_TRY(moec_k_squeeze_dyn(&ctx, {ctx.t(o.operands[0])}, {ctx.t(o.operands[1])}, 1, {ctx.t(o.result)}));"]
    axes = o.attrs["axes"]
    return [f"MOEC_TRY(moec_k_unsqueeze(&ctx, {ctx.t(o.operands[0])}, {ctx.c_ints(axes)}, {len(axes)}, {ctx.t(o.result)}));"]


@c_op("moec.transpose")
def _transpose(ctx, o):
    return [f"MOEC_TRY(moec_k_transpose(&ctx, {ctx.t(o.operands[0])}, {ctx.c_ints(o.attrs['perm'])}, {ctx.t(o.result)}));"]


@c_op("moec.expand")
def _expand(ctx, o):
    x, s = _t(ctx, o)
    return [f"MOEC_TRY(moec_k_expand(&ctx, {x}, {s}, {ctx.t(o.result)}));"]


@c_op("moec.tile")
def _tile(ctx, o):
    x, r = _t(ctx, o)
    return [f"MOEC_TRY(moec_k_tile(&ctx, {x}, {r}, {ctx.t(o.result)}));"]


@c_op("moec.constant_of_shape")
def _cos(ctx, o):
    import numpy as np
    v = np.ascontiguousarray(np.asarray(o.attrs["value"]).reshape(1))
    name = ctx.fresh("cval")
    data = ",".join(str(b) for b in v.tobytes())
    ctx.decl(f"static uint8_t {name}_d[] __attribute__((aligned(64))) = {{{data}}};")
    ctx.decl(f"static moec_tensor {name} = {{{name}_d, {{1}}, 1, 1, "
             f"{ctx.c_dtype(o.result.type.dtype)}, 0, 0}};")
    return [f"MOEC_TRY(moec_k_constant_of_shape(&ctx, {ctx.t(o.operands[0])}, &{name}, {ctx.t(o.result)}));"]


@c_op("moec.range")
def _range(ctx, o):
    s, l_, d = _t(ctx, o)
    return [f"MOEC_TRY(moec_k_range(&ctx, {s}, {l_}, {d}, {ctx.t(o.result)}));"]


@c_op("moec.concat")
def _concat(ctx, o):
    arr = ctx.fresh("cat")
    ptrs = ", ".join(ctx.t(v) for v in o.operands)
    return [f"{{ const moec_tensor *{arr}[] = {{{ptrs}}};",
            f"  MOEC_TRY(moec_k_concat(&ctx, {arr}, {len(o.operands)}, {ctx.c_int(o.attrs['axis'])}, {ctx.t(o.result)})); }}"]


@c_op("moec.split")
def _split(ctx, o):
    arr = ctx.fresh("parts")
    ptrs = ", ".join(ctx.t(r) for r in o.results)
    x, s = _t(ctx, o)
    return [f"{{ moec_tensor *const {arr}[] = {{{ptrs}}};",
            f"  MOEC_TRY(moec_k_split(&ctx, {x}, {s}, {ctx.c_int(o.attrs['axis'])}, {arr}, {len(o.results)})); }}"]


@c_op("moec.slice")
def _slice(ctx, o):
    x, s, e, a, st = _t(ctx, o)
    return [f"MOEC_TRY(moec_k_slice(&ctx, {x}, {s}, {e}, {a}, {st}, {ctx.t(o.result)}));"]


@c_op("moec.trilu")
def _trilu(ctx, o):
    x, k = _t(ctx, o)
    return [f"MOEC_TRY(moec_k_trilu(&ctx, {x}, {k}, {1 if o.attrs['upper'] else 0}, {ctx.t(o.result)}));"]
