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



def test_sign_of_nan_is_nan(tmp_path):
    art = _build(torch.sign, tmp_path)
    x = np.resize(np.concatenate([EDGE, [np.nan, -np.nan]]).astype(np.float32), (3, 40))
    np.testing.assert_array_equal(art([x])[0], np.sign(x))  # (NaN positions compare equal here)
    assert np.isnan(art([x])[0]).sum() == np.isnan(x).sum() > 0


from moec.ir.ops.elementwise import _UNARY  # noqa: E402


def _erf64(v):
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(v)


def _erfc64(v):
    import math
    return np.vectorize(math.erfc, otypes=[np.float64])(v)


# (torch function, the exact value in float64 written without cancellation, max abs error, max rel error where the
# exact |value| > 1e-6): erf and gelu from Abramowitz & Stegun 7.1.26 (erf below 0.5 by its Taylor series), gelu_tanh
# as x / (1 + exp(-2y)).  The bounds are what the kernels measure over [-12, 12] (2026-12-07: erf 2.3e-7 / 4.4e-7,
# gelu 4.1e-7 / 1.7e-3 -- A&S's erfc tail for x < -4 --, gelu_tanh 5.0e-7 / 1.8e-6), with a little room.
GELU_CASES = {
    "erf": (torch.erf, _erf64, 3e-7, 6e-7),
    "gelu": (torch.nn.functional.gelu, lambda v: 0.5 * v * _erfc64(-v / np.sqrt(2.0)), 5e-7, 2.5e-3),
    "gelu_tanh": (lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
                  lambda v: v / (1.0 + np.exp(-2.0 * np.sqrt(2.0 / np.pi) * (v + 0.044715 * v ** 3))), 6e-7, 3e-6),
}


@pytest.mark.parametrize("name", sorted(GELU_CASES))
def test_erf_and_gelu_on_the_vector_kernels(name, tmp_path):
    fn, exact, atol, rtol = GELU_CASES[name]
    art = _build(fn, tmp_path)
    x = np.concatenate([np.linspace(-12, 12, 3960), EDGE, [np.nan]]).astype(np.float32)
    x = np.resize(x, (-(-x.size // 40), 40))
    got = art([x])[0]
    assert not art.host_ops and art.launches.get("vec_elementwise", 0) > 0, (art.host_ops, art.launches)
    with np.errstate(all="ignore"):
        want = exact(x.astype(np.float64))
        ref = _UNARY[name][0](x).astype(np.float32)               # the IR's reference (numpy)
    fin = np.isfinite(want) & (np.abs(want) < 3e38)
    np.testing.assert_array_equal(got[~fin], ref[~fin])            # NaN and the infinities as the reference
    err = np.abs(got[fin] - want[fin])
    assert err.max() <= atol, err.max()
    big = np.abs(want[fin]) > 1e-6
    assert (err[big] / np.abs(want[fin][big])).max() <= rtol
    np.testing.assert_array_equal(got[x == 0], x[x == 0])           # +-0 kept (signed zeros)
    assert np.array_equal(np.signbit(got[x == 0]), np.signbit(x[x == 0]))


@pytest.mark.parametrize("p", [1, 2])
def test_l1_l2_norms_on_vec_rowwise(p, tmp_path):
    art = _build(lambda t: torch.linalg.vector_norm(t, p, dim=-1, keepdim=True), tmp_path)
    x = np.random.default_rng(5).standard_normal((7, 40)).astype(np.float32) * 3
    want = np.sqrt(np.square(x).sum(-1, keepdims=True, dtype=np.float32)) if p == 2 else \
        np.abs(x).sum(-1, keepdims=True, dtype=np.float32)
    np.testing.assert_allclose(art([x])[0], want, rtol=2e-6)
    assert not art.host_ops and art.launches.get("vec_rowwise", 0) > 0, (art.host_ops, art.launches)


@pytest.mark.parametrize("e", [-0.5, -1.0])
def test_negative_pow_on_the_vector_kernels(e, tmp_path):
    art = _build(lambda t: torch.pow(t, e), tmp_path)  # Muse Spark's RMSNorm: x * pow(mean(x^2) + eps, -0.5)
    x = np.abs(np.random.default_rng(6).standard_normal((3, 40))).astype(np.float32) * 10 + 1e-3
    x[0, :4] = [0.0, np.inf, 1e-30, 4.0]
    with np.errstate(divide="ignore"):
        want = np.power(x, np.float32(e))
    np.testing.assert_allclose(art([x])[0], want, rtol=3e-7 if e == -0.5 else 0, atol=0)
    assert not art.host_ops and art.launches.get("vec_elementwise", 0) > 0, (art.host_ops, art.launches)


def test_tile_on_vec_copy(tmp_path):
    art = _build(lambda t: torch.tile(t[:, None, :5], (2, 3, 2)), tmp_path)  # Qwen4's expert ids tiled
    x = np.random.default_rng(7).standard_normal((4, 40)).astype(np.float32)
    np.testing.assert_array_equal(art([x])[0], np.tile(x[:, None, :5], (2, 3, 2)))
    assert not art.host_ops, art.host_ops
