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
