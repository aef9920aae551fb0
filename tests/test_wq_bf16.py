"""int8 / int4 weights with bf16 activations (issue 17): ``moec compile --weights int8|int4 --activations bf16``.

Semantics (ir/ops/moe.py, ``aq=bf16``): every GEMM input (the rows of x, the activation between the
projections, a dense layer's x) is rounded to bf16 per element (nearest even); the weights enter exactly --
int8 codes and int4 values q - z are bf16 values -- so each product is exact in f32; the products are summed
in f32 per scale group (int8: the whole row) and the group's scale multiplies that partial sum.  Checked here:
the op's numpy reference against numpy written here (float64 sums of the exact products), the C kernels
(dense linear_q and the experts; GEMV rows, rows around the tile and the row-block sizes, int8 with an odd K,
int4 groups 32 / 128 / the whole row, zero points, an expert with no tokens) against it, a near miss (the
weight-only f32 reference is measurably different, so the activations really are rounded), a zoo model and
a dense model through the CLI, and the option refused on the other targets."""
import json
import os

import numpy as np
import pytest

from helpers import experts_module

from moec.driver import build_module
from moec.ir import run
from moec.ir.ops.moe import round_bf16
from moec.passes.quantize import QuantizeWeights, mode_for, quantize_int4, quantize_int8

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "mixtral_like.onnx")
DENSE = ("int8", "int4", "int8_bf16", "int4_bf16")


# -- numpy written here -------------------------------------------------------------------------------------
def _bf16(a):
    """Round to bf16 (nearest even) by bit arithmetic, independent of ml_dtypes (finite values)."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return u.view(np.float32)


def _int_weights(wq, w, G, zp):
    """(integer weights [N, K] as float64 -- int8 codes or int4 q - z --, scales [N, K/G'], G')."""
    if wq == "int8":
        q, s = quantize_int8(w)
        return q.astype(np.float64), s[:, None].astype(np.float64), w.shape[-1]
    packed, s, z = quantize_int4(w, G, zp)
    K = w.shape[-1]
    GG = G or K
    nib = np.empty(packed.shape[:-1] + (K,), np.int64)
    nib[..., 0::2], nib[..., 1::2] = packed & 15, packed >> 4
    zz = np.full(s.shape, 8.0) if z is None else z.astype(np.float64)
    assert np.array_equal(zz, np.rint(zz))  # the quantiser's zero points are integers: q - z exact in bf16
    return nib - np.repeat(zz, GG, axis=-1), s.astype(np.float64), GG


def _product(x, wint, s, G):
    """y [n, N] = sum_g s[:, g] * sum_{k in g} bf16(x[k]) * wint[:, k] in float64 (the f32 products are exact)."""
    xb = _bf16(x).astype(np.float64)
    K = x.shape[-1]
    y = np.zeros((x.shape[0], wint.shape[0]))
    for g in range(K // G):
        sl = slice(g * G, (g + 1) * G)
        y += (xb[:, sl] @ wint[:, sl].T) * s[:, g][None, :]
    return y


def test_bf16_rounding_written_here_is_round_bf16():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(4096) * 10.0 ** rng.integers(-6, 6, 4096)).astype(np.float32)
    a[:4] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 0.0]  # ties: to even
    assert np.array_equal(_bf16(a), round_bf16(a))
    assert list(_bf16(a[:3])) == [1.0, 1 + 2 ** -6, -1.0]


def test_mode_of_the_flags():
    assert mode_for("int8", "bf16") == "int8_bf16" and mode_for("int4", "bf16") == "int4_bf16"
    assert mode_for("int4_bf16", "bf16") == "int4_bf16" and mode_for("int8", "none") == "int8"
    with pytest.raises(ValueError, match="--activations bf16 with --weights fp8"):
        mode_for("fp8", "bf16")


# -- dense linear layers (moec.linear_q) ---------------------------------------------------------------------
def _dense_module(mode, K, N, G, zp, seed=0):
    from test_dense_quant import _module, _weights
    ws = _weights(K, N, seed)
    m = _module(K, N, ws)
    QuantizeWeights(mode, G, zp, scope="all", dense_modes=DENSE).run(m)
    ops = [o for o in m.main.ops if o.name == "moec.linear_q"]
    wq = mode.split("_")[0]
    assert len(ops) == 2 and all(o.attrs["wq"] == wq for o in ops)
    assert all(o.attrs["aq"] == ("bf16" if mode.endswith("_bf16") else "none") for o in ops)
    return m, ws


def _dense_want(ws, x, wq, G, zp):
    """y = x @ W, z = x @ Wt^T + b with the weights quantised as the pass does and the bf16 products."""
    w_nk = np.asarray(ws["w"], np.float32).T
    wt = np.asarray(ws["wt"], np.float32)
    out = []
    for w in (w_nk, wt):
        wint, s, GG = _int_weights(wq, np.ascontiguousarray(w), G, zp)
        out.append(_product(x, wint, s, GG))
    return out[0], out[1] + np.asarray(ws["b"], np.float64)


@pytest.mark.parametrize("wq,G,zp", [("int8", 0, False), ("int4", 32, False), ("int4", 16, True), ("int4", 0, False)])
def test_linear_q_reference_is_the_bf16_product(wq, G, zp):
    """The op's reference (round x to bf16, dequantise, f32 matmul) equals the exact products summed per group
    and scaled, written here, to f32 rounding -- and is not the weight-only reference (near miss)."""
    K, N = 96, 40
    m, ws = _dense_module(wq + "_bf16", K, N, G, zp)
    x = np.random.default_rng(2).standard_normal((6, K)).astype(np.float32)
    got = run(m, [x])
    want_y, want_z = _dense_want(ws, x, wq, G, zp)
    for g, w in ((got["y"], want_y), (got["z"], want_z)):
        assert np.abs(g - w).max() <= 2e-6 * np.abs(w).max(), np.abs(g - w).max()
    m0, _ = _dense_module(wq, K, N, G, zp)
    f32 = run(m0, [x])["y"]
    assert np.abs(f32 - want_y).max() > 1e-4 * np.abs(want_y).max()  # the activations' rounding is visible


# K: odd (int8: the last pair half empty), multiples of the groups; N: not a multiple of the 32-column panel
DENSE_CASES = [("int8", 67, 45, 0, False), ("int4", 128, 40, 32, False), ("int4", 256, 33, 128, True),
               ("int4", 96, 70, 0, False), ("int8", 64, 32, 0, False), ("int4", 30, 17, 6, True)]  # (6: 3 pairs a group)
# GEMV (1, 2), one row past it, a partial 8-row tile, whole tiles, several row blocks for K=67 (131072 / K / 8 * 8)
ROWS = (1, 2, 3, 7, 8, 9, 17, 64, 2100)


def _check_dense(arch, tmp_path, cases, rows):
    for i, (wq, K, N, G, zp) in enumerate(cases):
        m, ws = _dense_module(wq + "_bf16", K, N, G, zp, seed=i)
        art = build_module(m, str(tmp_path / f"d{arch}{i}"), arch=arch, threads=2)
        for M in rows:
            if M > 300 and K > 100:
                continue
            x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
            x[0, :3] = [1 + 2 ** -8, -(1 + 3 * 2 ** -8), 3.0e-3]  # ties, and a value far from bf16
            y, z = art([x])
            want_y, want_z = _dense_want(ws, x, wq, G, zp)
            ref = run(m, [x])
            for g, w, r in ((y, want_y, ref["y"]), (z, want_z, ref["z"])):
                tol = 2e-6 * np.abs(w).max() * np.sqrt(K)
                assert np.abs(g - w).max() <= tol, (arch, wq, K, N, G, zp, M, np.abs(g - w).max() / tol)
                assert np.abs(g - r).max() <= tol, (arch, wq, K, N, G, zp, M)


@pytest.mark.parametrize("cases", [pytest.param([0, 1, 5], id="int8-oddK,int4-g32,int4-g6-zp"),
                                   pytest.param([2, 3, 4], id="int4-g128-zp,int4-row,int8", marks=pytest.mark.slow)])
def test_dense_kernel_native(cases, tmp_path):
    """The host's kernel (vdpbf16ps where the build host has AVX512_BF16): each case at every row count (three
    cases in the default run, the others with -m slow)."""
    _check_dense("native", tmp_path, [DENSE_CASES[i] for i in cases], ROWS)


@pytest.mark.parametrize("arch", ["avx2", pytest.param("generic", marks=pytest.mark.slow)])
def test_dense_kernel_portable_paths(arch, tmp_path):
    """Builds without AVX512_BF16 widen the bf16 pairs in registers: the same products and sums."""
    from moec.targets.description import host_cpu
    if arch == "avx2" and "avx2" not in host_cpu().isa:
        pytest.skip("this host has no AVX2")
    _check_dense(arch, tmp_path, DENSE_CASES[:2], (1, 3, 9, 17))


@pytest.mark.slow
def test_dense_kernel_avx512_without_bf16(no_avx512_bf16, tmp_path):
    _check_dense("native", tmp_path, [DENSE_CASES[1], DENSE_CASES[5]], (2, 3, 9, 17))


def test_dense_rows_equal_in_every_row_block(tmp_path):
    """A work item's first row block widens the narrow panel while it multiplies (tile_wq_bf16_first) and leaves the
    pair panel to its later row blocks (tile_wq_bf16): the same kernel and order of sums, so a row's outputs are
    the same bits wherever it lies -- in the first four rows, the rest of the first block or a later block.  Fails
    if the fused widening made other values than the stored panel, or the first rows another order of sums."""
    for i, (wq, K, N, G, zp) in enumerate([DENSE_CASES[0], DENSE_CASES[1], DENSE_CASES[3], DENSE_CASES[4]]):
        m, _ = _dense_module(wq + "_bf16", K, N, G, zp, seed=i)
        art = build_module(m, str(tmp_path / f"r{i}"), arch="native", threads=1)
        x = np.random.default_rng(i).standard_normal((12, K)).astype(np.float32)
        base = art([x])
        for shift in (3, 4, 8):  # row r of x at row r + shift: first four rows <-> the rest <-> the next block
            pad = np.random.default_rng(100 + shift).standard_normal((shift, K)).astype(np.float32)
            moved = art([np.concatenate([pad, x])])
            for b, mv in zip(base, moved):
                assert np.array_equal(b, mv[shift:]), (wq, K, G, zp, shift, np.abs(b - mv[shift:]).max())


def test_dense_near_miss_the_kernel_rounds_its_inputs(tmp_path):
    """The compiled int4_bf16 layer is much closer to the bf16-activation numpy than to the weight-only f32
    reference of the same weights: a kernel that skipped the rounding would be the other way round."""
    K, N, G = 128, 48, 32
    m, ws = _dense_module("int4_bf16", K, N, G, False)
    m0, _ = _dense_module("int4", K, N, G, False)
    art = build_module(m, str(tmp_path / "d"), arch="native", threads=2)
    for M in (1, 24):
        x = np.random.default_rng(7).standard_normal((M, K)).astype(np.float32)
        y = art([x])[0]
        want_y, _ = _dense_want(ws, x, "int4", G, False)
        f32 = run(m0, [x])["y"]
        d_bf16, d_f32 = np.abs(y - want_y).max(), np.abs(y - f32).max()
        assert d_f32 > 3e-4 * np.abs(want_y).max() and d_bf16 < d_f32 / 100, (M, d_bf16, d_f32)


# -- routed experts (moe.experts) ------------------------------------------------------------------------------
def _experts(wq, D, F, G, zp, E=4, k=2, seed=0):
    rng = np.random.default_rng(seed)
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    m = experts_module("none", w_in, w_out, [], "T", D, E, k)
    QuantizeWeights(wq + "_bf16", G, zp, scope="experts").run(m)
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert (ex.attrs["wq"], ex.attrs["aq"]) == (wq, "bf16")
    return m, w_in, w_out


def _experts_numpy(wq, x, logits, G, zp, w_in, w_out, k=2):
    """softmax top-k routing; per expert the bf16 products of x, SwiGLU in f32, the bf16 products of the
    activation; combined with the routing weights."""
    F = w_out.shape[2]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    y = np.zeros((len(x), x.shape[1]))
    for e in set(top.ravel().tolist()):
        wi, si, gi = _int_weights(wq, w_in[e], G, zp)
        wo, so, go = _int_weights(wq, w_out[e], G, zp)
        for t in np.nonzero((top == e).any(1))[0]:
            h = _product(x[t:t + 1], wi, si, gi)[0].astype(np.float32)
            g, u = h[:F], h[F:]
            a = (g / (1 + np.exp(-g)) * u).astype(np.float32)
            y[t] += p[t, e] * _product(a[None], wo, so, go)[0]
    return y


EXPERT_CASES = [("int4", 128, 64, 32, False), ("int8", 72, 40, 0, False), ("int4", 128, 128, 128, True)]


@pytest.mark.parametrize("wq,D,F,G,zp", EXPERT_CASES)
def test_experts_kernel_against_numpy(wq, D, F, G, zp, tmp_path):
    """Token counts giving experts 0 rows (expert 3 is never routed to), 1-2 rows (GEMV), 3-8 and > 8 rows (the
    pair-panel tiles), against the numpy above and the op's reference."""
    m, w_in, w_out = _experts(wq, D, F, G, zp)
    art = build_module(m, str(tmp_path / "x"), arch="native", threads=2)
    rng = np.random.default_rng(D + F)
    T = 40
    x = rng.standard_normal((T, D)).astype(np.float32)
    x[3] = 0.0
    logits = rng.standard_normal((T, 4)).astype(np.float32)
    logits[:, 3] = -30.0  # expert 3: no tokens
    want = _experts_numpy(wq, x, logits, G, zp, w_in, w_out)
    scale = np.abs(want).max()
    for n in (1, 2, 5, 11, T):
        got = art([x[:n], logits[:n]])[0]
        ref = list(run(m, [x[:n], logits[:n]]).values())[0]
        # the activation between the projections differs by f32 rounding (exp), which can flip one bf16 rounding
        np.testing.assert_allclose(got, want[:n], rtol=1.6e-2, atol=1.6e-2 * scale)
        np.testing.assert_allclose(got, ref, rtol=1.6e-2, atol=1.6e-2 * scale)
        assert np.median(np.abs(got - want[:n])) < 2e-6 * scale and np.median(np.abs(got - ref)) < 2e-6 * scale


def test_experts_portable_build(tmp_path):
    """The generic C build (tile_bf16 widening the pairs) computes the same."""
    wq, D, F, G, zp = EXPERT_CASES[0]
    m, w_in, w_out = _experts(wq, D, F, G, zp)
    art = build_module(m, str(tmp_path / "x"), arch="generic", threads=2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, D)).astype(np.float32)
    logits = rng.standard_normal((24, 4)).astype(np.float32)
    want = _experts_numpy(wq, x, logits, G, zp, w_in, w_out)
    for n in (1, 24):
        got = art([x[:n], logits[:n]])[0]
        assert np.median(np.abs(got - want[:n])) < 2e-6 * np.abs(want).max()


# -- the option, end to end ------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights,group", [("int4", "32"), ("int8", "64")])
def test_zoo_mixtral_through_the_cli(weights, group, tmp_path, capsys):
    """`moec compile --weights W --activations bf16` on a zoo Mixtral (every linear layer): verified against the
    module's reference, the error vs the f32 model reported and within its bound, the summary and the layer
    records say what the activations are."""
    import onnx

    from moec.cli import main
    from zoo import ZOO
    e = next(z for z in ZOO if z.name == "mixtral_dynamo")
    path = tmp_path / "m.onnx"
    onnx.save(e.build(), str(path))
    out = tmp_path / "out"
    assert main(["compile", str(path), "-o", str(out), "--weights", weights, "--activations", "bf16",
                 "--group-size", group, "--sizes", "5,1"]) == 0
    text_out = capsys.readouterr().out
    rep = json.load(open(out / "report.json"))
    assert rep["verified"], rep.get("failure")
    assert rep["weights"]["mode"] == f"{weights}_bf16"
    assert rep["weights"]["activations"].startswith("bf16 (each GEMM input rounded to nearest even")
    assert "activations: bf16" in text_out, text_out
    q = rep["quantization_error"]
    assert 0 < q["token_rel_median"] <= q["bound_token_rel_median"] and q["tokens_over_4x_bound"] == 0
    w = rep["moe_layers"][0]["weights"]
    assert w["mode"] == f"{weights}_bf16" and w["activations"].startswith("bf16"), w
    text = open(out / "model.mlir").read()
    assert 'aq = "bf16"' in text and f'wq = "{weights}"' in text


@pytest.mark.parametrize("target", ["triton", "ascend"])
def test_refused_where_not_implemented(tmp_path, target, capsys):
    from moec.cli import main
    assert main(["compile", EXAMPLE, "-o", str(tmp_path / "o"), "--target", target, "--weights", "int4",
                 "--activations", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"target {target}: --weights int4 --activations bf16" in err[0] and \
        "cpu target only" in err[0], err


def test_bad_pairs_are_one_line(tmp_path, capsys):
    from moec.cli import main
    assert main(["compile", EXAMPLE, "-o", str(tmp_path / "o"), "--weights", "bf16", "--activations", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--activations bf16 with --weights bf16" in err[0], err


@pytest.mark.parametrize("target", ["triton", "ascend"])
def test_ir_holding_bf16_activations_is_refused(target, tmp_path):
    """A module from IR text whose experts already say aq=bf16 is held to the same support matrix (its mode is
    int4_bf16, not int4: the other targets' kernels would ignore the rounding)."""
    from moec.errors import UserInputError
    m, _, _ = _experts("int4", 64, 32, 32, False)
    with pytest.raises(UserInputError, match=f"target {target}: --weights int4 --activations bf16"):
        build_module(m, str(tmp_path / "x"), target=target)
