"""Target descriptions: how each target's TargetDesc (targets/base.py) is made -- the host CPU read
from /proc and /sys, a GPU from a table or from the CUDA device, an Ascend SoC from a table.

Passes and emitters read these (vector width, cores, cache and buffer sizes, the weight modes the
kernels implement) instead of hard-wiring a machine.  How an artifact is built and run lives in
each target's backend; the registry (``moec.targets``) maps names to both.
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import replace
from functools import lru_cache
from typing import Tuple

from moec.targets.base import TargetDesc


# the weight modes each target's kernels implement (TargetDesc.weight_modes: read by the driver's option
# checks, the quantize pass, conformance and the Ascend plan)
CPU_WEIGHTS = ("f32", "bf16", "int8", "int4", "w8a8", "w4a8",  # w4a8: int4 weights, per-group int8 activations
               "int8_bf16", "int4_bf16")  # int8 / int4 weights with bf16-rounded activations (--activations bf16)
CPU_DENSE_WEIGHTS = ("bf16", "int8", "int4", "w8a8", "w4a8", "int8_bf16", "int4_bf16")  # on dense linear layers too (moec.linear_q), every build
TRITON_WEIGHTS = ("f32", "bf16", "int8", "int4", "fp8", "fp8a8")  # fp8a8: fp8 weights and per-token fp8 activations
ASCEND_WEIGHTS = ("f32", "bf16", "int8", "int4", "w8a8")


def _cpu_flags() -> Tuple[str, ...]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ()


def _cache_size(level_name: str, default: int) -> int:
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            d = os.path.join(base, idx)
            lvl = open(os.path.join(d, "level")).read().strip()
            typ = open(os.path.join(d, "type")).read().strip()
            if lvl == level_name and typ in ("Data", "Unified"):
                s = open(os.path.join(d, "size")).read().strip()
                m = re.fullmatch(r"(\d+)([KMG]?)", s)
                if m:
                    mult = {"": 1, "K": 1024, "M": 1 << 20, "G": 1 << 30}[m.group(2)]
                    return int(m.group(1)) * mult
    except OSError:
        pass
    return default


_ISA_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                    "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")
# AMX tiles (bf16 and int8): the bf16 / w8a8 GEMM micro-kernels of codegen/c/runtime/rt_amx.c, built where the
# build host has all three; the artifact still checks cpuid and asks the kernel for the tile state at run time
AMX_CFLAGS = ("-mamx-tile", "-mamx-bf16", "-mamx-int8", "-DMOEC_HAVE_AMX")


@lru_cache(maxsize=1)
def host_cpu() -> TargetDesc:
    """Describe the machine we run on."""
    flags = _cpu_flags()
    isa = tuple(f for f in _ISA_OF_INTEREST if f in flags)
    machine = platform.machine()
    if machine in ("x86_64", "AMD64"):
        if "avx512f" in isa and "avx512bw" in isa and "avx512vl" in isa:
            arch, vbits = "x86_64-avx512", 512
            cflags = ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
                      "-DMOEC_VBYTES=64")
            if "avx512_bf16" in isa:
                cflags += ("-mavx512bf16",)
            if "avx512_vnni" in isa:
                cflags += ("-mavx512vnni",)
            if all(f in isa for f in ("amx_tile", "amx_bf16", "amx_int8")):
                cflags += AMX_CFLAGS
        elif "avx2" in isa and "fma" in isa:
            arch, vbits = "x86_64-avx2", 256
            cflags = ("-mavx2", "-mfma", "-DMOEC_VBYTES=32") + (("-mf16c",) if "f16c" in isa else ())
        else:
            arch, vbits, cflags = "x86_64", 128, ()
    elif machine in ("aarch64", "arm64"):
        arch, vbits, cflags = "aarch64-neon", 128, ()
    else:
        arch, vbits, cflags = "generic", 128, ()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # dispatch: ragged expert segments (block 1); the per-token GEMV while there is about one slot per
    # expert or fewer (a grouped GEMM has no weight reuse to win); a work item's weights in half the L2
    return TargetDesc(name="cpu", arch=arch, cores=cores, vector_bits=vbits, isa=isa,
                      l1_bytes=_cache_size("1", 32 * 1024), l2_bytes=_cache_size("2", 1 << 20),
                      l3_bytes=_cache_size("3", 8 << 20), cflags=cflags, weight_modes=CPU_WEIGHTS,
                      dense_weight_modes=CPU_DENSE_WEIGHTS,
                      fused_decoder_ops=("moec.attention", "moec.rms_norm", "moec.rotary", "moec.linear",
                                         "moec.kv_step_attention"),
                      fuse_shared_linears=True,
                      dispatch_block=1, gemv_max_slots=0, tile_budget_level=2)


def generic_cpu() -> TargetDesc:
    """A portable CPU description: no SIMD flags (the C compiler's baseline)."""
    h = host_cpu()
    return replace(h, arch="generic", vector_bits=128, isa=(), cflags=())


def cpu_target(arch: str = "native") -> TargetDesc:
    if arch in ("native", "host"):
        return host_cpu()
    if arch == "generic":
        return generic_cpu()
    h = host_cpu()
    if arch == "avx2":
        return replace(h, arch="x86_64-avx2", vector_bits=256,
                       isa=tuple(f for f in h.isa if not f.startswith(("avx512", "amx"))),
                       cflags=("-mavx2", "-mfma", "-mf16c", "-DMOEC_VBYTES=32"))
    if arch == "avx512":
        if "avx512f" not in h.isa:
            raise ValueError("this machine has no AVX-512")
        return h
    raise ValueError(f"unknown CPU arch '{arch}' (native, generic, avx2, avx512)")


# -- accelerator targets (data only here; their emitters and runners live elsewhere) ----------

TRITON_GPUS = {
    # name: SMs, shared memory per SM, the most one block (program) may use, HBM GB/s, dense bf16
    # TFLOP/s, compute capability.  smem_block is what a kernel's tiles must fit (moec.codegen.triton.aot).
    "H100": dict(cores=132, smem=228 * 1024, smem_block=227 * 1024, hbm_gbps=3350, bf16_tflops=989, cc=(9, 0)),
    "H200": dict(cores=132, smem=228 * 1024, smem_block=227 * 1024, hbm_gbps=4800, bf16_tflops=989, cc=(9, 0)),
    "A100": dict(cores=108, smem=164 * 1024, smem_block=163 * 1024, hbm_gbps=2039, bf16_tflops=312, cc=(8, 0)),
    "L40S": dict(cores=142, smem=100 * 1024, smem_block=99 * 1024, hbm_gbps=864, bf16_tflops=362, cc=(8, 9)),
}


def smem_block_by_cc() -> dict:
    """The shared memory one block (program) may use, by compute capability x10 (90 for sm_90)."""
    return {10 * g["cc"][0] + g["cc"][1]: g["smem_block"] for g in TRITON_GPUS.values()}


def _gpu_isa(cc: Tuple[int, int]) -> Tuple[str, ...]:
    # fp8_e4m3: the GPU converts (and multiplies) float8 e4m3 natively -- Ada and Hopper (sm_89+);
    # Triton's tl.float8e4nv is not available below that
    return ("tensor_core", "bf16") + (("fp8_e4m3",) if tuple(cc) >= (8, 9) else ())


def triton_target(gpu: str = "H100", device: str = "") -> TargetDesc:
    """An NVIDIA GPU as the Triton emitter sees it (SM count, shared memory, tile granularity, whether it
    has fp8).  ``device``: what actually runs the kernels (the GPU's name, or the interpreter)."""
    if gpu not in TRITON_GPUS:
        raise ValueError(f"unknown GPU '{gpu}' (known: {', '.join(TRITON_GPUS)})")
    g = TRITON_GPUS[gpu]
    # dispatch: segments padded to the kernels' BLOCK_M row tile, the GEMV below half a tile, a work
    # item's weights in half the shared memory
    return TargetDesc(name="triton", arch=gpu, cores=g["cores"], vector_bits=1024, isa=_gpu_isa(g["cc"]),
                      l1_bytes=g["smem"], l2_bytes=50 << 20, l3_bytes=0, weight_modes=TRITON_WEIGHTS,
                      # weight modes its kernels run with bf16/f16 activations (W8A16, W4A16, fp8 weights:
                      # the tiles are dequantised to the activations' type for the dot)
                      half_activation_modes=("int8", "int4", "fp8"),
                      # the decode step's attention over the cache (an f16 cache read widened: kernels.py)
                      fused_decoder_ops=("moec.kv_step_attention",),
                      dispatch_block=64, gemv_max_slots=32, tile_budget_level=1,
                      block_m=64, hbm_gbps=g["hbm_gbps"], bf16_tflops=g["bf16_tflops"], smem_block=g["smem_block"],
                      compute_capability="%d.%d" % g["cc"], device=device or gpu)


def _cuda_device():
    """(name, (major, minor), SM count) of CUDA device 0, or None (no torch or no GPU)."""
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        p = torch.cuda.get_device_properties(0)
        return p.name, (int(p.major), int(p.minor)), int(p.multi_processor_count)
    except Exception:  # noqa: BLE001 - a broken CUDA setup is "no GPU" here; running reports it
        return None


def detect_triton_target(gpu: str = "native") -> TargetDesc:
    """The triton target for ``gpu`` (a name in TRITON_GPUS), else for the CUDA GPU of this machine
    (known models by name, others from their properties), else -- no GPU: the kernels run under
    Triton's interpreter, which emulates everything, fp8 included -- the H100 description."""
    if gpu in TRITON_GPUS:
        return triton_target(gpu)
    dev = _cuda_device()
    if dev is None:
        return triton_target("H100", device="interpreter (no CUDA GPU)")
    name, cc, sms = dev
    for known in TRITON_GPUS:
        if known in name.replace(" ", "") and TRITON_GPUS[known]["cc"] == cc:
            return triton_target(known, device=name)
    return replace(triton_target("H100"), arch=f"sm_{cc[0]}{cc[1]}", cores=sms, isa=_gpu_isa(cc),
                   compute_capability="%d.%d" % cc, device=name)


ASCEND_SOCS = {
    # name: AI cores (cube), vector cores, HBM GB/s, fp16 cube TFLOPS (estimates from the design note)
    "Ascend910B1": (24, 48, 1600, 354), "Ascend910B2": (24, 48, 1600, 354),
    "Ascend910B3": (20, 40, 1600, 295), "Ascend910B4": (20, 40, 1600, 295),
    "Ascend910_93": (24, 48, 1600, 354),
}


DEFAULT_SOC = "Ascend910B2"


def ascend_target(soc: str = DEFAULT_SOC) -> TargetDesc:
    """An Ascend NPU: cores and the per-core buffer sizes that tiling must fit ("native": DEFAULT_SOC)."""
    if soc in ("native", None):
        soc = DEFAULT_SOC
    if soc not in ASCEND_SOCS:
        raise ValueError(f"unknown SoC '{soc}' (known: {', '.join(ASCEND_SOCS)})")
    aic, aiv, hbm, tflops = ASCEND_SOCS[soc]
    return TargetDesc(name="ascend", arch=soc, cores=aic, vector_bits=2048, isa=("cube", "vector"),
                      l1_bytes=512 * 1024, l2_bytes=192 << 20, l3_bytes=0,
                      dtypes=("f32", "f16", "bf16", "i64", "i32", "i8", "ui8", "i1"), weight_modes=ASCEND_WEIGHTS,
                      # bf16/f16 models keep their type around quantised experts: the codes are dequantised to it
                      # in the Unified Buffer for the cube (int8/int4), or the rows quantised from it (w8a8)
                      half_activation_modes=("int8", "int4", "w8a8"),
                      # the decode step's attention over the cache (an f16 cache: half rows widened in the UB;
                      # codegen/ascend/kv_ops.py)
                      fused_decoder_ops=("moec.kv_step_attention",),
                      # dispatch: MoeInitRouting's dropless layout (rows sorted by expert, unpadded), the
                      # GEMV below one cube row tile, a work item's weights in half the L1 buffer
                      dispatch_block=1, gemv_max_slots=16, tile_budget_level=1,
                      aiv_cores=aiv, ub_bytes=192 * 1024, l0a_bytes=64 * 1024, l0b_bytes=64 * 1024,
                      l0c_bytes=128 * 1024, hbm_gbps=hbm, fp16_tflops=tflops, block_m=16)
