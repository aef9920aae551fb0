"""Ascend target: reductions over axes other than the last one (Qwen3-Next's gated-delta chunk sums) run on the NPU:
a vec_copy moves the reduced axes last, vec_rowwise reduces (codegen/ascend/reduce_ops.py); verified against
onnxruntime, plan.json without host ops."""
import json
import os

import numpy as np
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx


@pytest.mark.parametrize("op,axes,keep,shape", [("ReduceSum", [1], 0, [2, "T", 5]), ("ReduceMax", [0, 2], 1, [3, "T", 4]),
                                                ("ReduceMean", [-2], 1, ["T", 6, 3]), ("ReduceMin", [0], 0, ["T", 9])])
def test_reductions_over_other_axes_on_the_npu(op, axes, keep, shape, tmp_path):
    nodes = [helper.make_node(op, ["x", "ax"], ["y"], keepdims=keep)]
    m = make_model(nodes, [("x", np.float32, shape)], [("y", np.float32, None)], {"ax": np.array(axes, np.int64)},
                   name=f"red_{op}")
    out = str(tmp_path / "out")
    assert compile_onnx(m, out, CompileOptions(target="ascend", symbol_sizes=(7, 1))).report["verified"]
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        assert json.load(f)["host_ops"] == {}
