"""``moec.compile(module)`` on real Hugging Face ``transformers`` MoE code (issue 16 items 1, 3, 6):
every experts implementation of transformers 5.x ("eager", "batched_mm", "grouped_mm") and whole
2-layer CausalLMs from tiny random configs (input_ids in, logits out), checked against the module's
own eager output.  The ATen ops these modules produce are checked one by one against torch.

Default run: the op-level checks, the eager and grouped_mm blocks and a 2-layer Mixtral through the
front end and recognition (interpreter), one C build.  ``-m slow``: the matrix of architectures x
experts implementations x dtypes x static/dynamic dims x targets through ``moec.compile``."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from moec.frontend.torch_import import import_torch, tensor_to_numpy  # noqa: E402
from moec.ir.interpreter import run as ir_run  # noqa: E402
import hf_survey as survey  # noqa: E402  (tests/hf_survey.py: the tiny configs and models)
from test_hf_models import D, RECOGNISED, first_output, moe_block, recognise  # noqa: E402

IMPLS = ("eager", "batched_mm", "grouped_mm")
LM_ARCHS = ("mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss")


def run_ir(m, *xs):
    return list(ir_run(m, [tensor_to_numpy(x) for x in xs]).values())


# ---- ATen ops, one by one against torch ------------------------------------------------------------
class _Histc(torch.nn.Module):
    def __init__(self, bins, lo, hi):
        super().__init__()
        self.bins, self.lo, self.hi = bins, lo, hi

    def forward(self, x):
        return torch.histc(x, bins=self.bins, min=self.lo, max=self.hi)


@pytest.mark.parametrize("bins,lo,hi", [(4, 0, 3), (5, -1.0, 2.5), (3, 0, 0), (7, 0.25, 0.25)])
def test_histc_matches_torch(bins, lo, hi):
    """Equal-width bins, the max in the last bin, elements outside not counted, min == max: the data's own
    range; transformers' grouped_mm experts count tokens per expert with histc(ids.float(), E, 0, E-1)."""
    x = torch.tensor([[0.0, 1, 2, 3, 3, -0.5], [2.5, 2.49, 0.26, 4, 1, 0.25]])
    mod = _Histc(bins, lo, hi)
    m = import_torch(mod, (x,), dynamic_dims={})
    np.testing.assert_array_equal(run_ir(m, x)[0], mod(x).numpy())
    one = torch.full((3, 2), 1.5)  # one value: the range is widened by 1 either side
    m1 = import_torch(mod, (one,), dynamic_dims={})
    np.testing.assert_array_equal(run_ir(m1, one)[0], mod(one).numpy())


class _Grouped(torch.nn.Module):
    """What transformers' grouped_mm experts compute: sort rows by expert, offsets from histc + cumsum
    (dtype=int32), the grouped matmul (aten's or transformers' fallback op), the inverse permutation
    written with index_put into an empty tensor."""

    def __init__(self, fallback: bool, e=3, k=8, n=8, dtype=torch.float32):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(e, k, n, generator=torch.Generator().manual_seed(0)).to(dtype))
        self.fallback = fallback

    def forward(self, x, ids):
        e = self.w.shape[0]
        sid, perm = torch.sort(ids)
        counts = torch.histc(sid.float(), bins=e, min=0, max=e - 1)
        offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
        xs = x[perm]
        if self.fallback:
            import transformers.integrations.moe  # noqa: F401 - registers torch.ops.transformers
            y = torch.ops.transformers.grouped_mm_fallback(xs, self.w, offs)
        else:
            y = torch._grouped_mm(xs, self.w, offs=offs)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.size(0))
        return y[inv], offs


@pytest.mark.parametrize("fallback", [True, False], ids=["transformers_fallback", "aten_grouped_mm"])
def test_grouped_matmul_matches_torch(fallback):
    # (aten's grouped matmul takes bf16 only, under torch.export; transformers' fallback any type)
    dt, tol = (torch.float32, 1e-5) if fallback else (torch.bfloat16, 1e-2)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1)).to(dt)
    ids = torch.tensor([2, 0, 2, 2, 0, 0])  # expert 1 has no rows
    mod = _Grouped(fallback, dtype=dt)
    m = import_torch(mod, (x, ids), dynamic_dims={0: {0: "S"}, 1: {0: "S"}})
    assert "S" in m.main.args[0].type.shape  # (exported with the row count dynamic)

    def f32(a):
        return tensor_to_numpy(a).astype(np.float32) if hasattr(a, "detach") else np.asarray(a, np.float32)
    with torch.no_grad():
        want = mod(x, ids)
    got = run_ir(m, x, ids)
    np.testing.assert_allclose(f32(got[0]), f32(want[0]), rtol=tol, atol=tol)
    np.testing.assert_array_equal(got[1], want[1].numpy())
    assert got[1].dtype == np.int32  # cumsum(dtype=int32) of float counts
    x2, ids2 = torch.randn(4, 8).to(dt), torch.tensor([1, 1, 0, 2])  # another row count
    with torch.no_grad():
        np.testing.assert_allclose(f32(run_ir(m, x2, ids2)[0]), f32(mod(x2, ids2)[0]), rtol=tol, atol=tol)


def test_grouped_rows_past_the_last_offset_are_zero():
    """transformers' fallback leaves rows past offs[-1] zero (EP sentinels); moec's lowering too."""
    import transformers.integrations.moe  # noqa: F401

    class Tail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(2, 8, 8))

        def forward(self, x, offs):
            return torch.ops.transformers.grouped_mm_fallback(x, self.w, offs)
    x, offs = torch.randn(5, 8), torch.tensor([1, 3], dtype=torch.int32)
    mod = Tail()
    m = import_torch(mod, (x, offs), dynamic_dims={})
    with torch.no_grad():
        want = mod(x, offs).numpy()
    assert not want[3:].any()
    np.testing.assert_allclose(run_ir(m, x, offs)[0], want, rtol=1e-5, atol=1e-6)


class _CausalMaskOps(torch.nn.Module):
    """The ops of transformers' causal mask and rotary tables: a 0-d full, advanced indexing with
    index tensors that broadcast ([B,1,1,1] with [1,1,S,1]), bitwise_and with a 0-d bool, expand with
    -1, embedding, sum(bool) (an int64 in torch)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(16, 4)

    def forward(self, ids):
        b, s = ids.shape
        pos = torch.arange(s).unsqueeze(0).expand(b, -1)
        bi = torch.arange(b)[:, None, None, None]
        qi = torch.arange(s)[None, None, :, None]
        ki = torch.arange(s)[None, None, None, :]
        mask = torch.full((), True) & (pos[bi, ki] <= pos[bi, qi])
        return torch.where(mask, 1.0, 0.0), self.emb(ids), mask.sum(-1)


def test_causal_mask_ops_match_torch():
    ids = torch.randint(0, 16, (2, 5))
    mod = _CausalMaskOps().eval()
    m = import_torch(mod, (ids,), dynamic_dims={0: {0: "B", 1: "S"}})
    assert m.main.args[0].type.shape == ("B", "S")
    for shape in ((2, 5), (3, 2), (1, 1)):
        xs = torch.randint(0, 16, shape)
        with torch.no_grad():
            want = [t.numpy() for t in mod(xs)]
        got = run_ir(m, xs)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6)
        assert got[2].dtype == np.int64


def test_views_read_sizes_from_their_own_input():
    """A view whose size is a SymInt computed from another input (transformers' view(num_tokens, k, D)
    reusing the batch x sequence of input_ids) is written -1 / 0, so the result depends on its own
    operand only; the reshape it becomes takes no operand computed from the other input."""
    class TwoInputs(torch.nn.Module):
        def forward(self, ids, x):
            n = ids.shape[0] * ids.shape[1]
            return x.view(n, 2, 4).sum(1) + 0.0, x.reshape(n, 8).unsqueeze(1).expand(n, 3, 8).reshape(n * 3, 8)
    ids, x = torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 3, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = import_torch(TwoInputs(), (ids, x), dynamic_dims={0: {0: "B", 1: "S"}, 1: {0: "B", 1: "S"}})
    assert not [w for w in caught if "moec" in str(w.message)]  # (its dims stayed dynamic)
    ids_arg = m.main.args[0]

    def reads(v, seen=None):
        seen = seen if seen is not None else set()
        if v is ids_arg:
            return True
        op = getattr(v, "owner", None)
        if op is None or id(op) in seen:
            return False
        seen.add(id(op))
        return any(reads(u, seen) for u in op.operands)
    assert not any(reads(o) for o in m.main.outputs)
    got = run_ir(m, ids, x)
    want = TwoInputs()(ids, x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-6)


# ---- experts implementations of a block ------------------------------------------------------------
def test_eager_experts_are_exported_batched_and_recognised():
    """transformers' default eager loop cannot be traced; moec exports the block with batched_mm (the
    same function) and the result equals the module's own eager output."""
    blk = moe_block("mixtral", "eager")
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    m, layers = recognise(blk, x)
    assert [la["family"] for la in layers] == ["mixtral"]
    rec = json.loads(m.attrs["moec.experts_implementation"])
    assert rec == {"exported_as": "batched_mm", "replaced": {"experts": "eager"}}
    assert blk.experts.config._experts_implementation == "eager"  # (restored)
    for shape in ((1, 7, D), (3, 1, D)):
        xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = tensor_to_numpy(first_output(blk(xs)))
        np.testing.assert_allclose(run_ir(m, xs)[0], want, rtol=1e-4, atol=1e-5)


def test_eager_experts_as_they_are_fail_with_the_way_out():
    from moec.errors import UnsupportedError
    blk = moe_block("mixtral", "eager")
    with pytest.raises(UnsupportedError, match=r"data-dependent.*experts_implementation=\"batched_mm\""):
        import_torch(blk, (torch.randn(2, 5, D),), experts_implementation=None)
    assert blk.experts.config._experts_implementation == "eager"


def test_grouped_mm_experts_import_as_they_are_and_compute_the_block():
    """Exported as it is, the grouped_mm implementation (sort, histc, cumsum, grouped matmul, inverse
    permutation) imports and computes the block exactly; moec.compile's default exports it batched."""
    blk = moe_block("mixtral", "grouped_mm")
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(2))
    m = import_torch(blk, (x,), dynamic_dims={0: {0: "B", 1: "S"}}, experts_implementation=None)
    assert "moec.experts_implementation" not in m.attrs
    for shape in ((1, 7, D), (3, 1, D)):
        xs = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = tensor_to_numpy(first_output(blk(xs)))
        np.testing.assert_allclose(run_ir(m, xs)[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_eager_block_compiles_and_verifies(tmp_path, monkeypatch):
    """The whole moec.compile path on a default-config block: C build, verified against the module's
    own eager loop, the replacement in the report."""
    import moec
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    blk = moe_block("mixtral", "eager")
    cm = moec.compile(blk, (torch.randn(2, 5, D),), dynamic_dims={0: {0: "B", 1: "S"}})
    rep = cm.stats.report
    assert rep["verified"] and [la["family"] for la in rep["moe_layers"]] == ["mixtral"]
    assert rep["experts_implementation"]["replaced"] == {"experts": "eager"}
    assert {tuple(t["shapes"][0]) for t in rep["trials"]} == {(5, 3, D), (1, 2, D), (3, 1, D)}  # both dims vary
    # the implementation is part of the cache key: another one is another build, verified against itself
    # (grouped_mm is recognised as it is: exported as set, nothing replaced)
    blk.experts.config._experts_implementation = "grouped_mm"
    cm2 = moec.compile(blk, (torch.randn(2, 5, D),), dynamic_dims={0: {0: "B", 1: "S"}})
    assert not cm2.stats.cache_hit and "experts_implementation" not in cm2.stats.report
    assert cm2.stats.report["verified"] and [la["family"] for la in cm2.stats.report["moe_layers"]] == ["mixtral"]


def test_module_settings_are_part_of_the_cache_key():
    """A plain attribute the forward reads (the router's top_k) or a config flag changes the key."""
    from moec.jit_api import _module_settings
    blk = moe_block("qwen2_moe")
    a = _module_settings(blk)
    blk.gate.top_k = 1
    b = _module_settings(blk)
    assert b != a
    blk.experts.config.norm_topk_prob = not blk.experts.config.norm_topk_prob
    assert _module_settings(blk) != b


# ---- whole 2-layer CausalLMs -----------------------------------------------------------------------
def causal_lm(arch: str, impl: str = "batched_mm", dtype=torch.float32):
    """A tiny random 2-layer ``arch`` CausalLM (hf_survey's config: hidden 32, 4 experts, top-2), with
    N(0, 0.2) sparse-block weights so that routing is far from degenerate.  Multi-head latent attention
    (DeepSeek-V3's ``kv_lora_rank``) has as many key/value heads as query heads: the tiny config's
    grouped-query 2 would not run."""
    cfg = survey.tiny_config(arch, impl)
    if getattr(cfg, "kv_lora_rank", None):
        cfg.num_key_value_heads = cfg.num_attention_heads
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = survey.model_class(cfg)(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for blk in survey.sparse_blocks(model):
            for p in blk.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.to(dtype).eval()


@pytest.mark.parametrize("arch", ["mixtral"] + [pytest.param(a, marks=pytest.mark.slow)
                                              for a in LM_ARCHS[1:] + ("deepseek_v2",)])
def test_causal_lm_both_layers_recognised_and_exact(arch):
    """A 2-layer CausalLM (default eager experts) from input_ids [batch, seq], both dims dynamic: both
    MoE layers recognised (DeepSeek-V3's second group-limited layer is not confused by the first's
    top-ks upstream), the logits equal the model's own."""
    from moec.passes.base import run_to_fixed_point
    from moec.passes.dce import DeadCodeElimination
    from moec.passes.fold_constants import FoldConstants
    from moec.passes.recognize_moe import RecognizeMoE
    model = causal_lm(arch, "eager")
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    m = import_torch(model, (ids,), dynamic_dims={0: {0: "B", 1: "S"}})
    assert model.config.use_cache  # (restored after the export)
    run_to_fixed_point(m, [FoldConstants(), DeadCodeElimination()])
    run_to_fixed_point(m, [RecognizeMoE(), DeadCodeElimination()])
    layers = [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]
    assert [la["family"] for la in layers] == [RECOGNISED[arch][0]] * 2
    for shape in ((1, 7), (3, 1)):
        xs = torch.randint(3, 128, shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = model(xs, use_cache=False).logits.numpy()
        np.testing.assert_allclose(run_ir(m, xs)[0], want, rtol=1e-4, atol=1e-5)


LM_FAMILY = {a: RECOGNISED[a][0] for a in LM_ARCHS}


def _lm_case(arch, impl, dtype, dims, target):
    return pytest.param(arch, impl, dtype, dims, target, marks=pytest.mark.slow,
                        id=f"{arch}-{impl}-{dtype}-{dims}-{target}")


LM_MATRIX = ([_lm_case(a, i, "f32", "dynamic", "cpu") for a in LM_ARCHS for i in IMPLS]
             + [_lm_case(a, "eager", "bf16", "dynamic", "cpu") for a in LM_ARCHS]
             + [_lm_case(a, "eager", "f32", "static", "cpu") for a in LM_ARCHS]
             + [_lm_case(a, "batched_mm", "f32", "dynamic", t) for a in LM_ARCHS for t in ("triton", "ascend")])


@pytest.mark.parametrize("arch,impl,dtype,dims,target", LM_MATRIX)
def test_causal_lm_compiles_and_verifies(arch, impl, dtype, dims, target, tmp_path, monkeypatch):
    import moec
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    model = causal_lm(arch, impl, torch.bfloat16 if dtype == "bf16" else torch.float32)
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    cm = moec.compile(model, (ids,), target=target, dynamic_dims={0: {0: "B", 1: "S"}} if dims == "dynamic" else {})
    rep = cm.stats.report
    assert rep["verified"], rep.get("failure")
    assert [la["family"] for la in rep["moe_layers"]] == [LM_FAMILY[arch]] * 2, rep.get("recognition")
    xs = torch.randint(0, 128, (1, 4) if dims == "dynamic" else (2, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(xs, use_cache=False).logits.float().numpy()
    got = cm(xs)
    got = tensor_to_numpy(got).astype(np.float32) if hasattr(got, "detach") else np.asarray(got, np.float32)
    tol = 2e-2 if dtype == "bf16" else 1e-4
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_advanced_indexing_after_full_slices():
    """x[:, i] (one index tensor after a slice: Gather on that axis) and x[:, i, j] (several: the
    indexed dims in place of the first), with index shapes that broadcast, as torch places them."""
    class Idx(torch.nn.Module):
        def forward(self, x, i, j):
            return x[:, i], x[:, i, j], x[:, :, j], x[i, j]
    x = torch.randn(5, 5, 4, 3)
    i, j = torch.tensor([[4, 0, 2]]), torch.tensor([[1], [3]])
    mod = Idx()
    m = import_torch(mod, (x, i, j), dynamic_dims={})
    for g, w in zip(run_ir(m, x, i, j), mod(x, i, j)):
        assert g.shape == tuple(w.shape)
        np.testing.assert_array_equal(g, w.numpy())


class _Assign(torch.nn.Module):
    """Slice and element assignment into new tensors (DeepSeek-V3's expand_kv writes the key's rotary
    part into a slice): aten.slice_scatter, select_scatter, copy (with a cast), empty."""

    def forward(self, x, k):
        out = x.new_empty(x.shape[0], 3, 8)
        out[..., :4] = x[:, None, :4]
        out[..., 4:] = k.to(out.dtype)
        out[:, -1] = torch.cat([x[:, 2:], x[:, :4]], -1)
        z = torch.empty_like(x)
        z.copy_(k[:, 0, :1])
        return out, z


def test_slice_and_copy_assignment_match_torch():
    x, k = torch.randn(5, 6), torch.randn(5, 1, 4).to(torch.bfloat16)
    m = import_torch(_Assign(), (x, k), dynamic_dims={0: {0: "T"}, 1: {0: "T"}})
    names = {o.name for o in m.main.ops}
    for xs, ks in ((x, k), (torch.randn(2, 6), torch.randn(2, 1, 4).to(torch.bfloat16))):
        want = _Assign()(xs, ks)
        got = run_ir(m, xs, ks)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w.numpy())
    assert "moec.concat" in names


def test_layer_norm_matches_torch():
    """aten.native_layer_norm (PhiMoE's decoder norms), with and without an affine part, over 1 and 2 dims."""
    class LN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.LayerNorm(8)
            self.b = torch.nn.LayerNorm([3, 8], elementwise_affine=False, eps=1e-3)
            with torch.no_grad():
                self.a.weight.normal_()
                self.a.bias.normal_()

        def forward(self, x):
            return self.a(x), self.b(x)
    x = torch.randn(2, 3, 8) * 3 + 1
    mod = LN().eval()
    m = import_torch(mod, (x,), dynamic_dims={0: {0: "B"}})
    for xs in (x, torch.randn(5, 3, 8)):
        with torch.no_grad():
            want = mod(xs)
        for g, w in zip(run_ir(m, xs), want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)


class _ComplexRotary(torch.nn.Module):
    """DeepSeek-V2's rotary embedding in complex numbers: polar, view_as_complex, a complex product
    (broadcast, and by a real scalar), unsqueeze of a complex tensor, view_as_real."""

    def forward(self, q, pos):
        freqs = pos.float()[:, None] * torch.arange(1, 5).float()[None, :] * 0.1
        cis = torch.polar(torch.ones_like(freqs), freqs) * 1.0
        qc = torch.view_as_complex(q.float().reshape(*q.shape[:-1], -1, 2))
        return torch.view_as_real(qc * cis.unsqueeze(0)).flatten(2)


def test_complex_rotary_matches_torch():
    q, pos = torch.randn(3, 5, 8), torch.arange(5)
    mod = _ComplexRotary()
    m = import_torch(mod, (q, pos), dynamic_dims={0: {0: "B", 1: "S"}, 1: {0: "S"}})
    for qs, ps in ((q, pos), (torch.randn(2, 3, 8), torch.arange(3) + 4)):
        np.testing.assert_allclose(run_ir(m, qs, ps)[0], mod(qs, ps).numpy(), rtol=1e-5, atol=1e-5)
