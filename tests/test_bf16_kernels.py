"""bf16 weights on the CPU (issue 17): the dense linear layers (moec.linear_q) and the routed experts, every row
count, on every build path, against numpy written here.

Mode bf16's semantics (ir/ops/moe.py, passes/quantize.py): the weights are stored as bfloat16 and the GEMM
inputs (the layer's activations) are rounded to bfloat16 too (round to nearest even), the products summed in
f32.  That is what AVX512_BF16's vdpbf16ps computes: bf16 x bf16 products (exact in f32) added in f32.  (The
instruction also treats bf16 subnormals as zero and flushes subnormal results, DAZ/FTZ: values below 2^-126,
far under any tolerance here.)  rt_moe_f32.c runs it on the cached pair panels for every row count (the
decode GEMV included: one or two rows unrolled, the panel streamed); builds without AVX512_BF16 widen the
bf16 weights to f32 in registers (AVX-512F, AVX2, plain C) and multiply by the same rounded activations."""
import ml_dtypes
import numpy as np
import pytest

from helpers import experts_module

from moec.driver import build_module
from moec.ir import run
from moec.passes.quantize import QuantizeWeights


def _rnd(a):
    return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _arch(arch, request):
    if arch == "avx512-no-bf16":
        request.getfixturevalue("no_avx512_bf16")
        return "native"
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    return arch


# K odd (a pair padded with a zero), K = 1, N not a multiple of the 32-column panel, N = 1, a longer odd K (301)
DENSE_CASES = [(37, 45), (64, 1), (1, 33), (301, 40)]
# rows: the decode kernels (1, 2), a partial 4-row tile (3), a partial 8-row tile (5), several tiles (19, 70)
ROWS = (1, 2, 3, 5, 19, 70)


def _dense(K, N, seed):
    from test_dense_quant import _module, _weights
    ws = _weights(K, N, seed)
    f32 = {n: np.array(ws[n]) for n in ("w", "wt", "b")}  # (before quantisation replaces them)
    m = _module(K, N, ws)
    QuantizeWeights("bf16", 0, False, scope="all", dense_modes=("bf16",)).run(m)
    assert sum(o.name == "moec.linear_q" for o in m.main.ops) == 2
    return m, f32


@pytest.mark.parametrize("arch", ["native", "avx512-no-bf16", "avx2", "generic"])
def test_dense_bf16_every_path_against_numpy(arch, tmp_path, request):
    """y = x @ W and z = x @ Wt^T + b with bf16 weights: float64 numpy of the bf16 weights and the bf16-rounded
    x, and the op's reference, at each row count; the rounding of x is visible (the kernel does not multiply
    the f32 activations)."""
    arch = _arch(arch, request)
    for i, (K, N) in enumerate(DENSE_CASES):
        m, ws = _dense(K, N, seed=i)
        art = build_module(m, str(tmp_path / f"d{i}"), arch=arch, threads=2)
        w, wt, b = (ws[n] for n in ("w", "wt", "b"))
        for M in ROWS:
            x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
            y, z = art([x])
            ref = run(m, [x])
            for got, wk, bias, r in ((y, w.T, 0.0, ref["y"]), (z, wt, b, ref["z"])):
                want = _rnd(x) @ _rnd(wk).T + bias
                exact = x.astype(np.float64) @ _rnd(wk).T + bias  # (activations not rounded)
                tol = 2e-6 * np.abs(want).max() * np.sqrt(K)
                assert got.shape == want.shape
                assert np.abs(got - want).max() <= tol and np.abs(got - r).max() <= tol, (arch, K, N, M)
                if K > 1:
                    assert np.abs(exact - want).max() > 20 * tol, "case does not tell the rounding of x apart"


def test_dense_bf16_nan_row_and_tiny_values(tmp_path):
    """A NaN in one row gives NaN in that row only (to_pairs must not turn a NaN into an infinity), at decode
    and prefill row counts; a row of zeros gives the bias."""
    K, N = 40, 35
    m, ws = _dense(K, N, seed=7)
    art = build_module(m, str(tmp_path / "d"), arch="native", threads=2)
    for M in (1, 2, 9):
        x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
        x[0, 3] = np.uint32(0x7F800001).view(np.float32)  # a NaN whose payload is in the low bits only
        if M > 1:
            x[1] = 0.0
        y, z = art([x])
        assert np.isnan(y[0]).all() and np.isnan(z[0]).all()
        if M > 1:
            assert np.array_equal(y[1], np.zeros(N, np.float32)) and np.array_equal(z[1], ws["b"])
            assert np.isfinite(y[1:]).all() and np.isfinite(z[1:]).all()


def _experts_numpy(x, logits, wi, wo, k):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    F = wo.shape[2]
    y = np.zeros((len(x), wo.shape[1]))
    for t in range(len(x)):
        for e in top[t]:
            h = wi[e].astype(np.float64) @ _rnd(x[t])
            g, u = h[:F], h[F:]
            a = _rnd((g / (1 + np.exp(-g)) * u).astype(np.float32))
            y[t] += p[t, e] * (wo[e].astype(np.float64) @ a)
    return y


EXPERT_PATHS = [pytest.param("native", 45, 38), pytest.param("native", 201, 150),
                pytest.param("avx512-no-bf16", 201, 150, marks=pytest.mark.slow),
                pytest.param("avx2", 45, 38, marks=pytest.mark.slow), pytest.param("generic", 201, 150)]


@pytest.mark.parametrize("arch,D,F", EXPERT_PATHS)
def test_experts_bf16_every_row_count_against_numpy(arch, D, F, tmp_path, request):
    """moe.experts with bf16 weights, D odd and F not a multiple of the panel: T = 1 and 2 (one or two rows per
    expert: the decode kernels), 6 and 40 (partial and several row tiles: ~20 rows per expert), against numpy
    written here."""
    arch = _arch(arch, request)
    rng = np.random.default_rng(3)
    E, k = 4, 2
    wi = rng.standard_normal((E, 2 * F, D)).astype(np.float32).astype(ml_dtypes.bfloat16)
    wo = rng.standard_normal((E, D, F)).astype(np.float32).astype(ml_dtypes.bfloat16)
    m = experts_module("bf16", wi, wo, [], "T", D, E, k)
    art = build_module(m, str(tmp_path / "x"), arch=arch, threads=2)
    for T in (1, 2, 6, 40):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        got = art([x, logits])[0]
        want = _experts_numpy(x, logits, wi.astype(np.float32), wo.astype(np.float32), k)
        ref = run(m, [x, logits])["y"]
        tol = 4e-6 * np.abs(want).max() * np.sqrt(max(D, F))
        assert np.abs(got - want).max() <= tol and np.abs(got - ref).max() <= tol, (arch, T)


@pytest.mark.parametrize("arch", ["native", "generic"])
def test_activation_rounding_is_to_nearest_even(arch, tmp_path):
    """Every activation exactly halfway between two bf16 values (ties: to even), with the 16-lane rounding and
    its scalar tail (K = 40), decode and prefill rows: the outputs equal numpy's with ml_dtypes' rounding, and
    rounding ties away from zero instead would be visible."""
    K, N = 40, 33
    m, ws = _dense(K, N, seed=3)
    art = build_module(m, str(tmp_path / "d"), arch=arch, threads=1)
    rng = np.random.default_rng(0)
    for M in (1, 2, 9):
        odd = rng.integers(0, 64, (M, K)) * 2 + 1               # 1 + odd / 256: a tie at bf16's 8 bits
        x = ((1 + odd / 256.0) * rng.choice([-1, 1], (M, K)) * 2.0 ** rng.integers(-3, 4, (M, K))).astype(np.float32)
        assert np.all(_rnd(x) != x)
        y, _ = art([x])
        want = _rnd(x) @ _rnd(ws["w"].T).T
        away = (np.sign(x) * (np.abs(x.astype(np.float64)) + np.abs(x) / 512.0)).astype(np.float32)  # ties away
        wrong = _rnd(away) @ _rnd(ws["w"].T).T
        tol = 2e-6 * np.abs(want).max() * np.sqrt(K)
        assert np.abs(y - want).max() <= tol, (arch, M)
        assert np.abs(wrong - want).max() > 50 * tol
