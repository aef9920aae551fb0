"""The Triton launcher is generated at compile time: model_triton.py holds the input types, the kernel calls
and the host segments (ops with no Triton kernel, as literals), so that loading an artifact parses no IR, and
the host segments run on the IR walker.  Runs under Triton's interpreter where there is no GPU."""
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from moec.driver import build_module  # noqa: E402
from moec.ir import DType, Function, Module, TensorType, Value, run  # noqa: E402
from moec.ir.core import ResourceRef  # noqa: E402
from moec.ir.opdef import OPS  # noqa: E402


def _module():
    """matmul (kernel) -> shape, constant_of_shape, topk (one host segment) -> cast, add (kernels) ->
    transpose (a second host segment); an inline constant and a weight."""
    m = Module()
    x = Value(TensorType(DType.F32, ("T", 8)), "x")
    f = Function("main", [x], ["x"])
    m.functions.append(f)
    rng = np.random.default_rng(0)
    key = m.weights.add(rng.standard_normal((8, 8)).astype(np.float32), "w")

    def add(name, operands, attrs=None, types=None):
        return f.add(OPS[name].create(operands, attrs or {}, f"node_{name}", types)).results

    (w,) = add("moec.constant", [], {"value": ResourceRef(key)}, [TensorType(DType.F32, (8, 8))])
    (h,) = add("moec.matmul", [x, w])
    (s,) = add("moec.shape", [h])
    (k,) = add("moec.constant", [], {"value": np.asarray(3, np.int64)})
    (z,) = add("moec.constant_of_shape", [s], {"value": np.asarray([0.5], np.float32)},
               [TensorType(DType.F32, ("T", 8))])
    tv, ti = add("moec.topk", [h, k], {"axis": -1}, [TensorType(DType.F32, ("T", 3)), TensorType(DType.I64, ("T", 3))])
    (cf,) = add("moec.cast", [ti], {"to": DType.F32})
    (y,) = add("moec.add", [tv, cf])
    (o1,) = add("moec.add", [z, h])
    (t,) = add("moec.transpose", [y], {"perm": [1, 0]})
    f.outputs, f.output_names = [t, o1, ti], ["t", "o1", "ti"]
    return m


def test_host_segments_are_literals_and_the_artifact_loads_without_ir(tmp_path):
    m = _module()
    art = build_module(m, str(tmp_path / "out"), target="triton")
    src = open(tmp_path / "out" / "model_triton.py").read()
    # two host segments, each one call; the first's internal shape value never leaves the host
    assert src.count("rt_host.host_run(") == 2 and "HOST_OPS_STATIC = 4" in src
    assert "'moec.shape'" in src and "'moec.constant_of_shape'" in src and "'moec.transpose'" in src
    assert "M_OPS" not in src and "rt.matmul(" in src and "rt.binary(" in src and "rt.cast(" in src
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    want = run(m, {"x": x})
    got = art([x])
    for g, n in zip(got, ["t", "o1", "ti"]):
        np.testing.assert_allclose(g, want[n], rtol=1e-5, atol=1e-6)
    assert art.stats == {"moec.shape": 1, "moec.constant_of_shape": 1, "moec.topk": 1, "moec.transpose": 1}
    # the launcher needs no IR text: the artifact without model.mlir loads and gives the same results
    os.remove(tmp_path / "out" / "model.mlir")
    from moec.targets import backend
    again = backend("triton").load(str(tmp_path / "out"))
    for g, h in zip(again([x]), got):
        np.testing.assert_array_equal(g, h)
    # input checks come from the launcher's INPUTS
    from moec.errors import RuntimeFailure
    with pytest.raises(RuntimeFailure, match="element type f64"):
        again([x.astype(np.float64)])
    with pytest.raises(RuntimeFailure, match="rank 1"):
        again([x[0]])


def test_segment_literals_round_trip_every_attribute_kind():
    """Each host op written by the emitter and built back at load time has the same attributes, operand and
    result types (element types, tensors through the constants store, inf, strings, lists)."""
    from moec.codegen.triton import host
    from moec.codegen.triton.emitter import _segment
    from moec.ir.weights import WeightStore
    a = Value(TensorType(DType.F32, ("T", 4)), "a")
    ids = Value(TensorType(DType.I64, ("T",)), "i")
    ops = [OPS["moec.cast"].create([a], {"to": DType.BF16}, "c\n'\"loc"),
           OPS["moec.transpose"].create([a], {"perm": [1, 0]}),
           OPS["moec.constant_of_shape"].create([ids], {"value": np.asarray([7], np.int64)}, None,
                                                [TensorType(DType.I64, (None,))]),
           OPS["moe.route"].create([a], {"k": 2, "scoring": "sigmoid", "group_fill": float("-inf")})]
    store = WeightStore()
    lit = _segment(ops, [a, ids], [ops[0].result, ops[3].results[1]], store)
    seg = eval(lit, {"seg": host.segment, "dt": host.dtype, "A": store})  # noqa: S307 - moec's own literal
    assert [o.name for o in seg.ops] == [o.name for o in ops]
    for o, b in zip(ops, seg.ops):
        assert set(o.attrs) == set(b.attrs)
        for k, v in o.attrs.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(v, b.attrs[k])
                assert v.dtype == b.attrs[k].dtype
            else:
                assert v == b.attrs[k], (o.name, k)
        assert [r.type for r in o.results] == [r.type for r in b.results]
        assert [v.type for v in o.operands] == [v.type for v in b.operands]
        assert o.loc == b.loc
    assert seg.outputs == [seg.ops[0].result, seg.ops[3].results[1]]
