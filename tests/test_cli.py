"""The command line: success paths, and bad input giving one clear message and exit 2."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from helpers import make_model
from moec.cli import main


def _tiny(tmp_path, name="tiny.onnx"):
    rng = np.random.default_rng(0)
    m = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="r")],
        [("x", np.float32, ["T", 8])], [("y", np.float32, ["T", 4])],
        {"W": rng.standard_normal((8, 4)).astype(np.float32)})
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def _cli(*args):
    """Run the real console entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "moec", *map(str, args)], capture_output=True, text=True)


def test_compile_verifies_and_writes_report(tmp_path, capsys):
    p = _tiny(tmp_path)
    out = tmp_path / "out"
    assert main(["compile", str(p), "--target", "cpu", "-o", str(out)]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    rep = json.load(open(out / "report.json"))
    for key in ("target", "verified", "max_abs_err", "max_rel_err", "tolerance", "shapes_tried",
                "stage_timings_s", "moe_layers"):
        assert key in rep
    assert rep["verified"] is True and rep["target"] == "cpu"
    assert sorted(s["x"][0] for s in rep["shapes_tried"]) == [1, 3, 5]


def test_existing_outdir_needs_force_and_is_not_overwritten(tmp_path, capsys):
    p = _tiny(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    assert main(["compile", str(p), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    # even --force refuses a directory that is not a moec artifact
    assert main(["compile", str(p), "-o", str(out), "--force"]) == 2
    assert (out / "precious.txt").read_text() == "user data"


def test_force_overwrites_previous_artifact(tmp_path):
    p = _tiny(tmp_path)
    out = tmp_path / "out"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 2
    assert main(["compile", str(p), "-o", str(out), "--no-verify", "--force"]) == 0


@pytest.mark.parametrize("content", [b"", b"this is not onnx at all \x00\xff\x13", None])
def test_bad_model_files(tmp_path, content):
    p = tmp_path / "bad.onnx"
    if content is None:  # truncated real model
        good = _tiny(tmp_path, "good.onnx").read_bytes()
        content = good[: len(good) // 2]
    p.write_bytes(content)
    r = _cli("compile", p, "-o", tmp_path / "o")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "bad.onnx" in r.stderr and "not a valid ONNX model" in r.stderr


def test_missing_model_file(tmp_path):
    r = _cli("compile", tmp_path / "nope.onnx", "-o", tmp_path / "o")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_unsupported_op_names_node_op_and_opset(tmp_path):
    m = make_model([helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="my_lstm", hidden_size=2)],
                   [("x", np.float32, [1, 1, 2]), ("w", np.float32, [1, 8, 2]), ("r", np.float32, [1, 8, 2])],
                   [("y", np.float32, [1, 1, 1, 2])], opset=17)
    p = tmp_path / "lstm.onnx"
    onnx.save(m, str(p))
    r = _cli("compile", p, "-o", tmp_path / "o")
    assert r.returncode == 2
    assert "my_lstm" in r.stderr and "LSTM" in r.stderr and "opset 17" in r.stderr
    assert "Supported ONNX ops" in r.stderr and "Traceback" not in r.stderr


def test_run_writes_outputs_and_rejects_bad_inputs(tmp_path, capsys):
    p = _tiny(tmp_path)
    out = tmp_path / "art"
    assert main(["compile", str(p), "-o", str(out), "--no-verify"]) == 0
    x = np.random.default_rng(1).standard_normal((7, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = tmp_path / "res"
    assert main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(res)]) == 0
    y = np.load(res / "y.npy")
    import onnxruntime as ort
    m = onnx.load(str(p))
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    # outputs exist now: no overwrite without --force
    assert main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(res)]) == 2
    # wrong shape
    np.save(tmp_path / "bad.npy", np.zeros((7, 9), np.float32))
    r = _cli("run", out, "--input", f"x={tmp_path / 'bad.npy'}", "-o", tmp_path / "r2")
    assert r.returncode == 2 and "shape [7, 9]" in r.stderr and "Traceback" not in r.stderr
    # wrong dtype, missing input, unknown input, not an artifact
    np.save(tmp_path / "i.npy", np.zeros((7, 8), np.int64))
    assert _cli("run", out, "--input", f"x={tmp_path / 'i.npy'}", "-o", tmp_path / "r3").returncode == 2
    assert _cli("run", out, "-o", tmp_path / "r4").returncode == 2
    assert _cli("run", out, "--input", f"zz={tmp_path / 'x.npy'}", "-o", tmp_path / "r5").returncode == 2
    r = _cli("run", tmp_path, "--input", f"x={tmp_path / 'x.npy'}")
    assert r.returncode == 2 and "not a moec artifact" in r.stderr


def test_compiled_code_rejects_wrong_shapes_itself(tmp_path):
    """The C entry point validates inputs too (not only the CLI)."""
    from moec.driver import CompileOptions, compile_onnx
    from moec.errors import RuntimeFailure
    from moec.targets.registry import CpuArtifact
    p = _tiny(tmp_path)
    compile_onnx(str(p), str(tmp_path / "a"), CompileOptions(verify=False))
    art = CpuArtifact(str(tmp_path / "a"))
    with pytest.raises(RuntimeFailure, match="dimension 1 is 9, expected 8"):
        art([np.zeros((3, 9), np.float32)])
    with pytest.raises(RuntimeFailure, match="input 'x' is f64"):
        art([np.zeros((3, 8), np.float64)])


def test_inspect_and_dump_ir(tmp_path, capsys):
    p = _tiny(tmp_path)
    assert main(["inspect", str(p)]) == 0
    out = capsys.readouterr().out
    assert "x: tensor<?x8xf32" in out and "MatMul x1" in out
    assert main(["inspect", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["onnx_ops"] == {"MatMul": 1, "Relu": 1} and info["moe_layers"] == []
    dump = tmp_path / "dump"
    assert main(["compile", str(p), "-o", str(tmp_path / "o"), "--no-verify", "--dump-ir", str(dump)]) == 0
    files = sorted(os.listdir(dump))
    assert files[0].startswith("00-import") and len(files) >= 2


def test_help_reads_well():
    r = _cli("--help")
    assert r.returncode == 0 and "compile" in r.stdout and "inspect" in r.stdout and "run" in r.stdout
    r = _cli("compile", "--help")
    assert "--no-verify" in r.stdout and "--dump-ir" in r.stdout


def test_bench_smoke(tmp_path, capsys):
    """`moec bench` runs end to end on a tiny MoE model (numbers are not checked: not a benchmark)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    from build_mixtral_like import build
    p = tmp_path / "tiny_moe.onnx"
    onnx.save(build(hidden=16, ffn=8, experts=4, top_k=2), str(p))
    out = tmp_path / "bench"
    assert main(["bench", str(p), "--tokens", "1,4", "--repeats", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime MoE op" in text and "ratio = moec time / peer time" in text
    rep = json.load(open(out / "bench.json"))
    assert [r["tokens"] for r in rep["rows"]] == [1, 4] and rep["probes"]["sgemm_gflops"] > 0
    assert (out / "bench.png").exists()
    assert main(["bench", str(p), "--weights", "int8", "--tokens", "1", "--repeats", "2", "-o",
                 str(tmp_path / "b2")]) == 0
    rep = json.load(open(tmp_path / "b2" / "bench.json"))
    assert rep["weights"] == "int8" and rep["quantization_error"]["token_rel_median"] > 0


def test_unchanged_recompile_hits_the_build_cache(tmp_path):
    p = _tiny(tmp_path)
    assert main(["compile", str(p), "-o", str(tmp_path / "a"), "--no-verify"]) == 0
    assert main(["compile", str(p), "-o", str(tmp_path / "b"), "--no-verify"]) == 0
    assert json.load(open(tmp_path / "b" / "report.json"))["build_cache_hit"] is True


EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "mixtral_like.onnx")


def test_int4_group_that_fits_no_layer_is_said_not_hidden(tmp_path, capsys):
    """--weights int4 with a group size that divides no layer's K: the layer stays f32 (still verified),
    and the output says so instead of reporting an int4 quantisation error."""
    assert main(["compile", EXAMPLE, "--weights", "int4", "--group-size", "48", "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "MoE layer 0 keeps f32 weights, not int4" in out and "divisible by the group size (48)" in out
    assert "no MoE layer took int4 weights" in out and "int4 weights: quantisation error" not in out


def test_odd_int4_group_size_is_a_usage_error(tmp_path):
    p = _tiny(tmp_path)
    r = _cli("compile", p, "--weights", "int4", "--group-size", "7", "-o", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert "--group-size 7" in r.stderr and "even number" in r.stderr
