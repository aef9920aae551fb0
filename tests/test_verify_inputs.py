"""Verification inputs (issue 15 item 23): integer inputs are drawn from the values the model accepts
(moec.verify.int_input_plan), and the user can give inputs (--inputs FILE.npz, example_inputs=...) where
moec cannot derive them.  The .npz file is untrusted: names, dtypes, ranks and sizes are checked, no
pickles are read, sizes are bounded."""
import io
import json
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import make_model
from moec.cli import main
from moec.driver import CompileOptions, compile_onnx
from moec.errors import UserInputError

I64 = np.int64
F32 = np.float32


def _c(name, arr):
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.asarray(arr), name))


# models whose integer inputs are valid only in part of [0, 4) (or outside it): each must verify
def _int_div():
    return make_model([helper.make_node("Div", ["a", "b"], ["y"])], [("a", I64, ["T", 3]), ("b", I64, ["T", 3])],
                      [("y", I64, ["T", 3])], name="int_div")


def _slice_step():
    return make_model([_c("st", [0]), _c("en", [6]), _c("ax", [1]),
                       helper.make_node("Slice", ["x", "st", "en", "ax", "steps"], ["y"])],
                      [("x", F32, ["T", 6]), ("steps", I64, [1])], [("y", F32, ["T", None])], name="slice_step")


def _reshape_in():
    return make_model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                      [("x", F32, ["T", 4]), ("shape", I64, [2])], [("y", F32, [None, None])], name="reshape_in")


def _gather_in():
    data = np.arange(20, dtype=F32).reshape(5, 4)
    return make_model([helper.make_node("Gather", ["data", "idx"], ["y"], axis=0)], [("idx", I64, ["T"])],
                      [("y", F32, ["T", 4])], {"data": data}, name="gather_in")


def _topk_k():
    return make_model([helper.make_node("TopK", ["x", "k"], ["v", "i"])], [("x", F32, ["T", 6]), ("k", I64, [1])],
                      [("v", F32, ["T", None]), ("i", I64, ["T", None])], name="topk_k")


def _expand_in():
    return make_model([helper.make_node("Expand", ["x", "shape"], ["y"])],
                      [("x", F32, ["T", 1]), ("shape", I64, [2])], [("y", F32, [None, None])], name="expand_in")


def _tile_in():
    return make_model([helper.make_node("Tile", ["x", "reps"], ["y"])], [("x", F32, ["T", 2]), ("reps", I64, [2])],
                      [("y", F32, [None, None])], name="tile_in")


def _gather_elements():
    return make_model([helper.make_node("GatherElements", ["x", "idx"], ["y"], axis=1)],
                      [("x", F32, ["T", 5]), ("idx", I64, ["T", 3])], [("y", F32, ["T", 3])], name="gather_elements")


def _scatter_elements():
    return make_model([helper.make_node("ScatterElements", ["x", "idx", "u"], ["y"], axis=1)],
                      [("x", F32, ["T", 5]), ("idx", I64, ["T", 1]), ("u", F32, ["T", 1])], [("y", F32, ["T", 5])],
                      name="scatter_elements")


def _gather_nd():
    return make_model([helper.make_node("GatherND", ["x", "idx"], ["y"])], [("x", F32, [4, 5]), ("idx", I64, ["T", 2])],
                      [("y", F32, ["T"])], name="gather_nd")


def _cumsum_axis():
    return make_model([helper.make_node("CumSum", ["x", "ax"], ["y"])], [("x", F32, ["T", 5]), ("ax", I64, [])],
                      [("y", F32, ["T", 5])], name="cumsum_axis")


def _split_sizes():
    return make_model([helper.make_node("Split", ["x", "s"], ["y1", "y2"], axis=1)],
                      [("x", F32, ["T", 5]), ("s", I64, [2])], [("y1", F32, ["T", None]), ("y2", F32, ["T", None])],
                      name="split_sizes")


def _range_in():
    return make_model([helper.make_node("Range", ["a", "b", "d"], ["y"])], [("a", I64, []), ("b", I64, []), ("d", I64, [])],
                      [("y", I64, [None])], name="range_in")


def _underivable():
    """The reshape target is computed from the input: moec cannot tell which values are valid."""
    return make_model([_c("one", np.array([1, 1], I64)), helper.make_node("Add", ["s", "one"], ["shape"]),
                       helper.make_node("Reshape", ["x", "shape"], ["y"])],
                      [("x", F32, ["T", 4]), ("s", I64, [2])], [("y", F32, [None, None])], name="underivable")


MODELS = {"int_div": (_int_div, {"b": "nonzero", "a": None}), "slice_step": (_slice_step, {"steps": "step"}),
          "reshape_in": (_reshape_in, {"shape": "reshape"}), "gather_in": (_gather_in, {"idx": "index"}),
          "topk_k": (_topk_k, {"k": "k"}), "expand_in": (_expand_in, {"shape": "expand"}),
          "tile_in": (_tile_in, {"reps": "positive"}), "gather_elements": (_gather_elements, {"idx": "index"}),
          "scatter_elements": (_scatter_elements, {"idx": "index"}), "gather_nd": (_gather_nd, {"idx": "index_nd"}),
          "cumsum_axis": (_cumsum_axis, {"ax": "axis"}), "split_sizes": (_split_sizes, {"s": "split"}),
          "range_in": (_range_in, {"a": None, "b": None, "d": "positive"})}


def _plan(model):
    from moec.frontend.onnx_import import import_model
    from moec.verify import int_input_plan
    f = import_model(model).main
    plan, unknown = int_input_plan(f)
    kinds = {n: (plan[id(a)][0] if plan[id(a)] is not None else None)
             for n, a in zip(f.arg_names, f.args) if id(a) in plan}
    return f, kinds, unknown


@pytest.mark.parametrize("name", sorted(MODELS))
def test_integer_inputs_are_drawn_from_their_valid_values(name, tmp_path):
    build, want = MODELS[name]
    m = build()
    f, kinds, unknown = _plan(m)
    assert unknown == {} and kinds == want, (kinds, unknown)
    r = compile_onnx(m, str(tmp_path / "o"), CompileOptions(force=True))
    assert r.report["verified"], r.report.get("failure")
    assert r.report["oracle"] == "onnxruntime"


def test_generated_values_cover_the_domain():
    """Indices reach negative values, divisors and steps are never 0 but take both signs, a reshape target
    always fits the data."""
    from moec.verify import make_inputs
    seen = {"idx": set(), "b": set(), "steps": set()}
    for seed in range(40):
        for name, key in (("gather_in", "idx"), ("int_div", "b"), ("slice_step", "steps")):
            f, _, _ = _plan(MODELS[name][0]())
            xs = dict(zip(f.arg_names, make_inputs(f, {"T": 7}, seed=seed)))
            seen[key] |= set(xs[key].reshape(-1).tolist())
        f, _, _ = _plan(_reshape_in())
        x, shape = make_inputs(f, {"T": 3}, seed=seed)
        np.empty(x.shape).reshape(tuple(shape))  # (raises if the target does not fit)
    assert min(seen["idx"]) == -5 and max(seen["idx"]) == 4
    assert 0 not in seen["b"] and min(seen["b"]) < 0 < max(seen["b"])
    assert 0 not in seen["steps"] and min(seen["steps"]) < 0 < max(seen["steps"])


def _good_underivable_inputs(T=3):
    return {"x": np.arange(T * 4, dtype=F32).reshape(T, 4), "s": np.array([T * 2 - 1, 1], I64)}


def test_underivable_input_fails_with_a_hint_then_verifies_with_user_inputs(tmp_path):
    m = _underivable()
    _, _, unknown = _plan(m)
    assert set(unknown) == {"s"} and "through other ops" in unknown["s"]
    # no oracle can run the model on the values drawn: nothing disagreed, the inputs are missing (exit 2)
    with pytest.raises(UserInputError, match=r"no oracle could run the model.*could not derive valid values for "
                                             r"integer input.*'s'.*--inputs"):
        compile_onnx(m, str(tmp_path / "o1"), CompileOptions(force=True))
    r = compile_onnx(m, str(tmp_path / "o2"), CompileOptions(force=True, inputs=[_good_underivable_inputs()]))
    assert r.report["verified"] and [t["kind"] for t in r.report["trials"]] == ["user"]
    assert r.report["shapes_tried"] == [{"x": [3, 4], "s": [2]}]


def test_user_inputs_are_extra_trials_when_moec_can_derive_the_rest(tmp_path):
    m = _int_div()
    given = {"a": np.array([[7, -7, 9]], I64), "b": np.array([[2, 2, -4]], I64)}
    r = compile_onnx(m, str(tmp_path / "o"), CompileOptions(force=True, inputs=[given]))
    kinds = [t["kind"] for t in r.report["trials"]]
    assert r.report["verified"] and kinds[0] == "user" and "random" in kinds


def test_cli_inputs_file(tmp_path, capsys):
    p = tmp_path / "m.onnx"
    onnx.save(_underivable(), str(p))
    npz = tmp_path / "in.npz"
    np.savez(npz, **_good_underivable_inputs(5))
    assert main(["compile", str(p), "-o", str(tmp_path / "out"), "--inputs", str(npz)]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    rep = json.load(open(tmp_path / "out" / "report.json"))
    assert rep["verified"] and [t["kind"] for t in rep["trials"]] == ["user"]
    # without the file: no oracle can run the model on drawn values (exit 2, not a failed check), and the
    # message says how to fix it
    assert main(["compile", str(p), "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "--inputs FILE.npz" in err and "'s'" in err


def _npz_bytes(**arrays):
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


def _bad_npz_files(tmp_path):
    good = _good_underivable_inputs()
    cases = {
        "unknown_name": (_npz_bytes(**good, extra=np.zeros(1, F32)), "'extra' is not an input"),
        "missing": (_npz_bytes(x=good["x"]), "no value for input(s) s"),
        "dtype": (_npz_bytes(x=good["x"], s=good["s"].astype(np.int32)), "input 's' is int32"),
        "rank": (_npz_bytes(x=good["x"].reshape(-1), s=good["s"]), "input 'x' has rank 1"),
        "static_dim": (_npz_bytes(x=np.zeros((3, 5), F32), s=good["s"]), "input 'x' has 5 at dim 1"),
        "not_zip": (b"this is not a zip file", "not a valid .npz"),
        "truncated": (_npz_bytes(**good)[:60], "not a valid .npz"),
        "pickle": (_npz_bytes(x=good["x"], s=np.array([object()], dtype=object)), "Python objects"),
        "not_npy": (None, "is not a .npy array"),
        "huge_header": (None, "claims"),
        "newline_name": (_npz_bytes(**{**good, "a\nb": np.zeros(1, F32)}), "'a\\x0ab' is not an input"),
    }
    out = {}
    for k, v in cases.items():
        path = tmp_path / f"{k}.npz"
        if k == "not_npy":
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("x.txt", "hello")
        elif k == "huge_header":  # a header claiming 10^12 elements in a tiny member
            hdr = io.BytesIO()
            np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False,
                                                       "shape": (10 ** 6, 10 ** 6)})
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("x.npy", hdr.getvalue() + b"\0" * 16)  # (the header writer puts the magic first)
                z.writestr("s.npy", _npy(good["s"]))
        else:
            path.write_bytes(v[0])
        out[k] = (path, v[1])
    return out


def _npy(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def test_bad_inputs_file_is_exit_2_with_one_line(tmp_path, capsys):
    p = tmp_path / "m.onnx"
    onnx.save(_underivable(), str(p))
    for k, (path, want) in _bad_npz_files(tmp_path).items():
        out = tmp_path / f"out_{k}"
        rc = main(["compile", str(p), "-o", str(out), "--inputs", str(path)])
        err = capsys.readouterr().err
        assert rc == 2, (k, err)
        assert want in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (k, err)
        assert not out.exists(), k  # nothing published for a bad input
    rc = main(["compile", str(p), "-o", str(tmp_path / "o_missing"), "--inputs", str(tmp_path / "nope.npz")])
    assert rc == 2 and "cannot read it" in capsys.readouterr().err


def test_user_inputs_with_inconsistent_symbolic_dims(tmp_path):
    m = _int_div()
    given = {"a": np.zeros((2, 3), I64), "b": np.ones((4, 3), I64)}
    with pytest.raises(UserInputError, match="dim 'T' is 2 in one input and 4"):
        compile_onnx(m, str(tmp_path / "o"), CompileOptions(force=True, inputs=[given]))


def test_api_example_inputs_for_onnx(moec_cache):
    import moec
    m = _underivable()
    with pytest.raises(UserInputError, match="example_inputs"):
        moec.compile(m, cache=False)
    cm = moec.compile(m, example_inputs=_good_underivable_inputs(), cache=False)
    assert cm.stats.verified
    y = cm(np.ones((2, 4), F32), np.array([3, 1], I64))
    assert np.asarray(y).shape == (4, 2)
    with pytest.raises(UserInputError, match="'nope' is not an input"):
        moec.compile(m, example_inputs={"nope": np.zeros(1)}, cache=False)
    # a positional set, and a list of sets
    assert moec.compile(m, example_inputs=list(_good_underivable_inputs(2).values()), cache=False).stats.verified
    assert moec.compile(m, example_inputs=[_good_underivable_inputs(2), _good_underivable_inputs(4)],
                        cache=False).stats.verified


def test_api_example_inputs_are_part_of_the_cache_key(moec_cache):
    import moec
    m = _underivable()
    a = moec.compile(m, example_inputs=_good_underivable_inputs(3))
    b = moec.compile(m, example_inputs=_good_underivable_inputs(3))
    c = moec.compile(m, example_inputs=_good_underivable_inputs(5))
    assert not a.stats.cache_hit and b.stats.cache_hit and not c.stats.cache_hit
    assert c.stats.verified


def _row_one_model():
    """y = x + x[1]: defined for T >= 2 only (Gather of row 1 is out of range at T = 1, in onnxruntime and in the
    ONNX semantics), like a TorchScript export of transformers' expert loop, which fails at 1 token."""
    return make_model([helper.make_node("Gather", ["x", "one"], ["r"], axis=0),
                       helper.make_node("Add", ["x", "r"], ["y"])],
                      [("x", np.float32, ["T", 4])], [("y", np.float32, ["T", 4])],
                      {"one": np.array([1], np.int64)})


def test_shapes_where_the_model_itself_does_not_run_are_reported_not_failed(tmp_path, capsys):
    p = tmp_path / "m.onnx"
    onnx.save(_row_one_model(), str(p))
    assert main(["compile", str(p), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "VERIFIED" in out and "not verified at x[1, 4]: the model itself does not run there" in out
    rep = json.load(open(tmp_path / "out" / "report.json"))
    assert rep["verified"] and rep["model_undefined_at"][0]["shapes"] == {"x": [1, 4]}
    assert all(t["shapes"]["x"][0] >= 2 for t in rep["trials"]) and rep["trials"]
    assert {"x": [1, 4]} not in rep["shapes_tried"]
    # only shapes where it does not run: exit 2, as before
    assert main(["compile", str(p), "-o", str(tmp_path / "out2"), "--sizes", "1"]) == 2
    assert "no oracle could run the model" in capsys.readouterr().err
