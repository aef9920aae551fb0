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


# (qwen2_moe and deepseek_v3 under -m slow: test_rewrite_keeps_the_real_weights recognises both with garbage weights)
@pytest.mark.parametrize("arch", ["mixtral", pytest.param("qwen2_moe", marks=pytest.mark.slow),
                                  pytest.param("deepseek_v3", marks=pytest.mark.slow)])
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


def _compile_warned(module, x):
    import moec
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = moec.compile(module, (x,))
    return c, [str(m.message) for m in w if "substituted finite weights" in str(m.message)]


@pytest.mark.parametrize("arch", ["mixtral", pytest.param("qwen2_moe", marks=pytest.mark.slow),
                                  pytest.param("deepseek_v3", marks=pytest.mark.slow)])
def test_default_config_block_compiles_verified_on_substituted_weights(arch, moec_cache):
    """A block built from its config alone, through moec.compile with default arguments, as a user calls it: a
    compiled, recognised module, verified on substituted finite weights and saying so (report, stats, warning).
    (Its torch.empty parameters hold whatever this process's memory held; _garbage makes sure they are unfit.)"""
    blk = _block(arch)
    _garbage(blk)
    x = torch.randn(1, 4, D, generator=torch.Generator().manual_seed(2))
    c, warned = _compile_warned(blk, x)
    rep = c.stats.report
    _check_family(arch, rep["moe_layers"])
    assert rep["verified"] is True and c.stats.verified is True
    assert rep["verification"].startswith("verified on substituted finite weights: the module's own weights give a "
                                          "non-finite output"), rep["verification"]
    assert c.stats.verification == rep["verification"] and warned and rep["verification"] in warned[0]
    assert "experts.down_proj" in rep["substituted_weights"]["tensors"]
    assert 0 < rep["max_abs_err"] < 1e-3  # (a real comparison on finite values, not NaN == NaN)
    assert rep["trials"] and all(t["ok"] for t in rep["trials"])
    # the artifact computes with the module's own weights: finite exactly where the module is
    with torch.no_grad():
        want = blk(x)
    want = (want[0] if isinstance(want, tuple) else want).numpy()
    got = c(x)
    got = (got[0] if isinstance(got, tuple) else got).numpy()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["int8", "bf16"])
def test_quantised_and_half_blocks_verify_on_substituted_weights(kind, moec_cache):
    """int8 weights (the same program although the quantisation statistics measured on NaN weights differ; the
    report gives the substituted build's quantisation error) and a bf16 block (against its f32 analogue)."""
    import moec
    blk = _block("mixtral")
    _garbage(blk)
    x = torch.randn(1, 4, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "bf16":
            c = moec.compile(blk.to(torch.bfloat16), (x.to(torch.bfloat16),))
        else:
            c = moec.compile(blk, (x,), weights=kind)
    rep = c.stats.report
    assert rep["verified"] is True and [la["family"] for la in rep["moe_layers"]] == ["mixtral"]
    assert rep["verification"].startswith("verified on substituted finite weights"), rep["verification"]
    if kind == "int8":
        assert "quantisation error" in rep["verification"] and rep["weights"]["mode"] == "int8"


def test_default_config_block_as_built(moec_cache):
    """MixtralSparseMoeBlock(MixtralConfig(...)) untouched (torch.empty as this run left it): compiled and
    verified, on substituted weights when its own are unfit."""
    from moec.verify import unfit_tensors
    blk = _block("mixtral")
    unfit = unfit_tensors(blk)
    c, warned = _compile_warned(blk, torch.randn(1, 4, D))
    rep = c.stats.report
    assert rep["verified"] is True and [la["family"] for la in rep["moe_layers"]] == ["mixtral"]
    assert bool(rep.get("substituted_weights")) == bool(warned)
    if unfit:
        assert rep["substituted_weights"]["tensors"] and set(unfit) <= set(rep["substituted_weights"]["tensors"])


def test_module_whose_output_is_nan_everywhere_still_compiles_verified_on_finite_weights(moec_cache):
    """Equal NaN positions count as agreement; with NaN weights, no claim rests on the module's NaN output:
    the same pipeline is verified on finite weights and the report says so (no 'verified, error 0')."""
    blk = _block("mixtral")
    _garbage(blk)
    with torch.no_grad():
        blk.experts.down_proj.fill_(float("nan"))
    c, _ = _compile_warned(blk, torch.randn(1, 4, D))
    rep = c.stats.report
    assert rep["verified"] and "substituted finite weights" in rep["verification"] and rep["max_abs_err"] > 0
    assert [la["family"] for la in rep["moe_layers"]] == ["mixtral"]
    assert np.isnan(c(torch.randn(1, 4, D)).numpy()).all()  # the real weights, NaN as the module's own output


class _NaNOut(torch.nn.Module):
    """Output NaN whatever its weights (a NaN added on purpose): substituting weights cannot help."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(D, D) * 0.1)

    def forward(self, x):
        return x @ self.w + float("nan")


class _ExportDiffers(torch.nn.Module):
    """NaN weights and a graph for torch.export other than what eager runs (torch.compiler.is_exporting()):
    every build, the substituted one included, disagrees with the eager module."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x @ self.w) * (1.5 if torch.compiler.is_exporting() else 1.0)


def test_nothing_finite_even_on_substituted_weights_is_not_verified(moec_cache):
    import moec
    from moec.errors import UserInputError
    with pytest.raises(UserInputError, match="on substituted finite weights.*NaN everywhere.*nothing to verify"):
        moec.compile(_NaNOut(), (torch.randn(1, 4, D),))
    moec.compile(_NaNOut(), (torch.randn(1, 4, D),), verify=False)


def test_substituted_build_is_really_compared(moec_cache):
    """The substituted build is compared with its own eager output at the usual tolerance: a build that disagrees
    with it fails verification (exit 1, one line saying on what), as the same module with finite weights does."""
    import moec
    from moec.errors import VerificationError
    with pytest.raises(VerificationError, match="on substituted finite weights.*non-finite output") as e:
        moec.compile(_ExportDiffers(torch.full((D, D), float("nan"))), (torch.randn(1, 4, D),))
    assert "\n" not in str(e.value)
    with pytest.raises(VerificationError) as e:
        moec.compile(_ExportDiffers(torch.randn(D, D) * 0.1), (torch.randn(1, 4, D),))
    assert "on substituted finite weights" not in str(e.value)
