"""moec compile's oracle for half-precision ONNX models onnxruntime cannot run (issue 16).

onnxruntime's CPU provider has no bf16 MatMul, so a bf16 model does not run on it as given.  The model's own bf16
run is then onnxruntime on moec.verify.half_rounded_model's copy (each op on onnxruntime's f32 kernels, its result
rounded to bf16 wherever the graph stores bf16), not moec's interpreter: code moec did not write judges moec.  moec's
interpreter is kept only where no such copy can be made, and the report says why.  A trial on which the model's own
oracle fails (a shape, or every row the same token, at which the model itself does not run) is reported as
skipped, not failed, as long as another trial runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")

from onnx import TensorProto, helper  # noqa: E402

from helpers import make_model  # noqa: E402
from moec.cli import main  # noqa: E402
from moec.driver import CompileOptions, build_module, compile_onnx  # noqa: E402
from moec.frontend.onnx_import import import_model  # noqa: E402
from moec.verify import run_onnxruntime, verify_artifact  # noqa: E402

BF16 = ml_dtypes.bfloat16
ROUNDED = "onnxruntime on the bf16-rounded f32 copy"
D, N = 16, 8


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"W": (rng.standard_normal((D, N)) / 4).astype(BF16), "b": (rng.standard_normal(N) / 4).astype(BF16)}


def _linear(weights=None):
    """y = x @ W + b in bf16, as both torch.onnx exporters write a bf16 nn.Linear (MatMul, then Add)."""
    return make_model([helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["y"])],
                      [("x", TensorProto.BFLOAT16, ["T", D])], [("y", TensorProto.BFLOAT16, ["T", N])],
                      weights or _weights())


def _cannot_run_on_onnxruntime(model):
    x = np.ones((2, D), BF16)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        run_onnxruntime(model.SerializeToString(), ["x"], [x])


def test_bf16_linear_is_verified_against_onnxruntime_on_the_rounded_copy(tmp_path, capsys):
    m = _linear()
    _cannot_run_on_onnxruntime(m)
    p = tmp_path / "lin.onnx"
    onnx.save(m, str(p))
    assert main(["compile", str(p), "-o", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert ROUNDED in lines[-1] and "interpreter" not in lines[-1], lines[-1]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["verified"] and rep["oracle_is_onnxruntime"] is False
    assert rep["trials"] and all(ROUNDED in t["oracle"] and "interpreter" not in t["oracle"] for t in rep["trials"])
    assert all(t["half_precision"]["ok"] for t in rep["trials"])  # (judged against the f32 model beside it)
    assert "NOT_IMPLEMENTED" in rep["oracle"]  # (why onnxruntime could not run the model as given)


def test_a_moec_build_that_computes_another_model_fails_against_the_rounded_copy(tmp_path):
    """The artifact of the linear with one weight column altered (built by moec's public build_module from the
    altered model), verified against the right model: the rounded copy's run of the right model fails it."""
    right = _linear()
    w = _weights()
    w["W"] = w["W"].copy()
    w["W"][:, 3] = (-w["W"][:, 3].astype(np.float32)).astype(BF16)
    wrong = import_model(_linear(w))
    art = build_module(wrong, str(tmp_path / "wrong"), run_passes=True)
    out = verify_artifact(right, wrong, art, CompileOptions())
    assert not out["verified"] and not out.get("no_oracle"), out
    assert "bfloat16 error against the f32 model" in out["failure"], out["failure"]
    assert ROUNDED in out["trials"][-1]["oracle"]
    # the same build verified against the model it was built from passes: the failure is the altered weight
    assert verify_artifact(_linear(w), wrong, art, CompileOptions())["verified"]


def _untyped_half_value():
    """A bf16 model with a value onnx's shape inference cannot type: com.microsoft.MoE (onnxruntime's contrib op,
    whose schema onnx does not know) between a bf16 router MatMul and a bf16 residual Add.  onnxruntime cannot run
    the model (bf16 MatMul), its f32 analogue it can; no rounded copy can round the MoE's output."""
    rng = np.random.default_rng(1)
    E, F = 4, 8
    inits = {"Wr": (rng.standard_normal((D, E)) / 2).astype(BF16),
             "fc1": (rng.standard_normal((E, F, D)) / 3).astype(BF16),
             "fc2": (rng.standard_normal((E, D, F)) / 3).astype(BF16)}
    nodes = [helper.make_node("MatMul", ["x", "Wr"], ["r"]),
             helper.make_node("MoE", ["x", "r", "fc1", "", "fc2", ""], ["moe"], domain="com.microsoft",
                              name="moe_node", k=2, activation_type="relu", normalize_routing_weights=1),
             helper.make_node("Add", ["moe", "x"], ["y"])]
    return make_model(nodes, [("x", TensorProto.BFLOAT16, ["T", D])], [("y", TensorProto.BFLOAT16, ["T", D])],
                      inits, opset=17, extra_opsets=[helper.make_opsetid("com.microsoft", 1)])


def test_no_rounded_copy_falls_back_to_the_interpreter_and_says_why(tmp_path, capsys):
    from moec.verify import half_rounded_copy
    m = _untyped_half_value()
    _cannot_run_on_onnxruntime(m)
    copy, why = half_rounded_copy(m)
    assert copy is None and "'moe'" in why and "moe_node" in why, why
    p = tmp_path / "moe.onnx"
    onnx.save(m, str(p))
    assert main(["compile", str(p), "-o", str(tmp_path / "out")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["verified"] and rep["oracle_is_onnxruntime"] is False
    for text in [last, rep["oracle"]] + [t["oracle"] for t in rep["trials"]]:
        assert "moec's interpreter op by op; no bf16-rounded f32 copy for onnxruntime" in text, text
        assert "onnx shape inference gives no type for 'moe'" in text, text


def _undefined_on_identical_rows():
    """y = h + h[T - n] with h = x @ W (bf16) and n the number of rows whose first value differs from row 0's:
    for distinct rows the index is 1 (defined from 2 rows on), for identical rows it is T, out of range -- as a
    TorchScript trace of transformers' eager expert loop, which keeps only the experts its example hit, does not
    run where every row is one token (onnxruntime's Split refuses the traced sizes)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Shape", ["x"], ["shp"], start=0, end=1),
             helper.make_node("Slice", ["x", "zero", "one", "one"], ["c"]),  # x[:, 0:1]
             helper.make_node("Slice", ["c", "zero", "one", "zero"], ["c0"]),  # x[0:1, 0:1]
             helper.make_node("Equal", ["c", "c0"], ["same"]),
             helper.make_node("Not", ["same"], ["diff"]),
             helper.make_node("Cast", ["diff"], ["d"], to=TensorProto.INT64),
             helper.make_node("ReduceSum", ["d"], ["n"], keepdims=0),
             helper.make_node("Sub", ["shp", "n"], ["idx"]),
             helper.make_node("Gather", ["h", "idx"], ["row"], axis=0),
             helper.make_node("Add", ["h", "row"], ["y"])]
    return make_model(nodes, [("x", TensorProto.BFLOAT16, ["T", D])], [("y", TensorProto.BFLOAT16, ["T", N])],
                      {"W": _weights()["W"], "zero": np.array([0], np.int64), "one": np.array([1], np.int64)})


def test_identical_rows_where_the_model_itself_does_not_run_are_skipped_not_failed(tmp_path, capsys):
    p = tmp_path / "m.onnx"
    onnx.save(_undefined_on_identical_rows(), str(p))
    assert main(["compile", str(p), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "(every row the same token): the model itself does not run there" in out, out
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["verified"]
    skipped = rep["model_undefined_at"]
    assert {u["kind"] for u in skipped} == {"identical", "random"}  # (identical rows; the 1-row random shape)
    assert all(u["why"].startswith(f"{ROUNDED} failed") for u in skipped), skipped
    assert all(u["shapes"]["x"][0] == 1 for u in skipped if u["kind"] == "random")
    ran = rep["trials"]
    assert ran and all(t["kind"] == "random" and t["shapes"]["x"][0] >= 2 and ROUNDED in t["oracle"] for t in ran)
    # the same model at one row only: no trial runs, so no oracle judged the build (exit 2, as before)
    assert main(["compile", str(p), "-o", str(tmp_path / "out1"), "--sizes", "1"]) == 2
    assert "no oracle could run the model" in capsys.readouterr().err
    # a quantised build: the same trials skipped (its f32 reference is that oracle; it was an internal error)
    assert main(["compile", str(p), "-o", str(tmp_path / "q"), "--weights", "int8"]) == 0
    rep = json.loads((tmp_path / "q" / "report.json").read_text())
    assert rep["verified"] and {u["kind"] for u in rep["model_undefined_at"]} == {"identical", "random"}
    assert rep["quantization_error"]["vs"] == ROUNDED and rep["weights"]["quantized_layers"] == 1


def test_f32_model_undefined_on_identical_rows_is_skipped_too(tmp_path):
    """The same rule where onnxruntime runs the model as given (f32) and fails on identical rows only."""
    from moec.verify import widen_half_model
    f32 = widen_half_model(_undefined_on_identical_rows())
    r = compile_onnx(f32, str(tmp_path / "out"), CompileOptions(target="cpu"))
    rep = r.report
    assert rep["verified"]
    assert [u["kind"] for u in rep["model_undefined_at"] if u["shapes"]["x"][0] > 1] == ["identical"]
    assert all(t["oracle"] == "onnxruntime" for t in rep["trials"]) and rep["trials"]


@pytest.mark.slow
def test_zaya_bf16_torchscript_eager_export_compiles_and_verifies(tmp_path, monkeypatch):
    """transformers' Zaya block in bf16 with eager experts, TorchScript export (the survey's cell): onnxruntime has
    no bf16 MatMul, and the trace keeps only the experts its example hit, so the export runs neither at 1 token nor
    where every row is one token.  moec compile verifies it against onnxruntime on the bf16-rounded f32 copy and
    reports those trials as skipped (it failed with 'no oracle': the identical-rows trial was not skippable)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_survey as survey
    monkeypatch.setenv("MOEC_SURVEY_CACHE", str(tmp_path))
    blk = survey.sparse_blocks(survey.build_model("zaya", "eager", "bf16"))[0].eval()
    x = survey.example_input(blk, torch.bfloat16, "torchscript")
    with survey._quiet():
        p = survey._onnx_export(blk, x, str(tmp_path / "zaya"), False, True)
    r = compile_onnx(p, str(tmp_path / "out"), CompileOptions(target="cpu"))
    rep = r.report
    assert [la["family"] for la in rep["moe_layers"]] == ["zaya"]
    assert rep["verified"] and rep["trials"], rep.get("failure")
    assert all(ROUNDED in t["oracle"] and "interpreter" not in t["oracle"] for t in rep["trials"])
    skipped = rep["model_undefined_at"]
    assert "identical" in {u["kind"] for u in skipped}
    assert all(u["why"].startswith(f"{ROUNDED} failed") for u in skipped)
