"""Matrix products."""
from __future__ import annotations

import numpy as np

from ..core import Operation
from ..opdef import op, operand_error
from ..types import TensorType, broadcast_shapes
from .base import same_dtype


@op("moec.matmul", operands=("a", "b"), traits=("pure",))
class MatMulOp(Operation):
    """numpy.matmul semantics: 1-D operands are promoted and the added dim removed;
    leading (batch) dims broadcast.  Floats accumulate in at least f32."""

    def infer_types(self):
        dt = same_dtype(self, 0, 1)
        a, b = (v.type.shape for v in self.operands)
        if len(a) == 0 or len(b) == 0:
            raise operand_error(self, "matmul operands must have rank >= 1")
        a2 = (1,) + a if len(a) == 1 else a
        b2 = b + (1,) if len(b) == 1 else b
        ka, kb = a2[-1], b2[-2]
        if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
            raise operand_error(self, f"contraction dims differ: {ka} vs {kb}")
        try:
            batch = broadcast_shapes(a2[:-2], b2[:-2])
        except ValueError as e:
            raise operand_error(self, f"batch dims do not broadcast: {e}") from None
        out = batch + (a2[-2], b2[-1])
        if len(a) == 1:
            out = out[:-2] + out[-1:]
        if len(b) == 1:
            out = out[:-1]
        return [TensorType(dt, out)]

    def reference(self, a, b):
        if a.dtype.kind == "f" and a.dtype.itemsize < 4:
            r = np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
        else:
            r = np.matmul(a, b)
        return [np.asarray(r)]
