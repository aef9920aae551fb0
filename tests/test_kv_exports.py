"""transformers' own KV-cache exports (issue 17 item 4): the model called with ``past_key_values`` (a
DynamicCache built from the past tensors) returning the present keys/values, exported by the
TorchScript and dynamo ONNX exporters with optimum's names (inputs ``past_key_values.N.key/value``,
outputs ``present.N.key/value``), driven by ``moec.generate`` on moec and onnxruntime.

The present -> past pairing is read from the graph (``decode.kv_binding``: the output that is a Concat
of the past input and the new keys/values), not from the names.  Oracles: the model's own full-sequence
forward (logits step by step) and ``model.generate`` (tokens).

Default run: Mixtral through the TorchScript exporter on moec and onnxruntime, plus the binding's
refusals.  ``-m slow``: the dynamo exporter, and Qwen2-MoE through both exporters."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

import hf_survey as survey  # noqa: E402
from moec import decode  # noqa: E402
from moec.errors import UserInputError  # noqa: E402

PROMPT = [5, 9, 17, 3, 22]
STEPS = 6


def _model(arch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return survey.build_model(arch)


def _hf_tokens(model, prompt, steps) -> list:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(torch.tensor([prompt]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    return out[0, len(prompt):].tolist()


def _check(model, path, engines=("onnxruntime", "moec")):
    want = _hf_tokens(model, PROMPT, STEPS)
    for engine in engines:
        r = decode.generate(path, PROMPT, STEPS, engine=engine, keep_logits=True)
        seq = PROMPT + [int(t) for t in r.tokens[0]]
        with torch.no_grad():
            full = model(input_ids=torch.tensor([seq[:-1]]), use_cache=False).logits.numpy()
        np.testing.assert_allclose(r.logits[0][0], full[0, :len(PROMPT)], atol=1e-5, rtol=0)
        assert len(r.logits) == STEPS
        for s, lg in enumerate(r.logits[1:]):
            np.testing.assert_allclose(lg[0, 0], full[0, len(PROMPT) + s], atol=1e-5, rtol=0, err_msg=engine)
        assert r.tokens[0].tolist() == want, engine


def test_binding_read_from_the_graph(tmp_path):
    """Pairs from the Concat structure: renaming the outputs keeps the pairing; a graph with no such
    Concat is refused with one line."""
    import onnx
    model = _model("mixtral")
    path = decode.export_hf_kv(model, str(tmp_path / "m.onnx"), dynamo=False)
    b = decode.kv_binding(path)
    assert [(o, p) for o, p, _ in b["pairs"]] == [(f"present.{l}.{kv}", f"past_key_values.{l}.{kv}")
                                                  for l in range(2) for kv in ("key", "value")]
    assert all(ax == 2 for _, _, ax in b["pairs"]) and b["logits"] == "logits"
    assert (b["layers"], b["kv_heads"], b["head_dim"]) == (2, 2, 8)
    m = onnx.load(path)
    ren = {o.name: f"out{i}" for i, o in enumerate(m.graph.output)}  # e.g. 'out1' is present.0.key
    for nd in m.graph.node:
        nd.output[:] = [ren.get(x, x) for x in nd.output]
        nd.input[:] = [ren.get(x, x) for x in nd.input]
    for o in m.graph.output:
        o.name = ren[o.name]
    onnx.save(m, str(tmp_path / "renamed.onnx"))
    b2 = decode.kv_binding(str(tmp_path / "renamed.onnx"))
    assert [(o, p) for o, p, _ in b2["pairs"]] == [(ren[o], p) for o, p, _ in b["pairs"]]
    step = decode.export_onnx(model, str(tmp_path / "step.onnx"), 8, dynamo=False)  # moec's own contract
    with pytest.raises(UserInputError, match="not a past_key_values export"):
        decode.kv_binding(step)


def test_torchscript_export_mixtral(tmp_path, moec_module_cache, capsys):
    model = _model("mixtral")
    path = decode.export_hf_kv(model, str(tmp_path / "m.onnx"), dynamo=False)
    _check(model, path)
    from moec.cli import main as cli_main
    rc = cli_main(["generate", path, "--prompt-ids", ",".join(map(str, PROMPT)), "--steps", "4",
                   "--engine", "onnxruntime", "--max-len", "12"])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[0] == "tokens: " + ",".join(map(str, _hf_tokens(model, PROMPT, 4)))
    assert cli_main(["generate", path, "--prompt-ids", "1,2", "--steps", "20", "--max-len", "12"]) == 2
    assert "the cache holds 12" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("arch,dynamo", [("mixtral", True), ("qwen2_moe", False), ("qwen2_moe", True)])
def test_exports(tmp_path, arch, dynamo, moec_module_cache):
    model = _model(arch)
    _check(model, decode.export_hf_kv(model, str(tmp_path / "m.onnx"), dynamo=dynamo))
