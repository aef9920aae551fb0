"""Reductions over axes other than the last one (sum / mean / max / min; Qwen3-Next's gated-delta chunk sums) on
the NPU (issue 16 item 6): vec_copy moves the reduced axes last (one strided copy), then vec_rowwise reduces each
row as for a last-axis reduction.  The rows must fit the Unified Buffer, as for any vec_rowwise op."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from moec.ir.opdef import const_value

REDUCE = ("moec.reduce_sum", "moec.reduce_mean", "moec.reduce_max", "moec.reduce_min", "moec.reduce_l2",
          "moec.reduce_l1")


def reduce_axes(m, o) -> Optional[List[int]]:
    """The reduced axes (sorted, non-negative), or None when they are not known at compile time."""
    x = o.operands[0].type
    if len(o.operands) > 1:
        c = const_value(o.operands[1], m.weights)
        if c is None:
            return None
        axes = [int(a) for a in np.asarray(c).reshape(-1)]
    else:
        axes = list(o.attrs["axes"])
    return sorted({a % x.rank for a in axes}) if x.rank else None


def moved_reason(m, o) -> Optional[str]:
    """None when a reduction over non-last axes runs as a transposing copy + vec_rowwise."""
    x = o.operands[0].type
    axes = reduce_axes(m, o)
    if not axes:
        return "reduction over all axes (or none)"
    if len(axes) == x.rank:
        return "reduction over all axes (or none)"
    return None  # (row length checked against the Unified Buffer when the plan runs, as vec_rowwise's own)


def moved_launch(dev, o, args: List):
    from moec.codegen.ascend.vector_ops import (DT_CODE, NP_DT, ROW_TILE, ROWWISE, _bd, _contig, copy_strided,
                                                op_dtype, rowwise_max_cols, tiling_bytes, usable_ub)
    from moec.errors import RuntimeFailure
    dt = op_dtype(o)
    npt = NP_DT[dt]
    x = dev.buf(args[0], npt)
    shp = tuple(int(d) for d in x.shape)
    r = len(shp)
    if len(args) > 1 and args[1] is not None:
        axes = sorted({int(v) % r for v in np.asarray(args[1]).reshape(-1)})
    else:
        axes = sorted({int(v) % r for v in o.attrs["axes"]})
    kept = [i for i in range(r) if i not in axes]
    perm = kept + axes
    pshape = [shp[i] for i in perm]
    R = int(np.prod([shp[i] for i in kept], dtype=np.int64))
    C = int(np.prod([shp[i] for i in axes], dtype=np.int64))
    lim = rowwise_max_cols(usable_ub(dev.desc), dt)
    if C > lim:
        raise RuntimeFailure(f"{o.name}: rows of {C} elements exceed the Unified Buffer's {lim}-element row limit")
    st = _contig(shp)
    xt = dev.new(tuple(pshape), npt)
    copy_strided(dev, x, xt, pshape, [st[i] for i in perm], _contig(pshape))
    y = dev.new((R,), npt)
    if R and C:
        dev.launch("vec_rowwise", _bd(dev.cores, R), [xt, xt, xt, y, y, y],
                   tiling_bytes(rows=R, cols=C, op=ROWWISE[o.name], tile=ROW_TILE, dt=DT_CODE[dt]))
    keep = o.attrs.get("keepdims", True)
    out = [1 if i in axes else shp[i] for i in range(r)] if keep else [shp[i] for i in kept]
    return y.reshape(tuple(out))
