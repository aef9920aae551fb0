"""moec's placement pass (passes/ep_placement.py) for the cost model (compiler/ep_cost.py, ``moec plan``):
``balance(histogram, R)`` -> each expert's [(rank, share)] (ep_cost makes its Placement of them), one redundant
slot per rank (DeepSeek-V3's prefill deployment: 256 experts + 32 redundant copies on 32 ranks), a replicated
expert's tokens shared evenly."""
from __future__ import annotations

import numpy as np


def balance(histogram, R: int):
    """Each expert's holders as [(rank, share of its tokens)] (ep_cost wraps them in its Placement)."""
    from .passes.ep_placement import balanced_placement
    hist = np.asarray(histogram, np.float64)
    E = hist.size
    slots = min(E, -(-E // R) + 1)
    p = balanced_placement(hist, R, slots)
    holders = [[r for r, row in enumerate(p.ranks) if e in row] for e in range(E)]
    return [[(r, 1.0 / len(h)) for r in h] for h in holders]
