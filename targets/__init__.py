"""The target registry: names -> backends (targets/base.py's Backend protocol).  Nothing else lists
target names; a new target is a module here (+ its codegen) and one entry in ``_BACKENDS``."""
from __future__ import annotations

from typing import Dict, List, Optional, Type

from moec.errors import UserInputError
from moec.passes.quantize import ACT_MODES, MODES as WEIGHT_MODES
from moec.targets.ascend_backend import AscendBackend
from moec.targets.base import Backend, BackendBase, TargetDesc
from moec.targets.cpu_backend import CpuBackend
from moec.targets.description import ascend_target, cpu_target, detect_triton_target, generic_cpu, host_cpu, triton_target
from moec.targets.reference import ReferenceBackend
from moec.targets.triton_backend import TritonBackend

_BACKENDS: Dict[str, Type[BackendBase]] = {b.name: b for b in (
    CpuBackend,
    TritonBackend,
    AscendBackend,
    ReferenceBackend,
)}
DEFAULT = CpuBackend.name


def names(include_debug: bool = True) -> List[str]:
    """The registered targets (``include_debug=False``: without debugging targets such as reference)."""
    return [n for n, b in _BACKENDS.items() if include_debug or not b.debug_only]


def backend_class(name: str) -> Type[BackendBase]:
    if name not in _BACKENDS:
        raise UserInputError(f"unknown target '{name}' (available: {', '.join(_BACKENDS)})")
    return _BACKENDS[name]


def backend(name: str, arch: Optional[str] = "native") -> Backend:
    """The backend of target ``name`` for ``arch`` ("native": this machine's, or the target's default)."""
    cls = backend_class(name)
    try:
        return cls(cls.describe(arch or "native"))
    except ValueError as e:
        raise UserInputError(str(e)) from None


def target_for(name: str, arch: str = "native") -> TargetDesc:
    """The description of target ``name`` for ``arch`` (the one ``backend(name, arch)`` compiles for)."""
    return backend(name, arch).desc


# how a weight mode is named in a message, and what to use instead where it is not implemented
_MODE_TEXT = {"int4": ("--weights int4 is", "int8"), "fp8": ("fp8 (float8 e4m3) expert weights are", "int8 (or bf16)"),
              "w8a8": ("--weights w8a8 (int8 activations) is", "int8 (int8 weights, f32 activations)"),
              "w4a8": ("--weights int4 --activations int8 (int8 activations) is", "int4 (int4 weights, f32 activations)"),
              "fp8a8": ("--weights fp8 --activations fp8 (fp8 activations) is",
                        "w8a8 (int8 weights and activations)"),
              "int8_bf16": ("--weights int8 --activations bf16 (bf16 activations) is",
                            "int8 (int8 weights, f32 activations)"),
              "int4_bf16": ("--weights int4 --activations bf16 (bf16 activations) is",
                            "int4 (int4 weights, f32 activations)")}


def _listed(xs: List[str]) -> str:
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def _mode_of(attrs) -> str:
    """The weight mode a quantised op's (wq, aq) attributes are (w4a8 for int4 weights with int8 activations, ...)."""
    pair = (attrs.get("wq"), attrs.get("aq", "none"))
    return next((m for m, p in ACT_MODES.items() if p == pair), pair[0])


def check_weight_mode(b: Backend, weights: str, group_size: int = 64, module=None) -> None:
    """``weights`` (and the weight modes already in ``module``) are ones target ``b`` implements
    (its desc.weight_modes); one message per mistake, naming the flag."""
    if weights not in WEIGHT_MODES:
        raise UserInputError(f"unknown weight mode '{weights}' (choose {', '.join(WEIGHT_MODES)})")
    held = set()
    if module is not None:  # a module built from IR text may hold quantised experts already
        held = {_mode_of(o.attrs) for o in module.ops() if o.name == "moe.experts"} & set(WEIGHT_MODES)
    for mode in [weights] + sorted(held - {weights}):
        if mode in b.desc.weight_modes:
            continue
        others = [n for n, c in _BACKENDS.items() if mode in c.describe("native").weight_modes]
        what, instead = _MODE_TEXT.get(mode, (f"--weights {mode} is", "f32"))
        modes = list(b.desc.weight_modes)
        msg = f"target {b.name}: {what} not implemented ({_listed(modes)} {'are' if len(modes) > 1 else 'is'})"
        if others:
            msg += (f"; it is implemented for the {_listed(others)} target{'s' if len(others) > 1 else ''} only: "
                    f"use --weights {instead} here, or --target {others[0]}")
        raise UserInputError(msg)
    if weights == "int4" and (group_size < 0 or group_size % 2):
        raise UserInputError(f"--group-size {group_size}: int4 packs two weights per byte, so a scale group "
                             "must be an even number of weights (e.g. 32, 64, 128), or 0 for one group per row")


def check_options(b: Backend, opts, module=None) -> None:
    """Everything the driver checks before compiling for ``b``: the weight mode is one the target
    implements, then the target's own checks (Backend.check_options)."""
    check_weight_mode(b, opts.weights, opts.group_size, module)
    b.check_options(opts, module)


__all__ = ["Backend", "BackendBase", "TargetDesc", "DEFAULT", "names", "backend", "backend_class", "target_for",
           "check_options", "check_weight_mode", "ascend_target", "cpu_target", "detect_triton_target",
           "generic_cpu", "host_cpu", "triton_target"]
