"""Gated expert activations besides SwiGLU that real transformers MoE models use (issue 16):
geglu / geglu_tanh (gelu(G) * U: Gemma4's experts) and softcap_swiglu (cg tanh(G/cg) sigmoid(G) cu tanh(U/cu):
Inkling2's experts).  The numpy semantics against transformers' own activation modules, the C kernels and
the Triton kernels (interpreter) against the reference, recognition from a graph (the soft caps read off
it) with a look-alike left alone, and the real Inkling2 block (slow)."""
import json
import types
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moec.driver import build_module  # noqa: E402
from moec.ir import run  # noqa: E402
from moec.ir.ops.moe import apply_activation  # noqa: E402
from moec.passes.base import run_to_fixed_point  # noqa: E402
from moec.passes.pipeline import stages  # noqa: E402
from moec.passes.recognition_trace import recognition_of  # noqa: E402
from moec.targets import target_for  # noqa: E402

import test_moe_ops as MO  # noqa: E402

CAPS = ', gate_softcap = 1.5 : f64, up_softcap = 2.5 : f64'


def _inkling2_act(cg, cu):
    tr = pytest.importorskip("transformers.models.inkling2.modeling_inkling2")
    return tr.Inkling2SoftcappedSwiGLU(types.SimpleNamespace(mlp_gate_softcap=cg, mlp_up_softcap=cu))


def test_reference_semantics_match_transformers_activations():
    act2fn = pytest.importorskip("transformers.activations").ACT2FN
    h = np.random.default_rng(0).standard_normal((5, 12)) * 6
    g, u = torch.tensor(h[:, :6]), torch.tensor(h[:, 6:])
    want = (act2fn["gelu_pytorch_tanh"](g) * u).numpy()
    np.testing.assert_allclose(apply_activation(h, {"activation": "geglu_tanh", "gate_layout": "concat"}, 6),
                               want, rtol=1e-12, atol=1e-12)
    want = (act2fn["gelu"](g) * u).numpy()
    np.testing.assert_allclose(apply_activation(h, {"activation": "geglu", "gate_layout": "concat"}, 6),
                               want, rtol=1e-12, atol=1e-12)
    got = apply_activation(h, {"activation": "softcap_swiglu", "gate_layout": "concat", "gate_softcap": 4.0,
                               "up_softcap": 25.0}, 6)
    np.testing.assert_allclose(got, _inkling2_act(4.0, 25.0)(g, u).numpy(), rtol=1e-6, atol=1e-6)


def test_softcap_swiglu_needs_its_caps():
    from moec.ir.core import IRError
    with pytest.raises(IRError, match="softcap_swiglu needs a finite positive gate_softcap"):
        MO._module(dict(norm='"sum"'), act="softcap_swiglu", extra_ffn=", up_softcap = 2.0 : f64")


GATED_CASES = {
    "geglu_tanh": dict(act="geglu_tanh"),
    "geglu_interleaved_shared": dict(act="geglu", layout="interleaved", shared=True, b_in=True),
    "softcap_swiglu": dict(act="softcap_swiglu", extra_ffn=CAPS, shared=True),
}


@pytest.mark.parametrize("name", sorted(GATED_CASES))
def test_c_kernels_match_reference(name, tmp_path):
    m = MO._module(dict(norm='"sum"'), **GATED_CASES[name])
    art = build_module(m, str(tmp_path / "out"))
    for T in (7, 1):
        x = MO._inputs(T) * 3  # (activations past the caps)
        np.testing.assert_allclose(art([x])[0], run(m, {"x": x})["y"], rtol=2e-5, atol=2e-5, err_msg=f"T={T}")


@pytest.mark.parametrize("name", ["geglu_tanh", "softcap_swiglu"])
def test_triton_kernels_match_reference(name, tmp_path, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    m = MO._module(dict(norm='"sum"'), **GATED_CASES[name])
    art = build_module(m, str(tmp_path / "out"), target="triton")
    x = MO._inputs(5) * 3
    np.testing.assert_allclose(art([x])[0], run(m, {"x": x})["y"], rtol=1e-4, atol=1e-4)


# -- recognition ----------------------------------------------------------------------------------

class GatedMoE(torch.nn.Module):
    """softmax top-k renormalised, experts as transformers 5.x's batched_mm writes them (stacked
    [E, 2F, D] weights gathered by the flattened ids, bmm with the weights on the left), ``act(gate, up)``."""

    def __init__(self, act, D=8, F=6, E=4, k=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.act, self.k = act, k
        self.router = torch.nn.Parameter(torch.randn(D, E, generator=g))
        self.gate_up = torch.nn.Parameter(torch.randn(E, 2 * F, D, generator=g) * 0.6)
        self.down = torch.nn.Parameter(torch.randn(E, D, F, generator=g) * 0.5)

    def forward(self, x):
        T, D = x.shape
        w, ids = torch.topk(torch.softmax(x @ self.router, dim=-1), self.k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        flat = ids.reshape(-1)
        xs = x.repeat_interleave(self.k, dim=0)
        h = torch.bmm(self.gate_up[flat], xs.unsqueeze(-1)).squeeze(-1)
        gate, up = h.chunk(2, dim=-1)
        a = self.act(gate, up)
        y = torch.bmm(self.down[flat], a.unsqueeze(-1)).squeeze(-1) * w.reshape(-1, 1)
        return y.reshape(T, self.k, D).sum(dim=1)


def _import_recognise(mod, x):
    from moec.frontend.torch_import import import_torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = import_torch(mod, (x,), dynamic_dims={0: {0: "T"}})
    st = dict(stages(target_for("cpu")))
    run_to_fixed_point(m, st["canonicalize"])
    run_to_fixed_point(m, st["recognize-moe"])
    return m, [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]


def _gelu_tanh_glu(gate, up):
    return torch.nn.functional.gelu(gate, approximate="tanh") * up


@pytest.mark.parametrize("act,want", [(_gelu_tanh_glu, "geglu_tanh"), ("inkling2", "softcap_swiglu")])
def test_recognised_and_exact(act, want, tmp_path):
    if act == "inkling2":
        act = _inkling2_act(1.5, 2.5)
    mod = GatedMoE(act).eval()
    m, layers = _import_recognise(mod, torch.randn(6, 8))
    assert [la["activation"] for la in layers] == [want], layers
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    if want == "softcap_swiglu":  # the caps read off the graph
        assert (ex.attrs["gate_softcap"], ex.attrs["up_softcap"]) == (1.5, 2.5)
    x = torch.randn(9, 8, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        ref = mod(x).numpy()
    np.testing.assert_allclose(run(m, {m.main.arg_names[0]: x.numpy()})[m.main.output_names[0]], ref,
                               rtol=1e-5, atol=1e-5)
    art = build_module(m, str(tmp_path / "out"), run_passes=True)
    np.testing.assert_allclose(art([x.numpy()])[0], ref, rtol=1e-4, atol=1e-5)


def test_softcap_look_alike_is_left_alone():
    """The sigmoid seeing the capped gate (silu(cg tanh(G/cg)) * cu tanh(U/cu)) is no activation of
    moe.experts: the layer stays ordinary ops, and the trace says the activation step stopped it."""
    cap = _inkling2_act(1.5, 2.5)
    mod = GatedMoE(lambda g, u: torch.nn.functional.silu(cap.gate_softcap(g)) * cap.up_softcap(u)).eval()
    m, layers = _import_recognise(mod, torch.randn(6, 8))
    assert layers == []
    rec = next(r for r in recognition_of(m) if r["op"] == "moec.topk")
    assert rec["step"] == "experts" and "between the up projection(s) and the down projection" in rec["reason"] \
        and "softcap_swiglu" in rec["reason"], rec


@pytest.mark.slow
def test_real_inkling2_block():
    import test_hf_models as H
    blk = H.moe_block("inkling2_text")
    x = torch.randn(2, 5, H.D, generator=torch.Generator().manual_seed(2))
    m, layers = H.recognise(blk, x)
    assert [la["activation"] for la in layers] == ["softcap_swiglu"], layers
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    cfg = blk.experts.act_fn
    assert (ex.attrs["gate_softcap"], ex.attrs["up_softcap"]) == (cfg.gate_softcap.softcap, cfg.up_softcap.softcap)
    xs = torch.randn(1, 7, H.D, generator=torch.Generator().manual_seed(3)) * 3
    with torch.no_grad():
        want = H.first_output(blk(xs)).numpy()
    got = run(m, {m.main.arg_names[0]: xs.numpy()})[m.main.output_names[0]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["geglu_interleaved_shared", "softcap_swiglu"])
def test_ascend_kernels_match_reference(name, tmp_path):
    """On the Ascend emulator: the activation runs in moe_activation on the vector cores, no host op."""
    m = MO._module(dict(norm='"sum"'), **GATED_CASES[name])
    art = build_module(m, str(tmp_path / "out"), target="ascend")
    x = MO._inputs(5) * 3
    np.testing.assert_allclose(art([x])[0], run(m, {"x": x})["y"], rtol=1e-4, atol=2e-5)
    plan = json.load(open(tmp_path / "out" / "ascend" / "plan.json"))
    assert [s["op"] for s in plan["steps"] if s.get("where") == "host"] == []
