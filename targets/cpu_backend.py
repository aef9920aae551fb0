"""The CPU target's backend: model.c (+ GEMM panels in the weights file) -> model.so, loaded with ctypes
(the build and the loader themselves are in cpu.py, the ASan harness in cpu_harness.py)."""
from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

import numpy as np

from moec.errors import BuildError as UserBuildError
from moec.errors import RuntimeFailure, UserInputError
from moec.ir import Module
from moec.targets.base import BackendBase
from moec.targets.cpu import BuildError, CompiledLibrary, RunError, build_shared
from moec.targets.cpu_harness import HarnessRunError, SanitizerError
from moec.targets.description import cpu_target


class CpuBackend(BackendBase):
    """C for the host CPU: model.c + the runtime archive -> model.so, loaded with ctypes."""

    name = "cpu"
    describe = staticmethod(cpu_target)   # arch: native, generic, avx2, avx512

    @classmethod
    def why_unavailable(cls) -> Optional[str]:
        return None if (shutil.which("gcc") or shutil.which("cc")) else "no C compiler"

    def files(self) -> Dict[str, str]:
        return {"source": "model.c", "library": "model.so", "weights": "model.weights.bin", "ir": "model.mlir"}

    def emit(self, m: Module, outdir: str) -> None:
        from moec.codegen.c import gemm_pack
        from moec.codegen.c.emitter import CodegenError, emit_c
        # dense weights also as GEMM panels, appended to the weights file (codegen/c/gemm_pack.py); the index read
        # after it (a weight stored as its panels may have moved)
        packs = gemm_pack.append_packs(m, os.path.join(outdir, "model.weights.bin"),
                                       gemm_pack.panel_width(self.desc.cflags))
        with open(os.path.join(outdir, "model.weights.json")) as f:
            index = json.load(f)
        try:
            src = emit_c(m, weight_index=index, packs=packs)
        except CodegenError as e:
            raise UserInputError(f"target cpu: {e}") from None
        with open(os.path.join(outdir, "model.c"), "w") as f:
            f.write(src)

    def build(self, outdir: str, sanitize: bool = False) -> bool:
        try:
            cached = build_shared(os.path.join(outdir, "model.c"), os.path.join(outdir, "model.so"), self.desc,
                                  sanitize)
            if sanitize:  # a sanitized .so cannot be loaded into python: runs go through this executable
                from moec.targets.cpu_harness import build_harness
                build_harness(outdir, sanitize=True, target=self.desc)
            return cached
        except BuildError as e:
            raise UserBuildError(f"internal error: building the generated C failed (please report): {e}") from None

    def load(self, outdir: str, threads: int = 1) -> "CpuArtifact":
        return CpuArtifact(outdir, threads)

    def report(self, outdir: str, artifact=None) -> dict:
        """report.json's "amx" (builds for an AMX host only, codegen/c/runtime/rt_amx.c): the tile kernels built, and
        with the loaded artifact whether they run in this process (cpuid, the kernel's grant of the tile state,
        MOEC_AMX=0) or why not."""
        if "-DMOEC_HAVE_AMX" not in self.desc.cflags:
            return {}
        out = {"built": True, "kernels": "bf16 and w8a8 GEMMs of moe.experts and moec.linear_q, 3 rows and more"}
        fn = getattr(getattr(getattr(artifact, "lib", None), "lib", None), "moec_amx_status", None)
        if fn is not None:
            import ctypes
            fn.restype, fn.argtypes = ctypes.c_char_p, []
            out["run_time"] = fn().decode()
        return {"amx": out}


def _check_weight_layouts(outdir: str) -> None:
    """The weights stored in a kernel layout (model.weights.json's ``layout``) must be in one this moec's kernels
    read (ir/weight_layouts.py): an artifact from another moec, or a cache entry, is refused (the JIT cache
    rebuilds it: cache_store.Damaged), never run on weights it would misread."""
    from moec.ir.weight_layouts import check_layout
    from moec.targets.cache_store import Damaged
    path = os.path.join(outdir, "model.weights.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            index = json.load(f)
        for k, e in (index.items() if isinstance(index, dict) else ()):
            if isinstance(e, dict) and e.get("layout") is not None:
                check_layout(e["layout"], f"weight '{k}'")
    except (OSError, ValueError) as e:  # (json's errors are ValueErrors)
        raise Damaged(f"cannot load the compiled model in '{outdir}': {e}") from None


class CpuArtifact:
    """A compiled model directory, callable on a list of numpy arrays."""

    def __init__(self, outdir: str, threads: int = 1):
        with open(os.path.join(outdir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.input_names = [i["name"] for i in self.manifest["inputs"]]
        self.output_names = [o["name"] for o in self.manifest["outputs"]]
        _check_weight_layouts(outdir)
        from moec.targets.cpu_harness import HarnessLibrary, is_sanitized_library
        so = os.path.join(outdir, "model.so")
        try:
            if is_sanitized_library(so):  # `moec compile --sanitize`: run in the ASan harness
                self.lib = HarnessLibrary(outdir, len(self.input_names), len(self.output_names), threads)
            else:
                self.lib = CompiledLibrary(so, os.path.join(outdir, "model.weights.bin"),
                                           len(self.input_names), len(self.output_names), threads)
        except (RunError, OSError) as e:
            raise RuntimeFailure(f"cannot load the compiled model in '{outdir}': {e}") from None

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        try:
            return self.lib(inputs if isinstance(inputs, list) else list(inputs))
        except (RunError, HarnessRunError) as e:
            raise RuntimeFailure(str(e)) from None
        except SanitizerError as e:
            lines = [ln for ln in str(e).splitlines() if "ERROR:" in ln or "runtime error:" in ln]
            raise UserBuildError("internal error: AddressSanitizer/UBSan found an error in the compiled code "
                                 f"(please report): {(lines or [str(e)[:300]])[0].strip()}") from None
        except TypeError as e:
            raise RuntimeFailure(f"bad input: {e}") from None
