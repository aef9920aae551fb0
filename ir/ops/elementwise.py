"""Elementwise ops: unary math, binary arithmetic with numpy broadcasting."""
from __future__ import annotations

import numpy as np

from ..opdef import op
from .base import BinaryOp, UnaryOp


@op("moec.add", operands=("lhs", "rhs"), traits=("pure", "elementwise", "commutative"))
class AddOp(BinaryOp):
    """lhs + rhs (numpy broadcasting; integer overflow wraps)."""
    fn = staticmethod(np.add)


@op("moec.relu", operands=("x",), traits=("pure", "elementwise"))
class ReluOp(UnaryOp):
    """max(x, 0)."""
    fn = staticmethod(lambda x: np.maximum(x, np.zeros((), x.dtype)))
