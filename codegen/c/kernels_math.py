"""C emitters for matrix products, reductions and normalisations (runtime: rt_linalg.c, ...)."""
from __future__ import annotations

from moec.codegen.c.emitter import c_op
from moec.ir.ops.linalg import LINEAR_ACTIVATIONS


def _packed(ctx, o):
    """The C tensor holding o's weight as packed GEMM panels (bound once in moec_init_weights), or None."""
    e = ctx.packs.get(id(o))
    if e is None:
        return None
    return ctx.packed(e), int(e["nr"])  # (one binding per packed weight, shared by its users)


@c_op("moec.matmul")
def _matmul(ctx, o):
    a, b = o.operands
    pk = _packed(ctx, o)
    if pk:
        return [f"MOEC_TRY(moec_k_matmul_packed(&ctx, {ctx.t(a)}, {ctx.t(b)}, {pk[0]}, {pk[1]}, {ctx.t(o.result)}));"]
    return [f"MOEC_TRY(moec_k_matmul(&ctx, {ctx.t(a)}, {ctx.t(b)}, {ctx.t(o.result)}));"]


@c_op("moec.linear")
def _linear(ctx, o):
    x, w = o.operands[:2]
    c = ctx.t(o.operands[2]) if len(o.operands) > 2 else "NULL"
    pk = _packed(ctx, o)
    wp, nr = pk if pk else ("NULL", 0)
    act = LINEAR_ACTIVATIONS.index(o.attrs["activation"])
    return [f"MOEC_TRY(moec_k_linear(&ctx, {ctx.t(x)}, {ctx.t(w)}, {c}, {wp}, {nr}, {act}, {ctx.t(o.result)}));"]


@c_op("moec.gemm")
def _gemm(ctx, o):
    a, b = (ctx.t(v) for v in o.operands[:2])
    c = ctx.t(o.operands[2]) if len(o.operands) > 2 else "NULL"
    at = o.attrs
    args = (f"&ctx, {a}, {b}, {c}, {ctx.c_float(at['alpha'])}, {ctx.c_float(at['beta'])}, "
            f"{int(at['trans_a'])}, {int(at['trans_b'])}")
    pk = _packed(ctx, o)
    if pk:
        return [f"MOEC_TRY(moec_k_gemm_packed({args}, {pk[0]}, {pk[1]}, {ctx.t(o.result)}));"]
    return [f"MOEC_TRY(moec_k_gemm({args}, {ctx.t(o.result)}));"]


@c_op("moec.einsum")
def _einsum(ctx, o):
    from moec.ir.ops.linalg import expand_einsum
    terms, out = expand_einsum(o.attrs["equation"], [v.type.rank for v in o.operands])
    ids = {}
    for t in terms + [out]:
        for lab in t:
            ids.setdefault(lab, len(ids))
    labels = ctx.c_ints([ids[lab] for t in terms for lab in t])
    ranks = ctx.c_ints([len(t) for t in terms])
    outl = ctx.c_ints([ids[lab] for lab in out])
    arr = ctx.fresh("ein")
    ptrs = ", ".join(ctx.t(v) for v in o.operands)
    return [f"{{ const moec_tensor *{arr}[] = {{{ptrs}}};",
            f"  MOEC_TRY(moec_k_einsum(&ctx, {arr}, {len(o.operands)}, {labels}, {ranks}, {outl}, {len(out)}, "
            f"{len(ids)}, {ctx.t(o.result)})); }}"]


_RK = {"sum": "MOEC_R_SUM", "mean": "MOEC_R_MEAN", "max": "MOEC_R_MAX", "min": "MOEC_R_MIN", "l1": "MOEC_R_L1",
       "l2": "MOEC_R_L2"}


def _reduce(kind):
    def emit(ctx, o):
        noop = int(o.attrs["noop_with_empty_axes"])
        if len(o.operands) > 1:  # axes read at run time
            return [f"MOEC_TRY(moec_k_reduce_dyn(&ctx, {ctx.t(o.operands[0])}, {ctx.t(o.operands[1])}, "
                    f"{int(o.attrs['keepdims'])}, {noop}, {_RK[kind]}, {ctx.t(o.result)}));"]
        axes = o.attrs["axes"]
        if not axes and noop:
            return [f"MOEC_TRY(moec_clone(&ctx, {ctx.t(o.result)}, {ctx.t(o.operands[0])}));"]
        return [f"MOEC_TRY(moec_k_reduce(&ctx, {ctx.t(o.operands[0])}, {ctx.c_ints(axes)}, {len(axes)}, "
                f"{int(o.attrs['keepdims'])}, {_RK[kind]}, {ctx.t(o.result)}));"]
    return emit


for _k in _RK:
    c_op(f"moec.reduce_{_k}")(_reduce(_k))


@c_op("moec.softmax")
def _softmax(ctx, o):
    return [f"MOEC_TRY(moec_k_softmax(&ctx, {ctx.t(o.operands[0])}, {ctx.c_int(o.attrs['axis'])}, 0, {ctx.t(o.result)}));"]


@c_op("moec.log_softmax")
def _log_softmax(ctx, o):
    return [f"MOEC_TRY(moec_k_softmax(&ctx, {ctx.t(o.operands[0])}, {ctx.c_int(o.attrs['axis'])}, 1, {ctx.t(o.result)}));"]


@c_op("moec.layer_norm")
def _layer_norm(ctx, o):
    x, s = (ctx.t(v) for v in o.operands[:2])
    b = ctx.t(o.operands[2]) if len(o.operands) > 2 else "NULL"
    y, m, inv = (ctx.t(r) for r in o.results)
    return [f"MOEC_TRY(moec_k_layer_norm(&ctx, {x}, {s}, {b}, {ctx.c_int(o.attrs['axis'])}, "
            f"{ctx.c_float(o.attrs['epsilon'])}, {y}, {m}, {inv}));"]


@c_op("moec.rms_norm")
def _rms_norm(ctx, o):
    x, s = (ctx.t(v) for v in o.operands)
    return [f"MOEC_TRY(moec_k_rms_norm(&ctx, {x}, {s}, {ctx.c_int(o.attrs['axis'])}, "
            f"{ctx.c_float(o.attrs['epsilon'])}, {ctx.t(o.result)}));"]
