"""Ascend target: casts between bool and float run on vec_mask (Where(x, 1, 0); not(x == 0)), so torch's
any(dim) -- reduce_max of the f32 0/1 values, as the PyTorch front end lowers it -- and the safe softmax that
torch.export writes for sdpa attention (where(~any(scores != -inf), 0, softmax)) run on the NPU (issue 16 item 6)."""
import json
import os

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers import make_model
from moec.driver import CompileOptions, build_module, compile_onnx


def test_bool_float_casts_on_vec_mask(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["b"], to=TensorProto.BOOL),          # nonzero / NaN -> true
             helper.make_node("Cast", ["b"], ["f"], to=TensorProto.FLOAT),         # 1.0 / 0.0
             helper.make_node("Mul", ["f", "x"], ["y"])]
    m = make_model(nodes, [("x", np.float32, ["T", 37])], [("y", np.float32, None)], {}, name="boolcast")
    out = str(tmp_path / "out")
    assert compile_onnx(m, out, CompileOptions(target="ascend", symbol_sizes=(5, 1))).report["verified"]
    with open(os.path.join(out, "ascend", "plan.json")) as f:
        assert json.load(f)["host_ops"] == {}
    from moec.targets.registry import get_backend
    art = get_backend("ascend", "Ascend910B2").load(out)
    x = np.array([[0.0, -0.0, 1e-45, -2.0, np.nan, np.inf] + [0.0] * 31] * 3, np.float32)
    got = art([x])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(x))
    np.testing.assert_array_equal(got[~np.isnan(x)], (x * (x != 0))[~np.isnan(x)])
    assert art.launches.get("vec_mask", 0) >= 3 and not art.host_ops


def test_torch_any_runs_on_the_npu(tmp_path):
    torch = pytest.importorskip("torch")
    from moec.frontend.torch_import import import_torch

    class SafeSoftmax(torch.nn.Module):
        def forward(self, s):
            p = torch.softmax(s, -1)
            dead = ~torch.any(s != float("-inf"), dim=-1, keepdim=True)
            return torch.where(dead, torch.zeros_like(p), p)

    m = import_torch(SafeSoftmax().eval(), (torch.zeros(2, 3, 8),), dynamic_dims={0: {1: "S"}})
    art = build_module(m, str(tmp_path / "o"), target="ascend", run_passes=True)
    s = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    s[0, 1, :] = -np.inf  # a fully masked row: zeros, not NaN
    s[1, 2, 3:] = -np.inf
    with torch.no_grad():
        want = SafeSoftmax()(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(art([s])[0], want, rtol=1e-6, atol=1e-7)
    assert not art.host_ops, art.host_ops
