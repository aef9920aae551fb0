"""Numerical tolerances used to compare a target's outputs with the oracle, in one place.

An output element passes when |got - want| <= atol + rtol * |want|, NaNs in the
same places, infinities equal.  Integer and bool outputs must match exactly.

Why these numbers: f32 kernels reorder sums (blocked GEMM, threads) and use
different exp/erf/tanh implementations than onnxruntime's MLAS; over the
reduction lengths of the test models (<= a few thousand) that drifts a few
ulps per term, so 1e-4 relative plus 1e-5 absolute holds with margin without
hiding real bugs (a wrong expert or routing weight moves results by >1e-2).
Half types carry 11 (f16) and 8 (bf16) significand bits: one rounding of the
output alone costs 2^-11 / 2^-8 relative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from .ir import DType  # noqa: F401


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float

    def to_json(self) -> Dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}


TOLERANCES: Dict[str, Tolerance] = {
    "f64": Tolerance(1e-9, 1e-9),
    "f32": Tolerance(1e-5, 1e-4),
    "f16": Tolerance(2e-3, 4e-3),
    "bf16": Tolerance(1.6e-2, 1.6e-2),
    "int": Tolerance(0.0, 0.0),
    "bool": Tolerance(0.0, 0.0),
}


def tolerance_for(dtype_name: str) -> Tolerance:
    if dtype_name in TOLERANCES:
        return TOLERANCES[dtype_name]
    if dtype_name in ("i1", "bool"):
        return TOLERANCES["bool"]
    return TOLERANCES["int"]
