"""C emitters for the MoE ops (runtime: rt_moe.c)."""
from __future__ import annotations

from moec.ir.ops.moe import WEIGHTS_AT_CODES
from moec.codegen.c.emitter import c_op

_SCORING = {"softmax": "MOEC_SCORE_SOFTMAX", "sigmoid": "MOEC_SCORE_SIGMOID", "none": "MOEC_SCORE_NONE"}
_POST = {"none": "MOEC_POST_NONE", "softmax": "MOEC_POST_SOFTMAX", "sigmoid": "MOEC_POST_SIGMOID",
         "sparsemixer": "MOEC_POST_SPARSEMIXER"}
_NORM = {"none": "MOEC_NORM_NONE", "sum": "MOEC_NORM_SUM", "l1": "MOEC_NORM_L1"}
_ACT = {"swiglu": "MOEC_ACT_SWIGLU", "gelu": "MOEC_ACT_GELU", "gelu_tanh": "MOEC_ACT_GELU_TANH",
        "relu": "MOEC_ACT_RELU", "silu": "MOEC_ACT_SILU", "identity": "MOEC_ACT_IDENTITY", "relu2": "MOEC_ACT_RELU2",
        "geglu": "MOEC_ACT_GEGLU", "geglu_tanh": "MOEC_ACT_GEGLU_TANH", "softcap_swiglu": "MOEC_ACT_SOFTCAP_SWIGLU"}
_WEIGHTS_AT = WEIGHTS_AT_CODES  # (moec_k_moe_experts takes the index in ir/ops/moe.py WEIGHTS_AT)
_WQ = {"bf16": "MOEC_WQ_BF16", "int8": "MOEC_WQ_INT8", "int4": "MOEC_WQ_INT4"}


def _pairs(ctx, o, i) -> str:
    """The panels of o's operand i packed at compile time (gemm_pack: bf16 pair panels, f32 expert k-panels), or
    NULL.  The generated unit checks that the runtime it is built with reads the layouts the packer wrote
    (ir/weight_layouts.py)."""
    e = ctx.packs.get((id(o), i))
    if e is None:
        return "NULL"
    from moec.ir import weight_layouts as wl
    ctx.decl_once("pair_layout", f"#if MOEC_PAIR_NR != {wl.PAIR_NR} || MOEC_PAIR_LAYOUT_VERSION != {wl.PAIR_LAYOUT_VERSION} || "
                  f"MOEC_KPANEL_NR != {wl.KPANEL_NR} || MOEC_KPANEL_LAYOUT_VERSION != {wl.KPANEL_LAYOUT_VERSION} || "
                  f"MOEC_I8PANEL_NR != {wl.I8PANEL_NR} || MOEC_I8PANEL_LAYOUT_VERSION != {wl.I8PANEL_LAYOUT_VERSION} || "
                  f"MOEC_W4A8_NR != {wl.W4A8_NR} || MOEC_W4A8_LAYOUT_VERSION != {wl.W4A8_LAYOUT_VERSION}\n"
                  f"#error \"the runtime reads other weight panel layouts than moec's packer wrote\"\n#endif")
    return ctx.packed(e)


def _w4a8_parts(ctx, o, pairs) -> str:
    """moec_wq's w4a8 fields (the compile-time scales / zero points beside pk_in / pk_out): ``pairs`` maps each
    field to the operand it packs (None: absent)."""
    out = []
    for field, v in pairs:
        idx = [i for i, u in enumerate(o.operands) if v is not None and u is v]
        c = _pairs(ctx, o, idx[0]) if idx else "NULL"
        if c != "NULL":
            out.append(f", .{field} = {c}")
    return "".join(out)


def ffn_params(ctx, o) -> str:
    """Declare a static moec_ffn_params for op o; return its name."""
    a = o.attrs
    name = ctx.fresh("ffn")
    ctx.decl(f"static const moec_ffn_params {name} = {{{_ACT[a['activation']]}, "
             f"{1 if a['gate_layout'] == 'interleaved' else 0}, {ctx.c_float(a['alpha'])}, "
             f"{ctx.c_float(a['beta'])}, {ctx.c_float(a['limit'])}, {ctx.c_float(a.get('gate_softcap') or 0.0)}, "
             f"{ctx.c_float(a.get('up_softcap') or 0.0)}, {0 if a.get('post_norm_eps') is None else 1}, "
             f"{ctx.c_float(a.get('post_norm_eps') or 0.0)}}};")
    return name


@c_op("moe.route")
def _route(ctx, o):
    a = o.attrs
    name = ctx.fresh("route")
    ctx.decl(f"static const moec_route_params {name} = {{{ctx.c_int(a['k'])}, {ctx.c_int(a['n_group'])}, {ctx.c_int(a['topk_group'])}, "
             f"{ctx.c_int(a['capacity'])}, {_SCORING[a['scoring']]}, {1 if a['group_score'] == 'top2_sum' else 0}, "
             f"{_POST[a['post']]}, {_NORM[a['norm']]}, {ctx.c_float(a['norm_eps'])}, {ctx.c_float(a['scale'])}, "
             f"{1 if a['tie'] == 'high' else 0}, {1 if a['drop'] else 0}, {ctx.c_float(a['min_weight'])}, "
             f"{ctx.c_float(a['jitter_eps'])}, {ctx.c_float(a['norm_min'])}, {ctx.c_float(a['group_fill'])}, "
             f"{ctx.c_int(o.n_shared())}, {ctx.c_int(o.n_skip())}}};")
    bias = ctx.t(o.operands[1]) if len(o.operands) > 1 else "NULL"
    w, ids = o.results
    return [f"MOEC_TRY(moec_k_moe_route(&ctx, {ctx.t(o.operands[0])}, {bias}, {ctx.t(w)}, {ctx.t(ids)}, &{name}));"]


@c_op("moe.dispatch")
def _dispatch(ctx, o):
    order, offsets = o.results
    return [f"MOEC_TRY(moec_k_moe_dispatch(&ctx, {ctx.t(o.operands[0])}, {ctx.t(order)}, {ctx.t(offsets)}, "
            f"{ctx.c_int(o.attrs['num_experts'])}, {ctx.c_int(o.attrs['block'])}));"]


# moec_wq.aq (rt_moe.h): 0 the GEMM inputs as x, 1 dynamic int8 (w8a8 / w4a8), 2 rounded to bf16 (int8_bf16 / int4_bf16)
_AQ = {"none": 0, "int8": 1, "bf16": 2}


@c_op("moe.experts")
def _experts(ctx, o):
    a = o.attrs
    e = o.extras()
    b_in, b_out, rw = (ctx.t(v) if v is not None else "NULL" for v in (e.b_in, e.b_out, e.rw))
    x, ids, order, offsets, w_in, w_out = (ctx.t(v) for v in o.operands[:6])
    p = ffn_params(ctx, o)
    lines = []
    q = "NULL"
    if a["wq"] != "none":
        q = ctx.fresh("wq")
        sv = [f"{ctx.t(v)}" if v is not None else "NULL" for v in (e.s_in, e.s_out, e.z_in, e.z_out)]
        lines.append(f"moec_wq {q} = {{{_WQ[a['wq']]}, {ctx.c_int(a['wq_group'])}, {sv[0]}, {sv[1]}, {sv[2]}, "
                     f"{sv[3]}, {_AQ[a['aq']]}, .pk_in = {_pairs(ctx, o, 4)}, .pk_out = {_pairs(ctx, o, 5)}"
                     f"{_w4a8_parts(ctx, o, [('pks_in', e.s_in), ('pks_out', e.s_out), ('pkz_in', e.z_in), ('pkz_out', e.z_out)])}}};")
        q = "&" + q
    elif (id(o), 4) in ctx.packs or (id(o), 5) in ctx.packs:  # f32: the k-panels packed at compile time
        q = ctx.fresh("wq")
        lines.append(f"moec_wq {q} = {{MOEC_WQ_NONE, 0, NULL, NULL, NULL, NULL, 0, .pk_in = {_pairs(ctx, o, 4)}, "
                     f".pk_out = {_pairs(ctx, o, 5)}}};")
        q = "&" + q
    return lines + [
        f"MOEC_TRY(moec_k_moe_experts(&ctx, {x}, {ids}, {order}, {offsets}, {w_in}, {w_out}, {b_in}, {b_out}, "
        f"{rw}, {_WEIGHTS_AT[a['weights_at']]}, &{p}, {q}, {ctx.t(e.pn_w) if e.pn_w is not None else 'NULL'}, "
        f"{ctx.t(o.result)}));"]


@c_op("moe.shared_experts")
def _shared(ctx, o):
    gate = ctx.t(o.operands[3]) if len(o.operands) > 3 else "NULL"
    x, w_in, w_out = (ctx.t(v) for v in o.operands[:3])
    p = ffn_params(ctx, o)
    return [f"MOEC_TRY(moec_k_moe_shared(&ctx, {x}, {w_in}, {w_out}, {gate}, &{p}, {ctx.t(o.result)}));"]


@c_op("moe.combine")
def _combine(ctx, o):
    a = o.attrs
    ex = list(o.operands[2:])
    shared = ctx.t(ex.pop(0)) if a["has_shared"] else "NULL"
    px, pids = (ctx.t(ex[0]), ctx.t(ex[1])) if a["passthrough"] else ("NULL", "NULL")
    y, w = (ctx.t(v) for v in o.operands[:2])
    return [f"MOEC_TRY(moec_k_moe_combine(&ctx, {y}, {w}, {shared}, {px}, {pids}, {1 if a['weighted'] else 0}, "
            f"{ctx.t(o.result)}));"]


@c_op("moec.linear_q")
def _linear_q(ctx, o):
    a = o.attrs
    if a["wq"] not in _WQ:
        from moec.codegen.c.emitter import CodegenError
        raise CodegenError(f"the C target has no dense {a['wq']} kernels (moec.linear_q)")
    s, z, b = o._parts()
    q = ctx.fresh("wq")
    sv = ctx.t(s) if s is not None else "NULL"
    zv = ctx.t(z) if z is not None else "NULL"
    return [f"moec_wq {q} = {{{_WQ[a['wq']]}, {ctx.c_int(a['wq_group'])}, {sv}, NULL, {zv}, NULL, "
            f"{_AQ[a['aq']]}, .pk_in = {_pairs(ctx, o, 1)}{_w4a8_parts(ctx, o, [('pks_in', s), ('pkz_in', z)])}}};",
            f"MOEC_TRY(moec_k_linear_q(&ctx, {ctx.t(o.operands[0])}, {ctx.t(o.operands[1])}, "
            f"{ctx.t(b) if b is not None else 'NULL'}, &{q}, {ctx.t(o.result)}));"]
