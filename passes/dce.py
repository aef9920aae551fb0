"""dead-code-elimination: remove pure ops whose results are unused; drop unused weights.

Rewrites:
  * an op with the "pure" trait none of whose results is used (by an op or an
    output) is erased;
  * weights no longer referenced by any ``moec.constant`` leave the store.
"""
from __future__ import annotations

from dataclasses import dataclass

from moec.ir import Module
from moec.ir.core import ResourceRef
from moec.ir.opdef import has_trait
from moec.passes.base import Pass, register_pass


@register_pass
@dataclass
class DeadCodeElimination(Pass):
    name = "dce"

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            live = {id(v) for v in f.outputs}
            keep = []
            for o in reversed(f.ops):
                used = any(id(r) in live for r in o.results)
                if not used and has_trait(o, "pure"):
                    changed = True
                    continue
                keep.append(o)
                for v in o.operands:
                    live.add(id(v))
            f.ops = list(reversed(keep))
        used_keys = {o.attrs["value"].key for o in m.ops()
                     if o.name == "moec.constant" and isinstance(o.attrs["value"], ResourceRef)}
        if len(used_keys) != len(m.weights):
            m.weights.remove_unused(used_keys)
            changed = True
        return changed
