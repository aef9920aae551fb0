"""Cumulative sums (moec.cumsum of floating-point tensors: Mamba2's chunked scan, gated-delta layers' decay
sums) on the NPU (issue 16 item 6), planned from vector_ops' kernels as a log-step (Hillis-Steele) scan:

    x viewed as [outer, L, inner] (L: the scanned axis);  y_0 = x
    y_{j+1}[:, i] = y_j[:, i] + y_j[:, i - s]  for i >= s,  y_j[:, i] for i < s      (s = 2^j, until s >= L)

(reverse: i + s, the last s rows kept).  Each step is window copies of y_j (vec_copy) and one add
(vec_elementwise): ceil(log2 L) steps of 4 copies and 1 add; exclusive subtracts x at the end, as the
reference does.  The sums are grouped as a binary tree, not left to right as the reference's f32 cumsum:
each result has at most ceil(log2 L) roundings, like the sequential one's L - 1, in another order.
Integer cumsums (position ids from a padding mask) stay on the host."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from moec.ir.opdef import const_value


def cumsum_reason(m, o) -> Optional[str]:
    from moec.codegen.ascend.vector_ops import DT_CODE
    dt = o.results[0].type.dtype.mlir
    if dt not in DT_CODE:
        return f"cumsum of {dt} (the NPU scan adds f32, f16 or bf16 on the vector unit)"
    if const_value(o.operands[1], m.weights) is None:
        return "cumsum axis known only at run time"
    if o.operands[0].type.rank == 0:
        return "cumsum of a scalar"
    return None


def cumsum_launch(dev, o, args: List):
    from moec.codegen.ascend.vector_ops import NP_DT, _contig, copy_strided, elementwise, op_dtype
    dt = op_dtype(o)
    npt = NP_DT[dt]
    x = dev.buf(args[0], npt)
    shp = tuple(int(d) for d in x.shape)
    a = int(np.asarray(args[1]).reshape(-1)[0]) % len(shp)
    outer = int(np.prod(shp[:a], dtype=np.int64))
    L = shp[a]
    inner = int(np.prod(shp[a + 1:], dtype=np.int64))
    rev = bool(o.attrs["reverse"])
    x3 = x.reshape((outer, L, inner))
    st = _contig((outer, L, inner))
    cur = x3
    s = 1
    while s < L:
        nxt = dev.new((outer, L, inner), npt)
        n = L - s
        keep0 = n if rev else 0              # rows kept as they are: [L - s, L) reversed, [0, s) forward
        copy_strided(dev, cur, nxt, [outer, s, inner], st, st, keep0 * inner, keep0 * inner)
        hi, lo = (0, s) if rev else (s, 0)    # y[i] += y[i - s] (forward) or y[i + s] (reverse), i in [hi, hi + n)
        wst = _contig((outer, n, inner))
        ta = dev.new((outer, n, inner), npt)
        tb = dev.new((outer, n, inner), npt)
        copy_strided(dev, cur, ta, [outer, n, inner], st, wst, hi * inner)
        copy_strided(dev, cur, tb, [outer, n, inner], st, wst, lo * inner)
        sm = elementwise(dev, "moec.add", [ta, tb], dt)
        copy_strided(dev, sm, nxt, [outer, n, inner], wst, st, 0, hi * inner)
        cur = nxt
        s *= 2
    if o.attrs["exclusive"]:
        cur = elementwise(dev, "moec.sub", [cur, x3], dt)
    elif cur is x3:  # L = 1: the result is a copy of x
        out = dev.new((outer, L, inner), npt)
        copy_strided(dev, x3, out, [outer, L, inner], st, st)
        cur = out
    return cur.reshape(shp)
