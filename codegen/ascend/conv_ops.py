"""Depthwise 1-D convolution (moec.conv with group = channels: the causal conv1d of Mamba, gated-delta and
short-conv layers -- Qwen3-Next, GraniteMoeHybrid, Jamba, Bamba, LFM2) on the NPU as shifted multiply-adds on
the vector unit (issue 16 item 6), planned from the kernels vector_ops already has:

    xpad = x placed at offset pad_begin of a zero-filled [N, C, S + pads] buffer      (vec_copy)
    y    = sum_k w[:, 0, k] * xpad[..., k * dilation : k * dilation + O]  (+ bias)      (vec_copy, vec_elementwise)

Each tap is a strided window copy of xpad (a row shift, so every vector instruction still starts 32-byte
aligned in the Unified Buffer) multiplied by its per-channel weight (a per-row operand) and added to the sum:
2 K + 1 (+1 with a bias) launches.  The sum runs in the op's type tap by tap (f32 for f16/bf16 inside each
kernel, rounded per launch), where the reference accumulates in f64 and rounds once.
Other convolutions (grouped with more than one channel per group, strided, 2-D) stay on the host."""
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
    C = x.shape[1]
    if not isinstance(C, int) or o.attrs["group"] != C or w.shape[0] != C or w.shape[1] != 1:
        return "not a depthwise convolution (group = input channels = output channels, one channel per group)"
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
    acc = None
    for k in range(K):
        tap = dev.new((N, C, O), npt)
        copy_strided(dev, xpad, tap, [N, C, O], pst, _contig((N, C, O)), k * d)
        wk = w[:, 0, k].astype(npt).reshape(1, C, 1)
        prod = elementwise(dev, "moec.mul", [tap, wk], dt)
        acc = prod if acc is None else elementwise(dev, "moec.add", [acc, prod], dt)
    if len(args) > 2 and args[2] is not None:
        acc = elementwise(dev, "moec.add", [acc, np.asarray(args[2]).astype(npt).reshape(1, C, 1)], dt)
    return acc
