"""The AVX2 + FMA build of the C runtime's f32 kernels (issue 17 item 1: fast on every host, chosen by the build
host's features): the dense GEMM's 6 x 16 micro-kernel (rt_gemm_f32.c, sg_tile_avx2) and the routed experts'
tile / tile_dec / gemv_block (rt_moe_f32.c, F32_AVX2), built with ``arch="avx2"`` (``-mavx2 -mfma``, no
AVX-512) and run here on any host with AVX2, against numpy in float64 written here.

Edge sizes: 0 rows, every row count of a partial tile (1-7, 13: the 6-row tile of the GEMM and the 4-row one of
the experts; 1-3 rows also sum even and odd k apart), N not a multiple of the 16- or 32-column panel, K odd and
K = 1, K long enough to be cut into two slices (each tile reloaded from C between them), the epilogues (bias with
alpha / beta, the activation with a residual), an activation operand as B (read in place or copied per slice),
and for the experts the decode kernels (one and two rows per expert) on compile-time panels and on weights that
are inputs (gemv_block: nothing packed)."""
import numpy as np
import pytest

from helpers import experts_module
from test_dense_gemm import _act64, _close, _const, _module, _tt

from moec.driver import build_module
from moec.ir import Function, Module, TensorType, DType, Value, WeightStore, run, verify_module


@pytest.fixture(scope="module")
def avx2_desc():
    from moec.targets.description import cpu_target, host_cpu
    if "avx2" not in host_cpu().isa or "fma" not in host_cpu().isa:
        pytest.skip("this host has no AVX2 + FMA")
    d = cpu_target("avx2")
    assert "-DMOEC_VBYTES=32" in d.cflags and "-mfma" in d.cflags and not any("avx512" in f for f in d.cflags)
    return d


ROWS = (0, 1, 2, 3, 4, 5, 6, 7, 13, 40)


def _dense_module(rng):
    """y_K_N = x_K @ w (constant: compile-time panels), g = 0.5 x_33 @ wt^T + 2 b (Gemm, a bias broadcast over
    rows), s = silu(x_33 @ w_33_17 + r) (moec.linear: activation and residual epilogue), z = x_33 @ v (v an input:
    the panel read in place where 16 columns are there, copied where not)"""
    ws = WeightStore()
    shapes = [(1, 1), (3, 17), (33, 15), (33, 17), (64, 16), (100, 47), (4101, 29)]
    Ks = sorted({K for K, _ in shapes})
    args = [(f"x{K}", ("M", K)) for K in Ks] + [("r", ("M", 17)), ("v", (33, 37))]
    ops, outs = [], []
    for K, N in shapes:
        ws.set(f"w{K}_{N}", rng.standard_normal((K, N)).astype(np.float32))
        ops += [_const(f"w{K}_{N}", (K, N)),
                f'%y{K}_{N} = "moec.matmul"(%x{K}, %w{K}_{N}) : ({_tt(("M", K))}, {_tt((K, N))}) -> {_tt(("M", N))}']
        outs.append((f"y{K}_{N}", ("M", N)))
    ws.set("wt", rng.standard_normal((21, 33)).astype(np.float32))
    ws.set("b", rng.standard_normal(21).astype(np.float32))
    x33 = _tt(("M", 33))
    ops += [_const("wt", (21, 33)), _const("b", (21,)),
            f'%g = "moec.gemm"(%x33, %wt, %b) {{alpha = 0.5 : f64, beta = 2.0 : f64, trans_a = false, trans_b = true}} '
            f': ({x33}, {_tt((21, 33))}, {_tt((21,))}) -> {_tt(("M", 21))}',
            f'%s = "moec.linear"(%x33, %w33_17, %r) {{activation = "silu"}} : ({x33}, {_tt((33, 17))}, '
            f'{_tt(("M", 17))}) -> {_tt(("M", 17))}',
            f'%z = "moec.matmul"(%x33, %v) : ({x33}, {_tt((33, 37))}) -> {_tt(("M", 37))}']
    outs += [("g", ("M", 21)), ("s", ("M", 17)), ("z", ("M", 37))]
    w64 = {n: np.asarray(ws[n], np.float64) for n in [f"w{K}_{N}" for K, N in shapes] + ["wt", "b"]}
    return _module(args, ops, outs, ws), w64, Ks


def test_dense_avx2_edge_sizes_against_numpy(avx2_desc, tmp_path):
    from moec.codegen.c import gemm_pack
    from moec.targets.registry import CpuArtifact
    rng = np.random.default_rng(0)
    m, w64, Ks = _dense_module(rng)
    out = str(tmp_path / "d")
    art = build_module(m, out, arch="avx2", threads=2)
    with open(tmp_path / "d" / "model.c") as f:
        src = f.read()
    assert gemm_pack.panel_width(avx2_desc.cflags) == 16 and ", 16, " in src
    assert "moec_k_gemm_packed(" in src and "moec_k_linear(" in src
    one = CpuArtifact(out, threads=1)
    v = rng.standard_normal((33, 37)).astype(np.float32)
    for M in ROWS:
        xs = {K: rng.standard_normal((M, K)).astype(np.float32) for K in Ks}
        r = (rng.standard_normal((M, 17)) * 3).astype(np.float32)
        inputs = [xs[K] for K in Ks] + [r, v]
        got = dict(zip(m.main.output_names, art(inputs)))
        for name, y in got.items():
            if name.startswith("y"):
                K, N = (int(t) for t in name[1:].split("_"))
                _close(y, xs[K].astype(np.float64) @ w64[f"w{K}_{N}"], K, f"M={M} {name}")
        x = xs[33].astype(np.float64)
        _close(got["g"], 0.5 * x @ w64["wt"].T + 2.0 * w64["b"], 33, f"M={M} gemm")
        _close(got["s"], _act64("silu", x @ w64["w33_17"] + r), 33, f"M={M} linear silu")
        _close(got["z"], x @ v.astype(np.float64), 33, f"M={M} activation B")
        if M in (1, 2, 13):  # the columns split between two threads at a few rows: the same bits
            for a, b in zip(one(inputs), art(inputs)):
                np.testing.assert_array_equal(a, b)


def _experts_numpy(x, logits, wi, wo, k):
    """softmax over the logits, the top k (ties to the lower id), SwiGLU (w_in rows [gate; up]), weighted sum"""
    lg = logits.astype(np.float64)
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    F = wo.shape[2]
    y = np.zeros((len(x), wo.shape[1]))
    for t in range(len(x)):
        for e in top[t]:
            h = wi[e].astype(np.float64) @ x[t].astype(np.float64)
            g, u = h[:F], h[F:]
            y[t] += p[t, e] * (wo[e].astype(np.float64) @ (g / (1 + np.exp(-g)) * u))
    return y


def _inputs_experts_module(D, E, F, k, attrs=None, wi=None, wo=None):
    """the f32 MoE layer of helpers.experts_module with w_in / w_out as inputs (not in the weights file: nothing
    is packed at compile time, so decode reads the weight rows: gemv_block), or as constants when given; attrs:
    the experts' activation attributes"""
    from moec.ir.core import ResourceRef
    from moec.ir.opdef import OPS
    I = 2 * F if (attrs or {}).get("activation", "swiglu") == "swiglu" else F
    m = Module()
    args = [Value(TensorType(DType.F32, ("T", D)), "x"), Value(TensorType(DType.F32, ("T", E)), "l")]
    if wi is None:
        args += [Value(TensorType(DType.F32, (E, I, D)), "wi"), Value(TensorType(DType.F32, (E, D, F)), "wo")]
    f = Function("main", args)
    m.functions.append(f)
    if wi is None:
        w_in, w_out = f.args[2], f.args[3]
    else:
        w_in, w_out = (f.add(OPS["moec.constant"].create([], {"value": ResourceRef(m.weights.add(a, n))}, None,
                                                          [TensorType(DType.F32, a.shape)])).result
                       for a, n in ((wi, "wi"), (wo, "wo")))
    rw, ids = f.add(OPS["moe.route"].create([f.args[1]], {"k": k})).results
    order, off = f.add(OPS["moe.dispatch"].create([ids], {"num_experts": E})).results
    y = f.add(OPS["moe.experts"].create([f.args[0], ids, order, off, w_in, w_out], dict(attrs or {}))).result
    f.outputs, f.output_names = [f.add(OPS["moe.combine"].create([y, rw])).result], ["y"]
    verify_module(m)
    return m


def _routing(rng, T, E, same):
    """router logits; same: every token picks the same experts (two rows per expert at T = 2: tile_dec's and
    gemv_block's two-row kernels)"""
    logits = rng.standard_normal((T, E)).astype(np.float32)
    if same:
        logits += np.arange(E, dtype=np.float32)[::-1] * 4
    return logits


@pytest.mark.parametrize("weights", ["constant", "input"])
def test_experts_avx2_every_row_count_against_numpy(avx2_desc, weights, tmp_path):
    """moe.experts in f32, D odd and F not a multiple of the 32-column panel: one and two rows per expert (the
    decode kernels: tile_dec on the compile-time panels, gemv_block on weights that are inputs), 3-7 rows
    (partial 4-row tiles) and ~20 rows per expert, against numpy and the op's reference."""
    rng = np.random.default_rng(3)
    E, k, D, F = 4, 2, 45, 38
    wi = rng.standard_normal((E, 2 * F, D)).astype(np.float32)
    wo = rng.standard_normal((E, D, F)).astype(np.float32)
    if weights == "constant":
        m = experts_module("none", wi, wo, [], "T", D, E, k)
        extra = []
    else:
        m = _inputs_experts_module(D, E, F, k)
        extra = [wi, wo]
    out = str(tmp_path / "x")
    art = build_module(m, out, arch="avx2", threads=2)
    for T, same in ((0, False), (1, False), (2, True), (2, False), (3, True), (5, True), (7, True), (14, True),
                    (40, False)):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = _routing(rng, T, E, same)
        got = art([x, logits] + extra)[0]
        want = _experts_numpy(x, logits, wi, wo, k)
        ref = run(m, [x, logits] + extra)["y"]
        assert got.shape == want.shape == (T, D)
        tol = 4e-6 * max(1.0, float(np.abs(want).max(initial=0))) * np.sqrt(max(D, F))
        assert np.abs(got - want).max(initial=0) <= tol and np.abs(got - ref).max(initial=0) <= tol, (weights, T)


@pytest.mark.parametrize("act", ["swiglu_interleaved_clamped", "silu"])
def test_experts_avx2_activations_against_numpy(avx2_desc, act, tmp_path):
    """the activation between the experts' two GEMMs on the AVX2 build (8-lane vector math): SwiGLU with the
    gate and up rows interleaved, alpha / beta and a limit that clamps (GPT-OSS's form), and SiLU alone; F = 38
    (eight-lane blocks and a tail), prefill and decode rows, against numpy and the op's reference."""
    rng = np.random.default_rng(5)
    E, k, D, F = 4, 2, 45, 38
    if act == "silu":
        attrs, I = {"activation": "silu"}, F
    else:
        attrs, I = {"activation": "swiglu", "gate_layout": "interleaved", "alpha": 1.702, "beta": 1.0,
                    "limit": 7.0}, 2 * F
    wi = rng.standard_normal((E, I, D)).astype(np.float32)
    wo = rng.standard_normal((E, D, F)).astype(np.float32)
    m = _inputs_experts_module(D, E, F, k, attrs, wi, wo)
    art = build_module(m, str(tmp_path / "a"), arch="avx2", threads=2)
    for T in (1, 2, 9, 40):
        x = rng.standard_normal((T, D)).astype(np.float32)
        logits = _routing(rng, T, E, T == 2)
        lg = logits.astype(np.float64)
        p = np.exp(lg - lg.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        top = np.argsort(-p, axis=1, kind="stable")[:, :k]
        want = np.zeros((T, D))
        clamped = 0
        for t in range(T):
            for e in top[t]:
                h = wi[e].astype(np.float64) @ x[t].astype(np.float64)
                if act == "silu":
                    a = h / (1 + np.exp(-h))
                else:
                    g, u = h[0::2], h[1::2]
                    clamped += int((g > 7).sum() + (np.abs(u) > 7).sum())
                    g, u = np.minimum(g, 7.0), np.clip(u, -7.0, 7.0)
                    a = g / (1 + np.exp(-1.702 * g)) * (u + 1.0)
                want[t] += p[t, e] * (wo[e].astype(np.float64) @ a)
        assert act == "silu" or T < 9 or clamped > 0, "the case does not clamp"
        got = art([x, logits])[0]
        ref = run(m, [x, logits])["y"]
        tol = 4e-6 * max(1.0, float(np.abs(want).max())) * np.sqrt(max(D, F))
        assert np.abs(got - want).max() <= tol and np.abs(got - ref).max() <= tol, (act, T)
