"""Helpers shared by the MoE passes: walking from one MoE op to the others of its layer."""
from __future__ import annotations

from typing import Dict, List, Optional

from ..ir import Function, Operation, Value


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


def evaluate(m, f: Function, targets, feeds: Dict[int, "object"], widened: bool = False):
    """Evaluate ``targets`` (Values) with the reference semantics, given arrays for some values
    (``feeds``: id(Value) -> array; function arguments must be fed if they are needed).

    Only the backward slice of the targets is evaluated, and a fed value stops the walk, so a
    pass can probe part of a graph, e.g. run a mask computation on chosen expert ids.
    ``widened``: evaluate a half-precision graph as its f32 analogue (half constants and results
    widened, casts to f16/bf16 kept in f32), so that a pass can tell structures apart at f32
    precision instead of through half-precision rounding noise.
    Raises KeyError if an unfed argument is needed."""
    import numpy as np
    env = {k: widen(a) for k, a in feeds.items()} if widened else dict(feeds)
    needed = set()
    stack = [v for v in targets]
    while stack:
        v = stack.pop()
        if id(v) in env or id(v) in needed:
            continue
        needed.add(id(v))
        if v.owner is None:
            raise KeyError(f"argument {v.name} is needed but not fed")
        stack.extend(v.owner.operands)
    for o in f.ops:
        if not any(id(r) in needed and id(r) not in env for r in o.results):
            continue
        outs = eval_op(m, o, [env[id(v)] for v in o.operands], widened)
        for r, a in zip(o.results, outs):
            env[id(r)] = a
    return [env[id(v)] for v in targets]


def eval_op(m, o: Operation, ins, widened: bool = False):
    """One op's reference semantics on ``ins`` (see :func:`evaluate` for ``widened``)."""
    import numpy as np
    from ..ir import DType
    from ..ir.core import ResourceRef
    if o.name == "moec.constant":
        val = o.attrs["value"]
        outs = [np.asarray(m.weights[val.key]) if isinstance(val, ResourceRef) else val]
    elif widened and o.name == "moec.cast" and o.attrs["to"] in (DType.F16, DType.BF16):
        x = np.asarray(ins[0])
        outs = [x.astype(np.float32) if x.dtype != np.float32 else x]
    else:
        outs = o.reference(*ins)
    return [widen(a) for a in outs] if widened else outs
