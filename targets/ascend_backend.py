"""The Ascend target: AscendC kernels + host launch code + a CANN CMake project, built here with g++
against moec's clean-room emulator (targets/ascend_emu) and run block by block on the CPU.

The emitted folder (``ascend/``) is what a CANN user builds: kernels/moe_kernels.cpp (AscendC),
host/launch.cpp (ACL + <<<>>> launches), CMakeLists.txt, README.md.  ``plan.json`` lists the
op-by-op schedule: which ops run as NPU kernels (with blockDim and tiling) and which stay on the
host (reported, never hidden), plus the cost-model estimates.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence

import ml_dtypes
import numpy as np

from moec.codegen.ascend.launch_plan import (Buf, Executor, LiveRecorder, NeedsData, PlanError, Recorder, Sym, Tiling,
                                          device_op, evaluate, execute, shape_of, smax, smin, sprod)
from moec.codegen.escape import cmake_string, ident
from moec.errors import BuildError, RuntimeFailure, UserInputError
from moec.ir import Module
from moec.ir.walk import walk
from moec.ir.io import load_module
from moec.ir.ops.moe import (ACTIVATION_CODES, NORM_CODES as NORM, POST_CODES as POST, SCORING_CODES as SCORING,
                          WEIGHTS_AT_CODES, experts_extras)
from moec.targets import cache_store
from moec.targets.base import BackendBase
from moec.targets.description import TargetDesc, ascend_target

HERE = os.path.dirname(os.path.abspath(__file__))
EMU_INCLUDE = os.path.join(HERE, "ascend_emu", "include")
CODEGEN = os.path.join(os.path.dirname(HERE), "codegen", "ascend")
KERNEL_FILES = ("moe_kernels.cpp", "cube_kernels.cpp", "vector_kernels.cpp")
KERNEL_HEADERS = ("moec_kernel_common.h",)  # included by the kernel files
HOST_FILES = ("launch.cpp", "moec_run.cpp")

# MoeTiling field order (codegen/ascend/kernels/moe_kernels.cpp); 'f' = float, else int32
TILING_FIELDS = [("T", "i"), ("D", "i"), ("E", "i"), ("K", "i"), ("F", "i"), ("I", "i"), ("scoring", "i"),
                 ("n_group", "i"), ("topk_group", "i"), ("group_top2", "i"), ("post", "i"), ("norm", "i"),
                 ("capacity", "i"), ("has_bias", "i"), ("norm_eps", "f"), ("scale", "f"), ("act", "i"),
                 ("interleaved", "i"), ("clamp", "i"), ("weights_at", "i"), ("has_b_in", "i"), ("has_b_out", "i"),
                 ("alpha", "f"), ("beta", "f"), ("limit", "f"), ("kt", "i"), ("shared", "i"), ("weighted", "i"),
                 ("has_shared", "i"), ("passthrough", "i"), ("has_gate", "i"), ("M", "i"), ("N", "i"), ("Kd", "i"),
                 ("rows", "i"), ("adt", "i"), ("chunk", "i"), ("qscale", "i"), ("xdt", "i"),
                 ("ydt", "i"), ("aq", "i"), ("tie_high", "i"), ("drop", "i"), ("min_weight", "f"),
                 ("jitter_eps", "f"), ("norm_min", "f"), ("group_fill", "f"), ("wgroup", "i"), ("zp", "i"),
                 ("bias_f32", "i"), ("n_skip", "i"), ("n_shared", "i"), ("seq", "i")]
# GmmTiling field order (codegen/ascend/kernels/cube_kernels.cpp), all int32
GMM_FIELDS = ("T", "G", "N", "K", "baseM", "baseN", "baseK", "stepK", "aShared", "aRows", "outRows", "dbL0C", "dtype",
              "cdt")
ROUTE_SLOTS_PER_BLOCK = 256  # moe_init_routing's routed (token, expert) slots per block
XDT = {"f32": 0, "bf16": 1, "f16": 2}   # MoeTiling.xdt / GmmTiling.cdt: the model's activation type in GM
NP_X = {"f32": np.float32, "bf16": np.dtype(ml_dtypes.bfloat16), "f16": np.float16}
CUBE_COUNTERS = ("mmad_calls", "mmad_macs", "loaddata_calls", "nd2nz_calls", "fixpipe_calls", "mmad_f32", "mmad_bf16",
                 "mmad_f16", "mmad_i8")
# MoeTiling's enum codes come from ir/ops/moe.py; ACT: the activations the AscendC kernels implement
ACT = {a: ACTIVATION_CODES[a] for a in ("swiglu", "gelu", "gelu_tanh", "relu", "silu", "identity", "relu2",
                                        "geglu", "geglu_tanh", "softcap_swiglu")}


def _pack(kinds: str, vals):
    """The tiling struct: bytes, or a launch-plan Tiling when a field is known only at run time (a Sym)."""
    t = Tiling(list(zip(kinds, vals)))
    return t if any(not isinstance(v, (int, float)) for _, v in t.fields) else bytes(t)


def gmm_tiling_bytes(**kw):
    return _pack("i" * len(GMM_FIELDS), [kw.get(n, 0) for n in GMM_FIELDS])


def tiling_bytes(**kw):
    return _pack("".join(k for _, k in TILING_FIELDS),
                 [float(kw.get(n, 0)) if k == "f" else kw.get(n, 0) for n, k in TILING_FIELDS])


CMAKE = """# CMake project for moec's AscendC kernels and host program, laid out like CANN's kernel samples.
# Build on a machine with the CANN toolkit:
#   source $ASCEND_HOME/set_env.sh      (or ascend-toolkit/set_env.sh)
#   cmake -B build -DSOC_VERSION={soc} -DASCEND_CANN_PACKAGE_PATH=$ASCEND_HOME_PATH && cmake --build build
#   ./build/moec_run . OUT_DIR input0.npy [input1.npy ...]      (run from this folder; see README.md)
# kernels/moe_kernels.cpp: vector (AIV) kernels; kernels/cube_kernels.cpp: the grouped matmul (AIC);
# kernels/vector_kernels.cpp: vector kernels for the graph's ordinary ops (elementwise, row-wise).
# host/launch.cpp: moec_launch(), ACLRT_LAUNCH_KERNEL through the aclrtlaunch_<kernel>.h headers that
# ascendc_library generates; host/moec_run.cpp: runs the launch plans in launch/ (written at compile time).
cmake_minimum_required(VERSION 3.16)
project(moec_{name} LANGUAGES CXX)
set(SOC_VERSION {soc_str} CACHE STRING "Ascend SoC")
set(ASCEND_CANN_PACKAGE_PATH "$ENV{{ASCEND_HOME_PATH}}" CACHE PATH "CANN install path")
if(EXISTS ${{ASCEND_CANN_PACKAGE_PATH}}/tools/tikcpp/ascendc_kernel_cmake)
  set(ASCENDC_CMAKE_DIR ${{ASCEND_CANN_PACKAGE_PATH}}/tools/tikcpp/ascendc_kernel_cmake)
elseif(EXISTS ${{ASCEND_CANN_PACKAGE_PATH}}/compiler/tikcpp/ascendc_kernel_cmake)
  set(ASCENDC_CMAKE_DIR ${{ASCEND_CANN_PACKAGE_PATH}}/compiler/tikcpp/ascendc_kernel_cmake)
else()
  message(FATAL_ERROR "ascendc_kernel_cmake not found under ${{ASCEND_CANN_PACKAGE_PATH}}")
endif()
{host_ops_guard}
# -DMOEC_CPU_DEBUG=ON: the kernels built in CANN's CPU-debug mode (ASCENDC_CPU_DEBUG, its CPU simulation library
# tikicpulib, ICPU_RUN_KF launches as in CANN's CPU-mode samples) into libmoec_host.so; moec_run runs on the host
option(MOEC_CPU_DEBUG "build the kernels in CANN's CPU-debug mode instead of for the NPU" OFF)
if(MOEC_CPU_DEBUG)
  list(APPEND CMAKE_PREFIX_PATH ${{ASCEND_CANN_PACKAGE_PATH}}/tools/tikicpulib/lib/cmake)
  find_package(tikicpulib REQUIRED)
  add_library(moec_host SHARED host/launch.cpp)
  target_compile_definitions(moec_host PRIVATE ASCENDC_CPU_DEBUG MOEC_CPU_DEBUG)
  target_include_directories(moec_host PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/include)
  target_link_libraries(moec_host PUBLIC tikicpulib::${{SOC_VERSION}})
  add_executable(moec_run host/moec_run.cpp)
  target_include_directories(moec_run PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/include)
  target_link_libraries(moec_run PRIVATE moec_host)
  add_library(moec_run_lib SHARED host/moec_run.cpp)
  set_target_properties(moec_run_lib PROPERTIES OUTPUT_NAME moec_run)
  target_compile_definitions(moec_run_lib PRIVATE MOEC_RUN_LIBRARY)
  target_include_directories(moec_run_lib PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/include)
  target_link_libraries(moec_run_lib PRIVATE moec_host)
  return()
endif()
# the static kernel library goes into a shared host library: position-independent code throughout
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
include(${{ASCENDC_CMAKE_DIR}}/ascendc.cmake)
ascendc_library(moec_kernels STATIC kernels/moe_kernels.cpp kernels/cube_kernels.cpp kernels/vector_kernels.cpp)
if(COMMAND ascendc_compile_options)
  ascendc_compile_options(moec_kernels PRIVATE -fPIC)
endif()
add_library(moec_host SHARED host/launch.cpp)
target_include_directories(moec_host PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/include)
target_link_directories(moec_host PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/lib64)
# moec_kernels also carries the include folder of its generated aclrtlaunch_<kernel>.h headers
target_link_libraries(moec_host PRIVATE moec_kernels ascendcl runtime)
add_executable(moec_run host/moec_run.cpp)
target_include_directories(moec_run PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/include)
target_compile_definitions(moec_run PRIVATE MOEC_CANN_ACL)
target_link_directories(moec_run PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/lib64)
target_link_libraries(moec_run PRIVATE moec_host ascendcl)
# libmoec_run.so: the same plans on device memory (moec_run_device), for moec.compile's NPU tensors (torch_npu)
add_library(moec_run_lib SHARED host/moec_run.cpp)
set_target_properties(moec_run_lib PROPERTIES OUTPUT_NAME moec_run)
target_include_directories(moec_run_lib PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/include)
target_compile_definitions(moec_run_lib PRIVATE MOEC_CANN_ACL MOEC_RUN_LIBRARY)
target_link_directories(moec_run_lib PRIVATE ${{ASCEND_CANN_PACKAGE_PATH}}/lib64)
target_link_libraries(moec_run_lib PRIVATE moec_host ascendcl)
"""

README = """# {name}: AscendC for {soc} (generated by moec {version})

- `kernels/cube_kernels.cpp`: `grouped_matmul` on the cube cores (AIC, KERNEL_TYPE_AIC_ONLY), CANN's
  GroupedMatmul structure: rows sorted by expert, the group list (cumsum offsets) in GM, the token
  count and the tiles (baseM/baseN/baseK/stepK, chosen on the host by the cost model from the L1/L0
  capacities) in the tiling struct; GM -> L1 `DataCopy` with `Nd2NzParams`, `LoadData` L1 -> L0A/L0B,
  `Mmad` accumulating k-tiles in L0C (f32), `Fixpipe` L0C -> GM; double-buffered L1/L0 queues.  It runs
  the expert FFN's two projections and the router/other constant-weight matmuls (one group).
  Types: float (f32 models), bfloat16_t (bf16 models, as half below; `--weights bf16`: GEMM inputs rounded to
  bf16), half (f16 models: half operands, f32 accumulation; a plain matmul's result rounded to half by the
  fixpipe, F322F16; bf16: F322BF16), int8_t
  (`--weights w8a8`: int8 rows x int8 weights, 16x32 fractals, int32 accumulation in L0C, int32 out).
- `kernels/moe_kernels.cpp`: vector kernels (AIV): moe_gating, moe_init_routing, moe_gather_rows,
  moe_activation, moe_scatter_rows, moe_dequant_int8, moe_dequant_int4, moe_quant_rows_int8, moe_finalize, matmul_rows (vector
  dot products, kept
  only for reductions too long for the cube's Nd2Nz tiling).  Cube results reach them through GM.
- `kernels/vector_kernels.cpp`: vector kernels (AIV) for the graph's ordinary ops, so whole graphs run on
  the NPU: `vec_elementwise` (unary math, binary arithmetic with full / scalar / row / per-row operands)
  and `vec_rowwise` (reductions over the last axis, softmax, log-softmax, RMS norm, layer norm), on f32, f16 or
  bf16 tensors (2-byte tiles are widened to f32 in the Unified Buffer and rounded once on the way out);
  `vec_copy` (transpose, slice, expand, concat and other broadcasts as strided copies), `vec_transpose` (the
  last two dims swapped: vector Gathers per block), `vec_gather` (ONNX Gather, the embedding lookup; ScatterND)
  and `vec_mask` (bool tensors as bytes: Cast to bool, and/or/not, Where, f32/f16 comparisons); `vec_index` (the
  scalar unit, exact: int64/int32 comparisons, Where of integers, integer cumsum, GatherElements, top-k); `vec_kv` (the
  KV-cache ops: the decode step's attention over the cache, attention over a cache buffer, appending rows in
  place; the cache float or half in GM -- an f16 KV cache: half rows in the Unified Buffer, Cast to float for the
  arithmetic, appended rows rounded to half by Cast with CAST_RINT).  Matmuls of two activations (attention) run on `grouped_matmul`, one group
  per batch entry.  Reshapes of contiguous tensors are views ("view" in plan.json: no kernel, no copy).
  Values computed from the input shapes alone ("tiling" in plan.json: positions, rotary tables, causal
  masks) are evaluated by the host once per input shape and copied to GM, like the tiling structs.
- `kernels/moec_kernel_common.h`: helpers the kernel files share (dtype widening/narrowing).
- `host/launch.cpp`: `moec_launch(kernel, blockDim, stream, args, ...)`, which launches through the
  `aclrtlaunch_<kernel>.h` headers that `ascendc_library` generates (`ACLRT_LAUNCH_KERNEL(kernel)(blockDim,
  stream, args...)`); built into the shared library `libmoec_host.so`.
- `host/moec_run.cpp`: the host program `moec_run` (no Python): ACL setup (aclInit, aclrtSetDevice, a stream,
  device buffers), then the launch plan's steps, outputs written as .npy.
- `launch/`: the launch plans written at compile time, one per input shapes (`index.txt`: key and file):
  device buffers and their fills, the constants: weights used as they are read from the artifact's
  `../model.weights.bin` (not stored twice), the others (transposed or converted weights, shape-derived values)
  in `consts.bin` (each once for all plans); every kernel launch with its blockDim and tiling struct (fields that
  depend on the routed row count are expressions of it, read back from the device after the routing kernel),
  host-side type conversions.
- `CMakeLists.txt`: builds all of them with CANN's `ascendc_library` (see the comments in it).
- `plan.json`: every op's placement, kernels, cube tiles and cost-model estimates.

## Running without Python

On a machine with CANN (run from this folder):

    source $ASCEND_HOME_PATH/set_env.sh    # or .../ascend-toolkit/set_env.sh
    cmake -B build -DSOC_VERSION={soc} -DASCEND_CANN_PACKAGE_PATH=$ASCEND_HOME_PATH && cmake --build build
    ./build/moec_run . out/ input0.npy [input1.npy ...] [--device N]     # writes out/output<k>.npy

CANN's CPU-debug mode (no NPU needed: the kernels run on CANN's CPU simulation library):

    cmake -B build-cpu -DMOEC_CPU_DEBUG=ON -DSOC_VERSION={soc} -DASCEND_CANN_PACKAGE_PATH=$ASCEND_HOME_PATH
    cmake --build build-cpu && ./build-cpu/moec_run . out/ input0.npy

moec_run runs the plan whose key matches the inputs' element types and shapes, or a symbolic plan whose key covers
them (`{{d0=lo..hi}}`: any value of the model's symbolic dim in that range, bound from the input's shape by the
plan's `bind` step); the plans here are for:
{plans}
`build/libmoec_run.so` runs the same plans on device memory (`moec_run_device`): `moec.compile(..., target="ascend")`
uses it for NPU tensors (torch_npu), with no host copy.
Other shapes are planned by the Python artifact (`moec run`), which makes a plan per distinct input shapes.  A
plan with host-fallback ops (plan.json "host_ops") is refused by moec_run, and CMake refuses to build it, naming
them.  Here (no CANN) the same moec_run is built with g++ against moec's emulator library and its ACL stand-in,
and a test checks that its outputs equal the Python artifact's.

## What was proven without an NPU, and what was not

Proven here: the kernels compile with g++ against moec's clean-room emulation of the AscendC API,
every block runs on the CPU with the hardware rules enforced (buffer capacity and alignment per
position, queue protocol, DataCopy granularity, GM bounds, blockDim <= cores of the kernel's type,
cube operands in L1/L0A/L0B/L0C, fractal NZ/ZZ/ZN layouts modelled element by element so a wrong layout
parameter gives wrong numbers), and the results match onnxruntime.
Not proven: acceptance by CANN's bisheng compiler and the real headers, the CMake project on a CANN
install, pipeline concurrency and real timings (the emulator runs one instruction at a time; the
cost-model figures in plan.json are estimates), bank conflicts, HCCL/cross-device dispatch.
int8 weights are widened to the cube's type (f32, or a bf16/f16 model's own type) by the vector cores (GM workspace)
with the scales applied after the dot products: it saves weight memory, not time.  int4 weights are dequantised by
moe_dequant_int4 ((q - z) * s in f32, rounded once to the cube's type).  bf16/f16 models keep their type around
quantised experts (int8, int4, w8a8).  f16 models keep activations, weights
and outputs in half in GM: half GEMM inputs with f32 accumulation on the cube, f32 math in the Unified Buffer
on the vector cores (half rows widened after the copy in, rounded to nearest even before the copy out).
bf16 models the same way in bfloat16_t (Fixpipe F322BF16 for a plain matmul's C; comparisons widen to float,
bfloat16_t not being a Compare type); not proven: that bisheng accepts the kernels' scalar bfloat16_t <-> float
conversions (a routing weight or a Where scalar read with GetValue) as the emulator's type does.
w8a8 (int8 weights, dynamic per-row int8 activations): moe_quant_rows_int8 quantises each GEMM input row
(s = max|row| / 127, rint with ties to even, as moec's reference), the cube multiplies int8 x int8 into
int32, and moe_activation / moe_scatter_rows apply the row and per-channel scales to the int32 sums.
Ops listed under "host" in plan.json run on the host CPU (numpy), not on the NPU.
"""


def device_support() -> dict:
    """Where an Ascend build runs from Python, said plainly (report.json "ascend.device").  The Python artifact
    runs the kernels on moec's emulator for numpy arrays and CPU tensors; NPU tensors run on the NPU through the
    CMake project's libmoec_run.so (``AscendArtifact.call_torch``); ``ascend/build/moec_run`` runs .npy files on an
    NPU.  torch_npu is only looked up here, not imported (importing it needs CANN's libraries)."""
    import importlib.util
    try:
        npu = importlib.util.find_spec("torch_npu") is not None
    except (ImportError, ValueError):
        npu = False
    if npu:
        tensors = ("torch_npu is importable: moec.compile(..., target='ascend') takes NPU tensors and returns NPU "
                   "tensors, run on the NPU by the CMake project's ascend/build/libmoec_run.so (the launch plans on "
                   "device memory, no host copy); CPU tensors run on the emulator")
    else:
        tensors = ("torch_npu is not importable: moec.compile(..., target='ascend') takes and returns CPU tensors (run "
                   "on the emulator); NPU tensors need torch_npu (and CANN) installed")
    return {"python_runs_on": "moec's AscendC emulator", "torch_npu": npu, "tensors": tensors,
            "npu_path": "ascend/build/moec_run and ascend/build/libmoec_run.so (built by the emitted CMake project "
                        "with CANN)"}


@functools.lru_cache(maxsize=1)
def npu_device_type() -> Optional[str]:
    """The device query of the NPU tensor path: the torch device type whose tensors live in ACL device memory --
    "npu" when torch_npu imports and sees an NPU -- else None.  (Tests stand the emulator's ACL in for it, whose
    device memory is host memory: "cpu".)"""
    import importlib.util
    try:
        if importlib.util.find_spec("torch_npu") is None:
            return None
        import torch
        import torch_npu  # noqa: F401 - registers the npu device (needs CANN's libraries)
        return "npu" if torch.npu.is_available() and torch.npu.device_count() > 0 else None
    except Exception:  # noqa: BLE001 - torch_npu without a working CANN: no NPU tensors
        return None


NPU_WHY_NOT = ("torch_npu is not importable here (or sees no NPU): moec.compile(..., target='ascend') takes CPU tensors "
               "(run on the emulator); NPU tensors need torch_npu and CANN")


def device_library(outdir: str) -> Optional[str]:
    """The library that runs the launch plans on device memory (host/moec_run.cpp's moec_run_device): the CMake
    build's (ascend/build/libmoec_run.so, a CANN machine), else the emulator build's (build_device_library)."""
    for rel in (("build", "libmoec_run.so"), ("libmoec_run.so",)):
        p = os.path.join(outdir, "ascend", *rel)
        if os.path.isfile(p):
            return p
    return None


def build_device_library(outdir: str) -> str:
    """Builds ascend/libmoec_run.so (host/moec_run.cpp with MOEC_RUN_LIBRARY) against the emulator library of
    ``outdir`` and its ACL stand-in (device memory is host memory there); returns its path."""
    d = os.path.join(outdir, "ascend")
    lib = os.path.join(d, "libmoec_run.so")
    cmd = ["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-DMOEC_RUN_LIBRARY", "-I", EMU_INCLUDE,
           os.path.join(d, "host", "moec_run.cpp"), "-o", lib, "-L", d, "-l:libmoec_ascend_emu.so", "-Wl,-rpath,$ORIGIN"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise BuildError(f"g++ failed on the emitted host program (libmoec_run.so): {p.stderr[-2000:]}")
    return lib


_TORCH_DT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "float64": "f64", "int64": "i64", "int32": "i32",
             "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "b1"}


def run_on_device(lib_path: str, outdir: str, tensors: Sequence, device: int = 0) -> list:
    """The launch plan for these device tensors run by ``lib_path``'s moec_run_device on their memory: the inputs
    used in place, the outputs allocated here as tensors on the inputs' device and written by the device (a device
    to device copy of each result), no host copy of any tensor."""
    import torch
    from moec.codegen.ascend.launch_plan import PlanError, output_types
    tensors = [t.contiguous() for t in tensors]
    names = []
    for t in tensors:
        dn = _TORCH_DT.get(str(t.dtype).replace("torch.", ""))
        if dn is None:
            raise UserInputError(f"an input of type {t.dtype}: the Ascend launch plans take "
                                 f"{', '.join(sorted(_TORCH_DT))} tensors")
        names.append(dn)
    key = ",".join(f"{n}:{'x'.join(str(int(d)) for d in t.shape)}" for n, t in zip(names, tensors))
    launch = os.path.join(outdir, "ascend", "launch")
    n = emitted_plan_file(launch, key)
    if n is None:
        raise UserInputError(f"no compile-time launch plan covers device inputs {key} (the NPU path runs the plans "
                             f"written at compile time: ascend/launch/index.txt)")
    with open(os.path.join(launch, f"plan{n}.txt")) as f:
        text = f.read()
    try:
        specs = output_types(text, [tuple(t.shape) for t in tensors])
    except PlanError as e:
        raise RuntimeFailure(f"the NPU path cannot allocate the outputs of plan {n}: {e}") from None
    inv = {v: k for k, v in _TORCH_DT.items()}
    dev = tensors[0].device
    outs = [torch.empty(shp, dtype=getattr(torch, inv[dt]), device=dev) for dt, shp in specs]
    lib = ctypes.CDLL(lib_path)
    f = lib.moec_run_device
    f.restype = ctypes.c_int
    P = ctypes.c_void_p
    ins = (P * max(1, len(tensors)))(*[t.data_ptr() for t in tensors])
    types = (ctypes.c_char_p * max(1, len(tensors)))(*[x.encode() for x in names])
    ranks = (ctypes.c_int * max(1, len(tensors)))(*[t.dim() for t in tensors])
    dims = [int(d) for t in tensors for d in t.shape]
    cdims = (ctypes.c_int64 * max(1, len(dims)))(*dims)
    optr = (P * max(1, len(outs)))(*[o.data_ptr() for o in outs])
    obytes = (ctypes.c_uint64 * max(1, len(outs)))(*[o.numel() * o.element_size() for o in outs])
    err = ctypes.create_string_buffer(1024)
    if dev.type == "npu":
        torch.npu.synchronize()  # the inputs' producers have finished (the plan runs on a stream of its own)
    rc = f(os.path.join(outdir, "ascend").encode(), ctypes.c_int(device), ctypes.c_int(len(tensors)), ins, types, ranks,
           cdims, ctypes.c_int(len(outs)), optr, obytes, err, ctypes.c_size_t(len(err)))
    if rc:
        raise RuntimeFailure(f"{os.path.basename(lib_path)}: {err.value.decode(errors='replace')}")
    return outs


class AscendBackend(BackendBase):
    name = "ascend"
    describe = staticmethod(ascend_target)  # arch: the SoC (native: Ascend910B2)
    arch_flag = "soc"                       # `moec compile/inspect --soc` names the arch

    @classmethod
    def why_unavailable(cls):
        return None if shutil.which("g++") else "no g++ for the AscendC emulator build"

    @classmethod
    def stand_in(cls, gpu: bool):
        return {"label": "emulator", "timing": "skipped: no NPU (emulator run; see plan.json cost model)",
                "note": "no NPU here: kernels verified on moec's AscendC emulator; NPU timing skipped"}

    def report(self, outdir: str, artifact=None) -> dict:
        """report.json's "ascend": the launch plan's placement and cost model, and once verified what the
        emulator ran (kernel launches, cube instruction counts)."""
        with open(os.path.join(outdir, "ascend", "plan.json")) as fh:
            plan = json.load(fh)
        rep = {"soc": plan["soc"], "host_ops": plan["host_ops"], "tiling_ops": plan.get("tiling_ops", {}),
               "cost_model": {"note": plan["estimates_are"], "kernels": plan["estimates"]}}
        launch = os.path.join(outdir, "ascend", "launch")
        if os.path.exists(os.path.join(launch, "index.txt")):  # the compile-time launch plans (host/moec_run.cpp)
            with open(os.path.join(launch, "index.txt")) as fh:
                rep["launch_plans"] = [line.rsplit(" ", 1)[0] for line in fh if line.strip()]
            if os.path.exists(os.path.join(launch, "not_planned.txt")):
                with open(os.path.join(launch, "not_planned.txt")) as fh:
                    rep["not_planned"] = [line.strip() for line in fh if line.strip()]
        if artifact is not None:
            rep["emulator"] = artifact.stats()
        rep["device"] = device_support()
        return {"ascend": rep}

    def inspect(self, m: Module, tokens=(1, 256)) -> dict:
        from moec.codegen.ascend.plan import make_plan
        plan = make_plan(m, self.desc, tokens=tuple(tokens))
        return {"ascend": {"soc": self.desc.arch, "host_ops": plan["host_ops"],
                           "tiling_ops": plan.get("tiling_ops", {}), "note": plan["estimates_are"],
                           "estimates": plan["estimates"]}}

    def inspect_lines(self, info: dict) -> List[str]:
        """`moec inspect --target ascend`: the cost model's estimates, kernel by kernel."""
        asc = info.get("ascend")
        if not asc:
            return []
        out = [f"Ascend {asc['soc']} cost model (ESTIMATES, {asc['note']}):"]

        def line(e, indent):
            cube = f", {100 * e['fraction_of_cube_peak']:.2f}% of cube peak" if "fraction_of_cube_peak" in e else ""
            name = e["kernel"] + (f" ({e['role']})" if "role" in e else "") + \
                (f" [{e['dtype']}]" if "dtype" in e else "")
            tiles = e.get("tiles")
            tl = (f"; tiles {tiles['baseM']}x{tiles['baseN']}x{tiles['baseK']} stepK {tiles['stepK']} "
                  f"L0C x{tiles['dbL0C']}, {e['work_items']} items") if tiles else ""
            out.append(f"{indent}{name:<34} T={e['tokens']:<5} blockDim={e['blockDim']:<3} ~{e['estimate_us']} us, "
                       f"{e['bound']}-bound, {100 * e['hbm_fraction']:.1f}% of HBM bandwidth{cube}{tl}")
        for e in asc["estimates"]:
            line(e, "  ")
            for p in e.get("parts", []):
                line(dict(p, tokens=e["tokens"]), "      ")
        if asc["host_ops"]:
            out.append("  on the host (no NPU kernel): " + ", ".join(f"{k} ({v})" for k, v in asc["host_ops"].items()))
        if asc.get("tiling_ops"):
            out.append("  from the input shapes alone, with the tiling (once per shape): " + ", ".join(asc["tiling_ops"]))
        return out

    def files(self) -> Dict[str, str]:
        return {"kernels": "ascend/kernels/moe_kernels.cpp", "cube kernels": "ascend/kernels/cube_kernels.cpp",
                "vector kernels (ordinary ops)": "ascend/kernels/vector_kernels.cpp",
                "host": "ascend/host/launch.cpp", "host program": "ascend/host/moec_run.cpp",
                "launch plans": "ascend/launch/index.txt",
                "cmake": "ascend/CMakeLists.txt", "readme": "ascend/README.md", "plan": "ascend/plan.json",
                "library (emulator build)": "ascend/libmoec_ascend_emu.so", "ir": "model.mlir"}

    def emit(self, m: Module, outdir: str) -> None:
        from moec._version import __version__
        from moec.codegen.ascend.plan import make_plan
        d = os.path.join(outdir, "ascend")
        for sub in ("kernels", "host"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        for k in KERNEL_FILES + KERNEL_HEADERS:
            shutil.copy(os.path.join(CODEGEN, "kernels", k), os.path.join(d, "kernels"))
        for hf in HOST_FILES:
            shutil.copy(os.path.join(CODEGEN, "host", hf), os.path.join(d, "host"))
        plan = make_plan(m, self.desc)
        with open(os.path.join(d, "plan.json"), "w") as f:
            json.dump(plan, f, indent=1)
        # the launch plans for the shapes known at compile time (codegen/ascend/launch_plan.py)
        keys = emit_plans(m, plan, self.desc, os.path.join(d, "launch"), compile_time_shapes(m))
        # the templates' fields go through moec.codegen.escape (identifiers, a CMake quoted string)
        name, soc = ident("model"), ident(self.desc.arch, "soc")
        host = sorted(plan["host_ops"])
        guard = "" if not host else (
            "# the launch plans run some ops on the host (plan.json \"host_ops\"): moec_run runs NPU kernels only\n"
            "message(FATAL_ERROR " + cmake_string("moec_run cannot be built: these ops run on the host: " +
                                                  ", ".join(host)) + ")")
        with open(os.path.join(d, "CMakeLists.txt"), "w") as f:
            f.write(CMAKE.format(name=name, soc=soc, soc_str=cmake_string(self.desc.arch), host_ops_guard=guard))
        with open(os.path.join(d, "README.md"), "w") as f:
            f.write(README.format(name=name, soc=soc, version=__version__,
                                  plans="\n".join(f"  - `{k}`" for k in keys) or "  (none: the model's shapes are "
                                  "not known at compile time)"))

    def build(self, outdir: str, sanitize: bool = False) -> bool:
        from moec.targets.cpu import cache_dir
        d = os.path.join(outdir, "ascend")
        srcs = [os.path.join(d, "host", "launch.cpp")] + [os.path.join(d, "kernels", k) for k in KERNEL_FILES + KERNEL_HEADERS] + \
            [os.path.join(EMU_INCLUDE, "kernel_operator.h"), os.path.join(EMU_INCLUDE, "acl", "acl.h")]
        h = hashlib.sha256()
        for s in srcs:
            with open(s, "rb") as f:
                h.update(f.read())
        area, key = os.path.join(cache_dir(), "ascend"), h.hexdigest()[:24]
        out = os.path.join(d, "libmoec_ascend_emu.so")
        if cache_store.fetch_file(area, key, "libmoec_ascend_emu.so", out):  # checked (sha256) before use
            return True
        cmd = ["g++", "-std=c++17", "-O2", "-shared", "-fPIC", "-DMOEC_EMULATOR", "-I", EMU_INCLUDE,
               srcs[0], "-o", out]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise BuildError(f"g++ failed on the emitted AscendC (emulator build): {p.stderr[-2000:]}")
        cache_store.store_file(area, key, out, "libmoec_ascend_emu.so")
        return False

    def load(self, outdir: str, threads: int = 1) -> "AscendArtifact":
        return AscendArtifact(outdir, self.desc)

    def ep_device(self, local_rank: int) -> str:
        """EP: NPU tensors exchanged with HCCL where torch_npu imports and sees an NPU (``npu_device_type``),
        CPU tensors and gloo otherwise."""
        if npu_device_type() != "npu":
            return "cpu"
        import torch
        n = torch.npu.device_count()
        torch.npu.set_device(local_rank % n)
        return f"npu:{local_rank % n}"

    def ep_call(self, artifact, tensors: list) -> list:
        return artifact.call_torch(tensors)     # (NPU tensors on the device library, CPU tensors on the emulator)

    def run(self, outdir: str, inputs: list, threads: int = 1) -> list:
        """`moec run`: through the host program moec_run when it is built (ascend/build/moec_run from the CMake
        project on a CANN machine, else ascend/moec_run built against the emulator) and a compile-time plan with
        no host ops fits these inputs; otherwise the Python artifact (it plans other shapes, runs host ops)."""
        import sys
        inputs = [np.asarray(x) for x in inputs]
        exe = built_host_program(outdir)
        if exe is not None and host_program_can_run(outdir, inputs):
            outs = run_host_program(exe, outdir, inputs)
            print(f"moec run: outputs from the host program {os.path.relpath(exe, outdir)} (no Python)",
                  file=sys.stderr)
            return outs
        return super().run(outdir, inputs, threads)


def built_host_program(outdir: str) -> Optional[str]:
    """The artifact's moec_run, where one was built: the CMake build's (a CANN machine) first, else the
    emulator build's (build_host_program); None where neither exists."""
    for rel in (("build", "moec_run"), ("moec_run",)):
        p = os.path.join(outdir, "ascend", *rel)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def host_program_can_run(outdir: str, inputs: Sequence) -> bool:
    """Whether moec_run runs these inputs: a compile-time plan for their key, without host-fallback ops."""
    d = os.path.join(outdir, "ascend", "launch")
    key = plan_key(inputs)
    try:
        n = emitted_plan_file(d, key)
        if n is None:
            return False
        with open(os.path.join(d, f"plan{n}.txt")) as f:
            return not any(line.startswith("host ") for line in f)
    except (OSError, ValueError):
        return False


def run_host_program(exe: str, outdir: str, inputs: Sequence) -> List[np.ndarray]:
    """Runs ``exe`` (moec_run ASCEND_DIR OUT_DIR inputs.npy...) on these arrays; its outputs, in order."""
    with tempfile.TemporaryDirectory(prefix="moec_run_") as tmp:
        paths = []
        for k, x in enumerate(inputs):
            paths.append(os.path.join(tmp, f"input{k}.npy"))
            np.save(paths[-1], np.asarray(x))
        res = os.path.join(tmp, "out")
        os.makedirs(res)
        p = subprocess.run([exe, os.path.join(outdir, "ascend"), res] + paths, capture_output=True, text=True)
        if p.returncode:
            last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RuntimeFailure(f"{os.path.basename(exe)} exited with status {p.returncode}: {last}")
        outs = []
        while os.path.exists(os.path.join(res, f"output{len(outs)}.npy")):
            o = np.load(os.path.join(res, f"output{len(outs)}.npy"))
            outs.append(o.view(NP_X["bf16"]) if o.dtype.kind == "V" and o.dtype.itemsize == 2 else o)  # bf16 as V2
        return outs


def build_host_program(outdir: str) -> str:
    """Builds ascend/moec_run (host/moec_run.cpp) against the emulator library of ``outdir`` (which exports
    moec_launch and the ACL stand-in, as libmoec_host.so and libascendcl do on a CANN machine); returns its
    path.  Run it as ``moec_run ASCEND_DIR OUT_DIR inputs.npy...``."""
    from moec.targets.cpu import cache_dir
    d = os.path.join(outdir, "ascend")
    exe = os.path.join(d, "moec_run")
    src = os.path.join(d, "host", "moec_run.cpp")
    h = hashlib.sha256()
    for f in (src, os.path.join(EMU_INCLUDE, "acl", "acl.h")):  # it links the library by name (rpath $ORIGIN)
        with open(f, "rb") as fh:
            h.update(fh.read())
    area, key = os.path.join(cache_dir(), "ascend-host"), h.hexdigest()[:24]
    if not cache_store.fetch_file(area, key, "moec_run", exe):  # checked (sha256) before use
        cmd = ["g++", "-std=c++17", "-O1", "-I", EMU_INCLUDE, src, "-o", exe, "-L", d, "-l:libmoec_ascend_emu.so",
               "-Wl,-rpath,$ORIGIN"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise BuildError(f"g++ failed on the emitted host program (moec_run): {p.stderr[-2000:]}")
        cache_store.store_file(area, key, exe, "moec_run")
    os.chmod(exe, 0o755)
    return exe


def compile_time_shapes(m: Module, sizes=(1, 4)) -> List[list]:
    """The input shapes the compiler writes launch plans for: the inputs' static shapes, each named symbol bound
    to each of ``sizes`` (one token and a few); an unknown dim (None) gets no plan."""
    f = m.main
    syms = sorted({d for a in f.args for d in a.type.shape if isinstance(d, str)})
    if any(d is None for a in f.args for d in a.type.shape):
        return []
    out = []
    for n in (sizes if syms else sizes[:1]):
        out.append([(tuple(d if isinstance(d, int) else n for d in a.type.shape), a.type.dtype.np) for a in f.args])
    return out


def _load_private(outdir: str, rel: str) -> ctypes.CDLL:
    """Load a private copy of the emulator library (dlopen hands back an already loaded library for the same
    path, even a rebuilt one).  In a sealed cache entry (the JIT cache) the copy must hash to what the entry
    lists, so a damaged library is never loaded."""
    lib = os.path.join(outdir, rel)
    expect = cache_store.expected_sha256(outdir, rel)
    fd, tmp = tempfile.mkstemp(prefix="moec-ascend-", suffix=".so")
    try:
        os.close(fd)
        if cache_store.copy_hashed(lib, tmp) != expect and expect is not None:
            raise cache_store.Damaged(f"'{lib}' does not match the sha256 of its cache entry")
        return ctypes.CDLL(tmp)
    finally:
        os.unlink(tmp)


class _BT:
    """A transpose of the last two dims read as B^T by the one batched matmul that uses it: its source."""
    __slots__ = ("src",)

    def __init__(self, src):
        self.src = src


def plan_key(inputs: Sequence) -> str:
    """The key of a launch plan: the inputs' element types and shapes (one plan per distinct key)."""
    from moec.codegen.ascend.launch_plan import dt_name
    return ",".join(f"{dt_name(np.asarray(x).dtype if not hasattr(x, 'dtype') else x.dtype)}:"
                    f"{'x'.join(str(int(d)) for d in shape_of(x))}" for x in inputs)


class Planner:
    """Lowers the module, for given input shapes, to a launch plan (codegen/ascend/launch_plan.py): the kernel
    sequence with block dims, tiling structs (fields that depend on routed row counts as run-time expressions),
    workspaces, constants and host-fallback ops.  Runs without the emulator: at compile time (emit) and, for input
    shapes no emitted plan covers, once per distinct shapes in the artifact (like a CANN host tiling function).

    An expert FFN is five launches (seven with int8 weights or w8a8) around two grouped matmuls on the cube:
    gather rows (AIV) -> grouped_matmul (AIC) -> activation (AIV) -> grouped_matmul (AIC) -> scatter rows
    (AIV).  The GM workspaces between them are filled with NaN before each launch, so a kernel that leaves
    part of its output unwritten fails verification.  w8a8 (``aq=int8``): the gathered rows and the
    activations are quantised per row to int8 by moe_quant_rows_int8 and both projections run int8 x int8 on
    the cube (int32 sums in GM), the row and channel scales applied by moe_activation / moe_scatter_rows."""

    def __init__(self, module: Module, plan: dict, desc: TargetDesc):
        self.module, self.plan, self.desc = module, plan, desc
        self.cores = int(desc.aiv_cores)
        self.aic = int(desc.cores)
        self.dev = None
        self.tiling_evals: Dict[str, int] = {}   # "tiling" ops evaluated (once per distinct input shapes)
        self._wT: Dict[int, np.ndarray] = {}

    def make(self, shapes: Sequence[tuple], dtypes: Sequence, rec: Optional[Recorder] = None, key: str = None,
             hints: Optional[Dict[str, int]] = None) -> "object":
        """The plan for inputs of these shapes and types (``rec``: a LiveRecorder runs it while it is made).  A
        symbolic plan (``symbolic_plan``): dims are Syms ($name, bound from the inputs' shapes when it runs), ``key``
        its index key, and ``hints`` the values its performance choices (cube tiles, chunking) are made for."""
        m, f = self.module, self.module.main
        rec = self.dev = rec or Recorder(self.desc, self.cores, self.aic)
        key = key or plan_key([_Shaped(s, dt) for s, dt in zip(shapes, dtypes)])
        self.hints = dict(hints or {})
        bind = {}
        for a, shp in zip(f.args, shapes):
            for d, v in zip(a.type.shape, shp):
                if isinstance(d, str):
                    bind.setdefault(d, v if isinstance(v, Sym) else int(v))
        try:
            env: Dict[int, object] = {}
            for k, (a, shp, dt) in enumerate(zip(f.args, shapes, dtypes)):
                env[id(a)] = rec.input(k, tuple(d if isinstance(d, Sym) else int(d) for d in shp), dt)
            index = {id(o): i for i, o in enumerate(f.ops)}

            def lower(o, args):  # one op of the IR walker: its launches (a constant: the walker's own value)
                i = index[id(o)]
                step = self.plan["steps"][i]
                rec.op = o.name
                if o.name == "moec.constant":
                    return None
                if step["where"] == "tiling":  # computed from shapes alone: evaluated here, a constant of the plan
                    self.tiling_evals[o.name] = self.tiling_evals.get(o.name, 0) + 1
                    outs = [np.asarray(v) for v in o.reference(*[_placeholder(x) for x in args])]
                elif step["where"] == "view":
                    if isinstance(args[0], Buf) and "why" in step:  # a transpose read as B^T by its matmul
                        outs = [_BT(args[0])]
                    elif isinstance(args[0], Buf):  # a reshape of a contiguous tensor: the same buffer
                        shp = o.reference(*[_placeholder(x) for x in args])[0].shape
                        outs = [args[0].reshape(tuple(shp))]
                    else:
                        outs = list(o.reference(*args))
                elif step["where"] == "host":
                    outs = self._host_op(i, o, args, bind)
                elif hasattr(self, "_k_" + o.name.replace(".", "_")):
                    outs = getattr(self, "_k_" + o.name.replace(".", "_"))(o, i, args)
                else:  # an ordinary op on the vector kernels (codegen/ascend/device_ops.py)
                    from moec.codegen.ascend import device_ops
                    outs = device_ops.launch(rec, o, args)
                return outs

            walk(f.ops, env, lower, weights=m.weights)
            return rec.finish([rec.buf(env[id(v)]) for v in f.outputs], key)
        except PlanError as e:
            raise RuntimeFailure(f"ascend launch plan for inputs {key}: {e}") from None
        finally:
            self.dev = None

    def _host_op(self, i, o, args, bind):
        """A host-fallback op: its result shapes from the IR types (symbols bound by the inputs), or from its numpy
        semantics on placeholder data where a named dim is derived from shapes (the executor checks the real
        shapes); a dim that depends on tensor data (None) cannot be planned ahead: NeedsData, and such inputs are
        planned while they run (LiveRecorder), whose host op runs here, on the real values."""
        rec = self.dev
        if isinstance(rec, LiveRecorder):
            res = rec.run_host(i, o.name, args)
            outs = [rec.new(tuple(v.shape), r.type.dtype.np, "zero") for v, r in zip(res, o.results)]
            rec.host(i, o.name, args, outs)
            return outs
        if any(d is None for r in o.results for d in r.type.shape):
            raise NeedsData(f"{o.name} on the host has a result shape that depends on tensor data")
        shapes = [[d if isinstance(d, int) else bind.get(d) for d in r.type.shape] for r in o.results]
        if any(d is None for s in shapes for d in s):
            ph = o.reference(*[_placeholder(x) for x in args])
            shapes = [list(np.shape(v)) for v in ph]
        outs = [rec.new(tuple(s), r.type.dtype.np, "zero") for s, r in zip(shapes, o.results)]
        rec.host(i, o.name, args, outs)
        return outs

    def _hint(self, x) -> int:
        """x as an int for a performance choice (tiles, chunks): a symbolic dim's hint value (symbolic plans)."""
        if isinstance(x, Sym):
            try:
                return int(evaluate(x.e, self.hints))
            except KeyError:
                raise PlanError("a value read back at run time was used in a tiling choice") from None
        return int(x)

    # -- launches ---------------------------------------------------------------------------------------
    def _launch(self, kernel: str, block_dim, arrays: Sequence, tiling) -> None:
        self.dev.launch(kernel, block_dim, arrays, tiling)

    def _bd(self, rows):
        return smax(1, smin(self.cores, rows))

    def _route_bd(self, slots):
        """moe_init_routing's blocks: one per 256 routed slots (every block reads the whole id list to count, so
        more blocks than that only repeat the counting), at most the vector cores."""
        return self._bd(-(-slots // ROUTE_SLOTS_PER_BLOCK))

    def _gmm(self, a, w, offs, c, G: int, N: int, K: int, T: int, dtype: str, tiles: dict, a_shared: bool = False):
        """grouped_matmul on the cube: c[offs[g]:offs[g+1]] = A rows . w[g]^T (A rows shared or the same);
        c float (f32 accumulators) or float16/bfloat16 (half/bf16 A and w: the fixpipe rounds on the way out)."""
        from moec.codegen.ascend.plan import GMM_DTYPE_CODE
        rows = c.shape[0]
        cdt = {np.dtype(np.float16): 2, NP_X["bf16"]: 1, np.dtype(np.int32): 3}.get(np.dtype(c.dtype), 0)
        # work items: at most one partial m-tile per group beyond the full ones
        items = (rows // tiles["baseM"] + smin(G, smax(rows, 1))) * -(-N // tiles["baseN"])
        self._launch("grouped_matmul", smax(1, smin(self.aic, items)), [a, w, offs, c],
                     gmm_tiling_bytes(T=T, G=G, N=N, K=K, aShared=int(a_shared), aRows=a.shape[0], outRows=rows,
                                      dtype=GMM_DTYPE_CODE[dtype], cdt=cdt, **tiles))

    # -- per-op orchestration ------------------------------------------------------------------------
    def _k_moec_matmul(self, o, i, args, c_f32: bool = False):
        """A 2-D matmul with a constant right operand as a one-group grouped matmul on the cube.  f16: half
        operands and a half result (rounded once by the fixpipe), or a float one with ``c_f32`` (gemm's
        alpha/beta are applied to the f32 accumulators, then rounded once)."""
        from moec.codegen.ascend.plan import act_dtype, matmul_cube_plan
        dev = self.dev
        dt = act_dtype(o)
        step = self.plan["steps"][i]
        if step.get("batched"):
            return self._batched_matmul(o, i, args, dt, step)
        a = dev.buf(args[0], NP_X[dt])
        if a.ndim != 2:  # [..., K] x [K, N]: the leading dims are rows (a view of a contiguous tensor)
            lead = a.shape[:-1]
            c = self._k_moec_matmul(o, i, [a.reshape(sprod(lead), a.shape[-1]), args[1]], c_f32)[0]
            return [c.reshape(lead + (c.shape[-1],))]
        if i not in self._wT:
            self._wT[i] = np.ascontiguousarray(np.asarray(args[1], NP_X[dt]).T)
        M, Kd = a.shape
        N = self._wT[i].shape[0]
        cdt = np.float32 if c_f32 else NP_X[dt]
        if isinstance(M, int) and M == 0:  # (a symbolic row count is >= 1: symbolic plans cover dims >= 1)
            return [dev.new((M, N), cdt)]
        if "grouped_matmul" in step["kernels"]:  # the cube, one group
            c = dev.new((M, N), cdt, "nan")
            self._gmm(a, self._wT[i], dev.ints([0, M]), c, 1, N, Kd, M, dt,
                      matmul_cube_plan(self.desc, self._hint(M), N, Kd, dt)["tiles"], a_shared=True)
            return [c]
        c = dev.new((M, N), np.float32)
        self._launch("matmul_rows", self._bd(M), [a, self._wT[i], c],
                     tiling_bytes(M=M, N=N, Kd=Kd, kt=step["kt"]))
        return [c]

    def _batched_matmul(self, o, i, args, dt, step):
        """A matmul of two activations [..., M, K] x [..., K, N] (attention's Q.K^T and P.V) as one grouped matmul
        on the cube: group g = batch entry g, rows [g*M, (g+1)*M) of A, W[g] = B[g]^T ([N, K]).  Batch dims that
        broadcast are expanded by vec_copy; B^T is a vec_copy transpose, or, when B is a transpose of the last two
        dims used only here (``b_fused``), the transpose's source itself (the plan made that transpose a view)."""
        from moec.codegen.ascend import vector_ops
        from moec.codegen.ascend.plan import choose_gmm_tiles, DTYPE_BYTES, ND2NZ_MAX_D
        dev = self.dev
        cdt = NP_X[dt]
        a = dev.buf(args[0], cdt)
        bsrc = args[1].src if isinstance(args[1], _BT) else None
        bshape = shape_of(args[1]) if bsrc is None else \
            shape_of(bsrc)[:-2] + (shape_of(bsrc)[-1], shape_of(bsrc)[-2])
        if a.ndim < 2 or len(bshape) < 2:
            raise RuntimeFailure(f"batched matmul on ascend needs rank >= 2 operands, got {a.shape} x {bshape}")
        batch = tuple(np.broadcast_shapes(a.shape[:-2], bshape[:-2]))
        M, K, N = a.shape[-2], a.shape[-1], bshape[-1]
        if bshape[-2] != K:
            raise RuntimeFailure(f"matmul: {a.shape} x {bshape}")
        if K > ND2NZ_MAX_D:
            raise RuntimeFailure(f"matmul: a reduction of {K} elements is longer than Nd2Nz tiles ({ND2NZ_MAX_D})")
        G = int(np.prod(batch, dtype=np.int64))
        if G * M * N == 0 or K == 0:
            return [dev.new(batch + (M, N), cdt)]
        c = dev.new(batch + (M, N), cdt, "nan")
        if a.shape[:-2] != batch:
            a = vector_ops.expand_to(dev, a, batch + a.shape[-2:])
        if bsrc is not None:  # the device reads the transpose's source: [..., N, K] as it lies in GM
            bt = dev.buf(bsrc, cdt)
            if bt.shape[:-2] != batch:
                bt = vector_ops.expand_to(dev, bt, batch + bt.shape[-2:])
        else:
            b = dev.buf(args[1], cdt)
            if b.shape[:-2] != batch:
                b = vector_ops.expand_to(dev, b, batch + b.shape[-2:])
            bt = vector_ops.transpose_last2(dev, b)
        offs = (np.arange(G + 1) * M).astype(np.int32)
        tiles = choose_gmm_tiles(self.desc, dt, G, M, N, K, False, None, DTYPE_BYTES[dt] if dt in ("f16", "bf16") else 4)["tiles"]
        self._gmm(a.reshape(G * M, K), bt.reshape(G, N, K), offs, c.reshape(G * M, N), G, N, K, G * M, dt, tiles)
        return [c]

    def _k_moec_gemm(self, o, i, args):
        """alpha * A.B (+ beta * C): the product on the cube, alpha and beta on the vector kernels (f32, then
        rounded once to the model's type)."""
        from moec.codegen.ascend import vector_ops
        a, b = args[0], args[1]
        from moec.codegen.ascend.plan import act_dtype
        if o.attrs["trans_a"]:
            raise RuntimeFailure("a transposed left operand of gemm does not run on the NPU")
        bt = np.asarray(b).T if o.attrs["trans_b"] else b
        post = o.attrs["alpha"] != 1.0 or (len(args) > 2 and o.attrs["beta"] != 0.0)
        c = self._k_moec_matmul(o, i, [a, bt], c_f32=post)[0]
        if o.attrs["alpha"] != 1.0:
            c = vector_ops.elementwise(self.dev, "moec.mul", [c, np.float32(o.attrs["alpha"])], "f32")
        if len(args) > 2 and o.attrs["beta"] != 0.0:
            t = vector_ops.elementwise(self.dev, "moec.mul", [self.dev.buf(args[2], np.float32),
                                                              np.float32(o.attrs["beta"])], "f32")
            c = vector_ops.elementwise(self.dev, "moec.add", [c, t], "f32")
        return [self.dev.buf(c, NP_X[act_dtype(o)])]

    def _route_tiling(self, o, T, E):
        a = o.attrs
        return dict(T=T, E=E, K=a["k"], scoring=SCORING[a["scoring"]], n_group=a["n_group"],
                    topk_group=a["topk_group"], group_top2=int(a["group_score"] == "top2_sum"), post=POST[a["post"]],
                    norm=NORM[a["norm"]], norm_eps=a["norm_eps"], scale=a["scale"], capacity=a["capacity"],
                    tie_high=int(a["tie"] == "high"), drop=int(a["drop"]), min_weight=a["min_weight"],
                    jitter_eps=a["jitter_eps"], norm_min=a["norm_min"], group_fill=a["group_fill"],
                    n_skip=int(a.get("n_skip") or 0), n_shared=int(a.get("n_shared") or 0))

    def _k_moe_route(self, o, i, args):
        from moec.codegen.ascend.plan import act_dtype
        dev = self.dev
        dt = act_dtype(o)  # logits, bias and weights: f32 or f16 (scores computed in f32 either way)
        logits = dev.buf(args[0], NP_X[dt])
        # the selection bias in the logits' type, or f32 (a bf16/f16 model keeping an f32 correction bias)
        bias_f32 = len(args) > 1 and o.operands[1].type.dtype.mlir == "f32"
        bias = dev.buf(args[1], np.float32 if bias_f32 else NP_X[dt]) if len(args) > 1 else None
        seq = 0
        if len(logits.shape) == 3:  # [B, S, E]: capacity counted per sequence of S tokens, over the tokens [B*S, E]
            seq = logits.shape[1]
            logits = logits.reshape(sprod(logits.shape[:2]), logits.shape[2])
        T, E = logits.shape
        k = o.attrs["k"] + int(o.attrs.get("n_shared") or 0)  # the slots: k chosen and the always-on ones
        w = dev.new((T, k), NP_X[dt])
        ids = dev.new((T, k), np.int32)
        tl = self._route_tiling(o, T, E)
        tl["seq"] = seq
        tl["has_bias"] = int(bias is not None)
        tl["bias_f32"] = int(bias_f32)
        tl["xdt"] = XDT[dt]
        if _pos(T):
            self._launch("moe_gating", self._bd(T), [logits, bias if bias is not None else logits, w, ids],
                         tiling_bytes(**tl))
            if o.attrs["capacity"]:  # drops happen in token order: the init-routing kernel applies them
                sorted_ = dev.new((T * k,), np.int32)
                offs = dev.new((E + 1,), np.int32)
                self._launch("moe_init_routing", self._route_bd(T * k), [ids, w, sorted_, offs], tiling_bytes(**tl))
        return [w, dev.buf(ids, np.int64)]

    def _k_moe_dispatch(self, o, i, args):
        """The routed rows grouped by expert: their count offsets[E] is known only when the kernel has run, so
        it is read back (a run-time scalar of the plan) and the sorted row list is that long."""
        dev = self.dev
        ids = dev.buf(args[0], np.int32)
        T, k = ids.shape
        E = o.attrs["num_experts"]
        sorted_ = dev.new((smax(T * k, 1),), np.int32)
        offs = dev.new((E + 1,), np.int32)
        w = dev.new((smax(T * k, 1),), np.float32)
        if _pos(T):
            self._launch("moe_init_routing", self._route_bd(T * k), [ids, w, sorted_, offs],
                         tiling_bytes(T=T, K=k, E=E))
            n = dev.read(offs, E)
        else:
            n = 0
        # the IR's plan (block 1): slots grouped by expert, offsets[E+1]
        return [dev.buf(sorted_[:n], np.int64), dev.buf(offs, np.int64)]

    def _ffn_tiling(self, o, T, D, E, k, F, I, **kw):
        a = o.attrs
        # (softcap_swiglu: the kernel reads the gate and up soft caps in alpha and beta)
        alpha, beta = (a["gate_softcap"], a["up_softcap"]) if a["activation"] == "softcap_swiglu" else (a["alpha"], a["beta"])
        return dict(T=T, D=D, E=E, K=k, F=F, I=I, act=ACT[a["activation"]],
                    interleaved=int(a["gate_layout"] == "interleaved"), clamp=int(np.isfinite(a["limit"])),
                    alpha=alpha, beta=beta, limit=a["limit"] if np.isfinite(a["limit"]) else 0.0, **kw)

    def _dequant_int8(self, q, offs, E: int, N: int, K: int, npw=np.float32):
        """int8 codes [E, N, K] -> the cube's operand type ``npw`` (f32, or the model's bf16/f16; exact) in a GM
        workspace (experts with rows only; the rest stays NaN).  The scales come after the dot products."""
        from moec.codegen.ascend.plan import vector_chunk
        dev = self.dev
        w = dev.new((E, N, K), npw, "nan")
        ch = vector_chunk(self.desc, K)
        touched = dev.nonempty(offs, E)
        self._launch("moe_dequant_int8", self._bd(touched * (N * -(-K // ch))),
                     [dev.buf(q, np.int8), offs, w],
                     tiling_bytes(E=E, M=N, Kd=K, chunk=ch, adt=XDT[_np_name(npw)]))
        return w

    def _dequant_int4(self, q, s, z, offs, E: int, N: int, K: int, group: int, npw=np.float32):
        """int4 codes [E, N, K/2] (two a byte, low nibble first), per-group scales s and zero points z (or 8) ->
        (q - z) * s in the cube's operand type ``npw`` (f32, or the model's bf16/f16: rounded once) in a GM
        workspace, experts with rows only (the rest stays NaN)."""
        from moec.codegen.ascend.plan import vector_chunk
        dev = self.dev
        G = group or K
        w = dev.new((E, N, K), npw, "nan")
        ch = min(vector_chunk(self.desc, K), G) // 2 * 2  # a chunk lies in one scale group, codes in pairs
        touched = dev.nonempty(offs, E)
        chunks = (K // G) * -(-G // ch)
        self._launch("moe_dequant_int4", self._bd(touched * (N * chunks)),
                     [dev.buf(q, np.uint8), dev.buf(s, np.float32), dev.buf(z if z is not None else s, np.float32),
                      offs, w],
                     tiling_bytes(E=E, M=N, Kd=K, chunk=ch, wgroup=G, zp=int(z is not None), adt=XDT[_np_name(npw)]))
        return w

    def _k_moe_experts(self, o, i, args):
        import ml_dtypes
        from moec.codegen.ascend.plan import act_dtype, ffn_cube_plan, vector_chunk
        dev = self.dev
        a = o.attrs
        wq = a["wq"]
        xdt = act_dtype(o)  # f16 models: x, biases, routing weights and y in half; the GEMMs on half
        npx = NP_X[xdt]
        x = dev.buf(args[0], npx)
        ids = args[1]
        order, offs = dev.buf(args[2], np.int32), dev.buf(args[3], np.int32)
        w_in, w_out = args[4], args[5]
        e = experts_extras(a, args[6:])
        nq = 2 if wq == "int8" else 0  # int8: channel scales applied after the dot products (int4: in the dequant)
        b_in, b_out, rw = (dev.buf(v, npx) if v is not None else None for v in (e.b_in, e.b_out, e.rw))
        s_in, s_out = (dev.buf(e.s_in, np.float32), dev.buf(e.s_out, np.float32)) if nq else (None, None)
        T, D = x.shape
        k = ids.shape[1]
        E, I = w_in.shape[:2]
        F = w_out.shape[2] * (2 if wq == "int4" else 1)  # int4: two codes a byte along K
        y = dev.new((T, k, D), npx)  # dropped slots (id -1) stay zero: the host clears y (aclrtMemset)
        n = order.shape[0]  # the routed rows (offsets[E]: a run-time scalar after moe.dispatch)
        if isinstance(n, int) and n == 0:
            return [y]
        w8a8 = a.get("aq", "none") == "int8"
        if w8a8:  # int8 x int8 on the cube: the gathered/activated rows stay f32 until they are quantised
            dtype, adt, np_a = "i8", 0, np.float32
        elif xdt in ("f16", "bf16"):  # the model's own 2-byte type: GEMM inputs as they are
            dtype, adt, np_a = xdt, XDT[xdt], NP_X[xdt]
        elif wq == "bf16":
            dtype, adt, np_a = "bf16", 1, ml_dtypes.bfloat16
        else:
            dtype, adt, np_a = "f32", 0, np.float32
        tiles = ffn_cube_plan(self.desc, self._hint(T), self.plan["steps"][i]["sizes"])["tiles"]
        tl = self._ffn_tiling(o, T, D, E, k, F, I, rows=n, adt=adt, xdt=XDT[xdt], qscale=int(nq > 0),
                              has_b_in=int(b_in is not None), has_b_out=int(b_out is not None),
                              weights_at=WEIGHTS_AT_CODES[a["weights_at"]], aq=int(w8a8))
        with dev.when(n):  # no routed row: y stays zero
            # 1. expanded rows in expert order, in the GEMM input type
            xe = dev.new((n, D), np_a, "nan")
            self._launch("moe_gather_rows", self._bd(n), [x, order, rw if rw is not None else x, xe],
                         tiling_bytes(**tl, chunk=vector_chunk(self.desc, D)))
            if w8a8:  # int8 codes straight to the cube; the rows are quantised per row (moe_quant_rows_int8)
                wi, wo = dev.buf(w_in, np.int8), dev.buf(w_out, np.int8)
                xe, s_x = quant_rows_int8(dev, xe)
            elif nq:  # the codes widened to the cube's type (exact), the scales after the dot products
                wi, wo = self._dequant_int8(w_in, offs, E, I, D, np_a), self._dequant_int8(w_out, offs, E, D, F, np_a)
            elif wq == "int4":  # dequantised to the cube's type, scales and zero points applied
                g = a["wq_group"]
                wi = self._dequant_int4(w_in, e.s_in, e.z_in, offs, E, I, D, g, np_a)
                wo = self._dequant_int4(w_out, e.s_out, e.z_out, offs, E, D, F, g, np_a)
            else:
                wi, wo = w_in, w_out
            # 2. up (gate+up) projection on the cube
            h = dev.new((n, I), np.float32, "nan") if not w8a8 else dev.new((n, I), np.int32, -2**31)
            self._gmm(xe, wi, offs, h, E, I, D, T, dtype, tiles["up"])
            # 3. activation (+ w8a8 row scales, b_in, int8 scales), cast to the GEMM input type
            act = dev.new((n, F), np_a, "nan")
            self._launch("moe_activation", self._bd(n), [h, offs, b_in if b_in is not None else h,
                                                         s_in if s_in is not None else h, s_x if w8a8 else h, act],
                         tiling_bytes(**tl, chunk=vector_chunk(self.desc, F)))
            if w8a8:  # the down projection's input rows are quantised too
                act, s_a = quant_rows_int8(dev, act)
            # 4. down projection on the cube
            yo = dev.new((n, D), np.float32, "nan") if not w8a8 else dev.new((n, D), np.int32, -2**31)
            self._gmm(act, wo, offs, yo, E, D, F, T, dtype, tiles["down"])
            if a.get("post_norm_eps") is not None:  # each slot's output RMS-normalised (Muse Spark), in f32, by
                # vec_rowwise's RMS norm with a unit scale, before the routing weight (the plan refuses it where
                # moe_scatter_rows would still add b_out or apply int8 scales: they come before the norm)
                from moec.codegen.ascend.vector_ops import ROW_TILE, ROWWISE
                from moec.codegen.ascend.vector_ops import tiling_bytes as vec_tiling
                yn = dev.new((n, D), np.float32, "nan")
                self._launch("vec_rowwise", self._bd(n), [yo, dev.buf(np.ones(D, np.float32)), yo, yn, yn, yn],
                             vec_tiling(rows=n, cols=D, op=ROWWISE["moec.rms_norm"], tile=ROW_TILE,
                                        s0=float(a["post_norm_eps"]), dt=0))
                yo = yn
            tl_out = tl
            if e.pn_w is not None:  # the post-norm's per-expert weight rows (Ergo): moe_scatter_rows' per-expert
                # channel scale (s_out, free here: the plan keeps int8 weights with a post-norm on the host)
                s_out, tl_out = dev.buf(e.pn_w, np.float32), dict(tl, qscale=1)
            # 5. back to the slots (+ w8a8 row scales, b_out, int8 scales, routing weight at the output)
            self._launch("moe_scatter_rows", self._bd(n),
                         [yo, order, offs, b_out if b_out is not None else yo, s_out if s_out is not None else yo,
                          s_a if w8a8 else yo, rw if rw is not None else yo, y],
                         tiling_bytes(**tl_out, chunk=vector_chunk(self.desc, D)))
        return [y]

    def _k_moe_shared_experts(self, o, i, args):
        """Shared experts: up GEMM (x read by every group) -> activation -> down GEMM -> scatter (f32 rows
        per expert) -> finalize (sum, gate).  f16: half x/weights/gate/out, half GEMM inputs, the per-expert
        rows and their sum stay f32 and are rounded to half once, at the end."""
        from moec.codegen.ascend.plan import act_dtype, ffn_cube_plan, vector_chunk
        dev = self.dev
        dt = act_dtype(o)
        npx = NP_X[dt]
        x = dev.buf(args[0], npx)
        w_in, w_out = (dev.buf(v, npx) for v in args[1:3])
        gate = dev.buf(args[3], npx) if len(args) > 3 else None
        T, D = x.shape
        S, I, _ = w_in.shape
        F = w_out.shape[2]
        out = dev.new((T, D), npx)
        if not _pos(T):
            return [out]
        tiles = ffn_cube_plan(self.desc, self._hint(T), self.plan["steps"][i]["sizes"])["tiles"]
        offs = dev.ints([s * T for s in range(S + 1)])  # expert-major rows p = s*T + t
        tl = self._ffn_tiling(o, T, D, S, S, F, I, rows=S * T, shared=1)
        h = dev.new((S * T, I), np.float32, "nan")
        self._gmm(x, w_in, offs, h, S, I, D, T, dt, tiles["up"], a_shared=True)
        act = dev.new((S * T, F), npx, "nan")
        self._launch("moe_activation", self._bd(S * T), [h, offs, h, h, h, act],
                     tiling_bytes(**tl, chunk=vector_chunk(self.desc, F), xdt=XDT[dt], adt=XDT[dt]))
        yo = dev.new((S * T, D), np.float32, "nan")
        self._gmm(act, w_out, offs, yo, S, D, F, T, dt, tiles["down"])
        ys = dev.new((T, S, D), np.float32, "nan")
        dummy = np.zeros(8, np.int32)
        self._launch("moe_scatter_rows", self._bd(S * T), [yo, dummy, offs, yo, yo, yo, yo, ys],
                     tiling_bytes(**tl, chunk=vector_chunk(self.desc, D)))
        self._launch("moe_finalize", self._bd(T), [ys, x, x, x, dummy, gate if gate is not None else x, out],
                     tiling_bytes(T=T, D=D, K=S, weighted=0, has_gate=int(gate is not None), xdt=XDT[dt]))
        return [out]

    def _k_moe_combine(self, o, i, args):
        from moec.codegen.ascend.plan import act_dtype
        dev = self.dev
        a = o.attrs
        dt = act_dtype(o)
        npx = NP_X[dt]
        y = dev.buf(args[0], npx)
        w = dev.buf(args[1], npx)
        ex = list(args[2:])
        shared = dev.buf(ex.pop(0), npx) if a["has_shared"] else None
        px, pids = (dev.buf(ex[0], npx), dev.buf(ex[1], np.int32)) if a["passthrough"] else (None, None)
        T, k, D = y.shape
        out = dev.new((T, D), npx)
        if _pos(T):
            self._launch("moe_finalize", self._bd(T),
                         [y, w, shared if shared is not None else y, px if px is not None else y,
                          pids if pids is not None else np.zeros(8, np.int32), y, out],
                         tiling_bytes(T=T, D=D, K=k, weighted=int(a["weighted"]), has_shared=int(shared is not None),
                                      passthrough=int(a["passthrough"]), xdt=XDT[dt], ydt=XDT[dt]))
        return [out]


def _pos(x) -> bool:
    """A size is not 0: an int's value; a symbolic dim's expression is >= 1 (symbolic plans cover dims >= 1)."""
    return True if isinstance(x, Sym) else bool(x)


class _Shaped:
    """An input's shape and type (what a plan key names) without data."""
    def __init__(self, shape, dtype):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def _placeholder(x):
    """A zero array standing in for a device buffer when only its shape matters (shape ops, views)."""
    if isinstance(x, _BT):
        x = x.src
        return np.zeros(x.shape[:-2] + (x.shape[-1], x.shape[-2]), x.dtype)
    if isinstance(x, Buf):
        if not all(isinstance(d, int) for d in x.shape):
            raise PlanError("a shape known only at run time reaches a shape computation")
        return np.zeros(x.shape, x.dtype)
    return x


def _np_name(dt) -> str:
    """The tiling's type name (XDT) of a numpy float type: f32, bf16 or f16."""
    return next(k for k, v in NP_X.items() if np.dtype(v) == np.dtype(dt))


@device_op
def quant_rows_int8(dev, a):
    """w8a8: rows [n, W] f32 -> (int8 codes [n, W], f32 scales [n]) on the vector cores, exactly
    ``quantize_rows_int8`` (s = max|row| / 127, 1 for a zero row; rint, ties to even)."""
    from moec.codegen.ascend.plan import vector_chunk
    a = dev.buf(a, np.float32)
    n, W = a.shape
    q = dev.new((n, W), np.int8)
    s = dev.new((n,), np.float32, "nan")
    if not (isinstance(n, int) and n == 0):
        with dev.when(n):
            dev.launch("moe_quant_rows_int8", smax(1, smin(dev.cores, n)), [a, q, s],
                       tiling_bytes(rows=n, M=W, chunk=vector_chunk(dev.desc, W)))
    return q, s


class AscendArtifact:
    """Runs launch plans: NPU kernels on the emulator, host-fallback ops in numpy; callable on numpy arrays.

    The plans come from the compiled folder (``ascend/launch/``, written at compile time for the shapes the
    compiler knew) or, for other input shapes, from ``Planner`` once per distinct shapes; a call executes its
    plan step by step (codegen/ascend/launch_plan.py ``execute``): no walk over the IR.  ``cube_stats`` counts
    the cube instructions the emulator executed (Mmad calls and MACs, LoadData, Nd2Nz copies, Fixpipe; Mmad calls
    by operand type), ``cube_by_op`` the same per IR op; ``launches`` the kernels; ``host_ops`` the host-fallback
    op calls; ``plans_made`` the plans made at run time (not found in the compiled folder)."""

    def __init__(self, outdir: str, desc: TargetDesc):
        self.outdir = outdir
        with open(os.path.join(outdir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.input_names = [i["name"] for i in self.manifest["inputs"]]
        self.output_names = [o["name"] for o in self.manifest["outputs"]]
        self.module = load_module(os.path.join(outdir, "model.mlir"))
        with open(os.path.join(outdir, "ascend", "plan.json")) as f:
            self.plan = json.load(f)
        self.lib = _load_private(outdir, "ascend/libmoec_ascend_emu.so")
        self.lib.moec_last_error.restype = ctypes.c_char_p
        self.lib.moec_cube_stats.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        self.lib.moec_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_void_p,
                                         ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_void_p,
                                         ctypes.c_void_p]
        if self.lib.moec_set_soc(desc.arch.encode()):
            raise UserInputError(f"emulator does not know SoC {desc.arch}")
        self.desc = desc
        self.cores = int(desc.aiv_cores)
        self.aic = int(desc.cores)
        self.planner = Planner(self.module, self.plan, desc)
        self.host_ops: Dict[str, int] = {}
        self.launches: Dict[str, int] = {}
        self.cube_stats: Dict[str, int] = {k: 0 for k in CUBE_COUNTERS}
        self.cube_by_op: Dict[str, Dict[str, int]] = {}  # the same counters per IR op name (moe.experts, ...)
        self.plans_made = 0
        self.live_calls = 0   # calls planned while they ran (a host op's result shape depends on the data)
        self._live: set = set()
        self._plans: Dict[str, object] = {}
        self._emitted = os.path.join(outdir, "ascend", "launch")
        self._cube_counts()  # start from zero

    @property
    def tiling_evals(self) -> Dict[str, int]:
        return self.planner.tiling_evals

    def stats(self) -> dict:
        """What ran where: kernel launches, the emulator's cube instruction counts, host-op calls."""
        return {"launches": dict(self.launches), "cube": dict(self.cube_stats), "host_ops": dict(self.host_ops),
                "tiling_evals": dict(self.tiling_evals), "plans_made": self.plans_made,
                "live_calls": self.live_calls,
                "cube_by_op": {k: dict(v) for k, v in self.cube_by_op.items()}}

    def _cube_counts(self) -> List[int]:
        buf = (ctypes.c_uint64 * len(CUBE_COUNTERS))()
        self.lib.moec_cube_stats(buf)
        return list(buf)

    # -- plans ------------------------------------------------------------------------------------------
    def launch_plan(self, inputs: Sequence) -> "object":
        """The plan for these inputs' shapes and types: the compiled one, else made now (and kept)."""
        key = plan_key(inputs)
        p = self._plans.get(key)
        if p is None:
            n = emitted_plan_file(self._emitted, key)  # a symbolic plan serves many keys: loaded once
            p = self._plans.get(f"plan{n}") if n is not None else None
            if p is None:
                p = load_emitted_plan(self._emitted, key)
                if n is not None and p is not None:
                    self._plans[f"plan{n}"] = p
            if p is None:
                p = self.planner.make([np.shape(x) for x in inputs], [np.asarray(x).dtype for x in inputs])
                self.plans_made += 1
            if len(self._plans) >= 64:
                self._plans.clear()
            self._plans[key] = p
        return p

    def call_torch(self, tensors: Sequence) -> list:
        """moec.compile's call on torch tensors: tensors of the NPU (``npu_device_type``) run on the NPU through the
        artifact's device library (``run_on_device``: device tensors in and out, no host copy); CPU tensors run on
        the emulator through numpy (outputs as CPU tensors); tensors of any other device are refused, saying why."""
        kinds = {t.device.type for t in tensors}
        dev = npu_device_type()
        if dev is not None and kinds == {dev}:
            lib = device_library(self.outdir)
            if lib is None:
                raise UserInputError("NPU tensors need the artifact's device library, ascend/build/libmoec_run.so: "
                                     "build the CMake project in " + os.path.join(self.outdir, "ascend") +
                                     " (see its README.md)")
            index = tensors[0].device.index
            return run_on_device(lib, self.outdir, tensors, int(index or 0))
        if kinds != {"cpu"}:
            other = sorted(kinds - {"cpu"})
            raise UserInputError(f"inputs on device {', '.join(other)}: " +
                                 (NPU_WHY_NOT if dev is None else f"NPU tensors ({dev}) and other tensors mixed"))
        from moec.frontend.torch_import import numpy_to_tensor, tensor_to_numpy
        return [numpy_to_tensor(o) for o in self([tensor_to_numpy(t) for t in tensors])]

    def __call__(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        inputs = [np.asarray(x) for x in inputs]
        key = plan_key(inputs)
        if key not in self._live:
            try:
                return execute(self.launch_plan(inputs), inputs, self._run_kernel, self._run_host_op)
            except NeedsData:  # a host op's result shape depends on the data: planned while it runs, per call
                self._live.add(key)
        ex = Executor(inputs, {}, self._run_kernel)
        rec = LiveRecorder(self.desc, self.cores, self.aic, ex, self._run_host_op)
        plan = self.planner.make([np.shape(x) for x in inputs], [x.dtype for x in inputs], rec=rec)
        for s in plan.steps:
            if s[0] == "output":
                ex.step(s)
        self.live_calls += 1
        return ex.results()

    def run_now(self, fn, args, kw):
        """One orchestration helper on numpy arrays (see launch_plan.device_op): planned and run at once."""
        from moec.codegen.ascend.launch_plan import flatten_bufs, rebuild
        rec = Recorder(self.desc, self.cores, self.aic)
        res = fn(rec, *args, **kw)
        bufs: list = []
        flatten_bufs(res, bufs)
        plan = rec.finish(bufs)
        bind = {b.id: np.asarray(a).reshape(-1) for a, b in rec.consts.values()
                if isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == b.dtype}
        return rebuild(res, execute(plan, [], self._run_kernel, self._run_host_op, bind=bind))

    # -- executing steps --------------------------------------------------------------------------------
    def _run_host_op(self, index: int, name: str, args: list) -> list:
        self.host_ops[name] = self.host_ops.get(name, 0) + 1
        return [np.asarray(r) for r in self.module.main.ops[index].reference(*args)]

    def _run_kernel(self, kernel: str, op: str, block_dim: int, arrays: Sequence, tiling: bytes) -> None:
        ptrs = (ctypes.c_void_p * max(1, len(arrays)))()
        regs = []
        for j, a in enumerate(arrays):
            if a is None:
                ptrs[j] = None
                continue
            self.lib.moec_register(ctypes.c_void_p(a.ctypes.data), ctypes.c_size_t(max(a.nbytes, 1)))
            regs.append(a.ctypes.data)
            ptrs[j] = a.ctypes.data
        tb = np.frombuffer(tiling, np.uint8).copy()
        ws = np.zeros(64, np.uint8)
        for b in (tb, ws):
            self.lib.moec_register(ctypes.c_void_p(b.ctypes.data), ctypes.c_size_t(b.nbytes))
        try:
            rc = self.lib.moec_launch(kernel.encode(), ctypes.c_uint32(block_dim), None, ptrs, len(arrays),
                                      ctypes.c_void_p(ws.ctypes.data), ctypes.c_void_p(tb.ctypes.data))
        finally:
            for p in regs + [tb.ctypes.data, ws.ctypes.data]:
                self.lib.moec_unregister(ctypes.c_void_p(p))
        self.launches[kernel] = self.launches.get(kernel, 0) + 1
        per_op = self.cube_by_op.setdefault(op, {k: 0 for k in CUBE_COUNTERS})
        for k, v in zip(CUBE_COUNTERS, self._cube_counts()):
            self.cube_stats[k] += v
            per_op[k] += v
        if rc:
            raise RuntimeFailure(self.lib.moec_last_error().decode())

    def _quant_rows_int8(self, a: np.ndarray):
        return quant_rows_int8(self, a)


# -- plans in the compiled folder ----------------------------------------------------------------------------
CONSTS = "consts.bin"   # the constants of every plan in the folder that model.weights.bin does not hold as they are


WEIGHTS_REF = "weights"  # a const step's file token: the artifact's model.weights.bin (two folders above launch/)


def _weights_file(d: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(d))), "model.weights.bin")


def _weights_by_digest(outdir: str) -> Dict[bytes, int]:
    """sha256 of each weight as model.weights.bin stores it -> its offset there (weights kept in a kernel layout
    are left out: their bytes are not the module's array)."""
    j, b = os.path.join(outdir, "model.weights.json"), os.path.join(outdir, "model.weights.bin")
    if not (os.path.exists(j) and os.path.exists(b)) or not os.path.getsize(b):
        return {}
    with open(j) as f:
        index = json.load(f)
    mm = np.memmap(b, dtype=np.uint8, mode="r")
    out: Dict[bytes, int] = {}
    for e in index.values():
        if e.get("layout") is None and e["nbytes"]:
            out.setdefault(hashlib.sha256(mm[e["offset"]:e["offset"] + e["nbytes"]]).digest(), int(e["offset"]))
    return out


def emitted_plan_file(d: str, key: str) -> Optional[int]:
    """The number of the plan written at compile time for ``key`` (ascend/launch/index.txt: one 'key file' line
    per plan): the plan for exactly these shapes, else a symbolic plan whose key covers them (``match_key``), as
    host/moec_run.cpp picks it."""
    from moec.codegen.ascend.launch_plan import match_key
    idx = os.path.join(d, "index.txt")
    if not os.path.exists(idx):
        return None
    sym = None
    with open(idx) as f:
        for line in f:
            k, _, n = line.strip().rpartition(" ")
            if k == key:
                return int(n)
            if sym is None and "{" in k and match_key(k, key) is not None:
                sym = int(n)
    return sym


def load_emitted_plan(d: str, key: str):
    """The plan written at compile time for ``key`` (see emitted_plan_file), or None."""
    from moec.codegen.ascend.launch_plan import Plan
    n = emitted_plan_file(d, key)
    if n is None:
        return None
    with open(os.path.join(d, f"plan{n}.txt")) as t, open(os.path.join(d, CONSTS), "rb") as b:
        text = t.read()
        wf = _weights_file(d)
        files = {WEIGHTS_REF: np.memmap(wf, dtype=np.uint8, mode="r")} \
            if f" {WEIGHTS_REF}\n" in text and os.path.getsize(wf) else {}
        return Plan.load(text, b.read(), files)


# symbolic plans: (lo, hi, hint) per range of a symbolic dim (hi None: unbounded); the hint is the value the plan's
# performance choices (cube tiles, chunks) are made for -- every choice is legal for any value, only its speed varies
SYMBOLIC_RANGES = ((1, 16, 16), (17, 256, 256), (257, None, 1024))


def symbolic_plans(m: Module, planner: "Planner", skipped: list) -> list:
    """Launch plans that hold for every value of the model's symbolic dims (each a Sym $d<i>, bound from the inputs'
    shapes when the plan runs; sizes, block dims and tiling fields are expressions of it): one per range of
    SYMBOLIC_RANGES for a model with one symbolic dim, one for all values >= 1 with several.  Both the Python
    artifact and host/moec_run.cpp run them for shapes no concrete plan was written for.  A model whose planning
    needs a symbolic dim's value (a shape computation, a row length, a host op's data-dependent shape) gets none:
    ``skipped`` says why."""
    from moec.codegen.ascend.launch_plan import symbolic_key
    f = m.main
    if any(d is None for a in f.args for d in a.type.shape):
        return []
    names = sorted({d for a in f.args for d in a.type.shape if isinstance(d, str)})
    if not names:
        return []
    sym = {n: Sym(("$", f"d{j}")) for j, n in enumerate(names)}
    shapes = [tuple(sym[d] if isinstance(d, str) else int(d) for d in a.type.shape) for a in f.args]
    dtypes = [a.type.dtype.np for a in f.args]
    ranges = SYMBOLIC_RANGES if len(names) == 1 else ((1, None, 16),)
    out = []
    for lo, hi, hint in ranges:
        rng = {s.e[1]: (lo, hi) for s in sym.values()}
        key = symbolic_key(shapes, dtypes, rng)
        try:
            out.append(planner.make(shapes, dtypes, key=key, hints={s.e[1]: hint for s in sym.values()}))
        except Exception as e:
            skipped.append(f"{key} (symbolic): {type(e).__name__}: {e}")
            return []
    return out


def emit_plans(m: Module, plan: dict, desc: TargetDesc, d: str, shape_sets: Sequence) -> List[str]:
    """Writes the launch plans for each of ``shape_sets`` ([(shape, dtype) per input]) to ``d``; returns their
    keys.  Plans that cannot be made (a shape the model refuses) are skipped."""
    os.makedirs(d, exist_ok=True)
    planner = Planner(m, plan, desc)
    keys = []
    blob = bytearray()
    where: Dict[bytes, int] = {}

    in_weights = _weights_by_digest(os.path.dirname(os.path.dirname(os.path.abspath(d))))

    def store(data: bytes):  # each distinct constant once, 64-byte aligned; a weight as stored: not copied
        h = hashlib.sha256(data).digest()
        if h in in_weights:
            return (WEIGHTS_REF, in_weights[h])
        if h not in where:
            blob.extend(b"\0" * (-len(blob) % 64))
            where[h] = len(blob)
            blob.extend(data)
        return where[h]
    skipped = []
    made = []
    for shapes in shape_sets:
        try:
            made.append(planner.make([s for s, _ in shapes], [dt for _, dt in shapes]))
        except Exception as e:  # a shape this model cannot take: no plan (the artifact plans it at run time, and
            skipped.append(f"{plan_key([_Shaped(s, dt) for s, dt in shapes])}: {type(e).__name__}: {e}")  # says why)
    made += symbolic_plans(m, planner, skipped)
    for p in made:
        if p.key in keys:
            continue
        text, _ = p.dump(store)
        with open(os.path.join(d, f"plan{len(keys)}.txt"), "w") as f:
            f.write(text)
        keys.append(p.key)
    with open(os.path.join(d, CONSTS), "wb") as f:
        f.write(blob)
    with open(os.path.join(d, "index.txt"), "w") as f:
        for i, k in enumerate(keys):
            f.write(f"{k} {i}\n")
    if skipped:
        with open(os.path.join(d, "not_planned.txt"), "w") as f:
            f.write("\n".join(" ".join(x.split()) for x in skipped) + "\n")
    return keys


__all__ = ["AscendBackend", "AscendArtifact", "Planner", "tiling_bytes", "gmm_tiling_bytes", "emit_plans"]
