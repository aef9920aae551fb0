"""Prefill work outside the GEMMs (issue 17): the activation rows of the quantised GEMMs prepared in parallel
(rounded to bf16 pairs in one pass, quantised to int8 on 16 lanes), transposes copied as runs, RMSNorm rows
interleaved and in parallel, rotary and the attention's masked scores on vectors, integer / bool elementwise
ops without the per-element type switch.  Each kernel against numpy (or the op's reference semantics), at
sizes that take the new paths (parallel preparation from 32768 values, RMSNorm from 65536) and their edges:
ties of the int8 rounding, NaN / inf / all-zero rows, odd K, rows not a multiple of the interleave."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import experts_module, make_model, run_compiled, tensor_info
from moec.driver import build_module
from moec.ir import parse_module, run
from moec.passes.quantize import QuantizeWeights


def _linear_module(K, N, seed=0):
    from test_dense_quant import _module, _weights
    return _module(K, N, _weights(K, N, seed))


def _special_rows(M, K, seed):
    """standard normal rows, and: an all-zero row, a row with a NaN, one with an inf, and one whose scale is
    exactly 1 (max 127) with values on the int8 rounding's ties (x.5: half to even)"""
    x = np.random.default_rng(seed).standard_normal((M, K)).astype(np.float32)
    x[1] = 0
    x[2, K // 3] = np.nan
    x[3, 5] = np.inf
    x[4] = np.resize(np.array([2.5, -2.5, 3.5, -3.5, 0.5, -0.5, 126.5, -1.5], np.float32), K)
    x[4, 0] = 127.0
    return x


@pytest.mark.parametrize("mode", ["w8a8", "bf16", "int8_bf16", "w4a8"])
def test_linear_rows_prepared_in_parallel(mode, tmp_path):
    """moec.linear_q with enough rows that their preparation runs in parallel (and odd K: an unpaired last bf16
    value, a tail past the 16 lanes) == the op's reference, special rows included (the int8 ties at half to
    even: a code off by one moves the output by ~1, far above the tolerance)"""
    K, N, M = (75, 40, 450) if mode in ("bf16", "int8_bf16") else (80, 40, 450)
    m = _linear_module(K, N)
    QuantizeWeights(mode, 16 if mode == "w4a8" else 0, False, scope="all", dense_modes=(mode,)).run(m)
    assert sum(o.name == "moec.linear_q" for o in m.main.ops) == 2
    art = build_module(m, str(tmp_path / mode), threads=2)
    for rows in (M, 5):  # (5 rows: the serial preparation)
        x = _special_rows(max(rows, 5), K, rows)[:rows]
        for g, (name, w) in zip(art([x]), run(m, [x]).items()):
            assert np.array_equal(np.isnan(g), np.isnan(w)), (mode, name, rows)
            assert np.array_equal(g[np.isinf(w)], w[np.isinf(w)]), (mode, name, rows)
            ok = np.isfinite(w)
            err = np.abs(g[ok] - w[ok]).max()
            assert err <= 1e-5 + 1e-5 * np.sqrt(K) * np.abs(w[ok]).max(), (mode, name, rows, err)


@pytest.mark.parametrize("mode", ["w8a8", "bf16", "int4", "int8_bf16", "w4a8"])
def test_expert_rows_gathered_and_prepared_in_parallel(mode, tmp_path):
    """moe.experts: the rows gathered per expert (times the routing weight where it applies) and prepared
    (bf16 pairs, int8 codes, int4 GEMV rows) in parallel once there are 32768 values == the reference"""
    rng = np.random.default_rng(5)
    E, D, F, k, T = 4, 128, 48, 2, 160
    wi = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.1
    wo = rng.standard_normal((E, D, F)).astype(np.float32) * 0.1
    m = experts_module("none", wi, wo, [], "T", D, E, k)
    QuantizeWeights(mode, 32, False, scope="all", dense_modes=(mode,)).run(m)
    art = build_module(m, str(tmp_path / mode), threads=2)
    for t in (T, 3):
        x = rng.standard_normal((t, D)).astype(np.float32)
        lg = rng.standard_normal((t, E)).astype(np.float32)
        got, want = art([x, lg])[0], run(m, [x, lg])["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=f"{mode} T={t}")


@pytest.mark.parametrize("shape,perm,dtype", [
    ((2, 37, 3, 16), (0, 2, 1, 3), np.float32),   # [B, T, H, D] -> [B, H, T, D]: runs of D
    ((1, 5, 1, 4), (2, 0, 1, 3), np.float32),     # size-1 dims anywhere
    ((3, 4, 5), (0, 1, 2), np.int64),              # the identity: one run
    ((3, 4, 5), (2, 1, 0), np.float32),            # no run: element by element
    ((2, 3, 4, 5), (1, 0, 2, 3), np.int64),        # a run of two merged dims
    ((4, 6, 2), (1, 0, 2), np.bool_),
    ((4, 6, 2), (1, 0, 2), np.float16),
])
def test_transpose_runs_match_numpy(shape, perm, dtype, tmp_path):
    ot = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64, np.bool_: TensorProto.BOOL,
          np.float16: TensorProto.FLOAT16}[dtype]
    model = make_model([helper.make_node("Transpose", ["x"], ["y"], perm=list(perm))],
                       [tensor_info("x", ot, shape)], [tensor_info("y", ot, [shape[p] for p in perm])])
    x = (np.random.default_rng(0).standard_normal(shape) * 10).astype(dtype)
    got = run_compiled(model, tmp_path, [x])[0]
    assert got.dtype == x.dtype and np.array_equal(got, x.transpose(perm))


def _rms_module(shape):
    t = "tensor<" + "x".join(map(str, shape)) + "xf32>"
    w = f"tensor<{shape[-1]}xf32>"
    return parse_module(f"""module {{
  func.func @main(%x: {t}, %w: {w}) -> ({t}) attributes {{moec.inputs = ["x", "w"], moec.outputs = ["y"]}} {{
    %y = "moec.rms_norm"(%x, %w) {{axis = -1 : i64, epsilon = 1.0e-05 : f64}} : ({t}, {w}) -> {t}
    func.return %y : {t}
  }}
}}
""")


@pytest.mark.parametrize("shape", [(3, 43, 512), (1, 7, 64), (2, 4, 8192)])
def test_rms_norm_rows_bit_exact(shape, tmp_path):
    """The f32 RMSNorm kernel (rows interleaved by 4, in parallel from 65536 values; 129 rows: a partial last
    group) == numpy doing its arithmetic: each row's sum of squares in float64 in order (a cumulative sum),
    1 / sqrt(mean + eps), x * inv * w rounded to f32 -- bit for bit -- and the reference to a few ulps"""
    r = np.random.default_rng(1)
    x = r.standard_normal(shape).astype(np.float32) * 3
    w = r.standard_normal(shape[-1]).astype(np.float32)
    m = _rms_module(shape)
    got = build_module(m, str(tmp_path / "r"), threads=2)([x, w])[0]
    xd = x.astype(np.float64)
    s = np.cumsum(xd * xd, axis=-1)[..., -1:]
    want = (xd * (1.0 / np.sqrt(s / shape[-1] + 1e-5)) * w.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, run(m, [x, w])["y"], rtol=1e-6, atol=1e-6)


def test_rotary_contiguous_tables_match_reference(tmp_path):
    """moec.rotary with cos/sin rows contiguous ([1, 1, S, D] and [S, D]: the vectorised rows) and broadcast
    along D (a [.., 1] table: the general loop) == the reference"""
    B, H, S, D = 1, 4, 37, 128
    r = np.random.default_rng(2)
    x = r.standard_normal((B, H, S, D)).astype(np.float32)
    t = f"tensor<{B}x{H}x{S}x{D}xf32>"
    for cs in ((1, 1, S, D), (S, D), (1, 1, S, 1)):
        c = "tensor<" + "x".join(map(str, cs)) + "xf32>"
        m = parse_module(f"""module {{
  func.func @main(%x: {t}, %c: {c}, %s: {c}) -> ({t}) attributes {{moec.inputs = ["x", "c", "s"], moec.outputs = ["y"]}} {{
    %y = "moec.rotary"(%x, %c, %s) {{interleaved = false}} : ({t}, {c}, {c}) -> {t}
    func.return %y : {t}
  }}
}}
""")
        ang = r.standard_normal(cs).astype(np.float32)
        cos, sin = np.cos(ang), np.sin(ang)
        art = build_module(m, str(tmp_path / f"r{len(cs)}{cs[-1]}"), threads=1)
        np.testing.assert_allclose(art([x, cos, sin])[0], run(m, [x, cos, sin])["y"], rtol=1e-6, atol=1e-6)


def test_attention_causal_with_a_contiguous_mask(tmp_path):
    """Causal attention with an additive [1, 1, S, S] mask (a decoder export's: the masked scores on vectors),
    -inf and NaN-free finite entries, S past two blocks and not a multiple of the vector width == the reference"""
    from test_decoder_ops import _attention_module
    B, H, S, D = 1, 2, 133, 32
    r = np.random.default_rng(4)
    q, k, v = (r.standard_normal((B, H, S, D)).astype(np.float32) for _ in range(3))
    mask = np.where(r.random((1, 1, S, S)) < 0.2, np.float32(-3.4028235e38), r.standard_normal((1, 1, S, S)))
    mask = mask.astype(np.float32)
    mask[0, 0, 7, :] = -np.inf  # a row with nothing visible
    m = _attention_module(B, H, H, S, S, D, D, 0.2, True, (1, 1, S, S))
    got = build_module(m, str(tmp_path / "a"), threads=2)([q, k, v, mask])[0]
    np.testing.assert_allclose(got, run(m, [q, k, v, mask])["y"], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("op,dtype", [("Less", np.int64), ("Equal", np.int64), ("LessOrEqual", np.int64),
                                      ("Add", np.int64), ("Max", np.int64), ("And", np.bool_),
                                      ("Or", np.bool_), ("Equal", np.bool_)])
def test_integer_and_bool_binaries_match_numpy(op, dtype, tmp_path):
    """i64 and bool elementwise ops broadcast [1, 1, T, 1] x [1, 1, 1, T] (an attention mask's) and a scalar"""
    T = 37
    ot = TensorProto.INT64 if dtype == np.int64 else TensorProto.BOOL
    cmp = op in ("Less", "Equal", "LessOrEqual", "And", "Or")
    rt = TensorProto.BOOL if cmp else ot
    model = make_model([helper.make_node(op, ["a", "b"], ["y"]), helper.make_node(op, ["a", "c"], ["z"])],
                       [tensor_info("a", ot, [1, 1, T, 1]), tensor_info("b", ot, [1, 1, 1, T]),
                        tensor_info("c", ot, [])],
                       [tensor_info("y", rt, [1, 1, T, T]), tensor_info("z", rt, [1, 1, T, 1])])
    r = np.random.default_rng(3)
    if dtype == np.int64:
        a, b, c = r.integers(-20, 20, (1, 1, T, 1)), r.integers(-20, 20, (1, 1, 1, T)), np.array(3)
    else:
        a, b, c = r.random((1, 1, T, 1)) < 0.5, r.random((1, 1, 1, T)) < 0.5, np.array(True)
    a, b, c = a.astype(dtype), b.astype(dtype), c.astype(dtype)
    f = {"Less": np.less, "Equal": np.equal, "LessOrEqual": np.less_equal, "Add": np.add, "Max": np.maximum,
         "And": np.logical_and, "Or": np.logical_or}[op]
    y, z = run_compiled(model, tmp_path, [a, b, c])
    np.testing.assert_array_equal(y, f(a, b))
    np.testing.assert_array_equal(z, f(a, c))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_select_matches_numpy(dtype, tmp_path):
    """Where(cond [1, 1, T, T], a scalar, b [1, 1, 1, T]) (a mask's select: 4-byte values copied as words)"""
    T = 29
    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = make_model([helper.make_node("Where", ["c", "a", "b"], ["y"])],
                       [tensor_info("c", TensorProto.BOOL, [1, 1, T, T]), tensor_info("a", et, []),
                        tensor_info("b", et, [1, 1, 1, T])], [tensor_info("y", et, [1, 1, T, T])])
    r = np.random.default_rng(6)
    c = r.random((1, 1, T, T)) < 0.5
    a = np.array(-3.4028235e38 if dtype == np.float32 else -7).astype(dtype)
    b = (r.standard_normal((1, 1, 1, T)) * 100).astype(dtype)
    np.testing.assert_array_equal(run_compiled(model, tmp_path, [c, a, b])[0], np.where(c, a, b))
