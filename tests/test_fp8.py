"""fp8 (float8 e4m3fn) expert weights: the numpy codec against torch.float8_e4m3fn, the quantiser, the
moe.experts verifier, the Triton kernels (run under the interpreter without a GPU) against numpy written
here (weights decoded by torch, not by moec), the driver's rejections, the report and the GPU bench option."""
import ast
import json
import os

import numpy as np
import pytest

from helpers import experts_module

from moec.driver import CompileOptions, build_module, compile_onnx
from moec.errors import UserInputError
from moec.ir.fp8 import decode_e4m3, encode_e4m3
from moec.passes.quantize import quantize_fp8

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "mixtral_like.onnx")
CODES = np.arange(256, dtype=np.uint8)


def _torch_decode(q: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.ascontiguousarray(q, np.uint8)).view(torch.float8_e4m3fn).float().numpy()


def _torch_encode_saturating(x: np.ndarray) -> np.ndarray:
    """torch's cast turns overflow into NaN; clamping first gives the saturating RNE encoding."""
    t = torch.from_numpy(np.asarray(x, np.float32)).clamp(-448.0, 448.0)
    return t.to(torch.float8_e4m3fn).view(torch.uint8).numpy()


# -- the numpy codec (ir/fp8.py) ---------------------------------------------------------------
def test_decode_all_256_codes_like_torch():
    got, want = decode_e4m3(CODES), _torch_decode(CODES)
    assert got.dtype == np.float32
    nan = np.isnan(want)
    assert list(CODES[nan]) == [0x7F, 0xFF]  # e4m3fn: no infinities, NaN only S.1111.111
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert got[0x7E] == 448.0 and got[0x01] == 2.0 ** -9 and got[0x08] == 2.0 ** -6


def test_encode_round_trips_every_code():
    d = decode_e4m3(CODES)
    fin = ~np.isnan(d)
    np.testing.assert_array_equal(encode_e4m3(d[fin]), CODES[fin])  # -0.0 -> 0x80 included
    np.testing.assert_array_equal(encode_e4m3(np.array([np.nan, -np.nan], np.float32)), [0x7F, 0xFF])


def test_encode_random_ties_subnormals_overflow_like_torch():
    rng = np.random.default_rng(0)
    vals = [rng.standard_normal(20000) * s for s in (1e-4, 3e-3, 2e-2, 1.0, 40.0, 300.0, 5e3)]
    pos = np.unique(decode_e4m3(CODES[:0x7F]).astype(np.float64))
    mids = (pos[:-1] + pos[1:]) / 2  # exact ties between neighbours (subnormal and normal): to even
    assert np.all(mids.astype(np.float32) == mids)
    sub = np.arange(0, 17) * 2.0 ** -10  # the subnormal range in half steps, up to the first normal
    edge = [447.9, 448.0, 455.9, 464.0, 464.1, 479.9, 480.0, 1e6, 3.4e38, np.inf, 0.0, 2.0 ** -12, 2.0 ** -10.5]
    x = np.concatenate(vals + [mids, sub, np.nextafter(mids, 0), np.nextafter(mids, 1e9), edge]).astype(np.float32)
    x = np.concatenate([x, -x])
    got = encode_e4m3(x)
    want = _torch_encode_saturating(x)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, f"{bad.size} mismatches, e.g. x={x[bad[:5]]} got={got[bad[:5]]} torch={want[bad[:5]]}"
    assert encode_e4m3(np.array([1e9, -np.inf], np.float32)).tolist() == [0x7E, 0xFE]  # saturating


def test_ir_codec_imports_neither_torch_nor_ml_dtypes():
    src = open(os.path.join(HERE, "..", "ir", "fp8.py")).read()
    names = {a.name.split(".")[0] for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"torch", "ml_dtypes"}, names


def test_quantize_fp8_per_channel():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((2, 6, 200)) * np.arange(1, 7)[:, None] * 0.05).astype(np.float32)
    w[1, 3] = 0.0  # an all-zero row: scale 1, codes 0
    q, s = quantize_fp8(w)
    assert q.dtype == np.uint8 and q.shape == w.shape and s.dtype == np.float32 and s.shape == (2, 6)
    np.testing.assert_allclose(s[0], np.abs(w[0]).max(-1) / 448, rtol=1e-7)
    assert s[1, 3] == 1.0 and not q[1, 3].any()
    assert np.all((q & 0x7F).max(-1)[s != 1.0] == 0x7E)  # each row's largest magnitude -> 448
    d = decode_e4m3(q) * s[..., None]
    r = np.abs(w / s[..., None])
    err = np.abs(d - w) / s[..., None]
    normal = r >= 2.0 ** -6
    assert np.all(err[normal] <= r[normal] * 2.0 ** -4 * (1 + 1e-6))  # half a step of 3 mantissa bits
    assert np.all(err[~normal] <= 2.0 ** -10 * (1 + 1e-6))  # subnormals: half of 2^-9
    np.testing.assert_array_equal(q, _torch_encode_saturating(w / s[..., None]))


# -- the op --------------------------------------------------------------------------------------
def _experts_module(qi, qo, si, so, D, E, k):
    return experts_module("fp8", qi, qo, [si, so], "T", D, E, k)


def _layer(D=30, F=22, E=3, seed=7):
    rng = np.random.default_rng(seed)
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    return quantize_fp8(w_in), quantize_fp8(w_out)


def test_verifier_accepts_fp8_and_checks_operands():
    from moec.ir import IRError
    (qi, si), (qo, so) = _layer()
    m = _experts_module(qi, qo, si, so, 30, 3, 2)
    from moec.ir import print_module
    assert 'wq = "fp8"' in print_module(m)
    with pytest.raises(IRError, match="w_in is i8; with wq=fp8 .* must be ui8"):
        _experts_module(qi.view(np.int8), qo, si, so, 30, 3, 2)
    with pytest.raises(IRError, match="scales of w_out must be f32"):
        _experts_module(qi, qo, si, so[:, :-1], 30, 3, 2)
    from moec.ir.opdef import OPS
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    with pytest.raises(IRError, match="wq=fp8 needs 2 scale"):
        OPS["moe.experts"].create(list(ex.operands[:6]), {"wq": "fp8"})


def test_reference_semantics_dequantise_then_compute():
    from moec.ir import run
    (qi, si), (qo, so) = _layer()
    m = _experts_module(qi, qo, si, so, 30, 3, 2)
    rng = np.random.default_rng(1)
    x, lg = rng.standard_normal((5, 30)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    got = list(run(m, [x, lg]).values())[0]
    di, do = _torch_decode(qi) * si[..., None], _torch_decode(qo) * so[..., None]
    np.testing.assert_allclose(got, _numpy_experts(x, lg, di, do, 2), rtol=1e-5, atol=1e-6)


def _numpy_experts(x, logits, di, do, k):
    """softmax top-k (no renormalisation), SwiGLU experts with dequantised weights, float64."""
    F = do.shape[-1]
    p = np.exp(logits - logits.max(1, keepdims=True)).astype(np.float64)
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    want = np.zeros(x.shape, np.float64)
    for t in range(x.shape[0]):
        for e in top[t]:
            h = di[e].astype(np.float64) @ x[t].astype(np.float64)
            g, u = h[:F], h[F:]
            want[t] += p[t, e] * (do[e].astype(np.float64) @ (g / (1 + np.exp(-g)) * u))
    return want


# -- the Triton kernels --------------------------------------------------------------------------
pytest.importorskip("triton")


@pytest.mark.parametrize("D,F", [(30, 22), (96, 48)])
def test_triton_kernels_against_independent_numpy(tmp_path, D, F):
    """Both grouped GEMMs decode the e4m3 tiles in registers and scale per output channel after the
    dot; K and N not multiples of the tiles (masking), decode (1-2 tokens) and a 40-token batch."""
    (qi, si), (qo, so) = _layer(D, F, E=3)
    m = _experts_module(qi, qo, si, so, D, 3, 2)
    art = build_module(m, str(tmp_path / "fp8"), target="triton")
    assert "wq='fp8'" in open(tmp_path / "fp8" / "model_triton.py").read()
    rng = np.random.default_rng(3)
    T = 40
    x, lg = rng.standard_normal((T, D)).astype(np.float32), rng.standard_normal((T, 3)).astype(np.float32)
    di, do = _torch_decode(qi) * si[..., None], _torch_decode(qo) * so[..., None]
    want = _numpy_experts(x, lg, di, do, 2)
    for n in (T, 1, 2):
        np.testing.assert_allclose(art([x[:n], lg[:n]])[0], want[:n], rtol=1e-4, atol=1e-5)


def _q_torch(w):
    """Independent fp8 quantisation: per output row, scale max|row| / 448, torch's e4m3fn cast."""
    w = w.detach().float()
    s = w.abs().amax(-1, keepdim=True) / 448.0
    return ((w / s).to(torch.float8_e4m3fn).float() * s).double().numpy()


def _swiglu(x, g, u, d):
    h_g, h_u = x @ g.T, x @ u.T
    return (h_g / (1 + np.exp(-h_g)) * h_u) @ d.T


def _numpy_mixtral(mod, x):
    x = x.astype(np.float64)
    lg = x @ mod.gate.weight.detach().double().numpy().T
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.argsort(-p, axis=1, kind="stable")[:, :mod.k]
    w = np.take_along_axis(p, top, 1)
    w /= w.sum(1, keepdims=True)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for j, e in enumerate(top[t]):
            ex = mod.experts[e]
            out[t] += w[t, j] * _swiglu(x[t], _q_torch(ex.gate_proj.weight), _q_torch(ex.up_proj.weight),
                                        _q_torch(ex.down_proj.weight))
    return out


def _numpy_deepseek_v3(mod, x):
    """sigmoid scores, correction bias for selection, top-2-sum group score, top-k within the kept
    groups, renormalised and scaled weights; shared experts unquantised (the pass leaves them)."""
    x = x.astype(np.float64)
    s = 1 / (1 + np.exp(-(x @ mod.gate.weight.detach().double().numpy().T)))
    c = s + mod.e_score_correction_bias.detach().double().numpy()
    T, E = c.shape
    G = mod.g
    gs = np.sort(c.reshape(T, G, E // G), -1)[..., -2:].sum(-1)
    keep = np.argsort(-gs, axis=1, kind="stable")[:, :mod.tg]
    mask = np.zeros((T, G), bool)
    np.put_along_axis(mask, keep, True, 1)
    c = np.where(np.repeat(mask, E // G, 1), c, -np.inf)
    top = np.argsort(-c, axis=1, kind="stable")[:, :mod.k]
    w = np.take_along_axis(s, top, 1)
    w = w / (w.sum(1, keepdims=True) + 1e-20) * mod.scale
    sh = mod.shared_experts
    out = _swiglu(x, *(p.weight.detach().double().numpy() for p in (sh.gate_proj, sh.up_proj, sh.down_proj)))
    for t in range(T):
        for j, e in enumerate(top[t]):
            ex = mod.experts[e]
            out[t] += w[t, j] * _swiglu(x[t], _q_torch(ex.gate_proj.weight), _q_torch(ex.up_proj.weight),
                                        _q_torch(ex.down_proj.weight))
    return out


@pytest.mark.parametrize("name,ref", [("mixtral_dynamo", _numpy_mixtral),
                                      ("deepseekv3_torchscript", _numpy_deepseek_v3)])
def test_zoo_models_fp8_on_triton_against_independent_numpy(name, ref, tmp_path):
    """A Mixtral-like and a DeepSeek-V3-like model (group routing, correction bias, shared experts)
    compiled with --target triton --weights fp8: verified by the driver, and equal (f32 tolerance) to a
    numpy computation of the quantised layer written here from the PyTorch module's parameters."""
    from zoo import ZOO, zoo_inputs
    e = next(z for z in ZOO if z.name == name)
    r = compile_onnx(e.build(), str(tmp_path / "out"), CompileOptions(target="triton", weights="fp8",
                                                                       symbol_sizes=(9, 1)))
    rep = json.load(open(tmp_path / "out" / "report.json"))
    assert rep["verified"], rep.get("failure")
    q = rep["quantization_error"]
    assert 0 < q["token_rel_median"] <= q["bound_token_rel_median"] == 0.11 and q["tokens_over_4x_bound"] == 0
    layer = rep["moe_layers"][0]
    assert layer["weights"]["mode"] == "fp8" and 0.015 < layer["weights"]["w_in"]["rel_rms"] < 0.04
    assert bool(layer.get("shared_experts")) == name.startswith("deepseek")
    mod = e.torch_module()
    for T, kind in ((9, "random"), (6, "identical"), (1, "single")):
        x = zoo_inputs(e, T, kind)["x"]
        want = ref(mod, x)
        np.testing.assert_allclose(r.artifact([x])[0], want, rtol=1e-4, atol=1e-5, err_msg=f"{name} {kind}")
        with torch.no_grad():  # and the quantised layer is near the f32 module (sanity of the reference)
            f32 = mod(torch.from_numpy(x)).double().numpy()
        assert np.linalg.norm(want - f32) / np.linalg.norm(f32) < 0.11


def test_example_fp8_report(tmp_path):
    r = compile_onnx(EXAMPLE, str(tmp_path / "out"), CompileOptions(target="triton", weights="fp8",
                                                                    symbol_sizes=(20, 1)))
    rep = json.load(open(tmp_path / "out" / "report.json"))
    assert rep["verified"] and rep["weights"]["mode"] == "fp8"
    assert rep["oracle"].startswith("interpreter on the fp8 module")
    assert rep["tolerance"]["f32"] == {"atol": 1e-5, "rtol": 1e-4}  # weight-only: the f32 tolerance holds
    q = rep["quantization_error"]
    assert 0.01 < q["token_rel_median"] <= 0.11 and q["tokens_over_4x_bound"] == 0
    w = rep["moe_layers"][0]["weights"]
    assert w["bytes"] < 8 * (256 * 64 + 64 * 128) * 4 * 0.25 * 1.1  # one byte per weight plus scales
    assert "fp8_e4m3" in rep["target_desc"]["isa"]
    text = open(tmp_path / "out" / "model.mlir").read()
    assert 'wq = "fp8"' in text and "tensor<8x256x64xui8>" in text
    assert r.artifact is not None


# -- where fp8 is not available ------------------------------------------------------------------
@pytest.mark.parametrize("target", ["cpu", "ascend"])
def test_fp8_rejected_on_cpu_and_ascend(tmp_path, target):
    with pytest.raises(UserInputError, match=f"target {target}: fp8 .*triton target only"):
        compile_onnx(EXAMPLE, str(tmp_path / "o"), CompileOptions(weights="fp8", target=target))
    (qi, si), (qo, so) = _layer()
    with pytest.raises(UserInputError, match="triton target only"):  # an fp8 module built from IR
        build_module(_experts_module(qi, qo, si, so, 30, 3, 2), str(tmp_path / "m"), target=target)


def test_fp8_rejected_on_a_gpu_without_fp8(tmp_path):
    from moec.targets.description import detect_triton_target
    assert not detect_triton_target("A100").has("fp8_e4m3") and detect_triton_target("H100").has("fp8_e4m3")
    with pytest.raises(UserInputError, match=r"GPU A100 \(compute capability 8.0\) has no fp8.*--weights int8"):
        compile_onnx(EXAMPLE, str(tmp_path / "o"), CompileOptions(weights="fp8", target="triton", arch="A100"))


def test_detected_gpu_description(monkeypatch):
    from moec.targets import description as d
    monkeypatch.setattr(d, "_cuda_device", lambda: ("NVIDIA A100-SXM4-80GB", (8, 0), 108))
    a = d.detect_triton_target()
    assert a.arch == "A100" and not a.has("fp8_e4m3") and a.device == "NVIDIA A100-SXM4-80GB"
    monkeypatch.setattr(d, "_cuda_device", lambda: ("NVIDIA GeForce RTX 4090", (8, 9), 128))
    g = d.detect_triton_target()
    assert g.arch == "sm_89" and g.cores == 128 and g.has("fp8_e4m3") and g.compute_capability == "8.9"
    monkeypatch.setattr(d, "_cuda_device", lambda: None)
    assert d.detect_triton_target().device.startswith("interpreter")


# -- moec bench --target triton --weights fp8 ------------------------------------------------------
def test_bench_option_reaches_the_kernels():
    """The GPU bench only runs on a GPU; here: the CLI accepts the mode, and the bench's own
    quantisation + moec layer (the kernels under the interpreter) equals the dequantised layer."""
    from moec import bench_triton
    from moec.cli import build_parser
    a = build_parser().parse_args(["bench", "--target", "triton", "--weights", "fp8"])
    assert a.weights == "fp8"
    g = torch.Generator().manual_seed(0)
    D, F, E, T = 32, 48, 4, 6
    cfg = dict(bench_triton.LAYERS["mixtral"], D=D, F=F, E=E)
    w_router = torch.randn(D, E, generator=g) / D ** 0.5
    w_in = (torch.randn(E, 2 * F, D, generator=g) / D ** 0.5).to(torch.bfloat16)
    w_out = (torch.randn(E, D, F, generator=g) / F ** 0.5).to(torch.bfloat16)
    qi, qo, wq, q = bench_triton.quantize_layer(w_in, w_out, "fp8")
    assert wq == "fp8" and qi.dtype == torch.uint8
    # f32 activations here: Triton 3.9's interpreter multiplies bf16 dot operands as their raw uint16
    # bit patterns (create_dot), so a bf16 x is only meaningful on a GPU; the fp8 decode is the same
    x = torch.randn(T, D, generator=g).to(torch.bfloat16).float()
    got = bench_triton.moec_layer(x, w_router, qi, qo, None, cfg, None, wq, q)
    di = qi.view(torch.float8_e4m3fn).float() * q[0][..., None]
    do = qo.view(torch.float8_e4m3fn).float() * q[1][..., None]
    want = bench_triton.eager_layer(x, w_router, di, do, None, cfg)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    f32 = bench_triton.eager_layer(x, w_router, w_in.float(), w_out.float(), None, cfg)
    assert float((got - f32).norm() / f32.norm()) < 0.11


def test_conformance_skips_fp8_cells_on_a_gpu_without_fp8(tmp_path, monkeypatch):
    from moec import conformance
    from moec.targets import description as d
    assert "fp8" in conformance.FULL_MODES["triton"]
    monkeypatch.setattr(conformance, "FULL_MODES", {"triton": ("fp8",)})
    monkeypatch.setattr(d, "_cuda_device", lambda: ("NVIDIA A100-SXM4-80GB", (8, 0), 108))
    rep = conformance.run_conformance(["triton"], quick=False, outdir=str(tmp_path), models=["onnx_unrolled_mixtral"],
                                      log=lambda *_: None, modules_too=False, timing=False)
    cell = rep["rows"][0]["cells"]["triton/fp8"]
    assert cell["status"] == "skipped" and "A100" in cell["reason"] and "no fp8" in cell["reason"]
