"""schedule-dispatch: decide, per target description, how tokens reach their experts.

Rewrites (attributes of ``moe.dispatch``; the plan's value never changes, only the code that
computes and uses it):
  * ``strategy``: ``capacity`` when the router has a capacity (Switch), else ``sort_pad``;
  * ``gemv_max_slots``: batches with T*k at or below it take the per-token GEMV path at run time
    (no sort, no gathered copy): the target's ``gemv_max_slots`` (0: the number of experts -- on a
    CPU while there is about one slot per expert or fewer, since then a grouped GEMM has no weight
    reuse to win; on GPUs/NPUs below a row tile);
  * ``block``: rows per block that expert segments are padded to (the target's ``dispatch_block``:
    1 where the kernels handle ragged rows, the GEMM row tile BLOCK_M on Triton);
  * ``col_block``: expert-width columns per work item, sized so a work item's weight slice fits
    the target's ``tile_budget_bytes`` (half a per-core cache/buffer), and ``cores``: workers the
    (expert x row block x column block) items are balanced over.
The decision is recorded in the layer's report entry (``dispatch``).  Only TargetDesc fields are
read (never the target's name): the target is required.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from moec.ir import Module
from moec.ir.ops.moe import update_moe_layer
from moec.passes.base import Pass, register_pass
from moec.passes.moe_util import layer_of

if TYPE_CHECKING:  # (passes read descriptions; they do not import targets)
    from moec.targets.base import TargetDesc


@register_pass
@dataclass
class ScheduleDispatch(Pass):
    name = "schedule-dispatch"
    target: "TargetDesc"

    def decide(self, E: int, k: int, D: int, F: int, itemsize: int, capacity: int) -> dict:
        t = self.target
        strategy = "capacity" if capacity else "sort_pad"
        block = t.dispatch_block
        gemv = t.gemv_max_slots or E
        budget = t.tile_budget_bytes
        # a column block covers rows of w_in (gate+up) and columns of w_out: about 3*D values each
        per_col = int(3 * D * itemsize)
        col = max(16, min(F, budget // max(per_col, 1)))
        col = F if col >= F else max(16, col // 16 * 16)
        return {"strategy": strategy, "block": block, "gemv_max_slots": gemv, "col_block": col,
                "cores": t.cores}

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            uses = f.uses()
            for o in f.ops:
                if o.name != "moe.dispatch" or o.attrs.get("cores"):
                    continue  # already scheduled
                route = o.operands[0].owner
                capacity = route.attrs.get("capacity", 0) if route is not None and route.name == "moe.route" else 0
                ex = next((u for u in uses.get(id(o.results[0]), []) if u.name == "moe.experts"), None)
                if ex is None:
                    continue
                w_in, w_out = ex.operands[4].type, ex.operands[5].type
                E, D, F = w_in.shape[0], w_out.shape[1], w_out.shape[2]
                wq = ex.attrs.get("wq", "none")
                if wq == "int4" and isinstance(F, int):
                    F *= 2  # packed: two values per byte
                k = o.operands[0].type.shape[1]
                if not all(isinstance(d, int) for d in (E, D, F, k)):
                    continue
                itemsize = {"bf16": 2, "int8": 1, "int4": 0.5}.get(wq, w_in.dtype.itemsize)
                d = self.decide(E, k, D, F, itemsize, capacity)
                o.attrs.update(d)
                name = layer_of(f, o, uses)
                if name:
                    update_moe_layer(m, name, dispatch=d)
                changed = True
        return changed
