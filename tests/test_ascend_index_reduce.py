"""Ascend target (issue 16 item 6): the index ops that stayed on the host now run on vec_index (the AI core's scalar
unit, codegen/ascend/index_ops.py):

- ScatterElements with a reduction (add, mul, max, min) of f32 / f16 / bf16 / i64 / i32 values: applied in index
  order, so duplicate indices accumulate every update in turn, as the op's numpy semantics do;
- TopK whose k is a run-time value (a model input), outside the fused router: k read back once the kernels before
  have run, checked against [0, L] (k = 0 gives empty results, k = L the whole row sorted).

Each against the IR's reference (numpy), bit for bit, besides the compile's own verification against onnxruntime."""
import json
import os

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.targets.registry import get_backend


def _build(nodes, ins, outs, consts, name, tmp_path, host=()):
    m = make_model(nodes, ins, outs, consts, name=name)
    out = str(tmp_path / "out")
    r = compile_onnx(m, out, CompileOptions(target="ascend"))
    assert r.report["verified"], r.report.get("failure")
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        plan = json.load(f)
    assert sorted(plan["host_ops"]) == sorted(host), plan["host_ops"]
    return get_backend("ascend", "Ascend910B2").load(out), plan


def _scatter_ref(data, idx, upd, axis, red):
    from moec.ir.ops.index import ScatterElementsOp
    return ScatterElementsOp.reference(type("O", (), {"attrs": {"axis": axis, "reduction": red}})(), data, idx, upd)[0]


@pytest.mark.parametrize("red", ["add", "mul", "max", "min"])
def test_scatter_elements_reduction_with_duplicates(red, tmp_path):
    nodes = [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1, reduction=red),
             helper.make_node("ScatterElements", ["n", "j", "v"], ["z"], axis=0, reduction=red),
             helper.make_node("ScatterElements", ["h", "i", "g"], ["w"], axis=1, reduction=red)]
    art, plan = _build(nodes, [("x", np.float32, [3, 8, 2]), ("i", np.int64, [3, 5, 2]), ("u", np.float32, [3, 5, 2]),
                               ("n", np.int64, [4, 3]), ("j", np.int32, [6, 3]), ("v", np.int64, [6, 3]),
                               ("h", np.float16, [3, 8, 2]), ("g", np.float16, [3, 5, 2])],
                       [("y", np.float32, None), ("z", np.int64, None), ("w", np.float16, None)], {},
                       f"scatter_{red}", tmp_path)
    assert sum(st["op"] == "moec.scatter_elements" and st["where"] == "npu" for st in plan["steps"]) == 3
    rng = np.random.default_rng(11)
    x, u = rng.standard_normal((3, 8, 2)).astype(np.float32), rng.standard_normal((3, 5, 2)).astype(np.float32)
    i = rng.integers(-8, 8, (3, 5, 2))
    i[:, :3, :] = 2          # a target hit by three updates: they accumulate in index order
    i[1, 3:, 1] = -6         # the same target written through a negative index
    u[0, 1, 0] = np.nan      # NaN propagates through max / min too
    x[2, 5, 0] = np.nan
    n = rng.integers(-2 ** 40, 2 ** 40, (4, 3))
    n[0, 0] = 2 ** 63 - 1    # integer sums and products wrap, as numpy's
    j = rng.integers(-4, 4, (6, 3)).astype(np.int32)
    j[:, 0] = 0
    v = rng.integers(-2 ** 31, 2 ** 31, (6, 3))
    h, g = x.astype(np.float16), (u * 3).astype(np.float16)  # half: each update rounded to half in turn
    y, z, w = art([x, i, u, n, j, v, h, g])
    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_array_equal(y, _scatter_ref(x, i, u, 1, red))
        np.testing.assert_array_equal(z, _scatter_ref(n, j, v, 0, red))
        np.testing.assert_array_equal(w, _scatter_ref(h, i, g, 1, red))


@pytest.mark.parametrize("red", ["add", "mul", "max"])
def test_scatter_elements_reduction_i32_wraps(red, tmp_path):
    nodes = [helper.make_node("ScatterElements", ["n", "i", "m"], ["z"], axis=0, reduction=red)]
    art, _ = _build(nodes, [("n", np.int32, [4, 3]), ("i", np.int64, [7, 3]), ("m", np.int32, [7, 3])],
                    [("z", np.int32, None)], {}, f"scatter_i32_{red}", tmp_path)
    rng = np.random.default_rng(2)
    i = rng.integers(-4, 4, (7, 3))
    i[:, 1] = 3              # one target per column hit by every update
    n, mm = rng.integers(-2 ** 31, 2 ** 31, (4, 3)).astype(np.int32), rng.integers(-2 ** 31, 2 ** 31, (7, 3)).astype(np.int32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(art([n, i, mm])[0], _scatter_ref(n, i, mm, 0, red))


@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_topk_with_a_run_time_k(dt, tmp_path):
    """TopK whose k is a model input: k = 0 (empty results), 1, 3 and L (the whole row), along the last axis and
    another; ties to the lowest index, NaN ranked as +inf; a k outside [0, L] is refused with the value named."""
    from moec.ir.ops.index import topk_indices
    npt = {"f32": np.float32, "f16": np.float16}[dt]
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=1),
             helper.make_node("TopK", ["x", "k"], ["v2", "i2"], axis=1, largest=0)]
    art, plan = _build(nodes, [("x", npt, [4, 6, 6]), ("k", np.int64, [1])],
                       [("v", npt, None), ("i", np.int64, None), ("v2", npt, None), ("i2", np.int64, None)], {},
                       f"topk_dynk_{dt}", tmp_path, host=["moec.topk"])
    # along the last axis on the NPU; along another axis on the host, saying why (the results' layout)
    steps = [st for st in plan["steps"] if st["op"] == "moec.topk"]
    assert [st["where"] for st in steps] == ["npu", "host"], steps
    assert "axis other than the last" in steps[1]["why"], steps
    rng = np.random.default_rng(4)
    x = rng.integers(-4, 4, (4, 6, 6)).astype(npt)  # many ties
    x[0, 0, 0] = np.nan
    x[1, 2, :] = np.inf
    for k in (0, 1, 3, 6):
        v, i, v2, i2 = (np.asarray(r) for r in art([x, np.array([k], np.int64)]))
        for a, largest, vv, ii in ((2, True, v, i), (1, False, v2, i2)):
            want = topk_indices(x, k, a, largest)
            assert ii.shape == want.shape, (k, ii.shape)
            np.testing.assert_array_equal(ii, want)
            np.testing.assert_array_equal(vv, np.take_along_axis(x, want, a))
    for bad in (7, -1):
        with pytest.raises(Exception, match=f"k = {bad} out of range"):
            art([x, np.array([bad], np.int64)])


@pytest.mark.parametrize("red", ["add", "max"])
def test_scatter_nd_rows_with_a_reduction(red, tmp_path):
    """ScatterND with 1-element index tuples and a reduction (torch's index_add as the TorchScript exporter writes it:
    rows of updates added at token rows, a token row hit several times): one index per row on vec_index, over a
    token dim known only at run time."""
    from moec.ir.ops.index import ScatterNDOp
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=red)]
    m = make_model(nodes, [("x", np.float32, ["T", 3, 2]), ("i", np.int64, ["N", 1]), ("u", np.float32, ["N", 3, 2])],
                   [("y", np.float32, None)], {}, name=f"scatter_nd_{red}")
    out = str(tmp_path / "out")
    r = compile_onnx(m, out, CompileOptions(target="ascend"))
    assert r.report["verified"], r.report.get("failure")
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        plan = json.load(f)
    assert plan["host_ops"] == {}, plan["host_ops"]
    art = get_backend("ascend", "Ascend910B2").load(out)
    rng = np.random.default_rng(9)
    op = type("O", (), {"attrs": {"reduction": red}})()
    for T, N in ((5, 9), (1, 3), (4, 1)):
        x, u = rng.standard_normal((T, 3, 2)).astype(np.float32), rng.standard_normal((N, 3, 2)).astype(np.float32)
        i = rng.integers(-T, T, (N, 1))
        i[: N // 2] = 0  # duplicates accumulate in order
        np.testing.assert_array_equal(art([x, i, u])[0], ScatterNDOp.reference(op, x, i, u)[0])
    with pytest.raises(Exception, match="out of range"):
        art([x, np.full((N, 1), T, np.int64), u])


def test_run_time_k_and_reducing_scatter_in_the_host_program(tmp_path):
    """The C++ host program (moec_run, no Python) runs the same plans: the run-time k read back (k = 0: empty
    results), the reducing scatter, and the check refusing a k past the axis."""
    from moec.ir.ops.index import topk_indices
    from moec.targets import ascend_backend as ab
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=1),
             helper.make_node("ScatterElements", ["x", "j", "u"], ["y"], axis=2, reduction="add")]
    m = make_model(nodes, [("x", np.float32, [4, 6, 6]), ("k", np.int64, [1]), ("j", np.int64, [4, 6, 3]),
                           ("u", np.float32, [4, 6, 3])],
                   [("v", np.float32, None), ("i", np.int64, None), ("y", np.float32, None)], {}, name="hp_dynk")
    out = str(tmp_path / "out")
    compile_onnx(m, out, CompileOptions(target="ascend"))
    exe = ab.build_host_program(out)
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 3, (4, 6, 6)).astype(np.float32)
    j, u = rng.integers(0, 6, (4, 6, 3)), rng.standard_normal((4, 6, 3)).astype(np.float32)
    for k in (0, 2, 6):
        ins = [x, np.array([k], np.int64), j, u]
        assert ab.host_program_can_run(out, ins)
        v, i, y = ab.run_host_program(exe, out, ins)
        want = topk_indices(x, k, 2, True)
        np.testing.assert_array_equal(i, want)
        np.testing.assert_array_equal(v, np.take_along_axis(x, want, 2))
        np.testing.assert_array_equal(y, _scatter_ref(x, j, u, 2, "add"))
    with pytest.raises(Exception, match="k = 7 out of range"):
        ab.run_host_program(exe, out, [x, np.array([7], np.int64), j, u])


@pytest.mark.parametrize("red", ["add", "min"])
def test_scatter_elements_reduction_bf16(red, tmp_path):
    """bf16 values (no ONNX oracle runs this): each update computed in float and rounded to bf16 in turn, as numpy's
    bfloat16 arithmetic in the op's reference."""
    import ml_dtypes
    from moec.driver import build_module
    from moec.ir import parse_module, run
    from moec.ir.weights import WeightStore
    X, I = 'tensor<5x4xbf16>', 'tensor<9x4xi64>'
    text = f'''module {{
  func.func @main(%x: {X}, %i: {I}, %u: tensor<9x4xbf16>) -> ({X}) attributes {{moec.inputs = ["x", "i", "u"], moec.outputs = ["y"]}} {{
    %y = "moec.scatter_elements"(%x, %i, %u) {{axis = 0 : i64, reduction = "{red}"}} : ({X}, {I}, tensor<9x4xbf16>) -> {X}
    func.return %y : {X}
  }}
}}'''
    m = parse_module(text, WeightStore())
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    rng = np.random.default_rng(3)
    bf = ml_dtypes.bfloat16
    x, u = rng.standard_normal((5, 4)).astype(bf), (rng.standard_normal((9, 4)) * 100).astype(bf)
    i = rng.integers(-5, 5, (9, 4))
    i[:4, 0] = 1  # four updates of one element: rounded to bf16 after each
    want = run(m, {"x": x, "i": i, "u": u})["y"]
    np.testing.assert_array_equal(np.asarray(art([x, i, u])[0]).view(np.uint16), np.asarray(want).view(np.uint16))


# (the run-time k crosses the same chunk boundaries; the constant-k build, 12 s in the emulator, runs with -m slow)
@pytest.mark.parametrize("run_time_k", [pytest.param(False, marks=pytest.mark.slow), True])
def test_topk_longer_than_the_tile(run_time_k, tmp_path):
    """k past vec_index's staging tile (4096 picks: a vocabulary-sized top-k): a row's picks leave in chunks of the
    tile, the order carried across chunks; a constant k and a run-time one."""
    from moec.codegen.ascend.index_ops import INDEX_TILE
    from moec.ir.ops.index import topk_indices
    L, k = INDEX_TILE + 300, INDEX_TILE + 100
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=1)]
    ins = [("x", np.float32, [2, L])] + ([("k", np.int64, [1])] if run_time_k else [])
    art, _ = _build(nodes, ins, [("v", np.float32, None), ("i", np.int64, None)],
                    {} if run_time_k else {"k": np.array([k], np.int64)}, f"topk_long_{run_time_k}", tmp_path)
    x = np.random.default_rng(1).integers(-50, 50, (2, L)).astype(np.float32)  # ties across the chunk boundary
    v, i = (np.asarray(r) for r in art([x] + ([np.array([k], np.int64)] if run_time_k else [])))
    want = topk_indices(x, k, 1, True)
    np.testing.assert_array_equal(i, want)
    np.testing.assert_array_equal(v, np.take_along_axis(x, want, 1))
