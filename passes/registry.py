"""All passes by name (for tests, tools and `--dump-ir` listings)."""
from __future__ import annotations

from typing import Dict, Type

from .base import Pass
from .dce import DeadCodeElimination
from .fold_broadcast_matmul import FoldBroadcastMatmul
from .fold_constants import FoldConstants
from .fold_full_nonzero import FoldFullNonzero
from .fuse_experts import FuseExperts
from .recognize_moe import RecognizeMoE
from .schedule_dispatch import ScheduleDispatch
from .split_of_concat import SplitOfConcat

PASSES: Dict[str, Type[Pass]] = {p.name: p for p in (DeadCodeElimination, FoldBroadcastMatmul, FoldConstants, FoldFullNonzero, FuseExperts,
                                                      RecognizeMoE, ScheduleDispatch, SplitOfConcat)}


def make_pass(name: str, **options) -> Pass:
    if name not in PASSES:
        raise KeyError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
    return PASSES[name](**options)
