"""sink-rows (passes/sink_rows.py): a row selection moves toward the inputs through row-independent ops.

Golden IR in tests/golden/sink-rows__*.mlir (the decoder block with last-position logits, the near misses); here:
the same modules' values before and after the pass in the reference interpreter (bit-identical) and in the C
build, and real transformers Mixtral exports whose last layer's experts see one row."""
from __future__ import annotations

import glob
import json
import os
import re
import warnings

import numpy as np
import pytest

from moec.ir import parse_module, print_module, verify_module
from moec.ir.interpreter import run as ir_run
from moec.passes.sink_rows import SinkRows

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
SEP = "// ----- expected\n"
CASES = sorted(glob.glob(os.path.join(GOLDEN, "sink-rows__*.mlir")))


def _randomized(src: str, seed: int) -> str:
    """The module text with every f32 splat constant replaced by seeded random values (the golden cases use
    splats to stay short; equal weights would make every router logit tie)."""
    rng = np.random.default_rng(seed)

    def fill(mt):
        shape = [int(d) for d in mt.group(2).split("x")]
        a = rng.standard_normal(shape).astype(np.float32) * 0.5
        return f"dense<{json.dumps(a.tolist())}> : tensor<{mt.group(2)}xf32>"
    return re.sub(r"dense<(-?[0-9.e+-]+)> : tensor<([0-9x]+)xf32>", fill, src)


def _module(path: str, seed: int = 0):
    src = open(path).read().partition(SEP)[0]
    m = parse_module(_randomized(src, seed))
    verify_module(m)
    return m


def _inputs(m, N: int, seed: int):
    """Random inputs for the module's arguments with every symbolic dim N (causal-mask-like masks: 0 / -1e9)."""
    rng = np.random.default_rng(seed)
    out = []
    for a in m.main.args:
        shape = [d if isinstance(d, int) else N for d in a.type.shape]
        if a.type.dtype.name.startswith("I"):
            out.append(rng.integers(0, 8, shape).astype(np.int64))
        elif "mask" in (a.name or ""):
            out.append(np.where(rng.random(shape) < 0.2, -1e9, 0.0).astype(np.float32))
        else:
            out.append(rng.standard_normal(shape).astype(np.float32))
    return out


def _ops(m, name):
    return [o for o in m.main.ops if o.name == name]


@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[11:-5] for p in CASES])
def test_values_equal_the_unpruned_graph_in_the_interpreter(path):
    """Every golden case, random weights and inputs at several token counts: the interpreter gives the same
    outputs before and after the pass (every op it moves computes each row from the same rows).  Bit-identical
    where only elementwise ops, norms and shape ops moved; where a product moved (matmul, attention, the experts),
    numpy's matmul itself is not row-invariant (BLAS takes a GEMV kernel for one row, a GEMM for several: another
    summation order), so the last bits may differ: within 2e-6 of the output's scale."""
    for seed, N in ((0, 3), (1, 7)) + (((2, 1),) if "last_row" in path else ()):  # (the others take rows 1:3)
        m0 = _module(path, seed)
        m1 = _module(path, seed)
        SinkRows().run(m1)
        verify_module(m1)
        ins = _inputs(m0, N, seed)
        a = list(ir_run(m0, ins).values())
        b = list(ir_run(m1, ins).values())
        for x, y in zip(a, b):
            assert x.shape == y.shape, (path, N)
            if "rows_mixed" in path:
                assert np.array_equal(x, y), (path, N)
            else:
                np.testing.assert_allclose(y, x, rtol=0, atol=2e-6 * max(1.0, float(np.abs(x).max())))


def test_the_decoder_block_runs_one_row_after_the_attention():
    """The golden block: the experts, o_proj, the router and the q projection run on the selected rows; k / v
    stay whole; the selection sits on the MoE block's input, on q and on the mask's query rows."""
    m = _module(os.path.join(GOLDEN, "sink-rows__decoder_block_last_row.mlir"))
    assert SinkRows().run(m)
    verify_module(m)
    f = m.main
    (att,) = _ops(m, "moec.attention")
    sl = lambda v: v.owner is not None and v.owner.name == "moec.slice"  # noqa: E731
    q, k, v, mask = att.operands
    assert sl(mask) and not sl(k) and not sl(v)
    qmm = q.owner.operands[0].owner.operands[0].owner.operands[0].owner  # rotary <- transpose <- reshape <- matmul
    assert qmm.name == "moec.matmul" and sl(qmm.operands[0])
    (ex,) = _ops(m, "moe.experts")
    rows = ex.operands[0].owner.operands[0].owner.operands[0].owner  # reshape <- rms_norm <- add(slice(h), o_proj)
    assert rows.name == "moec.add" and sl(rows.operands[0])
    # the only selections left: h (the residual), n1 (q's input), cos, sin and the mask
    assert sorted(o.operands[0].name for o in _ops(m, "moec.slice")) == ["cos", "h", "mask", "n1", "sin"]
    assert not _ops(m, "moec.gather") and f.outputs[0].owner.name == "moec.squeeze"
    (d,) = _ops(m, "moe.dispatch")
    assert d.operands[0] is ex.operands[1]


def test_reference_interpreter_sees_one_row_at_the_experts():
    """At N=7 the experts' x has one row after the pass (seven before)."""
    from moec.ir.walk import run_values
    for prune, rows in ((False, 7), (True, 1)):
        m = _module(os.path.join(GOLDEN, "sink-rows__decoder_block_last_row.mlir"))
        if prune:
            SinkRows().run(m)
        f = m.main
        (ex,) = _ops(m, "moe.experts")
        (x,) = run_values(f.ops, f.args, [ex.operands[0]], _inputs(m, 7, 0), weights=m.weights)
        assert x.shape[0] == rows


def test_pass_is_idempotent_and_leaves_near_misses_alone():
    for path in CASES:
        m = _module(path)
        SinkRows().run(m)
        text = print_module(m)
        assert not SinkRows().run(m) and print_module(m) == text


def test_c_build_matches_the_unpruned_graph(tmp_path):
    """The decoder block built for the C target with and without the pass (no other pass: the only difference
    is the pruning).  Not bit-identical in general: a kernel may take another path for one row (GEMV / the
    per-token experts path) and sum in another order; here within a few f32 ulps of the output's scale."""
    from moec.driver import build_module
    path = os.path.join(GOLDEN, "sink-rows__decoder_block_last_row.mlir")
    m0, m1 = _module(path, 5), _module(path, 5)
    SinkRows().run(m1)
    a0 = build_module(m0, str(tmp_path / "base"), target="cpu")
    a1 = build_module(m1, str(tmp_path / "rows"), target="cpu")
    for N in (1, 5, 33):
        ins = _inputs(m0, N, N)
        y0, y1 = a0(ins)[0], a1(ins)[0]
        ref = list(ir_run(m0, ins).values())[0]
        np.testing.assert_allclose(y1, y0, rtol=0, atol=1e-5 * np.abs(y0).max())
        np.testing.assert_allclose(y1, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


# ---- real transformers exports -------------------------------------------------------------------------------

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64)


def _mixtral():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(**TINY, tie_word_embeddings=False)
    cfg._experts_implementation = "batched_mm"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixtralForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _export(path: str, dynamo: bool):
    """input_ids [1, S] (+ attention_mask for TorchScript) -> last-position logits (logits_to_keep=1)."""
    import torch
    model = _mixtral()

    class Last(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask=None):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          logits_to_keep=1).logits[:, -1]

    ids = torch.randint(0, TINY["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(Last(model).eval(), (ids,), path, input_names=["input_ids"], output_names=["logits"],
                              dynamo=True, dynamic_shapes=({1: "S"},))
        else:  # (TorchScript: transformers 5's mask code needs an attention_mask there)
            torch.onnx.export(Last(model).eval(), (ids, torch.ones_like(ids)), path,
                              input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamo=False,
                              opset_version=18, dynamic_axes={"input_ids": {1: "S"}, "attention_mask": {1: "S"}})
    return model


def _experts_rows(m, ins):
    """Rows of each moe.experts op's x in order, from the interpreter."""
    from moec.ir.walk import run_values
    f = m.main
    return [x.shape[0] for x in run_values(f.ops, f.args, [o.operands[0] for o in _ops(m, "moe.experts")], ins,
                                           weights=m.weights)]


@pytest.mark.parametrize("dynamo", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["dynamo", "torchscript"])
def test_real_mixtral_export_last_layer_experts_see_one_row(dynamo, tmp_path):
    """A tiny transformers MixtralForCausalLM exported for last-position logits, compiled for the C target and
    verified against onnxruntime by moec compile; the compiled IR's last experts see one row at N=9, the first all
    nine; the artifact's logits equal onnxruntime's and the eager model's."""
    import onnxruntime as ort
    import torch
    from moec.cli import main
    from moec.ir.io import load_module
    path = str(tmp_path / "lm.onnx")
    model = _export(path, dynamo)
    out = tmp_path / "out"
    assert main(["compile", path, "-o", str(out)]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"] and len(rep["moe_layers"]) == 2
    m = load_module(str(out / "model.mlir"))
    ids = np.random.default_rng(3).integers(0, TINY["vocab_size"], (1, 9))
    ins = [ids] if dynamo else [ids, np.ones_like(ids)]
    assert _experts_rows(m, ins) == [9, 1]
    from moec.targets.cpu_backend import CpuArtifact
    got = CpuArtifact(str(out))(ins)[0]
    sess = ort.InferenceSession(path)
    want = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], ins)))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        eager = model(input_ids=torch.from_numpy(ids), use_cache=False).logits[:, -1].numpy()
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", ["reference", pytest.param("triton", marks=pytest.mark.slow),
                                    pytest.param("ascend", marks=pytest.mark.slow)])
def test_real_mixtral_export_verifies_on_other_targets(target, tmp_path):
    """The pass runs in every target's pipeline: the same export compiles and verifies on the reference,
    Triton (interpreted without a GPU) and Ascend (emulated) targets, its last experts on one row."""
    from moec.cli import main
    from moec.ir.io import load_module
    path = str(tmp_path / "lm.onnx")
    _export(path, True)
    out = tmp_path / "out"
    assert main(["compile", path, "--target", target, "-o", str(out)]) == 0
    rep = json.load(open(out / "report.json"))
    assert rep["verified"], rep
    m = load_module(str(out / "model.mlir"))  # (every target's artifact keeps the compiled IR)
    ids = np.random.default_rng(4).integers(0, TINY["vocab_size"], (1, 5))
    assert _experts_rows(m, [ids]) == [5, 1]


def test_every_target_runs_the_pass_after_recognition():
    """sink-rows is a stage of every target's pipeline, after recognize-decoder (the patterns see whole graphs)
    and before quantisation, epilogue fusion and dispatch scheduling (they see the pruned graph)."""
    from moec.passes.pipeline import stages
    from moec.targets import target_for
    for t in ("cpu", "reference", "triton", "ascend"):
        names = [n for n, _ in stages(target_for(t, "generic") if t == "cpu" else target_for(t))]
        i = names.index("sink-rows")
        assert names[i - 1] == "recognize-decoder" and i < names.index("quantize-weights") < \
            names.index("fuse-epilogues") < names.index("schedule-dispatch"), names
