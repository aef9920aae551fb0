"""kv-cache-inplace: transformers' ``present = Concat(past, new)`` turned into an append into a cache
buffer of fixed capacity (issue 17 item 4).  Run only when asked (the decode path's compile,
``moec.decode.compile_past_kv(..., inplace=True)``): it changes the function's signature.

Given the present -> past pairs of a past_key_values export (``decode.kv_binding``: present output name,
past input name) and a capacity M, for each pair whose present value is ``moec.concat(past, new)`` on the
sequence axis (2) of [B, Hkv, P, D] tensors (B, Hkv, D static):

  * the past argument is replaced by a buffer argument ``<past>`` of type [B, Hkv, M, D] (same name: the
    caller owns the buffer, allocated once), and one argument ``pos`` ([1] i64: the rows already held,
    P) is added;
  * the Concat becomes ``moec.kv_append(buffer, new, pos)`` (the C target writes the T new rows in place:
    O(T) bytes per step);
  * every ``moec.attention(q, present_k, present_v, mask)`` reading a pair's keys and values becomes
    ``moec.kv_attention(q, buffer_k', buffer_v', pos, mask)`` (attention over the first pos + T rows:
    the same math; ir/ops/kv.py);
  * the shapes read off the past ([B, Hkv, pos, D]) or the present ([B, Hkv, pos + T, D]) by
    ``moec.shape`` are rebuilt from ``pos`` and the new rows' length;
  * the present outputs are dropped (the caller's buffers hold them);
  * with ``cache_dtype="f16"`` the buffers of f32 pasts are f16 (a half-precision cache: ``moec.kv_append``
    rounds the new rows to f16, ``moec.kv_attention`` reads them widened; ir/ops/kv.py) -- the buffers'
    only readers are those two ops and shape reads, so nothing else sees the narrower type.

A pair whose present has any other reader (an attention that was not recognised, an op reading the
whole present), or a past with readers other than its Concat and moec.shape, is left alone and listed in
``self.refused`` (with the reason): the decode path refuses to build a partly rewritten step.  Nothing
is rewritten unless every pair can be."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from moec.ir import Module
from moec.ir.core import Value
from moec.ir.opdef import OPS
from moec.ir.types import DType, TensorType
from moec.passes.base import Pass, register_pass


def _pairs(spec) -> List[Tuple[str, str]]:
    """``[(present, past)]`` from a list of pairs or a string ``"present:past,present:past"``."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return [tuple(x.split(":", 1)) for x in spec.split(",") if x]
    return [(str(a[0]), str(a[1])) for a in spec]


@register_pass
@dataclass
class KvCacheInplace(Pass):
    name = "kv-cache-inplace"
    pairs: Union[str, Sequence, None] = None   # [(present output name, past input name)]
    capacity: int = 0                          # M: rows each buffer holds
    pos_name: str = "pos"
    cache_dtype: str = ""                      # "" (the past's type) or "f16" (a half-precision cache)
    refused: List[str] = field(default_factory=list)

    def run(self, m: Module) -> bool:
        self.refused = []
        pairs = _pairs(self.pairs)
        if not pairs or int(self.capacity) < 1:
            return False
        f = m.main
        if self.pos_name in f.arg_names:
            return False  # (already rewritten)
        uses = f.uses()
        out_at = {n: i for i, n in enumerate(f.output_names)}
        arg_at = {n: i for i, n in enumerate(f.arg_names)}
        plan = []  # (present name, past arg, concat op)
        for present, past in pairs:
            if present not in out_at or past not in arg_at:
                self.refused.append(f"{present}/{past}: no such output/input")
                continue
            v, a = f.outputs[out_at[present]], f.args[arg_at[past]]
            c = v.owner
            t = a.type
            if c is None or c.name != "moec.concat" or len(c.operands) != 2 or c.operands[0] is not a \
                    or int(c.attrs["axis"]) % 4 != 2 or t.rank != 4:
                self.refused.append(f"{present}: not Concat({past}, new) on axis 2 of a rank-4 tensor")
                continue
            if not all(isinstance(t.shape[d], int) for d in (0, 1, 3)):
                self.refused.append(f"{past}: batch, heads and head size must be static ({t})")
                continue
            bad = [u.name for u in uses.get(id(a), []) if u is not c and u.name != "moec.shape"]
            bad += [u.name for u in uses.get(id(v), []) if u.name not in ("moec.shape", "moec.kv_attention")
                    and not (u.name == "moec.attention" and v in u.operands[1:3] and v is not u.operands[0])]
            if bad:
                self.refused.append(f"{present}: read by {', '.join(sorted(set(bad)))} (only a recognised "
                                    "attention and shape reads can read a cache buffer in place)")
                continue
            plan.append((present, a, c))
        if self.refused:
            return False
        by_val = {id(c.result): (present, a, c) for present, a, c in plan}
        # every attention reading one pair's present must read it as k and another pair's as v
        for o in f.ops:
            if o.name == "moec.attention" and (id(o.operands[1]) in by_val or id(o.operands[2]) in by_val):
                if not (id(o.operands[1]) in by_val and id(o.operands[2]) in by_val):
                    self.refused.append(f"attention at {o.loc}: its keys and values are not both caches")
        if self.refused:
            return False

        M = int(self.capacity)
        i64 = TensorType(DType.I64, (1,))
        pos = Value(i64, self.pos_name)
        new_ops = []

        def const(vals) -> Value:
            op = OPS["moec.constant"].create([], {"value": np.asarray(vals, np.int64)})
            new_ops.append(op)
            return op.result

        def shape_of(t: TensorType, rows: Value, o):
            """``moec.shape`` o of a [B, H, rows, D] tensor, rebuilt."""
            dims = [const([t.shape[0]]), const([t.shape[1]]), rows, const([t.shape[3]])]
            s = int(o.attrs.get("start") or 0)
            e = o.attrs.get("end")
            s, e = slice(s, None if e is None else int(e)).indices(4)[:2]
            parts = dims[s:e]
            cat = OPS["moec.concat"].create(parts, {"axis": 0}, o.loc)
            new_ops.append(cat)
            return cat.result

        rebuilt = []  # (the Concat, the ops in its place, shape ops to replace (old op, new ops, new value))
        buffers = {}
        if self.cache_dtype not in ("", "f16"):
            raise ValueError(f"kv-cache-inplace: cache_dtype {self.cache_dtype!r} (\"\" or \"f16\")")
        for present, a, c in plan:
            t = a.type
            bt = DType.F16 if self.cache_dtype == "f16" and t.dtype == DType.F32 else t.dtype
            buf = Value(TensorType(bt, (t.shape[0], t.shape[1], M, t.shape[3])), a.name)
            buffers[id(a)] = buf
            new = c.operands[1]
            app = OPS["moec.kv_append"].create([buf, new, pos], {"axis": 2}, c.loc)
            rn = OPS["moec.shape"].create([new], {"start": 2, "end": 3}, c.loc)
            tot = OPS["moec.add"].create([pos, rn.result], {}, c.loc)
            swaps = []
            for src, rows in ((a, pos), (c.result, tot.result)):
                for u in uses.get(id(src), []):
                    if u.name == "moec.shape":
                        new_ops.clear()
                        r = shape_of(t, rows, u)
                        swaps.append((u, list(new_ops), r))
            rebuilt.append((c, [app, rn, tot], swaps, app))
        for c, ops, swaps, app in rebuilt:
            at = f.ops.index(c)
            f.ops[at:at + 1] = ops
            for u, ops2, r in swaps:  # (each rebuilt shape right before the op it replaces: pos is an argument)
                at = f.ops.index(u)
                f.ops[at:at] = ops2
                f.replace_all_uses(u.result, r)
        app_of = {id(c.result): app.result for c, _, _, app in rebuilt}
        for i, o in enumerate(list(f.ops)):
            if o.name == "moec.attention" and id(o.operands[1]) in app_of:
                ops = [o.operands[0], app_of[id(o.operands[1])], app_of[id(o.operands[2])], pos]
                if len(o.operands) > 3 and o.operands[3] is not None:
                    ops.append(o.operands[3])
                kv = OPS["moec.kv_attention"].create(ops, {"scale": o.attrs["scale"], "causal": o.attrs["causal"]},
                                                     o.loc, result_types=[o.result.type])
                f.ops[f.ops.index(o)] = kv
                f.replace_all_uses(o.result, kv.result)
        # the signature: buffers in place of the pasts, pos last; the presents are no longer returned
        drop = {out_at[p] for p, _, _ in plan}
        f.outputs = [v for i, v in enumerate(f.outputs) if i not in drop]
        f.output_names = [n for i, n in enumerate(f.output_names) if i not in drop]
        f.args = [buffers.get(id(a), a) for a in f.args] + [pos]
        f.arg_names = list(f.arg_names) + [self.pos_name]
        # shape ops now unused (the old ones) go with DCE; the old Concats are gone already
        from moec.passes.dce import DeadCodeElimination
        DeadCodeElimination().run(m)
        return True
