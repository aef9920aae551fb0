"""C emitter for the KV-cache ops (ir/ops/kv.py); runtime in runtime/rt_kv.c."""
from __future__ import annotations

from moec.codegen.c.emitter import c_op


@c_op("moec.kv_append", aliases={0: 0})
def _kv_append(ctx, o):
    c, n, p = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_kv_append(&ctx, {c}, {n}, {p}, {ctx.c_int(o.attrs['axis'])}, {ctx.t(o.result)}));"]


@c_op("moec.kv_attention")
def _kv_attention(ctx, o):
    q, k, v, p = (ctx.t(x) for x in o.operands[:4])
    mask = ctx.t(o.operands[4]) if len(o.operands) > 4 and o.operands[4] is not None else "NULL"
    return [f"MOEC_TRY(moec_k_kv_attention(&ctx, {q}, {k}, {v}, {p}, {mask}, {ctx.c_float(o.attrs['scale'])}, "
            f"{1 if o.attrs['causal'] else 0}, {ctx.t(o.result)}));"]


@c_op("moec.kv_step_attention")
def _kv_step_attention(ctx, o):
    q, kc, vc, kn, vn, p = (ctx.t(x) for x in o.operands)
    return [f"MOEC_TRY(moec_k_kv_step_attention(&ctx, {q}, {kc}, {vc}, {kn}, {vn}, {p}, "
            f"{ctx.c_float(o.attrs['scale'])}, {ctx.c_int(o.attrs['window'])}, {ctx.t(o.result)}));"]
