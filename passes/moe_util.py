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


def evaluate(m, f: Function, targets, feeds: Dict[int, "object"]):
    """Evaluate ``targets`` (Values) with the reference semantics, given arrays for some values
    (``feeds``: id(Value) -> array; function arguments must be fed if they are needed).

    Only the backward slice of the targets is evaluated, and a fed value stops the walk, so a
    pass can probe part of a graph, e.g. run a mask computation on chosen expert ids.
    Raises KeyError if an unfed argument is needed."""
    import numpy as np
    from ..ir.core import ResourceRef
    env = dict(feeds)
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
        if o.name == "moec.constant":
            val = o.attrs["value"]
            outs = [np.asarray(m.weights[val.key]) if isinstance(val, ResourceRef) else val]
        else:
            outs = o.reference(*[env[id(v)] for v in o.operands])
        for r, a in zip(o.results, outs):
            env[id(r)] = a
    return [env[id(v)] for v in targets]
