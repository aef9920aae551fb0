"""The reference target: the artifact is the compiled module itself (model.mlir + its weights), run by
moec's IR interpreter (ir/interpreter.py: every op's numpy reference semantics).  Nothing is emitted or
built; it is the debugging target that shows what the passes computed, op by op, through the same
driver, verification and report as the code-generating targets (``moec compile --target reference``)."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from moec.errors import RuntimeFailure
from moec.ir import IRError, Module
from moec.ir.interpreter import run_function
from moec.ir.io import load_module
from moec.targets.base import BackendBase, TargetDesc


def reference_target(arch: Optional[str] = "native") -> TargetDesc:
    """The interpreter as a target: one worker, no SIMD; f32 expert weights (the compiled module is run
    as it is: quantised storage belongs to the code-generating targets)."""
    if arch not in ("native", "interpreter", None):
        raise ValueError(f"unknown reference arch '{arch}' (native)")
    return TargetDesc(name="reference", arch="interpreter", cores=1, weight_modes=("f32",), device="moec IR interpreter")


class ReferenceBackend(BackendBase):
    name = "reference"
    describe = staticmethod(reference_target)
    debug_only = True

    def files(self) -> Dict[str, str]:
        return {"ir": "model.mlir", "weights": "model.weights.bin"}

    def emit(self, m: Module, outdir: str) -> None:
        return None  # (the driver saved model.mlir: that is the artifact)

    def build(self, outdir: str, sanitize: bool = False) -> bool:
        return False

    def load(self, outdir: str, threads: int = 1) -> "ReferenceArtifact":
        return ReferenceArtifact(outdir)


class ReferenceArtifact:
    """Callable on a list of numpy arrays: the interpreter on the artifact's model.mlir."""

    def __init__(self, outdir: str):
        with open(os.path.join(outdir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.input_names = [i["name"] for i in self.manifest["inputs"]]
        self.output_names = [o["name"] for o in self.manifest["outputs"]]
        try:
            self.module = load_module(os.path.join(outdir, "model.mlir"))
        except IRError as e:
            raise RuntimeFailure(f"cannot load the compiled model in '{outdir}': {e}") from None

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        try:
            return run_function(self.module, self.module.main, list(inputs))
        except IRError as e:
            raise RuntimeFailure(str(e)) from None
