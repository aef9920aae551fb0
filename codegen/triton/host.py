"""The Triton launcher's host segments: ops with no Triton kernel, run on the host by the IR walker.

The emitter (emitter.py) writes each segment into model_triton.py at compile time as literals (op names,
attributes, operand and result types); :func:`segment` builds them into IR ops once, when the artifact is
loaded (no IR text is parsed), and :func:`host_run` runs one: device tensors to numpy, the ops by their
reference semantics (moec.ir.walk), the results back to the device.  Every op run is counted in ``stats``
(the launcher's ``host_ops``).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import numpy as np

from moec.codegen.triton import runtime as rt
from moec.ir.core import Operation, Value
from moec.ir.opdef import lookup
from moec.ir.types import DType, TensorType
from moec.ir.walk import run_values


class Segment(NamedTuple):
    args: List[Value]
    ops: List[Operation]
    outputs: List[Value]


def dtype(name: str) -> DType:
    return DType.parse(name)


def _tensor_type(t) -> TensorType:
    dt, dims = t
    return TensorType(DType.parse(dt), tuple(dims))


def segment(arg_types: Sequence, ops: Sequence, outputs: Sequence[int]) -> Segment:
    """IR ops from the launcher's literals: ``ops`` as (name, attributes, operand numbers, result types, loc),
    values numbered the segment's arguments first, then every op's results in order."""
    args = [Value(_tensor_type(t), f"in{i}") for i, t in enumerate(arg_types)]
    values = list(args)
    built = []
    for name, attrs, operands, results, loc in ops:
        o = lookup(name).create([values[i] for i in operands], attrs, loc, [_tensor_type(t) for t in results])
        built.append(o)
        values.extend(o.results)
    return Segment(args, built, [values[i] for i in outputs])


def host_run(seg: Segment, inputs: Sequence, stats: Dict[str, int]) -> list:
    """Run a host segment on device tensors; its outputs as device tensors."""
    for o in seg.ops:
        stats[o.name] = stats.get(o.name, 0) + 1
    outs = run_values(seg.ops, seg.args, seg.outputs, [rt.to_numpy(a) for a in inputs], wrap=True)
    return [rt.from_numpy(np.asarray(o)) for o in outs]
