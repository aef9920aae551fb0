"""Ascend target: floating-point cumulative sums (Mamba2's chunked scan, gated-delta decay sums) run on the NPU as a
log-step scan of vec_copy windows and vec_elementwise adds (codegen/ascend/scan_ops.py), verified against
onnxruntime for every axis position and the exclusive / reverse forms (integer cumsums: vec_index,
tests/test_ascend_index_ops.py)."""
import json
import os

import numpy as np
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx


def _plan(out):
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("axis,exclusive,reverse,shape", [(1, 0, 0, [3, 13, 5]), (-1, 1, 0, [2, 4, 16]),
                                                          (0, 0, 1, [7, 6]), (-1, 1, 1, [5, 9]), (1, 0, 0, [4, 1])])
def test_float_cumsum_on_the_npu(axis, exclusive, reverse, shape, tmp_path):
    nodes = [helper.make_node("CumSum", ["x", "ax"], ["y"], exclusive=exclusive, reverse=reverse)]
    m = make_model(nodes, [("x", np.float32, shape)], [("y", np.float32, None)], {"ax": np.array(axis, np.int64)},
                   name=f"cumsum_{exclusive}{reverse}")
    out = str(tmp_path / "out")
    r = compile_onnx(m, out, CompileOptions(target="ascend"))
    assert r.report["verified"], r.report.get("failure")
    assert _plan(out)["host_ops"] == {}
    assert any(st["op"] == "moec.cumsum" and st["where"] == "npu" for st in _plan(out)["steps"])
