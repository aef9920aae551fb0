"""IR -> model_triton.py: a straight-line launcher over the Triton kernels (runtime.py/kernels.py),
written at compile time with everything a run needs, so that loading it parses no IR.

The generated module holds
  ``INPUTS``            each input's element type and dims (ints, symbol names), checked before a run;
  ``FP8``               whether fp8 expert weights are used (they need an sm_89+ GPU);
  ``INPLACE``           the inputs a kernel updates in place (a KV cache buffer moec.kv_append writes into);
  ``HOST_OPS_STATIC``   how many ops have no Triton kernel;
  ``CONSTANTS``         the keys of the inline constants in ``model_triton.consts.*`` (uploaded once);
  ``host_segments(A)``  the ops without a Triton kernel, grouped in segments of consecutive ops (their names,
                        attributes, operand and result types; tensor attributes are keys into ``A``, the same
                        constants store), built into IR ops at load time (``host.segment``) and run on the
                        host by the IR walker (``host.host_run``), each op counted in ``stats``;
  ``run(W, C, H, inputs, stats)``  W: weight key -> device tensor, C: constant key -> device tensor,
                        H: the built host segments, inputs: device tensors.  Values are named v<N>.
Every attribute, weight key and name reaches the launcher as a literal made by
``moec.codegen.escape`` (``py_value`` / ``py_string``), never pasted with ``repr`` or ``str``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from moec.ir import DType, Module
from moec.ir.core import ResourceRef
from moec.ir.weights import WeightStore
from moec.codegen.escape import py_string, py_value
from moec.codegen.triton.runtime_names import BINARY, REDUCE, TORCH_DTYPE_NAMES, UNARY


def emit_triton(m: Module) -> Tuple[str, WeightStore]:
    """(launcher source, constants store): the store holds the inline constants and the host ops' tensor
    attributes, saved beside the launcher as ``model_triton.consts.weights.bin/.json``."""
    f = m.main
    consts = WeightStore()
    names: Dict[int, str] = {}
    lines: List[str] = []
    n = 0

    def name(v) -> str:
        return names[id(v)]

    def fresh(v) -> str:
        nonlocal n
        n += 1
        names[id(v)] = f"v{n}"
        return f"v{n}"

    for i, a in enumerate(f.args):
        lines.append(f"{fresh(a)} = inputs[{i}]")
    uses: Dict[int, List] = {}
    for o in f.ops:
        for v in o.operands:
            uses.setdefault(id(v), []).append(o)
    host = 0
    const_keys: List[str] = []
    segments: List[str] = []   # host_segments' entries (literals)
    pending: List = []         # the host ops of the segment being gathered
    deferred: Dict[int, str] = {}  # moe.experts whose only user is a moe.combine: their call's arguments
    last_use: Dict[int, int] = {id(v): len(f.ops) for v in f.outputs}  # value -> the last op reading it
    for i, o in enumerate(f.ops):
        for v in o.operands:
            last_use[id(v)] = max(last_use.get(id(v), -1), i)
    at = {id(o): i for i, o in enumerate(f.ops)}

    def flush():
        """Close the pending host segment: one line running it, binding the results used after it."""
        if not pending:
            return
        inside = {id(o) for o in pending}
        end = at[id(pending[-1])]
        outs = [r for o in pending for r in o.results if last_use.get(id(r), -1) > end]  # read after the segment
        ins: List = []  # (each value once: an op may read one value twice, cat(x, x))
        for o in pending:
            for v in o.operands:
                if (v.owner is None or id(v.owner) not in inside) and all(v is not x for x in ins):
                    ins.append(v)
        segments.append(_segment(pending, ins, outs, consts))
        call = f"rt_host.host_run(H[{len(segments) - 1}], [{', '.join(name(v) for v in ins)}], stats)"
        lines.append(f"{', '.join(name(r) for r in outs)}{',' if len(outs) == 1 else ''} = {call}" if outs
                     else call)
        pending.clear()

    def device(o, a, args):
        """The launcher lines of ``o`` on its Triton kernel (none for a step folded into a later one), or None
        where it has none."""
        out: List[str] = []
        if o.name == "moe.route":
            w, ids = o.results
            bias = args[1] if len(args) > 1 else "None"
            kw = _kw(a, "k", "scoring", "n_group", "topk_group", "group_score", "post", "norm", "norm_eps", "scale",
                     "capacity", "tie", "drop", "min_weight", "jitter_eps", "norm_min", "group_fill")
            if o.attrs.get("n_shared"):  # always-on expert slots (Inkling)
                kw += f", n_shared={int(o.attrs['n_shared'])}"
            if o.attrs.get("n_skip"):  # skip classes (Zaya)
                kw += f", n_skip={int(o.attrs['n_skip'])}"
            out.append(f"{fresh(w)}, {fresh(ids)} = rt.moe_route({args[0]}, {bias}, {kw})")
            return out
        if o.name == "moe.dispatch":
            # the grouped GEMMs build their own block-aligned plan from ids (tile size chosen at run
            # time); the IR's order/offsets are only materialised when something else reads them
            if all(u.name == "moe.experts" for r in o.results for u in uses.get(id(r), [])):
                for r in o.results:
                    out.append(f"{fresh(r)} = None  # plan built inside moe_experts")
                return out
        if o.name == "moe.experts":
            e = o.extras()
            b_in, b_out, rw, *qn = (name(v) if v is not None else "None" for v in e[:7])
            call = (f"{args[0]}, {args[1]}, {args[4]}, {args[5]}, b_in={b_in}, "
                    f"b_out={b_out}, rw={rw}, "
                    f"{_kw(a, 'weights_at', 'activation', 'gate_layout', 'alpha', 'beta', 'limit', 'wq', 'wq_group')}"
                    f"{_caps(a)}, "
                    f"{_act_quant(a)}"
                    f"q=({', '.join(qn)})")
            post = a.get("post_norm_eps") is not None  # (a per-slot norm: the combine cannot be fused into the GEMM)
            if post:
                call += f", post_norm_eps={py_value(a['post_norm_eps'])}"
                if e.pn_w is not None:  # (its expert's own weight row after the norm, Ergo)
                    call += f", post_norm_w={name(e.pn_w)}"
            users = uses.get(id(o.result), [])
            c = users[0] if len(users) == 1 else None
            if not post and c is not None and c.name == "moe.combine" and c.operands[0] is o.result and \
                    not c.attrs["passthrough"] and not (c.attrs["weighted"] and a["weights_at"] != "none"):
                deferred[id(o.result)] = call  # emitted at the combine: the down projection can sum the slots
                return out
            out.append(f"{fresh(o.result)} = rt.moe_experts({call})")
            return out
        if o.name == "moe.shared_experts":
            gate = args[3] if len(args) > 3 else "None"
            out.append(f"{fresh(o.result)} = rt.moe_shared({args[0]}, {args[1]}, {args[2]}, {gate}, "
                         f"{_kw(a, 'activation', 'gate_layout', 'alpha', 'beta', 'limit')}{_caps(a)})")
            return out
        if o.name == "moe.combine" and id(o.operands[0]) in deferred:
            shared = args[2] if a["has_shared"] else "None"
            out.append(f"{fresh(o.result)} = rt.moe_experts_combine({deferred[id(o.operands[0])]}, shared={shared}, "
                         f"w={args[1]}, weighted={py_value(a['weighted'])})")
            return out
        if o.name == "moe.combine":
            ex = list(args[2:])
            shared = ex.pop(0) if a["has_shared"] else "None"
            px, pids = (ex[0], ex[1]) if a["passthrough"] else ("None", "None")
            out.append(f"{fresh(o.result)} = rt.moe_combine({args[0]}, {args[1]}, {shared}, {px}, {pids}, "
                         f"weighted={py_value(a['weighted'])}, passthrough={py_value(a['passthrough'])})")
            return out
        if o.name == "moec.matmul" and all(v.type.dtype.is_float for v in o.operands):
            out.append(f"{fresh(o.result)} = rt.matmul({args[0]}, {args[1]})")
            return out
        if o.name == "moec.gemm" and all(v.type.dtype.is_float for v in o.operands):
            c = args[2] if len(args) > 2 else "None"
            out.append(f"{fresh(o.result)} = rt.gemm({args[0]}, {args[1]}, {c}, "
                         f"{_kw(a, 'alpha', 'beta', 'trans_a', 'trans_b')})")
            return out
        if o.name in ("moec.layer_norm", "moec.rms_norm") and o.operands[0].type.dtype.is_float and \
                a["axis"] in (-1, o.operands[0].type.rank - 1) and o.operands[1].type.rank == 1:
            bias = args[2] if len(args) > 2 else "None"
            outs = [fresh(r) for r in o.results]
            rms = o.name == "moec.rms_norm"
            lhs = outs[0] + ", _, _" if rms else ", ".join(outs)
            out.append(f"{lhs} = rt.norm({args[0]}, {args[1]}, {bias}, eps={py_value(a['epsilon'])}, "
                         f"rms={py_value(rms)})")
            return out
        if o.name in BINARY and o.operands[0].type.dtype.is_float:
            out.append(f"{fresh(o.result)} = rt.binary({py_value(o.name)}, {args[0]}, {args[1]}, "
                         f"rt.TORCH_DTYPE[{py_value(o.result.type.dtype.mlir)}])")
            return out
        if o.name == "moec.cast" and {o.operands[0].type.dtype.mlir, a["to"].mlir} <= set(TORCH_DTYPE_NAMES):
            out.append(f"{fresh(o.result)} = rt.cast({args[0]}, rt.TORCH_DTYPE[{py_value(a['to'].mlir)}])")
            return out
        if o.name in UNARY and o.operands[0].type.dtype.is_float:
            out.append(f"{fresh(o.result)} = rt.unary({py_value(o.name)}, {args[0]})")
            return out
        if o.name in ("moec.softmax", "moec.log_softmax") and o.operands[0].type.dtype.is_float:
            out.append(f"{fresh(o.result)} = rt.softmax({args[0]}, {py_value(a['axis'])}, "
                         f"log={py_value(o.name == 'moec.log_softmax')})")
            return out
        if o.name == "moec.kv_append":  # (in place: the result is the cache operand's tensor)
            out.append(f"{fresh(o.result)} = rt.kv_append({args[0]}, {args[1]}, {args[2]}, {_kw(a, 'axis')})")
            return out
        if o.name == "moec.kv_step_attention":  # (an f16 cache read widened in the kernel)
            out.append(f"{fresh(o.result)} = rt.kv_step_attention({', '.join(args)}, {_kw(a, 'scale', 'window')})")
            return out
        if o.name == "moec.kv_attention":
            mask = args[4] if len(args) > 4 and o.operands[4] is not None else "None"
            out.append(f"{fresh(o.result)} = rt.kv_attention({', '.join(args[:4])}, {mask}, {_kw(a, 'scale', 'causal')})")
            return out
        if o.name in REDUCE and len(o.operands) == 1 and _reduces_last_axis(o):
            out.append(f"{fresh(o.result)} = rt.reduce_last({py_value(o.name)}, {args[0]})"
                         + (".unsqueeze(-1)" if o.attrs.get("keepdims") else ""))
            return out
        return None

    for idx, o in enumerate(f.ops):
        a = o.attrs
        args = [name(v) if id(v) not in deferred else "<fused>" for v in o.operands]
        if o.name == "moec.constant":
            val = a["value"]
            if isinstance(val, ResourceRef):
                lines.append(f"{fresh(o.result)} = W[{py_value(val.key)}]")
            else:
                key = consts.add(np.asarray(val), f"c{idx}")
                const_keys.append(key)
                lines.append(f"{fresh(o.result)} = C[{py_value(key)}]")
            continue
        out = device(o, a, args)
        if out is not None:
            flush()
            lines.extend(out)
            continue
        # no Triton kernel: the op's reference semantics on the host (counted, reported), gathered with the
        # host ops right after it into one segment (one trip to the host and back)
        host += 1
        for r in o.results:
            fresh(r)
        pending.append(o)
    flush()
    lines.append("return [" + ", ".join(name(v) for v in f.outputs) + "]")
    body = "\n".join("    " + ln for ln in lines)
    model = m.attrs.get("moec.source", m.attrs.get("moec.model", "model"))
    fp8 = any(o.name == "moe.experts" and o.attrs.get("wq") == "fp8" for o in f.ops)
    arg_index = {id(a): i for i, a in enumerate(f.args)}
    inplace = sorted({arg_index[id(o.operands[0])] for o in f.ops if o.name == "moec.kv_append"
                      and id(o.operands[0]) in arg_index})  # (inputs a kernel updates in place)
    seg_body = "".join(f"        {s},\n" for s in segments)
    # the docstring is a single literal built by py_string: model text never lands inside a literal
    return (py_string(f"Generated by moec for model {model!s}: Triton launcher.") + "\n"
            "from moec.codegen.triton import host as rt_host\n"
            "from moec.codegen.triton import runtime as rt\n\n"
            f"INPUTS = {py_value(tuple(_type(a.type) for a in f.args))}\n"
            f"FP8 = {py_value(fp8)}\n"
            f"INPLACE = {py_value(tuple(inplace))}\n"
            f"HOST_OPS_STATIC = {host}\n"
            f"CONSTANTS = {py_value(tuple(const_keys))}\n\n\n"
            "def host_segments(A):\n"
            "    seg, dt = rt_host.segment, rt_host.dtype\n"
            "    return [\n" + seg_body + "    ]\n\n\n"
            "def run(W, C, H, inputs, stats):\n" + body + "\n"), consts


def _type(t) -> tuple:
    """A tensor type as a literal: (element type, dims), dims ints, symbol names or None."""
    return (t.dtype.mlir, tuple(t.shape))


def _attr(v, consts: WeightStore, hint: str) -> str:
    """An attribute value as launcher source: a literal, ``dt(..)`` for an element type, ``A[key]`` for a tensor
    (stored in the constants store)."""
    if isinstance(v, DType):
        return f"dt({py_value(v.mlir)})"
    if isinstance(v, np.ndarray):
        return f"A[{py_value(consts.add(v, hint))}]"
    if isinstance(v, ResourceRef):
        raise TypeError("a weight reference is not an attribute a host op may hold")
    return py_value(v)


def _segment(ops, ins, outs, consts: WeightStore) -> str:
    """``seg(input types, ops, outputs)``: ops as (name, attributes, operand numbers, result types, loc), values
    numbered inputs first, then every op's results in order."""
    num: Dict[int, int] = {id(v): i for i, v in enumerate(ins)}
    recs = []
    for o in ops:
        attrs = "{" + ", ".join(f"{py_string(k)}: {_attr(v, consts, 'a_' + k)}" for k, v in o.attrs.items()) + "}"
        recs.append(f"({py_string(o.name)}, {attrs}, {py_value(tuple(num[id(v)] for v in o.operands))}, "
                    f"{py_value(tuple(_type(r.type) for r in o.results))}, "
                    f"{py_string(o.loc) if o.loc else 'None'})")
        for r in o.results:
            num[id(r)] = len(num)
    return (f"seg({py_value(tuple(_type(v.type) for v in ins))}, "
            f"[{', '.join(recs)}], {py_value(tuple(num[id(v)] for v in outs))})")


def _kw(attrs, *keys) -> str:
    """Keyword arguments ``key=<literal>`` for the named attributes (literals by ``py_value``)."""
    return ", ".join(f"{k}={py_value(attrs[k])}" for k in keys)


def _caps(attrs) -> str:
    """``, gate_softcap=.., up_softcap=..`` where set (softcap_swiglu experts; absent otherwise)."""
    return "".join(f", {k}={py_value(attrs[k])}" for k in ("gate_softcap", "up_softcap") if attrs.get(k) is not None)


def _reduces_last_axis(o) -> bool:
    axes = o.attrs.get("axes")
    r = o.operands[0].type.rank
    if not o.operands[0].type.dtype.is_float or r == 0:
        return False
    if axes is None:
        return False
    return list(axes) in ([r - 1], [-1])


def _act_quant(attrs) -> str:
    """``act_quant="fp8", `` for experts whose GEMM inputs are quantised per token to e4m3 (aq=fp8: the
    fp8 x fp8 kernels); nothing otherwise (the kernels' default, activations as x)."""
    aq = attrs.get("aq", "none")
    if aq == "none":
        return ""
    if aq != "fp8":  # (the driver's mode check keeps int8 activations off this target)
        raise ValueError(f"the Triton kernels take activations as x or fp8, not aq={aq}")
    return f"act_quant={py_value(aq)}, "
