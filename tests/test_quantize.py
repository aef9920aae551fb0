"""Weight quantisation: formats, the pass, the C kernels (decode GEMV and prefill panel paths) and the
quantisation-error report, on the bundled example, hand-built layers and every zoo model."""
import os

import numpy as np
import pytest

from helpers import experts_module

from moec.driver import CompileOptions, compile_onnx
from moec.errors import VerificationError
from moec.ir.ops.moe import dequantize_weights, pack_int4, unpack_int4
from moec.passes.quantize import quantize_int4, quantize_int8

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "mixtral_like.onnx")


def test_int4_packing_round_trip():
    q = np.random.default_rng(0).integers(0, 16, size=(3, 5, 10)).astype(np.uint8)
    p = pack_int4(q)
    assert p.shape == (3, 5, 5) and p.dtype == np.uint8
    assert p[0, 0, 0] == (q[0, 0, 0] | (q[0, 0, 1] << 4))  # low nibble first
    np.testing.assert_array_equal(unpack_int4(p), q)


@pytest.mark.parametrize("group,zp", [(32, False), (32, True), (0, False), (16, True)])
def test_int4_error_within_half_step(group, zp):
    w = np.random.default_rng(1).standard_normal((2, 6, 64)).astype(np.float32)
    q, s, z = quantize_int4(w, group, zp)
    d = dequantize_weights(q, "int4", group, s, z)
    G = group or 64
    step = np.repeat(s, G, axis=-1)
    assert np.all(np.abs(d - w) <= step * 0.5 + 1e-6)


def test_int8_per_channel():
    w = np.random.default_rng(2).standard_normal((2, 6, 40)).astype(np.float32) * np.arange(1, 7)[:, None]
    q, s = quantize_int8(w)
    assert q.dtype == np.int8 and s.shape == (2, 6)
    assert np.abs(q).max() == 127
    d = dequantize_weights(q, "int8", 0, s)
    assert np.all(np.abs(d - w) <= s[..., None] * 0.5 + 1e-6)


MODES = [("bf16", 64, False), ("int8", 64, False), ("w8a8", 64, False), ("int4", 32, False), ("int4", 32, True), ("int4", 0, False)]


@pytest.mark.parametrize("mode,group,zp", MODES)
def test_example_all_weight_modes(mode, group, zp, tmp_path):
    """Decode (1 token), small batches and a 48-token prefill (packed-panel path) all verify against
    the dequantised reference; the quantisation error vs onnxruntime f32 is reported and bounded."""
    opts = CompileOptions(weights=mode, group_size=group, zero_point=zp, symbol_sizes=(5, 1, 48))
    r = compile_onnx(EXAMPLE, str(tmp_path / "out"), opts)
    rep = r.report
    assert rep["verified"], rep.get("failure")
    assert rep["oracle"].startswith("interpreter on the")
    q = rep["quantization_error"]
    assert 0 < q["token_rel_median"] <= q["bound_token_rel_median"] and q["tokens_over_4x_bound"] == 0
    layer = rep["moe_layers"][0]
    assert layer["weights"]["mode"] == mode
    f32_bytes = 8 * (256 * 64 + 64 * 128) * 4
    ratio = {"bf16": 0.5, "int8": 0.25, "w8a8": 0.25, "int4": 0.125}[mode]
    assert layer["weights"]["bytes"] < f32_bytes * ratio * 1.6
    hist = rep["op_histogram"]
    assert hist.get("moe.experts") == 1
    # the quantised module really is quantised (weights in the narrow type in the IR text)
    text = open(tmp_path / "out" / "model.mlir").read()
    assert f'wq = "{"int8" if mode == "w8a8" else mode}"' in text
    assert ('aq = "int8"' in text) == (mode == "w8a8")


def test_quantisation_error_bound_fails_loudly(tmp_path, monkeypatch):
    """A build whose quantisation error exceeds the documented bound is not reported as verified."""
    from moec import tolerances
    monkeypatch.setitem(tolerances.QUANT_ERROR_BOUNDS, "int4", 1e-4)
    with pytest.raises(VerificationError, match="quantisation error too large"):
        compile_onnx(EXAMPLE, str(tmp_path / "out"), CompileOptions(weights="int4", group_size=32))


def test_unsupported_group_is_skipped_and_reported(tmp_path):
    r = compile_onnx(EXAMPLE, str(tmp_path / "out"), CompileOptions(weights="int4", group_size=48))
    layer = r.report["moe_layers"][0]
    assert layer["weights"]["mode"] == "f32" and "group size" in layer["weights"]["skipped"]


def _numpy_route(logits, k):
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p, np.argsort(-p, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("arch", ["native", "generic"])
@pytest.mark.parametrize("D,F", [(96, 48), (30, 22)])
def test_w8a8_kernels_against_independent_numpy(tmp_path, arch, D, F):
    """w8a8 (int8 weights, dynamic per-token int8 activations): the VNNI micro-kernel (native) and the
    portable integer loop (generic), K a multiple of 4 and not (padding), decode rows and a prefill
    batch, against numpy written here: per-row symmetric codes, exact integer dot products."""
    from moec.driver import build_module
    rng = np.random.default_rng(7)
    T, E, k = 40, 3, 2
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    logits = rng.standard_normal((T, E)).astype(np.float32)
    x = rng.standard_normal((T, D)).astype(np.float32)
    x[3] = 0.0  # an all-zero row: scale 1, codes 0
    (qi, si), (qo, so) = quantize_int8(w_in), quantize_int8(w_out)
    m = experts_module("int8", qi, qo, [si, so], "T", D, E, k, aq="int8")
    art = build_module(m, str(tmp_path / "w8a8"), arch=arch)

    def qrow(v):  # independent: f32 scale, round half to even, clip
        v = v.astype(np.float32)
        amax = np.float32(np.abs(v).max())
        s = amax / np.float32(127) if amax > 0 else np.float32(1)
        return np.clip(np.rint(v / s), -127, 127).astype(np.int64), np.float64(s)
    p, top = _numpy_route(logits, k)
    want = np.zeros((T, D))
    for t in range(T):
        for j in range(k):
            e = top[t, j]
            # the kernel multiplies the routing weight after the second GEMM (weights_at none here:
            # the combine scales), so the expert sees x[t] itself
            xq, xs = qrow(x[t])
            h = (qi[e].astype(np.int64) @ xq) * xs * si[e].astype(np.float64)
            g, u = h[:F], h[F:]
            a = (g / (1 + np.exp(-g)) * u).astype(np.float32)
            aq_, as_ = qrow(a)
            want[t] += p[t, e] * ((qo[e].astype(np.int64) @ aq_) * as_ * so[e].astype(np.float64))
    for n in (T, 1, 2):
        got = art([x[:n], logits[:n]])[0]
        # a code can flip where the f32 activation sits within an ulp of a rounding boundary: allow
        # one step of one term (see tolerances.QUANT_VERIFY_TOLERANCE), nothing like a wrong scale
        np.testing.assert_allclose(got, want[:n], rtol=1.6e-2, atol=1.6e-2 * np.abs(want).max())
        assert np.median(np.abs(got - want[:n])) < 1e-5 * np.abs(want).max()


def test_w8a8_rejected_where_not_implemented(tmp_path):
    from moec.errors import UserInputError
    with pytest.raises(UserInputError, match="w8a8.*cpu and ascend targets only"):
        compile_onnx(EXAMPLE, str(tmp_path / "o"), CompileOptions(weights="w8a8", target="triton"))
    from moec.ir import IRError
    rng = np.random.default_rng(0)
    qi, si = quantize_int8(rng.standard_normal((2, 8, 4)).astype(np.float32))
    qo, so = quantize_int8(rng.standard_normal((2, 4, 4)).astype(np.float32))
    with pytest.raises(IRError, match="aq=int8 .*needs wq=int8"):
        import ml_dtypes
        experts_module("bf16", qi.astype(ml_dtypes.bfloat16), qo.astype(ml_dtypes.bfloat16), [], "T", 4, 2, 1,
                        aq="int8")


@pytest.mark.parametrize("arch", ["native", "generic"])
def test_kernels_against_independent_numpy(tmp_path, arch):
    """Odd shapes: K with a vector part and a scalar tail per group (G=48), several tokens per
    expert; compared with a plain numpy computation written here, not the IR interpreter."""
    from moec.driver import build_module
    rng = np.random.default_rng(5)
    T, D, F, E, k, G = 7, 96, 48, 3, 2, 48
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    logits = rng.standard_normal((T, E)).astype(np.float32)
    x = rng.standard_normal((T, D)).astype(np.float32)
    for mode in ("bf16", "int8", "int4"):
        if mode == "bf16":
            import ml_dtypes
            qi, qo, extra = w_in.astype(ml_dtypes.bfloat16), w_out.astype(ml_dtypes.bfloat16), []
            di, do = qi.astype(np.float32), qo.astype(np.float32)
        elif mode == "int8":
            (qi, si), (qo, so) = quantize_int8(w_in), quantize_int8(w_out)
            extra = [si, so]
            di, do = qi * si[..., None], qo * so[..., None]
        else:
            qi, si, zi = quantize_int4(w_in, G, True)
            qo, so, zo = quantize_int4(w_out, G, True)
            extra = [si, so, zi, zo]
            ui, uo = unpack_int4(qi).astype(np.float32), unpack_int4(qo).astype(np.float32)
            di = (ui - np.repeat(zi, G, -1)) * np.repeat(si, G, -1)
            do = (uo - np.repeat(zo, G, -1)) * np.repeat(so, G, -1)
        m = experts_module(mode, qi, qo, extra, "T", D, E, k, G=G)
        art = build_module(m, str(tmp_path / mode), arch=arch)
        # numpy: softmax top-k routing, SwiGLU experts with the dequantised weights
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        top = np.argsort(-p, axis=1, kind="stable")[:, :k]
        want = np.zeros((T, D))
        import ml_dtypes

        def rnd(v):  # bf16 mode: the GEMM inputs are rounded to bf16 as well
            return v.astype(ml_dtypes.bfloat16).astype(np.float64) if mode == "bf16" else v
        for t in range(T):
            for j in range(k):
                e = top[t, j]
                h = di[e].astype(np.float64) @ rnd(x[t].astype(np.float64))
                g, u = h[:F], h[F:]
                a = rnd((g / (1 + np.exp(-g)) * u).astype(np.float32).astype(np.float64))
                want[t] += p[t, e] * (do[e].astype(np.float64) @ a)
        for n in (T, 1, 2):
            got = art([x[:n], logits[:n]])[0]
            np.testing.assert_allclose(got, want[:n], rtol=1e-4, atol=1e-5, err_msg=mode)
