"""AMX tiles for the bf16 and w8a8 GEMMs (codegen/c/runtime/rt_amx.c, issue 17 item 1).

Where the build host has AMX (amx_tile, amx_bf16, amx_int8 in its cpuid flags) the runtime is built with
-mamx-* and MOEC_HAVE_AMX, and the bf16 / w8a8 prefill GEMMs (moe.experts' two phases, moec.linear_q) run
TDPBF16PS / TDPBUSD micro-kernels on the panels the AVX-512 kernels read.  These tests run the same kernels

  - "emulated": built against rt_amx_emu.h (a software model of the tile registers and instructions after
    Intel's ISA reference, which aborts on an access the tile configuration does not allow), on any AVX-512
    host: only the hardware is faked (the description's AMX flags swapped for -DMOEC_AMX_EMULATE), the kernels
    and their call sites are the real ones;
  - "hardware": the real tiles, only where this host has AMX (skipped elsewhere);

against numpy written here and against the same artifact with AMX switched off at run time (MOEC_AMX=0: the
AVX-512 kernels): bf16 within the f32-summation tolerance (another order of the same exact products), w8a8 bit
for bit (exact int32 sums, the same epilogue).  Edge shapes: rows 1, 2 (the decode kernels keep them), 15, 16,
17, 33, 70 (partial and whole 16-row tiles, several 32-row blocks); N < 16, 16 < N < 32 and several panels;
K = 32, 96 (whole tiles), 37 / 301 / 150 (a zero-padded K tail), 1024."""
import os
import platform
import shutil
import subprocess

import ml_dtypes
import numpy as np
import pytest

from helpers import experts_module

from moec.driver import build_module
from moec.ir import run
from moec.passes.quantize import QuantizeWeights, quantize_int8

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="AMX is x86")

AMX_ISA = ("amx_tile", "amx_bf16", "amx_int8")


def _host_has_amx():
    from moec.targets import description
    return all(f in description._cpu_flags() for f in AMX_ISA)


@pytest.fixture(params=["emulated", "hardware"])
def amx(request, monkeypatch):
    """The host description as on an AMX build host: emulated (faked cpuid flags, the emulator's define for the
    -mamx-* flags) or this host's own AMX."""
    from moec.targets import description
    flags = description._cpu_flags()
    if not all(f in flags for f in ("avx512f", "avx512bw", "avx512vl")):
        pytest.skip("the AMX kernels are built on the AVX-512 path; this host has no AVX-512")
    if request.param == "hardware":
        if not _host_has_amx():
            pytest.skip("this host has no AMX (amx_tile / amx_bf16 / amx_int8 not in /proc/cpuinfo): the real tiles "
                        "are tested on an AMX host (Sapphire Rapids or later)")
    else:
        monkeypatch.setattr(description, "_cpu_flags", lambda: tuple(f for f in flags if f not in AMX_ISA) + AMX_ISA)
        monkeypatch.setattr(description, "AMX_CFLAGS", ("-DMOEC_HAVE_AMX", "-DMOEC_AMX_EMULATE"))
    monkeypatch.delenv("MOEC_AMX", raising=False)
    monkeypatch.delenv("MOEC_AMX_EMU_REFUSE", raising=False)
    description.host_cpu.cache_clear()
    assert "-DMOEC_HAVE_AMX" in description.host_cpu().cflags
    yield request.param
    monkeypatch.undo()
    description.host_cpu.cache_clear()


def _rnd(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _pair(build, monkeypatch, off_env="MOEC_AMX", off_val="0"):
    """(artifact with AMX, the same artifact with AMX off at run time): the runtime decides when the library is
    loaded (build_module loads it), under the environment of that moment."""
    on = build("on")
    monkeypatch.setenv(off_env, off_val)
    off = build("off")
    monkeypatch.delenv(off_env)
    return on, off


DENSE = [(32, 40), (96, 13), (37, 45), (1024, 33), (301, 16)]
ROWS = (1, 2, 15, 16, 17, 33, 70)


@pytest.mark.parametrize("mode", ["bf16", "w8a8"])
def test_dense_linear_q_on_tiles(mode, amx, tmp_path, monkeypatch):
    """moec.linear_q (y = x @ W, z = x @ Wt^T + b) with bf16 / w8a8 weights on the AMX kernels: against numpy of
    the op's documented rounding, the op's reference, and the AVX-512 kernels (MOEC_AMX=0); at one or two rows
    the AVX-512 decode kernels run either way (bit for bit)."""
    from test_dense_quant import _module, _numpy_dense, _weights
    for i, (K, N) in enumerate(DENSE):
        ws = _weights(K, N, seed=i)
        w_nk, wt, b = np.array(ws["w"]).T.copy(), np.array(ws["wt"]), np.array(ws["b"])
        m = _module(K, N, ws)
        QuantizeWeights(mode, 0, False, scope="all", dense_modes=(mode,)).run(m)
        assert sum(o.name == "moec.linear_q" for o in m.main.ops) == 2
        on, off = _pair(lambda s: build_module(m, str(tmp_path / f"{s}{i}"), threads=2), monkeypatch)
        differs = False
        for M in ROWS:
            x = np.random.default_rng(M + 10 * i).standard_normal((M, K)).astype(np.float32)
            got, got_off = on([x]), off([x])
            ref = run(m, [x])
            for g, g0, wk, bias, r in ((got[0], got_off[0], w_nk, 0.0, ref["y"]), (got[1], got_off[1], wt, b, ref["z"])):
                want = _numpy_dense(mode, x, wk, 0, False) + bias
                assert g.shape == want.shape
                if mode == "bf16":
                    tol = 2e-6 * np.abs(want).max() * np.sqrt(K)
                    assert np.abs(g - want).max() <= tol and np.abs(g - r).max() <= tol, (amx, K, N, M)
                    assert np.abs(g - g0).max() <= tol
                    differs |= not np.array_equal(g, g0)
                else:  # exact int32 sums and tile_i8's epilogue: the AVX-512 kernel's floats
                    assert np.array_equal(g, g0), (amx, K, N, M)
                    np.testing.assert_allclose(g, want, rtol=1.6e-2, atol=1.6e-2 * np.abs(want).max())
                if M <= 2:
                    assert np.array_equal(g, g0), "decode rows must stay on the AVX-512 kernels"
        if mode == "bf16" and K >= 96:
            assert differs, "no result told the tile kernel's summation order from the AVX-512 kernel's: did AMX run?"


def _experts_bf16_numpy(x, logits, wi, wo, k):
    from test_bf16_kernels import _experts_numpy
    return _experts_numpy(x, logits, wi.astype(np.float32), wo.astype(np.float32), k)


@pytest.mark.parametrize("D,F", [(201, 150), (96, 64)])
def test_experts_bf16_on_tiles(D, F, amx, tmp_path, monkeypatch):
    """moe.experts with bf16 weights: phase 1 (32-row AMX calls, the H rows) and phase 3 (up to 8 rows a call,
    the per-thread output tile) on the tiles, D / F with and without a K tail, F not a multiple of the
    panel; token counts giving 1-2 rows per expert (decode kernels), ~10 (one partial tile) and ~40 (a 32-row
    block and a remainder)."""
    rng = np.random.default_rng(3)
    E, k = 4, 2
    wi = rng.standard_normal((E, 2 * F, D)).astype(np.float32).astype(ml_dtypes.bfloat16)
    wo = rng.standard_normal((E, D, F)).astype(np.float32).astype(ml_dtypes.bfloat16)
    m = experts_module("bf16", wi, wo, [], "T", D, E, k)
    on, off = _pair(lambda s: build_module(m, str(tmp_path / s), threads=2), monkeypatch)
    differs = False
    for T in (1, 2, 20, 80):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        got, got_off = on([x, logits])[0], off([x, logits])[0]
        want = _experts_bf16_numpy(x, logits, wi, wo, k)
        ref = run(m, [x, logits])["y"]
        tol = 4e-6 * np.abs(want).max() * np.sqrt(max(D, F))
        assert np.abs(got - want).max() <= tol and np.abs(got - ref).max() <= tol, (amx, T)
        assert np.abs(got - got_off).max() <= tol
        differs |= not np.array_equal(got, got_off)
        if T <= 2:
            assert np.array_equal(got, got_off)
    assert differs, "did AMX run?"


def test_experts_w8a8_on_tiles(amx, tmp_path, monkeypatch):
    """moe.experts w8a8 (int8 weights, per-token int8 activations) on TDPBUSD: bit for bit the AVX-512 VNNI
    kernel's results (exact int32 sums, the same dequantisation), K a multiple of 4 and not (D = 150: KP4 pads,
    the quad tail of 16), every row count."""
    rng = np.random.default_rng(7)
    E, k, D, F = 3, 2, 150, 96
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    (qi, si), (qo, so) = quantize_int8(w_in), quantize_int8(w_out)
    m = experts_module("int8", qi, qo, [si, so], "T", D, E, k, aq="int8")
    on, off = _pair(lambda s: build_module(m, str(tmp_path / s), threads=2), monkeypatch)
    for T in (1, 2, 17, 40, 90):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        got, got_off = on([x, logits])[0], off([x, logits])[0]
        assert np.array_equal(got, got_off), (amx, T)
        ref = run(m, [x, logits])["y"]
        np.testing.assert_allclose(got, ref, rtol=1.6e-2, atol=1.6e-2 * np.abs(ref).max())


def test_refused_tile_state_falls_back(tmp_path, monkeypatch):
    """When the kernel refuses the tile state (arch_prctl fails: emulated by MOEC_AMX_EMU_REFUSE), the artifact of
    an AMX build runs the AVX-512 kernels: its bf16 results equal those of an artifact with MOEC_AMX=0, bit for
    bit, where the tile kernels' differ (another summation order); nothing faults."""
    from moec.targets import description
    flags = description._cpu_flags()
    if not all(f in flags for f in ("avx512f", "avx512bw", "avx512vl")):
        pytest.skip("no AVX-512")
    monkeypatch.setattr(description, "_cpu_flags", lambda: tuple(f for f in flags if f not in AMX_ISA) + AMX_ISA)
    monkeypatch.setattr(description, "AMX_CFLAGS", ("-DMOEC_HAVE_AMX", "-DMOEC_AMX_EMULATE"))
    description.host_cpu.cache_clear()
    try:
        from test_dense_quant import _module, _weights
        K, N = 256, 40
        m = _module(K, N, _weights(K, N, seed=5))
        QuantizeWeights("bf16", 0, False, scope="all", dense_modes=("bf16",)).run(m)
        on, off = _pair(lambda s: build_module(m, str(tmp_path / s), threads=1), monkeypatch)
        monkeypatch.setenv("MOEC_AMX_EMU_REFUSE", "1")
        refused = build_module(m, str(tmp_path / "refused"), threads=1)
        monkeypatch.delenv("MOEC_AMX_EMU_REFUSE")
        x = np.random.default_rng(0).standard_normal((40, K)).astype(np.float32)
        a, b, c = on([x])[0], off([x])[0], refused([x])[0]
        assert np.array_equal(c, b)
        assert not np.array_equal(a, b)
    finally:
        description.host_cpu.cache_clear()


@pytest.mark.parametrize("flags,amx", [
    ("avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni amx_tile amx_bf16 amx_int8", True),
    ("avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni amx_tile amx_bf16", False),
    ("avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni", False),
    ("avx2 fma f16c amx_tile amx_bf16 amx_int8", False),
], ids=["amx", "no-amx-int8", "avx512-no-amx", "avx2-only"])
def test_amx_flags_follow_the_build_host(flags, amx, monkeypatch):
    """-mamx-tile -mamx-bf16 -mamx-int8 -DMOEC_HAVE_AMX exactly where the build host has all three AMX features on
    the AVX-512 path (cpuid flags faked); the runtime archive's cache key hashes the flags, so an AMX and a
    non-AMX build never share an archive."""
    from moec.targets import cpu, description
    monkeypatch.setattr(description, "_cpu_flags", lambda: tuple(flags.split()))
    description.host_cpu.cache_clear()
    try:
        d = description.host_cpu()
        got = [f for f in d.cflags if "amx" in f.lower()]
        assert got == (list(description.AMX_CFLAGS) if amx else []), d.cflags
        assert ("-mamx-int8" in " ".join(cpu.cflags_for(d))) == amx
    finally:
        description.host_cpu.cache_clear()


def test_real_amx_runtime_compiles(tmp_path):
    """The runtime's AMX code builds with the real intrinsics (-mamx-* -DMOEC_HAVE_AMX, the flags an AMX build host
    gets) on any host whose compiler knows them (nothing runs here): rt_amx.c holds the tile instructions (its
    callers, compiled with MOEC_HAVE_AMX, are built by every emulated test); the archive's cache key differs from
    the plain build's."""
    from dataclasses import replace

    from moec.targets import cpu, description
    h = description.host_cpu()
    if h.vector_bits != 512:
        pytest.skip("the AMX kernels are built on the AVX-512 path")
    probe = subprocess.run([cpu.cc(), "-mamx-tile", "-mamx-bf16", "-mamx-int8", "-x", "c", "-c", "-o", os.devnull, "-"],
                           input="int x;", capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{cpu.cc()} does not know -mamx-tile")
    plain = replace(h, cflags=tuple(f for f in h.cflags if f not in description.AMX_CFLAGS))
    real = replace(h, cflags=plain.cflags + description.AMX_CFLAGS)
    assert cpu.runtime_key(real) != cpu.runtime_key(plain)
    procs = [(src, subprocess.Popen([cpu.cc(), *cpu.cflags_for(real), "-I", cpu.RUNTIME_DIR, "-c",
                                     os.path.join(cpu.RUNTIME_DIR, src), "-o", str(tmp_path / (src + ".o"))],
                                    stderr=subprocess.PIPE, text=True)) for src in ("rt_amx.c",)]
    for src, p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, (src, err[-3000:])
    if shutil.which("objdump"):
        dis = subprocess.run(["objdump", "-d", str(tmp_path / "rt_amx.c.o")], capture_output=True, text=True).stdout
        for ins in ("ldtilecfg", "sttilecfg", "tdpbf16ps", "tdpbusd", "tileloadd", "tilestored", "tilezero"):
            assert ins in dis, ins


@pytest.mark.parametrize("how", ["emulated", "hardware"])
def test_kernels_directly_under_asan(how, tmp_path):
    """tests/amx_kernels/amx_check.c calls moec_amx_bf16 / moec_amx_bf16_gs / moec_amx_i8 over rows 1-70 (1, 2, 3, 15, 16, 17, 31, 32,
    33, 48, 70), K 1-301 (whole tiles, every tail), 1-32 columns, with every buffer allocated to its exact size
    and built with ASan / UBSan: no access outside A, B or C (the tile configuration's rows, the padded K tail),
    bf16 (with group scales: groups of 8, 16, 32 pairs, the whole row) within the f32-summation bound of scalar
    C, w8a8 bit for bit.  The emulator also aborts on any tile
    access its configuration does not allow."""
    from moec.targets import cpu, description
    if "avx512f" not in description._cpu_flags():
        pytest.skip("no AVX-512")
    if how == "hardware":
        if not _host_has_amx():
            pytest.skip("this host has no AMX (amx_tile / amx_bf16 / amx_int8 not in /proc/cpuinfo)")
        defs = list(description.AMX_CFLAGS)
    else:
        defs = ["-DMOEC_HAVE_AMX", "-DMOEC_AMX_EMULATE"]
    here = os.path.dirname(os.path.abspath(__file__))
    exe = str(tmp_path / "amx_check")
    b = subprocess.run([cpu.cc(), "-O1", "-g", "-std=gnu11", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                        "-fno-omit-frame-pointer", "-mavx512f", "-mfma", *defs, "-I", cpu.RUNTIME_DIR,
                        os.path.join(cpu.RUNTIME_DIR, "rt_amx.c"), os.path.join(here, "amx_kernels", "amx_check.c"),
                        "-o", exe, "-lm", "-pthread"], capture_output=True, text=True)
    if b.returncode != 0 and "sanitiz" in b.stderr:
        pytest.skip("no sanitizer runtime: " + b.stderr[-300:])
    assert b.returncode == 0, b.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("MOEC_AMX", "MOEC_AMX_EMU_REFUSE", "LD_PRELOAD")}
    r = subprocess.run([exe], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.startswith("ok "), (r.stdout[-2000:], r.stderr[-3000:])
    assert int(r.stdout.split()[1]) == 3 * 11 * 15 * 7
    # the run-time switch: MOEC_AMX=0 (and a refused tile state, emulated) leave the kernels off
    for var, val in ([("MOEC_AMX", "0")] + ([("MOEC_AMX_EMU_REFUSE", "1")] if how == "emulated" else [])):
        r = subprocess.run([exe], capture_output=True, text=True, timeout=60, env={**env, var: val})
        assert r.returncode == 3 and r.stdout.startswith("amx off: off: "), (var, r.stdout)


@pytest.mark.parametrize("weights", ["bf16", "w8a8"])
def test_compile_verifies_and_reports_the_tiles(weights, amx, tmp_path, capsys):
    """A whole compile on an AMX build host (the example model, a 48-token prefill among the verified sizes):
    verified against the reference with the tile kernels, report.json's "amx" says they run, and `moec compile`
    prints it."""
    from moec.driver import CompileOptions, compile_onnx
    here = os.path.dirname(os.path.abspath(__file__))
    example = os.path.join(here, "..", "examples", "mixtral_like.onnx")
    r = compile_onnx(example, str(tmp_path / "out"), CompileOptions(weights=weights, symbol_sizes=(5, 1, 48)))
    rep = r.report
    assert rep["verified"], rep.get("failure")
    want = "on (emulated tiles)" if amx == "emulated" else "on"
    assert rep["amx"] == {"built": True, "run_time": want, "kernels": rep["amx"]["kernels"]}
    from moec.cli import main
    assert main(["compile", example, "-o", str(tmp_path / "cli"), "--weights", weights]) in (0, None)
    assert f"AMX tiles for the bf16 / w8a8 GEMMs: {want}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["bf16", "w8a8"])
def test_model_on_tiles_is_sanitizer_clean(weights, amx, tmp_path):
    """A MoE model (D = 40, F = 72, 4 experts) with bf16 / w8a8 experts in the ASan / UBSan harness on the tile
    kernels: 1, 3, 70 and 150 tokens (experts with 1-2 rows, partial tiles, 32-row blocks in both phases and
    the 32-row output tile of phase 3) equal the in-process artifact's outputs, no sanitizer report."""
    import sys
    from moec.driver import CompileOptions, compile_onnx
    from moec.targets.cpu_harness import build_harness, run_harness
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    from build_mixtral_like import build
    model = build(hidden=40, ffn=72, experts=4, top_k=2)
    out = str(tmp_path / "a")
    r = compile_onnx(model, out, CompileOptions(weights=weights, symbol_sizes=(70, 3)))
    assert r.report["verified"] and r.report["amx"]["run_time"].startswith("on")
    exe = build_harness(out, sanitize=True)
    from moec.targets.cpu_backend import CpuArtifact
    art = CpuArtifact(out, threads=2)
    rng = np.random.default_rng(1)
    for T in (1, 3, 70, 150):
        x = rng.standard_normal((T, 40)).astype(np.float32)
        got = run_harness(exe, out, [x], 1)
        np.testing.assert_allclose(got[0], art([x])[0], rtol=1e-4, atol=1e-5 * np.abs(got[0]).max())


@pytest.mark.parametrize("has_amx", [True, False])
def test_bench_probes_name_the_tiles(has_amx, monkeypatch):
    """The bf16 / int8 GEMM probes (torch, oneDNN) say when they run on this host's AMX tiles (cpuid flags faked):
    on an AMX host they are the tiles' rate, the ceiling moec's tile kernels are put against."""
    pytest.importorskip("torch")
    from moec.bench import GemmProbe
    from moec.targets import description
    flags = tuple(f for f in description._cpu_flags() if f not in AMX_ISA) + (AMX_ISA if has_amx else ())
    monkeypatch.setattr(description, "_cpu_flags", lambda: flags)
    description.host_cpu.cache_clear()
    try:
        for dt in ("bf16", "int8"):
            assert ("on AMX tiles" in GemmProbe(dt, 1, n=16).how) == has_amx
        assert "AMX" not in GemmProbe("f32", 1, n=16).how
    finally:
        description.host_cpu.cache_clear()


def test_bf16_activations_with_group_scales_on_tiles(amx, tmp_path, monkeypatch):
    """int8_bf16 / int4_bf16 linear_q (tile_wq_bf16: the bf16 products per scale group, each group's f32 sum times
    its scales) on moec_amx_bf16_gs: int8 with an odd K (one group of 34 pairs), int4 groups of 32 (16 pairs)
    and 6 (3 pairs, zero points), against test_wq_bf16's numpy of the exact products, at rows 1-64; the
    results differ from the AVX-512 kernel's in the last bits (the tiles ran) but not beyond the tolerance."""
    from test_wq_bf16 import DENSE_CASES, _check_dense, _dense_module
    _check_dense("native", tmp_path, [DENSE_CASES[i] for i in (0, 1, 5)], (1, 2, 3, 9, 17, 64))
    # (int8 codes times bf16 values of exponents far apart: f32 sums that round, so the summation order shows;
    # with x ~ N(0, 1) the products are multiples of ~2^-10 and their sums mostly exact in f32)
    m, _ = _dense_module("int8_bf16", 256, 40, 0, False)
    on, off = _pair(lambda s: build_module(m, str(tmp_path / s), threads=1), monkeypatch)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 256)) * 2.0 ** rng.integers(-12, 12, (40, 256))).astype(np.float32)
    a, b = on([x])[0], off([x])[0]
    assert not np.array_equal(a, b)
    assert (np.abs(a - b) <= 2e-6 * np.abs(b).max(1, keepdims=True) * np.sqrt(256)).all()


@pytest.mark.parametrize("wq,G,zp", [("int4", 32, False), ("int8", 0, False)])
def test_experts_bf16_activations_on_tiles(wq, G, zp, amx, tmp_path, monkeypatch):
    """moe.experts int4_bf16 / int8_bf16: both phases' tile_wq_bf16 calls (32 rows a call on the tiles) at token
    counts giving 1-2, ~10 and ~40-70 rows per expert, against test_wq_bf16's numpy and the AVX-512 kernels."""
    from test_wq_bf16 import _experts, _experts_numpy
    D, F = 128, 64
    m, w_in, w_out = _experts(wq, D, F, G, zp)
    on, off = _pair(lambda s: build_module(m, str(tmp_path / s), threads=2), monkeypatch)
    rng = np.random.default_rng(5)
    T = 100
    x = rng.standard_normal((T, D)).astype(np.float32)
    logits = rng.standard_normal((T, 4)).astype(np.float32)
    want = _experts_numpy(wq, x, logits, G, zp, w_in, w_out)
    scale = np.abs(want).max()
    for n in (1, 2, 20, T):
        got, got_off = on([x[:n], logits[:n]])[0], off([x[:n], logits[:n]])[0]
        np.testing.assert_allclose(got, want[:n], rtol=1.6e-2, atol=1.6e-2 * scale)
        assert np.median(np.abs(got - want[:n])) < 2e-6 * scale
        assert np.abs(got - got_off).max() <= 1.6e-2 * scale and np.median(np.abs(got - got_off)) < 2e-6 * scale
