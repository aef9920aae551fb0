"""ONNX converter: Conv (onto moec.conv; the PyTorch front end lowers aten.convolution through it)."""
from __future__ import annotations

from moec.frontend.onnx_import import converter


def _same_pads(ctx, sizes, kernel, strides, dilations, upper: bool):
    """auto_pad SAME_UPPER / SAME_LOWER: output size ceil(S / stride), the total padding split with the
    odd element at the end (UPPER) or the beginning (LOWER); needs static spatial sizes."""
    begins, ends = [], []
    for S, K, s, d in zip(sizes, kernel, strides, dilations):
        if not isinstance(S, int):
            raise ctx.unsupported("Conv with auto_pad SAME_* on a spatial dim of run-time size (write explicit pads)")
        total = max(0, (-(-S // s) - 1) * s + d * (K - 1) + 1 - S)
        small, big = total // 2, total - total // 2
        begins.append(small if upper else big)
        ends.append(big if upper else small)
    return begins + ends


@converter("Conv", since=1)
def _conv(ctx, node, ins, attrs):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if x.type.rank < 3:
        raise ctx.error(f"Conv input must be [N, C, spatial...], got rank {x.type.rank}")
    n = x.type.rank - 2
    kernel = list(w.type.shape[2:])
    if not all(isinstance(k, int) for k in kernel):
        raise ctx.unsupported("Conv with a weight of run-time shape")
    if "kernel_shape" in attrs and list(attrs["kernel_shape"]) != kernel:
        raise ctx.error(f"Conv kernel_shape {list(attrs['kernel_shape'])} differs from the weight's {kernel}")
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "NOTSET":
        pads = list(attrs.get("pads", [0] * (2 * n)))
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(ctx, x.type.shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
    else:
        raise ctx.error(f"Conv auto_pad '{auto_pad}' is none of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    ops = [x, w] + ([b] if b is not None else [])
    return [ctx.emit1("moec.conv", ops, {"strides": strides, "pads": pads, "dilations": dilations,
                                         "group": int(attrs.get("group", 1))})]
