"""The CPU artifact's call path (issue 17 item 5): the thread pool's fork/join under contention.  A caller that
has run every item of a job itself does not wait for workers that never joined it (on a busy host a woken
thread may get a core much later); these tests check the results stay those of one thread when calls from
several Python threads and jobs of every size interleave."""
import os
import threading

import numpy as np
import onnx
import pytest
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


# -- the call path's argument descriptors (targets/cpu.py) -----------------------------------------------------

def test_data_address_read_from_the_array_object_matches_numpy():
    """The fast address (the array object's data field, proved at import) is numpy's own for views, read-only,
    0-d and subclass arrays; this interpreter takes the fast path."""
    from moec.targets import cpu
    assert cpu._DATA_OFF is not None  # CPython + numpy here: the layout is proved
    base = np.arange(120, dtype=np.float64)
    ro = np.arange(5, dtype=np.int8)
    ro.flags.writeable = False
    for x in (base, base[7:], base.reshape(10, 12)[3:5], ro, np.array(3.5, np.float32), np.zeros((0, 4)),
              base.view(np.ma.MaskedArray), np.frombuffer(b"abcdefgh", np.uint8)[2:]):
        assert cpu._address(x) == x.ctypes.data


def test_descriptor_pack_matches_the_ctypes_fields():
    """One struct pack per input writes what the C side reads: data, the rank's dims, numel, rank, dtype, owned=0,
    and zeros in the unused dims (over any earlier, longer shape)."""
    import ctypes

    from moec.targets.cpu import _TENSOR_PACK, _TENSOR_SIZE, CTensor
    ins = (CTensor * 2)()
    ctypes.memset(ins, 0xAB, ctypes.sizeof(ins))
    for rank in range(9):
        shape = tuple(range(2, 2 + rank))
        _TENSOR_PACK[rank].pack_into(ins, _TENSOR_SIZE, 0x1234560, *shape, 77, rank, 5, 0, 0)
        t = ins[1]
        assert (t.data, tuple(t.shape[:rank]), t.numel, t.rank, t.dtype, t.owned) == (0x1234560, shape, 77, rank, 5, 0)
        assert all(d == 0 for d in t.shape[rank:])
        assert bytes(ins[0]) == b"\xab" * _TENSOR_SIZE  # the neighbour untouched


def test_call_without_the_fast_address_path(tmp_path, monkeypatch):
    """Where the array layout is not proved (another interpreter), the buffer export gives the same results."""
    from moec.targets import cpu
    out, D = _mlp(tmp_path)
    art = CpuArtifact(out, threads=1)
    x = np.random.default_rng(1).standard_normal((5, D)).astype(np.float32)
    want = art([x])[0]
    monkeypatch.setattr(cpu, "_DATA_OFF", None)
    assert cpu._address(x) == x.ctypes.data
    assert np.array_equal(art([x])[0], want)
    xr = x.copy()
    xr.flags.writeable = False  # (read-only: the buffer export refuses it, ctypes' address is used)
    assert np.array_equal(art([xr])[0], want)


def test_inputs_of_every_kind_reach_the_kernels(tmp_path):
    """Ranks 0, 1, 2 and 4, a strided view, a read-only 0-d array, a zero-size and a Fortran-order input: the values
    the model computes are numpy's (the descriptors carry the right address, shape and dtype)."""
    g = helper.make_graph(
        [helper.make_node("Add", ["a", "s"], ["y"]), helper.make_node("Mul", ["b", "b"], ["z"]),
         helper.make_node("Neg", ["e"], ["w"])],
        "kinds", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3, 4, 5]),
                  helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                  helper.make_tensor_value_info("b", TensorProto.INT64, ["m"]),
                  helper.make_tensor_value_info("e", TensorProto.FLOAT, ["k", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 4, 5]),
         helper.make_tensor_value_info("z", TensorProto.INT64, ["m"]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, ["k", 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    out = str(tmp_path / "kinds")
    compile_onnx(m, out, CompileOptions(force=True, threads=2))
    art = CpuArtifact(out, threads=2)
    rng = np.random.default_rng(3)
    big = rng.standard_normal((4, 6, 4, 5)).astype(np.float32)
    a = big[1:, ::2]  # (a strided view: copied to C order by the call path)
    s = np.array(2.5, np.float32)
    s.flags.writeable = False
    b = np.arange(7, dtype=np.int64)[::-1][2:]
    for e in (np.zeros((0, 2), np.float32), np.asfortranarray(rng.standard_normal((3, 2)).astype(np.float32))):
        y, z, w = art([a, s, b, e])
        assert np.array_equal(y, a + s) and np.array_equal(z, b * b) and np.array_equal(w, -e)


# -- small work stays on the calling thread (rt_moe_f32.c's xphase, MOEC_PAR_MIN_FMAS) --------------------------

def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc to count threads")
@pytest.mark.parametrize("mode", ["f32", "int8"])
def test_tiny_expert_layer_does_not_wake_the_pool(tmp_path, mode):
    """A 64-wide top-1 expert layer at one token (6k multiply-adds a phase) runs on the calling thread: a freshly
    loaded library (its own pool, no worker started yet) called with 2 threads starts no thread; at 64 tokens
    (393k a phase) the same library starts its worker -- the count can see it."""
    from moec.zoo import graphs
    out = str(tmp_path / "moe")
    compile_onnx(graphs.ort_moe(act="relu", k=1), out, CompileOptions(force=True, threads=2, weights=mode,
                                                                        group_size=16))
    art = CpuArtifact(out, threads=2)
    one = CpuArtifact(out, threads=1)
    rng = np.random.default_rng(0)
    xs = {T: [rng.standard_normal((T, graphs.D)).astype(np.float32),
              rng.standard_normal((T, graphs.E)).astype(np.float32)] for T in (1, 2, 64)}
    before = _threads()
    for _ in range(3):
        for T in (1, 2):
            assert np.array_equal(art(xs[T])[0], one(xs[T])[0])
    assert _threads() == before
    assert np.array_equal(art(xs[64])[0], one(xs[64])[0])
    assert _threads() == before + 1


# -- the relu epilogue on vectors (rt_linalg.c's moec_linear_act_row) --------------------------------------------

@pytest.mark.parametrize("arch", ["native", pytest.param("avx2", marks=pytest.mark.slow),
                                  pytest.param("generic", marks=pytest.mark.slow)])
def test_relu_epilogue_bits(arch, tmp_path):
    """moec.linear's relu, now on vectors with a scalar tail: act(0 @ w + c) over 67 columns (full vectors and a
    tail at every width) equals the op's semantics bit for bit -- negatives (subnormal ones too) and -inf to +0,
    NaN of either sign passes, positives, subnormals and +inf unchanged."""
    from test_dense_gemm import _const, _module, _tt

    from moec.driver import build_module
    from moec.ir import WeightStore, run
    N, rows = 67, 40
    rng = np.random.default_rng(5)
    c = (rng.standard_normal((rows, N)) * np.float32(10.0) ** rng.integers(-40, 38, (rows, N))).astype(np.float32)
    special = np.array([np.nan, -np.nan, -0.0, 0.0, np.inf, -np.inf, 1e-45, -1e-45, -1e-40, 3e38], np.float32)
    c.reshape(-1)[::7][:special.size] = special  # (in vector lanes and the tail)
    c[-1, -special.size:] = special
    ws = WeightStore()
    ws.set("w", np.zeros((1, N), np.float32))
    X, R = ("M", 1), ("M", N)
    ops = [_const("w", (1, N)),
           f'%y = "moec.linear"(%x, %w, %c) {{activation = "relu"}} : ({_tt(X)}, {_tt((1, N))}, {_tt(R)}) -> {_tt(R)}']
    m = _module([("x", X), ("c", R)], ops, [("y", R)], ws)
    art = build_module(m, str(tmp_path / "out"), arch=arch, threads=1)
    x = np.zeros((rows, 1), np.float32)
    got = art([x, c])[0]
    want = np.where(c < 0, np.float32(0), c)  # (0 @ w = +0 and +0 + c = c bit for bit, -0 included: -0 + +0 = +0)
    want = np.where(c == 0, np.float32(0), want)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.array_equal(np.asarray(run(m, {"x": x, "c": c})["y"]).view(np.uint32), want.view(np.uint32))
