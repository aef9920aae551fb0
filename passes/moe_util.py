"""Helpers shared by the MoE passes: walking from one MoE op to the others of its layer."""
from __future__ import annotations

from typing import Dict, List, Optional

from moec.ir import Function, Operation, Value


def users(f: Function) -> Dict[int, List[Operation]]:
    return f.uses()


def single_user(f: Function, v: Value, uses=None) -> Optional[Operation]:
    u = (uses or f.uses()).get(id(v), [])
    if len(u) != 1 or any(o is v for o in f.outputs):
        return None
    return u[0]


def layer_of(f: Function, dispatch: Operation, uses=None) -> Optional[str]:
    """The layer name recorded on the moe.combine downstream of a moe.dispatch."""
    uses = uses or f.uses()
    for ex in uses.get(id(dispatch.results[0]), []):
        if ex.name != "moe.experts":
            continue
        for c in uses.get(id(ex.results[0]), []):
            if c.name == "moe.combine" and c.attrs.get("layer"):
                return c.attrs["layer"]
    return None


def widen(a):
    """f16 / bf16 arrays as f32 (exact); anything else unchanged."""
    import numpy as np
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype == np.float16 or a.dtype.name == "bfloat16" else a


class ShapeOnly:
    """A feed that gives a value's shape and nothing else: only ``moec.shape`` may read it (any other op
    that needs the value raises KeyError, as for an argument not fed).  A probe of an MoE layer feeds the
    model's other arguments so: a size torch.export computed from the input_ids' shape (the number of
    (token, slot) pairs of a grouped_mm layer) then follows the probe's token count."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(int(d) for d in shape), dtype

    def array(self):
        import numpy as np
        return np.broadcast_to(np.zeros((), self.dtype), self.shape)  # (no storage: the shape is what is read)


def evaluate(m, f: Function, targets, feeds: Dict[int, "object"], widened: bool = False):
    """Evaluate ``targets`` (Values) with the reference semantics, given arrays for some values
    (``feeds``: id(Value) -> array; function arguments must be fed if they are needed).

    Only the backward slice of the targets is evaluated, and a fed value stops the walk, so a
    pass can probe part of a graph, e.g. run a mask computation on chosen expert ids.
    ``widened``: evaluate a half-precision graph as its f32 analogue (half constants and results
    widened, casts to f16/bf16 kept in f32), so that a pass can tell structures apart at f32
    precision instead of through half-precision rounding noise.
    Raises KeyError if an unfed argument is needed."""
    from moec.ir.walk import needed_ops, walk
    env = {k: (a if isinstance(a, ShapeOnly) else widen(a)) for k, a in feeds.items()} if widened else dict(feeds)

    def probe(o, ins):  # a shape-only feed reaches moec.shape only; half precision widened (eval_op)
        if any(isinstance(a, ShapeOnly) for a in ins):
            if o.name != "moec.shape":
                raise KeyError(f"{o.name} needs the values of a value fed by its shape only")
            ins = [a.array() if isinstance(a, ShapeOnly) else a for a in ins]
        return eval_op(m, o, ins, widened)

    walk(needed_ops(f.ops, targets, env), env, probe)
    return [env[id(v)] for v in targets]


def eval_op(m, o: Operation, ins, widened: bool = False):
    """One op's reference semantics on ``ins`` (see :func:`evaluate` for ``widened``)."""
    import numpy as np
    from moec.ir import DType
    from moec.ir.walk import reference
    if widened and o.name == "moec.cast" and o.attrs["to"] in (DType.F16, DType.BF16):
        x = np.asarray(ins[0])
        outs = [x.astype(np.float32) if x.dtype != np.float32 else x]
    else:
        outs = reference(o, ins, m.weights)  # (a constant: its value, a weight from the store)
    return [widen(a) for a in outs] if widened else outs


# ops that only re-view their operand (row-major order kept): a flatten of leading dims among them
LAYOUT_OPS = ("moec.reshape", "moec.flatten", "moec.squeeze", "moec.unsqueeze")


def same_tokens(f: Function, x: Value, uses=None) -> List[Value]:
    """Every [N, D] value in ``f`` that holds exactly x's token rows, x first.

    ``x`` is a [T, D] token matrix.  A reshape / flatten / squeeze / unsqueeze whose operand and
    result both end in the same static dim D keeps the row-major order of the D-element rows, so
    reshape(x) to [-1, D], a [B, S, D] input and every other [N, D] view of it are the same T rows:
    a router that reads ``reshape(hidden.view(-1, D), -1, D)`` while the experts read
    ``hidden.view(-1, D)`` (transformers' Mixtral) reads the same tokens.  The walk goes up
    through such views to their source, then down through such views from it; only the rank-2
    values of any rank are returned, x first (a probe [T, D] is fed to the rank-2 ones as it is and
    to the others reshaped)."""
    D = x.type.shape[-1] if x.type.rank >= 1 else None
    if not isinstance(D, int) or x.type.rank != 2:
        return [x]
    uses = uses if uses is not None else f.uses()

    from moec.ir import DType
    half, wide = (DType.F16, DType.BF16), (DType.F32, DType.F64)

    def keeps_rows(o: Operation) -> bool:
        if len(o.results) != 1 or not o.operands:
            return False
        a, r = o.operands[0].type, o.results[0].type
        if o.name == "moec.cast":  # an exact widening (a half x cast to f32 for the router) keeps the values
            return a.shape == r.shape and a.rank >= 1 and a.shape[-1] == D and \
                (a.dtype == r.dtype or (a.dtype in half and r.dtype in wide))
        if o.name not in LAYOUT_OPS:
            return False
        return a.rank >= 1 and r.rank >= 1 and a.shape[-1] == D and r.shape[-1] == D and \
            a.dtype == r.dtype
    root = x
    while root.owner is not None and keeps_rows(root.owner):
        root = root.owner.operands[0]
    out, seen, stack = [x], {id(x)}, [root]
    while stack:
        v = stack.pop()
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
        for u in uses.get(id(v), []):
            if keeps_rows(u) and u.operands[0] is v:
                stack.append(u.results[0])
    return out
