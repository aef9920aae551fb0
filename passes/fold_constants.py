"""fold-constants: evaluate pure ops whose operands are all constants.

Rewrites:
  * ``op(constant, constant, ...)`` with the "pure" trait, when every result is
    small (at most ``max_elements`` elements), becomes ``moec.constant`` ops
    holding the op's reference-semantics result.
  * Larger results are folded only where that does not grow the weights: when the
    op is the only user of constant operands at least as large as its results (a
    weight's transpose, cast or reshape, as ``nn.Linear`` exports as ``mm(x, t(W))``).
    The result goes to the weight store and DCE drops the operand.  Without this a
    target would redo the layout change on every call.  Other large results are left
    for the target (folding them would bloat the weights file).
  * Slices of constants are constants, whatever the number of uses of the sliced constant: a
    data-movement op (gather, slice, split, squeeze, unsqueeze, reshape, flatten, transpose) of
    constants whose results hold at most half the elements of its data operand (a true subset: a
    per-expert Gather from a stacked [E, ...] weight is 1/E of it) is folded into the weight store.
    Without this an unrecognised MoE layer copies every expert's weights out of the stack on every
    call.  The weights grow by nothing once every use of the source is a folded slice (DCE then
    drops the source); while the source is still used elsewhere, the slices folded from it are
    capped at its own size (the weights at most double; slices past the cap, e.g. the same slice
    taken many times, stay ops).  A same-size view (reshape, transpose) of a constant with other
    uses is not folded: it would store the data twice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moec.ir import DType, Module, TensorType
from moec.ir.core import IRError, ResourceRef
from moec.ir.opdef import OPS, const_value, has_trait
from moec.passes.base import Pass, register_pass

# pure data movement: the result's elements are a selection of the data operand's (operand 0)
SLICE_OPS = frozenset(("moec.gather", "moec.slice", "moec.split", "moec.squeeze", "moec.unsqueeze",
                       "moec.reshape", "moec.flatten", "moec.transpose"))


@register_pass
@dataclass
class FoldConstants(Pass):
    name = "fold-constants"
    max_elements: int = 4096
    max_layout_elements: int = 1 << 28  # bound on a non-growing fold's operands (compile time)

    def run(self, m: Module) -> bool:
        changed = False
        const_cls = OPS["moec.constant"]
        for f in m.functions:
            uses = f.uses()
            outputs = {id(v) for v in f.outputs}
            new_ops = []
            for o in f.ops:
                if (o.name != "moec.constant" and has_trait(o, "pure") and o.operands
                        and all(v.owner is not None and v.owner.name == "moec.constant" for v in o.operands)):
                    vals = [np.asarray(const_value(v, m.weights)) for v in o.operands]
                    n_out = sum(int(np.prod(r.type.shape)) if r.type.is_static else 1 << 62 for r in o.results)
                    freed = sum(int(np.size(a)) for v, a in zip(o.operands, vals)
                                if len(uses.get(id(v), ())) == 1 and id(v) not in outputs
                                and isinstance(v.owner.attrs["value"], ResourceRef))
                    small = n_out <= self.max_elements and all(v.size <= (1 << 22) for v in vals)
                    layout = n_out <= freed and all(v.size <= self.max_layout_elements for v in vals)
                    # a slice of a constant (any number of uses): at most half of its data operand
                    sliced = (o.name in SLICE_OPS and 2 * n_out <= int(np.size(vals[0]))
                              and all(v.size <= self.max_layout_elements for v in vals))
                    src0 = o.operands[0].owner.attrs["value"]
                    if sliced and n_out > self.max_elements and isinstance(src0, ResourceRef):
                        grown = m.__dict__.setdefault("_moec_slice_growth", {})  # (source key -> elements)
                        if grown.get(src0.key, 0) + n_out > int(np.size(vals[0])):
                            sliced = False  # the cap: slices of one source stored at most once over
                        elif n_out > freed:
                            grown[src0.key] = grown.get(src0.key, 0) + n_out
                    layout = layout or sliced
                    if small or layout:
                        try:
                            outs = o.reference(*vals)
                        except Exception:
                            outs = None
                        if outs is not None and (layout or all(out.size <= self.max_elements for out in outs)):
                            for r, out in zip(o.results, outs):
                                out = np.asarray(out, order="C")
                                if out.size > self.max_elements:  # (a layout fold) into the weight store
                                    src = next((v.owner.attrs["value"].key for v in o.operands
                                                if isinstance(v.owner.attrs["value"], ResourceRef)), "c")
                                    key = m.weights.add(out, f"{src}.{o.name.split('.')[-1]}")
                                    c = const_cls.create([], {"value": ResourceRef(key)}, o.loc,
                                                         [TensorType(DType.from_np(out.dtype), out.shape)])
                                else:
                                    c = const_cls.create([], {"value": out}, o.loc)
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
