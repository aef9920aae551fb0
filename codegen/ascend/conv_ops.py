"""1-D convolutions (moec.conv: the causal conv1d of Mamba, gated-delta and short-conv layers -- Qwen3-Next,
GraniteMoeHybrid, Jamba, Bamba, LFM2 --, and grouped ones such as ZAYA's query/key conv with one group per head) on
the NPU as shifted multiply-adds on the vector unit (issue 16 item 6), planned from the kernels vector_ops already has:

    xpad = x placed at offset pad_begin of a zero-filled [N, C, S + pads] buffer                 (vec_copy)
    y    = sum_{c', k} w[:, c', k] * xpad[:, g(o) Cg + c', k d : k d + O]  (+ bias)            (vec_copy, vec_elementwise)

with Cg input channels per group and g(o) the group of output channel o.  Each (c', k) term is one strided copy of
xpad -- the window of input channel g(o) Cg + c' for every output channel o (a stride 0 over the output channels of a
group), a row shift, so every vector instruction still starts 32-byte aligned in the Unified Buffer -- multiplied by
its per-output-channel weight and added to the sum: 3 Cg K launches (+1 with a bias; depthwise: Cg = 1).  The sum
runs in the op's type term by term (f32 for f16/bf16 inside each kernel, rounded per launch), where the reference
accumulates in f64 and rounds once.  Strided and 2-D convolutions stay on the host."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from moec.ir.opdef import const_value


def conv_reason(m, o) -> Optional[str]:
    """None when the conv runs as a depthwise 1-D conv on the vector kernels, else why it stays on the host."""
    from moec.codegen.ascend.vector_ops import DT_CODE
    x, w = o.operands[0].type, o.operands[1].type
    n, strides, pads, dil = o.spatial()
    if n != 1:
        return f"a {n}-D convolution (the NPU runs depthwise 1-D convolutions)"
    C, G = x.shape[1], o.attrs["group"]
    if not isinstance(C, int) or not all(isinstance(d, int) for d in w.shape) or C % G or w.shape[0] % G or \
            w.shape[1] * G != C:
        return "channels that are not known at compile time or not split evenly into the groups"
    if strides[0] != 1:
        return "a strided convolution"
    if const_value(o.operands[1], m.weights) is None or \
            (len(o.operands) > 2 and const_value(o.operands[2], m.weights) is None):
        return "convolution weights or bias that are not constants"
    dts = {v.type.dtype.mlir for v in list(o.operands) + list(o.results)}
    if len(dts) != 1 or next(iter(dts)) not in DT_CODE:
        return f"the vector kernels take f32, f16 or bf16 tensors of one type ({', '.join(sorted(dts))})"
    return None


def conv_launch(dev, o, args: List):
    """Plan the depthwise conv (``dev``: a launch_plan.Recorder): its result buffer."""
    from moec.codegen.ascend.vector_ops import NP_DT, _contig, copy_strided, elementwise, op_dtype
    from moec.errors import RuntimeFailure
    dt = op_dtype(o)
    npt = NP_DT[dt]
    x = dev.buf(args[0], npt)
    w = np.asarray(args[1], np.float64)
    N, C, S = (int(d) for d in x.shape)
    _, _, pads, dil = o.spatial()
    pb, pe, d = int(pads[0]), int(pads[1]), int(dil[0])
    K = int(w.shape[2])
    O = S + pb + pe - d * (K - 1)
    if O < 1:
        raise RuntimeFailure(f"moec.conv: {S} steps with pads {pb}, {pe} are shorter than the dilated kernel")
    P = S + pb + pe
    xpad = dev.new((N, C, P), npt, fill="zero")
    pst = _contig((N, C, P))
    copy_strided(dev, x, xpad, [N, C, S], _contig((N, C, S)), pst, 0, pb)
    Co, Cg = int(w.shape[0]), int(w.shape[1])
    G = C // Cg
    Og = Co // G
    acc = None
    for c in range(Cg):
        for k in range(K):  # tap[n, g, j, t] = xpad[n, g Cg + c, t + k d] for output channel o = g Og + j
            tap = dev.new((N, Co, O), npt)
            copy_strided(dev, xpad, tap, [N, G, Og, O], [C * P, Cg * P, 0, 1], _contig((N, G, Og, O)), c * P + k * d)
            wk = w[:, c, k].astype(npt).reshape(1, Co, 1)
            prod = elementwise(dev, "moec.mul", [tap, wk], dt)
            acc = prod if acc is None else elementwise(dev, "moec.add", [acc, prod], dt)
    if len(args) > 2 and args[2] is not None:
        acc = elementwise(dev, "moec.add", [acc, np.asarray(args[2]).astype(npt).reshape(1, Co, 1)], dt)
    return acc
