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


def _bench_model_module():
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))
    try:
        import bench_model
    finally:
        sys.path.pop(0)
    return bench_model


def _llama_src_or_skip():
    from moec.bench import llama_cpp_available
    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not importable (pip install 'moec[bench]', see benchmarks/README.md)")
    src = os.environ.get("LLAMA_CPP_SRC")
    if not src or not os.path.isfile(os.path.join(src, "convert_hf_to_gguf.py")):
        pytest.skip("LLAMA_CPP_SRC does not point at llama.cpp's sources (convert_hf_to_gguf.py, gguf-py/) "
                    "of the llama-cpp-python release installed (its vendor/llama.cpp)")
    return src


def test_gguf_from_the_same_checkpoint_computes_the_same_model(tmp_path):
    """llama.cpp's converter + quantiser on a tiny seeded transformers-5 MixtralForCausalLM: llama.cpp loads every
    GGUF (the router was mis-mapped to a dense ffn_gate before: 'missing tensor blk.0.ffn_gate_inp.weight'),
    its last-position logits on a 48-token prompt equal transformers' (f32: within llama.cpp's f16 KV cache's
    error, 5e-5 of the largest logit; a rotary base other than the model's gave 5e-3) and the quantised files
    stay near them; the
    bench's llama.cpp peer returns those logits and its greedy decode loop gives transformers' tokens."""
    src = _llama_src_or_skip()
    import torch
    from transformers import AutoModelForCausalLM
    from moec.decode import hf_decode
    from moec.decode_bench import llama_cpp_step_loop
    bm = _bench_model_module()
    ckpt = str(tmp_path / "ckpt")
    bm.make_checkpoint(ckpt, small=True)
    ggufs = bm.make_ggufs(ckpt, src, str(tmp_path), ["f32", "int8", "int4", "w8a8", "w4a8"])
    assert set(ggufs) == {"f32", "int8", "int4", "w8a8", "w4a8"} and ggufs["w8a8"] == ggufs["int8"]
    assert ggufs["w4a8"] == ggufs["int4"]  # (moec's int4 weights x int8 activations against q4_0, which does the same)
    # a format asked alone gets the file of its llama.cpp type, and only that
    assert bm.make_ggufs(ckpt, src, str(tmp_path), ["w4a8"]) == {"w4a8": ggufs["int4"]}
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    ids = np.random.default_rng(1).integers(3, 512, (1, 48))
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids)).logits[0, -1].numpy()
    scale = np.abs(want).max()
    fe = type("Feeder", (), {"vocab": 512})()
    peers = whole_model_peers(fe, None, [ggufs["f32"], ggufs["int8"], ggufs["int4"]], 1, 64, ["f32"])
    err = {k: float(np.abs(np.array(p(ids)()) - want).max() / scale) for k, p in peers.items()}
    assert err["llama.cpp model-f32"] < 1e-3, err
    assert err["llama.cpp model-q8_0"] < 3e-2 and err["llama.cpp model-q4_0"] < 0.3, err
    toks, _, _ = hf_decode(model, ids[:, :8], 6)
    loop = llama_cpp_step_loop(ggufs["f32"], 1, 16)
    got, _, dec = loop(ids[:, :8], 6)
    assert got.tolist() == toks.tolist() and len(dec) == 5
    assert loop.kv_cache == "f16"  # (llama-cpp-python's Llama(...) default type_k / type_v, stated in the table)


@pytest.mark.slow
def test_bench_model_script_tiny_mixtral(tmp_path):
    """benchmarks/bench_model.py --small, every part: prefill (moec f32/int4 against onnxruntime and torch eager),
    decode with a KV cache (the same engines; every engine's greedy tokens equal transformers' in f32) and the
    MatMul probe; the torch-eager peer computes the same logits as moec's prefill artifact.  llama.cpp joins
    when LLAMA_CPP_SRC and llama-cpp-python are there."""
    bench_model = _bench_model_module()
    out, work = tmp_path / "out", tmp_path / "work"
    assert bench_model.main(["--small", "--tokens", "1,3", "--contexts", "12", "--steps", "3", "--formats", "f32,int4",
                             "--repeats", "1", "--decode-repeats", "1", "--threads", "1", "--work", str(work),
                             "-o", str(out)]) == 0
    rep = json.load(open(out / "bench.json"))
    pre = rep["prefill"]["runs"]
    assert list(pre) == ["f32", "int4"] and [r["tokens"] for r in pre["f32"]["rows"]] == [1, 3]
    assert {"moec", "onnxruntime", "torch eager f32"} <= set(pre["f32"]["rows"][0]["ms"])
    assert {"moec", "onnxruntime"} <= set(pre["int4"]["rows"][0]["ms"])
    for r in pre["f32"]["rows"]:  # every engine computed the model's logits (f32: as onnxruntime's)
        errs = r["max_err_rel_to_max"]
        assert errs["moec"] < 1e-4 and errs["torch eager f32"] < 1e-4, errs
    assert pre["int4"]["quantization_error"]["rel_rms"] < 0.5
    dec = rep["decode"]["runs"]
    assert [r["context"] for r in dec["f32"]["rows"]] == [12]
    eng = dec["f32"]["rows"][0]["engines"]
    assert {"moec f32", "onnxruntime f32", "torch eager f32"} <= set(eng)
    assert eng["moec f32"]["tokens_equal_reference"] and eng["onnxruntime f32"]["tokens_equal_reference"]
    # each engine's KV cache type is recorded and stated: moec's f16 by default, the f32 peers'
    assert eng["moec f32"]["kv_cache"] == "f16" and eng["onnxruntime f32"]["kv_cache"] == "f32"
    assert eng["torch eager f32"]["kv_cache"] == "f32" and dec["f32"]["kv_cache"] == "f16"
    assert "moec int4" in dec["int4"]["rows"][0]["engines"]
    for f in ("f32", "int4"):  # (each moec decode step compiled by a child process, not the bench's)
        comp = dec[f]["moec_compiles"]
        assert list(comp) == [f"moec {f} max_len 15"] and all(c["pid"] != os.getpid() for c in comp.values())
    assert {(r["T"], r["weights"]) for r in rep["matmul"]["rows"]} == {(t, w) for t in (1, 3) for w in ("f32", "int4")}
    table = open(out / "table.md").read()
    assert "| f32 | onnxruntime (<= 0.8) |" in table and "| int4 | onnxruntime f32 |" in table
    assert "| run | engine | KV cache |" in table and "| f32 | moec f32 | f16 |" in table
    assert "Where moec's prefill time goes" in table
    assert (out / "bench.png").exists() and not any(p.is_dir() for p in out.iterdir())  # (artifacts stay in work)
    # the same computation: moec's artifact and the torch peer agree on the last-position logits
    from moec.targets.cpu_backend import CpuArtifact
    art = CpuArtifact(str(work / "prefill_f32" / "artifact"))
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


def _tiny_ckpt(d):
    """A 1-layer MixtralForCausalLM (hidden 32, vocab 64), save_pretrained into ``d``."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM
    cfg = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    model = MixtralForCausalLM(cfg).eval()
    model.save_pretrained(d)
    return model


def test_decode_step_compiles_in_a_child_process(tmp_path):
    """The whole-model decode bench compiles moec's KV-cache step in a child process (the bench process holds the
    torch model, onnxruntime and llama.cpp; a step compile of the issue's model peaks at ~3.9 GB): the artifact is
    written to the work folder by another pid, runs the model's greedy tokens when loaded here, and is reused
    without a child while its checkpoint and options are the same."""
    from moec.decode import cache_geometry, hf_decode
    from moec.decode_bench import _artifact_step, _gen, compile_step_in_child
    ckpt, art = str(tmp_path / "ckpt"), str(tmp_path / "work" / "moec_f32")
    model = _tiny_ckpt(ckpt)
    info = compile_step_in_child(ckpt, art, "f32", 16, 32)
    assert info["pid"] != os.getpid() and not info["reused"] and info["peak_rss_mb"] > 0
    assert os.path.exists(os.path.join(art, "model.so"))
    step = _artifact_step(art, 1)
    geo = cache_geometry(model)
    prompt = np.random.default_rng(0).integers(3, 64, (1, 6))
    got, _, _ = _gen(step, geo, 16, prompt, 4)
    want, _, _ = hf_decode(model, prompt, 4)
    assert np.asarray(got).tolist() == np.asarray(want).tolist()
    again = compile_step_in_child(ckpt, art, "f32", 16, 32)
    assert again["reused"] and again["pid"] == info["pid"]


@pytest.mark.slow
def test_decode_step_rebuilt_when_its_inputs_change(tmp_path):
    """A compiled decode step in the work folder is rebuilt (by a new child) when its options or checkpoint
    differ from the ones it was made from, and reused otherwise."""
    from moec.decode_bench import compile_step_in_child
    ckpt, art = str(tmp_path / "ckpt"), str(tmp_path / "work" / "moec_f32")
    _tiny_ckpt(ckpt)
    info = compile_step_in_child(ckpt, art, "f32", 16, 32)
    other = compile_step_in_child(ckpt, art, "f32", 12, 32)  # (another cache capacity in the same folder)
    assert not other["reused"] and other["pid"] != info["pid"] and other["key"]["max_len"] == 12
    assert compile_step_in_child(ckpt, art, "f32", 12, 32)["reused"]
    os.utime(os.path.join(ckpt, "config.json"), ns=(0, 0))  # (a changed checkpoint: rebuilt, by a new child)
    third = compile_step_in_child(ckpt, art, "f32", 12, 32)
    assert not third["reused"] and third["pid"] not in (os.getpid(), info["pid"], other["pid"])


@pytest.mark.slow
def test_prefill_artifact_rebuilt_when_moec_changes(tmp_path, monkeypatch):
    """bench_model's prefill artifacts stay in the work folder between runs and are reused only while their stamp
    (the ONNX file, the options, moec's source hash) matches: after a runtime kernel changes (the source hash
    faked here) the next run compiles again instead of timing the old build; a linked artifact (an earlier
    run's layout) is replaced by a build of its own."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import moec.jit_api as jit_api
    bench_model = _bench_model_module()
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    art = tmp_path / "prefill_f32" / "artifact"
    art.parent.mkdir()
    os.symlink(other, art)
    a = bench_model.compile_artifact(path, str(art), "f32", 1, 32, False, "1")
    assert not a["bench_build"]["reused"] and not os.path.islink(art) and (art / "model.so").exists()
    assert os.path.exists(str(art) + ".build.json")
    assert not any(other.iterdir())
    b = bench_model.compile_artifact(path, str(art), "f32", 1, 32, False, "1")
    assert b["bench_build"]["reused"] and b["bench_build"]["finished"] == a["bench_build"]["finished"]
    monkeypatch.setattr(jit_api, "_compiler_hash", lambda: "a-changed-kernel")
    c = bench_model.compile_artifact(path, str(art), "f32", 1, 32, False, "1")
    assert not c["bench_build"]["reused"] and c["bench_build"]["key"]["compiler"] == "a-changed-kernel"
    d = bench_model.compile_artifact(path, str(art), "int8", 1, 32, False, "1")  # (another format: rebuilt too)
    assert not d["bench_build"]["reused"] and d["bench_build"]["key"]["weights"] == "int8"
