"""``moec.compile(module)`` where torch.export stops inside transformers' own code (issue 16 item 3).

Each family below once stopped torch.export (or moec's PyTorch front end) on transformers 5.25's code; the
test compiles the real block from its tiny random config with ``moec.compile`` (torch.export, C build,
verification against the block's own eager output at several token counts) and checks the result on an
input of another shape against the block again.

- jetmoe: ``expert_size = expert_size.tolist()`` (the per-expert row counts read into Python) becomes
  ``aten._local_scalar_dense``: unbacked SymInts that size the Split of the sorted rows; the front end keeps
  them as run-time values (docs/exporting.md).
- dbrx, switch_transformers: the experts loop over the experts hit (``for expert_idx in expert_hit``), in
  classes with no other experts implementation; switch_transformers' router also reassigns
  ``self.classifier = self.classifier.to(dtype)`` in forward.  torch.export stops; moec.compile traces the module
  instead (moec.frontend.torch_trace: an example hitting every expert, recognised in full, always verified).
- nllb_moe: not an MoE layer; traced (index_add_ of duplicated rows in the adding form moec registers for its
  trace), the capacity frozen from the example's token count: compiled as a plain graph at the example's shape.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import moec  # noqa: E402
import hf_survey as survey  # noqa: E402  (tests/hf_survey.py: tiny configs, the blocks)

DYN = {0: {0: "B", 1: "S"}}


def _block(arch, impl="batched_mm", dtype="f32"):
    return survey.sparse_blocks(survey.build_model(arch, impl, dtype))[0].eval()


def _compile(block, x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return moec.compile(survey._wrap_first(block), (x,), dynamic_dims=DYN, cache=False, **kw)


def _x(b, s, seed=2, dtype=torch.float32):
    return torch.randn(b, s, survey.D, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _check_other_shape(cm, block, b=3, s=4, seed=11):
    """The artifact on an input of another [batch, seq] (the dims stayed dynamic) against the block."""
    x = _x(b, s, seed)
    with torch.no_grad():
        want = survey._out0(block(x)).numpy()
    got = np.asarray(cm(x.numpy()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _families(cm):
    return [la["family"] for la in cm.stats.report.get("moe_layers", [])]


def _imported(block, x):
    """The block imported as moec.compile imports it (torch.export, moec's front end, the experts implementation
    choice), then canonicalize + recognize-moe; (module, recognised families)."""
    from moec.hf_experts import AUTO, import_module
    m = import_module(survey._wrap_first(block), (x,), DYN, AUTO)
    return m, [la["family"] for la in survey._recognise(m)]


def _run_ir(m, x):
    from moec.ir.interpreter import run
    return list(run(m, [x.numpy()]).values())[0]


class _SplitBySizes(torch.nn.Module):
    """Rows split by counts read into Python (``.tolist()``), each block scaled by its index + 1."""

    def forward(self, x, ids):
        sizes = (ids[:, None] == torch.arange(3)).sum(0).tolist()
        order = torch.argsort(ids, stable=True)
        parts = x[order].split(sizes, dim=0)
        return torch.cat([p * (i + 1) for i, p in enumerate(parts)], dim=0)


def test_tolist_sizes_stay_run_time_values():
    """``aten._local_scalar_dense`` (``.tolist()`` / ``.item()``): the values stay computed in the graph, so a
    Split by them follows the input; checked with ids giving other block sizes than the example's, and an empty
    block."""
    from moec.frontend.torch_import import import_torch
    mod = _SplitBySizes()
    x = torch.randn(6, 4)
    ids = torch.tensor([2, 0, 1, 0, 2, 2])
    m = import_torch(mod, (x, ids), dynamic_dims={0: {0: "T"}, 1: {0: "T"}})
    from moec.ir.interpreter import run
    for xx, ii in ((x, ids), (torch.randn(5, 4), torch.tensor([1, 1, 0, 1, 1]))):
        got = list(run(m, [xx.numpy(), ii.numpy()]).values())[0]
        np.testing.assert_allclose(got, mod(xx, ii).numpy(), rtol=1e-6)


# -- jetmoe: expert_size.tolist() -------------------------------------------------------------------------
def test_jetmoe_tolist_sizes_recognised():
    """JetMoE through moec.compile's import: the layer is recognised (granite-moe: top-k of the logits, softmax
    over the k), and the imported graph computes the block (interpreter, another shape)."""
    blk = _block("jetmoe")
    m, fams = _imported(blk, _x(2, 5))
    assert fams == ["granite-moe"]
    x = _x(3, 4, seed=5)
    with torch.no_grad():
        np.testing.assert_allclose(_run_ir(m, x), survey._out0(blk(x)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_jetmoe_tolist_sizes_compile_recognised_and_verified():
    """The row counts of each expert are read with ``.tolist()`` and split the sorted rows: torch.export keeps
    them as unbacked SymInts (``aten._local_scalar_dense``), moec as run-time sizes of one Split; the layer is
    recognised (granite-moe: top-k of the logits, softmax over the k) and the build verifies."""
    blk = _block("jetmoe")
    cm = _compile(blk, _x(2, 5))
    assert cm.stats.verified is True
    assert _families(cm) == ["granite-moe"]
    _check_other_shape(cm, blk)
    _check_other_shape(cm, blk, 1, 1, seed=3)  # one token: two experts hit, the other splits empty


# -- dbrx, switch_transformers, nllb_moe: loops over the experts hit ---------------------------------------
def _traced(block, x):
    from moec.jit_api import _import
    m, info = _import(survey._wrap_first(block), (x,), DYN, "auto")
    return m, info


def test_stops_on_data_covers_the_export_stops():
    """The torch.export failures the trace front end takes over: a guard on a data-dependent value (the loop over
    the experts hit) and the router's ``Module.to`` inside forward (non-strict export holds parameters as fake
    tensors, which Module._apply swaps: refused for a tensor with a weak reference); an unsupported op is not."""
    from moec.frontend.torch_trace import stops_on_data
    blk = _block("switch_transformers")
    with pytest.raises(RuntimeError, match="Couldn't swap") as e:
        torch.export.export(survey._wrap_first(blk), (_x(2, 5),), strict=False)
    assert stops_on_data(e.value)
    assert stops_on_data(RuntimeError("Could not guard on data-dependent expression Eq(u0, 0)"))
    assert not stops_on_data(RuntimeError("ATen op 'aten.foo.default' is not supported"))


def test_dbrx_eager_loop_traced_and_recognised():
    """DbrxExperts loops over the experts hit: moec.compile's import traces an example that hits every expert,
    recognised in full (dbrx); the imported graph is the block's function at one token (one expert hit) too."""
    blk = _block("dbrx")
    m, info = _traced(blk, _x(2, 5))
    assert info["frontend"].startswith("torch.jit.trace") and info["dims"] == "dynamic"
    assert info["recognised_layers"] == 1 and "data-dependent" in info["torch_export_stopped"]
    assert [la["family"] for la in survey._recognise(m)] == ["dbrx"]
    for b, s in ((1, 1), (3, 7)):
        x = _x(b, s, seed=b + s)
        with torch.no_grad():
            np.testing.assert_allclose(_run_ir(m, x), survey._out0(blk(x)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_dbrx_compile_verified():
    blk = _block("dbrx")
    cm = _compile(blk, _x(2, 5))
    assert cm.stats.verified is True and _families(cm) == ["dbrx"]
    assert cm.stats.report["export"]["frontend"].startswith("torch.jit.trace")
    _check_other_shape(cm, blk)
    _check_other_shape(cm, blk, 1, 1, seed=3)


@pytest.mark.slow
def test_switch_transformers_compile_verified():
    """The router's ``.to`` and the loop over the experts hit stop torch.export; the trace of an example hitting
    every expert is recognised (switch: arg-max, capacity per sequence) and verified, at one token too."""
    blk = _block("switch_transformers")
    cm = _compile(blk, _x(2, 5))
    assert cm.stats.verified is True and _families(cm) == ["switch"]
    _check_other_shape(cm, blk)
    _check_other_shape(cm, blk, 1, 1, seed=3)


@pytest.mark.slow
def test_nllb_moe_compiles_as_a_plain_graph_at_its_example_shape():
    """nllb_moe: torch.export stops (the router's ``.to``, then the loop).  Its block is not an MoE layer (every
    token runs expert_1 and expert_0: tests/test_hf_older_families.py), so nothing is recognised and the trace is
    compiled as it is.  The trace also froze the capacity ceil(fraction x tokens) of its example's token count: the
    dynamic build agrees with the block at the verification's few tokens but not at the trace examples' larger
    counts, so moec compiles for the example's shape only (a warning says so), verified there."""
    blk = _block("nllb-moe")
    x = _x(2, 5)
    with pytest.warns(UserWarning, match="compiled for the example shapes only"):
        cm = moec.compile(survey._wrap_first(blk), (x,), dynamic_dims=DYN, cache=False)
    rep = cm.stats.report
    assert cm.stats.verified is True and _families(cm) == []
    assert rep["export"]["dims"] == "static" and "token counts" in rep["export"]["dynamic_dims_failed"]
    x2 = _x(2, 5, seed=9)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(cm(x2.numpy())), survey._out0(blk(x2)).numpy(), rtol=1e-4, atol=1e-5)


def test_trace_front_end_index_add_adds_duplicates():
    """index_add_ with an index holding a row several times adds them all (NLLB-MoE's class 0); torch's
    TorchScript symbolic writes a ScatterND keeping one, moec's trace registers the adding form for its export."""
    from moec.frontend.torch_trace import _trace_to_onnx
    from moec.ir.interpreter import run

    class IndexAdd(torch.nn.Module):
        def forward(self, x, idx):
            out = torch.zeros_like(x).index_add_(0, idx, x[idx] * 2)
            return out, torch.zeros(x.shape[0], 5).index_add(1, idx[:3] % 5, x[:, :3], alpha=0.5)
    x, idx = torch.randn(6, 3), torch.tensor([0, 0, 2, 2, 2])
    m = _trace_to_onnx(IndexAdd(), (x, idx), {}, "index_add")
    for got, want in zip(run(m, [x.numpy(), idx.numpy()]).values(), IndexAdd()(x, idx)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


class _Diff(torch.nn.Module):
    def __init__(self, n, with_append):
        super().__init__()
        self.n, self.with_append = n, with_append

    def forward(self, p):
        return torch.diff(p, n=self.n, dim=-1, prepend=p[:, :1] - 1,
                          append=p[:, -1:] * 2 if self.with_append else None)


@pytest.mark.parametrize("n,with_append", [(1, False), (2, True)])
def test_trace_front_end_exports_diff(n, with_append):
    """The TorchScript exporter has no ``aten::diff`` (every transformers CausalLM's mask runs
    ``torch.diff(position_ids, prepend=...)``): the trace front end registers its ONNX form, checked against torch."""
    from moec.frontend.torch_trace import _trace_to_onnx
    mod = _Diff(n, with_append)
    p = torch.tensor([[3, 4, 5, 9, 10], [0, 1, 2, 3, 7]])
    m = _trace_to_onnx(mod, (p,), {0: {1: "S"}}, "diff")
    from moec.ir.interpreter import run
    for q in (p, torch.tensor([[1, 5, 6], [2, 2, 8]])):
        np.testing.assert_array_equal(list(run(m, [q.numpy()]).values())[0], mod(q).numpy())


@pytest.mark.slow
def test_dbrx_causal_lm_compile_both_layers_recognised():
    """A 2-layer DbrxForCausalLM (input_ids [batch, seq]) through the trace front end: both layers recognised,
    verified.  (transformers 5.25's default ``clip_qkv=None`` makes DbrxAttention call ``clamp(None, None)``, which
    raises in eager too: the test sets a clip, as DBRX's released config has.)"""
    model = survey.build_model("dbrx").eval()
    for mod in model.modules():
        if hasattr(mod, "clip_qkv"):
            mod.clip_qkv = 8.0
    ids = torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = moec.compile(model, (ids,), dynamic_dims=DYN, cache=False)
    assert cm.stats.verified is True and _families(cm) == ["dbrx", "dbrx"]
    assert cm.stats.report["export"]["recognised_layers"] == 2
