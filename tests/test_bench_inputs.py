"""`moec bench` drives the input layouts real exports have (issue 16 item 7): a transformers MoE block's
[batch, seq, hidden] and a whole model's input_ids [batch, seq] (tokens = batch x seq), not only one
[tokens, hidden] input.  Tiny models, two token counts, two repeats: this checks the driving, not speed."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from moec.bench import run_bench
from moec.cli import main


def _block_3d(tmp_path):
    """The zoo's Mixtral layer wrapped as a transformers block is: [1, T, D] in, reshaped to [T, D]
    and back; exported with torch.onnx (TorchScript exporter), batch and sequence dynamic."""
    torch = pytest.importorskip("torch")
    from moec.zoo import D, make_module
    from moec.zoo.modules import Mixtral

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.moe = make_module(Mixtral)

        def forward(self, h):
            b, s, d = h.shape
            return self.moe(h.reshape(-1, d)).reshape(b, s, d)

    p = str(tmp_path / "block3d.onnx")
    x = torch.randn(1, 5, D)
    torch.onnx.export(Block().eval(), (x,), p, dynamo=False, opset_version=17, input_names=["hidden_states"],
                      output_names=["out"], dynamic_axes={"hidden_states": {0: "B", 1: "S"}, "out": {0: "B", 1: "S"}})
    return p, D


def _tiny_lm(tmp_path, V=50, Dm=16):
    """input_ids [B, S] -> embedding Gather -> (x mask) -> MatMul -> Relu: a whole model's front."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h"], name="embed_tokens"),
             helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT, name="mask_cast"),
             helper.make_node("Unsqueeze", ["mf", "ax"], ["mu"], name="mask_unsq"),
             helper.make_node("Mul", ["h", "mu"], ["hm"], name="masked"),
             helper.make_node("MatMul", ["hm", "W"], ["z"], name="proj"),
             helper.make_node("Relu", ["z"], ["logits"], name="act")]
    g = helper.make_graph(
        nodes, "tiny_lm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "S"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "S"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "S", Dm])],
        [numpy_helper.from_array(rng.standard_normal((V, Dm)).astype(np.float32), "emb"),
         numpy_helper.from_array(rng.standard_normal((Dm, Dm)).astype(np.float32), "W"),
         numpy_helper.from_array(np.array([-1], np.int64), "ax")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    p = str(tmp_path / "tiny_lm.onnx")
    onnx.save(m, p)
    return p, V


def test_bench_drives_a_batch_seq_hidden_block(tmp_path):
    p, D = _block_3d(tmp_path)
    rep = run_bench(p, str(tmp_path / "b"), [1, 4], repeats=2, threads=1)
    assert [r["tokens"] for r in rep["rows"]] == [1, 4]
    assert [r["input_shapes"]["hidden_states"] for r in rep["rows"]] == [[1, 1, D], [1, 4, D]]
    assert "[batch, seq, hidden]" in rep["inputs"]["kind"]
    for r in rep["rows"]:
        assert r["ms"]["moec"] > 0 and "onnxruntime" in r["ratio_vs"]
    # the layer is recognised through the reshape: the fused-op peer is fed [tokens, hidden]
    if rep["layers"]:
        assert any(k.startswith("onnxruntime MoE op") for k in rep["rows"][-1]["ratio_vs"])
    assert json.load(open(tmp_path / "b" / "bench.json"))["rows"][1]["tokens"] == 4


def test_bench_drives_a_whole_model_taking_input_ids(tmp_path, capsys):
    p, V = _tiny_lm(tmp_path)
    rep = run_bench(p, str(tmp_path / "b"), [1, 4], repeats=2, threads=1)
    assert [r["tokens"] for r in rep["rows"]] == [1, 4]
    assert rep["rows"][1]["input_shapes"] == {"input_ids": [1, 4], "attention_mask": [1, 4]}
    assert f"ids drawn from [0, {V})" in rep["inputs"]["kind"]
    assert all(r["ms"]["moec"] > 0 and set(r["ratio_vs"]) == {"onnxruntime"} for r in rep["rows"])
    # and through the command line
    assert main(["bench", p, "--tokens", "1,4", "--repeats", "2", "--threads", "1", "-o", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "moec bench tiny_lm" in out and "onnxruntime" in out


def test_ids_are_drawn_from_the_embedding_range(tmp_path):
    from moec.bench import BenchInputs
    from moec.frontend.onnx_import import import_model
    p, V = _tiny_lm(tmp_path, V=7)
    m = import_model(onnx.load(p))
    b = BenchInputs(m.main, m)
    ids, mask = b.inputs(64)
    assert ids.dtype == np.int64 and ids.shape == (1, 64) and 0 <= ids.min() and ids.max() < 7
    assert len(set(ids.ravel().tolist())) > 1 and (mask == 1).all()


def test_other_inputs_are_refused_with_one_line(tmp_path, capsys):
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["T", 4]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["T", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    p = tmp_path / "two.onnx"
    onnx.save(m, str(p))
    assert main(["bench", str(p), "--tokens", "1", "--repeats", "1", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[batch, seq, hidden]" in err[0] and "input_ids" in err[0] and "a: " in err[0]


def test_bench_int8_on_a_dense_lm_quantises_its_linear_layers(tmp_path):
    """(--weights applies to every linear layer: a model without MoE layers still has its projections and
    output layer quantised -- the "nothing was quantised" warning is for --weights-scope experts,
    tests/test_weights_report.py)"""
    from moec.bench import format_table
    p, _ = _tiny_lm(tmp_path)
    rep = run_bench(p, str(tmp_path / "b"), [2], weights="int8", repeats=1, threads=1)
    assert rep["weights_quantized"]["by_scope"]["dense"]["layers"] > 0
    assert "nothing was quantised" not in format_table(rep)


def test_fused_op_peer_for_a_gemm_router(tmp_path):
    """The dynamo exporter writes nn.Linear routers as Gemm(x, W, transB=1): the fused com.microsoft.MoE
    peer is built for them too (it was skipped: "router is not a plain MatMul")."""
    pytest.importorskip("torch")
    from moec.zoo import all_entries
    entry = next(e for e in all_entries() if e.name == "mixtral_dynamo")
    p = tmp_path / "mixtral_dynamo.onnx"
    onnx.save(entry.build(), str(p))
    rep = run_bench(str(p), str(tmp_path / "b"), [1, 4], repeats=2, threads=1)
    assert rep["layers"] and rep["layers"][0]["ort_moe_why"] == ""
    assert all("onnxruntime MoE op (moe0)" in r["ratio_vs"] for r in rep["rows"])
