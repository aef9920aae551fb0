"""Which transformers experts implementation ``moec.compile(module)`` exports a module with.

transformers 5.x experts classes dispatch on ``config._experts_implementation``: "eager" loops over the
experts that were hit (a data-dependent list: torch.export cannot trace it), "batched_mm" gathers each
(token, slot) pair's expert weights, "grouped_mm" sorts the pairs by expert and runs a grouped matmul
over the row groups.  All three compute the same function.  recognize-moe recognises the batched_mm
and the grouped_mm forms, so ``experts_implementation="auto"`` (moec.compile's default) exports a module
as it is set when every experts module is batched_mm or grouped_mm, and swaps eager (or unset) ones to
batched_mm.  A kept grouped_mm whose layers are not all recognised falls back to batched_mm when that
recognises more of them; report.json's ``experts_implementation`` says what was replaced and why.
"""
from __future__ import annotations

import json
from typing import Optional

AUTO = "auto"
KEPT = ("batched_mm", "grouped_mm")  # recognised as they are
SWAP_TO = "batched_mm"


def _recognised_layers(m) -> int:
    """canonicalize and recognize-moe on ``m`` in place (the build's pipeline starts with the same stages
    and finds them at their fixed point), and the number of MoE layers recognised."""
    from moec.passes.base import run_to_fixed_point
    from moec.passes.pipeline import stages
    from moec.targets import target_for
    st = dict(stages(target_for("cpu", "generic")))
    run_to_fixed_point(m, st["canonicalize"])
    run_to_fixed_point(m, st["recognize-moe"])
    return len(m.attrs.get("moec.moe_layers", []))


def import_module(model, example_inputs, dynamic_dims, experts_implementation: Optional[str]):
    """import_torch(model) with the experts implementation chosen as the module docstring says (an
    explicit name or None: exactly as import_torch does)."""
    from moec.frontend.torch_import import _transformers_experts, import_torch

    def imp(impl):
        return import_torch(model, example_inputs, dynamic_dims=dynamic_dims, experts_implementation=impl)
    if experts_implementation != AUTO:
        return imp(experts_implementation)
    experts = _transformers_experts(model)
    impls = {e.config._experts_implementation or "eager" for e in experts}
    if not impls <= set(KEPT):
        return imp(SWAP_TO)
    m = imp(None)
    if "grouped_mm" not in impls:
        return m
    n = _recognised_layers(m)
    if n >= len(experts):
        return m
    mb = imp(SWAP_TO)
    nb = _recognised_layers(mb)
    if nb <= n:
        return m
    info = json.loads(mb.attrs.get("moec.experts_implementation") or "{}")
    info["fallback"] = (f"grouped_mm as set: {n} of {len(experts)} experts layers recognised; exported as "
                        f"{SWAP_TO} instead ({nb} recognised)")
    mb.attrs["moec.experts_implementation"] = json.dumps(info, sort_keys=True)
    return mb
