"""What a target is: a description (typed data) and a backend (everything target-specific).

``TargetDesc`` is what passes and emitters read instead of a target's name: cores, caches, the
weight modes its kernels implement, how the dispatch is blocked, its accelerator memories.  A
``Backend`` owns the rest: whether the target can run here, its option checks, emission, the
build, loading the artifact and the target's own report entries.  The registry
(``moec.targets``) maps names to backends; nothing else lists target names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Tuple, runtime_checkable

@dataclass(frozen=True)
class TargetDesc:
    name: str                      # the registry name of the target
    arch: str                      # "x86_64-avx512", "x86_64-avx2", "generic", "H100", "sm_89", "Ascend910B2"
    cores: int                     # parallel workers (CPU threads, SMs, AI cube cores)
    vector_bits: int = 128         # SIMD width (CPU), vector repeat bits (Ascend)
    isa: Tuple[str, ...] = ()      # feature flags: avx2, fma, avx512f, ..., tensor_core, fp8_e4m3, cube
    l1_bytes: int = 32 * 1024      # CPU L1 / GPU shared memory per SM / Ascend L1 buffer
    l2_bytes: int = 1024 * 1024
    l3_bytes: int = 8 * 1024 * 1024
    dtypes: Tuple[str, ...] = ("f32", "f64", "f16", "bf16", "i64", "i32", "i8", "ui8", "i1")
    cflags: Tuple[str, ...] = ()
    # -- what the target's kernels implement -----------------------------------------------------
    weight_modes: Tuple[str, ...] = ("f32",)         # --weights modes (the support matrix: one place)
    half_activation_modes: Tuple[str, ...] = ()      # quantised modes run with f16/bf16 activations
    dense_weight_modes: Tuple[str, ...] = ()         # modes its kernels run on dense linear layers (linear_q)
    fused_decoder_ops: Tuple[str, ...] = ()          # decoder ops recognize-decoder may form (moec.attention, ...)
    fuse_shared_linears: bool = False                # linears reading one input fused into one (passes/fuse_shared_linears.py)
    # -- schedule-dispatch (passes/schedule_dispatch.py) -----------------------------------------
    dispatch_block: int = 1        # rows each expert's segment is padded to (1: ragged rows are fine)
    gemv_max_slots: int = 0        # T*k at or below this takes the per-token GEMV path; 0: the expert count
    tile_budget_level: int = 2     # cache level (1, 2) half of which one work item's weight slice must fit
    # -- accelerators (None: not this kind of target; reported only when set) --------------------
    block_m: Optional[int] = None           # the GEMM row tile
    aiv_cores: Optional[int] = None         # Ascend vector cores
    ub_bytes: Optional[int] = None          # Ascend unified buffer per vector core
    l0a_bytes: Optional[int] = None
    l0b_bytes: Optional[int] = None
    l0c_bytes: Optional[int] = None
    smem_block: Optional[int] = None        # GPU: the shared memory one program may use
    hbm_gbps: Optional[float] = None
    bf16_tflops: Optional[float] = None
    fp16_tflops: Optional[float] = None
    compute_capability: Optional[str] = None
    device: Optional[str] = None            # what runs the kernels (a GPU's name, an interpreter, an emulator)

    def has(self, feature: str) -> bool:
        return feature in self.isa

    @property
    def tile_budget_bytes(self) -> int:
        return (self.l1_bytes if self.tile_budget_level == 1 else self.l2_bytes) // 2

    def to_json(self) -> dict:
        """The description as report.json's ``target_desc`` shows it (accelerator fields only where set)."""
        out = {"name": self.name, "arch": self.arch, "cores": self.cores, "vector_bits": self.vector_bits,
               "isa": list(self.isa), "l1_bytes": self.l1_bytes, "l2_bytes": self.l2_bytes,
               "l3_bytes": self.l3_bytes, "cflags": list(self.cflags)}
        for key in _ACCEL_FIELDS:
            v = getattr(self, key)
            if v is not None:
                out[key] = v
        if self.half_activation_modes:
            out["quant_half_activations"] = self.half_activation_modes
        return out


_ACCEL_FIELDS = ("block_m", "aiv_cores", "ub_bytes", "l0a_bytes", "l0b_bytes", "l0c_bytes", "smem_block", "hbm_gbps",
                 "bf16_tflops", "fp16_tflops", "compute_capability", "device")


@runtime_checkable
class Backend(Protocol):
    """Everything target-specific.  ``outdir`` is the artifact directory being built (it already holds
    model.mlir and the weights); ``opts`` is the driver's CompileOptions."""

    name: str
    desc: TargetDesc
    arch_flag: str

    @classmethod
    def why_unavailable(cls) -> Optional[str]:
        """None when this machine can build and run the target, else the reason it cannot."""

    @classmethod
    def available(cls) -> bool: ...

    @classmethod
    def stand_in(cls, gpu: bool) -> Optional[Dict[str, str]]:
        """Where the target's code runs on a stand-in on this machine (an interpreter, an emulator):
        {"label", "timing" (why not timed), "note" (conformance's table)}; None on the real device.
        ``gpu``: whether a CUDA GPU is present."""

    @classmethod
    def prepare(cls) -> None:
        """Process-wide setup before a model is imported for the target (Triton: choose its interpreter
        where there is no GPU, before torch.export imports triton)."""

    def check_options(self, opts, module=None) -> None:
        """Reject options (and, given, a module) the target cannot compile: UserInputError, one line."""

    def files(self) -> Dict[str, str]:
        """The artifact's files by role (manifest.json's ``roles``)."""

    def emit(self, module, outdir: str) -> None: ...

    def build(self, outdir: str, sanitize: bool = False) -> bool:
        """Build what ``emit`` wrote; True when the build came from a cache."""

    def load(self, outdir: str, threads: int = 1):
        """The artifact: callable on a list of numpy arrays, with input_names / output_names."""

    def run(self, outdir: str, inputs: list, threads: int = 1) -> list:
        """`moec run`: the artifact's outputs for these inputs (BackendBase: load it and call it; a target with a
        program of its own that runs the artifact may use it instead)."""

    def report(self, outdir: str, artifact=None) -> dict:
        """The target's own report.json entries (after the build, and again with the verified artifact)."""

    def inspect(self, module, tokens: Tuple[int, ...]) -> dict:
        """`moec inspect --target NAME`: the target's own entries for a compiled module."""

    def inspect_lines(self, info: dict) -> List[str]:
        """`moec inspect`'s text for what :meth:`inspect` returned."""


class BackendBase:
    """Defaults of the optional parts of the protocol (a backend overrides what it has)."""

    name = "?"
    arch_flag = "arch"   # the CLI flag that names the arch (`--arch`; the Ascend backend's is `--soc`)
    debug_only = False   # a debugging target: not in conformance's default list

    def __init__(self, desc: TargetDesc):
        self.desc = desc

    @classmethod
    def why_unavailable(cls) -> Optional[str]:
        return None

    @classmethod
    def available(cls) -> bool:
        return cls.why_unavailable() is None

    @classmethod
    def prepare(cls) -> None:
        return None

    @classmethod
    def stand_in(cls, gpu: bool) -> Optional[Dict[str, str]]:
        return None

    def check_options(self, opts, module=None) -> None:
        return None

    def run(self, outdir: str, inputs: list, threads: int = 1) -> list:
        return list(self.load(outdir, threads=threads)(inputs))

    def report(self, outdir: str, artifact=None) -> dict:
        return {}

    def inspect(self, module, tokens: Tuple[int, ...]) -> dict:
        return {}

    def inspect_lines(self, info: dict) -> List[str]:
        return []

    # -- expert parallelism (compiler/ep.py): where a rank's tensors live, how a stage runs on them ---------
    def ep_device(self, local_rank: int) -> str:
        """The torch device of this target's tensors on the process of ``local_rank`` ("cpu", "cuda:1",
        "npu:0"); its type picks the collective backend (gloo / nccl / hccl, compiler/ep.py)."""
        return "cpu"

    def ep_call(self, artifact, tensors: list) -> list:
        """Run a loaded stage on torch tensors (on :meth:`ep_device`); torch tensors on the same device back.
        Default: the artifact's numpy entry point on views of CPU tensors (host copies for others)."""
        import torch
        dev = tensors[0].device if tensors else torch.device("cpu")
        outs = artifact([t.detach().cpu().contiguous().numpy() for t in tensors])
        return [torch.from_numpy(o).to(dev) for o in outs]
