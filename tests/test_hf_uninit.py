"""Real transformers MoE blocks built without weight init (issue 16): ``Block(config)`` leaves transformers'
experts and router parameters ``torch.empty`` (NaN, ~1e35, zeros, 1e-30 garbage) until a model's weight init
runs.  recognize-moe proves its rewrites on finite probe weights of the same shapes substituted for such
tensors, and the rewrite keeps the module's real weights; verification says when the module's own output has
nothing finite to compare."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

D = 64


def _block(arch: str):
    """The sparse block of ``arch`` from its constructor only (no post_init / weight init)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if arch == "mixtral":
            from transformers import MixtralConfig
            from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
            return MixtralSparseMoeBlock(MixtralConfig(hidden_size=D, intermediate_size=128, num_local_experts=4,
                                                       num_experts_per_tok=2)).eval()
        if arch == "qwen2_moe":
            from transformers import Qwen2MoeConfig
            from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
            return Qwen2MoeSparseMoeBlock(Qwen2MoeConfig(hidden_size=D, intermediate_size=128, moe_intermediate_size=32,
                                                         shared_expert_intermediate_size=64, num_experts=4,
                                                         num_experts_per_tok=2)).eval()
        from transformers import DeepseekV3Config
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
        return DeepseekV3MoE(DeepseekV3Config(hidden_size=D, intermediate_size=128, moe_intermediate_size=32,
                                              n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                                              n_shared_experts=1)).eval()


FAMILY = {"mixtral": ("mixtral", {"scoring": "softmax", "norm": "sum", "k": 2}),
          "qwen2_moe": ("qwen2-moe", {"scoring": "softmax", "norm": "none", "k": 2}),
          "deepseek_v3": ("deepseek-v3", {"scoring": "sigmoid", "norm": "sum", "k": 2, "n_group": 2, "topk_group": 1,
                                          "scale": 2.5})}


def _recognise(blk):
    from hf_survey import _recognise
    from moec.hf_experts import import_module
    x = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(1))
    m = import_module(blk, (x,), {0: {0: "B", 1: "S"}}, "auto")
    return m, _recognise(m)


def _check_family(arch, layers):
    fam, routing = FAMILY[arch]
    assert [la["family"] for la in layers] == [fam], layers
    assert {k: layers[0]["routing"].get(k) for k in routing} == pytest.approx(routing)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe", pytest.param("deepseek_v3", marks=pytest.mark.slow)])
def test_block_without_weight_init_is_recognised(arch):
    """Whatever torch.empty left in the parameters (this run's memory), the family and routing are found."""
    blk = _block(arch)
    _, layers = _recognise(blk)
    _check_family(arch, layers)


def _garbage(blk):
    """Deterministic 'uninitialised' parameters: every parameter N(0, 0.2), then the kinds of garbage torch.empty
    leaves in the last expert: its projections ~1e35 and NaN (so every tensor of stacked experts is unusable
    for a proof), the other experts' rows sound."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in blk.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        blk.experts.down_proj[-1].fill_(3e35)
        blk.experts.gate_up_proj[-1, :5].fill_(float("nan"))


@pytest.mark.parametrize("arch", sorted(FAMILY))
def test_rewrite_keeps_the_real_weights(arch):
    """The proofs ran on probe weights; the rewritten layer computes with the module's own: equal to the module
    wherever the module is finite (the tokens that did not choose the last expert), non-finite where it is."""
    from moec.ir import run
    blk = _block(arch)
    _garbage(blk)
    m, layers = _recognise(blk)
    _check_family(arch, layers)
    x = torch.randn(1, 9, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = blk(x)
    want = (want[0] if isinstance(want, tuple) else want).numpy().reshape(-1, D)
    with np.errstate(all="ignore"):
        got = np.asarray(list(run(m, [x.numpy()]).values())[0]).reshape(-1, D)
    fin = np.isfinite(want).all(axis=1)
    assert fin.any() and not fin.all(), "the probe input must reach the garbage expert with some tokens only"
    np.testing.assert_array_equal(np.isfinite(got).all(axis=1), fin)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-5)


def test_which_weights_the_proofs_read_as_probe_values():
    """Every float projection weight (whatever it holds: recognition must not depend on the checkpoint); other
    weights only when they hold what no trained model does (NaN, ~1e35)."""
    from moec.passes.recognize_moe import _probed
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    assert _probed(w, True) and _probed(np.zeros((4, 8), np.float32), True)
    assert not _probed(w, False)
    assert _probed(np.where(w > 1, np.nan, w), False)
    assert _probed(np.where(w > 1, 3e35, w), False)
    assert not _probed(np.zeros((4, 8), np.float32), False)  # zeros added / scattered into: on purpose
    assert not _probed(np.where(w > 0, 0.0, -np.inf).astype(np.float32), False)  # an additive mask
    assert not _probed(np.full((4,), np.finfo(np.float32).max, np.float32), False)  # torch's "no bound"
    assert not _probed(np.array([np.nan], np.float32), True)  # (a scalar: a graph's own constant)
    assert not _probed(np.arange(8, dtype=np.int64), True)


def test_module_output_with_nothing_finite_is_not_verified(moec_cache):
    """Equal NaN positions count as agreement; a module whose output is NaN everywhere leaves nothing to compare:
    moec.compile says so in one line (exit-2 class), it does not claim 'verified'."""
    import moec
    from moec.errors import UserInputError
    blk = _block("mixtral")
    with torch.no_grad():
        blk.experts.down_proj.fill_(float("nan"))
    with pytest.raises(UserInputError, match="NaN everywhere.*nothing to verify"):
        moec.compile(blk, (torch.randn(1, 4, D),))
    compiled = moec.compile(blk, (torch.randn(1, 4, D),), verify=False)
    assert [la["family"] for la in compiled.stats.report["moe_layers"]] == ["mixtral"]
