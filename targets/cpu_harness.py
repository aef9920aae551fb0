"""Run a compiled CPU artifact as a standalone executable (the C harness), optionally under
AddressSanitizer + UndefinedBehaviorSanitizer.  Used by the tests to prove generated code
never reads or writes out of bounds."""
from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from typing import List, Sequence

import numpy as np

from moec.codegen.c.dtypes import C_DTYPE, CODE_TO_DTYPE
from moec.ir import DType
from moec.targets.cpu import build_executable
from moec.targets.description import TargetDesc, host_cpu


class SanitizerError(Exception):
    pass


class HarnessRunError(RuntimeError):
    """The model itself refused its inputs (moec_run failed): the runtime's one-line message."""


HARNESS = "model_asan"  # the sanitized harness of an artifact compiled with --sanitize


def is_sanitized_library(so_path: str) -> bool:
    """Whether a model.so was built with AddressSanitizer (it then needs the ASan runtime first in the
    process, so it cannot be dlopen'ed by python: it runs through the harness executable instead)."""
    try:
        with open(so_path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def _write_tensors(path: str, xs: Sequence[np.ndarray]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(xs)))
        for x in xs:
            x = np.asarray(x, order="C")
            f.write(struct.pack("<ii", C_DTYPE[DType.from_np(x.dtype)][1], x.ndim))
            f.write(struct.pack(f"<{x.ndim}q", *x.shape))
            f.write(x.tobytes())


def _read_tensors(path: str) -> List[np.ndarray]:
    with open(path, "rb") as f:
        data = f.read()
    (n,), off = struct.unpack_from("<i", data, 0), 4
    out = []
    for _ in range(n):
        code, rank = struct.unpack_from("<ii", data, off)
        off += 8
        shape = struct.unpack_from(f"<{rank}q", data, off)
        off += 8 * rank
        dt = CODE_TO_DTYPE[code]
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = (count * dt.bits + 7) // 8
        out.append(np.frombuffer(data[off:off + nbytes], dtype=dt.np).reshape(shape).copy())
        off += nbytes
    return out


def build_harness(artifact_dir: str, sanitize: bool = True, target: TargetDesc = None) -> str:
    exe = os.path.join(artifact_dir, HARNESS if sanitize else "model_exe")
    build_executable(os.path.join(artifact_dir, "model.c"), exe, target or host_cpu(), sanitize=sanitize)
    return exe


def run_harness(exe: str, artifact_dir: str, inputs: Sequence[np.ndarray], n_out: int, threads: int = 2,
                timeout: float = 300) -> List[np.ndarray]:
    """Run the harness; raise SanitizerError on any sanitizer report, RuntimeError on failure."""
    with tempfile.TemporaryDirectory(prefix="moec-harness-") as d:
        fin, fout = os.path.join(d, "in.bin"), os.path.join(d, "out.bin")
        _write_tensors(fin, inputs)
        # a hostile size must be moec's "out of memory" error (malloc returns NULL past 4 GiB), not an
        # ASan "allocation-size-too-big" abort or the machine's OOM killer
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99:allocator_may_return_null=1"
                                            ":max_allocation_size_mb=4096",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")
        p = subprocess.run([exe, os.path.join(artifact_dir, "model.weights.bin"), fin, fout, str(n_out),
                            str(threads)], capture_output=True, text=True, timeout=timeout, env=env)
        if "ERROR: AddressSanitizer" in p.stderr or "runtime error:" in p.stderr or \
                "ERROR: LeakSanitizer" in p.stderr or p.returncode in (98, 99):
            raise SanitizerError(p.stderr[-4000:])
        runs = [ln for ln in p.stderr.splitlines() if ln.startswith("run: ")]  # (after any ASan warning)
        if p.returncode == 1 and runs:
            raise HarnessRunError(runs[-1][len("run: "):].strip())
        if p.returncode != 0:
            raise RuntimeError(f"harness exited {p.returncode}: {p.stderr[-2000:]}")
        return _read_tensors(fout)


class HarnessLibrary:
    """A sanitized artifact, called like CompiledLibrary: every call runs the harness executable
    (built by `moec compile --sanitize` beside model.so) in a subprocess, where the ASan runtime comes
    first.  Model failures raise HarnessRunError; sanitizer reports SanitizerError."""

    def __init__(self, artifact_dir: str, n_in: int, n_out: int, nthreads: int = 1):
        self.dir = artifact_dir
        self.exe = os.path.join(artifact_dir, HARNESS)
        if not os.path.isfile(self.exe):
            raise FileNotFoundError(f"the artifact was built with --sanitize but its harness '{HARNESS}' is "
                                    "missing; recompile it")
        self.n_in, self.n_out, self.nthreads = n_in, n_out, nthreads

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        if len(inputs) != self.n_in:
            raise HarnessRunError(f"expected {self.n_in} inputs, got {len(inputs)}")
        return run_harness(self.exe, self.dir, [np.asarray(x) for x in inputs], self.n_out, threads=self.nthreads)
