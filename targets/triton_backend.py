"""The Triton target: model_triton.py (the launcher, generated at compile time) + its constants + the
weights; runs on a CUDA GPU, or under Triton's interpreter (TRITON_INTERPRET=1, torch on the CPU) where
there is none.  Loading an artifact parses no IR: the launcher holds the input types, the kernel calls and
the host segments (model.mlir stays in the artifact for tools and readers)."""
from __future__ import annotations

import json
import os
import types
from typing import Dict, List, Optional, Sequence

import numpy as np

from moec.errors import RuntimeFailure, UserInputError
from moec.ir import IRError, Module
from moec.ir.io import weight_paths
from moec.ir.weights import WeightStore
from moec.targets.base import BackendBase, TargetDesc
from moec.targets.description import detect_triton_target


class TritonBackend(BackendBase):
    name = "triton"
    describe = staticmethod(detect_triton_target)  # arch: a GPU name (H100, A100, ...), else this machine's GPU

    @classmethod
    def why_unavailable(cls) -> Optional[str]:
        import importlib.util  # (triton itself is not imported here: the interpreter must be chosen first)
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("triton") is None:
            return "torch/triton not installed (pip install 'moec[triton]')"
        return None

    @classmethod
    def stand_in(cls, gpu: bool) -> Optional[Dict[str, str]]:
        if gpu:
            return None
        return {"label": "interpreter", "timing": "skipped: no GPU (kernels ran under TRITON_INTERPRET)",
                "note": "no GPU here: kernels verified under Triton's interpreter; GPU timing skipped"}

    @classmethod
    def prepare(cls) -> None:
        from moec.codegen.triton import ensure_triton
        ensure_triton()

    def check_options(self, opts, module: Optional[Module] = None) -> None:
        check_fp8_support(self.desc, opts.weights, module)

    def files(self) -> Dict[str, str]:
        return {"launcher": "model_triton.py", "kernels": "moec.codegen.triton.kernels", "ir": "model.mlir",
                "weights": "model.weights.bin", "constants": _CONSTS + ".weights.bin"}

    def emit(self, m: Module, outdir: str) -> None:
        from moec.codegen.triton.emitter import emit_triton
        src, consts = emit_triton(m)
        with open(os.path.join(outdir, "model_triton.py"), "w") as f:
            f.write(src)
        consts.save(*weight_paths(os.path.join(outdir, _CONSTS)))

    def build(self, outdir: str, sanitize: bool = False) -> bool:
        _compile_launcher(os.path.join(outdir, "model_triton.py"))  # a syntax check; no __pycache__ written
        return False

    def load(self, outdir: str, threads: int = 1) -> "TritonArtifact":
        return TritonArtifact(outdir)

    def ep_device(self, local_rank: int) -> str:
        """EP: the process's GPU (local rank modulo the GPUs here, made the current device before any stage
        loads its weights there), exchanged with NCCL; the CPU under the interpreter (gloo)."""
        self.prepare()
        from moec.codegen.triton import runtime as rt
        if rt.DEVICE != "cuda":
            return "cpu"
        import torch
        idx = local_rank % max(1, torch.cuda.device_count())
        torch.cuda.set_device(idx)
        return f"cuda:{idx}"

    def ep_call(self, artifact, tensors: list) -> list:
        return artifact.call_torch(tensors)     # (tensors on the runtime's device: no host copy)


_CONSTS = "model_triton.consts"   # the launcher's constants: .weights.bin + .weights.json (the WeightStore format)


def check_fp8_support(desc: TargetDesc, weights: str, m: Optional[Module] = None) -> None:
    """fp8 (e4m3) weights -- asked for, or already in ``m`` -- need a GPU with fp8 (sm_89+) or Triton's
    interpreter; anything else is a UserInputError saying what to do."""
    if weights not in ("fp8", "fp8a8") and not (m is not None and any(o.name == "moe.experts" and o.attrs.get("wq") == "fp8"
                                                       for o in m.ops())):
        return
    if not desc.has("fp8_e4m3"):
        raise UserInputError(f"target triton: the GPU {desc.device or desc.arch} (compute capability "
                             f"{desc.compute_capability or '?'}) has no fp8 (e4m3) support, which needs compute "
                             "capability 8.9 or newer (Ada, Hopper: L4/L40S, H100/H200); use --weights int8 or "
                             "bf16 on this GPU, or compile for an fp8-capable one")


def _compile_launcher(path: str):
    with open(path, "rb") as f:
        return compile(f.read(), path, "exec", dont_inherit=True)


class TritonArtifact:
    """Callable on a list of numpy arrays (or torch tensors: results come back the same way)."""

    def __init__(self, outdir: str):
        try:
            from moec.codegen.triton import runtime as rt
        except ImportError as e:
            raise UserInputError(f"target triton: {e}") from None
        self.rt = rt
        with open(os.path.join(outdir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.input_names = [i["name"] for i in self.manifest["inputs"]]
        self.output_names = [o["name"] for o in self.manifest["outputs"]]
        # the launcher runs from its source text, never from a cached .pyc: nothing is written into the artifact
        # (a JIT cache entry is checked file by file) and no stale or damaged bytecode is executed
        path = os.path.join(outdir, "model_triton.py")
        mod = types.ModuleType(f"moec_triton_{abs(hash(outdir))}")
        mod.__file__ = path
        exec(_compile_launcher(path), mod.__dict__)  # noqa: S102 - moec's own generated launcher
        self.launcher = mod
        if rt.DEVICE == "cuda" and mod.FP8:  # an fp8 artifact compiled elsewhere, run on a GPU without fp8: say so
            check_fp8_support(detect_triton_target(), "fp8")
        self.inputs = mod.INPUTS  # (element type, dims) of each input
        consts = WeightStore.load(*weight_paths(os.path.join(outdir, _CONSTS)))
        self.consts = {k: rt.from_numpy(np.asarray(consts[k])) for k in mod.CONSTANTS}
        self.host = mod.host_segments(consts)  # the host ops, built once (codegen/triton/host.py)
        self.W = {k: rt.from_numpy(np.asarray(a))
                  for k, a in WeightStore.load(*weight_paths(os.path.join(outdir, "model.mlir"))).items()}
        self.stats: Dict[str, int] = {}
        self.device = rt.DEVICE

    def run_torch(self, inputs: Sequence):
        graphs = getattr(self, "_graphs", None)
        if graphs is not None:
            return graphs(list(inputs))
        return self.launcher.run(self.W, self.consts, self.host, list(inputs), self.stats)

    def enable_cuda_graphs(self) -> Optional[str]:
        """Replay the whole launcher as one CUDA graph per input signature (codegen/triton/graphs.py) from now
        on; where that cannot be (the interpreter, ops on the host) nothing changes and the reason is returned."""
        from moec.codegen.triton.graphs import GraphRunner, unavailable
        why = unavailable(self.device, getattr(self.launcher, "HOST_OPS_STATIC", 0))
        if why is None:
            self._graphs = GraphRunner(lambda xs: self.launcher.run(self.W, self.consts, self.host, xs, self.stats))
        return why

    def check_inputs(self, shapes: Sequence[tuple], dtypes: Sequence[str]) -> None:
        """Reject inputs whose count, element type, rank or sizes do not fit the compiled model, naming
        the input (a wrong dtype must not run: a kernel would read its bytes as another type)."""
        args = self.inputs
        if len(shapes) != len(args):
            raise RuntimeFailure(f"the compiled model takes {len(args)} input(s) ({', '.join(self.input_names)}), "
                                 f"got {len(shapes)}")
        sym: Dict[str, int] = {}
        for name, (want_dt, want_shape), info, shape, dt in zip(self.input_names, args, self.manifest["inputs"],
                                                                 shapes, dtypes):
            if dt != want_dt:
                raise RuntimeFailure(f"input '{name}': element type {dt}, the model was compiled for "
                                     f"{want_dt}; convert the input (or compile for {dt})")
            if len(shape) != len(want_shape):
                raise RuntimeFailure(f"input '{name}': rank {len(shape)}, the model takes rank {len(want_shape)} "
                                     f"({info['type']})")
            for d, (have, dim) in enumerate(zip(shape, want_shape)):
                if isinstance(dim, int) and have != dim:
                    raise RuntimeFailure(f"input '{name}': dimension {d} is {have}, the model was compiled for "
                                         f"{dim}")
                if isinstance(dim, str) and sym.setdefault(dim, have) != have:
                    raise RuntimeFailure(f"input '{name}': dimension {d} ('{dim}') is {have}, but another input "
                                         f"gave '{dim}' = {sym[dim]}")

    def call_torch(self, inputs: Sequence) -> list:
        """Torch tensors in, torch tensors out, without a trip through the host: inputs already on the
        runtime's device (the GPU, or the CPU under the interpreter) are used as they are; others are
        copied there, and the outputs go back to the first input's device."""
        rt = self.rt
        names = {t: name for name, t in rt.TORCH_DTYPE.items()}
        self.check_inputs([tuple(x.shape) for x in inputs], [names.get(x.dtype, str(x.dtype)) for x in inputs])
        home = inputs[0].device if inputs else None
        xs = [x.detach().to(rt.DEVICE, non_blocking=True).contiguous() for x in inputs]
        try:
            outs = self.run_torch(xs)
        except (RuntimeError, ValueError, IndexError, IRError) as e:
            raise RuntimeFailure(f"triton run failed: {str(e).splitlines()[0][:300]}") from None
        return [o.to(home) for o in outs] if home is not None else outs  # (.to is free on the same device)

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        rt = self.rt
        arrays = [np.asarray(x) for x in inputs]
        self.check_inputs([a.shape for a in arrays], [_np_mlir(a.dtype) for a in arrays])
        try:
            xs = [rt.from_numpy(a) for a in arrays]
            outs = self.run_torch(xs)
            # an input a kernel updated in place (a KV cache moec.kv_append wrote into): the caller's array gets the
            # device copy's contents, as the C target writes the caller's memory (call_torch with tensors already on
            # the device copies nothing)
            for i in getattr(self.launcher, "INPLACE", ()):
                if arrays[i].flags.writeable:
                    np.copyto(arrays[i], rt.to_numpy(xs[i]))
            return [rt.to_numpy(o) for o in outs]
        except (RuntimeError, ValueError, IndexError, IRError) as e:
            raise RuntimeFailure(f"triton run failed: {str(e).splitlines()[0][:300]}") from None


def _np_mlir(dt) -> str:
    from moec.ir import DType
    try:
        return DType.from_np(dt).mlir
    except TypeError:
        return str(dt)
