"""The ordinary (non-MoE, non-cube) ops on the NPU: which module plans each.

vector_ops holds the vector kernels' planning and the helpers the composite ops are built from; conv_ops
(depthwise 1-D convolutions), kv_ops (the KV-cache ops: vec_kv), scan_ops (float cumsums), index_ops (integer comparisons, Where of integers,
integer cumsums, GatherElements, top-k: vec_index on the scalar unit) and reduce_ops (reductions over axes that are not
the last) compose those helpers.  This module is the one entry point the planner and the backend call,
so that the composite modules depend on vector_ops and never the other way round (no import cycle).
"""
from __future__ import annotations

from typing import List, Optional

from moec.codegen.ascend import conv_ops, index_ops, kv_ops, reduce_ops, scan_ops, vector_ops
from moec.codegen.ascend.launch_plan import device_op


def vector_reason(m, o) -> Optional[str]:
    """None when `o` runs on the NPU's vector kernels, else why it stays on the host."""
    if index_ops.handles(o):
        return index_ops.index_reason(m, o)
    if kv_ops.handles(o):
        return kv_ops.kv_reason(m, o)
    if o.name == "moec.conv":
        return conv_ops.conv_reason(m, o)
    if o.name == "moec.cumsum":
        return scan_ops.cumsum_reason(m, o)
    why = vector_ops.vector_reason(m, o)
    if why is None and o.name in vector_ops.ROWWISE and o.name.startswith("moec.reduce_"):
        r = o.operands[0].type.rank
        axes = reduce_ops.reduce_axes(m, o)
        if axes and sorted({a % r for a in axes}) != [r - 1]:
            return reduce_ops.moved_reason(m, o)
    return why


@device_op
def launch(dev, o, args: List) -> List:
    """Plan `o` (``dev``: a launch_plan.Recorder) and return its result buffers."""
    name = o.name
    if index_ops.handles(o):
        return index_ops.launch(dev, o, args)
    if kv_ops.handles(o):
        return kv_ops.kv_launch(dev, o, args)
    if name == "moec.conv":
        return [conv_ops.conv_launch(dev, o, args)]
    if name == "moec.cumsum":
        return [scan_ops.cumsum_launch(dev, o, args)]
    if name in vector_ops.ROWWISE and name.startswith("moec.reduce_") and vector_ops._moved(o, args):
        return [reduce_ops.moved_launch(dev, o, args)]
    return vector_ops.launch(dev, o, args)
