"""The CPU artifact's call path (issue 17 item 5): the thread pool's fork/join under contention.  A caller that
has run every item of a job itself does not wait for workers that never joined it (on a busy host a woken
thread may get a core much later); these tests check the results stay those of one thread when calls from
several Python threads and jobs of every size interleave."""
import threading

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from moec.driver import CompileOptions, compile_onnx
from moec.targets.cpu_backend import CpuArtifact


def _mlp(tmp_path, D=96):
    """x [T, D] -> MatMul W1 -> Relu -> MatMul W2 -> + x: parallel GEMMs and elementwise jobs."""
    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["z"]), helper.make_node("Add", ["z", "x"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", D])],
        [numpy_helper.from_array((rng.standard_normal((D, 2 * D)) / 10).astype(np.float32), "w1"),
         numpy_helper.from_array((rng.standard_normal((2 * D, D)) / 10).astype(np.float32), "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    out = str(tmp_path / "art")
    compile_onnx(m, out, CompileOptions(force=True, threads=2))
    return out, D


def test_pool_results_equal_one_thread_under_concurrent_calls(tmp_path):
    out, D = _mlp(tmp_path)
    one, two = CpuArtifact(out, threads=1), CpuArtifact(out, threads=2)
    xs = [np.random.default_rng(T).standard_normal((T, D)).astype(np.float32) for T in (1, 3, 64, 200)]
    want = [one([x])[0] for x in xs]
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for _ in range(60):
            i = int(rng.integers(len(xs)))
            got = two([xs[i]])[0]
            if not np.array_equal(got, want[i]):
                errors.append((seed, i, float(np.abs(got - want[i]).max())))

    ts = [threading.Thread(target=worker, args=(s,)) for s in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
