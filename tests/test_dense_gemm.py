"""Dense GEMM/GEMV of the C target (issue 17 item 1): rt_gemm_f32.c and the compile-time packed
weights (codegen/c/gemm_pack.py), against numpy in float64 and, for a whole model, onnxruntime."""
import math

import numpy as np
import pytest
from onnx import helper

from helpers import make_model
from moec.codegen.c import gemm_pack
from moec.driver import CompileOptions, build_module, compile_onnx
from moec.ir import WeightStore, parse_module, run

SIZES = (1, 3, 17, 33)


def _tt(shape, syms=None):
    dims = "x".join("?" if isinstance(d, str) else str(d) for d in shape)
    names = [d for d in shape if isinstance(d, str)]
    return f'tensor<{dims}{"x" if dims else ""}f32{", " + chr(34) + ",".join(names) + chr(34) if names else ""}>'


def _module(args, ops, outs, ws):
    """args: [(name, shape)], ops: IR lines, outs: [(value, shape)]"""
    sig = ", ".join(f"%{n}: {_tt(s)}" for n, s in args)
    otys = ", ".join(_tt(s) for _, s in outs)
    names = ", ".join(f'"{n}"' for n, _ in args)
    onames = ", ".join(f'"{v}"' for v, _ in outs)
    text = "\n".join(["module {", f"  func.func @main({sig}) -> ({otys}) attributes {{moec.inputs = [{names}], "
                      f"moec.outputs = [{onames}]}} {{", *("    " + o for o in ops),
                      f"    func.return {', '.join('%' + v for v, _ in outs)} : {otys}", "  }", "}"])
    return parse_module(text, ws)


def _const(name, shape):
    t = _tt(shape)
    return f'%{name} = "moec.constant"() {{value = dense_resource<{name}> : {t}}} : () -> {t}'


def _close(got, want, K, what):
    want = np.asarray(want, np.float64)
    tol = 1e-5 * np.sqrt(max(K, 1)) * max(1.0, float(np.abs(want).max(initial=0)))
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = float(np.abs(got.astype(np.float64) - want).max(initial=0))
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g}"


def test_pack_layout_and_width():
    w = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)  # K=5, N=7
    p = gemm_pack.pack_panels(w, 4)
    assert p.shape == (2, 5, 4)
    for n in range(8):
        for k in range(5):
            assert p[n // 4, k, n % 4] == (w[k, n] if n < 7 else 0.0)
    np.testing.assert_array_equal(gemm_pack.pack_panels(w.T, 4, trans=True), p)
    assert gemm_pack.panel_width(("-mavx2", "-DMOEC_VBYTES=64")) == 32
    assert gemm_pack.panel_width(("-DMOEC_VBYTES=32",)) == 16
    assert gemm_pack.panel_width(()) == 8


@pytest.fixture(scope="module")
def packed_grid(tmp_path_factory):
    """x_K [M, K] @ W_K_N for K, N in SIZES + 1000 (one build, M chosen at run time)."""
    rng = np.random.default_rng(0)
    ws = WeightStore()
    Ks = Ns = SIZES + (1000,)
    args = [(f"x{K}", ("M", K)) for K in Ks]
    ops, outs = [], []
    for K in Ks:
        for N in Ns:
            if K == N == 1000:
                continue
            ws.set(f"w{K}_{N}", rng.standard_normal((K, N)).astype(np.float32))
            ops.append(_const(f"w{K}_{N}", (K, N)))
            ops.append(f'%y{K}_{N} = "moec.matmul"(%x{K}, %w{K}_{N}) : ({_tt(("M", K))}, {_tt((K, N))}) -> '
                       f'{_tt(("M", N))}')
            outs.append((f"y{K}_{N}", ("M", N)))
    m = _module(args, ops, outs, ws)
    d = tmp_path_factory.mktemp("packed")
    art = build_module(m, str(d / "out"), threads=2)
    with open(d / "out" / "model.c") as f:
        src = f.read()
    return m, ws, Ks, art, src, str(d / "out")


@pytest.mark.parametrize("M", SIZES + (300,))
def test_packed_matmul_odd_shapes(packed_grid, M):
    m, ws, Ks, art, src, _ = packed_grid
    assert src.count("moec_k_matmul_packed(") == len(m.main.outputs)  # every weight product is packed
    rng = np.random.default_rng(M)
    xs = [rng.standard_normal((M, K)).astype(np.float32) for K in Ks]
    got = art(xs)
    for (name, _), y in zip([(v, None) for v in m.main.output_names], got):
        K, N = (int(t) for t in name[1:].split("_"))
        _close(y, xs[Ks.index(K)].astype(np.float64) @ ws[f"w{K}_{N}"].astype(np.float64), K, f"M={M} K={K} N={N}")


def test_packed_matmul_threads_agree(packed_grid, tmp_path):
    """one thread and two threads (columns split at one row) give the same bits"""
    from moec.targets.registry import CpuArtifact
    m, ws, Ks, art, _, outdir = packed_grid
    one = CpuArtifact(outdir, threads=1)
    for M in (1, 33):
        xs = [np.random.default_rng(M).standard_normal((M, K)).astype(np.float32) for K in Ks]
        for a, b in zip(one(xs), art(xs)):
            np.testing.assert_array_equal(a, b)


def test_packed_matmul_rows_do_not_depend_on_the_tiling(packed_grid):
    """Each element is one chain of multiply-adds in k order whatever row tile (height 1 to MR), row block or
    call it falls in: a row's bits at M = 300 (three row blocks of near-equal height, tiles of several
    heights), 64, 13 and alone (M = 1, the GEMV) are the same.  (The AVX2 build sums even and odd k apart in
    1- to 3-row tiles: not on a 16-lane build.)"""
    from moec.targets.description import host_cpu
    m, ws, Ks, art, _, _ = packed_grid
    if gemm_pack.panel_width(host_cpu().cflags) == 16:
        pytest.skip("AVX2 build: 1- to 3-row tiles sum in another order")
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((300, K)).astype(np.float32) for K in Ks]
    full = art(xs)
    for M in (64, 13):
        for a, b in zip(art([x[:M] for x in xs]), full):
            np.testing.assert_array_equal(a, b[:M])
    for r in (0, 11, 12, 13, 95, 299):
        for a, b in zip(art([x[r:r + 1] for x in xs]), full):
            np.testing.assert_array_equal(a, b[r:r + 1])


def test_packed_matmul_batched_and_vector_activations(tmp_path):
    rng = np.random.default_rng(1)
    ws = WeightStore()
    ws.set("w", rng.standard_normal((33, 40)).astype(np.float32))
    args = [("x", ("B", "S", 33)), ("v", (33,))]
    ops = [_const("w", (33, 40)),
           f'%y = "moec.matmul"(%x, %w) : ({_tt(("B", "S", 33))}, {_tt((33, 40))}) -> {_tt(("B", "S", 40))}',
           f'%z = "moec.matmul"(%v, %w) : ({_tt((33,))}, {_tt((33, 40))}) -> {_tt((40,))}']
    m = _module(args, ops, [("y", ("B", "S", 40)), ("z", (40,))], ws)
    art = build_module(m, str(tmp_path / "out"), threads=2)
    for B, S in ((2, 5), (1, 1), (3, 0)):
        x = rng.standard_normal((B, S, 33)).astype(np.float32)
        v = rng.standard_normal(33).astype(np.float32)
        y, z = art([x, v])
        _close(y, x.astype(np.float64) @ ws["w"].astype(np.float64), 33, f"B={B} S={S}")
        _close(z, v.astype(np.float64) @ ws["w"].astype(np.float64), 33, "vector")



def test_gemm_row_blocks_threads_reuse_packed_rows(tmp_path):
    """Several row blocks x runs of panels over 2 threads: a thread packs its rows of A once per (batch, row
    block) and reuses them for its next run of panels of the same block; odd M, K, N (partial row tiles,
    a partial last panel), a packed weight (300 x 1001 @ 1001 x 1003: 3 row blocks, 4 runs each) and a
    batched product of two activations (per-batch A and B offsets).  1 and 2 threads give the same bits
    (one summation order per element), both equal numpy in float64."""
    from moec.targets.registry import CpuArtifact
    rng = np.random.default_rng(5)
    K, N = 1001, 1003
    ws = WeightStore()
    ws.set("w", (rng.standard_normal((K, N)) / 30).astype(np.float32))
    X, A, Bt = ("M", K), ("B", "S", 37), ("B", 37, 45)
    ops = [_const("w", (K, N)),
           f'%y = "moec.matmul"(%x, %w) : ({_tt(X)}, {_tt((K, N))}) -> {_tt(("M", N))}',
           f'%z = "moec.matmul"(%a, %b) : ({_tt(A)}, {_tt(Bt)}) -> {_tt(("B", "S", 45))}']
    m = _module([("x", X), ("a", A), ("b", Bt)], ops, [("y", ("M", N)), ("z", ("B", "S", 45))], ws)
    outdir = str(tmp_path / "out")
    two = build_module(m, outdir, threads=2)
    one = CpuArtifact(outdir, threads=1)
    for M, B, S in ((300, 3, 261), (129, 5, 9), (7, 2, 130)):
        xs = [rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((B, S, 37)).astype(np.float32),
              rng.standard_normal((B, 37, 45)).astype(np.float32)]
        for _ in range(2):  # (a second call: nothing is left over from the first)
            y2, z2 = two(xs)
            y1, z1 = one(xs)
            np.testing.assert_array_equal(y1, y2)
            np.testing.assert_array_equal(z1, z2)
        _close(y2, xs[0].astype(np.float64) @ ws["w"].astype(np.float64), K, f"M={M}")
        _close(z2, xs[1].astype(np.float64) @ xs[2].astype(np.float64), 37, f"B={B} S={S}")

BATCHED = {  # a shape, b shape (activations: attention scores, attention x V, broadcasting)
    "scores": (("B", "H", "S", "D"), ("B", "H", "D", "S2")),
    "bcast_a": (("B", 1, "S", "D"), ("H", "D", "S2")),
    "bcast_b": (("H", "S", "D"), ("D", "S2")),
    "vec_b": (("B", "S", "D"), ("D",)),
    "vec_a": (("D",), ("B", "D", "S2")),
}


@pytest.mark.parametrize("name", sorted(BATCHED))
def test_activation_matmul(name, tmp_path):
    sa, sb = BATCHED[name]
    ra, rb = len(sa), len(sb)
    rng = np.random.default_rng(2)
    probe = {"B": 2, "H": 3, "S": 5, "D": 7, "S2": 9}
    out = np.matmul(np.zeros([probe.get(d, d) if isinstance(d, str) else d for d in sa], np.float32),
                    np.zeros([probe.get(d, d) if isinstance(d, str) else d for d in sb], np.float32)).shape
    # output dims: symbolic where any input dim is (named by position)
    oshape = tuple(f"o{i}" for i in range(len(out)))
    m = _module([("a", sa), ("b", sb)], [f'%y = "moec.matmul"(%a, %b) : ({_tt(sa)}, {_tt(sb)}) -> {_tt(oshape)}'],
                [("y", oshape)], WeightStore())
    art = build_module(m, str(tmp_path / "out"), threads=2)
    for sizes in ({"B": 2, "H": 3, "S": 5, "D": 7, "S2": 9}, {"B": 1, "H": 2, "S": 1, "D": 1, "S2": 33},
                  {"B": 2, "H": 1, "S": 17, "D": 40, "S2": 3}, {"B": 1, "H": 1, "S": 3, "D": 0, "S2": 4}):
        a = rng.standard_normal([sizes[d] if isinstance(d, str) else d for d in sa]).astype(np.float32)
        b = rng.standard_normal([sizes[d] if isinstance(d, str) else d for d in sb]).astype(np.float32)
        (y,) = art([a, b])
        _close(y, np.matmul(a.astype(np.float64), b.astype(np.float64)), sizes["D"], f"{name} {sizes}")
        assert ra and rb


GEMMS = [  # trans_a, trans_b, c shape (None: no c), alpha, beta, b constant
    (0, 0, None, 1.0, 1.0, True),
    (0, 1, ("N",), 1.0, 1.0, True),
    (1, 1, (1, "N"), 0.5, 2.0, True),
    (1, 0, ("M", "N"), 1.0, -1.0, True),
    (0, 1, ("M", 1), 1.5, 0.25, True),
    (0, 0, (), 1.0, 3.0, True),
    (1, 1, ("N",), 1.0, 1.0, False),
    (0, 1, ("M", "N"), 2.0, 1.0, False),
]


@pytest.mark.parametrize("case", range(len(GEMMS)))
def test_gemm(case, tmp_path):
    ta, tb, cs, alpha, beta, const_b = GEMMS[case]
    K, N = 17, 33
    rng = np.random.default_rng(case)
    ws = WeightStore()
    bshape = (N, K) if tb else (K, N)
    ashape = ("K", "M") if ta else ("M", "K")
    args = [("a", ashape)]
    ops = []
    if const_b:
        ws.set("w", rng.standard_normal(bshape).astype(np.float32))
        ops.append(_const("w", bshape))
    else:
        args.append(("w", bshape))
    cshape = None
    operands, types = "%a, %w", f"{_tt(ashape)}, {_tt(bshape)}"
    if cs is not None:
        cshape = tuple(N if d == "N" else d for d in cs)
        args.append(("c", cshape))
        operands += ", %c"
        types += f", {_tt(cshape)}"
    ashape_t = tuple(K if d == "K" else d for d in ashape)
    args[0] = ("a", ashape_t)
    types = types.replace(_tt(ashape), _tt(ashape_t))
    ops.append(f'%y = "moec.gemm"({operands}) {{alpha = {float(alpha)!r} : f64, beta = {float(beta)!r} : f64, trans_a = '
               f'{"true" if ta else "false"}, trans_b = {"true" if tb else "false"}}} : ({types}) -> '
               f'{_tt(("M", N))}')
    m = _module(args, ops, [("y", ("M", N))], ws)
    art = build_module(m, str(tmp_path / "out"), threads=2)
    with open(tmp_path / "out" / "model.c") as f:
        assert ("moec_k_gemm_packed(" in f.read()) == const_b
    W = ws["w"] if const_b else rng.standard_normal(bshape).astype(np.float32)
    for M in (1, 3, 17, 40):
        a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
        ins = [a] + ([] if const_b else [W])
        want = alpha * ((a.T if ta else a).astype(np.float64) @ (W.T if tb else W).astype(np.float64))
        if cshape is not None:
            c = rng.standard_normal(tuple(M if d == "M" else d for d in cshape)).astype(np.float32)
            ins.append(c)
            want = want + beta * c.astype(np.float64)
        (y,) = art(ins)
        _close(y, want, K, f"case {GEMMS[case]} M={M}")
        np.testing.assert_allclose(y, run(m, dict(zip([n for n, _ in args], ins)))["y"], rtol=1e-4, atol=1e-4)


def test_runtime_refuses_panels_of_another_width(tmp_path, monkeypatch):
    """the panel width is checked at each call: panels packed for another vector width are an error,
    never a wrong result"""
    ws = WeightStore()
    ws.set("w", np.ones((4, 5), np.float32))
    m = _module([("x", ("M", 4))], [_const("w", (4, 5)),
                                     f'%y = "moec.matmul"(%x, %w) : ({_tt(("M", 4))}, {_tt((4, 5))}) -> {_tt(("M", 5))}'],
                [("y", ("M", 5))], ws)
    real = gemm_pack.panel_width
    monkeypatch.setattr(gemm_pack, "panel_width", lambda cflags: 2 * real(cflags))
    art = build_module(m, str(tmp_path / "out"))
    with pytest.raises(Exception, match="packed weight panels do not match"):
        art([np.ones((2, 4), np.float32)])


def _attention_mlp_model():
    """a small decoder-ish block as exporters write it: projections (MatMul + Add, Gemm transB),
    attention scores and attention x V as batched MatMuls, softmax, an output layer"""
    rng = np.random.default_rng(3)
    D, H, V = 48, 4, 101
    hd = D // H

    def w(*s):
        return (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)
    inits = {"wq": w(D, D), "wk": w(D, D), "wv": w(D, D), "bq": w(D), "wo": w(D, D), "w1": w(3 * D, D),
             "b1": w(3 * D), "w2": w(3 * D, D), "wl": w(D, V), "shp": np.array([0, -1, H, hd], np.int64),
             "shp2": np.array([0, -1, D], np.int64), "scale": np.array(1 / np.sqrt(hd), np.float32),
             "flat": np.array([-1, D], np.int64), "shp3": np.array([1, -1, V], np.int64)}
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q0"]), n("Add", ["q0", "bq"], ["q1"]),
        n("MatMul", ["x", "wk"], ["k1"]), n("MatMul", ["x", "wv"], ["v1"]),
        *[n("Reshape", [f"{t}1", "shp"], [f"{t}2"]) for t in "qkv"],
        n("Transpose", ["q2"], ["q3"], perm=[0, 2, 1, 3]), n("Transpose", ["k2"], ["k3"], perm=[0, 2, 3, 1]),
        n("Transpose", ["v2"], ["v3"], perm=[0, 2, 1, 3]),
        n("MatMul", ["q3", "k3"], ["s0"]), n("Mul", ["s0", "scale"], ["s1"]), n("Softmax", ["s1"], ["p"], axis=-1),
        n("MatMul", ["p", "v3"], ["o0"]), n("Transpose", ["o0"], ["o1"], perm=[0, 2, 1, 3]),
        n("Reshape", ["o1", "shp2"], ["o2"]), n("MatMul", ["o2", "wo"], ["o3"]), n("Add", ["x", "o3"], ["h"]),
        n("Reshape", ["h", "flat"], ["h2"]), n("Gemm", ["h2", "w1", "b1"], ["f1"], transB=1),
        n("Relu", ["f1"], ["f2"]), n("MatMul", ["f2", "w2"], ["f3"]), n("Add", ["h2", "f3"], ["h3"]),
        n("Gemm", ["h3", "wl"], ["l0"], alpha=0.5), n("Reshape", ["l0", "shp3"], ["logits"]),
    ]
    return make_model(nodes, [("x", np.float32, [1, "S", D])], [("logits", np.float32, [1, "S", V])], inits)


def test_small_model_matches_onnxruntime(tmp_path):
    """moec compile verifies against onnxruntime (the driver's check); the weight products ran packed"""
    import onnxruntime as ort
    model = _attention_mlp_model()
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    res = compile_onnx(path, str(tmp_path / "out"), CompileOptions(threads=2, symbol_sizes=(5, 1, 17)))
    assert res.report["verified"], res.report
    with open(tmp_path / "out" / "model.c") as f:
        src = f.read()
    # (k and v read x and have no bias: fuse-shared-linears made them one packed product, split after)
    assert src.count("moec_k_matmul_packed(") + src.count("moec_k_gemm_packed(") >= 3
    assert src.count("moec_k_split(") == 1
    # the bias and the two residual adds after a weight product are that product's epilogue, on its panels
    fused = [ln for ln in src.splitlines() if "moec_k_linear(" in ln]
    assert len(fused) == 3 and all(", NULL, 0," not in ln for ln in fused), fused
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(4).standard_normal((1, 33, 48)).astype(np.float32)
    want = sess.run(None, {"x": x})[0]
    got = res.artifact([x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["generic", "avx2"])
def test_other_vector_widths(arch, tmp_path):
    """the portable path (16-byte vectors, NR = 8) and AVX2 (NR = 16): panels packed for the width the
    runtime is built with, odd shapes, a transposed Gemm with a bias"""
    from moec.targets.description import cpu_target
    try:
        desc = cpu_target(arch)
    except ValueError:
        pytest.skip(f"this host cannot run {arch} code")
    if arch == "avx2" and "avx2" not in desc.isa:
        pytest.skip("no AVX2 on this host")
    rng = np.random.default_rng(5)
    ws = WeightStore()
    ws.set("w", rng.standard_normal((33, 17)).astype(np.float32))
    ws.set("wt", rng.standard_normal((19, 33)).astype(np.float32))
    ws.set("b", rng.standard_normal(19).astype(np.float32))
    ops = [_const("w", (33, 17)), _const("wt", (19, 33)), _const("b", (19,)),
           f'%y = "moec.matmul"(%x, %w) : ({_tt(("M", 33))}, {_tt((33, 17))}) -> {_tt(("M", 17))}',
           f'%z = "moec.gemm"(%x, %wt, %b) {{alpha = 1.0 : f64, beta = 1.0 : f64, trans_a = false, trans_b = true}} : '
           f'({_tt(("M", 33))}, {_tt((19, 33))}, {_tt((19,))}) -> {_tt(("M", 19))}']
    m = _module([("x", ("M", 33))], ops, [("y", ("M", 17)), ("z", ("M", 19))], ws)
    art = build_module(m, str(tmp_path / "out"), arch=arch, threads=2)
    with open(tmp_path / "out" / "model.c") as f:
        src = f.read()
    nr = gemm_pack.panel_width(desc.cflags)
    assert f", {nr}, " in src and "moec_k_gemm_packed(" in src
    for M in (1, 5, 40):
        x = rng.standard_normal((M, 33)).astype(np.float32)
        y, z = art([x])
        _close(y, x.astype(np.float64) @ ws["w"].astype(np.float64), 33, f"{arch} matmul M={M}")
        _close(z, x.astype(np.float64) @ ws["wt"].T.astype(np.float64) + ws["b"], 33, f"{arch} gemm M={M}")


def test_packed_weights_stored_once(tmp_path):
    """A weight only packed GEMMs read is stored once, as panels (issue 17: +131 MB for a 32000-wide
    output layer before), also when N needs a zero-padded last panel (the panels become its entry, its plain
    bytes are dropped); the artifact's module still loads with the plain weights; a weight another op reads
    as well keeps its bytes and gets panels appended."""
    import json
    import os
    from moec.ir import load_module
    rng = np.random.default_rng(4)
    ws = WeightStore()
    K, N, N2 = 64, 96, 40
    for k, shape in (("wa", (K, N)), ("wb", (N, K)), ("wc", (K, N)), ("wd", (K, N2))):
        ws.set(k, rng.standard_normal(shape).astype(np.float32))
    x, xn = _tt(("M", K)), _tt(("M", N))
    ops = [_const("wa", (K, N)), _const("wb", (N, K)), _const("wc", (K, N)), _const("wd", (K, N2)),
           f'%ya = "moec.matmul"(%x, %wa) : ({x}, {_tt((K, N))}) -> {xn}',
           f'%yb = "moec.gemm"(%x, %wb) {{trans_b = true}} : ({x}, {_tt((N, K))}) -> {xn}',
           f'%yc = "moec.matmul"(%x, %wc) : ({x}, {_tt((K, N))}) -> {xn}',
           f'%yc2 = "moec.add"(%yc, %wc) : ({xn}, {_tt((K, N))}) -> {xn}',  # (M = K rows) another reader
           f'%yd = "moec.matmul"(%x, %wd) : ({x}, {_tt((K, N2))}) -> {_tt(("M", N2))}']
    m = _module([("x", ("M", K))], ops, [("ya", ("M", N)), ("yb", ("M", N)), ("yc2", ("M", N)), ("yd", ("M", N2))], ws)
    out = tmp_path / "out"
    art = build_module(m, str(out))
    xv = rng.standard_normal((K, K)).astype(np.float32)
    got = art([xv])
    want = run(m, [xv])
    for g, w in zip(got, want.values()):
        _close(g, w, K, "packed")
    with open(out / "model.weights.json") as f:
        index = json.load(f)
    nr = gemm_pack.panel_width(__import__("moec.targets", fromlist=["target_for"]).target_for("cpu").cflags)
    in_place = {k for k, e in index.items() if "layout" in e}
    assert in_place == {"wa", "wb", "wd"}
    size = os.path.getsize(out / "model.weights.bin")
    # wa, wb, wd once (wd's panels padded to a multiple of nr), wc plain plus appended panels
    pad_n2 = -(-N2 // nr) * nr
    assert size <= 4 * (K * N * 2 + 2 * K * N + K * pad_n2) + 64 * 8
    m2 = load_module(str(out / "model.mlir"))
    for k in ("wa", "wb", "wc", "wd"):
        np.testing.assert_array_equal(np.asarray(m2.weights[k]), ws[k])


def test_linear_epilogue_forms(tmp_path):
    """moec.linear (fuse-linear-epilogue's op): x @ W + c with c a bias ([N], [1, 1, N]), a residual
    ([B, S, N]) or a per-row scalar ([B, S, 1]), on packed panels and on the plain path (an inline weight
    is not packed): the same bits as the matmul followed by the addition, and the op's numpy semantics"""
    from moec.ir import run
    rng = np.random.default_rng(5)
    K, N = 37, 45
    ws = WeightStore()
    w = rng.standard_normal((K, N)).astype(np.float32)
    ws.set("w", w)
    inline = np.round(rng.standard_normal((K, 3)), 2).astype(np.float32)
    ws.set("b", rng.standard_normal(N).astype(np.float32))
    ws.set("b3", rng.standard_normal((1, 1, N)).astype(np.float32))
    X, R, R1 = ("B", "S", K), ("B", "S", N), ("B", "S", 1)
    rows = ", ".join("[" + ", ".join(f"{v:.2f}" for v in r) + "]" for r in inline)
    ops = [_const("w", (K, N)), _const("b", (N,)), _const("b3", (1, 1, N)),
           f'%wi = "moec.constant"() {{value = dense<[{rows}]> : {_tt((K, 3))}}} : () -> {_tt((K, 3))}',
           f'%m = "moec.matmul"(%x, %w) : ({_tt(X)}, {_tt((K, N))}) -> {_tt(R)}']
    outs = [("m", R)]
    for name, c, cs in (("bias", "b", (N,)), ("bias3", "b3", (1, 1, N)), ("res", "r", R), ("row", "r1", R1)):
        ops.append(f'%{name} = "moec.linear"(%x, %w, %{c}) : ({_tt(X)}, {_tt((K, N))}, {_tt(cs)}) -> {_tt(R)}')
        outs.append((name, R))
    ops.append(f'%none = "moec.linear"(%x, %w) : ({_tt(X)}, {_tt((K, N))}) -> {_tt(R)}')
    ops.append(f'%plain = "moec.linear"(%x, %wi, %r1) : ({_tt(X)}, {_tt((K, 3))}, {_tt(R1)}) -> {_tt(("B", "S", 3))}')
    outs += [("none", R), ("plain", ("B", "S", 3))]
    m = _module([("x", X), ("r", R), ("r1", R1)], ops, outs, ws)
    art = build_module(m, str(tmp_path / "out"), threads=2)
    src = open(tmp_path / "out" / "model.c").read()
    assert src.count("moec_k_linear(") == 6 and src.count(", NULL, 0, ") == 1  # the inline weight: plain path
    for B, S in ((1, 1), (2, 9), (1, 40)):
        x = rng.standard_normal((B, S, K)).astype(np.float32)
        r = rng.standard_normal((B, S, N)).astype(np.float32)
        r1 = rng.standard_normal((B, S, 1)).astype(np.float32)
        got = dict(zip([v for v, _ in outs], art([x, r, r1])))
        mm = got["m"]
        np.testing.assert_array_equal(got["bias"], mm + ws["b"])
        np.testing.assert_array_equal(got["bias3"], mm + ws["b3"])
        np.testing.assert_array_equal(got["res"], mm + r)
        np.testing.assert_array_equal(got["row"], mm + r1)
        np.testing.assert_array_equal(got["none"], mm)
        want = run(m, [x, r, r1])
        for name, _ in outs:
            _close(got[name], want[name], K, f"{name} B={B} S={S}")


def test_linear_rejects_a_middle_broadcast():
    """an addend broadcast across the middle dims has no (row, column) strides: the op refuses it"""
    from moec.ir.core import IRError
    ws = WeightStore()
    ws.set("w", np.ones((4, 3), np.float32))
    ops = [_const("w", (4, 3)),
           f'%y = "moec.linear"(%x, %w, %c) : ({_tt(("B", "S", 4))}, {_tt((4, 3))}, {_tt(("B", 1, 3))}) -> '
           f'{_tt(("B", "S", 3))}']
    with pytest.raises(IRError, match="bias"):
        _module([("x", ("B", "S", 4)), ("c", ("B", 1, 3))], ops, [("y", ("B", "S", 3))], ws)


@pytest.mark.parametrize("flags,want,absent", [
    ("avx2 fma f16c", ["-mavx2", "-DMOEC_VBYTES=32"], ["-mavx512f", "-mavx512bf16"]),
    ("avx2 fma f16c avx512f avx512bw avx512vl avx512dq", ["-mavx512f", "-DMOEC_VBYTES=64"],
     ["-mavx512bf16", "-mavx512vnni"]),
    ("avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile",
     ["-mavx512bf16", "-mavx512vnni", "-DMOEC_VBYTES=64", "-mamx-tile", "-mamx-bf16", "-mamx-int8", "-DMOEC_HAVE_AMX"],
     []),
], ids=["avx2", "avx512", "avx512-bf16-vnni-amx"])
def test_kernels_follow_the_build_hosts_cpu_flags(flags, want, absent, monkeypatch):
    """The C target's flags (so the kernels compiled: vector width, vdpbf16ps, VNNI) come from the build
    host's cpuid flags (/proc/cpuinfo, faked here); AMX (amx_tile, amx_bf16, amx_int8) adds -mamx-* and
    MOEC_HAVE_AMX: the tile kernels of rt_amx.c (tests/test_amx.py)."""
    import platform

    from moec.targets import description
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 flags")
    monkeypatch.setattr(description, "_cpu_flags", lambda: tuple(flags.split()))
    description.host_cpu.cache_clear()
    try:
        d = description.host_cpu()
        assert all(f in d.cflags for f in want) and not any(f in d.cflags for f in absent), d.cflags
        assert ("amx_bf16" in d.isa) == ("amx_bf16" in flags)
    finally:
        description.host_cpu.cache_clear()


@pytest.mark.parametrize("act", ["relu", "silu", "gelu", "gelu_tanh"])
def test_linear_activation_epilogue(act, tmp_path):
    """moec.linear {activation}: applied as the GEMM's tiles are stored (packed panels, full and partial
    column panels, with and without a bias) and on the plain path; equal to the op's numpy semantics,
    relu bit for bit to the product (+ bias) then relu"""
    from moec.ir import run
    rng = np.random.default_rng(6)
    K, N = 29, 70  # 70 columns: two full 32-wide panels and a partial one
    ws = WeightStore()
    ws.set("w", rng.standard_normal((K, N)).astype(np.float32) / 3)
    ws.set("b", rng.standard_normal(N).astype(np.float32))
    inline = np.round(rng.standard_normal((K, 3)), 2).astype(np.float32)
    rows = ", ".join("[" + ", ".join(f"{v:.2f}" for v in r) + "]" for r in inline)
    X, R = ("M", K), ("M", N)
    ops = [_const("w", (K, N)), _const("b", (N,)),
           f'%wi = "moec.constant"() {{value = dense<[{rows}]> : {_tt((K, 3))}}} : () -> {_tt((K, 3))}',
           f'%m = "moec.linear"(%x, %w, %b) : ({_tt(X)}, {_tt((K, N))}, {_tt((N,))}) -> {_tt(R)}',
           f'%a = "moec.linear"(%x, %w, %b) {{activation = "{act}"}} : ({_tt(X)}, {_tt((K, N))}, {_tt((N,))}) -> {_tt(R)}',
           f'%n = "moec.linear"(%x, %w) {{activation = "{act}"}} : ({_tt(X)}, {_tt((K, N))}) -> {_tt(R)}',
           f'%p = "moec.linear"(%x, %wi) {{activation = "{act}"}} : ({_tt(X)}, {_tt((K, 3))}) -> {_tt(("M", 3))}']
    outs = [("m", R), ("a", R), ("n", R), ("p", ("M", 3))]
    m = _module([("x", X)], ops, outs, ws)
    art = build_module(m, str(tmp_path / "out"), threads=2)
    for M in (1, 7, 40):
        x = (rng.standard_normal((M, K)) * 2).astype(np.float32)
        got = dict(zip([v for v, _ in outs], art([x])))
        want = run(m, [x])
        for name, _ in outs:
            _close(got[name], want[name], K, f"{act} {name} M={M}")
        if act == "relu":
            np.testing.assert_array_equal(got["a"], np.where(got["m"] < 0, np.float32(0), got["m"]))


def test_mlp_epilogues_from_onnx_verify(tmp_path):
    """An ONNX MLP as exporters write it (MatMul + Add bias + Relu; MatMul + x * Sigmoid(x); MatMul + Gelu
    (opset 20); a residual Add): every product ends in one moec.linear with its epilogue, verified against
    onnxruntime by the driver"""
    rng = np.random.default_rng(8)
    D, F = 24, 40

    def w(*s):
        return (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32)
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["h0"]), n("Add", ["h0", "b1"], ["h1"]), n("Relu", ["h1"], ["h2"]),
             n("MatMul", ["h2", "w2"], ["g0"]), n("Sigmoid", ["g0"], ["g1"]), n("Mul", ["g0", "g1"], ["g2"]),
             n("MatMul", ["g2", "w3"], ["e0"]), n("Gelu", ["e0"], ["e1"]),
             n("MatMul", ["e1", "w4"], ["o0"]), n("Add", ["x", "o0"], ["y"])]
    model = make_model(nodes, [("x", np.float32, ["B", "S", D])], [("y", np.float32, ["B", "S", D])],
                       {"w1": w(D, F), "b1": w(F), "w2": w(F, F), "w3": w(F, F), "w4": w(F, D)}, opset=20)
    res = compile_onnx(model, str(tmp_path / "out"), CompileOptions(force=True, symbol_sizes=(5, 1, 3)))
    assert res.report["verified"], res.report.get("failure")
    lin = [o.attrs["activation"] for o in res.module.main.ops if o.name == "moec.linear"]
    assert lin == ["relu", "silu", "gelu", "none"], [o.name for o in res.module.main.ops]


def _act64(act, y):
    """float64 activations of float32 inputs (math.erfc: no cancellation in gelu's negative tail)"""
    y = y.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if act == "silu":
            return y / (1.0 + np.exp(-y))
        if act == "gelu":
            return 0.5 * y * np.vectorize(math.erfc, otypes=[np.float64])(-y / math.sqrt(2.0))
        # (1 + tanh(u)) / 2 as 1 / (1 + e^-2u): 1 + tanh(u) cancels below u ~ -19 even in float64
        return y / (1.0 + np.exp(-2.0 * math.sqrt(2.0 / math.pi) * (y + 0.044715 * y ** 3)))


def _ulps(got, want):
    """|got - want| in units of the float32 spacing at want (want a normal float32)"""
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


ACT_ULPS = {"silu": 4, "gelu": 8, "gelu_tanh": 12}  # on |y| <= 8 (gelu_tanh: 2); measured: the test's docstring


@pytest.mark.parametrize("arch", ["native", pytest.param("avx2", marks=pytest.mark.slow),
                                  pytest.param("generic", marks=pytest.mark.slow)])
def test_vector_activations_accuracy(arch, tmp_path):
    """moec.linear's activation epilogue (rt_vmath.h's vector exp / erfc; every lane and a row's tail through
    one formula) against float64: a residual c of 67 columns (two full panels and a tail of 3) carries the
    values through act(0 @ w + c).  Measured on AVX-512 over ~40,000 values: silu 2.9 ulp on |y| <= 8 and
    1.8e-7 relative wherever e^y is a normal float (y >= -87.3; below, an absolute error under 1e-35); gelu
    5.4 ulp on |y| <= 8 and 3.6e-7 relative wherever the result is a normal float (erfc form: no cancellation
    in the negative tail, where the scalar 1 + erf lost every digit below y ~ -6); gelu_tanh 6.5 ulp on
    |y| <= 2, beyond within |2u| 2^-21 + 8 2^-24 relative (9.0e-6 at y = -6.73: u = c (v + 0.044715 v^3) is
    rounded in f32, as the op's own semantics round it).  Limits: act(+inf) = +inf, silu/gelu(-inf) = NaN
    (y * 0, as the reference), NaN stays NaN.  -m slow: the same bounds for 8- and 4-lane builds."""
    N, rows = 67, 600
    rng = np.random.default_rng(11)
    grid = np.concatenate([np.linspace(-8, 8, 20001), np.linspace(-120, 120, 12001),
                           np.geomspace(1e-30, 1e4, 2000), -np.geomspace(1e-30, 1e4, 2000),
                           rng.standard_normal(2000) * 3]).astype(np.float32)
    vals = np.zeros(rows * N, np.float32)
    vals[:grid.size] = grid
    specials = np.array([np.inf, -np.inf, np.nan, 0.0, 88.0, -88.0, 1e30, -1e30, 200.0, -200.0], np.float32)
    vals[-specials.size:] = specials
    c = vals.reshape(rows, N)
    ws = WeightStore()
    ws.set("w", np.zeros((1, N), np.float32))
    X, R = ("M", 1), ("M", N)
    acts = ("silu", "gelu", "gelu_tanh")
    ops = [_const("w", (1, N))] + [
        f'%{a} = "moec.linear"(%x, %w, %c) {{activation = "{a}"}} : ({_tt(X)}, {_tt((1, N))}, {_tt(R)}) -> {_tt(R)}'
        for a in acts]
    m = _module([("x", X), ("c", R)], ops, [(a, R) for a in acts], ws)
    art = build_module(m, str(tmp_path / "out"), arch=arch, threads=1)
    for act, got in zip(acts, art([np.zeros((rows, 1), np.float32), c])):
        _check_act(act, got.reshape(-1), vals, specials.size)


def _check_act(act, got, vals, nspecial):
    want = _act64(act, vals)
    fin = np.isfinite(vals)
    normal = fin & (np.abs(want) >= np.finfo(np.float32).tiny) & (np.abs(want) < 3e38)
    u2 = 1.5957691216057308 * (vals.astype(np.float64) + 0.044715 * vals.astype(np.float64) ** 3)  # gelu_tanh's 2u
    if act != "gelu":  # where e^y (silu) or e^2u (gelu_tanh) stays a normal float
        normal &= (vals if act == "silu" else u2) >= -87.3
    small = normal & (np.abs(vals) <= (2 if act == "gelu_tanh" else 8))
    u = _ulps(got[small], want[small])
    g, w, v = got[normal].astype(np.float64), want[normal], vals[normal].astype(np.float64)
    rel = np.abs(g - w) / np.abs(w)
    print(f"{act}: max {u.max():.2f} ulp on |y| <= {2 if act == 'gelu_tanh' else 8} ({small.sum()} values); "
          f"max relative error {rel.max():.3g} over {normal.sum()} values with a normal result")
    assert u.max() <= ACT_ULPS[act], (act, u.max(), vals[small][u.argmax()])
    if act == "gelu_tanh":
        bound = np.abs(1.5957691216057308 * (v + 0.044715 * v ** 3)) * 2.0 ** -21 + 8 * 2.0 ** -24
    else:
        bound = np.full(v.shape, 1e-6)
    assert (rel <= bound).all(), (rel.max(), v[(rel / bound).argmax()])
    rest = fin & ~normal & (np.abs(want) < 1)  # results below the normal range: an absolute error only
    assert (np.abs(got[rest].astype(np.float64) - want[rest]) < 1e-35).all()
    s = got[-nspecial:]
    assert s[0] == np.inf and np.isnan(s[2]) and s[3] == 0.0 and s[6] == np.float32(1e30) and abs(s[7]) < 1e-35
    assert np.isnan(s[1]) or (act == "gelu_tanh" and s[1] == 0.0)


def test_packed_reduction_in_several_slices(tmp_path):
    """A prepacked panel's reduction in several K slices (slices of a packed panel are at most 256 KiB,
    KC x NR floats: K = 8200 is 2 to 5 slices of equal length at every vector width): C tiles carried
    from slice to slice, alpha, the bias and the activation applied once, after the last slice; full and
    partial panels; 1 and 2 threads give the same bits; equal to numpy in float64 / the op's semantics."""
    from moec.ir import run
    from moec.targets.registry import CpuArtifact
    rng = np.random.default_rng(8)
    K, N = 8200, 70
    ws = WeightStore()
    ws.set("w", rng.standard_normal((K, N)).astype(np.float32) / 30)
    ws.set("b", rng.standard_normal(N).astype(np.float32))
    X, R = ("M", K), ("M", N)
    ops = [_const("w", (K, N)), _const("b", (N,)),
           f'%y = "moec.matmul"(%x, %w) : ({_tt(X)}, {_tt((K, N))}) -> {_tt(R)}',
           f'%a = "moec.linear"(%x, %w, %b) {{activation = "silu"}} : ({_tt(X)}, {_tt((K, N))}, {_tt((N,))}) -> '
           f'{_tt(R)}',
           f'%g = "moec.gemm"(%x, %w, %b) {{alpha = 0.5 : f64, beta = 2.0 : f64, trans_a = false, trans_b = false}} : '
           f'({_tt(X)}, {_tt((K, N))}, {_tt((N,))}) -> {_tt(R)}']
    outs = [("y", R), ("a", R), ("g", R)]
    m = _module([("x", X)], ops, outs, ws)
    out = str(tmp_path / "out")
    art = build_module(m, out, threads=2)
    with open(tmp_path / "out" / "model.c") as f:
        src = f.read()
    assert "moec_k_matmul_packed(" in src and "moec_k_gemm_packed(" in src
    one = CpuArtifact(out, threads=1)
    w64, b64 = ws["w"].astype(np.float64), ws["b"].astype(np.float64)
    for M in (1, 9, 40):
        x = rng.standard_normal((M, K)).astype(np.float32)
        got = art([x])
        for a, b in zip(one([x]), got):
            np.testing.assert_array_equal(a, b)
        y, a, g = got
        _close(y, x.astype(np.float64) @ w64, K, f"matmul M={M}")
        _close(g, 0.5 * (x.astype(np.float64) @ w64) + 2.0 * b64, K, f"gemm M={M}")
        _close(a, run(m, [x])["a"], K, f"linear silu M={M}")
