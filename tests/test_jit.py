"""The PyTorch front end and the JIT API: every zoo family from its module through torch.export on
cpu / ascend / triton (interpreter without a GPU), matching the module's eager output; the disk cache
(hit, miss on a weight change, two processes at once); @moec.jit signatures; clear errors."""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import moec  # noqa: E402
from moec.errors import UnsupportedError, UserInputError  # noqa: E402
from zoo import make_inputs, make_module, modules  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = {cls.__name__: cls for cls in modules.ALL}


@pytest.fixture
def cache(moec_cache):
    """A fresh moec cache (its JIT area empty) holding the session's runtime and emulator builds (conftest)."""
    return moec_cache


def _check(cm, mod, T=7):
    x = torch.from_numpy(make_inputs(T))
    with torch.no_grad():
        want = mod(x)
    got = cm(x)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


# The default run takes every family through torch.export once (the zoo tests of test_zoo.py, test_triton.py and
# test_ascend.py run every family on each target through ONNX): here on cpu the families no other default test
# compiles from its module, and one family on each of triton and ascend; the others' module compiles elsewhere
# by default: Mixtral (test_cache_hit_and_weight_change_miss, f32 cpu), Dbrx (test_numpy_in_numpy_out, f32
# cpu), Qwen2Moe and DeepSeekV3 (ascend and triton below), GptOss and Llama4 (test_half.py: f16 on cpu and
# triton).  `-m slow` adds the rest of the cross product.
DEFAULT = {"cpu": ("DeepSeekV2", "Granite", "MixtralDense", "MixtralFused", "Qwen3Moe", "Switch"),
           "triton": ("DeepSeekV3",), "ascend": ("Qwen2Moe",)}


def _family_targets():
    for target in ("cpu", "ascend", "triton"):
        for family in sorted(FAMILIES):
            slow = family not in DEFAULT[target]
            yield pytest.param(family, target, id=f"{target}-{family}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("family,target", list(_family_targets()))
def test_every_family_from_its_module(family, target, cache):
    if target == "triton":
        pytest.importorskip("triton")
    mod = make_module(FAMILIES[family])
    cm = moec.compile(mod, (torch.from_numpy(make_inputs(6)),), target=target)
    assert cm.stats.verified and not cm.stats.cache_hit
    layers = cm.stats.report["moe_layers"]
    assert [layer["family"] for layer in layers] == [FAMILIES[family].family]
    assert cm.stats.report["frontend"] == "torch.export"
    _check(cm, mod)


def test_cache_hit_and_weight_change_miss(cache):
    mod = make_module(modules.Mixtral)
    x = torch.from_numpy(make_inputs(6))
    a = moec.compile(mod, (x,))
    assert [layer["family"] for layer in a.stats.report["moe_layers"]] == [modules.Mixtral.family]
    assert a.stats.verified and a.stats.report["frontend"] == "torch.export"
    b = moec.compile(mod, (x,))
    assert not a.stats.cache_hit and b.stats.cache_hit and a.stats.key == b.stats.key
    assert b.stats.seconds < 1.0
    with torch.no_grad():
        mod.experts[3].up_proj.weight.mul_(1.5)
    c = moec.compile(mod, (x,))
    assert not c.stats.cache_hit and c.stats.key != a.stats.key
    _check(c, mod)
    d = moec.compile(mod, (x,), weights="int8")  # an option change is a miss too
    assert not d.stats.cache_hit and d.stats.key != c.stats.key


def test_two_processes_compile_at_once(cache):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {HERE!r})
        import torch, moec
        from zoo import make_module, make_inputs, modules
        mod = make_module(modules.Granite)  # (the family is irrelevant here: one of the quickest to compile)
        cm = moec.compile(mod, (torch.from_numpy(make_inputs(6)),))
        x = torch.from_numpy(make_inputs(4))
        assert torch.allclose(cm(x), mod(x), rtol=1e-4, atol=1e-5)
        print("OK", cm.stats.key)
    """)
    env = dict(os.environ, MOEC_CACHE_DIR=str(cache))
    ps = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in ps]
    for p, (o, e) in zip(ps, outs):
        assert p.returncode == 0, e[-2000:]
        assert o.startswith("OK")
    assert outs[0][0].split()[1] == outs[1][0].split()[1]
    entries = [d for d in os.listdir(cache / "jit") if not d.endswith(".tmp")]
    assert len(entries) == 1


def test_jit_decorator_compiles_once_per_signature(cache):
    mod = make_module(modules.Granite)

    @moec.jit(target="cpu")
    def layer(x, s):
        return mod(x) * s

    s1 = torch.full((64,), 2.0)
    y1 = layer(torch.from_numpy(make_inputs(6)), s1)
    y2 = layer(torch.from_numpy(make_inputs(3)), s1)  # new token count: same compiled code
    assert y1.shape == (6, 64) and y2.shape == (3, 64) and layer.recompiles == 0 and len(layer.compiled) == 1
    x3 = torch.from_numpy(make_inputs(3))
    np.testing.assert_allclose(y2.numpy(), (mod(x3) * 2).detach().numpy(), rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        layer(x3, torch.full((1, 64), 3.0))  # a new signature (rank of s): compiled again, reported
    assert layer.recompiles == 1 and any("recompiling" in str(x.message) for x in w)


def test_numpy_in_numpy_out(cache):
    mod = make_module(modules.Dbrx)
    cm = moec.compile(mod, (make_inputs(6),))
    assert cm.stats.verified and [layer["family"] for layer in cm.stats.report["moe_layers"]] == [modules.Dbrx.family]
    out = cm(make_inputs(4))
    assert isinstance(out, np.ndarray) and out.shape == (4, 64)
    with torch.no_grad():
        np.testing.assert_allclose(out, mod(torch.from_numpy(make_inputs(4))).numpy(), rtol=1e-4, atol=1e-5)


def test_help_explains_every_argument():
    doc = moec.compile.__doc__
    import inspect
    for p in inspect.signature(moec.compile).parameters:
        assert f"{p}:" in doc, p
    assert "Decorator" in moec.jit.__doc__


def test_unsupported_aten_op_names_op_and_line(cache):
    class Weird(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x) + x  # a line the error must point at

    with pytest.raises(UnsupportedError) as e:
        moec.compile(Weird(), (torch.randn(4, 8),))
    msg = str(e.value)
    assert "aten.i0" in msg and "test_jit.py" in msg and "torch.special.i0(x)" in msg


@pytest.mark.parametrize("target,weights,group,says", [("cpu", "int4", 7, "--group-size 7"),
                                                        ("triton", "w8a8", 64, "w8a8"),
                                                        ("ascend", "fp8", 64, "not implemented")])
def test_weight_options_checked_for_modules_too(target, weights, group, says, cache):
    """A torch module takes the same weight-option checks as an ONNX file: a clear UserInputError."""
    from moec.errors import UserInputError
    mod = make_module(sorted(FAMILIES.values(), key=lambda c: c.__name__)[0])
    with pytest.raises(UserInputError, match=says):
        moec.compile(mod, (torch.from_numpy(make_inputs(3)),), target=target, weights=weights, group_size=group)


def test_weight_layout_changes_are_folded_at_compile_time(cache):
    """nn.Linear exports as mm(x, t(W)): the transpose of a weight used once is folded into the weight
    store (not redone on every call), and the original layout is dropped (the weights do not grow)."""
    pytest.importorskip("triton")

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(64, 96)
            self.b = torch.nn.Linear(96, 64, bias=False)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))
    m = M().eval()
    x = torch.randn(5, 64)
    cm = moec.compile(m, (x,), target="triton")
    src = open(os.path.join(cm.stats.outdir, "model_triton.py")).read()
    assert "W['a.weight.transpose']" in src and "W['b.weight.transpose']" in src
    assert "transpose(" not in src and "permute" not in src and "HOST_OPS_STATIC = 0" in src
    assert sorted(cm.artifact.W) == ["a.bias", "a.weight.transpose", "b.weight.transpose"]
    with torch.no_grad():
        np.testing.assert_allclose(cm(x[:3]).numpy(), m(x[:3]).numpy(), rtol=1e-5, atol=1e-5)


def test_jit_function_sees_its_captured_module_change(cache):
    """@moec.jit on a function over a module it closes over: the cache key covers what the function
    reaches (the exported graph and its weights), so new weights recompile instead of silently
    reusing the old build (they once shared one key: the wrapper's class source and empty state)."""
    mod = make_module(modules.Mixtral)
    x = torch.from_numpy(make_inputs(4))

    def ffn(x):
        return mod(x)
    a = moec.jit(ffn)
    a(x)
    with torch.no_grad():
        mod.experts[0].up_proj.weight.mul_(3.0)
        want = mod(x)
    b = moec.jit(ffn)
    np.testing.assert_allclose(b(x).numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    assert next(iter(a.compiled.values())).stats.key != next(iter(b.compiled.values())).stats.key


def test_non_persistent_buffers_are_in_the_cache_key(cache):
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("s", torch.full((64,), 2.0), persistent=False)

        def forward(self, x):
            return x * self.s
    m = Scaled()
    x = torch.randn(3, 64)
    a = moec.compile(m, (x,))
    m.s.fill_(3.0)
    b = moec.compile(m, (x,))
    assert not b.stats.cache_hit
    np.testing.assert_allclose(b(x).numpy(), (x * 3).numpy(), rtol=1e-6)
    assert a.stats.key != b.stats.key


def test_jit_bf16_function_is_verified_in_f32_without_touching_the_module(cache):
    """The README's @moec.jit example with a bf16 layer: verified against the layer in f32 (a copy;
    the user's layer stays bf16), bf16 out."""
    layer = make_module(modules.Dbrx).to(torch.bfloat16)

    @moec.jit
    def ffn(x):
        return layer(x)
    x = torch.from_numpy(make_inputs(5)).to(torch.bfloat16)
    y = ffn(x)
    cm = next(iter(ffn.compiled.values()))
    assert y.dtype == torch.bfloat16 and cm.stats.verified and "f32" in cm.stats.report["oracle"]
    assert [layer_["family"] for layer_ in cm.stats.report["moe_layers"]] == ["dbrx"]
    assert all(p.dtype == torch.bfloat16 for p in layer.parameters())


def test_half_model_that_cannot_run_in_f32_is_a_clear_error(cache):
    """A hard-coded half cast: the f32 copy of `bad` then meets a bf16 input; moec says what it needs
    instead of a traceback from inside the user's module."""
    bad = torch.nn.Linear(64, 8).to(torch.bfloat16)

    def g(x):
        return bad(x.to(torch.bfloat16))
    with pytest.raises(UserInputError, match="running it in float32 failed.*verify=False"):
        moec.jit(g)(torch.randn(3, 64).to(torch.bfloat16))
