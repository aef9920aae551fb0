"""`moec inspect --explain` and report.json's "recognition" (issue 16 item 5): for every top-k / arg-max,
the layer recognised or the first step at which recognition stopped, naming the nodes and the reason."""
import json

import onnx
import pytest

from moec.cli import main
from moec.frontend.onnx_import import import_model
from moec.passes.pipeline import run_pipeline
from moec.targets import target_for
from moec.passes.recognition_trace import format_explain, recognition_of
from moec.zoo.graphs import near_misses, two_layers, unrolled

# near miss -> (the step recognition stops at, a phrase of the reason, a node (output name) it names)
EXPECTED = {
    "near_smallest": ("selection", "smallest scores (largest=0)", "moec.topk -> tw"),
    "near_tanh_logits": ("router", "the scores come from Tanh", "moec.tanh -> logits2"),
    "near_softmax_axis0": ("router", "softmax over axis 0, not over the experts", "moec.softmax -> probs"),
    "near_relu_expert": ("experts", "is none of relu, silu", "moec.matmul -> e3_ye"),
    "near_weight_offset": ("proof", "no routing candidate", "moec.scatter_nd -> acc_8"),
}


def _trace(proto):
    m = import_model(proto)
    run_pipeline(m, target_for("cpu"))
    return recognition_of(m)


def test_every_near_miss_is_explained():
    assert set(EXPECTED) == set(near_misses())  # a new near miss needs its expected stop here


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_near_miss_names_the_step_nodes_and_reason(name):
    why, proto = near_misses()[name]
    recs = _trace(proto)
    assert len(recs) == 1, recs
    r = recs[0]
    step, phrase, node = EXPECTED[name]
    assert r["recognised"] is False and r["op"] == "moec.topk" and r["node"] == "TopK"
    assert r["step"] == step, (name, r)
    assert phrase in r["reason"], (name, r["reason"])
    assert any(node in n for n in r["nodes"]), (name, r["nodes"])
    lines = format_explain(recs)
    assert "NOT recognised" in lines[0] and f"step '{step}'" in lines[0] and node in lines[1]


def test_recognised_layers_are_explained_with_family_routing_and_sizes():
    recs = _trace(unrolled("mixtral"))
    assert len(recs) == 1
    r = recs[0]
    assert r["recognised"] is True and r["layer"] == "moe0" and r["family"] == "mixtral"
    assert (r["E"], r["k"], r["D"], r["F"]) == (8, 2, 64, 96)
    assert r["routing"]["scoring"] == "softmax" and r["routing"]["norm"] == "sum"
    line = format_explain(recs)[0]
    assert "recognised as moe0: family mixtral" in line and "E=8 k=2 D=64 F=96" in line
    two = _trace(two_layers())
    assert [(r["node"], r["recognised"], r["layer"]) for r in two] == [("a_router_topk", True, "moe0"),
                                                                      ("b_router_topk", True, "moe1")]


def test_inspect_explain_cli(tmp_path, capsys):
    p = tmp_path / "near.onnx"
    onnx.save(near_misses()["near_softmax_axis0"][1], str(p))
    assert main(["inspect", str(p), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "MoE recognition (--explain):" in out
    assert "[0] topk 'TopK': NOT recognised: stopped at step 'router': softmax over axis 0" in out
    assert "nodes: Softmax [moec.softmax -> probs]" in out
    assert main(["inspect", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recognition"][0]["step"] == "router"


def test_report_json_has_recognition(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(near_misses()["near_weight_offset"][1], str(p))
    assert main(["compile", str(p), "-o", str(tmp_path / "o"), "--no-verify"]) == 0
    rep = json.load(open(tmp_path / "o" / "report.json"))
    assert [(r["step"], r["recognised"]) for r in rep["recognition"]] == [("proof", False)]


def test_model_without_selection_says_so(tmp_path, capsys):
    from moec.zoo.graphs import ort_moe
    p = tmp_path / "ort.onnx"
    onnx.save(ort_moe("silu"), str(p))
    assert main(["inspect", str(p), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "moe0: imported as an MoE op (com.microsoft.MoE)" in out
    assert "no top-k or arg-max in the model besides the MoE ops above" in out


def test_readme_example_is_the_real_output(tmp_path, capsys):
    """The README's --explain example is what moec prints for that look-alike."""
    import os
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = readme.split("$ moec inspect near_tanh_logits.onnx --explain\n", 1)[1].split("\n\n", 1)[0]
    want = [ln[4:] for ln in block.splitlines() if ln.strip() and ln.strip() != "..."]
    p = tmp_path / "near_tanh_logits.onnx"
    onnx.save(near_misses()["near_tanh_logits"][1], str(p))
    assert main(["inspect", str(p), "--explain"]) == 0
    got = capsys.readouterr().out.splitlines()
    at = got.index(want[0])
    assert got[at:at + len(want)] == want


def test_real_transformers_block_is_explained(tmp_path):
    """A real transformers Mixtral block (tiny config, TorchScript export): the trace agrees with what the
    recognizer did, naming the exporter's own node names when it stopped."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    cfg = MixtralConfig(hidden_size=32, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2)
    torch.manual_seed(0)
    blk = MixtralSparseMoeBlock(cfg).eval()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = blk

        def forward(self, h):
            r = self.b(h)
            return r[0] if isinstance(r, tuple) else r
    p = str(tmp_path / "mixtral_block.onnx")
    torch.onnx.export(Block().eval(), (torch.randn(1, 5, 32),), p, dynamo=False, opset_version=17,
                      input_names=["hidden_states"], output_names=["out"],
                      dynamic_axes={"hidden_states": {1: "S"}, "out": {1: "S"}})
    m = import_model(onnx.load(p))
    run_pipeline(m, target_for("cpu"))
    recs = recognition_of(m)
    assert len(recs) == 1 and recs[0]["node"].endswith("TopK")
    layers = [json.loads(s) for s in m.attrs.get("moec.moe_layers", [])]
    if layers:
        assert recs[0]["recognised"] and (recs[0]["E"], recs[0]["k"]) == (4, 2)
    else:
        r = recs[0]
        assert r["recognised"] is False and r["step"] in ("router", "layer output", "experts", "proof")
        assert r["nodes"] and all(n.startswith("/b/") for n in r["nodes"]), r["nodes"]
        if r["step"] == "experts" and "run-time index" in r["reason"]:  # transformers 5.x's eager loop
            assert "Gather '/b/experts/" in r["reason"]


def test_moec_compile_module_report_has_recognition(moec_cache):
    """moec.compile(module) (torch.export front end): report.json carries the trace too."""
    torch = pytest.importorskip("torch")
    import moec
    from moec.zoo import make_inputs, make_module
    from moec.zoo.modules import Mixtral
    cm = moec.compile(make_module(Mixtral), (torch.from_numpy(make_inputs(5)),), verify=False, cache=False)
    recs = cm.stats.report["recognition"]
    assert len(recs) == 1 and recs[0]["recognised"] and recs[0]["family"] == "mixtral"


def test_group_topks_of_a_recognised_layer_are_absorbed():
    """DeepSeek-V3's group-limited routing has three top-ks; the layer is recognised from the last, and
    the group top-ks it replaced are reported as part of it, not as failures."""
    pytest.importorskip("torch")
    from moec.zoo import all_entries
    entry = next(e for e in all_entries() if e.name == "deepseekv3_torchscript")
    recs = _trace(entry.build())
    assert [r["recognised"] for r in recs] == [False, False, True]
    assert [r["step"] for r in recs[:2]] == ["absorbed", "absorbed"] and recs[2]["family"] == "deepseek-v3"
    lines = format_explain(recs)
    assert "part of a recognised layer" in lines[0] and "NOT recognised" not in "\n".join(lines)


def test_uninitialised_transformers_experts_are_recognised(moec_cache):
    """A transformers Mixtral block built standalone keeps its experts' torch.empty parameters (NaN / huge
    garbage) until a model's weight init runs: recognition proves its rewrite on probe weights (see
    tests/test_hf_uninit.py), so a NaN in an expert's weights no longer stops it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import moec
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(hidden_size=32, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2)
    blk = MixtralSparseMoeBlock(cfg).eval()
    with torch.no_grad():
        for p in blk.parameters():
            torch.nn.init.normal_(p, 0, 0.2)
        blk.experts.gate_up_proj[1, 3, 5] = float("nan")  # what torch.empty may hold
    cm = moec.compile(blk, (torch.randn(2, 5, 32),), verify=False, cache=False)
    recs = cm.stats.report["recognition"]
    assert len(recs) == 1 and recs[0]["recognised"], recs
