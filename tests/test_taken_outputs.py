"""Large outputs are handed to numpy without a copy (targets/cpu.py _OutputBlock, rt_model.c moec_free_block): the
runtime's block becomes the array's memory, stays alive as long as any view of it, and goes back to the runtime's
scratch pool afterwards (the next call reuses it: no copy, no page faults)."""
import gc
import threading

import numpy as np
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.targets.cpu import _TAKE_MIN_BYTES, _OutputBlock
from moec.targets.registry import CpuArtifact

D = 64
BIG = 2 * _TAKE_MIN_BYTES // (4 * D)  # rows: a [BIG, D] f32 output is twice the threshold


def _art(tmp_path):
    # Y = X + X (a fresh block), Z = the row sums (small: copied), W = X itself (the input's memory: copied)
    m = make_model([helper.make_node("Add", ["X", "X"], ["Y"]),
                    helper.make_node("ReduceSum", ["X", "ax"], ["Z"], keepdims=0),
                    helper.make_node("Identity", ["X"], ["W"])],
                   [("X", np.float32, ["T", D])], [("Y", np.float32, ["T", D]), ("Z", np.float32, ["T"]),
                                                   ("W", np.float32, ["T", D])],
                   {"ax": np.array([1], np.int64)})
    out = str(tmp_path / "a")
    compile_onnx(m, out, CompileOptions(verify=False, force=True))
    return CpuArtifact(out, threads=2)


def _x(seed, rows=BIG):
    return np.random.default_rng(seed).standard_normal((rows, D)).astype(np.float32)


def _addr(a):
    return a.__array_interface__["data"][0]


def test_large_output_is_the_runtime_block_small_and_aliased_ones_are_copies(tmp_path):
    art = _art(tmp_path)
    x = _x(0)
    y, z, w = art([x])
    np.testing.assert_array_equal(y, x + x)
    assert isinstance(y.base, _OutputBlock) and y.flags.writeable and y.flags.c_contiguous
    y[0, 0] = 7.0  # (the caller owns it)
    np.testing.assert_allclose(z, x.sum(1), rtol=1e-5, atol=1e-5)
    assert z.base is None  # below the threshold: copied
    np.testing.assert_array_equal(w, x)
    assert not np.shares_memory(w, x)  # an output that is the caller's input is a copy, never the input itself
    # below the threshold the large output is copied too
    ys = art([_x(1, rows=4)])[0]
    assert ys.base is None
    np.testing.assert_array_equal(ys, 2 * _x(1, rows=4))


def test_a_held_output_is_never_reused_and_a_released_one_is(tmp_path):
    art = _art(tmp_path)
    x1, x2, x3 = _x(1), _x(2), _x(3)
    y1 = art([x1])[0]
    view = y1[3:5]
    a1 = _addr(y1)
    del y1
    gc.collect()
    y2 = art([x2])[0]  # the first block is still held (through the view): a different block
    assert not np.shares_memory(view, y2)
    np.testing.assert_array_equal(view, 2 * x1[3:5])
    np.testing.assert_array_equal(y2, 2 * x2)
    a2 = _addr(y2)
    del view, y2
    gc.collect()
    y3 = art([x3])[0]  # both released: the pool hands one of them back (no fresh memory, no page faults)
    assert _addr(y3) in (a1, a2)
    np.testing.assert_array_equal(y3, 2 * x3)


def test_taken_outputs_from_threads(tmp_path):
    art = _art(tmp_path)
    held, errors = {}, []

    def work(t):
        try:
            outs = [(i, art([_x(10 * t + i)])[0]) for i in range(6)]
            held[t] = outs
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ths = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors
    addrs = set()
    for t, outs in held.items():
        for i, y in outs:
            np.testing.assert_array_equal(y, 2 * _x(10 * t + i))
            addrs.add(_addr(y))
    assert len(addrs) == 18  # every live output its own block
