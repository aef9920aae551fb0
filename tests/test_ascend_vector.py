"""Ascend target, ordinary ops: elementwise / broadcast / row-wise ops of a whole graph run as AscendC
vector kernels on the emulator (plan.json places them on the NPU, the kernels really launch) and
verify against onnxruntime; what the kernels cannot do stays on the host with its reason."""
import json
import os

import numpy as np
import onnx
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.targets.registry import get_backend


def _graph(T="T", H=200):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Add", ["x", "bias"], ["a"]),                       # row broadcast
        helper.make_node("Sigmoid", ["a"], ["s"]),
        helper.make_node("Mul", ["s", "x"], ["m"]),                          # full x full
        helper.make_node("Softmax", ["m"], ["sm"], axis=-1),
        helper.make_node("ReduceSum", ["x", "ax"], ["rs"], keepdims=1),
        helper.make_node("Abs", ["rs"], ["ra"]),
        helper.make_node("Add", ["ra", "one"], ["rp"]),                      # scalar
        helper.make_node("Div", ["sm", "rp"], ["d"]),                        # one value per row
        helper.make_node("Sub", ["two", "d"], ["e"]),                        # scalar on the left
        helper.make_node("Tanh", ["e"], ["th"]),
        helper.make_node("ReduceMean", ["th", "ax"], ["rm"], keepdims=1),
        helper.make_node("Mul", ["th", "rm"], ["f"]),                        # per-row value (reduce keepdims)
        helper.make_node("RMSNormalization", ["f", "g"], ["r"], axis=-1, epsilon=1e-5),
        helper.make_node("LayerNormalization", ["r", "g", "bias"], ["ln"], axis=-1),
        helper.make_node("ReduceMax", ["ln", "ax"], ["mx"], keepdims=0),
        helper.make_node("LogSoftmax", ["ln"], ["ls"], axis=1),
        helper.make_node("Clip", ["ls", "lo", "hi"], ["cl"]),
        helper.make_node("Pow", ["cl", "two"], ["sq"]),
        helper.make_node("Neg", ["sq"], ["ng"]),
        helper.make_node("Exp", ["ng"], ["ex"]),
        helper.make_node("Max", ["ex", "bias"], ["mxb"]),
        helper.make_node("Relu", ["mxb"], ["out"]),
    ]
    inits = {"bias": rng.standard_normal(H).astype(np.float32), "one": np.array(1.0, np.float32),
             "two": np.array(2.0, np.float32), "ax": np.array([-1]), "g": rng.standard_normal(H).astype(np.float32),
             "lo": np.array(-3.0, np.float32), "hi": np.array(-0.5, np.float32)}
    return make_model(nodes, [("x", np.float32, [T, H])], [("out", np.float32, None), ("mx", np.float32, None)],
                      inits, opset=23, name="ordinary_ops")


def _plan(out):
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        return json.load(f)


def test_whole_graph_of_ordinary_ops_runs_on_the_vector_kernels(tmp_path):
    out = str(tmp_path / "out")
    r = compile_onnx(_graph(), out, CompileOptions(target="ascend", symbol_sizes=(37, 1, 3)))
    assert r.report["verified"], r.report.get("failure")
    plan = _plan(out)
    placed = [(s["op"], s["where"]) for s in plan["steps"] if s["op"] != "moec.constant"]
    assert placed and all(w in ("npu", "view") for _, w in placed), [p for p in placed if p[1] == "host"]
    assert not plan["host_ops"], plan["host_ops"]
    art = get_backend("ascend", "Ascend910B2").load(out)
    x = np.random.default_rng(1).standard_normal((9, 200)).astype(np.float32)
    art([x])
    assert art.launches.get("vec_elementwise", 0) >= 10 and art.launches.get("vec_rowwise", 0) >= 5, art.launches
    assert not art.host_ops, art.host_ops
    est = [s for s in plan["steps"] if s["where"] == "npu" and s["op"].startswith("moec.")]
    assert est and all(s["estimates"] and s["kernels"][0].startswith("vec_") for s in est), est[:2]


@pytest.mark.parametrize("T,H", [(3, 20001), (4000, 6)])
def test_long_rows_are_chunked_and_many_short_rows_share_a_tile(T, H, tmp_path):
    nodes = [helper.make_node("Mul", ["x", "w"], ["a"]), helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Sub", ["s", "x"], ["out"])]
    w = np.random.default_rng(2).standard_normal(H).astype(np.float32)
    m = make_model(nodes, [("x", np.float32, [T, H])], [("out", np.float32, None)], {"w": w}, name="chunks")
    out = str(tmp_path / "out")
    r = compile_onnx(m, out, CompileOptions(target="ascend"))
    assert r.report["verified"], r.report.get("failure")
    assert all(s["where"] != "host" for s in _plan(out)["steps"])


def test_unsupported_patterns_stay_on_the_host_with_a_reason(tmp_path):
    H = 7000  # a row longer than the Unified Buffer holds for a row-wise kernel
    nodes = [helper.make_node("Softmax", ["x"], ["sm"], axis=-1),
             helper.make_node("Add", ["y", "z"], ["o2"]),             # [2,1,5] + [1,3,1]: runs (vec_copy expands)
             helper.make_node("ReduceSum", ["y", "ax0"], ["o3"], keepdims=1),  # not the last axis: runs (moved last)
             helper.make_node("Sin", ["sm"], ["o1"])]
    m = make_model(nodes, [("x", np.float32, [2, H]), ("y", np.float32, [2, 1, 5]), ("z", np.float32, [1, 3, 1])],
                   [("o1", np.float32, None), ("o2", np.float32, None), ("o3", np.float32, None)],
                   {"ax0": np.array([0])}, opset=18, name="host_parts")
    out = str(tmp_path / "out")
    r = compile_onnx(m, out, CompileOptions(target="ascend"))
    assert r.report["verified"], r.report.get("failure")
    why = {s["op"]: s.get("why", "") for s in _plan(out)["steps"] if s["where"] == "host"}
    assert "Unified Buffer" in why["moec.softmax"], why
    assert "moec.add" not in why, why  # any other broadcast: the operands are expanded by vec_copy first
    assert "moec.reduce_sum" not in why, why  # a copy moves the reduced axis last (reduce_ops.py)
    assert "no AscendC kernel for moec.sin" in why["moec.sin"], why


SHAPES = {"full": [6, 9], "row": [1, 9], "row1d": [9], "col": [6, 1], "scalar": []}


@pytest.mark.parametrize("op", ["Sub", "Div", "Max"])
@pytest.mark.parametrize("a,b", [("full", "row"), ("row1d", "full"), ("full", "col"), ("col", "full"), ("row", "col"),
                                 ("col", "row"), ("scalar", "row"), ("row", "scalar"), ("col", "scalar"),
                                 ("scalar", "col"), ("scalar", "full"), ("full", "scalar"), ("col", "col")])
def test_broadcast_classes_of_binary_ops(op, a, b, tmp_path):
    """every pairing of full / row / per-row / scalar operands, non-commutative ops included"""
    nodes = [helper.make_node(op, ["a", "b"], ["c"]), helper.make_node("Add", ["c", "z"], ["out"])]
    z = np.zeros([6, 9], np.float32)  # makes the output [6, 9] whatever the operands' shapes
    m = make_model(nodes, [("a", np.float32, SHAPES[a]), ("b", np.float32, SHAPES[b])],
                   [("out", np.float32, None)], {"z": z}, name=f"bcast_{op}_{a}_{b}")
    out = str(tmp_path / "out")
    r = compile_onnx(m, out, CompileOptions(target="ascend"))
    assert r.report["verified"], r.report.get("failure")
    assert not _plan(out)["host_ops"]
