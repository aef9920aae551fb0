"""schedule-dispatch: decide, per target description, how tokens reach their experts.

Rewrites (attributes of ``moe.dispatch``; the plan's value never changes, only the code that
computes and uses it):
  * ``strategy``: ``capacity`` when the router has a capacity (Switch), else ``sort_pad``;
  * ``gemv_max_slots``: batches with T*k at or below it take the per-token GEMV path at run time
    (no sort, no gathered copy): on a CPU while there is about one slot per expert or fewer,
    since then a grouped GEMM has no weight reuse to win; on GPUs/NPUs below one row tile;
  * ``block``: rows per block that expert segments are padded to (the target's GEMM row tile:
    1 on CPUs, whose kernels handle ragged rows; BLOCK_M on Triton; 16 on Ascend's cube);
  * ``col_block``: expert-width columns per work item, sized so a work item's weight slice fits
    half the per-core cache/buffer, and ``cores``: workers the (expert x row block x column
    block) items are balanced over.
The decision is recorded in the layer's report entry (``dispatch``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir import Module
from ..ir.ops.moe import update_moe_layer
from ..targets.description import TargetDesc, host_cpu
from .base import Pass
from .moe_util import layer_of


@dataclass
class ScheduleDispatch(Pass):
    name = "schedule-dispatch"
    target: TargetDesc = field(default_factory=host_cpu)

    def decide(self, E: int, k: int, D: int, F: int, itemsize: int, capacity: int) -> dict:
        t = self.target
        strategy = "capacity" if capacity else "sort_pad"
        if t.name == "cpu":
            block = 1
            gemv = E
            budget = t.l2_bytes // 2
        elif t.name == "ascend":  # MoeInitRouting's dropless layout: rows sorted by expert, unpadded
            block, gemv = 1, int(t.get("block_m", 16))
            budget = t.l1_bytes // 2
        else:
            block = int(t.get("block_m", 16))
            gemv = block // 2 if t.name == "triton" else block
            budget = t.l1_bytes // 2
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
