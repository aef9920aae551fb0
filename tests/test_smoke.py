import numpy as np

from helpers import check_model, make_model
from onnx import helper


def test_matmul_add_relu_dynamic_tokens(tmp_path):
    rng = np.random.default_rng(0)
    m = make_model(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
         helper.make_node("Add", ["h", "b"], ["h2"], name="add"),
         helper.make_node("Relu", ["h2"], ["y"], name="relu")],
        [("x", np.float32, ["T", 16])], [("y", np.float32, ["T", 8])],
        {"W": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32)})
    rep = check_model(m, tmp_path)
    assert [s["x"][0] for s in rep["shapes_tried"]] == [5, 1, 3]
