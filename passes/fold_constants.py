"""fold-constants: evaluate pure ops whose operands are all constants.

Rewrites:
  * ``op(constant, constant, ...)`` with the "pure" trait, when every result is
    small (at most ``max_elements`` elements), becomes ``moec.constant`` ops
    holding the op's reference-semantics result.  Larger results are left for
    the target (folding them would bloat the weights file).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Module
from ..ir.core import IRError, ResourceRef
from ..ir.opdef import OPS, has_trait
from .base import Pass


@dataclass
class FoldConstants(Pass):
    name = "fold-constants"
    max_elements: int = 4096

    def run(self, m: Module) -> bool:
        changed = False
        const_cls = OPS["moec.constant"]
        for f in m.functions:
            new_ops = []
            for o in f.ops:
                if (o.name != "moec.constant" and has_trait(o, "pure") and o.operands
                        and all(v.owner is not None and v.owner.name == "moec.constant" for v in o.operands)):
                    vals = []
                    for v in o.operands:
                        val = v.owner.attrs["value"]
                        vals.append(np.asarray(m.weights[val.key]) if isinstance(val, ResourceRef) else val)
                    if sum(int(np.prod(r.type.shape)) if r.type.is_static else 1 << 62 for r in o.results) \
                            <= self.max_elements and all(v.size <= (1 << 22) for v in vals):
                        try:
                            outs = o.reference(*vals)
                        except Exception:
                            outs = None
                        if outs is not None and all(out.size <= self.max_elements for out in outs):
                            for r, out in zip(o.results, outs):
                                c = const_cls.create([], {"value": np.asarray(out, order="C")}, o.loc)
                                c.results[0].name = r.name
                                if not r.type.matches(out.shape) or c.results[0].type.dtype != r.type.dtype:
                                    raise IRError(f"fold-constants: op {o.describe()} reference result "
                                                  f"{out.dtype}{list(out.shape)} does not match {r.type}")
                                new_ops.append(c)
                                f.replace_all_uses(r, c.results[0])
                            changed = True
                            continue
                new_ops.append(o)
            f.ops = new_ops
        return changed
