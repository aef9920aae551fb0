"""Ascend target: the unary ops real decoder layers use beyond the first vector kernels (issue 16 item 6) run on
vec_elementwise, not on the host -- log1p (torch's softplus / logsigmoid decompose to it: Mamba and gated-delta
layers' dt, Qwen3-Next's gates), floor / ceil (float -> float Casts with the rounding mode) and sign -- checked
against numpy on edge values (tiny, -1, below -1, huge, infinities, exact integers and halves, subnormals)."""
import numpy as np
import pytest

from moec.driver import build_module

torch = pytest.importorskip("torch")

EDGE = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 3e-4, -3e-4, 0.25, -0.25, 0.5, -0.5, -0.75, 0.999, -0.999999,
                 -1.0, -1.5, 1.0, 1.5, 2.5, -2.5, 7.0, 1e4, 3e7, 1.7e8, -1.7e8, 1e30, np.inf, -np.inf, 1e-45, -1e-45,
                 16777216.0, 8388607.5, -8388607.5], np.float32)


class _Unary(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _build(fn, tmp_path):
    from moec.frontend.torch_import import import_torch
    x0 = torch.zeros(3, 40)
    m = import_torch(_Unary(fn).eval(), (x0,), dynamic_dims={0: {0: "T"}})
    return build_module(m, str(tmp_path / "o"), target="ascend", run_passes=True)


@pytest.mark.parametrize("name,fn,ref", [("log1p", torch.log1p, np.log1p), ("floor", torch.floor, np.floor),
                                         ("ceil", torch.ceil, np.ceil), ("sign", torch.sign, np.sign)])
def test_unary_ops_on_the_vector_kernels(name, fn, ref, tmp_path):
    art = _build(fn, tmp_path)
    rng = np.random.default_rng(0)
    for T in (1, 7):
        x = (rng.standard_normal((T, 40)) * rng.choice([1e-6, 1e-2, 1, 30, 1e5], (T, 40))).astype(np.float32)
        x.reshape(-1)[:len(EDGE)] = EDGE[:x.size]
        got = art([x])[0]
        with np.errstate(all="ignore"):
            want = ref(x)
        assert got.dtype == np.float32 and got.shape == want.shape
        if name == "log1p":  # a few ulp of the result (Ln's own error), exact where numpy gives 0 or inf
            np.testing.assert_allclose(got, want, rtol=4e-7, atol=0)
        else:
            np.testing.assert_array_equal(got, want)
    assert not art.host_ops, art.host_ops
    assert art.launches.get("vec_elementwise", 0) > 0, art.launches

