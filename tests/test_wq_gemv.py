"""Weight-only int8 / int4 decode GEMVs (issue 17): at one or two rows moec.linear_q and moe.experts stream the
narrow weight rows (rt_moe_f32.c gemv_w8, gemv_w4).  Two X rows share each widened weight vector; on AVX-512,
int4 rows whose K is whole 128-weight blocks with groups of 32, 64 or a multiple of 128 take the 64-byte path
(gemv_w4_wide: x prepared per block by prep_x4, scale and zero point out of the inner loop for groups of 32 /
64), the others the per-32-chunk table path.  Checked at their edges -- K not a multiple of 16 / 64 / 128, groups
32 / 64 / 128 / 256 / whole row / 96 (not a block divisor), zero points, one and two rows, columns not a multiple
of 4 or 32 -- against numpy written here from the dequantised weights in float64 (test_dense_quant's
_numpy_dense), and the native build against the portable (generic) one."""
import numpy as np
import pytest

from test_dense_quant import _numpy_dense, _quantised
from test_wq_prefill import _experts, _experts_numpy

from moec.driver import build_module


def _tol(want, K):
    return 1e-5 + 2e-6 * np.sqrt(K) * np.abs(want).max()


# (mode, K, G, zp): int8 K 1024 / 200 (a 16-tail and a scalar tail); int4 on the 64-byte path (K % 128 == 0:
# groups 32, 64 with zero points, 128, 256, whole row) and off it (K 160: not whole blocks; G 96)
DENSE = [("int8", 1024, 0, False), ("int8", 200, 0, False),
         ("int4", 256, 32, False), ("int4", 256, 32, True), ("int4", 384, 64, True), ("int4", 384, 128, True),
         ("int4", 512, 256, False), ("int4", 256, 0, False), ("int4", 160, 32, True), ("int4", 192, 96, False)]


def _check(mode, K, G, zp, arch, tmp_path, N=37):
    m, ws = _quantised(mode, K, N, G, zp)
    art = build_module(m, str(tmp_path / f"{mode}{K}{G}{zp}{arch}"), arch=arch, threads=2)
    outs = []
    for M in (1, 2):
        x = np.random.default_rng(K + M).standard_normal((M, K)).astype(np.float32)
        y, z = art([x])
        want_y = _numpy_dense(mode, x, ws["w"].T, G, zp)
        want_z = _numpy_dense(mode, x, ws["wt"], G, zp) + ws["b"]
        for g, w in ((y, want_y), (z, want_z)):
            assert g.shape == w.shape
            err = np.abs(g - w).max()
            assert err <= _tol(w, K), (mode, K, G, zp, arch, M, err)
        outs.append((y, z))
    # two rows are the one-row results row by row (the same sums, in the same order)
    x2 = np.random.default_rng(7).standard_normal((2, K)).astype(np.float32)
    y2, z2 = art([x2])
    for r in range(2):
        y1, z1 = art([x2[r:r + 1]])
        assert np.array_equal(y1[0], y2[r]) and np.array_equal(z1[0], z2[r]), (mode, K, G, zp, arch, r)
    return outs


@pytest.mark.parametrize("mode,K,G,zp", DENSE)
def test_dense_gemv_native(mode, K, G, zp, tmp_path):
    _check(mode, K, G, zp, "native", tmp_path)


@pytest.mark.parametrize("arch", ["generic", "avx2"])
@pytest.mark.parametrize("mode,K,G,zp", [("int4", 256, 32, True), ("int8", 200, 0, False)])
def test_dense_gemv_portable(arch, mode, K, G, zp, tmp_path):
    """the AVX2 / generic builds (per-32-chunk int4 path, the shared two-row int8 loop on 8-lane halves)"""
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    _check(mode, K, G, zp, arch, tmp_path)


@pytest.mark.parametrize("mode,G,zp", [("int4", 32, False), ("int4", 64, True), ("int4", 128, False),
                                       ("int8", 0, False)])
def test_experts_decode_gemv(mode, G, zp, tmp_path):
    """one and two tokens through SwiGLU experts (D 256, F 128: both projections on the 64-byte int4 path)"""
    D, F, E, k = 256, 128, 4, 2
    m, di, do = _experts(mode, G, zp, D, F, E, k, seed=G)
    art = build_module(m, str(tmp_path / "x"), arch="native", threads=2)
    rng = np.random.default_rng(D + G)
    for T in (1, 2):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        y = art([x, logits])[0]
        want, _ = _experts_numpy(x, logits, k, di, do, F)
        assert np.abs(y - want).max() <= _tol(want, D + F), (mode, G, zp, T, np.abs(y - want).max())


@pytest.mark.parametrize("arch,K", [("native", 5), ("native", 203), ("native", 256), ("avx2", 203)])
def test_w8a8_rows_exact(arch, K, tmp_path):
    """w8a8 (int8 weights, per-row int8 activations): tile_i8 unrolls 1, 2, 4 or 8 rows (one row with two k
    chains; 8 rows: the k loop in asm on VNNI builds, with the next panel's slice prefetched); the int32 sums are
    exact, so every row of an M-row call is bit-equal to that row alone, at M = 1..17 (each unrolled width and its
    partial tiles, two 8-row blocks and a tail), K = 5 (two k steps, the second padded), 203 (not a multiple of 4:
    the padded k step; an odd count of steps) and 256, N = 37 (a partial column block); and each is the float64
    numpy of the quantised product within f32 rounding.  avx2: the vpmaddubsw path (the codes' sign moved onto
    |w|), rows in pairs of 4-row tiles."""
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    m, ws = _quantised("w8a8", K, 37, 0, False)
    art = build_module(m, str(tmp_path / f"w8a8_{K}"), arch=arch, threads=2)
    x = np.random.default_rng(K).standard_normal((17, K)).astype(np.float32)
    one = [art([x[r:r + 1]]) for r in range(17)]
    for M in range(1, 18):
        y, z = art([x[:M]])
        want_y = _numpy_dense("w8a8", x[:M], ws["w"].T, 0, False)
        want_z = _numpy_dense("w8a8", x[:M], ws["wt"], 0, False) + ws["b"]
        for g, w in ((y, want_y), (z, want_z)):
            assert np.abs(g - w).max() <= _tol(w, K), (K, M, np.abs(g - w).max())
        for r in range(M):
            assert np.array_equal(y[r], one[r][0][0]) and np.array_equal(z[r], one[r][1][0]), (K, M, r)


@pytest.mark.parametrize("arch", ["native", "generic"])
def test_w8a8_experts_rows_exact(arch, tmp_path):
    """moe.experts w8a8 at prefill sizes: phase 1 (K = D = 150, not a multiple of 4) and phase 3 (K = F = 96) take
    each expert's rows in 8-row blocks (VNNI: the asm k loop, each block prefetching its slice of the next item's
    panel), the rest in smaller tiles; the sums are exact int32, so every token's output is bit-equal to that token
    run alone (one row an expert: the one-row kernel) at T = 9..90 tokens (up to ~60 rows an expert), and within the
    w8a8 tolerance of the reference interpreter."""
    from helpers import experts_module
    from moec.ir import run
    from moec.passes.quantize import quantize_int8
    rng = np.random.default_rng(11)
    E, k, D, F = 3, 2, 150, 96
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    (qi, si), (qo, so) = quantize_int8(w_in), quantize_int8(w_out)
    m = experts_module("int8", qi, qo, [si, so], "T", D, E, k, aq="int8")
    art = build_module(m, str(tmp_path / arch), arch=arch, threads=2)
    for T in (9, 17, 40, 90):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = rng.standard_normal((T, E)).astype(np.float32)
        got = art([x, logits])[0]
        for t in range(T):
            assert np.array_equal(got[t], art([x[t:t + 1], logits[t:t + 1]])[0][0]), (arch, T, t)
        ref = run(m, [x, logits])["y"]
        np.testing.assert_allclose(got, ref, rtol=1.6e-2, atol=1.6e-2 * np.abs(ref).max())


@pytest.mark.slow
def test_w8a8_row_codes_at_ties(tmp_path):
    """quant_row_u8's codes are rint(fl32(x / s)) (ties to even), s = fl32(max|x| / 127), on the 16-lane path and
    the scalar tail alike: rows made of exact ties (s = 3 and 7, x = s (n + 1/2)), near-ties (x = fl32(s (n + 1/2))
    for an inexact s) and random values, K = 255 (15 vectors and a tail of 15), through an identity weight: each
    output is 127 q s_x s_w, so the code shows to within far less than one.  (A reciprocal product in place of the
    division, tried, rounded some exact ties the other way without a per-lane fallback; it gained nothing here.)"""
    K = 255
    n = np.arange(-127, 127, dtype=np.float32)  # 254 ties n + 1/2, then the row's max
    rows = []
    for s in (np.float32(3), np.float32(7), np.float32(0.0123), np.float32(1.7)):
        amax = np.float32(s * np.float32(127))
        rows.append(np.concatenate([(s * (n + np.float32(0.5))).astype(np.float32), [amax]]))
    rng = np.random.default_rng(5)
    rows += [rng.standard_normal(K).astype(np.float32) * 3 for _ in range(4)]
    x = np.stack(rows).astype(np.float32)
    art = _identity_w8a8(K, tmp_path, "ties")
    y = np.asarray(art([x])[0], np.float64)
    sx = (np.abs(x).max(1) / np.float32(127)).astype(np.float32)
    q = np.clip(np.rint((x / sx[:, None]).astype(np.float32)), -127, 127)  # numpy float32 division: correctly rounded
    got = y / (sx[:, None].astype(np.float64) / 127.0) / 127.0  # the codes, up to f32 rounding of the epilogue
    assert np.abs(got - q).max() < 0.01, np.argwhere(np.abs(got - q) >= 0.01)[:8]
    assert (np.abs(q - np.trunc(q)) == 0).all() and (q[:2, :254] % 2 == 0).all()  # the exact ties went to even


@pytest.mark.parametrize("mode,G,D,F", [("int4", 32, 224, 96), ("int8", 0, 200, 80)])
def test_experts_decode_runs(mode, G, D, F, tmp_path):
    """decode (one or two tokens) runs phases 1 and 3 over the experts that have rows only, their column blocks in
    runs of consecutive blocks per thread (xphase): E 8 of which 1-4 have rows; int4 I = 192, D = 224 (6 and 7
    column blocks), int8 I = 160, D = 200 (5 and 7, the last partial), so runs cross expert boundaries and the last
    run is short.  Each token's rows are the numpy reference, and the same bits at 1 and 2 threads and alone or
    beside another token."""
    E, k = 8, 2
    m, di, do = _experts(mode, G, False, D, F, E, k, seed=3)
    arts = {t: build_module(m, str(tmp_path / f"x{t}"), arch="native", threads=t) for t in (1, 2)}
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, D)).astype(np.float32)
    for trial in range(4):
        logits = rng.standard_normal((2, E)).astype(np.float32) * 3
        for T in (1, 2):
            ys = [arts[t]([x[:T], logits[:T]])[0] for t in (1, 2)]
            want, _ = _experts_numpy(x[:T], logits[:T], k, di, do, F)
            assert np.abs(ys[1] - want).max() <= _tol(want, D + F), (mode, T, np.abs(ys[1] - want).max())
            assert np.array_equal(ys[0], ys[1]), (mode, T, trial)
            if T == 2:
                one = arts[2]([x[1:2], logits[1:2]])[0]
                assert np.array_equal(one[0], ys[1][1]), (mode, trial)


@pytest.mark.parametrize("mode,K,G", [("int4", 1024, 32), ("int8", 512, 0)])
def test_dense_gemv_items(mode, K, G, tmp_path):
    """one-row linear_q GEMVs take items of at least 64 KB of weights (LQ_GEMV_ITEM_BYTES) when the weight is
    small: N = 1000 (31 whole column blocks and a partial one) splits into 7 (int4) / 7 (int8) runs of column
    blocks, the last short; every column is the numpy reference and the same bits at 1 and 2 threads."""
    m, ws = _quantised(mode, K, 1000, G, False)
    arts = [build_module(m, str(tmp_path / f"{mode}{t}"), arch="native", threads=t) for t in (1, 2)]
    x = np.random.default_rng(5).standard_normal((1, K)).astype(np.float32)
    (y1, z1), (y2, z2) = arts[0]([x]), arts[1]([x])
    want_y = _numpy_dense(mode, x, ws["w"].T, G, False)
    assert np.abs(y2 - want_y).max() <= _tol(want_y, K)
    assert np.array_equal(y1, y2) and np.array_equal(z1, z2)


def _identity_w8a8(K, tmp_path, name):
    from test_dense_quant import _module
    from moec.ir import WeightStore
    from moec.passes.quantize import QuantizeWeights
    ws = WeightStore()
    eye = np.eye(K, dtype=np.float32)
    ws.set("w", eye)
    ws.set("wt", eye)
    ws.set("b", np.zeros(K, np.float32))
    m = _module(K, K, ws)
    QuantizeWeights("w8a8", 32, False, scope="all", dense_modes=("w8a8",)).run(m)
    return build_module(m, str(tmp_path / name), arch="native", threads=2)


def test_w8a8_row_codes_near_ties_and_extreme_scales(tmp_path):
    """quant_row_u8's 16-lane path takes the codes from x * fl(1 / s) where every lane is more than 2^-14 from a tie
    (quot_codes16) and divides the others: its codes must still be rint(fl32(x / s)) bit for bit.  Rows of values
    1..600 ulps on either side of the ties s (n + 1/2) (a reciprocal product alone rounds some of those the other
    way; a margin below the products' error would too), at scales from just above the smallest normal (fast path)
    through 1e36, one whose scale is subnormal (the division path), K = 255 (15 vectors and a scalar tail of 15),
    through an identity weight (each output 127 q s_x s_w: the code to within far less than one)."""
    K = 255
    rng = np.random.default_rng(17)
    n = np.arange(-127, 127, dtype=np.float32)
    rows, scales = [], [np.float32(v) for v in (2e-38, 1e-30, 0.0123, 1.7, 3.0, 7.0, 1e12, 1e36)]
    for s in scales:
        for spread in (8, 600):
            t = (s * (n + np.float32(0.5))).astype(np.float32)
            ulps = rng.integers(1, spread + 1, t.size)
            sign = np.where(rng.random(t.size) < 0.5, -1, 1)
            near = t.view(np.int32) + (sign * ulps * np.where(t < 0, -1, 1)).astype(np.int32)
            rows.append(np.concatenate([near.view(np.float32), [np.float32(s * np.float32(127))]]))
    sub = np.float32(1e-40)  # scale 1e-40 / 127: subnormal, the division path
    rows.append(np.concatenate([(sub * rng.uniform(-1, 1, K - 1)).astype(np.float32), [sub]]))
    x = np.stack(rows).astype(np.float32)
    art = _identity_w8a8(K, tmp_path, "near")
    y = np.asarray(art([x])[0], np.float64)
    sx = (np.abs(x).max(1) / np.float32(127)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.clip(np.rint((x / sx[:, None]).astype(np.float32)), -127, 127)  # correctly rounded f32 division
    got = y / (sx[:, None].astype(np.float64) / 127.0) / 127.0
    body = slice(0, len(rows) - 1)  # (the subnormal row: its products are subnormal, checked by sign and size only)
    assert np.abs(got[body] - q[body]).max() < 0.01, np.argwhere(np.abs(got[body] - q[body]) >= 0.01)[:8]
    assert (np.abs(q[body] - np.rint(x[body] / sx[body, None].astype(np.float64))) > 0).any()  # some rows not trivial
    big = np.abs(q[-1]) >= 16  # (the subnormal row's outputs are subnormal: ~10% of a code; its sign and size)
    assert big.sum() > 100 and np.array_equal(np.sign(y[-1][big]), np.sign(q[-1][big]))
    assert np.abs(got[-1] - q[-1]).max() < 0.15 * 127


@pytest.mark.parametrize("mode,K,G", [("w8a8", 203, 0), ("w4a8", 96, 32)])
def test_int8_activation_linear_writes_every_output(mode, K, G, tmp_path):
    """linear_q's output of the int8-activation kinds (tile_i8 / tile_w4a8) is not zeroed before the tiles store
    into it: every element must be written.  M = 17..1 rows (the 8-, 4-, 2-, 1-row tiles and their partial ones),
    N = 47 (a partial column block), each call after one with inputs 1000x larger (stale values in reused
    memory would show), each output within the format's tolerance of numpy."""
    from test_dense_quant import _module, _weights
    from moec.ir.ops.moe import fake_quant_rows_int8
    from moec.passes.quantize import QuantizeWeights
    ws = _weights(K, 47)
    m = _module(K, 47, ws)
    QuantizeWeights(mode, G or 32, False, scope="all", dense_modes=(mode,)).run(m)
    art = build_module(m, str(tmp_path / mode), arch="native", threads=2)
    rng = np.random.default_rng(K)
    for M in range(17, 0, -1):
        art([rng.standard_normal((M + 3, K)).astype(np.float32) * 1000])
        x = rng.standard_normal((M, K)).astype(np.float32)
        y, z = art([x])
        if mode == "w4a8":  # int4 weights (numpy, float64) times the activations quantised per row and group
            xq = fake_quant_rows_int8(x, G)
            wy = _numpy_dense("int4", xq, ws["w"].T, G, False)
            wz = _numpy_dense("int4", xq, ws["wt"], G, False) + ws["b"]
        else:
            wy = _numpy_dense(mode, x, ws["w"].T, G, False)
            wz = _numpy_dense(mode, x, ws["wt"], G, False) + ws["b"]
        for g, w in ((y, wy), (z, wz)):
            assert np.isfinite(g).all() and np.abs(g - w).max() <= _tol(w, K), (mode, M, np.abs(g - w).max())


def test_w8a8_experts_wide_activation_row(tmp_path):
    """phase 2 of w8a8 experts makes each activation row on the stack (phase 3 reads only its codes) up to
    PHASE2_STACK_ROW = 8192 floats, and in A above that: F = 8200 (A) and F = 96 (the stack), each token's output
    bit-equal to that token alone and within the w8a8 tolerance of the reference interpreter."""
    from helpers import experts_module
    from moec.ir import run
    from moec.passes.quantize import quantize_int8
    rng = np.random.default_rng(5)
    for F in (8200, 96):
        E, k, D = 2, 1, 8
        w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
        w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.02
        (qi, si), (qo, so) = quantize_int8(w_in), quantize_int8(w_out)
        m = experts_module("int8", qi, qo, [si, so], "T", D, E, k, aq="int8")
        art = build_module(m, str(tmp_path / f"f{F}"), arch="native", threads=2)
        x = rng.standard_normal((12, D)).astype(np.float32)
        logits = rng.standard_normal((12, E)).astype(np.float32)
        got = art([x, logits])[0]
        for t in (0, 5, 11):
            assert np.array_equal(got[t], art([x[t:t + 1], logits[t:t + 1]])[0][0]), (F, t)
        ref = run(m, [x, logits])["y"]
        np.testing.assert_allclose(got, ref, rtol=1.6e-2, atol=1.6e-2 * np.abs(ref).max())
