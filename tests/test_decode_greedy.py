"""The greedy choice inside the decode step (issue 17, decode overhead): ``KVStep(greedy=True)`` /
``compile_step(greedy=True)`` / ``generate(greedy_step=...)`` return the last position's token ids, computed by
``moec.argmax`` in the compiled step, and the f16 step returns its new keys/values already rounded to f16.

``moec.argmax``'s semantics (ir/ops/index.py, the scan of onnxruntime and llama.cpp's greedy sampler): the first
index among ties; a NaN at index 0 wins, a NaN elsewhere never does.  The C runtime's contiguous f32 path (two
vector passes: the largest non-NaN value, then its first index) must give exactly the reference's answer."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import run_compiled
from moec.ir.ops.index import ArgMaxOp


def _argmax_model(n: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["R", n])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["R"])
    node = helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)
    return helper.make_model(helper.make_graph([node], f"argmax_{n}", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 13)])


def _llama_greedy(row) -> int:
    """llama.cpp's greedy sampler (llama_sampler_greedy_apply), as a Python loop: the reference this matches."""
    best = 0
    for i in range(1, len(row)):
        if row[i] > row[best]:
            best = i
    return best


def _rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    rows = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    r = rng.standard_normal(n).astype(np.float32)  # a tie: the first index wins
    if n > 1:
        r[n // 3] = r[n - 1] = 9.0
    rows.append(r)
    r = rng.standard_normal(n).astype(np.float32)  # the maximum in the scalar tail
    r[n - 1] = 7.0
    rows.append(r)
    r = rng.standard_normal(n).astype(np.float32)
    r[0] = np.nan  # NaN at index 0 wins
    rows.append(r)
    r = rng.standard_normal(n).astype(np.float32)
    r[n // 2] = np.nan  # NaN elsewhere never wins (also when it is where the maximum would be)
    if n > 2:
        r[n // 2 + 1:] = np.nan
    rows.append(r)
    r = np.zeros(n, np.float32)  # -0 and +0 compare equal: the first zero
    r[::2] = -0.0
    rows.append(r)
    rows.append(np.full(n, -np.inf, np.float32))
    r = np.full(n, -np.inf, np.float32)
    r[n - 1] = np.inf
    rows.append(r)
    return np.stack(rows)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 33, 4099])
def test_argmax_contiguous_f32_matches_reference(n, tmp_path):
    x = _rows(n)
    got = run_compiled(_argmax_model(n), tmp_path, [x])[0]
    op = ArgMaxOp.__new__(ArgMaxOp)
    op.attrs = {"axis": 1, "keepdims": False, "select_last_index": False}
    want = op.reference(x)[0]
    np.testing.assert_array_equal(got, want)
    assert got.tolist() == [_llama_greedy(r) for r in x]
    finite = ~np.isnan(x).any(axis=1)
    assert (got[finite] == np.argmax(x[finite], axis=1)).all()  # numpy / torch.argmax where no NaN
    if n > 2:
        assert got[5] == 0 and got[6] != n // 2  # the NaN policy (rows 5 and 6)


@pytest.mark.parametrize("arch", ["generic", "avx2"])
def test_argmax_contiguous_f32_portable_builds(arch, tmp_path):
    """The scalar path (builds without AVX-512) gives the same answers."""
    from moec.driver import CompileOptions, compile_onnx
    from moec.targets.registry import CpuArtifact
    for n in (17, 4099):
        x = _rows(n)
        out = str(tmp_path / f"{arch}_{n}")
        compile_onnx(_argmax_model(n), out, CompileOptions(force=True, verify=False, arch=arch))
        assert CpuArtifact(out)([x])[0].tolist() == [_llama_greedy(r) for r in x]


def test_argmax_large_row_tie_across_vectors(tmp_path):
    """A vocabulary-sized row (the output layer's 32000): ties in different 16-lane vectors and in the tail."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 32000)).astype(np.float32)
    x[0, [31999, 20001, 20000]] = 5.0
    x[1, [31998, 31999]] = 5.0
    x[2, 17] = x[2, 16] = 5.0
    x[3, 3] = np.float32(np.finfo(np.float32).max)
    got = run_compiled(_argmax_model(32000), tmp_path, [x])[0]
    assert got.tolist() == [20000, 31998, 16, 3]


def test_greedy_step_tokens_equal_logits_step_and_eager(moec_module_cache):
    """moec.generate with the argmax inside the step (the default without keep_logits) gives the tokens of the
    logits step and of transformers' greedy generate; the step's outputs are the token ids [B] and the new
    keys/values in the cache's type (f16: the cache ends bit-identical to the logits step's, whose f32 rows
    numpy rounded)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import moec
    from moec import decode
    from moec.errors import UserInputError
    from test_generate import PROMPT, STEPS, _hf_tokens, _mixtral
    model = _mixtral()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = moec.generate(model, PROMPT, STEPS)
        rl = moec.generate(model, PROMPT, STEPS, keep_logits=True)
        n = len(PROMPT) + STEPS
        cg = decode.compile_step(model, n, kv_cache="f16", greedy=True)  # (cache hits: the builds above)
        cl = decode.compile_step(model, n, kv_cache="f16")
    assert cg.stats.cache_hit and cl.stats.cache_hit
    outs = [o["type"] for o in cg.artifact.manifest["outputs"]]
    assert outs[0] == "tensor<1xi64>" and outs[1].endswith("xf16>") and outs[2].startswith("tensor<1x")
    # (the third output: the last position's logits, what verification judges; equal to the logits step's)
    geo0 = decode.cache_geometry(model)
    ex = [x.numpy() for x in decode.step_inputs(geo0, n, 3, kv_cache="f16")]
    og, ol = cg.artifact(list(ex)), cl.artifact(list(ex))
    assert np.array_equal(og[2], ol[0][:, -1]) and np.array_equal(og[0], ol[0][:, -1].argmax(-1))
    assert r.tokens[0].tolist() == rl.tokens[0].tolist() == _hf_tokens(model, PROMPT, STEPS)
    geo = decode.cache_geometry(model)
    gens = [decode.Generator(decode.moec_step(c), geo["layers"], geo["kv_heads"], geo["head_dim"], n, 1, "f16")
            for c in (cg, cl)]
    toks = [g.generate(PROMPT, STEPS).tokens for g in gens]
    assert toks[0].tolist() == toks[1].tolist()
    used = n - 1
    assert gens[0].k[:, :, :, :used].tobytes() == gens[1].k[:, :, :, :used].tobytes()
    assert gens[0].v[:, :, :, :used].tobytes() == gens[1].v[:, :, :, :used].tobytes()
    with pytest.raises(UserInputError, match="keep_logits"):
        gens[0].generate(PROMPT, 2, keep_logits=True)
    with pytest.raises(UserInputError, match="keep_logits"):
        moec.generate(model, PROMPT, STEPS, keep_logits=True, greedy_step=True)


def test_verification_judges_greedy_ids_by_moec_own_scores():
    """compiler/verify.argmax_outputs: an integer output that is the argmax of a float output (a greedy step's
    ids beside its logits, found from the module's values) is judged against moec's own scores: a near-tie that
    moec's rounding (or quantisation) resolves the other way passes, ids that are not the argmax of moec's scores
    fail, as do non-finite scores; an integer output that picks from no float output is left to the caller."""
    from moec.verify import argmax_outputs
    want_s = np.array([[0.1, 2.0, 2.0 - 1e-6, -1.0], [3.0, 0.0, 1.0, 2.0]], np.float32)
    want = [want_s.argmax(-1), np.zeros((2, 3), np.float32), want_s]
    assert want[0].tolist() == [1, 0]
    moved = want_s.copy()
    moved[0, 2] = 2.0 + 1e-6  # (moec's scores: the near-tie the other way)
    assert argmax_outputs([moved.argmax(-1), want[1], moved], want) == ({0: 2}, "")
    picks, bad = argmax_outputs([np.array([1, 0]), want[1], moved], want)  # (ids that ignore moec's scores)
    assert picks == {0: 2} and "id 1 at row 0 is not the argmax of moec's own output 2" in bad
    nan = moved.copy()
    nan[1, 3] = np.nan
    assert "not finite" in argmax_outputs([nan.argmax(-1), want[1], nan], want)[1]
    assert argmax_outputs([np.array([5, 7]), want[1], moved], [np.array([5, 7]), want[1], want_s]) == ({}, "")


def test_generate_restores_the_garbage_collector():
    """Generator.generate runs its decode loop with the cyclic collector off and restores its state, also when
    a step fails."""
    import gc
    from moec import decode
    from moec.errors import UserInputError
    calls = []

    def step(ids, pos, *cache):
        calls.append(gc.isenabled())
        if len(calls) == 4:  # (the second generate's first decode step)
            raise UserInputError("boom")
        return np.zeros((1, ids.shape[1], 5), np.float32), np.zeros((1, 2, 1, 1, ids.shape[1], 2), np.float32)
    g = decode.Generator(step, 1, 1, 2, 8)
    assert gc.isenabled()
    g.generate([1, 2], 2)
    assert calls == [True, False] and gc.isenabled()
    with pytest.raises(UserInputError, match="boom"):
        g.generate([1, 2], 3)
    assert calls[2:] == [True, False] and gc.isenabled()
    gc.disable()
    try:
        g.generate([1], 2)
        assert not gc.isenabled()
    finally:
        gc.enable()
