"""Ascend target: integer and index ops on the NPU (issue 16 item 6) -- vec_index, a kernel of the AI core's scalar
unit (codegen/ascend/index_ops.py): int64 / int32 comparisons (longcat_flash's ``topk_indices >= E``), Where of
integer values, integer cumsums, GatherElements and top-k outside the fused router.  Each is exact, so each is
checked bit for bit against numpy (the IR's reference semantics) on values a float path would get wrong (past 2^24
and 2^53, the int64 extremes, wrapping sums), besides the compile's own verification against onnxruntime."""
import json
import os

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.targets.registry import get_backend


def _build(nodes, ins, outs, consts, name, tmp_path, **kw):
    m = make_model(nodes, ins, outs, consts, name=name)
    out = str(tmp_path / "out")
    r = compile_onnx(m, out, CompileOptions(target="ascend", **kw))
    assert r.report["verified"], r.report.get("failure")
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        plan = json.load(f)
    assert plan["host_ops"] == {}, plan["host_ops"]
    return get_backend("ascend", "Ascend910B2").load(out), plan


I64_EDGE = np.array([0, 1, -1, 2 ** 24, 2 ** 24 + 1, 2 ** 53, 2 ** 53 + 1, -2 ** 53 - 1, 2 ** 62, 2 ** 63 - 1,
                     -2 ** 63, -2 ** 63 + 1, 4294967295, 4294967296, -4294967296, 2 ** 31 - 1, -2 ** 31], np.int64)


@pytest.mark.parametrize("dt", [np.int64, np.int32])
def test_integer_comparisons_and_where_are_exact(dt, tmp_path):
    cmps = [("Equal", np.equal), ("Less", np.less), ("LessOrEqual", np.less_equal), ("Greater", np.greater),
            ("GreaterOrEqual", np.greater_equal)]
    nodes = [helper.make_node(op, ["a", "b"], [f"c{i}"]) for i, (op, _) in enumerate(cmps)]
    nodes += [helper.make_node("Where", ["c4", "a", "b"], ["w"]),           # full values
              helper.make_node("Greater", ["a", "k"], ["g"]),               # a scalar operand (as longcat's >= E)
              helper.make_node("Where", ["g", "k", "a"], ["ws"])]           # a scalar value
    outs = [(f"c{i}", np.bool_, None) for i in range(len(cmps))] + [("w", dt, None), ("g", np.bool_, None),
                                                                     ("ws", dt, None)]
    k = np.array(7, dt)
    art, plan = _build(nodes, [("a", dt, ["T", 33]), ("b", dt, ["T", 33])], outs, {"k": k}, f"icmp_{dt.__name__}",
                       tmp_path)
    assert {st["op"] for st in plan["steps"] if st["where"] == "npu"} >= {"moec.equal", "moec.select",
                                                                          "moec.greater_equal"}
    rng = np.random.default_rng(1)
    info = np.iinfo(dt)
    edge = I64_EDGE[(I64_EDGE >= info.min) & (I64_EDGE <= info.max)].astype(dt)
    for T in (1, 5, 130):  # 130 x 33: several chunks of the kernel's tile over several cores
        a = rng.integers(info.min, info.max, (T, 33), dtype=dt, endpoint=True)
        b = a.copy()
        sel = rng.integers(0, 4, a.shape)
        b[sel == 1] = rng.integers(info.min, info.max, a.shape, dtype=dt)[sel == 1]
        b[(sel == 2) & (a < info.max)] += 1  # neighbours: a float path would call them equal
        b[(sel == 3) & (a > info.min)] -= 1
        a.reshape(-1)[:len(edge)] = edge[:a.size]
        b.reshape(-1)[:len(edge)] = np.roll(edge, 1)[:a.size]
        got = art([a, b])
        for i, (_, fn) in enumerate(cmps):
            np.testing.assert_array_equal(got[i], fn(a, b))
            assert got[i].dtype == np.bool_
        np.testing.assert_array_equal(got[5], np.where(a >= b, a, b))
        np.testing.assert_array_equal(got[6], a > k)
        np.testing.assert_array_equal(got[7], np.where(a > k, k, a))
        assert got[5].dtype == dt and got[7].dtype == dt
    assert art.launches.get("vec_index", 0) >= 8 and not art.host_ops


@pytest.mark.parametrize("dt,axis,exclusive,reverse,shape", [
    (np.int64, 1, 0, 0, [3, 13, 5]), (np.int64, -1, 1, 0, [2, 4, 16]), (np.int32, 0, 0, 1, [7, 6]),
    (np.int64, -1, 1, 1, [5, 9]), (np.int64, -1, 0, 0, [2, 5000])])
def test_integer_cumsum_is_exact(dt, axis, exclusive, reverse, shape, tmp_path):
    nodes = [helper.make_node("CumSum", ["x", "ax"], ["y"], exclusive=exclusive, reverse=reverse)]
    art, plan = _build(nodes, [("x", dt, shape)], [("y", dt, None)], {"ax": np.array(axis, np.int64)},
                       f"icumsum_{exclusive}{reverse}", tmp_path)
    assert any(st["op"] == "moec.cumsum" and st["where"] == "npu" for st in plan["steps"])
    rng = np.random.default_rng(2)
    info = np.iinfo(dt)
    for x in (rng.integers(-1000, 1000, shape, dtype=dt),
              rng.integers(info.min // 4, info.max // 4, shape, dtype=dt)):  # sums that wrap, as numpy's do
        a = axis % len(shape)
        y = np.flip(x, a) if reverse else x
        with np.errstate(over="ignore"):
            want = np.cumsum(y, axis=a, dtype=dt)
            if exclusive:
                want = want - y
        if reverse:
            want = np.flip(want, a)
        np.testing.assert_array_equal(art([x])[0], want)


def test_gather_elements_on_the_npu(tmp_path):
    nodes = [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1),
             helper.make_node("GatherElements", ["n", "j"], ["z"], axis=0)]
    art, plan = _build(nodes, [("x", np.float32, [3, 7, 4]), ("i", np.int64, [3, 5, 4]), ("n", np.int64, [6, 3]),
                               ("j", np.int32, [2, 3])], [("y", np.float32, None), ("z", np.int64, None)], {},
                       "gather_el", tmp_path)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 7, 4)).astype(np.float32)
    x[0, 0, 0] = np.nan
    i = rng.integers(-7, 7, (3, 5, 4))
    n = rng.integers(-2 ** 63, 2 ** 63 - 1, (6, 3), dtype=np.int64)
    j = rng.integers(-6, 6, (2, 3)).astype(np.int32)
    y, z = art([x, i, n, j])
    np.testing.assert_array_equal(y, np.take_along_axis(x, np.where(i < 0, i + 7, i), 1))
    np.testing.assert_array_equal(z, np.take_along_axis(n, np.where(j < 0, j + 6, j), 0))
    i[1, 2, 3] = 7
    with pytest.raises(Exception, match="out of range"):
        art([x, i, n, j])


@pytest.mark.parametrize("dt", ["f32", "f16"])
@pytest.mark.parametrize("axis,largest", [(-1, 1), (-1, 0), (1, 1)])
def test_topk_outside_the_router(dt, axis, largest, tmp_path):
    from moec.ir.ops.index import topk_indices
    npt = {"f32": np.float32, "f16": np.float16}[dt]
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)]
    art, plan = _build(nodes, [("x", npt, [4, 9, 6])], [("v", npt, None), ("i", np.int64, None)],
                       {"k": np.array([3], np.int64)}, f"topk_{dt}_{largest}", tmp_path)
    assert any(st["op"] == "moec.topk" and st["where"] == "npu" for st in plan["steps"])
    rng = np.random.default_rng(4)
    x = rng.integers(-4, 4, (4, 9, 6)).astype(npt)  # many ties: the lowest index first
    x[0, 0, 0] = np.nan                              # ranked as +inf
    x[1, 2, :] = np.inf
    x[2, 3, 1] = -np.inf
    a = axis % 3
    idx = topk_indices(x, 3, a, bool(largest))
    v, i = art([x])
    np.testing.assert_array_equal(i, idx)
    np.testing.assert_array_equal(v, np.take_along_axis(x, idx, a))


@pytest.mark.parametrize("dt", [np.int64, np.int32])
def test_integer_arithmetic_and_casts_are_exact(dt, tmp_path):
    ops = [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Max", np.maximum), ("Min", np.minimum)]
    other = TensorProto.INT32 if dt == np.int64 else TensorProto.INT64
    nodes = [helper.make_node(op, ["a", "b"], [f"r{i}"]) for i, (op, _) in enumerate(ops)]
    nodes += [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Div", ["a", "k"], ["qs"]),
              helper.make_node("Neg", ["a"], ["ng"]), helper.make_node("Abs", ["a"], ["ab"]),
              helper.make_node("Clip", ["a", "lo", "hi"], ["cl"]),
              helper.make_node("Cast", ["a"], ["cw"], to=other),              # narrowing keeps the low bits
              helper.make_node("Greater", ["a", "b"], ["g"]),
              helper.make_node("Cast", ["g"], ["gi"], to=TensorProto.INT64)]   # bool -> int64
    outs = [(f"r{i}", dt, None) for i in range(len(ops))] + [("q", dt, None), ("qs", dt, None), ("ng", dt, None),
                                                             ("ab", dt, None), ("cl", dt, None),
                                                             ("cw", np.int32 if dt == np.int64 else np.int64, None),
                                                             ("gi", np.int64, None)]
    consts = {"k": np.array(-3, dt), "lo": np.array(-1000, dt), "hi": np.array(2 ** 20, dt)}
    art, plan = _build(nodes, [("a", dt, ["T", 17]), ("b", dt, ["T", 17])], outs, consts, f"iarith_{dt.__name__}",
                       tmp_path)
    rng = np.random.default_rng(6)
    info = np.iinfo(dt)
    from moec.ir.ops.elementwise import _int_div
    for T in (1, 9):
        a = rng.integers(info.min, info.max, (T, 17), dtype=dt, endpoint=True)
        b = rng.integers(info.min, info.max, (T, 17), dtype=dt, endpoint=True)
        b[b == 0] = 5
        a.reshape(-1)[:3] = [info.min, info.max, -7][:a.size]
        b.reshape(-1)[:3] = [-1, 2, 2][:a.size]                   # the most negative value / -1 wraps
        got = art([a, b])
        with np.errstate(over="ignore"):
            for i, (_, fn) in enumerate(ops):
                np.testing.assert_array_equal(got[i], fn(a, b))
            np.testing.assert_array_equal(got[5], _int_div(a, b))  # truncating toward zero
            # (the most negative value / -3: the reference's abs() overflows there, C's / and onnxruntime's do not)
            np.testing.assert_array_equal(got[6].reshape(-1)[1:], _int_div(a, np.array(-3, dt)).reshape(-1)[1:])
            np.testing.assert_array_equal(got[7], -a)
            np.testing.assert_array_equal(got[8], np.abs(a))
        np.testing.assert_array_equal(got[9], np.clip(a, -1000, 2 ** 20))
        np.testing.assert_array_equal(got[10], a.astype(got[10].dtype))
        np.testing.assert_array_equal(got[11], (a > b).astype(np.int64))
    b[0, 0] = 0
    with pytest.raises(Exception, match="division by zero"):
        art([a, b])


def test_scatter_elements_in_index_order(tmp_path):
    nodes = [helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1),
             helper.make_node("ScatterElements", ["n", "j", "v"], ["z"], axis=0)]
    art, plan = _build(nodes, [("x", np.float32, [3, 8, 2]), ("i", np.int64, [3, 5, 2]), ("u", np.float32, [3, 5, 2]),
                               ("n", np.int64, [4, 3]), ("j", np.int32, [4, 3]), ("v", np.int64, [4, 3])],
                       [("y", np.float32, None), ("z", np.int64, None)], {}, "scatter_el", tmp_path)
    from moec.ir.ops.index import ScatterElementsOp  # noqa: F401  (the reference below is the op's own)
    rng = np.random.default_rng(7)
    x, u = rng.standard_normal((3, 8, 2)).astype(np.float32), rng.standard_normal((3, 5, 2)).astype(np.float32)
    i = rng.integers(-8, 8, (3, 5, 2))  # repeats: the last one wins, as the reference applies them in order
    n, v = rng.integers(-2 ** 62, 2 ** 62, (4, 3)), rng.integers(-2 ** 62, 2 ** 62, (4, 3))
    j = np.array([rng.permutation(4) for _ in range(3)]).T.astype(np.int32)
    y, z = art([x, i, u, n, j, v])
    want = x.copy()
    for pos in np.ndindex(*i.shape):
        want[pos[0], i[pos] % 8, pos[2]] = u[pos]
    np.testing.assert_array_equal(y, want)
    wz = n.copy()
    np.put_along_axis(wz, j.astype(np.int64), v, 0)
    np.testing.assert_array_equal(z, wz)
