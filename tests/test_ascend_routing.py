"""moe_init_routing on several blocks inside a model (issue 20 item 10, the host side): the launch plan gives the
routing kernel one block per 256 routed slots (at most the vector cores), and the model's results at several token
counts (one block, several, all the cores) match onnxruntime."""
import numpy as np
import onnxruntime as ort
import pytest

from moec.driver import CompileOptions, compile_onnx
from moec.targets.ascend_backend import ROUTE_SLOTS_PER_BLOCK
from test_ascend_host_program import EXAMPLE

pytestmark = pytest.mark.skipif(not __import__("shutil").which("g++"), reason="no g++ for the emulator build")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("route") / "o")
    r = compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(3,)))
    assert r.report["verified"], r.report.get("failure")
    return r.artifact


def _routing_blocks(art, x):
    plan = art.launch_plan([x])
    bds = [s[3] for s in plan.steps if s[0] == "launch" and s[1] == "moe_init_routing"]
    assert bds and all(isinstance(b, int) for b in bds), bds
    return bds


@pytest.mark.parametrize("T", [1, 70, 200])
def test_init_routing_blocks_follow_the_slots(example, T):
    art = example
    x = np.random.default_rng(T).standard_normal((T, 64)).astype(np.float32)
    sess = ort.InferenceSession(EXAMPLE, providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    k = 2  # the example routes each token to 2 experts
    bds = _routing_blocks(art, x)
    assert bds == [min(art.cores, -(-T * k // ROUTE_SLOTS_PER_BLOCK))] * len(bds), bds
    got = art([x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_init_routing_blocks_stop_at_the_vector_cores(example):
    """More slots than 256 per core: every vector core, no more (planned only: a plan needs no data)."""
    T = example.cores * ROUTE_SLOTS_PER_BLOCK  # 2 slots per token: twice the cores' worth
    assert _routing_blocks(example, np.zeros((T, 64), np.float32)) == [example.cores]


@pytest.mark.parametrize("fold", [False, True])
def test_post_expert_norm_runs_on_the_npu(fold, tmp_path):
    """moe.experts' post-expert RMSNorm (post_norm_eps, Muse Spark) on vec_rowwise between the down grouped matmul and
    moe_scatter_rows: no host op, equal to the reference, with the routing weight at the combine or folded into the
    experts' output (applied after the norm)."""
    from moec.driver import build_module
    from moec.ir import run
    from test_hf_route_forms import K, POST, _inputs, _layer
    m = _layer('scoring = "softmax", norm = "sum"', bias=False, slots=K, experts_attrs=POST, fold=fold)
    art = build_module(m, str(tmp_path / "out"), target="ascend", run_passes=True)
    assert art.plan["host_ops"] == {}, art.plan["host_ops"]
    step = next(s for s in art.plan["steps"] if s["op"] == "moe.experts")
    assert "vec_rowwise" in step["kernels"], step["kernels"]
    for T in (5, 1):
        x = _inputs(T)
        np.testing.assert_allclose(np.asarray(art([x])[0]), run(m, {"x": x})["y"], rtol=2e-5, atol=2e-6)
    assert art.launches.get("vec_rowwise", 0) > 0, art.launches
