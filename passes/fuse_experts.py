"""fuse-experts: fold the combine's routing-weight multiply into the experts' epilogue.

Rewrites:
  * ``combine(experts(..., weights_at="none"), w, weighted=true)`` where the experts' result has no
    other use  ->  ``experts(..., w, weights_at="output")`` and ``combine(..., weighted=false)``:
    the multiply happens in the down projection's epilogue, while the row is still in registers.

Not rewritten (by design): shared experts stay a separate ``moe.shared_experts`` beside the
routed ones.  Every token uses them, so on every target they are a dense GEMM over all tokens
that needs no dispatch; appending them to the routed stacks would add their rows to the sort
and pad and buy nothing.  (Expert weights arrive here already stacked [E, ...] with gate and up
fused into one [E, 2F, D] GEMM: the recognition passes build them that way.)
"""
from __future__ import annotations

from dataclasses import dataclass

from moec.ir import Module
from moec.ir.opdef import OPS
from moec.passes.base import Pass, register_pass
from moec.passes.moe_util import single_user


@register_pass
@dataclass
class FuseExperts(Pass):
    name = "fuse-experts"
    fold_weights: bool = True

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            uses = f.uses()
            for i, c in enumerate(list(f.ops)):
                if c.name != "moe.combine" or not c.attrs["weighted"] or not self.fold_weights:
                    continue
                ex = c.operands[0].owner
                if ex is None or ex.name != "moe.experts" or ex.attrs["weights_at"] != "none":
                    continue
                if single_user(f, ex.results[0], uses) is not c:
                    continue
                w = c.operands[1]
                if w.type.dtype != ex.results[0].type.dtype:
                    continue
                attrs = dict(ex.attrs, weights_at="output")
                b_in, b_out, _ = ex._extras()
                new_ex = OPS["moe.experts"].create(ex.with_extras(b_in, b_out, w), attrs, ex.loc,
                                                   [ex.results[0].type])
                new_ex.results[0].name = ex.results[0].name
                f.ops[f.ops.index(ex)] = new_ex
                f.replace_all_uses(ex.results[0], new_ex.results[0])
                c.attrs["weighted"] = False
                changed = True
        return changed
