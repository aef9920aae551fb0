"""The C runtime with hostile run-time values (issue 15, items 1, 14, 20): shape products that
overflow int64, extreme int64 starts/ends/steps/deltas, absurd sizes.  Each must either match
onnxruntime or be refused with a clear RuntimeFailure (exit 2 from `moec run`), never wrap, read
heap memory or crash."""
import ctypes
import os
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.errors import RuntimeFailure
from moec.targets.registry import CpuArtifact

I64 = np.int64
MIN, MAX = np.iinfo(I64).min, np.iinfo(I64).max
I32MAX = np.iinfo(np.int32).max
RUNTIME = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "codegen", "c", "runtime")


def _compile(model, tmp_path, name):
    out = str(tmp_path / name)
    compile_onnx(model, out, CompileOptions(verify=False, force=True))
    return out, CpuArtifact(out)


def _ort(model):
    so = ort.SessionOptions()
    so.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), so)


def _agree(art, sess, model, xs):
    """moec and onnxruntime agree: same outputs, or both refuse (moec with a RuntimeFailure)."""
    names = [i.name for i in model.graph.input]
    try:
        want = sess.run(None, dict(zip(names, xs)))
    except Exception:
        want = None
    try:
        got = art(xs)
    except RuntimeFailure as e:
        assert want is None, f"moec refused ({e}) but onnxruntime gave {want} for {xs}"
        return "both-refuse"
    assert want is not None, f"onnxruntime refused but moec gave {got} for {xs}"
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (xs, g, w)
        np.testing.assert_array_equal(g, w, err_msg=str(xs))
    return "match"


# -- item 1: the reshape size overflow ------------------------------------------------------------

def _reshape_gather():
    return make_model([helper.make_node("Reshape", ["x", "s"], ["r"]),
                       helper.make_node("Gather", ["r", "i"], ["y"], axis=0)],
                      [("x", np.float32, ["n", 4]), ("s", I64, [2]), ("i", I64, ["k"])],
                      [("y", np.float32, ["k", "m"])])


def _reshape_slice():
    return make_model([helper.make_node("Reshape", ["x", "s"], ["r"]),
                       helper.make_node("Slice", ["r", "st", "en"], ["y"])],
                      [("x", np.float32, ["n", 4]), ("s", I64, [2]), ("st", I64, [2]), ("en", I64, [2])],
                      [("y", np.float32, ["a", "b"])])


def test_reshape_size_overflow_is_refused_not_wrapped(tmp_path):
    """[2^62+1, 4] has 2^64+4 elements: the product wrapped to 4 and Gather returned heap memory."""
    _, art = _compile(_reshape_gather(), tmp_path, "rg")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for shape, idx in [([2**62 + 1, 4], [1, 2]), ([2**62 + 1, 4], [2**40]), ([2**63 - 1, 2**63 - 1], [0]),
                       ([-1, 2**62], [0]), ([2**32, 2**32 + 3], [0])]:
        with pytest.raises(RuntimeFailure, match="too large|larger than|limit"):
            art([x, np.array(shape, I64), np.array(idx, I64)])
    # the ordinary case still works
    y = art([x, np.array([6, 2], I64), np.array([5, 0], I64)])[0]
    np.testing.assert_array_equal(y, x.reshape(6, 2)[[5, 0]])
    _, art2 = _compile(_reshape_slice(), tmp_path, "rs")
    with pytest.raises(RuntimeFailure, match="too large|larger than|limit"):
        art2([x, np.array([2**62 + 1, 4], I64), np.array([0, 0], I64), np.array([2**62, 4], I64)])


def test_reshape_overflow_from_the_cli_is_exit_2(tmp_path):
    model = _reshape_gather()
    import onnx
    onnx.save(model, str(tmp_path / "m.onnx"))
    art = str(tmp_path / "art")
    p = subprocess.run([sys.executable, "-m", "moec.cli", "compile", str(tmp_path / "m.onnx"), "-o", art,
                        "--no-verify"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    np.save(tmp_path / "x.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "s.npy", np.array([2**62 + 1, 4], I64))
    np.save(tmp_path / "i.npy", np.array([1, 2], I64))
    p = subprocess.run([sys.executable, "-m", "moec.cli", "run", art, "-i", f"x={tmp_path / 'x.npy'}",
                        "-i", f"s={tmp_path / 's.npy'}", "-i", f"i={tmp_path / 'i.npy'}", "-o", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if "error" in ln]  # (an "unverified" warning may precede)
    assert len(lines) == 1 and "moec run: error:" in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert "4611686018427387905" in lines[0]  # the offending shape is named


def test_input_whose_shape_product_wraps_is_refused(tmp_path):
    """A caller of the library (ctypes, the harness) passing shape [2^62+1, 4] with numel 4: the
    input check must not accept the wrapped count."""
    from moec.targets.cpu import CTensor
    out, art = _compile(_reshape_gather(), tmp_path, "rg")
    lib = art.lib.lib
    x = np.zeros(16, np.float32)
    ins = (CTensor * 3)()
    ins[0].data = x.ctypes.data
    ins[0].shape[0], ins[0].shape[1] = 2**62 + 1, 4
    ins[0].numel, ins[0].rank, ins[0].dtype = 4, 2, 1
    s = np.array([4, 4], I64)
    i = np.array([0], I64)
    for k, a in ((1, s), (2, i)):
        ins[k].data = a.ctypes.data
        ins[k].shape[0], ins[k].numel, ins[k].rank, ins[k].dtype = a.size, a.size, 1, 4
    outs = (CTensor * 1)()
    err = ctypes.create_string_buffer(2048)
    rc = lib.moec_run(ins, 3, outs, 1, 1, err, 2048)
    assert rc != 0 and b"invalid shape" in err.value, err.value
    ins[0].shape[0] = -4  # negative dims: (-4) * (-1) * 4 ... also refused
    ins[0].shape[1] = -1
    rc = lib.moec_run(ins, 3, outs, 1, 1, err, 2048)
    assert rc != 0 and b"invalid shape" in err.value, err.value


@pytest.mark.parametrize("case", ["tile", "expand", "constant_of_shape", "concat"])
def test_size_products_from_values_are_checked(case, tmp_path):
    if case == "tile":
        model = make_model([helper.make_node("Tile", ["x", "r"], ["y"])], [("x", np.float32, ["n", 4]), ("r", I64, [2])],
                           [("y", np.float32, ["a", "b"])])
        bad = [[np.ones((3, 4), np.float32), np.array([2**62, 2**2], I64)],
               [np.ones((3, 4), np.float32), np.array([MAX, 1], I64)],
               [np.zeros((0, 4), np.float32), np.array([5, 2**61], I64)],
               [np.ones((3, 4), np.float32), np.array([6148914691236517206, 1], I64)]]  # 3 x that = 2^64 + 2
        good = [np.ones((3, 4), np.float32), np.array([2, 3], I64)]
    elif case == "expand":
        model = make_model([helper.make_node("Expand", ["x", "s"], ["y"])], [("x", np.float32, ["n", 1]), ("s", I64, [3])],
                           [("y", np.float32, ["a", "b", "c"])])
        bad = [[np.ones((3, 1), np.float32), np.array([2**40, 3, 2**40], I64)],
               [np.ones((3, 1), np.float32), np.array([0, 3, MAX], I64)]]
        good = [np.ones((3, 1), np.float32), np.array([2, 3, 5], I64)]
    elif case == "constant_of_shape":
        model = make_model([helper.make_node("ConstantOfShape", ["s"], ["y"])], [("s", I64, [2])],
                           [("y", np.float32, ["a", "b"])])
        bad = [[np.array([0, MAX], I64)], [np.array([2**31, 2**31], I64)], [np.array([3, -1], I64)]]
        good = [np.array([2, 3], I64)]
    else:
        model = make_model([helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Concat", ["sh", "s"], ["c"], axis=0),
                            helper.make_node("ConstantOfShape", ["c"], ["y"])],
                           [("x", np.float32, ["n", 4]), ("s", I64, [1])], [("y", np.float32, ["a", "b", "c"])])
        bad = [[np.ones((2**20, 4), np.float32), np.array([2**19], I64)]]
        good = [np.ones((2, 4), np.float32), np.array([3], I64)]
    _, art = _compile(model, tmp_path, case)
    sess = _ort(model)
    for xs in bad:
        with pytest.raises(RuntimeFailure, match="too large|larger than|limit|negative"):
            art(xs)
    assert _agree(art, sess, model, good) == "match"


# -- item 14: Range and Slice with extreme int64 values ------------------------------------------

RANGE_CASES = [(MIN, MAX, MAX), (MAX - 1, MIN, 1), (-5, MAX, 2**62), (0, 2**62 + 1, 2**61), (MAX, MIN, MIN),
               (MIN, MAX, 2**62), (MAX - 2, MAX, 1), (MIN, MIN + 3, 1), (5, MIN, -(2**62)), (0, 10, MIN), (0, -10, MIN),
               (0, 3 * 2**60 + 1, 2**60), (MAX, MAX, 1), (MIN, MAX, 1), (MAX, MIN, -1), (0, 10, 0), (3, 9, 3),
               (10, 4, -2), (MIN, MIN, MIN), (MAX, MIN, MAX)]


def test_range_extreme_int64_matches_onnxruntime(tmp_path):
    model = make_model([helper.make_node("Range", ["s", "l", "d"], ["y"])], [("s", I64, []), ("l", I64, []), ("d", I64, [])],
                       [("y", I64, ["n"])])
    _, art = _compile(model, tmp_path, "range")
    sess = _ort(model)
    seen = {"match": 0, "both-refuse": 0}
    for s, l, d in RANGE_CASES:
        seen[_agree(art, sess, model, [np.array(s, I64), np.array(l, I64), np.array(d, I64)])] += 1
    assert seen["match"] >= 14, seen


@pytest.mark.parametrize("dt", [np.int32, np.int16, np.float32, np.float64])
def test_range_extremes_other_types_match_onnxruntime(dt, tmp_path):
    model = make_model([helper.make_node("Range", ["s", "l", "d"], ["y"])], [("s", dt, []), ("l", dt, []), ("d", dt, [])],
                       [("y", dt, ["n"])])
    _, art = _compile(model, tmp_path, "range_" + np.dtype(dt).name)
    sess = _ort(model)
    if np.issubdtype(dt, np.integer):
        lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
        cases = [(lo, hi, hi), (hi, lo, lo), (lo, hi, 1000 if dt == np.int16 else 2**28), (hi - 1, lo, 1), (0, 7, 2)]
    else:
        cases = [(0.1, 1000.3, 0.1), (-1e-8, 1, 0.25), (np.nan, 1, 1), (0, np.inf, 1), (0, 1, np.inf), (0, 1, np.nan),
                 (0, 1e30, 1e-30), (5, -5, -0.5), (1, 1, 1)]
    for s, l, d in cases:
        _agree(art, sess, model, [np.array(s, dt), np.array(l, dt), np.array(d, dt)])


SLICE_VALUES = [MIN, MIN + 1, -2**62, -(2**31), -7, -6, -5, -1, 0, 1, 4, 5, 6, I32MAX, I32MAX + 1, 2**62, MAX - 1, MAX]
SLICE_STEPS = [MIN, -(2**62), -6, -5, -2, -1, 1, 2, 5, 6, 2**62, MAX]


def test_slice_extreme_int64_matches_onnxruntime(tmp_path):
    model = make_model([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
                       [("x", np.float32, ["n"]), ("st", I64, [1]), ("en", I64, [1]), ("ax", I64, [1]), ("sp", I64, [1])],
                       [("y", np.float32, ["m"])])
    _, art = _compile(model, tmp_path, "slice")
    sess = _ort(model)
    rng = np.random.default_rng(0)
    n_match = 0
    for n in (5, 0, 1):
        x = np.arange(n, dtype=np.float32)
        for _ in range(150):
            s, e = rng.choice(SLICE_VALUES, 2)
            k = rng.choice(SLICE_STEPS)
            r = _agree(art, sess, model, [x, np.array([s], I64), np.array([e], I64), np.array([0], I64), np.array([k], I64)])
            n_match += r == "match"
    assert n_match >= 400


# -- the class: no raw products of dimensions in the runtime sources ------------------------------

def test_runtime_has_no_unchecked_dimension_products():
    """Products of dims go through moec_dims_prod / moec_mul_size / moec_shape_numel (rt_core.c)."""
    bad = []
    # x *= shape[i], shape[i] * y, y * t->shape[i]; a small literal factor (2 * shape[i]) is fine: dims <= 2^40
    pat = re.compile(r"(\*=\s*[\w>\-.]*(shape|dims?|d)\[)|(shape\[[^\]]*\]\s*\*\s*(?!\d{1,2}\b))"
                     r"|((?<!\b\d)(?<!\b\d\d)\s\*\s*[\w>\-.]*->shape\[)")
    for fn in sorted(os.listdir(RUNTIME)):
        if not fn.endswith((".c", ".h")):
            continue
        for i, line in enumerate(open(os.path.join(RUNTIME, fn)), 1):
            code = re.sub(r"/\*.*?(\*/|$)", "", line.split("//")[0])
            if code.lstrip().startswith("*"):
                continue
            if pat.search(code):
                bad.append(f"{fn}:{i}: {line.strip()}")
    assert not bad, "raw products of dimensions:\n" + "\n".join(bad)


# -- item 20: bad sizes are exit 2 with one clear line -------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "moec.cli", *args], capture_output=True, text=True, timeout=600)


def _one_error_line(p):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    errs = [ln for ln in p.stderr.strip().splitlines() if "error" in ln]
    assert len(errs) == 1, p.stderr
    return errs[0]


@pytest.mark.parametrize("case", ["negative_dim", "huge_static", "constant_of_shape_0_max"])
def test_bad_static_sizes_are_exit_2(case, tmp_path):
    import onnx
    if case == "negative_dim":
        m = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, [-3, 4])], [("y", np.float32, [-3, 4])])
        want = "negative"
    elif case == "huge_static":
        m = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, [2**31, 2**20])],
                       [("y", np.float32, [2**31, 2**20])])
        want = "too large"
    else:
        m = make_model([helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["x", "c"], ["y"])],
                       [("x", np.float32, ["n", 1])], [("y", np.float32, ["a", "b"])], {"s": np.array([0, MAX], I64)})
        want = "too large"
    onnx.save(m, str(tmp_path / "m.onnx"))
    line = _one_error_line(_cli("compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "art")))
    assert want in line, line


def _npy_with_header(path, shape, descr="<f4", data=b"\0" * 12, fortran=False):
    hdr = "{'descr': '%s', 'fortran_order': %s, 'shape': %r, }" % (descr, fortran, tuple(shape))
    hdr = hdr + " " * (((len(hdr) + 11) // 64 + 1) * 64 - 11 - len(hdr)) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + data)


def test_npy_inputs_with_lying_headers_are_exit_2(tmp_path):
    """`moec run --input` with a .npy whose header claims 10^12 elements was a MemoryError (exit 3):
    the header is now checked against the limit and the file size before anything is allocated."""
    import onnx
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, ["n", 3])], [("y", np.float32, ["n", 3])])
    onnx.save(m, str(tmp_path / "m.onnx"))
    art = str(tmp_path / "art")
    assert _cli("compile", str(tmp_path / "m.onnx"), "-o", art, "--no-verify").returncode == 0
    cases = {"claims_1e12": dict(shape=(10**12,)), "claims_1e12_2d": dict(shape=(10**6, 10**6)),
             "claims_2_62": dict(shape=(2**62, 3)), "truncated": dict(shape=(4, 3)),
             "too_long": dict(shape=(1, 3), data=b"\0" * 40), "object": dict(shape=(4,), descr="|O")}
    for name, kw in cases.items():
        p = tmp_path / f"{name}.npy"
        _npy_with_header(p, **kw)
        line = _one_error_line(_cli("run", art, "-i", f"x={p}", "-o", str(tmp_path / "o")))
        assert "input 'x'" in line, (name, line)
    np.save(tmp_path / "ok.npy", np.arange(6, dtype=np.float32).reshape(2, 3) - 3)
    p = _cli("run", art, "-i", f"x={tmp_path / 'ok.npy'}", "-o", str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "y.npy"), np.maximum(np.arange(6).reshape(2, 3) - 3, 0))


def test_load_npy_input_reads_what_np_save_wrote(tmp_path):
    from moec.npy_input import load_npy_input
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
              np.array(5, np.int32), np.zeros((0, 7), np.float16), np.array([True, False]), np.arange(4, dtype=">i4")]
    for i, a in enumerate(arrays):
        p = str(tmp_path / f"a{i}.npy")
        np.save(p, a)
        got = load_npy_input(p, "x")
        assert got.shape == a.shape and got.dtype == a.dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got, a)


def test_reference_slice_and_range_match_onnxruntime_at_extremes(tmp_path):
    """The same rules hold where the IR reference computes them: constant slice parameters give a
    static result shape (infer_types, slice_params) and constant Range inputs are folded (reference),
    so a compiled model must verify against onnxruntime: an end of INT64_MAX stepping backwards is
    "to the beginning" (the reference made it empty), a start below -d stepping backwards is 0, f32
    Range accumulates in f32."""
    from moec.ir.ops.shape import slice_params
    so = ort.SessionOptions()
    so.log_severity_level = 4
    model = make_model([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
                       [("x", np.float32, ["n"]), ("st", I64, [1]), ("en", I64, [1]), ("ax", I64, [1]), ("sp", I64, [1])],
                       [("y", np.float32, ["m"])])
    sess = ort.InferenceSession(model.SerializeToString(), so)
    for n in (0, 1, 5):
        x = np.arange(n, dtype=np.float32)
        for s in SLICE_VALUES:
            for e in SLICE_VALUES:
                for k in SLICE_STEPS:
                    want = sess.run(None, {"x": x, "st": np.array([s], I64), "en": np.array([e], I64),
                                           "ax": np.array([0], I64), "sp": np.array([k], I64)})[0]
                    (s0, cnt, st), = slice_params([n], [int(s)], [int(e)], [0], [int(k)])
                    got = x[slice(s0, s0 + cnt * st if s0 + cnt * st >= 0 else None, st)]
                    assert np.array_equal(got, want), (n, s, e, k, got, want)
    # and end to end: constants folded or giving static shapes, verified against onnxruntime
    m2 = make_model([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["a"]),
                     helper.make_node("Range", ["rs", "rl", "rd"], ["r"]),
                     helper.make_node("Range", ["fs", "fl", "fd"], ["rf"])],
                    [("x", np.float32, ["n", 5])], [("a", np.float32, ["n", "m"]), ("r", I64, ["k"]), ("rf", np.float32, ["j"])],
                    {"st": np.array([-1], I64), "en": np.array([MAX], I64), "ax": np.array([1], I64), "sp": np.array([-1], I64),
                     "rs": np.array(MIN, I64), "rl": np.array(MAX, I64), "rd": np.array(MAX, I64),
                     "fs": np.array(-1e-8, np.float32), "fl": np.array(1, np.float32), "fd": np.array(0.25, np.float32)})
    r = compile_onnx(m2, str(tmp_path / "c"), CompileOptions(force=True))
    assert r.report["verified"] and r.report["oracle"] == "onnxruntime", r.report.get("failure")


def test_verification_out_of_memory_is_exit_2(tmp_path):
    """Static dims within the runtime's limit but far beyond memory ([2^20, 2^19] f32 = 2 TiB):
    verification's input arrays were a MemoryError (exit 3).  Run under an address-space cap so the
    result does not depend on the machine's overcommit policy."""
    import onnx
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))

    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", np.float32, [2**20, 2**19])],
                   [("y", np.float32, [2**20, 2**19])])
    onnx.save(m, str(tmp_path / "m.onnx"))
    p = subprocess.run([sys.executable, "-m", "moec.cli", "compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "a")],
                       capture_output=True, text=True, timeout=600, preexec_fn=cap)
    line = _one_error_line(p)
    assert "out of memory" in line and "--no-verify" in line, line


@pytest.mark.parametrize("block", [2**62, MAX])
def test_dispatch_block_attribute_from_ir_text_is_checked(block, tmp_path):
    """IR text is an input too: moe.dispatch's block padding (count rounded up to a multiple of
    block) overflowed int64 for a huge block attribute."""
    from moec.driver import build_module
    from moec.ir import parse_module
    text = f'''module {{
  func.func @main(%ids: tensor<?x1xi64, "T">) -> (tensor<?xi64>, tensor<3xi64>) attributes {{moec.inputs = ["ids"], moec.outputs = ["order", "offsets"]}} {{
    %p:2 = "moe.dispatch"(%ids) {{block = {block} : i64, num_experts = 2 : i64}} : (tensor<?x1xi64, "T">) -> (tensor<?xi64>, tensor<3xi64>)
    func.return %p#0, %p#1 : tensor<?xi64>, tensor<3xi64>
  }}
}}
'''
    art = build_module(parse_module(text), str(tmp_path / "d"))
    with pytest.raises(RuntimeFailure, match="larger than|limit"):
        art([np.array([[0], [1], [1]], I64)])
    text2 = text.replace(f"block = {block}", "block = 4")
    art2 = build_module(parse_module(text2), str(tmp_path / "d2"))
    order, offsets = art2([np.array([[0], [1], [1]], I64)])
    np.testing.assert_array_equal(offsets, [0, 4, 8])
    np.testing.assert_array_equal(order, [0, -1, -1, -1, 1, 2, -1, -1])


@pytest.mark.parametrize("case", ["one_hot", "einsum"])
def test_results_above_the_maximum_rank_are_refused(case, tmp_path):
    """OneHot of rank-8 indices and an einsum with a 9-D output wrote a 9th entry into a shape array
    of MOEC_MAX_RANK (8) on the stack before the allocation refused the rank (silent in a plain build:
    run under ASan, where the stack-buffer-overflow is a report)."""
    from moec.errors import MoecError
    from moec.targets.cpu_harness import HarnessRunError, build_harness, run_harness
    if case == "one_hot":
        m = make_model([helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=-1)], [("i", I64, [1] * 8)],
                       [("y", np.float32, [1] * 8 + [3])], {"d": np.array(3, I64), "v": np.array([0, 1], np.float32)})
        xs = [np.zeros([1] * 8, I64)]
    else:
        m = make_model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="abcd,efghi->abcdefghi")],
                       [("a", np.float32, [1, 1, 1, 2]), ("b", np.float32, [1, 1, 1, 1, 2])],
                       [("y", np.float32, [1, 1, 1, 2, 1, 1, 1, 1, 2])])
        xs = [np.ones((1, 1, 1, 2), np.float32), np.ones((1, 1, 1, 1, 2), np.float32)]
    try:
        out, art = _compile(m, tmp_path, case)
    except MoecError:
        return  # refused at compile time: fine too
    with pytest.raises(RuntimeFailure, match="rank|too large"):
        art(xs)
    exe = build_harness(out, sanitize=True)
    with pytest.raises(HarnessRunError, match="rank|too large"):  # (a sanitizer report is SanitizerError)
        run_harness(exe, out, xs, 1)


def test_static_numel_of_ir_types_does_not_wrap():
    """TensorType.numel took np.prod in int64: a [2^62+1, 4] type had 4 elements (16 bytes of
    storage).  (The IR parser refuses such a type in text now; the API builds types directly.)"""
    from moec.ir import DType, TensorType
    t = TensorType(DType.F32, (2**62 + 1, 4))
    assert t.numel() == (2**62 + 1) * 4 and t.storage_bytes() == (2**62 + 1) * 16
