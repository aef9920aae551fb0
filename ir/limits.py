"""Size limits shared by the importer, the CLI's input loading and the C runtime.

The C runtime (codegen/c/runtime/moec_rt.h, MOEC_MAX_NUMEL) refuses any tensor whose extent -- the
product of its dimensions with a 0 counted as 1 -- exceeds 2^40; checking the same rule at compile
time and on run-time inputs turns an absurd static shape into one clear error (exit 2) at the point
where it enters, instead of a MemoryError or an overflowing product later.  Python ints: no wrap."""
from __future__ import annotations

from typing import Optional, Sequence

MAX_NUMEL = 1 << 40  # keep equal to MOEC_MAX_NUMEL in codegen/c/runtime/moec_rt.h


def extent(shape: Sequence[int]) -> int:
    """Product of the static dims with zeros counted as one (symbolic dims are skipped)."""
    n = 1
    for d in shape:
        if isinstance(d, int) and d > 0:
            n *= d
    return n


def shape_problem(shape: Sequence) -> Optional[str]:
    """Why a (partly) static shape cannot exist at run time, or None."""
    for i, d in enumerate(shape):
        if isinstance(d, int) and not isinstance(d, bool) and d < 0:
            return f"dimension {i} is negative ({d})"
    if extent(shape) > MAX_NUMEL:
        dims = ", ".join(str(d) for d in shape)
        return (f"shape [{dims}] is too large (more than 2^40 elements, counting a 0 as 1: the limit of "
                "moec's runtime)")
    return None
