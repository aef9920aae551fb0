"""Triton target: every zoo model and the example, compiled with --target triton, run for real:
on a GPU when there is one, else under Triton's interpreter (TRITON_INTERPRET=1, torch CPU), and
verified against onnxruntime; quantised weights against the dequantised reference."""
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from moec.driver import CompileOptions, compile_onnx  # noqa: E402
from zoo import ZOO  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "mixtral_like.onnx")


@pytest.mark.parametrize("name", [e.name for e in ZOO])
def test_zoo_on_triton(name, tmp_path):
    e = next(z for z in ZOO if z.name == name)
    r = compile_onnx(e.build(), str(tmp_path / "out"), CompileOptions(target="triton", symbol_sizes=(5, 1)))
    rep = r.report
    assert rep["verified"] and rep["oracle"] == "onnxruntime", rep.get("failure")
    src = open(tmp_path / "out" / "model_triton.py").read()
    assert "rt.moe_experts(" in src and "rt.moe_route(" in src
    assert "HOST_OPS_STATIC = 0" in src, "every op of a zoo model has a Triton kernel"


@pytest.mark.parametrize("mode,group,zp", [("bf16", 0, False), ("int8", 0, False), ("int4", 32, False),
                                           ("int4", 32, True), ("fp8", 0, False)])
def test_quantised_weights_on_triton(mode, group, zp, tmp_path):
    r = compile_onnx(EXAMPLE, str(tmp_path / "out"),
                     CompileOptions(target="triton", weights=mode, group_size=group, zero_point=zp,
                                    symbol_sizes=(20, 1)))
    assert r.report["verified"], r.report.get("failure")
    assert r.report["moe_layers"][0]["weights"]["mode"] == mode


def test_kernels_really_run(tmp_path):
    """The generated launcher calls the Triton kernels (not a numpy fallback): a wrong routing
    weight in the kernel's epilogue would change the output, and it matches onnxruntime."""
    from moec.codegen.triton import runtime as rt
    import torch
    dev = rt.DEVICE
    x = torch.randn(7, 64, device=dev)
    logits = torch.randn(7, 8, device=dev)
    w, ids = rt.moe_route(logits, None, k=2, scoring="softmax", n_group=1, topk_group=1, group_score="max",
                          post="none", norm="none", norm_eps=0.0, scale=1.0, capacity=0)
    p = torch.softmax(logits, -1)
    top = torch.topk(p, 2, dim=-1)
    np.testing.assert_allclose(w.cpu().numpy(), top.values.cpu().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ids.cpu().numpy(), top.indices.cpu().numpy())
    w_in = torch.randn(8, 64, 64, device=dev) * 0.1
    w_out = torch.randn(8, 64, 32, device=dev) * 0.1
    y = rt.moe_experts(x, ids, w_in, w_out, rw=w, weights_at="output")
    want = torch.zeros(7, 2, 64, device=dev)
    for t in range(7):
        for j in range(2):
            e = ids[t, j]
            h = w_in[e] @ x[t]
            a = torch.nn.functional.silu(h[:32]) * h[32:]
            want[t, j] = (w_out[e] @ a) * w[t, j]
    np.testing.assert_allclose(y.cpu().numpy(), want.cpu().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dt", ["bfloat16", "float16"])
def test_16_bit_activations_through_the_kernels(dt):
    """bf16/f16 tensors through the grouped GEMMs and the matmul kernel match torch (f32 accumulation);
    under the interpreter the tiles are widened to f32 first (its bf16 dot is wrong)."""
    import torch
    from moec.codegen.triton import runtime as rt
    tdt = getattr(torch, dt)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(37, 72, generator=g).to(tdt).to(rt.DEVICE)
    b = torch.randn(72, 40, generator=g).to(tdt).to(rt.DEVICE)
    ref = a.float() @ b.float()
    got = rt.matmul(a, b).float()
    assert torch.allclose(got, ref, rtol=1e-2, atol=1e-2), (got - ref).abs().max()
    E, D, F, k = 4, 64, 48, 2
    x = torch.randn(21, D, generator=g).to(tdt).to(rt.DEVICE)
    w_in = (torch.randn(E, 2 * F, D, generator=g) / 8).to(tdt).to(rt.DEVICE)
    w_out = (torch.randn(E, D, F, generator=g) / 8).to(tdt).to(rt.DEVICE)
    ids = torch.randint(0, E, (21, k), generator=g).to(rt.DEVICE)
    y = rt.moe_experts(x, ids, w_in, w_out).float()
    xf, wi, wo = x.float(), w_in.float(), w_out.float()
    for t in range(21):
        for j in range(k):
            e = int(ids[t, j])
            h = wi[e] @ xf[t]
            act = torch.nn.functional.silu(h[:F]) * h[F:]
            ref = wo[e] @ act.to(tdt).float()
            assert torch.allclose(y[t, j], ref, rtol=3e-2, atol=3e-2), (t, j, (y[t, j] - ref).abs().max())
