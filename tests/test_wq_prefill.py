"""int8 / int4 weight-only prefill (issue 17): above a few row tiles a work item dequantises its weight panel once
into the f32 panel layout and runs the f32 micro-kernel (rt_moe_f32.c: wq_dequant_panel, then tile()); below
that the in-register path (tile_wq) and at one or two rows the GEMVs.  Thresholds on an AVX-512 build (MR = 8):
int4 above 16 rows, int8 above 32.  AVX2 and generic builds keep tile_wq at every row count (their f32
micro-kernel is the slower one there); their cases check that the shared panel fetch (wq_panel) and the larger
packing buffers left those paths' answers as they were.

Checked at the edges of each path -- rows just below and above the thresholds, rows not a multiple of the
row tile, columns not a multiple of the 32-column panel, int4 groups of 32 and 128 (with and without zero
points), int8 per channel, experts that get no token -- against numpy written here from the dequantised
weights (float64) and against the op's reference semantics."""
import numpy as np
import pytest

from helpers import experts_module

from moec.driver import build_module
from moec.ir import run
from moec.passes.quantize import QuantizeWeights, quantize_int4, quantize_int8


def unpack_int4(packed):
    """two codes per byte, low nibble first (written here, not the op's helper)"""
    p = np.asarray(packed, np.int64)
    out = np.empty(p.shape[:-1] + (2 * p.shape[-1],), np.int64)
    out[..., 0::2], out[..., 1::2] = p & 15, p >> 4
    return out

# rows on both sides of the AVX-512 build's thresholds (16 / 32), partial row tiles
ROWS = (7, 9, 16, 17, 32, 33, 70)


def _tol(want, K):
    return 1e-5 + 2e-6 * np.sqrt(K) * np.abs(want).max()


# -- dense linear layers (moec.linear_q) -------------------------------------------------------------
DENSE = [("int4", 32, False), ("int4", 128, True), ("int8", 0, False)]


def _check_dense(mode, G, zp, arch, rows, tmp_path, K=256, N=100):
    from test_dense_quant import _numpy_dense, _quantised
    m, ws = _quantised(mode, K, N, G, zp)
    assert [o.attrs["wq"] for o in m.main.ops if o.name == "moec.linear_q"] == [mode, mode]
    art = build_module(m, str(tmp_path / f"{mode}{G}{arch}"), arch=arch, threads=2)
    for M in rows:
        x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
        y, z = art([x])
        want_y = _numpy_dense(mode, x, ws["w"].T, G, zp)
        want_z = _numpy_dense(mode, x, ws["wt"], G, zp) + ws["b"]
        ref = run(m, [x])
        for g, w, r in ((y, want_y, ref["y"]), (z, want_z, ref["z"])):
            assert g.shape == w.shape
            assert np.abs(g - w).max() <= _tol(w, K), (mode, G, arch, M, np.abs(g - w).max())
            assert np.abs(g - r).max() <= _tol(w, K), (mode, G, arch, M)


@pytest.mark.parametrize("mode,G,zp", DENSE)
def test_dense_native_around_the_thresholds(mode, G, zp, tmp_path):
    _check_dense(mode, G, zp, "native", ROWS, tmp_path)


@pytest.mark.parametrize("mode,G,zp", [("int8", 0, False), ("int4", 40, False), ("int4", 40, True)])
def test_dense_panel_tails(mode, G, zp, tmp_path):
    """K = 200: the run-time narrow panels are packed 16 (int8) / 32 (int4) reduction indices at a time by
    register transposes (pack_w8k_panel / pack_w4k_panel), the last 8 one at a time; 100 columns leave the
    last panel partial (its missing columns zero)."""
    _check_dense(mode, G, zp, "native", (3, 17, 33), tmp_path, K=200, N=100)


@pytest.mark.parametrize("arch", ["avx2", "generic"])
def test_dense_portable_builds(arch, tmp_path):
    """AVX2 and generic builds (tile_wq at every row count): the same answers at several row tiles."""
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    for mode, G, zp in DENSE[:1] + DENSE[2:]:
        _check_dense(mode, G, zp, arch, (8, 9, 16, 17, 33), tmp_path, K=128, N=40)


# -- routed experts (moe.experts) ---------------------------------------------------------------------
def _experts_numpy(x, logits, k, di, do, F):
    """softmax top-k routing, SwiGLU experts with the dequantised weights, in float64"""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    want = np.zeros((len(x), do.shape[1]))
    for t in range(len(x)):
        for e in top[t]:
            h = di[e].astype(np.float64) @ x[t].astype(np.float64)
            g, u = h[:F], h[F:]
            a = (g / (1 + np.exp(-g)) * u).astype(np.float32).astype(np.float64)
            want[t] += p[t, e] * (do[e].astype(np.float64) @ a)
    return want, top


def _experts(mode, G, zp, D, F, E, k, seed=0):
    rng = np.random.default_rng(seed)
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.1
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.1
    if mode == "int8":
        (qi, si), (qo, so) = quantize_int8(w_in), quantize_int8(w_out)
        extra = [si, so]
        di, do = qi * si[..., None], qo * so[..., None]
    else:
        qi, si, zi = quantize_int4(w_in, G, zp)
        qo, so, zo = quantize_int4(w_out, G, zp)
        extra = [si, so] + ([zi, zo] if zp else [])
        zi = np.full(si.shape, 8.0, np.float32) if zi is None else zi
        zo = np.full(so.shape, 8.0, np.float32) if zo is None else zo
        ui, uo = unpack_int4(qi).astype(np.float32), unpack_int4(qo).astype(np.float32)
        di = (ui - np.repeat(zi, G, -1)) * np.repeat(si, G, -1)
        do = (uo - np.repeat(zo, G, -1)) * np.repeat(so, G, -1)
    if mode == "int4" and not zp:  # (experts_module makes zero points: the symmetric layer comes from the pass)
        m = experts_module("none", w_in, w_out, [], "T", D, E, k)
        QuantizeWeights("int4", G, False, scope="experts").run(m)
    else:
        m = experts_module(mode, qi, qo, extra, "T", D, E, k, G=G)
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert ex.attrs["wq"] == mode and (mode != "int4" or ex.attrs["wq_zp"] == zp)
    return m, di, do


# symmetric int4 (the default): scale tables cached per weight tensor; with zero points: built per work item
EXPERTS = [("native", "int4", 32, False), ("native", "int4", 128, True), ("native", "int8", 0, False),
           ("avx2", "int4", 32, True), ("generic", "int8", 0, False)]


@pytest.mark.parametrize("arch,mode,G,zp", EXPERTS)
def test_experts_around_the_thresholds(arch, mode, G, zp, tmp_path):
    """Experts 0 and 1 take every token, experts 2 and 3 none (0 rows: no work item may touch them); at
    T tokens each busy expert has T rows, so T = 7..70 crosses the AVX-512 build's thresholds.  A second routing
    spreads the rows unevenly (some experts above, some below the threshold in one call)."""
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    D, F, E, k = 256, 128, 4, 2
    m, di, do = _experts(mode, G, zp, D, F, E, k)
    art = build_module(m, str(tmp_path / "x"), arch=arch, threads=2)
    rng = np.random.default_rng(D + F)
    x = rng.standard_normal((70, D)).astype(np.float32)
    skewed = rng.standard_normal((70, E)).astype(np.float32)
    skewed[:, 2:] -= 30.0  # experts 2, 3 never chosen
    spread = rng.standard_normal((70, E)).astype(np.float32)
    spread[:40, 0] += 30.0  # expert 0: up to 40 rows, the others a few each
    for logits in (skewed, spread):
        want, top = _experts_numpy(x, logits, k, di, do, F)
        if logits is skewed:
            assert set(top.ravel()) == {0, 1}
        for T in (ROWS if arch == "native" else (8, 9, 17, 33)):
            got = art([x[:T], logits[:T]])[0]
            ref = list(run(m, [x[:T], logits[:T]]).values())[0]
            tol = _tol(want, 2 * F)
            assert np.abs(got - want[:T]).max() <= tol, (arch, mode, G, T, np.abs(got - want[:T]).max())
            assert np.abs(got - ref).max() <= tol, (arch, mode, G, T)


# -- the next item's panel fetched while an item's row blocks run (wq_next_slice) ------------------------
@pytest.mark.parametrize("mode,G", [("int8", 0), ("int4", 40)])
def test_experts_next_panel_slices_odd_shapes(mode, G, tmp_path):
    """Each 5+-row block of an item prefetches a slice of the next item's narrow panel (one line per k step): the
    slices' edges -- the last item (no next panel), an item whose next expert has no rows, blocks of 1-4 rows (no
    slice), rows not a multiple of the row tile, K not a multiple of the prefetch step or of a line (D = 200 / 120,
    F = 40 / 80), columns not a multiple of the panel -- must leave every product as it was."""
    D, F, E, k = (200, 40, 4, 2) if mode == "int8" else (120, 80, 4, 2)
    m, di, do = _experts(mode, G, False, D, F, E, k)
    art = build_module(m, str(tmp_path / "x"), arch="native", threads=2)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((70, D)).astype(np.float32)
    last = rng.standard_normal((70, E)).astype(np.float32)
    last[:, 1:3] -= 30.0  # experts 0 and 3 (the last item) take every token, 1 and 2 none
    lopsided = rng.standard_normal((70, E)).astype(np.float32)
    lopsided[:37, 3] += 30.0  # the last expert: 37 rows (dequantised path), the others a few each
    for logits in (last, lopsided):
        want, _ = _experts_numpy(x, logits, k, di, do, F)
        for T in (1, 5, 13, 33, 37, 70):
            got = art([x[:T], logits[:T]])[0]
            ref = list(run(m, [x[:T], logits[:T]]).values())[0]
            tol = _tol(want, 2 * F)
            assert np.abs(got - want[:T]).max() <= tol, (mode, T, np.abs(got - want[:T]).max())
            assert np.abs(got - ref).max() <= tol, (mode, T)


def test_dense_next_panel_slices_odd_shapes(tmp_path):
    """moec_k_linear_q's items prefetch the next column block's panel (the item's next, else the first of the
    thread's next item): K = 200 (not a multiple of a line), N = 100 (a partial last panel), rows around the
    dequantisation threshold and a single row block of 1-4 rows."""
    _check_dense("int8", 0, False, "native", (1, 3, 12, 33, 70, 129), tmp_path, K=200, N=100)
