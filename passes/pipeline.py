"""The IR pipeline: a short, readable list of named stages.

Each stage is a list of passes run to a fixed point; the driver verifies the
module and can dump its text after every stage (``--dump-ir``).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from moec.ir import Module
from moec.passes.base import Pass, run_to_fixed_point
from moec.passes.dce import DeadCodeElimination
from moec.passes.fold_constants import FoldConstants
from moec.passes.fold_full_nonzero import FoldFullNonzero
from moec.passes.fold_broadcast_matmul import FoldBroadcastMatmul
from moec.passes.split_of_concat import SplitOfConcat
from moec.passes.fuse_experts import FuseExperts
from moec.passes.fuse_linear_epilogue import FuseLinearEpilogue
from moec.passes.fuse_shared_linears import FuseSharedLinears
from moec.passes.recognize_moe import RecognizeMoE
from moec.passes.recognize_decoder import RecognizeDecoder
from moec.passes.quantize import QuantizeWeights
from moec.passes.schedule_dispatch import ScheduleDispatch
from moec.passes.sink_rows import SinkRows

if TYPE_CHECKING:  # (passes read target descriptions; they do not import targets)
    from moec.targets.base import TargetDesc


def stages(target: "TargetDesc", weights: str = "f32", group: int = 64,
           zero_point: bool = False, scope: str = "all") -> List[Tuple[str, List[Pass]]]:
    return [
        ("canonicalize", [FoldConstants(), FoldFullNonzero(), SplitOfConcat(), FoldBroadcastMatmul(),
                          DeadCodeElimination()]),
        ("recognize-moe", [RecognizeMoE(), DeadCodeElimination()]),
        ("recognize-decoder", [RecognizeDecoder(target), DeadCodeElimination()]),
        ("sink-rows", [SinkRows(), DeadCodeElimination()]),
        ("fuse-experts", [FuseExperts()]),
        ("fuse-linears", [FuseSharedLinears(target.fuse_shared_linears), DeadCodeElimination()]),
        ("quantize-weights", [QuantizeWeights(weights, group, zero_point, scope=scope,
                                              dense_modes=target.dense_weight_modes,
                                              half_activations=target.half_activation_modes),
                              DeadCodeElimination()]),
        ("fuse-epilogues", [FuseLinearEpilogue(target)]),
        ("schedule-dispatch", [ScheduleDispatch(target)]),
        ("cleanup", [DeadCodeElimination()]),
    ]


def run_pipeline(m: Module, target: "TargetDesc",
                 after_stage: Optional[Callable[[int, str, Module, dict], None]] = None,
                 weights: str = "f32", group: int = 64, zero_point: bool = False,
                 scope: str = "all") -> Module:
    """Run every stage on ``m`` (in place).  ``weights`` picks the routed experts' weight storage
    (f32 = as the model has them, bf16, int8, int4 with ``group`` / ``zero_point``).  ``target``: the
    description compiled for (``moec.targets.target_for(name)``)."""
    if isinstance(target, str):
        raise TypeError("run_pipeline: target is a TargetDesc (moec.targets.target_for(name)), not a name")
    for i, (name, passes) in enumerate(stages(target, weights, group, zero_point, scope), start=1):
        t0 = time.perf_counter()
        iters = run_to_fixed_point(m, passes)
        info = {"passes": [p.name for p in passes], "iterations": iters,
                "seconds": round(time.perf_counter() - t0, 4)}
        if after_stage:
            after_stage(i, name, m, info)
    return m
