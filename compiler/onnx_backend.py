"""moec as an ONNX backend (onnx.backend.base): lets onnx's own conformance runner drive moec.

    rep = MoecBackend.prepare(model_proto)   # import, optimise, emit C, build
    outputs = rep.run([x, y])                # run the compiled library

Only the CPU device is supported.  Unsupported ops or dtypes raise moec.errors.UnsupportedError
from prepare().
"""
from __future__ import annotations

import shutil
import tempfile
from typing import Any, List, Sequence

import numpy as np
from onnx.backend.base import Backend, BackendRep

from moec.driver import CompileOptions, compile_onnx
from moec.targets.registry import CpuArtifact


class MoecRep(BackendRep):
    def __init__(self, outdir: str, artifact: CpuArtifact):
        self.outdir = outdir
        self.artifact = artifact

    def run(self, inputs: Any, **kwargs) -> List[np.ndarray]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        elif isinstance(inputs, dict):
            inputs = [inputs[n] for n in self.artifact.input_names]
        return self.artifact(list(inputs))

    def __del__(self):
        shutil.rmtree(self.outdir, ignore_errors=True)


class MoecBackend(Backend):
    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> MoecRep:
        if not cls.supports_device(device):
            raise ValueError(f"moec's ONNX backend runs on CPU only, not {device}")
        outdir = tempfile.mkdtemp(prefix="moec-backend-")
        try:
            compile_onnx(model, outdir, CompileOptions(force=True, verify=False, threads=1))
            return MoecRep(outdir, CpuArtifact(outdir))
        except BaseException:
            shutil.rmtree(outdir, ignore_errors=True)
            raise

    @classmethod
    def run_model(cls, model, inputs: Sequence[np.ndarray], device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)


prepare = MoecBackend.prepare
run_model = MoecBackend.run_model
supports_device = MoecBackend.supports_device
