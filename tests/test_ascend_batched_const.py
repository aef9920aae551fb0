"""Ascend target: a matmul by a constant batch of matrices (rank >= 3 right operand, as Jamba's Mamba scan writes)
runs as the batched matmul on the cube (a group per batch entry), not on the host (issue 16 item 6)."""
import json
import os

import numpy as np
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx


def test_matmul_by_a_constant_batch_of_matrices(tmp_path):
    w = np.random.default_rng(0).standard_normal((3, 8, 5)).astype(np.float32)
    m = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", np.float32, [3, "T", 8])],
                   [("y", np.float32, None)], {"w": w}, name="bmm_const")
    out = str(tmp_path / "out")
    assert compile_onnx(m, out, CompileOptions(target="ascend", symbol_sizes=(7, 1))).report["verified"]
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        plan = json.load(f)
    assert plan["host_ops"] == {}
    st = [s for s in plan["steps"] if s["op"] == "moec.matmul"][0]
    assert st["where"] == "npu" and st.get("batched") and "grouped_matmul" in st["kernels"], st
