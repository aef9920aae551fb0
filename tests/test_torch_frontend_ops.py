"""ATen ops of real transformers models that moec's PyTorch front end lowers (issue 16): convolution
(the causal depthwise conv1d of linear-attention / Mamba layers in hybrid models), log1p (softplus,
logsigmoid), constant_pad_nd (F.pad), slice_scatter with a step (interleaved rotary sections).  Each op
against torch on small random inputs through moec's interpreter (the ops' numpy reference semantics) and
the C target; bad attributes refused with one clear error.  Then real 2-layer transformers CausalLMs
that needed them: every sparse layer recognised, logits equal to the model's own (one fast
representative, the rest ``-m slow``)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moec.errors import UnsupportedError, UserInputError  # noqa: E402
from moec.frontend.torch_import import import_torch, tensor_to_numpy  # noqa: E402
from moec.ir.interpreter import run as ir_run  # noqa: E402


def run_ir(m, *xs):
    return list(ir_run(m, [tensor_to_numpy(x) for x in xs]).values())


def run_c(m, tmp_path, *xs):
    """The module built for the C target (no verification: the test compares) and run on xs."""
    from moec.driver import build_module
    art = build_module(m, str(tmp_path / f"c_{id(m)}"))
    return art([tensor_to_numpy(x) for x in xs])


class _Fn(torch.nn.Module):
    def __init__(self, fn, *mods):
        super().__init__()
        self.fn = fn
        self.mods = torch.nn.ModuleList(mods)

    def forward(self, x, y=None):
        return self.fn(self, x) if y is None else self.fn(self, x, y)


def _conv_case(conv_cls, cin, cout, k, **kw):
    torch.manual_seed(0)
    return conv_cls(cin, cout, k, **kw).eval()


CONVS = [  # (conv, input shape): every attribute aten.convolution carries
    pytest.param(_conv_case(torch.nn.Conv1d, 6, 6, 4, padding=3, groups=6), (2, 6, 7), id="causal-depthwise-1d"),
    pytest.param(_conv_case(torch.nn.Conv1d, 4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (2, 4, 9),
                 id="1d-stride-dilation-groups"),
    pytest.param(_conv_case(torch.nn.Conv1d, 3, 2, 1, bias=False), (1, 3, 5), id="1d-pointwise-nobias"),
    pytest.param(_conv_case(torch.nn.Conv2d, 3, 4, (2, 3), stride=(1, 2), padding=(1, 0), bias=False), (1, 3, 5, 6),
                 id="2d-asymmetric"),
    pytest.param(_conv_case(torch.nn.Conv2d, 4, 4, 3, padding=2, dilation=(2, 1), groups=4), (2, 4, 6, 5),
                 id="2d-depthwise-dilated"),
    pytest.param(_conv_case(torch.nn.Conv3d, 2, 2, (1, 2, 2), stride=(1, 1, 2)), (1, 2, 3, 4, 5), id="3d"),
]


@pytest.mark.parametrize("conv,shape", CONVS)
def test_convolution_matches_torch(conv, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    m = import_torch(_Fn(lambda s, x: s.mods[0](x), conv), (x,), dynamic_dims={})
    assert "moec.conv" in {o.name for o in m.main.ops}
    with torch.no_grad():
        want = conv(x).numpy()
    got = run_ir(m, x)[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_convolution_c_target_matches_torch(tmp_path):
    """The C kernel (rt_conv.c) on a grouped, dilated, padded conv1d with bias, its batch and sequence
    dims dynamic, and a strided, padded conv2d (torch.export specialises a strided conv's dynamic length)."""
    c1 = _conv_case(torch.nn.Conv1d, 4, 6, 3, padding=2, dilation=2, groups=2)
    c2 = _conv_case(torch.nn.Conv2d, 3, 4, (2, 3), stride=(2, 1), padding=(1, 1), bias=False)
    mod = _Fn(lambda s, x, y: (s.mods[0](x), s.mods[1](y)), c1, c2)
    x, y = torch.randn(2, 4, 9), torch.randn(1, 3, 5, 6)
    m = import_torch(mod, (x, y), dynamic_dims={0: {0: "B", 2: "S"}, 1: {}})
    for xs in (x, torch.randn(3, 4, 4)):
        with torch.no_grad():
            want = mod(xs, y)
        got = run_c(m, tmp_path, xs, y)
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w.numpy(), rtol=1e-5, atol=1e-6)


def test_convolution_bf16_rounds_once():
    """A bf16 conv accumulates in f64 and rounds once: within bf16's half-ulp of torch's own f32 result."""
    conv = _conv_case(torch.nn.Conv1d, 4, 4, 3, padding=2, groups=4).to(torch.bfloat16)
    x = torch.randn(2, 4, 6).to(torch.bfloat16)
    m = import_torch(_Fn(lambda s, x: s.mods[0](x), conv), (x,), dynamic_dims={})
    with torch.no_grad():
        exact = torch.nn.functional.conv1d(x.float(), conv.weight.float(), conv.bias.float(), padding=2, groups=4)
    got = run_ir(m, x)[0].astype(np.float32)
    np.testing.assert_array_equal(got, exact.to(torch.bfloat16).float().numpy())


def test_transposed_convolution_is_refused():
    ct = torch.nn.ConvTranspose1d(2, 2, 3).eval()
    with pytest.raises(UnsupportedError, match="transposed convolution"):
        import_torch(_Fn(lambda s, x: s.mods[0](x), ct), (torch.randn(1, 2, 5),), dynamic_dims={})


def test_conv_op_rejects_bad_attributes():
    """moec.conv's type rules: channels per group, kernel longer than the padded input, bad strides."""
    from moec.ir import DType, Function, Module, TensorType, Value
    from moec.ir.core import IRError
    from moec.ir.opdef import OPS
    x = Value(TensorType(DType.F32, (1, 4, 5)), "x")
    w = Value(TensorType(DType.F32, (2, 3, 2)), "w")
    w2 = Value(TensorType(DType.F32, (2, 2, 2)), "w2")
    Module().functions.append(Function("main", [x, w, w2], ["x", "w", "w2"]))
    cases = [(w, {"group": 1}, "4 channels, w expects 3"),
             (w, {"group": 2}, "4 channels, w expects 3 per group x 2"),
             (w2, {"group": 3}, "do not divide into 3 groups"),
             (w2, {"group": 2, "strides": [0]}, "strides"),
             (w2, {"group": 2, "pads": [-1, 0]}, "pads"),
             (w2, {"group": 2, "pads": [1]}, "pads 2"),
             (w2, {"group": 2, "dilations": [9]}, "longer than the padded input")]
    for wv, attrs, msg in cases:
        with pytest.raises(IRError, match=msg):
            OPS["moec.conv"].create([x, wv], attrs, None, None)
    ok = OPS["moec.conv"].create([x, w2], {"group": 2, "pads": [1, 0]}, None, None)
    assert ok.results[0].type.shape == (1, 2, 5)
    xs = Value(TensorType(DType.F32, (1, 4, "S")), "xs")  # a symbolic length survives a causal (same-length) conv
    assert OPS["moec.conv"].create([xs, w2], {"group": 2, "pads": [1, 0]}, None, None).results[0].type.shape == \
        (1, 2, "S")
    assert OPS["moec.conv"].create([xs, w2], {"group": 2, "pads": [1, 1]}, None, None).results[0].type.shape == \
        (1, 2, None)


def test_onnx_conv_auto_pad_matches_onnxruntime(tmp_path):
    """The ONNX Conv converter (the same moec.conv): explicit pads, SAME_UPPER, SAME_LOWER, VALID, groups,
    one model verified against onnxruntime by moec compile (one C build)."""
    from onnx import TensorProto, helper
    from helpers import check_model
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 2, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    variants = ({"pads": [2, 1], "strides": [2]}, {"auto_pad": "SAME_UPPER", "strides": [2]},
                {"auto_pad": "SAME_LOWER", "strides": [3]}, {"auto_pad": "VALID", "dilations": [2]})
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [f"y{i}"], group=2, **a) for i, a in enumerate(variants)]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                          [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(len(nodes))],
                          [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
                           helper.make_tensor("b", TensorProto.FLOAT, b.shape, b)])
    check_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), tmp_path)


# ---- log1p -------------------------------------------------------------------------------------------
def _log_fns(s, x):
    f = torch.nn.functional
    return torch.log1p(x), f.softplus(x), f.softplus(x, beta=2.0, threshold=5.0), f.logsigmoid(x)


def test_log1p_softplus_logsigmoid_match_torch(tmp_path):
    """log1p and the activations torch decomposes into it, from tiny to large |x| (log1p is exact near 0,
    where log(1 + x) would lose x), interpreter and C target; NaN where x < -1, as in torch."""
    x = torch.tensor([[-30.0, -5.0, -1.5, -1e-7, 0.0, 3e-8, 1e-3, 0.7, 4.9, 25.0]] * 2) * torch.tensor([[1.0], [0.5]])
    m = import_torch(_Fn(_log_fns), (x,), dynamic_dims={0: {0: "T"}})
    assert "moec.log1p" in {o.name for o in m.main.ops}
    want = [w.numpy() for w in _Fn(_log_fns)(x)]
    for got in (run_ir(m, x), run_c(m, tmp_path, x)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=0, equal_nan=True)
    assert float(run_ir(m, x)[0][0, 5]) == pytest.approx(3e-8, rel=1e-6)  # not rounded to 0


def test_log1p_bf16_and_int_promotion():
    xb = torch.randn(3, 4).to(torch.bfloat16)
    m = import_torch(_Fn(lambda s, x: torch.log1p(x.abs())), (xb,))
    np.testing.assert_array_equal(run_ir(m, xb)[0].astype(np.float32), torch.log1p(xb.abs()).float().numpy())
    xi = torch.arange(6).reshape(2, 3)  # an integer input: log1p promotes to float, as in torch
    mi = import_torch(_Fn(lambda s, x: torch.log1p(x)), (xi,), dynamic_dims={})
    np.testing.assert_allclose(run_ir(mi, xi)[0], torch.log1p(xi).numpy(), rtol=1e-6)


# ---- constant_pad_nd, strided slice_scatter -------------------------------------------------------------
@pytest.mark.parametrize("pad", [(3, 0), (1, 2, 0, 1), (-1, 2), (2, -3, 1, 1), (0, 0, 0, 0, 1, 0)])
def test_constant_pad_matches_torch(pad):
    """F.pad with a constant: positive amounts add, negative crop, pairs from the last dim backwards."""
    x = torch.randn(2, 3, 6)
    mod = _Fn(lambda s, x: torch.nn.functional.pad(x, pad, value=0.5))
    m = import_torch(mod, (x,), dynamic_dims={0: {0: "T"}})
    for xs in (x, torch.randn(4, 3, 6)):
        np.testing.assert_array_equal(run_ir(m, xs)[0], mod(xs).numpy())


@pytest.mark.parametrize("start,stop,step", [(1, 7, 3), (0, None, 2), (-5, None, 2), (2, 3, 4)])
def test_slice_scatter_with_step_matches_torch(start, stop, step, tmp_path):
    """``x[..., start:stop:step] = y`` (Qwen3-VL's interleaved M-RoPE sections write freqs[..., 1:n:3]),
    the leading dim dynamic, interpreter and C target."""
    def fn(s, x, y):
        x = x.clone()
        x[..., start:stop:step] = y
        return x
    x = torch.randn(3, 8)
    n = len(range(8)[start:stop:step])
    y = torch.randn(3, n)
    mod = _Fn(fn)
    m = import_torch(mod, (x, y), dynamic_dims={0: {0: "T"}, 1: {0: "T"}})
    for xs, ys in ((x, y), (torch.randn(5, 8), torch.randn(5, n))):
        np.testing.assert_array_equal(run_ir(m, xs, ys)[0], mod(xs, ys).numpy())
    np.testing.assert_array_equal(run_c(m, tmp_path, x, y)[0], mod(x, y).numpy())


def test_permute_with_negative_dims_matches_torch():
    """``x.permute(0, -2, -1, 1)`` (Mamba2's SSD chunk scan): torch counts a negative dim from the end."""
    x = torch.randn(2, 3, 4, 5)
    mod = _Fn(lambda s, x: x.permute(0, -2, -1, 1))
    m = import_torch(mod, (x,))
    np.testing.assert_array_equal(run_ir(m, x)[0], mod(x).numpy())


def test_floor_ceil_sign_match_torch():
    """Llama-4 / Mistral-4 attention temperature: ``log1p(floor((pos + 1) / floor_scale))``."""
    x = torch.tensor([[-2.5, -1.0, -0.5, -0.0, 0.0, 0.4, 1.0, 2.5, 7.9]]).repeat(2, 1)
    mod = _Fn(lambda s, x: (torch.floor(x), torch.ceil(x), torch.sign(x), torch.log1p(torch.floor(x.abs() + 1))))
    m = import_torch(mod, (x,))
    for g, w in zip(run_ir(m, x), mod(x)):
        np.testing.assert_array_equal(g, w.numpy())


def test_integer_floor_division_of_folded_operands_matches_torch():
    """Llama-4's attention (``(positions // floor_scale)`` over an arange): the quotient of two constants folds,
    and floor division on integers still adjusts it by the remainder's sign (it read the folded Div's operands)."""
    x = torch.randn(2, 16)

    def fn(s, x):
        idx = torch.arange(-8, 8)
        q = torch.div(idx, 3, rounding_mode="floor")
        r = torch.div(idx, -3, rounding_mode="trunc")
        return x * q.to(x.dtype) + r.to(x.dtype), q, r
    mod = _Fn(fn)
    m = import_torch(mod, (x,))
    for g, w in zip(run_ir(m, x), mod(x)):
        np.testing.assert_array_equal(g, w.numpy())


def test_cat_skips_empty_1d_tensors_like_torch():
    """torch.cat ignores 1-D tensors of size 0 beside tensors of any rank (a cache grown from tensor([]))."""
    x = torch.randn(2, 3, 4)
    mod = _Fn(lambda s, x: (torch.cat([torch.zeros(0), x], dim=-2), torch.cat([x, torch.zeros(0), x], dim=1)))
    m = import_torch(mod, (x,))
    for g, w in zip(run_ir(m, x), mod(x)):
        np.testing.assert_array_equal(g, w.numpy())


# ---- real 2-layer transformers models ---------------------------------------------------------------------
transformers = pytest.importorskip("transformers")
import hf_survey as survey  # noqa: E402  (tests/hf_survey.py: the tiny configs and models)

# model type -> (the op it needed, the family its sparse layers are recognised as)
LM_NEEDS = {
    "beam": ("log1p (attention scaling)", "deepseek-v3"),
    "laguna": ("log1p (softplus gate)", "deepseek-v3"),
    "jamba": ("convolution (Mamba conv1d)", "qwen2-moe"),
    "qwen3_next": ("convolution, constant_pad_nd (gated delta net)", "mixtral"),
    "granitemoehybrid": ("convolution (Mamba2 conv1d)", "granite-moe"),
    "kimi_linear": ("convolution (KDA short conv)", "deepseek-v3"),
    "lara_mini": ("convolution", "mixtral"),
    "bailing_hybrid": ("convolution", "deepseek-v3"),
    "qwen3_5_moe_text": ("constant_pad_nd, slice_scatter with step 3", "mixtral"),
    "qwen3_vl_moe_text": ("slice_scatter with step 3 (interleaved M-RoPE)", "mixtral"),
    "qwen3_omni_moe_text": ("slice_scatter with step 3 (interleaved M-RoPE)", "mixtral"),
    "qwen4_exp_text": ("slice_scatter with step 3", "mixtral"),
    "mistral4": ("floor (Llama-4 attention temperature)", "mixtral"),
}
FAST_LM = "beam"


def _recognised_layers(m):
    from moec.passes.base import run_to_fixed_point
    from moec.passes.dce import DeadCodeElimination
    from moec.passes.fold_constants import FoldConstants
    from moec.passes.recognize_moe import RecognizeMoE
    run_to_fixed_point(m, [FoldConstants(), DeadCodeElimination()])
    run_to_fixed_point(m, [RecognizeMoE(), DeadCodeElimination()])
    return [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]


class _Logits(torch.nn.Module):
    def __init__(self, mdl):
        super().__init__()
        self.m = mdl

    def forward(self, ids):
        return survey._out0(self.m(input_ids=ids, use_cache=False))  # (logits, or a base model's hidden states)


@pytest.mark.parametrize("arch", [FAST_LM] + [pytest.param(a, marks=pytest.mark.slow)
                                             for a in LM_NEEDS if a != FAST_LM])
def test_causal_lm_with_these_ops_recognised_and_exact(arch):
    """The survey's tiny 2-layer model (input_ids [batch, seq]): imports, every decoder layer's sparse
    block is recognised with its family, the logits equal the model's own at another batch / sequence size
    (at the example size where torch.export specialised the dims)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = survey.build_model(arch, "batched_mm", "f32")
        n_layers = model.config.num_hidden_layers
        ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(5))
        lm = _Logits(model).eval()
        m = import_torch(lm, (ids,), dynamic_dims={0: {0: "B", 1: "S"}})
    layers = _recognised_layers(m)
    assert [la["family"] for la in layers] == [LM_NEEDS[arch][1]] * n_layers, layers
    static = all(isinstance(d, int) for d in m.main.args[0].type.shape)
    for shape in ((2, 5),) if static else ((3, 2),):
        xs = torch.randint(3, 128, shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = lm(xs).numpy()
        np.testing.assert_allclose(run_ir(m, xs)[0], want, rtol=1e-4, atol=1e-5)
