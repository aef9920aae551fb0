"""Ascend target: the emulator's rules each fire on a bad kernel and stay quiet on a good one; every
zoo model and the example compile with --target ascend, run block by block on the emulator with no
rule violated, and verify against onnxruntime; the emitted folder is a CANN project."""
import json
import os
import subprocess

import pytest

from moec.driver import CompileOptions, compile_onnx
from zoo import ZOO, zoo_params

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INC = os.path.join(ROOT, "targets", "ascend_emu", "include")
EXAMPLE = os.path.join(ROOT, "examples", "mixtral_like.onnx")

RULES = {  # case -> the message the emulator must print
    1: "capacity of VECCALC exceeded",
    2: "is not a multiple of 32 (DataCopy moves whole 32-byte blocks",
    3: "kernel end: a tensor of a VECIN queue is still allocated or enqueued (missing FreeTensor: leak)",
    4: "DeQue before EnQue",
    5: "use of a LocalTensor after FreeTensor",
    6: "out-of-bounds GM access",
    7: "all 2 buffers of the queue are in use",
    8: "more than 64 buffers in one kernel",
    9: "blockDim 64 exceeds the 48 cores of Ascend910B2",
    10: "vector instruction on a tensor in position A2",
    11: "Mmad: m, n, k must be <= 4095",
    12: "Compare: count*sizeof(T)=160 bytes is not a multiple of 256",
    21: "TPipe::InitBuffer: capacity of A2 exceeded: 81920 bytes requested in total, the physical buffer holds 65536",
    22: "Mmad: operands must be in A2 (L0A), B2 (L0B) and CO1 (L0C), got A1, B2, CO1",
    23: "Fixpipe(L0C->GM): the source must be in CO1 (L0C), got B1",
    24: "ifTranspose transposes 16x16 fractals of 2-byte types only",
    25: "position A1 is a cube-core buffer (L1/L0): a KERNEL_TYPE_AIV_ONLY kernel runs on vector cores",
    26: "DataCopy cannot reach A2",
    27: "reads fractal 1009 past the L1 tensor",
    28: "Adds: vector operand starts 12 bytes into its buffer, not on a 32-byte boundary",
    29: "Gather: byte address 1024 is not a whole element inside the 256-element source tensor",
    30: "Gather: byte address 2 is not a whole element inside the 256-element source tensor",
    59: "Compare: bfloat16_t operands: Compare takes half or float",
}
# cube kernels that break no rule but get a layout parameter wrong: the emulator's fractal model must
# turn that into wrong numbers (18: Nd2Nz dstNzC0Stride not the 16-aligned row count; 19: B stored [K, N]
# loaded into L0B without the fractal transpose; 20: Mmad accumulating onto an uninitialised L0C)
WRONG = (18, 19, 20)


@pytest.fixture(scope="module")
def rules_exe(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("emu") / "rules")
    subprocess.run(["g++", "-std=c++17", "-O1", "-I", INC, os.path.join(HERE, "ascend_kernels", "rules.cpp"),
                    "-o", exe], check=True)
    return exe


def test_good_kernels_pass(rules_exe):
    # double-buffered vector add over 8 blocks; Compare on whole repeats; cube GM->L1 (Nd2Nz) -> L0A/L0B
    # (LoadData) -> Mmad over k-tiles -> Fixpipe for f16 with B as [K, N] (transposing loads), bf16 with a
    # bf16 output (F322BF16), f32 and int8 (int32 accumulation), all exact against a double reference
    for case in (0, 13, 14, 15, 16, 17):
        p = subprocess.run([rules_exe, str(case)], capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.strip() == "OK", p.stdout


@pytest.mark.parametrize("case", sorted(RULES))
def test_each_rule_fires(rules_exe, case):
    p = subprocess.run([rules_exe, str(case)], capture_output=True, text=True)
    assert p.returncode == 1, p.stdout
    assert "[moec-ascend-emu] kernel '" in p.stdout and "block " in p.stdout
    assert RULES[case] in p.stdout, p.stdout


@pytest.mark.parametrize("case", WRONG)
def test_wrong_layout_gives_wrong_numbers(rules_exe, case):
    p = subprocess.run([rules_exe, str(case)], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout.startswith("WRONG"), p.stdout


def test_half_and_bf16_conversions_are_bit_exact(rules_exe, tmp_path):
    """float -> half / bfloat16_t (round to nearest even, overflow, subnormals, NaN) and back match numpy and
    ml_dtypes bit for bit."""
    import ml_dtypes
    import numpy as np
    rng = np.random.default_rng(0)
    edge = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e9, -1e9, np.inf, -np.inf, 2.0 ** -24, 2.0 ** -25,
                     2.0 ** -25 * 1.0001, 3 * 2.0 ** -26, 2.0 ** -14, 2.0 ** -14 * (1 - 2.0 ** -12), 1 + 2.0 ** -11,
                     1 + 3 * 2.0 ** -11, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 3.4e38, 1e-40], np.float32)
    bits = np.concatenate([edge.view(np.uint32), rng.integers(0, 2 ** 32, 200000, dtype=np.uint64).astype(np.uint32),
                           rng.normal(0, 1, 100000).astype(np.float32).view(np.uint32)])
    f = bits.view(np.float32)
    fin = tmp_path / "floats.bin"
    bits.tofile(fin)
    p = subprocess.run([rules_exe, "conv", str(fin)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
    out = np.fromfile(str(fin) + ".out", dtype=np.dtype([("h", "<u2"), ("b", "<u2"), ("hf", "<f4"), ("bf", "<f4")]))
    with np.errstate(over="ignore"):
        want_h = f.astype(np.float16)
    want_b = f.astype(ml_dtypes.bfloat16)
    nan = np.isnan(f)
    assert np.array_equal(out["h"][~nan], want_h.view(np.uint16)[~nan])
    assert np.array_equal(out["b"][~nan], want_b.view(np.uint16)[~nan])
    assert np.all(np.isnan(out["hf"][nan])) and np.all(np.isnan(out["bf"][nan]))
    assert np.array_equal(out["hf"][~nan], want_h.astype(np.float32)[~nan])
    assert np.array_equal(out["bf"][~nan], want_b.astype(np.float32)[~nan])


GMM_HARNESS = r"""
#include "acl/acl.h"
#include "cube_kernels.cpp"
extern "C" int gmm(uint32_t bd, void *a, void *w, void *gl, void *c, void *ws, void *t) {
  return moec_emu::Launch("grouped_matmul", bd, grouped_matmul, (GM_ADDR)a, (GM_ADDR)w, (GM_ADDR)gl, (GM_ADDR)c,
                          (GM_ADDR)ws, (GM_ADDR)t);
}
extern "C" void reg(void *p, size_t n) { moec_emu::RegisterGM(p, n); }
extern "C" const char *err() { return moec_emu::LastError().c_str(); }
extern "C" unsigned long long mmads() { return moec_emu::st().mmad_calls; }
"""


def _gmm_lib(tmp_path, mutate=None):
    """The grouped_matmul kernel (optionally with one source edit) built against the emulator."""
    import ctypes
    src = open(os.path.join(ROOT, "codegen", "ascend", "kernels", "cube_kernels.cpp")).read()
    if mutate:
        assert mutate[0] in src, mutate
        src = src.replace(mutate[0], mutate[1], 1)
    d = tmp_path / "gmm"
    d.mkdir(exist_ok=True)
    (d / "cube_kernels.cpp").write_text(src)
    (d / "h.cpp").write_text(GMM_HARNESS)
    lib = d / "libgmm.so"
    kdir = os.path.join(ROOT, "codegen", "ascend", "kernels")  # moec_kernel_common.h
    subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-I", INC, "-I", str(d), "-I", kdir, str(d / "h.cpp"),
                    "-o", str(lib)], check=True)
    h = ctypes.CDLL(str(lib))
    h.err.restype = ctypes.c_char_p
    h.mmads.restype = ctypes.c_ulonglong
    return h


def _run_gmm(h, dtype, rows, N, K, tiles, a_shared=False, seed=0, bd=7):
    """C = A . W[g]^T per group on the emulator and in float64; returns (got, want, rc, error)."""
    import ctypes

    import ml_dtypes
    import numpy as np
    from moec.targets.ascend_backend import gmm_tiling_bytes
    rng = np.random.default_rng(seed)
    npt = {"f32": np.float32, "bf16": ml_dtypes.bfloat16, "f16": np.float16, "i8": np.int8}[dtype]
    G = len(rows)
    offs = np.concatenate([[0], np.cumsum(rows)]).astype(np.int32)
    a_rows = max(rows) if a_shared else int(offs[-1])  # shared: group g reads A rows [0, rows[g])
    if dtype == "i8":  # int8 x int8, exact int32 sums
        A = rng.integers(-127, 128, size=(max(a_rows, 1), K)).astype(np.int8)
        W = rng.integers(-127, 128, size=(G, N, K)).astype(np.int8)
        C = np.full((max(int(offs[-1]), 1), N), -2**31, np.int32)
    else:
        A = rng.normal(size=(max(a_rows, 1), K)).astype(npt)
        W = rng.normal(size=(G, N, K)).astype(npt)
        C = np.full((max(int(offs[-1]), 1), N), np.nan, np.float32)
    want = np.zeros_like(C, dtype=np.float64)
    for g in range(G):
        a = A[:rows[g]] if a_shared else A[offs[g]:offs[g + 1]]
        want[offs[g]:offs[g + 1]] = a.astype(np.float64) @ W[g].astype(np.float64).T
    tb = np.frombuffer(gmm_tiling_bytes(T=a_rows, G=G, N=N, K=K, aShared=int(a_shared), aRows=A.shape[0],
                                        outRows=C.shape[0], dtype={"f32": 0, "bf16": 1, "f16": 2, "i8": 3}[dtype], **tiles),
                       np.uint8).copy()
    ws = np.zeros(64, np.uint8)
    for x in (A, W, offs, C, tb, ws):
        h.reg(ctypes.c_void_p(x.ctypes.data), ctypes.c_size_t(x.nbytes))
    rc = h.gmm(ctypes.c_uint32(bd), *(ctypes.c_void_p(x.ctypes.data) for x in (A, W, offs, C, ws, tb)))
    return C[:int(offs[-1])], want[:int(offs[-1])], rc, h.err().decode()


GMM_CASES = [  # dtype, rows per group (empty groups included), N, K, tiles
    ("f32", [5, 0, 37, 16, 1], 40, 100, dict(baseM=16, baseN=16, baseK=32, stepK=2, dbL0C=2)),
    ("bf16", [3, 21, 0, 40], 70, 150, dict(baseM=32, baseN=32, baseK=64, stepK=1, dbL0C=1)),
    ("f16", [1, 1, 2], 33, 48, dict(baseM=16, baseN=32, baseK=16, stepK=2, dbL0C=2)),
    ("bf16", [64, 7], 24, 520, dict(baseM=64, baseN=16, baseK=32, stepK=4, dbL0C=2)),
    ("f32", [300], 16, 8, dict(baseM=128, baseN=16, baseK=16, stepK=1, dbL0C=2)),
    ("i8", [5, 0, 37, 16, 1], 40, 100, dict(baseM=16, baseN=32, baseK=32, stepK=2, dbL0C=2)),  # 16x32 fractals
]


@pytest.fixture(scope="module")
def gmm_lib(tmp_path_factory):
    return _gmm_lib(tmp_path_factory.mktemp("gmm"))


@pytest.mark.parametrize("case", range(len(GMM_CASES)))
def test_grouped_matmul_kernel(gmm_lib, case):
    """The cube kernel over uneven/empty groups, tails in M, N and K (K not a multiple of C0 or of the
    tiles), several k-slices per L1 load and k-tiles per slice, every dtype: equal to float64 within f32
    accumulation error; every output row written (the output starts as NaN)."""
    import numpy as np
    dtype, rows, N, K, tiles = GMM_CASES[case]
    before = gmm_lib.mmads()
    got, want, rc, err = _run_gmm(gmm_lib, dtype, rows, N, K, tiles)
    assert rc == 0, err
    assert gmm_lib.mmads() > before
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.sqrt(K))
    got, want, rc, err = _run_gmm(gmm_lib, dtype, rows, N, K, tiles, a_shared=True, seed=1)
    assert rc == 0, err
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.sqrt(K))
    if dtype == "i8":
        assert got.dtype == np.int32 and np.array_equal(got, want.astype(np.int64))


MUTATIONS = [  # one wrong layout parameter each in the generated kernel: caught as wrong numbers
    ("pa.dstNzC0Stride = (uint16_t)m16;", "pa.dstNzC0Stride = (uint16_t)m;"),
    ("la.srcStride = (uint16_t)M1;", "la.srcStride = 1;"),
    ("lb.startIndex = (uint16_t)(kb0 * N1 + f0);", "lb.startIndex = (uint16_t)(kb0 + f0);"),
    ("mp.cmatrixInitVal = (k0 + ks == 0);", "mp.cmatrixInitVal = (k0 == 0);"),
]


@pytest.mark.parametrize("mutation", range(len(MUTATIONS)))
def test_grouped_matmul_layout_mistakes_are_caught(tmp_path, mutation):
    import numpy as np
    h = _gmm_lib(tmp_path, MUTATIONS[mutation])
    got, want, rc, err = _run_gmm(h, "bf16", [5, 0, 37, 16], 40, 100, dict(baseM=32, baseN=32, baseK=32, stepK=2,
                                                                             dbL0C=2))
    assert rc != 0 or not np.allclose(got, want, rtol=1e-3, atol=1e-3), "a wrong layout went unnoticed"


# Ascend compiles the recognised moe.* ops, which do not depend on the exporter (tests/test_zoo.py proves
# every export recognised on cpu): by default one export of each family (zoo.ASCEND_EXPORTS) and half of the
# hand-built graphs (zoo.zoo_params); `-m slow` adds the rest, test_zoo_on_triton runs the other half.
@pytest.mark.parametrize("name", list(zoo_params("ascend")))
def test_zoo_on_ascend(name, tmp_path):
    e = next(z for z in ZOO if z.name == name)
    out = tmp_path / "out"
    r = compile_onnx(e.build(), str(out), CompileOptions(target="ascend", symbol_sizes=(5, 1)))
    assert r.report["verified"] and r.report["oracle"] == "onnxruntime", r.report.get("failure")
    plan = json.load(open(out / "ascend" / "plan.json"))
    npu = {s["op"] for s in plan["steps"] if s["where"] == "npu"}
    assert {"moe.route", "moe.dispatch", "moe.experts", "moe.combine"} <= npu | {"moe.dispatch"}
    assert not any(op.startswith("moe.") for op in plan["host_ops"]), plan["host_ops"]
    # the expert FFN (and the router matmul) ran on the cube: grouped_matmul launched, Mmads executed
    for s in plan["steps"]:
        if s["op"] in ("moe.experts", "moe.shared_experts"):
            assert s["kernels"].count("grouped_matmul") == 2 and s["tiles"], s
    st = r.artifact.stats()
    assert st["launches"].get("grouped_matmul", 0) >= 2 and st["cube"]["mmad_calls"] > 0, st
    assert st["cube"]["fixpipe_calls"] > 0 and st["cube"]["nd2nz_calls"] > 0 and "matmul_rows" not in st["launches"]


def test_emitted_project_and_socs(tmp_path):
    for soc in ("Ascend910B1", "Ascend910B3", "Ascend910_93"):
        out = tmp_path / soc
        r = compile_onnx(EXAMPLE, str(out), CompileOptions(target="ascend", arch=soc, symbol_sizes=(4,)))
        assert r.report["verified"]
        d = out / "ascend"
        for f in ("CMakeLists.txt", "README.md", "kernels/moe_kernels.cpp", "kernels/cube_kernels.cpp",
                  "kernels/vector_kernels.cpp", "kernels/moec_kernel_common.h", "host/launch.cpp", "plan.json"):
            assert (d / f).exists(), f
        if soc == "Ascend910B1":  # CANN compiles each kernel file on its own: each must stand alone
            for k in ("moe_kernels", "cube_kernels", "vector_kernels"):
                p = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-I", INC, str(d / "kernels" / f"{k}.cpp")],
                                   capture_output=True, text=True)
                assert p.returncode == 0, p.stderr[-2000:]
        cm = (d / "CMakeLists.txt").read_text()
        assert f'set(SOC_VERSION "{soc}"' in cm and "ascendc_library" in cm and "kernels/cube_kernels.cpp" in cm
        assert "KERNEL_TYPE_AIC_ONLY" in (d / "kernels" / "cube_kernels.cpp").read_text()
        host = (d / "host" / "launch.cpp").read_text()  # host code launches through ACLRT_LAUNCH_KERNEL, not <<<>>>
        assert "ACLRT_LAUNCH_KERNEL(kernel)(blockDim, stream" in host and "<<<" not in host.split("#else", 1)[1]
        assert (d / "host" / "moec_run.cpp").exists() and (d / "launch" / "index.txt").exists()
        plan = json.load(open(d / "plan.json"))
        assert plan["soc"] == soc and "estimates" in plan["estimates_are"]
        ffn = [e for e in plan["estimates"] if e["kernel"] == "moe_expert_ffn"]
        bounds = ("cube", "HBM", "L1 fill (MTE2)", "L0 load (MTE1)", "fixpipe", "launch", "vector", "copy-issue/launch")
        assert ffn and all(e["estimate_us"] > 0 and e["bound"] in bounds and e["path"] == "cube" for e in ffn)
        for e in ffn:
            gmm = [p for p in e["parts"] if p["kernel"] == "grouped_matmul"]
            assert len(gmm) == 2 and all(p["blockDim"] <= {"Ascend910B3": 20}.get(soc, 24) for p in gmm)
            assert abs(sum(p["estimate_us"] for p in e["parts"]) - e["estimate_us"]) < 0.05


def test_rule_violation_in_generated_code_is_reported(tmp_path, monkeypatch):
    """A kernel that breaks a rule at run time surfaces as a clear verification failure."""
    from moec.errors import VerificationError
    from moec.targets import ascend_backend

    real = ascend_backend.gmm_tiling_bytes

    def bad_tiling(**kw):  # cube tiles 16x larger in K than L0A/L0B hold
        kw["baseK"] = kw["baseK"] * 16
        return real(**kw)
    monkeypatch.setattr(ascend_backend, "gmm_tiling_bytes", bad_tiling)
    with pytest.raises(VerificationError, match="moec-ascend-emu"):
        compile_onnx(EXAMPLE, str(tmp_path / "o"), CompileOptions(target="ascend", symbol_sizes=(3,)))


@pytest.mark.parametrize("model", ["example", "gptoss_torchscript", "llama4_torchscript"])
def test_bf16_weights_on_the_cube(model, tmp_path):
    """--weights bf16: the routed experts' GEMMs run on the cube with bf16 operands (x and the activation
    rounded to bf16, f32 accumulation), verified against the bf16 semantics with the bf16 tolerance."""
    from moec.tolerances import QUANT_VERIFY_TOLERANCE
    src = EXAMPLE if model == "example" else next(z for z in ZOO if z.name == model).build()
    r = compile_onnx(src, str(tmp_path / "o"), CompileOptions(target="ascend", weights="bf16", symbol_sizes=(5, 1, 17)))
    rep = r.report
    assert rep["verified"], rep.get("failure")
    assert rep["tolerance"] == {"f32": QUANT_VERIFY_TOLERANCE["bf16"].to_json()}
    plan = json.load(open(tmp_path / "o" / "ascend" / "plan.json"))
    ex = [s for s in plan["steps"] if s["op"] == "moe.experts"]
    assert ex and all(s["where"] == "npu" and s["cube_dtype"] == "bf16" for s in ex)
    assert 'wq = "bf16"' in (tmp_path / "o" / "model.mlir").read_text()
    cube = r.artifact.stats()["cube"]
    assert cube["mmad_bf16"] > 0 and cube["mmad_f32"] > 0  # experts in bf16, the router in f32
    q = rep["quantization_error"]
    assert q["token_rel_median"] <= q["bound_token_rel_median"]


def test_int8_weights_on_ascend(tmp_path):
    """--weights int8: codes widened to f32 by the vector cores, f32 cube GEMMs, scales after the dot
    products; verified with the f32 tolerance."""
    r = compile_onnx(EXAMPLE, str(tmp_path / "o"),
                     CompileOptions(target="ascend", weights="int8", symbol_sizes=(5, 1, 9)))
    assert r.report["verified"], r.report.get("failure")
    st = r.artifact.stats()
    assert st["launches"].get("moe_dequant_int8", 0) > 0 and st["cube"]["mmad_calls"] > 0


def test_int4_weights_on_ascend(tmp_path):
    """--weights int4 (groups of 32, with zero points): moe_dequant_int4 unpacks the nibbles arithmetically and
    applies the group scales and zero points in f32 (the reference's order) into the cube's f32 operands;
    verified with the f32 tolerance."""
    r = compile_onnx(EXAMPLE, str(tmp_path / "o"),
                     CompileOptions(target="ascend", weights="int4", group_size=32, zero_point=True,
                                    symbol_sizes=(5, 1)))
    assert r.report["verified"] and not r.report["ascend"]["host_ops"], r.report.get("failure")
    st = r.artifact.stats()
    assert st["launches"].get("moe_dequant_int4", 0) > 0 and st["cube"]["mmad_f32"] > 0


def test_unsupported_weight_modes_on_ascend(tmp_path):
    from moec.errors import UserInputError
    with pytest.raises(UserInputError, match="fp8 .* not implemented"):
        compile_onnx(EXAMPLE, str(tmp_path / "o"), CompileOptions(target="ascend", weights="fp8"))


@pytest.fixture(scope="module")
def w8a8_example(tmp_path_factory):
    out = tmp_path_factory.mktemp("w8a8") / "o"
    return out, compile_onnx(EXAMPLE, str(out), CompileOptions(target="ascend", weights="w8a8", symbol_sizes=(5, 1, 17)))


def _check_w8a8(r, out):
    from moec.tolerances import QUANT_VERIFY_TOLERANCE
    rep = r.report
    assert rep["verified"], rep.get("failure")
    assert rep["tolerance"] == {"f32": QUANT_VERIFY_TOLERANCE["w8a8"].to_json()}
    q = rep["quantization_error"]
    assert q["token_rel_median"] <= q["bound_token_rel_median"]
    plan = json.load(open(out / "ascend" / "plan.json"))
    ex = [s for s in plan["steps"] if s["op"] == "moe.experts"]
    assert ex and all(s["where"] == "npu" and s["cube_dtype"] == "i8" for s in ex)
    assert all(s["kernels"].count("moe_quant_rows_int8") == 2 and "moe_dequant_int8" not in s["kernels"] for s in ex)
    assert 'aq = "int8"' in (out / "model.mlir").read_text()
    st = r.artifact.stats()
    cube = st["cube_by_op"]["moe.experts"]  # both expert projections: int8 Mmads only
    assert cube["mmad_i8"] > 0 and cube["mmad_f32"] == cube["mmad_bf16"] == cube["mmad_f16"] == 0, cube
    assert st["launches"]["moe_quant_rows_int8"] > 0 and "moe_dequant_int8" not in st["launches"]
    return st


def test_w8a8_example_on_the_cube(w8a8_example):
    """--weights w8a8: each GEMM input row quantised to int8 on the vector cores (moe_quant_rows_int8), int8 x
    int8 grouped matmuls with int32 accumulation on the cube, scales applied in activation / scatter rows;
    verified against the w8a8 semantics with QUANT_VERIFY_TOLERANCE["w8a8"]."""
    out, r = w8a8_example
    st = _check_w8a8(r, out)
    assert st["cube"]["mmad_f32"] > 0  # the router's matmul stays f32


def test_w8a8_quant_rows_kernel_is_bit_exact(w8a8_example):
    """moe_quant_rows_int8 against quantize_rows_int8, bit for bit: an all-zero row, exact .5 ties (both
    directions of ties-to-even), rows wider than one UB chunk (two-pass max), tiny and huge magnitudes."""
    import numpy as np
    from moec.ir.ops.moe import quantize_rows_int8
    art = w8a8_example[1].artifact
    rng = np.random.default_rng(3)
    for W in (40, 3001):
        a = rng.normal(size=(9, W)).astype(np.float32)
        a[1] = 0.0
        a[2, :] = 0.0
        a[2, :8] = [127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, -3.5]  # s = 1: the quotients are the ties themselves
        a[3] *= 1e-30
        a[4] *= 1e30
        a[5, :] = -7.0
        a[6, W - 1] = 1000.0  # the max in the last chunk
        a[7] = np.float32(254.0) * np.round(a[7] * 4) / 8  # many quotients on k + 0.5 when max|row| hits 254
        a[7, 0] = 254.0
        q, s = art._quant_rows_int8(a)
        wq, ws = quantize_rows_int8(a)
        assert np.array_equal(q, wq), np.argwhere(q != wq)[:5]
        assert np.array_equal(s.view(np.uint32), ws.view(np.uint32))
    assert list(q[2, :8]) == [127, 0, 2, 2, 0, -2, 126, -4]


@pytest.mark.parametrize("model", ["qwen2moe_torchscript", "gptoss_torchscript", "llama4_torchscript"])
def test_w8a8_zoo_on_the_cube(model, tmp_path):
    """w8a8 with shared experts and their gate (Qwen2-MoE, the shared experts stay f32) and with an interleaved,
    clamped gate with biases (gpt-oss), and the routing weight applied to the input rows (Llama-4)."""
    src = next(z for z in ZOO if z.name == model).build()
    r = compile_onnx(src, str(tmp_path / "o"), CompileOptions(target="ascend", weights="w8a8", symbol_sizes=(5, 1)))
    _check_w8a8(r, tmp_path / "o")


# -- short reductions on the cube (issue 15 item 12: an f32 MatMul with K <= 8 found no tile and exited 3) ------
def _matmul_model(K, N, dtype):
    import numpy as np
    from onnx import helper

    from helpers import make_model
    W = np.random.default_rng(K * 31 + N).normal(size=(K, N)).astype(dtype)
    return make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", dtype, ["T", K])],
                      [("y", dtype, ["T", N])], {"w": W}, name=f"mm_k{K}")


@pytest.mark.parametrize("dtype,K", [("float32", K) for K in (1, 2, 3, 4, 5, 7, 8, 9, 13)] +
                         [("float16", K) for K in (1, 3, 8, 9, 17)])
def test_short_reduction_matmul_on_the_cube(dtype, K, tmp_path):
    """MatMul with K = 1..8 (one zero-padded fractal column: C0 = 8 for f32, 16 for f16) and odd K compiles,
    runs on the cube (grouped_matmul, no host fallback) and verifies against onnxruntime."""
    N = 5
    out = tmp_path / "o"
    r = compile_onnx(_matmul_model(K, N, dtype), str(out), CompileOptions(target="ascend", symbol_sizes=(5, 1, 3)))
    assert r.report["verified"] and r.report["oracle"] == "onnxruntime", r.report.get("failure")
    plan = json.load(open(out / "ascend" / "plan.json"))
    step = next(s for s in plan["steps"] if s["op"] == "moec.matmul")
    assert step["where"] == "npu" and step["kernels"] == ["grouped_matmul"], step
    c0 = 8 if dtype == "float32" else 16
    for tiles in step["tiles"].values():
        assert tiles["baseK"] % c0 == 0 and (K > c0 or tiles["baseK"] == c0), tiles
    st = r.artifact.stats()
    assert st["launches"].get("grouped_matmul", 0) >= 1 and st["cube"]["mmad_calls"] > 0, st


def test_cube_tiles_exist_for_every_short_shape():
    """choose_gmm_tiles finds a tile for every dtype and every small K, N and row count; k-tiles are whole
    fractal columns and fit L0A/L0B/L1/L0C."""
    from moec.codegen.ascend.plan import DTYPE_BYTES, _fits, _hw, choose_gmm_tiles
    from moec.targets.description import ascend_target
    desc = ascend_target("Ascend910B2")
    for dtype in ("f32", "f16", "bf16", "i8"):
        c0 = 32 // DTYPE_BYTES[dtype]
        for K in list(range(1, 34)) + [255, 4095]:
            for N, r in ((1, 1), (5, 3), (17, 300)):
                t = choose_gmm_tiles(desc, dtype, 2, r, N, K)["tiles"]
                assert t["baseK"] % c0 == 0, (dtype, K, t)
                assert _fits(_hw(desc), DTYPE_BYTES[dtype], t["baseM"], t["baseN"], t["baseK"], t["stepK"]), t


@pytest.mark.parametrize("K", [1, 3, 8])
def test_grouped_matmul_kernel_one_f32_column(gmm_lib, K):
    """baseK = 8 (one f32 fractal column) with K < 8: the zero padding of the k-tile adds nothing."""
    import numpy as np
    got, want, rc, err = _run_gmm(gmm_lib, "f32", [5, 0, 19, 1], 21, K, dict(baseM=16, baseN=16, baseK=8, stepK=1,
                                                                            dbL0C=2))
    assert rc == 0, err
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_short_reduction_experts_on_the_cube(tmp_path):
    """An f32 MoE layer with D = 4 (the up projection's K) and F = 5 (the down projection's K) on the cube."""
    import numpy as np

    from helpers import experts_module
    from moec.driver import build_module
    from moec.ir import run
    rng = np.random.default_rng(0)
    D, E, I, F = 4, 4, 10, 5
    wi = rng.normal(size=(E, I, D)).astype(np.float32)
    wo = rng.normal(size=(E, D, F)).astype(np.float32)
    m = experts_module("none", wi, wo, [], "T", D, E, 2)
    art = build_module(m, str(tmp_path / "o"), target="ascend")
    for T in (1, 5):
        x = rng.normal(size=(T, D)).astype(np.float32)
        lg = rng.normal(size=(T, E)).astype(np.float32)
        np.testing.assert_allclose(art([x, lg])[0], run(m, [x, lg])["y"], rtol=1e-5, atol=1e-5)
    assert art.stats()["launches"]["grouped_matmul"] == 4
