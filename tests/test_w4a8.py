"""w4a8 (issue 17): int4 weights x dynamic int8 activations, ``moec compile --weights int4 --activations int8``.

The GEMM inputs are quantised per row and int4 group (s = max|group| / 127, q = rint(a / s) clipped to
+-127), the products are exact int32 sums per group (nibbles x codes, the zero point once per group), then
scaled by the weight and activation scales in f32 (rt_moe_f32.c: tile_w4a8, VNNI / AVX-512BW / AVX2 /
portable C).  Checked here: the op's numpy semantics against numpy written here, the C kernels (experts and
dense linear layers; VNNI, AVX-512BW without VNNI, AVX2, generic C) against integer arithmetic written here at odd sizes, a zoo
MoE model and a dense model through the CLI with their error reports, and the option refused elsewhere."""
import json
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from helpers import experts_module

from moec.driver import CompileOptions, build_module, compile_onnx
from moec.errors import UserInputError
from moec.ir import run
from moec.ir.ops.moe import fake_quant_rows_int8, quantize_rows_int8
from moec.passes.quantize import QuantizeWeights, mode_for, quantize_int4

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "mixtral_like.onnx")
DENSE = ("bf16", "int8", "int4", "w8a8", "w4a8")


# -- numpy written here: the documented quantisation, integer dot products ----------------------------
def _qgroups(a, G):
    """rows [n, K] -> (codes int64 [n, K], scales f32 [n, K/G]): per group, f32 scale max|group| / 127
    (1 for a zero group), rint (half to even), clip to +-127."""
    a = np.asarray(a, np.float32)
    n, K = a.shape
    G = G or K
    g = a.reshape(n, K // G, G)
    amax = np.abs(g).max(-1)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(g / s[..., None]), -127, 127).astype(np.int64)
    return q.reshape(n, K), s


def _nibbles(packed):
    p = np.asarray(packed, np.int64)
    out = np.empty(p.shape[:-1] + (2 * p.shape[-1],), np.int64)
    out[..., 0::2], out[..., 1::2] = p & 15, p >> 4
    return out


def _w4a8_product(a, packed, s_w, z, G):
    """y [n, N] = sum_g (sum_k (nib - z) q) * s_w[:, g] * s_a[:, g]: exact integer group sums, float64 after."""
    n, K = a.shape
    G = G or K
    q, s_a = _qgroups(a, G)
    nib = _nibbles(packed)                                    # [N, K]
    zz = np.full(s_w.shape, 8, np.int64) if z is None else np.asarray(z).astype(np.int64)
    w = nib - np.repeat(zz, G, axis=-1)                       # [N, K] integers in [-15, 15]
    y = np.zeros((n, packed.shape[0]))
    for g in range(K // G):
        dot = q[:, g * G:(g + 1) * G] @ w[:, g * G:(g + 1) * G].T  # exact int64
        y += dot * (s_w[:, g].astype(np.float64)[None, :] * s_a[:, g].astype(np.float64)[:, None])
    return y


def test_group_quantisation_of_the_reference():
    """quantize_rows_int8(a, G): a scale per G elements of each row, as written here; G=0 the whole row
    (w8a8's); a zero group gets scale 1 and codes 0; exact .5 ties round to even."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 24)).astype(np.float32)
    a[0, 1, 6:12] = 0.0
    a[1, 2, :6] = np.float32([127, 0.5, 1.5, -2.5, 3.5, -0.5]) / 127 * 2  # scale 2/127: codes at .5 ties
    q, s = quantize_rows_int8(a, 6)
    wq, ws = _qgroups(a.reshape(-1, 24), 6)
    assert s.shape == (3, 4, 4) and np.array_equal(s.reshape(-1, 4), ws)
    assert np.array_equal(q.reshape(-1, 24).astype(np.int64), wq)
    assert s[0, 1, 1] == 1 and not q[0, 1, 6:12].any()
    assert list(q[1, 2, :6]) == [127, 0, 2, -2, 4, 0]
    fq = fake_quant_rows_int8(a, 6)
    assert np.array_equal(fq, (q.astype(np.float32) * np.repeat(s, 6, axis=-1)).astype(np.float32))
    q0, s0 = quantize_rows_int8(a, 0)
    assert s0.shape == (3, 4) and np.array_equal(fake_quant_rows_int8(a), fake_quant_rows_int8(a, 0))


# -- dense linear layers (moec.linear_q) ------------------------------------------------------------
def _dense_module(K, N, G, zp, seed=0):
    from test_dense_quant import _module, _weights
    ws = _weights(K, N, seed)
    m = _module(K, N, ws)
    QuantizeWeights("w4a8", G, zp, scope="all", dense_modes=DENSE).run(m)
    ops = [o for o in m.main.ops if o.name == "moec.linear_q"]
    assert len(ops) == 2 and all(o.attrs["wq"] == "int4" and o.attrs["aq"] == "int8" for o in ops)
    return m, ws


def _dense_operands(m):
    """(packed, s, z) of each linear_q in order, from the module's constants."""
    from moec.ir.opdef import const_value
    out = []
    for o in m.main.ops:
        if o.name == "moec.linear_q":
            vals = [const_value(v, m.weights) for v in o.operands[1:]]
            out.append((vals[0], vals[1], vals[2] if o.attrs["wq_zp"] else None))
    return out


@pytest.mark.parametrize("G,zp", [(32, False), (16, True), (0, False)])
def test_linear_q_reference_is_the_integer_product(G, zp):
    """The op's reference (dequantise, fake-quantise x per group, f32 matmul) equals the exact integer group
    sums written here to f32 rounding."""
    K, N = 64, 24
    m, ws = _dense_module(K, N, G, zp)
    x = np.random.default_rng(2).standard_normal((5, K)).astype(np.float32)
    got = run(m, [x])
    (py, sy, zy), (pz, sz, zz) = _dense_operands(m)
    want_y = _w4a8_product(x, py, sy, zy, G)
    want_z = _w4a8_product(x, pz, sz, zz, G) + ws["b"]
    for g, w in ((got["y"], want_y), (got["z"], want_z)):
        assert np.abs(g - w).max() <= 1e-5 * np.abs(w).max(), np.abs(g - w).max()
    # and it is not int4 weight-only: the activations' rounding is visible
    m4, _ = __import__("test_dense_quant")._quantised("int4", K, N, G, zp)
    assert np.abs(run(m4, [x])["y"] - got["y"]).max() > 1e-4 * np.abs(want_y).max()


@pytest.fixture
def no_vnni(monkeypatch):
    """An AVX-512 build host without VNNI (the cpuid flags faked, for one test): the AVX-512BW vpmaddubsw path."""
    from moec.targets import description
    flags = description._cpu_flags()
    if "avx512bw" not in flags:
        pytest.skip("this host has no AVX-512BW")
    monkeypatch.setattr(description, "_cpu_flags", lambda: tuple(f for f in flags if f != "avx512_vnni"))
    description.host_cpu.cache_clear()
    assert "-mavx512vnni" not in description.host_cpu().cflags
    yield
    monkeypatch.undo()
    description.host_cpu.cache_clear()
    assert "avx512_vnni" not in flags or "-mavx512vnni" in description.host_cpu().cflags


# K (a multiple of neither the 4-byte dot step nor 32 in some), N (not a multiple of the 32-column panel),
# the group (whole row; 6 and 10: not a multiple of 4, padded in the panel)
DENSE_CASES = [(64, 40, 32, False), (36, 33, 6, True), (30, 17, 0, False), (100, 70, 10, True)]


def _check_dense(arch, tmp_path, cases=DENSE_CASES, rows=(1, 2, 7, 19, 70)):
    for i, (K, N, G, zp) in enumerate(cases):
        m, ws = _dense_module(K, N, G, zp, seed=i)
        art = build_module(m, str(tmp_path / f"d{i}"), arch=arch, threads=2)
        (py, sy, zy), (pz, sz, zz) = _dense_operands(m)
        for M in rows:
            x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
            if M > 2:
                x[1] = 0.0  # an all-zero row: scales 1, codes 0
            y, z = art([x])
            want_y = _w4a8_product(x, py, sy, zy, G)
            want_z = _w4a8_product(x, pz, sz, zz, G) + ws["b"]
            ref = run(m, [x])
            for g, w, r in ((y, want_y, ref["y"]), (z, want_z, ref["z"])):
                tol = 2e-6 * np.abs(w).max() * np.sqrt(K)
                assert np.abs(g - w).max() <= tol and np.abs(g - r).max() <= tol, (arch, K, N, G, zp, M)


def _extreme_module(K, N, G, zp):
    """w4a8 linear_q's whose int4 codes reach 0 and 15 and whose zero points are 0 and 15 (zp): groups of each
    column alternate between all >= 0 (z = 0; the zeros code 0, the maxima 15) and all <= 0 (z = 15; the
    minima code 0); symmetric, the codes 1 and 15 (+-max|group|)."""
    from test_dense_quant import _module
    from moec.ir import WeightStore
    rng = np.random.default_rng(K + N + G)
    Gx = G or K
    w = np.where(rng.random((K, N)) < 0.5, 0.0, 1.0) * rng.choice([1.0, 3.0], (1, N))
    sign = np.repeat(np.where((np.arange(K // Gx)[:, None] + np.arange(N)[None, :]) % 2, -1.0, 1.0), Gx, axis=0)
    w = (w * sign if zp else np.where(w == 0, -1.0, 1.0) * sign).astype(np.float32)
    ws = WeightStore()
    ws.set("w", w)
    ws.set("wt", np.ascontiguousarray(w.T[::-1]))
    ws.set("b", np.zeros(N, np.float32))
    m = _module(K, N, ws)
    QuantizeWeights("w4a8", G, zp, scope="all", dense_modes=DENSE).run(m)
    return m, ws


@pytest.mark.parametrize("zp", [True, False])
def test_dense_kernel_extreme_codes(zp, tmp_path):
    """Codes 0 and 15, zero points 0 and 15, activation codes +-127 (rows of equal magnitudes), groups 32 and
    128: the exact integer product (the starting values quant_row_g forms, -8 x the code sums, and the zero points'
    -z sumq at their largest)."""
    for G in (32, 128):
        K, N = 256, 40
        m, _ = _extreme_module(K, N, G, zp)
        (py, sy, zy), _ = _dense_operands(m)
        nib = _nibbles(py)
        assert nib.min() == (0 if zp else 1) and nib.max() == 15
        if zp:
            assert set(np.unique(zy)) == {0.0, 15.0}
        art = build_module(m, str(tmp_path / f"x{G}{zp}"), threads=2)
        for M in (1, 3, 5, 6, 8, 9):  # (5 and 6: tile_w4a8's 4 + 1 and 4 + 2 rows)
            x = np.where(np.random.default_rng(M).random((M, K)) < 0.5, -2.0, 2.0).astype(np.float32)
            y, _ = art([x])
            want = _w4a8_product(x, py, sy, zy, G)
            assert np.abs(y - want).max() <= 2e-6 * np.abs(want).max() * np.sqrt(K), (G, zp, M)


@pytest.mark.slow
@pytest.mark.parametrize("zp", [True, False])
def test_dense_kernel_group_past_the_in_place_bound(zp, tmp_path):
    """One group of K = 131080 (whole row): padded to more than 65536, where the VNNI tile's high nibbles are
    shifted down instead of kept in place (W4A8_HI_SHIFT 0) and quant_row_g's starting values follow; against the
    exact integer product (~6 s)."""
    _check_dense("native", tmp_path, cases=[(131080, 20, 0, zp)], rows=(1, 3, 9))


def test_dense_kernel_native(tmp_path):
    """The host's kernel (VNNI where present): GEMV rows (1, 2), a partial row tile, several tiles."""
    _check_dense("native", tmp_path)


@pytest.mark.parametrize("arch", ["generic", "avx2", "avx512bw"])
def test_dense_kernel_portable_paths(arch, tmp_path, request):
    """Builds without VNNI give the same integers: plain C (generic), AVX2's and AVX-512BW's vpmaddubsw."""
    if arch == "avx512bw":
        request.getfixturevalue("no_vnni")
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    _check_dense("native" if arch == "avx512bw" else arch, tmp_path, DENSE_CASES[1:3], rows=(1, 2, 19))


# -- routed experts (moe.experts, prefill tiles and decode) ------------------------------------------
def _experts(D, F, G, zp, E=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    m = experts_module("none", w_in, w_out, [], "T", D, E, k)
    QuantizeWeights("w4a8", G, zp, scope="experts").run(m)
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert (ex.attrs["wq"], ex.attrs["aq"], ex.attrs["wq_group"], ex.attrs["wq_zp"]) == ("int4", "int8", G, zp)
    return m, w_in, w_out


def _experts_numpy(x, logits, D, F, G, zp, w_in, w_out, k=2):
    """The layer written here: softmax top-k routing, per expert the exact w4a8 products of x, SwiGLU in f32,
    the w4a8 product of the activation; combine with the routing weights."""
    qi, si, zi = quantize_int4(w_in, G, zp)
    qo, so, zo = quantize_int4(w_out, G, zp)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    y = np.zeros((len(x), D))
    for t in range(len(x)):
        for e in top[t]:
            h = _w4a8_product(x[t:t + 1], qi[e], si[e], None if zi is None else zi[e], G)[0].astype(np.float32)
            g, u = h[:F], h[F:]
            a = (g / (1 + np.exp(-g)) * u).astype(np.float32)
            y[t] += p[t, e] * _w4a8_product(a[None], qo[e], so[e], None if zo is None else zo[e], G)[0]
    return y


EXPERT_CASES = [(96, 64, 32, False), (36, 24, 6, True), (30, 22, 0, False)]


def _expert_params():
    """Each case on each build (native, generic C, AVX2): by default case i on build i (every build and every
    case once, each a C build of its own), the rest of the cross product with -m slow."""
    for j, arch in enumerate(("native", "generic", "avx2")):
        for i, case in enumerate(EXPERT_CASES):
            yield pytest.param(arch, *case, marks=[] if i == j else [pytest.mark.slow])


@pytest.mark.parametrize("arch,D,F,G,zp", list(_expert_params()))
def test_experts_kernel_against_integer_numpy(arch, D, F, G, zp, tmp_path):
    """T = 1 and 2 (decode), 5 and 40 (> 16 rows: several row tiles per expert), against the integer numpy
    above and the op's reference.  An element whose f32 activation sits within an ulp of a rounding
    boundary may flip one code between numpy and C (one step of one term): the tolerance allows that, the
    median must be at f32 rounding."""
    if arch == "avx2":
        from moec.targets.description import host_cpu
        if "avx2" not in host_cpu().isa:
            pytest.skip("this host has no AVX2")
    m, w_in, w_out = _experts(D, F, G, zp)
    art = build_module(m, str(tmp_path / "x"), arch=arch, threads=2)
    rng = np.random.default_rng(D + F)
    T = 40
    x = rng.standard_normal((T, D)).astype(np.float32)
    x[3] = 0.0
    logits = rng.standard_normal((T, 3)).astype(np.float32)
    want = _experts_numpy(x, logits, D, F, G, zp, w_in, w_out)
    for n in (1, 2, 5, T):
        got = art([x[:n], logits[:n]])[0]
        ref = list(run(m, [x[:n], logits[:n]]).values())[0]
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want[:n], rtol=1.6e-2, atol=1.6e-2 * scale)
        assert np.median(np.abs(got - want[:n])) < 1e-5 * scale
        assert np.median(np.abs(got - ref)) < 1e-5 * scale and np.abs(got - ref).max() < 1.6e-2 * scale


def test_experts_kernel_avx512bw_without_vnni(no_vnni, tmp_path):
    D, F, G, zp = EXPERT_CASES[1]
    m, w_in, w_out = _experts(D, F, G, zp)
    art = build_module(m, str(tmp_path / "x"), arch="native", threads=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((24, D)).astype(np.float32)
    logits = rng.standard_normal((24, 3)).astype(np.float32)
    want = _experts_numpy(x, logits, D, F, G, zp, w_in, w_out)
    for n in (1, 24):
        got = art([x[:n], logits[:n]])[0]
        assert np.median(np.abs(got - want[:n])) < 1e-5 * np.abs(want).max()
        np.testing.assert_allclose(got, want[:n], rtol=1.6e-2, atol=1.6e-2 * np.abs(want).max())


# -- the option, end to end -------------------------------------------------------------------------
def test_mode_of_the_flags():
    assert mode_for("int4", "int8") == "w4a8" and mode_for("w4a8", "int8") == "w4a8"
    assert mode_for("int8", "int8") == "w8a8" and mode_for("int4", "none") == "int4"
    with pytest.raises(ValueError, match="--activations fp8 with --weights int4"):
        mode_for("int4", "fp8")


def test_zoo_mixtral_through_the_cli(tmp_path):
    """`moec compile --weights int4 --activations int8` on a zoo Mixtral (every linear layer): verified
    against the w4a8 module's reference, the error vs the f32 model reported and within its bound, the
    layer records say what the activations are."""
    import onnx

    from moec.cli import main
    from zoo import ZOO
    e = next(z for z in ZOO if z.name == "mixtral_dynamo")
    path = tmp_path / "m.onnx"
    onnx.save(e.build(), str(path))
    out = tmp_path / "out"
    assert main(["compile", str(path), "-o", str(out), "--weights", "int4", "--activations", "int8",
                 "--group-size", "16", "--sizes", "5,1"]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"], rep.get("failure")
    assert rep["weights"]["mode"] == "w4a8"
    q = rep["quantization_error"]
    assert 0 < q["token_rel_median"] <= q["bound_token_rel_median"] == 0.5 and q["tokens_over_4x_bound"] == 0
    w = rep["moe_layers"][0]["weights"]
    assert w["mode"] == "w4a8" and w["activations"].startswith("int8, dynamic per token and group of 16"), w
    text = open(out / "model.mlir").read()
    assert 'aq = "int8"' in text and 'wq = "int4"' in text


def _dense_onnx(path, K=64, N=48, T="T"):
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32) * 0.1, "W")
    b = numpy_helper.from_array(rng.standard_normal((N,)).astype(np.float32), "B")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
                          "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, N])], [w, b])
    import onnx
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_dense_model_through_the_cli(tmp_path):
    """A MatMul + bias with a constant weight becomes one w4a8 linear_q, verified (onnxruntime's f32 model for
    the error, the module's reference for the kernels) with the dense record in the report."""
    from moec.cli import main
    path = tmp_path / "d.onnx"
    _dense_onnx(path)
    out = tmp_path / "out"
    assert main(["compile", str(path), "-o", str(out), "--weights", "int4", "--activations", "int8",
                 "--group-size", "32", "--sizes", "3,1,17"]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"], rep.get("failure")
    assert rep["op_histogram"].get("moec.linear_q") == 1, rep["op_histogram"]
    q = rep["quantization_error"]
    assert 0 < q["token_rel_median"] <= 0.5
    text = open(out / "model.mlir").read()
    assert 'aq = "int8"' in text and 'wq_group = 32' in text


@pytest.mark.parametrize("target", ["triton", "ascend"])
def test_refused_where_not_implemented(tmp_path, target, capsys):
    from moec.cli import main
    assert main(["compile", EXAMPLE, "-o", str(tmp_path / "o"), "--target", target, "--weights", "int4",
                 "--activations", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"target {target}: --weights int4 --activations int8" in err[0] and \
        "cpu target only" in err[0], err
    with pytest.raises(UserInputError, match="cpu target only"):
        compile_onnx(EXAMPLE, str(tmp_path / "p"), CompileOptions(weights="w4a8", target=target))


def test_api_activations_argument(tmp_path):
    import moec
    with pytest.raises(UserInputError, match="activations=int8 with weights=int4.*not implemented|cpu target only"):
        moec.compile(EXAMPLE, target="ascend", weights="int4", activations="int8")


@pytest.mark.slow
def test_real_causal_lm_through_the_api(tmp_path, monkeypatch):
    """moec.compile(weights="int4", activations="int8") on a real transformers 2-layer Mixtral CausalLM:
    attention projections, output layer and routed experts w4a8, the router kept; verified by the driver
    (the module's reference, the flip criterion) and the logits within the bound of eager's."""
    torch = pytest.importorskip("torch")
    import moec
    from test_hf_compile import causal_lm
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    model = causal_lm("mixtral", "batched_mm")
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    cm = moec.compile(model, (ids,), weights="int4", activations="int8", group_size=16,
                      dynamic_dims={0: {0: "B", 1: "S"}})
    rep = cm.stats.report
    assert rep["verified"], rep.get("failure")
    assert rep["weights"]["mode"] == "w4a8"
    assert rep["op_histogram"].get("moec.linear_q", 0) >= 7, rep["op_histogram"]
    xs = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(xs, use_cache=False).logits.float().numpy()
    out = cm(xs)
    got = np.asarray(out.detach().numpy() if hasattr(out, "detach") else out, np.float32)
    from moec.tolerances import QUANT_ERROR_BOUNDS, quantization_error
    q = quantization_error([got], [want], QUANT_ERROR_BOUNDS["w4a8"])
    assert q["token_rel_median"] <= QUANT_ERROR_BOUNDS["w4a8"], q


@pytest.mark.parametrize("mode", ["w4a8", "w8a8"])
def test_nan_in_a_row_propagates_as_in_the_reference(mode, tmp_path):
    """A NaN in a GEMM input row makes that row's group scale (w4a8) or row scale (w8a8) NaN, so its outputs are
    NaN as in the reference (fake-quantised x is NaN there); the other rows are unaffected."""
    from test_dense_quant import _module, _weights
    K, N = 64, 40
    ws = _weights(K, N)
    m = _module(K, N, ws)
    QuantizeWeights(mode, 32, False, scope="all", dense_modes=DENSE).run(m)
    art = build_module(m, str(tmp_path / mode), threads=2)
    x = np.random.default_rng(5).standard_normal((9, K)).astype(np.float32)
    x[2, 40] = np.nan
    x[0, 3] = np.nan
    for rows in (x[:1], x):
        got = art([rows])
        want = run(m, [rows])
        for g, w in zip(got, want.values()):
            assert np.array_equal(np.isnan(g), np.isnan(w)) and np.isnan(g[0]).all()
            ok = ~np.isnan(w)
            assert ok.sum() == (~np.isnan(rows).any(1)).sum() * N  # (the NaN rows only)
            if ok.any():
                assert np.abs(g[ok] - w[ok]).max() <= 2e-6 * np.abs(w[ok]).max() * np.sqrt(K)


# -- the panels written at compile time -----------------------------------------------------------------
def _w4a8_entries(d):
    import json as _json
    with open(os.path.join(d, "model.weights.json")) as f:
        return {k: e for k, e in _json.load(f).items() if e.get("layout", {}).get("kind") in ("w4a8_nibbles", "group_major")}


# in place (N % 32 == 0, G % 4 == 0), padded columns (N = 70, 33: not a multiple of 16 either) and groups not a
# multiple of 4 (the panels larger: moved to the end of the file), groups 32 / 64 / 128 / whole row, zero points
PANEL_CASES = [(64, 96, 32, False), (128, 64, 64, True), (256, 32, 128, False), (100, 70, 10, True), (36, 33, 0, False)]


def test_w4a8_panels_packed_at_compile_time(tmp_path):
    """moec.linear_q's int4 weights with int8 activations are stored as tile_w4a8's nibble panels and their scales
    and zero points group-major (ir/weight_layouts.py), each in the place of the tensor it stands for when it has
    its size (no second copy: nothing is packed or cached at run time); the results are bit-identical to the same
    weights inline (packed per work item) at 1, 2, 5, 19 rows; the module reloads the plain tensors."""
    from test_bf16_prepack import _inline, _stored_once
    from moec.ir import load_module
    for i, (K, N, G, zp) in enumerate(PANEL_CASES):
        m, _ = _dense_module(K, N, G, zp, seed=i)
        d = tmp_path / f"d{i}"
        packed = build_module(m, str(d), threads=2)
        ents = _w4a8_entries(d)
        kinds = sorted(e["layout"]["kind"] for e in ents.values())
        assert kinds == ["group_major"] * (4 if zp else 2) + ["w4a8_nibbles"] * 2, (K, N, G, zp, kinds)
        assert all(e["layout"].get("group", G or K) == (G or K) for e in ents.values())
        _stored_once(d)
        src = open(d / "model.c").read()
        assert src.count(".pks_in = &") == 2 and src.count(".pkz_in = &") == (2 if zp else 0)
        plain = build_module(_inline(m, set(ents)), str(tmp_path / f"i{i}"), threads=2)
        assert ".pk_in = NULL" in open(tmp_path / f"i{i}" / "model.c").read()
        for M in (1, 2, 5, 19):
            x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
            for g, w in zip(packed([x]), plain([x])):
                np.testing.assert_array_equal(g, w, err_msg=f"K={K} N={N} G={G} zp={zp} M={M}")
        m2 = load_module(str(d / "model.mlir"))
        for k2 in ents:
            np.testing.assert_array_equal(np.asarray(m2.weights[k2]), np.asarray(m.weights[k2]))


@pytest.mark.parametrize("D,F,G,zp", [(80, 48, 16, True), (96, 40, 0, False)])
def test_w4a8_expert_panels_packed_at_compile_time(D, F, G, zp, tmp_path):
    """moe.experts' w_in / w_out, scales and zero points as compile-time panels: bit-identical to the weights
    inline at 1 token (6 of 8 experts without a token), 2 and 40 tokens; against the integer numpy."""
    from test_bf16_prepack import _inline, _stored_once
    m, w_in, w_out = _experts(D, F, G, zp, E=8)
    packed = build_module(m, str(tmp_path / "x"), threads=2)
    ents = _w4a8_entries(tmp_path / "x")
    assert len(ents) == (6 if zp else 4)
    _stored_once(tmp_path / "x")
    plain = build_module(_inline(m, set(ents)), str(tmp_path / "xi"), threads=2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, D)).astype(np.float32)
    logits = rng.standard_normal((40, 8)).astype(np.float32)
    want = _experts_numpy(x, logits, D, F, G, zp, w_in, w_out)
    for T in (1, 2, 40):
        got = packed([x[:T], logits[:T]])[0]
        np.testing.assert_array_equal(got, plain([x[:T], logits[:T]])[0], err_msg=f"T={T}")
        assert np.median(np.abs(got - want[:T])) < 1e-5 * np.abs(want).max()
