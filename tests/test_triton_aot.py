"""The Triton kernels compiled for real NVIDIA GPUs, without one: Triton's NVIDIA pipeline down to
ptxas (shipped with triton) for sm_90 (H100/H200) and sm_80 (A100).  CI has no GPU, so this is what
catches a kernel change that makes a shipped tile configuration overflow shared memory (the launch
would fail on the GPU), spill registers, or lose its tensor-core or fp8 instructions."""
import json
import os

import pytest

pytest.importorskip("torch")
triton = pytest.importorskip("triton")

from moec.codegen.triton.aot import aot_report_subprocess  # noqa: E402
from moec.codegen.triton.tuning import CANDIDATES  # noqa: E402


def _has_nvidia_backend():
    import importlib.util
    try:
        return importlib.util.find_spec("triton.backends.nvidia") is not None
    except ModuleNotFoundError:
        return False


pytestmark = pytest.mark.skipif(not _has_nvidia_backend(), reason="this triton has no NVIDIA backend")


def _by(rep):
    return {(r["key"], r["kernel"]): r for r in rep["kernels"]}


# The default tests' reports are made by one compile-only child process for the whole module: ``python -m
# moec.codegen.triton.aot --json <args>`` run in turn, for the jobs of the tests selected in this session, through
# the module's own ``main`` (each report as its own child makes it; one child per test, each starting torch and
# triton and warming Triton's compiler again, made the file ~46 CPU s instead of ~23).  The -m slow tests start
# their own child (aot_report_subprocess).
_JOBS = {}  # test name -> {job name: the aot command line's arguments}


def _jobs(**jobs):
    def mark(f):
        _JOBS[f.__name__] = jobs
        return f
    return mark


_CHILD = """
import contextlib, io, json, sys
from moec.codegen.triton import aot
out = {}
for name, args in json.loads(sys.stdin.read()).items():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = aot.main(["--json", *args])
    if rc not in (0, 1):
        raise SystemExit(f"{name}: moec.codegen.triton.aot exited {rc}")
    out[name] = json.loads(buf.getvalue())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def aot(request):
    """The reports of the jobs of this module's selected tests (one child), by job name."""
    import subprocess
    import sys
    from moec.codegen.triton.aot import _aot_env
    names = {i.originalname for i in request.session.items if i.module is request.module}
    jobs = {k: v for t in sorted(names & set(_JOBS)) for k, v in _JOBS[t].items()}
    p = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(jobs), capture_output=True, text=True,
                       env=_aot_env(), timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"the moec.codegen.triton.aot child failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


@_jobs(shipped=["--arch", "90"])
def test_shipped_h100_configs_fit_sm90(aot):
    """Every tile configuration moec ships (configs/*.json), would try when autotuning, or would search
    (tune_moe's space: its heaviest tiles per regime, BLOCK_M and warp count, GROUP_SIZE_M up to 32, split-K
    up to 8) fits the H100's shared memory and keeps its registers (<= 64 spilled bytes); big tiles use
    wgmma.  The grouped GEMMs walk their tiles in GROUP_SIZE_M order (one 1-D grid), compiled here with the
    configurations' own group sizes and the down projection's own warps and stages."""
    rep = aot["shipped"]
    ks = rep["kernels"]
    assert len(ks) >= 30
    keys = {r["key"] for r in ks}
    assert any(k.startswith("space") for k in keys) and any("device_name=NVIDIA_H100" in k for k in keys)
    assert {r["config"].get("GROUP_SIZE_M1") for r in ks} >= {1, 8, 32}
    over = [(r["key"], r["kernel"], r["shared_bytes"]) for r in ks if r["shared_bytes"] > r["smem_limit"]]
    assert not over, f"would fail to launch on sm_90: {over}"
    spills = [(r["key"], r["kernel"], r["spill_bytes"]) for r in ks if r["spill_bytes"] > 64]
    assert not spills, spills
    gemms = [r for r in ks if r["kernel"] in ("moe_gemm1_kernel", "moe_gemm2_kernel")]
    for r in gemms:
        # swap-AB: the weight tile (BLOCK_N >= 64 rows) is wgmma's M operand, so few-token tiles get wgmma too
        assert r["mma"] == ("wgmma" if r["config"]["BLOCK_M"] >= 64 or r["variant"]["SWAP_AB"] else "mma.sync"), r
        assert r["variant"]["SWAP_AB"] == (r["config"]["BLOCK_M"] < 64 and (
            r["config"]["BLOCK_N1"] if r["kernel"] == "moe_gemm1_kernel" else r["config"]["BLOCK_N2"]) >= 64
            if "SWAP_AB1" not in r["config"] else r["variant"]["SWAP_AB"]), r
        # sm_90: weights (and the down projection's sorted activations) through TMA descriptors
        assert r["variant"]["TMA"] and r["tma"], r
        if r["kernel"] == "moe_gemm1_kernel":
            assert 16 in r["cp_async_bytes"], "the gathered token rows stream as 16-byte cp.async vectors"
    assert {r["variant"]["SWAP_AB"] for r in gemms} == {True, False}
    assert any(r["variant"]["PERSISTENT"] for r in gemms), "the space's persistent (tile queue) variants compile"
    split = [r for r in ks if r["kernel"] in ("moe_act_kernel", "moe_down_epilogue_kernel")]
    assert split, "the split-K candidates compile their epilogue kernels"


def _int4_args(match):
    return ["--arch", "90", "--weights", "int4", "--group", "64", "--match", match]


def _int4_fits(i4):
    assert i4["kernels"] and not [r for r in i4["kernels"] if r["shared_bytes"] > r["smem_limit"]]
    worst = max(r["spill_bytes"] for r in i4["kernels"])
    assert worst <= 128, worst


@_jobs(int4=_int4_args("candidate1"), fp8=["--arch", "90", "--weights", "fp8", "--match", "candidate16"])
def test_int4_and_fp8_lower_for_sm90(aot):
    """int4 (group 64): each packed byte loaded once and one scale per row and group, so no tile
    overflows shared memory and spills stay small (the per-element scale gather it replaced spilled
    up to 40 KB and overflowed five configurations); fp8 uses the native e4m3 conversion.  By default
    the int4 candidates 1 and 10-16 (every large tile); test_int4_lowers_for_sm90_in_every_candidate (slow)
    compiles them all.  fp8's conversion: in one large tile (candidate16; w8a8 in
    test_w8a8_dots_are_fp8_wgmma_on_sm90)."""
    _int4_fits(aot["int4"])
    f8 = aot["fp8"]
    gemms = [r for r in f8["kernels"] if r["kernel"].startswith("moe_gemm")]
    assert gemms and all(r["fp8_convert"] for r in gemms)


@pytest.mark.slow
def test_int4_lowers_for_sm90_in_every_candidate():
    _int4_fits(aot_report_subprocess(_int4_args("candidate")))


@_jobs(align=["--arch", "90", "--align"])
def test_align_kernel_fits_one_program_at_its_bounds(aot):
    """The one-program align kernel is used only where its [slots, experts] and [slots, slots]
    comparisons fit the registers of one program (<= 256 spilled bytes at the largest accepted shapes)."""
    rep = aot["align"]
    assert len(rep["kernels"]) == 5 and rep["bad"] == 0, [(r["key"], r["spill_bytes"]) for r in rep["kernels"]]


def _combine_args(*args):
    return ["--arch", "90", "--combine", *args]


def _combine_fits(rep):
    # with split-K the down projection stores plain partials and its epilogue kernel does the combine's adds
    split = [r for r in rep["kernels"] if r["kernel"] == "moe_gemm2_kernel" and r["config"].get("SPLIT_K2", 1) > 1]
    assert not any(r["f32_atomic_add"] for r in split), [r["config"] for r in split]
    down = [r for r in rep["kernels"] if r["kernel"] == "moe_down_epilogue_kernel"
            or (r["kernel"] == "moe_gemm2_kernel" and r["config"].get("SPLIT_K2", 1) == 1)]
    assert down and all(r["f32_atomic_add"] for r in down) and not any(r["problems"] for r in down)
    if split:
        assert any(r["kernel"] == "moe_down_epilogue_kernel" for r in down)
    # relaxed order (red.global.gpu.relaxed.add): atomicity only, no acq_rel fence per add
    assert all(r["atomic_sem"] == ["relaxed"] for r in down), [r["atomic_sem"] for r in down]
    assert not any(r["f32_atomic_add"] for r in rep["kernels"] if r["kernel"] == "moe_gemm1_kernel")


@_jobs(combine=_combine_args("--configs", json.dumps([CANDIDATES[1], CANDIDATES[16]])))
def test_fused_combine_uses_native_f32_atomics_on_sm90(aot):
    """The down projection with the combine fused adds into the f32 output with the GPU's own f32
    atomic (red/atom .add.f32), within shared memory and without spills: by default a decode candidate (1)
    and a large tile (16); test_fused_combine_in_candidates_1_and_10_to_16 (slow) compiles the 8."""
    _combine_fits(aot["combine"])


@pytest.mark.slow
def test_fused_combine_in_candidates_1_and_10_to_16():
    _combine_fits(aot_report_subprocess(_combine_args("--match", "candidate1")))


@pytest.mark.slow
def test_fused_combine_with_split_k_adds_in_the_epilogue():
    """Split-K's down projection (candidate 7, SPLIT_K2 = 4) with the combine fused: plain partial stores, the
    epilogue's relaxed f32 atomics."""
    _combine_fits(aot_report_subprocess(_combine_args("--configs", json.dumps([CANDIDATES[7]]))))


@_jobs(generic=["--arch", "90", "--generic"])
def test_generic_kernels_lower_for_sm90(aot):
    """The ordinary ops' kernels as launched for bf16 on the GPU (the matmul with and without the Gemm
    bias epilogue, elementwise, softmax), with their round-to-nearest-even bf16 stores: they compile
    through ptxas for sm_90 without spills, and the matmul runs on wgmma."""
    rep = aot["generic"]
    ks = {r["key"]: r for r in rep["kernels"]}
    assert set(ks) == {"matmul bf16", "matmul + bias bf16", "binary add bf16", "unary exp bf16", "softmax 4096 bf16",
                       "gemv split-K bf16", "split-K sum bf16"}
    assert all(r["spill_bytes"] == 0 for r in ks.values()), ks
    assert ks["matmul bf16"]["mma"] == ks["matmul + bias bf16"]["mma"] == "wgmma"


@_jobs(sm80_space=["--arch", "80", "--match", "space", "--ragged-k"])
def test_search_space_fits_sm80(aot):
    """The tile search's space as pruned for an A100 (its shared memory, mma.sync's accumulator registers:
    tune_moe.fits_registers) compiles for sm_80 without spills, within shared memory, on mma.sync -- with the
    masked reduction (D, F not multiples of BLOCK_K; the sm_90 checks compile the even-K specialisation)."""
    rep = aot["sm80_space"]
    ks = rep["kernels"]
    assert len(ks) >= 10 and rep["bad"] == 0, [(r["key"], r["kernel"], r["problems"]) for r in ks if r["problems"]]
    assert all(r["mma"] == "mma.sync" for r in ks if r["kernel"].startswith("moe_gemm"))
    assert not any(r["tma"] or r["variant"]["TMA"] for r in ks if r["kernel"].startswith("moe_gemm")), "no TMA on sm_80"
    assert any(r["variant"]["SWAP_AB"] for r in ks if r["kernel"].startswith("moe_gemm"))
    assert {r["config"]["BLOCK_M"] for r in ks} >= {16, 64, 128}
    assert not any(r["variant"]["EVEN_K"] for r in ks if r["kernel"].startswith("moe_gemm")), "the masked reduction"


@_jobs(w8a8=["--arch", "90", "--weights", "fp8", "--activations", "fp8", "--combine", "--configs", json.dumps([
    dict(BLOCK_M=16, BLOCK_N1=64, BLOCK_K1=128, BLOCK_N2=64, BLOCK_K2=128, num_warps=4, num_stages=4),
    dict(BLOCK_M=128, BLOCK_N1=64, BLOCK_K1=128, BLOCK_N2=128, BLOCK_K2=128, num_warps=8, num_stages=3,
         PERSISTENT1=1, PERSISTENT2=1)])])
def test_w8a8_dots_are_fp8_wgmma_on_sm90(aot):
    """fp8 weights and fp8 activations (w8a8): both grouped GEMMs multiply e4m3 x e4m3 on wgmma (f32
    accumulation) -- 64-row tiles, and 16-row tiles through swap-AB --, with TMA, the combine fused too,
    within shared memory and without spills."""
    rep = aot["w8a8"]
    gemms = [r for r in rep["kernels"] if r["kernel"].startswith("moe_gemm")]
    assert len(gemms) == 4 and rep["bad"] == 0, [(r["key"], r["problems"]) for r in rep["kernels"]]
    for r in gemms:
        assert r["mma"] == "wgmma" and r["mma_types"] == ["e4m3.e4m3"] and r["tma"] and r["variant"]["A8"], r
    assert {r["variant"]["SWAP_AB"] for r in gemms} == {True, False}


@pytest.mark.slow
def test_pointer_variants_still_lower_for_sm90():
    """The variants the runtime can be told to use on sm_90 besides its defaults: no TMA (pointer loads:
    cp.async, no cp.async.bulk.tensor), no swap-AB at 16 rows (mma.sync), and a persistent tile queue."""
    cfgs = [dict(BLOCK_M=16, BLOCK_N1=64, BLOCK_K1=128, BLOCK_N2=64, BLOCK_K2=128, num_warps=4, num_stages=4, TMA=0,
                 SWAP_AB1=0, SWAP_AB2=1, PERSISTENT1=2, PERSISTENT2=0)]
    rep = aot_report_subprocess(["--arch", "90", "--ragged-k", "--configs", json.dumps(cfgs)])
    by = {r["kernel"]: r for r in rep["kernels"]}
    assert rep["bad"] == 0 and set(by) == {"moe_gemm1_kernel", "moe_gemm2_kernel"}
    g1, g2 = by["moe_gemm1_kernel"], by["moe_gemm2_kernel"]
    assert not g1["tma"] and not g2["tma"] and 16 in g1["cp_async_bytes"] + g2["cp_async_bytes"]
    assert g1["mma"] == "mma.sync" and g1["variant"]["PERSISTENT"] and g2["mma"] == "wgmma" and g2["variant"]["SWAP_AB"]
