"""Greedy decoding with a KV cache (issue 17 item 4): compiler/decode.py, ``moec.generate``, ``moec generate``.

Real transformers code (tiny 2-layer MixtralForCausalLM / Qwen2MoeForCausalLM from tests/hf_survey.py)
is the oracle: the step's logits equal the model's own full-sequence forward position by position,
and the tokens equal ``model.generate(do_sample=False)``.

Default run: the step in eager torch (both architectures), the cache written in place, one moec build
(Mixtral, ``moec.compile`` of the step) and the CLI on an ONNX step through onnxruntime.  ``-m slow``:
Qwen2-MoE through moec, both torch.onnx exporters through moec and onnxruntime."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hf_survey as survey  # noqa: E402
import moec  # noqa: E402
from moec import decode  # noqa: E402
from moec.cli import main as cli_main  # noqa: E402

PROMPT = [5, 9, 17, 3, 22]
STEPS = 6


@pytest.fixture(scope="module", params=["mixtral", "qwen2_moe"])
def lm(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return request.param, survey.build_model(request.param)


def _mixtral():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return survey.build_model("mixtral")


def _eager_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits.numpy()


def _hf_tokens(model, prompt, steps) -> list:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(torch.tensor([prompt]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    return out[0, len(prompt):].tolist()


def _check_step_by_step(model, r, prompt, atol=1e-5):
    """Every call's logits against the model's own forward over the whole sequence so far."""
    seq = list(prompt) + [int(t) for t in r.tokens[0]]
    full = _eager_logits(model, seq[:-1])
    np.testing.assert_allclose(r.logits[0][0], full[0, :len(prompt)], atol=atol, rtol=0)
    for s, lg in enumerate(r.logits[1:]):
        np.testing.assert_allclose(lg[0, 0], full[0, len(prompt) + s], atol=atol, rtol=0)


def test_eager_step_matches_model_and_hf_generate(lm):
    """The step (the model's own modules, attention over the external cache) in eager torch."""
    _, model = lm
    r = decode.generate(model, PROMPT, STEPS, engine="torch", keep_logits=True)
    assert r.tokens.shape == (1, STEPS) and len(r.logits) == STEPS
    _check_step_by_step(model, r, PROMPT)
    assert r.tokens[0].tolist() == _hf_tokens(model, PROMPT, STEPS)
    assert model.config._attn_implementation != decode.ATTN_NAME  # the model is left as it was


def test_chunked_prefill_and_capacity(lm):
    """A prompt fed in pieces gives the same logits as one prefill; the capacity is enforced."""
    _, model = lm
    g = decode.cache_geometry(model)
    gen = decode.Generator(decode.torch_step(model), g["layers"], g["kv_heads"], g["head_dim"], 8)
    a = gen(np.array([PROMPT[:2]]))
    b = gen(np.array([PROMPT[2:]]))
    full = _eager_logits(model, PROMPT)
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, atol=1e-5, rtol=0)
    gen(np.array([[7, 8, 9]]))  # 8 positions used
    with pytest.raises(moec.errors.UserInputError, match="holds 8 positions"):
        gen(np.array([[1]]))


def test_cache_is_written_in_place():
    """The step gets views of the one preallocated cache (same memory every call) and returns only the
    new tokens' keys/values; positions beyond the context are never written."""
    model = _mixtral()
    g = decode.cache_geometry(model)
    inner = decode.torch_step(model)
    seen = []

    def step(*xs):
        seen.append([x.__array_interface__["data"][0] for x in xs[2:]])
        lg, new = inner(*xs)
        assert new.shape[4] == xs[0].shape[1]  # [L, 2, B, Hkv, T, D]: the new tokens only
        return lg, new

    gen = decode.Generator(step, g["layers"], g["kv_heads"], g["head_dim"], 32)
    k_addr = gen.k.__array_interface__["data"][0]
    gen.generate(PROMPT, 4)
    assert len(seen) == 4 and all(s == seen[0] for s in seen)
    assert seen[0][0] == k_addr and gen.k.__array_interface__["data"][0] == k_addr
    used = len(PROMPT) + 3
    assert np.abs(gen.k[:, :, :, :used]).sum() > 0
    assert not gen.k[:, :, :, used:].any() and not gen.v[:, :, :, used:].any()
    # keys and values are rows [L, B, Hkv, M, D]: position p of layer l is k[l, :, :, p], the step's new key
    assert gen.k.shape == gen.v.shape == (g["layers"], 1, g["kv_heads"], 32, g["head_dim"])


def test_moec_compiled_step_matches_eager(moec_module_cache):
    """moec.compile of the step (MoE layers recognised), driven by moec.generate with an f32 cache (the exact
    path; the default f16 cache: tests/test_kv_f16.py): logits equal eager step by step, tokens equal
    transformers' generate."""
    model = _mixtral()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = moec.generate(model, PROMPT, STEPS, keep_logits=True, kv_cache="f32")
        cm = decode.compile_step(model, len(PROMPT) + STEPS, kv_cache="f32")  # (a cache hit: the same build)
    assert cm.stats.report["kv_cache"] == "f32" and r.kv_cache == "f32"
    assert cm.stats.cache_hit and len(cm.stats.report["moe_layers"]) == 2
    ins = {i["name"]: i["type"] for i in cm.artifact.manifest["inputs"]}
    assert ins["input_ids"] == 'tensor<1x?xi64, "T">'  # one build for prefill and decode
    assert ins["k_0"] == "tensor<1x2x11x8xf32>" and ins["v_1"] == "tensor<1x2x11x8xf32>"  # rows, both
    # the cache is read in place: each cache input feeds only its layer's fused step attention
    # (moec.kv_step_attention, whose kernel reads the rows < pos where they lie)
    import os
    import re
    text = open(os.path.join(cm.stats.outdir, "model.mlir")).read().split("\n", 2)[2]
    for name in ins:
        if name[0] in "kv":
            users = re.findall(r'(%[\w.]+)\s*=\s*"([\w.]+)"\([^)]*%' + name + r'\b', text)
            assert [op for _, op in users] == ["moec.kv_step_attention"], (name, users)
    _check_step_by_step(model, r, PROMPT)
    assert r.tokens[0].tolist() == _hf_tokens(model, PROMPT, STEPS)
    assert r.prefill_ms > 0 and r.decode_tokens_per_s > 0


def test_cli_generate_onnx_step(tmp_path, capsys):
    """`moec generate STEP.onnx --engine onnxruntime`: tokens as transformers' generate; bad input exit 2."""
    model = _mixtral()
    path = decode.export_onnx(model, str(tmp_path / "step.onnx"), 12, dynamo=False)
    rc = cli_main(["generate", path, "--prompt-ids", ",".join(map(str, PROMPT)), "--steps", "4",
                   "--engine", "onnxruntime"])
    out = capsys.readouterr().out
    assert rc == 0, out
    toks = [int(t) for t in out.splitlines()[0].split(":")[1].split(",")]
    assert toks == _hf_tokens(model, PROMPT, 4)
    assert "prefill: 5 tokens in" in out and "tokens/s" in out
    assert cli_main(["generate", path, "--prompt-ids", "1,2", "--steps", "20", "--engine", "onnxruntime"]) == 2
    assert "the cache holds 12" in capsys.readouterr().err
    assert cli_main(["generate", path, "--prompt-ids", "1,x", "--steps", "2"]) == 2
    assert cli_main(["generate", str(tmp_path / "nope"), "--prompt-ids", "1", "--steps", "2"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [True, False])
def test_onnx_step_on_moec_and_onnxruntime(tmp_path, dynamo, moec_module_cache):
    """Both torch.onnx exporters: the exported step on onnxruntime and compiled by moec."""
    model = _mixtral()
    path = decode.export_onnx(model, str(tmp_path / "step.onnx"), 16, dynamo=dynamo)
    want = _hf_tokens(model, PROMPT, STEPS)
    for engine in ("onnxruntime", "moec"):
        r = decode.generate(path, PROMPT, STEPS, engine=engine, keep_logits=True)
        _check_step_by_step(model, r, PROMPT)
        assert r.tokens[0].tolist() == want, engine
    # the ONNX step's attention is recognised too: each cache input (rows, K as V) feeds only its layer's
    # moec.kv_step_attention (no transpose of the cache per token)
    import os
    import re
    cm = moec.compile(path)  # (a cache hit: generate's build)
    text = open(os.path.join(cm.stats.outdir, "model.mlir")).read().split("\n", 2)[2]
    for name in ("k_0", "v_0", "k_1", "v_1"):
        users = re.findall(r'(%[\w.]+)\s*=\s*"([\w.]+)"\([^)]*%' + name + r'\b', text)
        assert users and {op for _, op in users} == {"moec.kv_step_attention"}, (name, users)


@pytest.mark.slow
def test_qwen2_moe_on_moec(moec_module_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = survey.build_model("qwen2_moe")
        r = moec.generate(model, PROMPT, STEPS, keep_logits=True, kv_cache="f32")
    _check_step_by_step(model, r, PROMPT)
    assert r.tokens[0].tolist() == _hf_tokens(model, PROMPT, STEPS)
