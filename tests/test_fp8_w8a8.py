"""fp8 w8a8 through the compiler (``--weights fp8 --activations fp8``, mode fp8a8): the IR's per-token e4m3
activations (moe.experts aq=fp8) and their numpy reference against torch's float8_e4m3fn and against the
Triton kernel's own row quantiser, the quantize pass, the Triton emitter's call, a zoo model compiled and
verified under Triton's interpreter, and the CPU's refusal (exit 2, one line)."""
import json
import os

import numpy as np
import pytest

from helpers import experts_module

from moec.driver import CompileOptions, build_module, compile_onnx
from moec.errors import UserInputError
from moec.ir.ops.moe import quantize_rows_fp8
from moec.passes.quantize import mode_for, quantize_fp8

torch = pytest.importorskip("torch")

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "mixtral_like.onnx")


def _rows(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((12, 40)) * np.exp(rng.uniform(-9, 9, (12, 1)))  # rows over many binades
    a[2] = 0.0                                                               # an all-zero row: scale 1
    a[5, :7] = 0.0
    return a.astype(np.float32)


def _torch_rows(a: np.ndarray):
    """Per-row e4m3 written with torch: s = amax / 448 in f32, codes = float8_e4m3fn(row / s)."""
    t = torch.from_numpy(a)
    s = t.abs().amax(-1) / 448.0
    s = torch.where(s > 0, s, torch.ones_like(s))
    return (t / s[:, None]).to(torch.float8_e4m3fn).view(torch.uint8).numpy(), s.numpy()


def test_reference_row_quantisation_matches_torch_and_the_kernel():
    """The IR's quantize_rows_fp8 (numpy), torch's cast and the Triton kernel (quant_fp8_rows, run by
    Triton's interpreter here) give the same codes and scales, bit for bit."""
    from moec.codegen.triton import runtime as rt
    a = _rows()
    q, s = quantize_rows_fp8(a)
    tq, ts = _torch_rows(a)
    np.testing.assert_array_equal(q, tq)
    np.testing.assert_array_equal(s, ts)
    kq, ks = rt.quant_fp8_rows(torch.from_numpy(a))
    np.testing.assert_array_equal(kq.numpy(), q)
    np.testing.assert_array_equal(ks.numpy(), s)


def _layer(D=32, F=16, E=3, seed=3):
    rng = np.random.default_rng(seed)
    w_in = rng.standard_normal((E, 2 * F, D)).astype(np.float32) * 0.2
    w_out = rng.standard_normal((E, D, F)).astype(np.float32) * 0.2
    return quantize_fp8(w_in), quantize_fp8(w_out)


def _dec(q):
    return torch.from_numpy(np.ascontiguousarray(q)).view(torch.float8_e4m3fn).double().numpy()


def test_experts_reference_quantises_x_and_the_activation():
    """moe.experts(wq=fp8, aq=fp8)'s reference equals numpy written here (weights and rows decoded by torch,
    SwiGLU, top-2 combine), and differs from the weight-only op by the activations' rounding."""
    from moec.ir import IRError, run
    (qi, si), (qo, so) = _layer()
    T, D, E, k = 7, 32, 3, 2
    m = experts_module("fp8", qi, qo, [si, so], T, D, E, k, aq="fp8")
    m0 = experts_module("fp8", qi, qo, [si, so], T, D, E, k)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, D)).astype(np.float32)
    logits = rng.standard_normal((T, E)).astype(np.float32)
    got = run(m, {"x": x, "l": logits})["y"]
    w_only = run(m0, {"x": x, "l": logits})["y"]

    def fq(v):
        c, s = _torch_rows(np.asarray(v, np.float32)[None])
        return _dec(c)[0] * s[0]
    W1 = _dec(qi) * si[..., None]
    W2 = _dec(qo) * so[..., None]
    F = W2.shape[2]
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    want = np.zeros((T, D))
    for t in range(T):  # (moe.route's default: softmax over all E, then the top k, not renormalised)
        p = np.exp(logits[t] - logits[t].max())
        p = (p / p.sum())[ids[t]]
        for j, e in enumerate(ids[t]):
            h = W1[e] @ fq(x[t])
            g, u = h[:F], h[F:]
            a = g / (1 + np.exp(-g)) * u
            want[t] += p[j] * (W2[e] @ fq(a))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    assert np.abs(got - w_only).max() > 1e-3 * np.abs(w_only).max()  # the activations were quantised
    with pytest.raises(IRError, match="aq=fp8 .* needs wq=fp8"):
        experts_module("none", W1.astype(np.float32), W2.astype(np.float32), [], T, D, E, k, aq="fp8")


def test_modes_and_the_pass():
    from moec.passes.quantize import QuantizeWeights
    assert mode_for("fp8", "fp8") == "fp8a8" and mode_for("int8", "int8") == "w8a8"
    assert mode_for("fp8", "none") == "fp8" and mode_for("fp8a8", "fp8") == "fp8a8"
    with pytest.raises(ValueError, match="--activations fp8 with --weights int8"):
        mode_for("int8", "fp8")
    rng = np.random.default_rng(0)
    w_in = rng.standard_normal((3, 32, 16)).astype(np.float32)
    w_out = rng.standard_normal((3, 16, 16)).astype(np.float32)
    m = experts_module("none", w_in, w_out, [], 5, 16, 3, 2)
    assert QuantizeWeights("fp8a8").run(m)
    ex = next(o for o in m.ops() if o.name == "moe.experts")
    assert ex.attrs["wq"] == "fp8" and ex.attrs["aq"] == "fp8"


def test_triton_build_passes_act_quant_and_matches_the_reference(tmp_path):
    """An IR module with aq=fp8 built for Triton: the launcher calls the fp8 x fp8 kernels
    (act_quant="fp8") and its output equals the IR reference within the bf16 tolerance (the compiled
    activation can flip an e4m3 code of the reference's, see tolerances.py)."""
    from moec.ir import run
    (qi, si), (qo, so) = _layer()
    T, D, E, k = 9, 32, 3, 2
    m = experts_module("fp8", qi, qo, [si, so], T, D, E, k, aq="fp8")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, D)).astype(np.float32)
    logits = rng.standard_normal((T, E)).astype(np.float32)
    want = run(m, {"x": x, "l": logits})["y"]
    art = build_module(m, str(tmp_path / "o"), target="triton")
    assert "act_quant='fp8'" in open(tmp_path / "o" / "model_triton.py").read()
    got = np.asarray(art([x, logits])[0])
    np.testing.assert_allclose(got, want, rtol=1.6e-2, atol=1.6e-2 * np.abs(want).max())
    w_only = run(experts_module("fp8", qi, qo, [si, so], T, D, E, k), {"x": x, "l": logits})["y"]
    assert np.abs(got - want).max() < 0.1 * np.abs(got - w_only).max()  # fp8 x fp8, not weight-only


def test_zoo_mixtral_fp8a8_on_triton_verifies(tmp_path):
    """`moec compile --target triton --weights fp8 --activations fp8` on a zoo Mixtral: verified by the
    driver against the fp8a8 module's reference, with the error vs the f32 model within its bound."""
    from moec.cli import main
    from zoo import ZOO
    e = next(z for z in ZOO if z.name == "mixtral_dynamo")
    path = tmp_path / "m.onnx"
    import onnx
    onnx.save(e.build(), str(path))
    out = tmp_path / "out"
    assert main(["compile", str(path), "-o", str(out), "--target", "triton", "--weights", "fp8",
                 "--activations", "fp8", "--sizes", "5,1"]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"], rep.get("failure")
    assert rep["weights"]["mode"] == "fp8a8"
    q = rep["quantization_error"]
    assert 0 < q["token_rel_median"] <= q["bound_token_rel_median"] == 0.16 and q["tokens_over_4x_bound"] == 0
    assert rep["moe_layers"][0]["weights"]["activations"].startswith("float8 e4m3fn, dynamic per token")
    assert 'aq = "fp8"' in open(out / "model.mlir").read()
    assert "act_quant='fp8'" in open(out / "model_triton.py").read()


@pytest.mark.parametrize("target", ["cpu", "ascend"])
def test_fp8_activations_refused_off_triton(tmp_path, target, capsys):
    from moec.cli import main
    assert main(["compile", EXAMPLE, "-o", str(tmp_path / "o"), "--target", target, "--weights", "fp8",
                 "--activations", "fp8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"target {target}: --weights fp8 --activations fp8" in err[0] and \
        "triton target only" in err[0], err
    with pytest.raises(UserInputError, match="triton target only"):
        compile_onnx(EXAMPLE, str(tmp_path / "p"), CompileOptions(weights="fp8a8", target=target))


def test_mismatched_activations_are_exit_2(tmp_path, capsys):
    from moec.cli import main
    assert main(["compile", EXAMPLE, "-o", str(tmp_path / "o"), "--weights", "int8", "--activations", "fp8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quantised activations come with weights of the same format" in err[0], err


def test_api_activations_argument():
    import moec
    with pytest.raises(UserInputError, match="activations=fp8 with weights=int8"):
        moec.compile(EXAMPLE, target="triton", weights="int8", activations="fp8")


def test_bench_fp8a8_reaches_the_gpu_bench_as_fp8_activations(monkeypatch, tmp_path):
    """`moec bench --target triton --weights fp8a8`: the GPU bench (needs a GPU: replaced here by a recorder)
    is asked for fp8 weights with fp8 activations."""
    from moec import bench_triton
    from moec.cli import main
    seen = {}
    monkeypatch.setattr(bench_triton, "run_triton_bench", lambda *a, **kw: seen.update(kw) or {})
    monkeypatch.setattr(bench_triton, "format_table", lambda rep: "")
    assert main(["bench", "--target", "triton", "--weights", "fp8a8", "-o", str(tmp_path / "b")]) == 0
    assert seen["weights"] == "fp8" and seen["activations"] == "fp8"


def test_flip_criterion_takes_the_modes_token_bound():
    """A token 10% off (relative L2, spread over its elements: what re-rounded e4m3 activations give) is within
    fp8a8's token bound (0.16) and outside w8a8's (0.07); a token 30% off fails both."""
    from moec.tolerances import FLIP_TOKEN_BOUNDS, w8a8_flip_check
    rng = np.random.default_rng(0)
    want = rng.standard_normal((4, 64))
    noise = rng.standard_normal(64)
    for rel, fp8_ok, int8_ok in ((0.1, True, False), (0.3, False, False)):
        got = want.copy()
        got[1] += rel * noise / np.sqrt(np.mean(noise ** 2)) * np.sqrt(np.mean(want[1] ** 2))
        assert w8a8_flip_check([got], [want], token_bound=FLIP_TOKEN_BOUNDS["fp8a8"])["ok"] == fp8_ok
        assert w8a8_flip_check([got], [want], token_bound=FLIP_TOKEN_BOUNDS["w8a8"])["ok"] == int8_ok
