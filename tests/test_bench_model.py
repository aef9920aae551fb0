"""`moec bench` on whole models (issue 17 item 6): the torch-eager and llama.cpp peers, their user errors, and
benchmarks/bench_model.py end to end on a tiny Mixtral (slow).  Benchmarks are not tests: this checks the
driving (every engine computes the same last-position logits), not speed."""
import json
import os
import sys

import numpy as np
import pytest

from moec.bench import BenchInputs, run_bench, whole_model_peers
from moec.cli import main
from test_bench_inputs import _block_3d, _tiny_lm

HERE = os.path.dirname(os.path.abspath(__file__))


def test_several_weight_modes_in_one_interleaved_run(tmp_path):
    p, V = _tiny_lm(tmp_path)
    rep = run_bench(p, str(tmp_path / "b"), [1, 4], ["f32", "int8"], repeats=1, threads=1)
    assert rep["moec_keys"] == ["moec f32", "moec int8"] and rep["weights"] == ["f32", "int8"]
    for r in rep["rows"]:
        assert set(r["ms"]) == {"moec f32", "moec int8", "onnxruntime"}
        assert set(r["ratios"]) == {"moec f32", "moec int8"}
        assert r["ratios"]["moec int8"]["onnxruntime"] == pytest.approx(r["ms"]["moec int8"] / r["ms"]["onnxruntime"])
    assert os.path.isdir(tmp_path / "b" / "artifact_int8")


def test_peer_user_errors(tmp_path, capsys):
    p, V = _tiny_lm(tmp_path)
    rc = main(["bench", p, "--tokens", "1", "--repeats", "1", "--threads", "1", "-o", str(tmp_path / "o"),
               "--hf-model", str(tmp_path / "nope")])
    assert rc == 2 and "not a directory" in capsys.readouterr().err
    rc = main(["bench", p, "--tokens", "1", "--repeats", "1", "--threads", "1", "-o", str(tmp_path / "o"),
               "--also-weights", "int3", "--force"])
    assert rc == 2 and "--also-weights int3" in capsys.readouterr().err


def test_whole_model_peers_need_input_ids(tmp_path, monkeypatch):
    """A model fed hidden states has no token ids to give torch / llama.cpp; llama.cpp missing is one line."""
    import moec.bench as bench
    from moec.errors import UserInputError
    from moec.frontend.onnx_import import import_model
    import onnx
    p, _ = _block_3d(tmp_path)
    m = import_model(onnx.load(p))
    with pytest.raises(UserInputError, match="input_ids"):
        whole_model_peers(BenchInputs(m.main, m), str(tmp_path), (), 1, 4, ["f32"])
    p, _ = _tiny_lm(tmp_path)
    m = import_model(onnx.load(p))
    monkeypatch.setattr(bench, "llama_cpp_available", lambda: False)  # (the environment: no llama-cpp-python)
    with pytest.raises(UserInputError, match="llama-cpp-python"):
        whole_model_peers(BenchInputs(m.main, m), None, [p], 1, 4, ["f32"])


@pytest.mark.slow
def test_bench_model_script_tiny_mixtral(tmp_path):
    """benchmarks/bench_model.py --small: a seeded tiny MixtralForCausalLM, exported, benched against
    onnxruntime and torch eager (f32, bf16); the torch-eager peer computes the same logits as moec."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))
    try:
        import bench_model
    finally:
        sys.path.pop(0)
    out, work = tmp_path / "out", tmp_path / "work"
    assert bench_model.main(["--small", "--tokens", "1,3", "--formats", "f32,bf16", "--repeats", "1",
                             "--threads", "1", "--work", str(work), "-o", str(out)]) == 0
    rep = json.load(open(out / "bench.json"))
    assert [r["tokens"] for r in rep["rows"]] == [1, 3]
    assert {"moec f32", "moec bf16", "onnxruntime", "torch eager f32", "torch eager bf16"} <= set(rep["rows"][0]["ms"])
    assert "| f32 | onnxruntime |" in open(out / "table.md").read() and (out / "bench.png").exists()
    # the same computation: moec's artifact and the torch peer agree on the last-position logits
    from moec.targets.cpu_backend import CpuArtifact
    art = CpuArtifact(str(out / "artifact"))
    fe = _feeder(str(work / "model.onnx"))
    peer = whole_model_peers(fe, str(work / "checkpoint"), (), 1, 8, ["f32"])["torch eager f32"]
    ids = np.array([[5, 17, 3, 200]], np.int64)
    want = peer(ids)().float().numpy().reshape(-1)
    got = np.asarray(art([ids])[0]).reshape(-1)
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max())


def _feeder(onnx_path):
    import onnx
    from moec.frontend.onnx_import import import_model
    m = import_model(onnx.load(onnx_path))
    return BenchInputs(m.main, m)
