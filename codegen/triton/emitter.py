"""IR -> model_triton.py: a straight-line launcher over the Triton kernels (runtime.py/kernels.py).

The generated module defines ``run(W, M, inputs, stats)``: W maps weight keys to device tensors,
M is the IR module (for the few ops without a Triton kernel, run on the host by their reference
semantics and counted in ``stats``), inputs are device tensors.  Values are named v<N>.
Every attribute, weight key and name reaches the launcher as a literal made by
``moec.codegen.escape`` (``py_value`` / ``py_string``), never pasted with ``repr`` or ``str``.
"""
from __future__ import annotations

from typing import Dict, List

from moec.ir import Module
from moec.ir.core import ResourceRef
from moec.codegen.escape import py_string, py_value
from moec.codegen.triton.runtime_names import BINARY, REDUCE, TORCH_DTYPE_NAMES, UNARY

# ops that are pure data movement: run by torch's view/copy machinery (no arithmetic)
_TORCH_MOVES = {"moec.reshape", "moec.transpose", "moec.squeeze", "moec.unsqueeze", "moec.flatten",
                "moec.identity", "moec.expand", "moec.concat", "moec.slice"}


def emit_triton(m: Module) -> str:
    f = m.main
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
    deferred: Dict[int, str] = {}  # moe.experts whose only user is a moe.combine: their call's arguments
    for idx, o in enumerate(f.ops):
        a = o.attrs
        args = [name(v) if id(v) not in deferred else "<fused>" for v in o.operands]
        if o.name == "moec.constant":
            val = a["value"]
            if isinstance(val, ResourceRef):
                lines.append(f"{fresh(o.result)} = W[{py_value(val.key)}]")
            else:
                lines.append(f"{fresh(o.result)} = rt.run_constant(M_CONSTS[{idx}])")
            continue
        if o.name == "moe.route":
            w, ids = o.results
            bias = args[1] if len(args) > 1 else "None"
            kw = _kw(a, "k", "scoring", "n_group", "topk_group", "group_score", "post", "norm", "norm_eps", "scale",
                     "capacity", "tie", "drop", "min_weight", "jitter_eps", "norm_min", "group_fill")
            lines.append(f"{fresh(w)}, {fresh(ids)} = rt.moe_route({args[0]}, {bias}, {kw})")
            continue
        if o.name == "moe.dispatch":
            # the grouped GEMMs build their own block-aligned plan from ids (tile size chosen at run
            # time); the IR's order/offsets are only materialised when something else reads them
            if all(u.name == "moe.experts" for r in o.results for u in uses.get(id(r), [])):
                for r in o.results:
                    lines.append(f"{fresh(r)} = None  # plan built inside moe_experts")
                continue
        if o.name == "moe.experts":
            e = o.extras()
            b_in, b_out, rw, *qn = (name(v) if v is not None else "None" for v in e)
            call = (f"{args[0]}, {args[1]}, {args[4]}, {args[5]}, b_in={b_in}, "
                    f"b_out={b_out}, rw={rw}, "
                    f"{_kw(a, 'weights_at', 'activation', 'gate_layout', 'alpha', 'beta', 'limit', 'wq', 'wq_group')}"
                    f"{_caps(a)}, "
                    f"q=({', '.join(qn)})")
            users = uses.get(id(o.result), [])
            c = users[0] if len(users) == 1 else None
            if c is not None and c.name == "moe.combine" and c.operands[0] is o.result and \
                    not c.attrs["passthrough"] and not (c.attrs["weighted"] and a["weights_at"] != "none"):
                deferred[id(o.result)] = call  # emitted at the combine: the down projection can sum the slots
                continue
            lines.append(f"{fresh(o.result)} = rt.moe_experts({call})")
            continue
        if o.name == "moe.shared_experts":
            gate = args[3] if len(args) > 3 else "None"
            lines.append(f"{fresh(o.result)} = rt.moe_shared({args[0]}, {args[1]}, {args[2]}, {gate}, "
                         f"{_kw(a, 'activation', 'gate_layout', 'alpha', 'beta', 'limit')}{_caps(a)})")
            continue
        if o.name == "moe.combine" and id(o.operands[0]) in deferred:
            shared = args[2] if a["has_shared"] else "None"
            lines.append(f"{fresh(o.result)} = rt.moe_experts_combine({deferred[id(o.operands[0])]}, shared={shared}, "
                         f"w={args[1]}, weighted={py_value(a['weighted'])})")
            continue
        if o.name == "moe.combine":
            ex = list(args[2:])
            shared = ex.pop(0) if a["has_shared"] else "None"
            px, pids = (ex[0], ex[1]) if a["passthrough"] else ("None", "None")
            lines.append(f"{fresh(o.result)} = rt.moe_combine({args[0]}, {args[1]}, {shared}, {px}, {pids}, "
                         f"weighted={py_value(a['weighted'])}, passthrough={py_value(a['passthrough'])})")
            continue
        if o.name == "moec.matmul" and all(v.type.dtype.is_float for v in o.operands):
            lines.append(f"{fresh(o.result)} = rt.matmul({args[0]}, {args[1]})")
            continue
        if o.name == "moec.gemm" and all(v.type.dtype.is_float for v in o.operands):
            c = args[2] if len(args) > 2 else "None"
            lines.append(f"{fresh(o.result)} = rt.gemm({args[0]}, {args[1]}, {c}, "
                         f"{_kw(a, 'alpha', 'beta', 'trans_a', 'trans_b')})")
            continue
        if o.name in ("moec.layer_norm", "moec.rms_norm") and o.operands[0].type.dtype.is_float and \
                a["axis"] in (-1, o.operands[0].type.rank - 1) and o.operands[1].type.rank == 1:
            bias = args[2] if len(args) > 2 else "None"
            outs = [fresh(r) for r in o.results]
            rms = o.name == "moec.rms_norm"
            lhs = outs[0] + ", _, _" if rms else ", ".join(outs)
            lines.append(f"{lhs} = rt.norm({args[0]}, {args[1]}, {bias}, eps={py_value(a['epsilon'])}, "
                         f"rms={py_value(rms)})")
            continue
        if o.name in BINARY and o.operands[0].type.dtype.is_float:
            lines.append(f"{fresh(o.result)} = rt.binary({py_value(o.name)}, {args[0]}, {args[1]}, "
                         f"rt.TORCH_DTYPE[{py_value(o.result.type.dtype.mlir)}])")
            continue
        if o.name == "moec.cast" and {o.operands[0].type.dtype.mlir, a["to"].mlir} <= set(TORCH_DTYPE_NAMES):
            lines.append(f"{fresh(o.result)} = rt.cast({args[0]}, rt.TORCH_DTYPE[{py_value(a['to'].mlir)}])")
            continue
        if o.name in UNARY and o.operands[0].type.dtype.is_float:
            lines.append(f"{fresh(o.result)} = rt.unary({py_value(o.name)}, {args[0]})")
            continue
        if o.name in ("moec.softmax", "moec.log_softmax") and o.operands[0].type.dtype.is_float:
            lines.append(f"{fresh(o.result)} = rt.softmax({args[0]}, {py_value(a['axis'])}, "
                         f"log={py_value(o.name == 'moec.log_softmax')})")
            continue
        if o.name in REDUCE and len(o.operands) == 1 and _reduces_last_axis(o):
            lines.append(f"{fresh(o.result)} = rt.reduce_last({py_value(o.name)}, {args[0]})"
                         + (".unsqueeze(-1)" if o.attrs.get("keepdims") else ""))
            continue
        # no Triton kernel: the op's reference semantics on the host (counted, reported)
        host += 1
        outs = ", ".join(fresh(r) for r in o.results)
        lines.append(f"{outs}{',' if len(o.results) == 1 else ''} = rt.host_op(M_OPS[{idx}], [{', '.join(args)}], "
                     f"stats)")
    lines.append("return [" + ", ".join(name(v) for v in f.outputs) + "]")
    body = "\n".join("    " + ln for ln in lines)
    model = m.attrs.get("moec.source", m.attrs.get("moec.model", "model"))
    # the docstring is a single literal built by py_string: model text never lands inside a literal
    return (py_string(f"Generated by moec for model {model!s}: Triton launcher.") + "\n"
            "from moec.codegen.triton import runtime as rt\n\n"
            f"HOST_OPS_STATIC = {host}\n\n\n"
            "def run(W, M_OPS, M_CONSTS, inputs, stats):\n" + body + "\n")


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
