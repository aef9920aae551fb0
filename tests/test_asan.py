"""Generated C under AddressSanitizer + UBSan (+ LeakSanitizer): every model here is compiled
into a standalone executable with the sanitizers and run at several token counts, including
data-dependent shapes (NonZero, empty expert selections), and must match onnxruntime."""
import os

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.targets.cpu_harness import build_harness, run_harness

HERE = os.path.dirname(os.path.abspath(__file__))


def _models():
    rng = np.random.default_rng(0)
    ms = {}
    ms["broadcast_math"] = make_model(
        [helper.make_node("Mul", ["x", "s"], ["a"]), helper.make_node("Softmax", ["a"], ["b"], axis=-1),
         helper.make_node("ReduceSum", ["b", "ax"], ["c"], keepdims=1), helper.make_node("Div", ["b", "c"], ["y"])],
        [("x", np.float32, ["T", 6])], [("y", np.float32, ["T", 6])],
        {"s": rng.standard_normal((1, 6)).astype(np.float32), "ax": np.array([1], np.int64)})
    ms["gather_scatter"] = make_model(
        [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1),
         helper.make_node("ScatterElements", ["z", "i", "v"], ["s"], axis=1),
         helper.make_node("GatherElements", ["x", "i"], ["g"], axis=1),
         helper.make_node("Add", ["s", "z"], ["y"]), helper.make_node("Identity", ["g"], ["y2"])],
        [("x", np.float32, ["T", 8]), ("z", np.float32, ["T", 8])],
        [("y", np.float32, ["T", 8]), ("y2", np.float32, ["T", 3])], {"k": np.array([3], np.int64)})
    ms["nonzero_dynamic"] = make_model(
        [helper.make_node("Greater", ["x", "zero"], ["m"]), helper.make_node("NonZero", ["m"], ["nz"]),
         helper.make_node("Transpose", ["nz"], ["idx"], perm=[1, 0]),
         helper.make_node("GatherND", ["x", "idx"], ["vals"]),
         helper.make_node("ScatterND", ["x", "idx", "vals"], ["y"], reduction="add")],
        [("x", np.float32, ["T", 5])], [("y", np.float32, ["T", 5])], {"zero": np.array(0.5, np.float32)})
    ms["shape_chain"] = make_model(
        [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Gather", ["sh", "zero_i"], ["t"], axis=0),
         helper.make_node("Unsqueeze", ["t", "ax0"], ["t1"]), helper.make_node("Concat", ["t1", "dims"], ["ns"], axis=0),
         helper.make_node("Reshape", ["x", "ns"], ["r"]), helper.make_node("Transpose", ["r"], ["tr"], perm=[0, 2, 1]),
         helper.make_node("Slice", ["tr", "st", "en", "axs"], ["sl"]),
         helper.make_node("Reshape", ["sl", "flat"], ["y"])],
        [("x", np.float32, ["T", 12])], [("y", np.float32, ["T", 8])],
        {"zero_i": np.array(0, np.int64), "ax0": np.array([0], np.int64), "dims": np.array([3, 4], np.int64),
         "st": np.array([1], np.int64), "en": np.array([3], np.int64), "axs": np.array([2], np.int64),
         "flat": np.array([0, -1], np.int64)})
    import sys
    sys.path.insert(0, os.path.join(HERE, "..", "examples"))
    from build_mixtral_like import build
    ms["mixtral_like"] = build(hidden=16, ffn=24, experts=4, top_k=2)
    return ms


MODELS = _models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_generated_code_is_sanitizer_clean(name, tmp_path):
    model = MODELS[name]
    out = str(tmp_path / "a")
    compile_onnx(model, out, CompileOptions(verify=False))
    exe = build_harness(out, sanitize=True)
    sess = ort.InferenceSession(model.SerializeToString())
    names = [i.name for i in model.graph.input]
    rng = np.random.default_rng(1)
    # T=0 (an empty batch) too, except where a reshape's -1 is then undefined
    sizes = {"mixtral_like": (5, 1, 7), "shape_chain": (5, 1, 3)}.get(name, (5, 1, 3, 0))
    for T in sizes:
        xs = [rng.standard_normal((T,) + tuple(d.dim_value for d in i.type.tensor_type.shape.dim[1:]))
              .astype(np.float32) for i in model.graph.input]
        if name == "mixtral_like" and T == 7:
            xs[0][:] = xs[0][0]  # identical tokens: most experts get none
        got = run_harness(exe, out, xs, len(model.graph.output))
        want = sess.run(None, dict(zip(names, xs)))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_sanitizer_catches_out_of_bounds(tmp_path):
    """The harness really reports memory errors (a deliberately broken kernel call)."""
    from moec.targets.cpu_harness import SanitizerError
    model = MODELS["broadcast_math"]
    out = str(tmp_path / "a")
    compile_onnx(model, out, CompileOptions(verify=False))
    src = open(os.path.join(out, "model.c")).read()
    # corrupt the generated code: read one element past the end of the input
    src = src.replace("int moec_init_weights(char *err, int errlen) {",
                      "volatile float moec_sink;\nint moec_init_weights(char *err, int errlen) {")
    src = src.replace("  return 0;\nmoec_fail_label:",
                      "  moec_sink = ((float *)in0.data)[in0.numel];\n  return 0;\nmoec_fail_label:")
    open(os.path.join(out, "model.c"), "w").write(src)
    exe = build_harness(out, sanitize=True)
    with pytest.raises(SanitizerError, match="heap-buffer-overflow"):
        run_harness(exe, out, [np.ones((4, 6), np.float32)], 1)


def _cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "moec.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_compile_sanitize_verifies_and_runs(tmp_path):
    """`moec compile --sanitize` (issue 15 item 11): it aborted with "ASan runtime does not come first"
    (the sanitized .so was dlopen'ed into python) and left a broken artifact.  Now verification and
    `moec run` go through the sanitized harness executable built beside model.so."""
    import json
    import onnx
    model = MODELS["gather_scatter"]
    onnx.save(model, str(tmp_path / "m.onnx"))
    art = str(tmp_path / "art")
    p = _cli("compile", str(tmp_path / "m.onnx"), "-o", art, "--sanitize")
    assert p.returncode == 0, p.stderr
    assert "VERIFIED" in p.stdout and "ASan runtime" not in p.stderr, (p.stdout, p.stderr)
    assert json.load(open(os.path.join(art, "report.json")))["verified"] is True
    assert "model_asan" in json.load(open(os.path.join(art, "manifest.json")))["files"]
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(2)]
    for n, x in zip("xz", xs):
        np.save(tmp_path / f"{n}.npy", x)
    p = _cli("run", art, "-i", f"x={tmp_path / 'x.npy'}", "-i", f"z={tmp_path / 'z.npy'}", "-o", str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs[0], "z": xs[1]})
    np.testing.assert_allclose(np.load(tmp_path / "o" / "y.npy"), want[0], rtol=1e-5, atol=1e-6)
    # a bad input is still the model's clear message (exit 2), through the harness
    np.save(tmp_path / "z.npy", xs[1][:3])
    p = _cli("run", art, "-i", f"x={tmp_path / 'x.npy'}", "-i", f"z={tmp_path / 'z.npy'}", "-o", str(tmp_path / "o2"))
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    # and the sanitizer is really on in that path: a corrupted build is reported (exit 3), not run silently
    src = open(os.path.join(art, "model.c")).read()
    src = src.replace("int moec_init_weights(char *err, int errlen) {",
                      "volatile float moec_sink;\nint moec_init_weights(char *err, int errlen) {")
    src = src.replace("  return 0;\nmoec_fail_label:", "  moec_sink = ((float *)in0.data)[in0.numel];\n  return 0;\nmoec_fail_label:")
    open(os.path.join(art, "model.c"), "w").write(src)
    build_harness(art, sanitize=True)
    np.save(tmp_path / "z.npy", xs[1])
    p = _cli("run", art, "-i", f"x={tmp_path / 'x.npy'}", "-i", f"z={tmp_path / 'z.npy'}", "-o", str(tmp_path / "o3"))
    assert p.returncode == 3 and "AddressSanitizer" in p.stderr and "Traceback" not in p.stderr, p.stderr


def _zoo():
    try:
        from zoo import ZOO
        return {e.name: e for e in ZOO}
    except Exception:  # (torch missing: the zoo's torch entries cannot be exported)
        return {}


ZOO_BY_NAME = _zoo()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO_BY_NAME))
def test_zoo_is_ubsan_and_asan_clean(name, tmp_path):
    """Every zoo model, compiled (after the MoE passes: the fused kernels run) into the harness with
    -fsanitize=address,undefined -fno-sanitize-recover: no sanitizer report at several token counts
    (random, identical and single-token inputs, and an empty batch), and the same results as
    onnxruntime."""
    from zoo import zoo_inputs
    e = ZOO_BY_NAME[name]
    model = e.build()
    out = str(tmp_path / "a")
    compile_onnx(model, out, CompileOptions(verify=False))
    exe = build_harness(out, sanitize=True)
    sess = ort.InferenceSession(model.SerializeToString())
    names = [i.name for i in model.graph.input]
    for T, kind in ((6, "random"), (5, "identical"), (1, "single"), (0, "random")):
        feeds = zoo_inputs(e, T, kind)
        for i in model.graph.input:  # (a hand-built graph of another width than the zoo's inputs)
            dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
            x = feeds[i.name]
            if any(d and d != s for d, s in zip(dims[1:], x.shape[1:])):
                x = np.random.default_rng(T).standard_normal((x.shape[0],) + tuple(dims[1:])).astype(x.dtype)
                if kind == "identical" and len(x):
                    x[:] = x[0]
                feeds[i.name] = x
        xs = [feeds[n] for n in names]
        try:
            want = sess.run(None, feeds)
        except Exception:
            if T == 0:
                continue  # (onnxruntime cannot run some exports on an empty batch)
            raise
        got = run_harness(exe, out, xs, len(model.graph.output))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{name} T={T} {kind}")


def test_extreme_range_and_slice_are_ubsan_clean(tmp_path):
    """Range/Slice with INT64 extremes (issue 15 item 14): the old kernels overflowed signed int64
    (UBSan: "9223372036854775807 - -9223372036854775808 cannot be represented"); now clean under
    -fsanitize=undefined -fno-sanitize-recover and equal to onnxruntime."""
    from moec.errors import RuntimeFailure
    from moec.targets.cpu_harness import HarnessRunError
    from test_runtime_hardening import RANGE_CASES, SLICE_STEPS, SLICE_VALUES, _agree
    i64 = np.int64
    rng_model = make_model([helper.make_node("Range", ["s", "l", "d"], ["y"])],
                           [("s", i64, []), ("l", i64, []), ("d", i64, [])], [("y", i64, ["n"])])
    sl_model = make_model([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
                          [("x", np.float32, ["n", 3]), ("st", i64, [1]), ("en", i64, [1]), ("ax", i64, [1]),
                           ("sp", i64, [1])], [("y", np.float32, ["a", "b"])])
    rng = np.random.default_rng(5)
    for name, model, cases in (
            ("range", rng_model, [[np.array(v, i64) for v in c] for c in RANGE_CASES]),
            ("slice", sl_model, [[np.arange(15, dtype=np.float32).reshape(5, 3), np.array([rng.choice(SLICE_VALUES)], i64),
                                  np.array([rng.choice(SLICE_VALUES)], i64), np.array([rng.choice([0, 1, -2])], i64),
                                  np.array([rng.choice(SLICE_STEPS)], i64)] for _ in range(40)])):
        out = str(tmp_path / name)
        compile_onnx(model, out, CompileOptions(verify=False))
        exe = build_harness(out, sanitize=True)

        def run(xs, exe=exe, out=out):
            try:
                return run_harness(exe, out, xs, 1)  # a sanitizer report raises SanitizerError: the test fails
            except HarnessRunError as e:
                raise RuntimeFailure(str(e)) from None

        sess = ort.InferenceSession(model.SerializeToString())
        for xs in cases:
            _agree(run, sess, model, xs)
