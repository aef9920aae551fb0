"""fold-broadcast-matmul: a batched matmul by a broadcast constant matrix is a matmul by that matrix.

Rewrites:
  * ``matmul(a, W)`` where ``W`` is ``expand(c, s)`` or ``tile(c, r)`` of a constant ``c`` of shape
    ``[1, .., 1, K, N]`` (seen through reshapes that keep every dim) and ``W``'s last two dims are
    still ``K, N``: every batch slice of ``W`` is ``c`` as a ``[K, N]`` matrix ``c2``, so
    ``matmul(a, W)[b] = a[b] @ c2`` with ``a``'s batch dims broadcast against ``W``'s.  It becomes
    ``expand(matmul(a, c2), concat(B, [1, 1]))`` where ``B`` is ``W``'s batch dims (the leading
    entries of ``s`` or ``r``): the expand gives the result exactly the batch shape the matmul
    broadcast gave it (ONNX Expand broadcasts both ways, as matmul's batch dims do), and ``c2`` is
    the layer's weight, read once per call instead of copied once per batch entry.

Where it comes from: torch.export of a transformers attention with a dynamic batch writes the output
projection ``o_proj(x)`` on a rank-3 ``x`` as ``bmm(x, expand(W.T, [B, K, N]))``; without this rule it
is not a linear layer (not packed, not quantised) and the weight is copied B times per call.
Only ``a`` of rank >= 2 is taken (a vector ``a`` drops a dim the expand would have to put back).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from moec.ir import Module, Operation, Value
from moec.ir.opdef import OPS, const_value
from moec.passes.base import Pass, register_pass


def _const_shape_ok(m: Module, v: Value) -> Optional[Tuple[int, ...]]:
    """The static shape of a constant ``v`` (an op ``moec.constant``), else None."""
    o = v.owner
    if o is None or o.name != "moec.constant" or not all(isinstance(d, int) for d in v.type.shape):
        return None
    return tuple(v.type.shape)


def _int_vector(m: Module, v: Value) -> Optional[np.ndarray]:
    arr = const_value(v, m.weights)
    if arr is None:
        return None
    arr = np.asarray(arr)
    return arr.astype(np.int64).reshape(-1) if arr.dtype.kind in "iu" else None


def _keeps_dims(m: Module, o: Operation) -> bool:
    """A reshape whose new shape keeps every dim of its input (0 = copy, or the same static size)."""
    if o.name != "moec.reshape":
        return False
    x = o.operands[0].type
    vals = _int_vector(m, o.operands[1])
    if vals is None or len(vals) != x.rank:
        return False
    return all((int(s) == 0 and not o.attrs["allowzero"]) or (isinstance(d, int) and int(s) == d)
               for s, d in zip(vals, x.shape))


def _broadcast_source(m: Module, w: Value):
    """(c, batch-dims vector value, its length) when w broadcasts a constant [1..1, K, N] matrix c along
    its leading dims, else None."""
    while w.owner is not None and _keeps_dims(m, w.owner):
        w = w.owner.operands[0]
    o = w.owner
    if o is None or o.name not in ("moec.expand", "moec.tile"):
        return None
    c, sizes = o.operands
    cs = _const_shape_ok(m, c)
    wt = w.type
    if cs is None or len(cs) < 2 or wt.rank < 2 or any(d != 1 for d in cs[:-2]):
        return None
    if tuple(wt.shape[-2:]) != cs[-2:]:  # the matrix itself is not stretched
        return None
    n = sizes.type.shape[0] if sizes.type.rank == 1 else None
    if n != wt.rank:  # (a shorter expand shape: the leading dims come from c; not needed by the exports)
        return None
    return c, sizes, wt.rank


@register_pass
@dataclass
class FoldBroadcastMatmul(Pass):
    name = "fold-broadcast-matmul"

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            for o in list(f.ops):
                if o.name != "moec.matmul" or o.operands[0].type.rank < 2:
                    continue
                src = _broadcast_source(m, o.operands[1])
                if src is None:
                    continue
                c, sizes, rank = src
                new = []

                def emit(name, operands, attrs=None):
                    op = OPS[name].create(operands, attrs or {}, o.loc)
                    new.append(op)
                    return op.result

                def const(arr):
                    return emit("moec.constant", [], {"value": np.asarray(arr, np.int64)})

                c2 = c
                if c.type.rank != 2:
                    c2 = emit("moec.reshape", [c, const(list(c.type.shape[-2:]))])
                y = emit("moec.matmul", [o.operands[0], c2])
                if rank > 2:
                    batch = emit("moec.slice", [sizes, const([0]), const([rank - 2]), const([0]), const([1])])
                    shape = emit("moec.concat", [batch, const([1, 1])], {"axis": 0})
                    y = emit("moec.expand", [y, shape])
                if y.type.dtype != o.result.type.dtype or y.type.rank != o.result.type.rank:
                    continue  # (cannot happen by the rule; never rewrite to a different type)
                i = f.ops.index(o)
                f.ops[i:i] = new
                f.replace_all_uses(o.result, y)
                f.ops.remove(o)
                changed = True
        return changed
