"""Decoder-layer canonicalisations and recognitions (issue 17 item 2): the batched matmul by a broadcast
constant matrix (passes/fold_broadcast_matmul.py) on its own and in a real transformers export."""
from __future__ import annotations

import numpy as np
import pytest

from moec.ir import parse_module, verify_module
from moec.ir.interpreter import run as ir_run
from moec.passes.fold_broadcast_matmul import FoldBroadcastMatmul

_O_PROJ = """module {
  func.func @main(%x: tensor<?x?x4xf32>, %bs: tensor<1xi64>) -> (tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "bs"], moec.outputs = ["y"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %k = "moec.constant"() {value = dense<[4, 3]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s = "moec.concat"(%bs, %k) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64>
    %e = "moec.expand"(%w, %s) : (tensor<4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32>
    %y = "moec.matmul"(%x, %e) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    func.return %y : tensor<?x?x3xf32>
  }
}
"""


@pytest.mark.parametrize("xb,wb", [(3, 3), (1, 3), (3, 1), (1, 1)])
def test_broadcast_matmul_fold_keeps_the_batch_broadcast(xb, wb):
    """Whichever side has the batch (x's batch 1 against the expand's 3, or the other way round), the
    rewritten graph gives the batched matmul's values and shape, and the matmul reads the 2-D weight."""
    m0 = parse_module(_O_PROJ)
    m1 = parse_module(_O_PROJ)
    assert FoldBroadcastMatmul().run(m1)
    verify_module(m1)
    mm = [o for o in m1.main.ops if o.name == "moec.matmul"]
    assert len(mm) == 1 and mm[0].operands[1].type.shape == (4, 3)
    x = np.random.default_rng(xb * 7 + wb).standard_normal((xb, 5, 4)).astype(np.float32)
    bs = np.array([wb], np.int64)
    want = ir_run(m0, [x, bs])["y"]
    got = ir_run(m1, [x, bs])["y"]
    assert got.shape == want.shape == (max(xb, wb), 5, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_real_mixtral_o_proj_becomes_a_quantised_linear(tmp_path, monkeypatch):
    """moec.compile's default dynamic-batch export of a real 2-layer Mixtral writes o_proj as a bmm by
    expand(W.T): after the fold every projection (q, k, v, o x 2 layers) and the output layer are
    linear_q under --weights int8, and the model verifies against its eager output."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import moec
    from test_hf_compile import causal_lm
    monkeypatch.setenv("MOEC_CACHE_DIR", str(tmp_path / "cache"))
    model = causal_lm("mixtral", "batched_mm")
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    cm = moec.compile(model, (ids,), weights="int8", dynamic_dims={0: {0: "B", 1: "S"}})
    rep = cm.stats.report
    assert rep["verified"], rep.get("failure")
    assert rep["op_histogram"].get("moec.linear_q", 0) == 2 * 4 + 1, rep["op_histogram"]
