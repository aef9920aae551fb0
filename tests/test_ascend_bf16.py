"""Ascend target, bf16 models (issue 20: "bf16 activations run on the NPU, and the MoE kernels take bf16 in and
out"): activations, weights and outputs stay bfloat16 in GM, the cube multiplies bf16 operands with f32
accumulation (the fixpipe rounds a plain matmul's C to bf16, F322BF16), the vector kernels widen to f32 in the
Unified Buffer and round once.  Judged as tests/test_ascend_f16.py judges f16: the ONNX models verify (the
verifier's oracle for bf16 is onnxruntime on the f32 analogue, at the bf16 tolerance) with every op on the NPU,
and IR-built MoE layers match the reference semantics at the bf16 tolerance."""
import os
import re

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from moec.driver import CompileOptions, build_module, compile_onnx
from moec.tolerances import TOLERANCES
from test_ascend_f16 import MOE_KERNELS, _plan, moe_block
from test_ascend_vector import _graph as ordinary_ops_graph
from test_moe_ops import CASES as IR_CASES
from test_moe_ops import _module as ir_module

BF16 = np.dtype(ml_dtypes.bfloat16)
BF16_TOL = TOLERANCES["bf16"].to_json()


def _bf16_tensor(a: np.ndarray, name: str):
    b = np.asarray(a, np.float32).astype(BF16)
    return helper.make_tensor(name, TensorProto.BFLOAT16, b.shape, b.view(np.uint16).tobytes(), raw=True)


def to_bf16(model):
    """The model with every f32 tensor made bf16 (initializers, Constant values, inputs/outputs/value infos, Cast
    targets), as tests/helpers.py's to_f16 does for f16."""
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(_bf16_tensor(numpy_helper.to_array(t), t.name))
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.BFLOAT16
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.BFLOAT16
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(_bf16_tensor(numpy_helper.to_array(a.t), a.t.name))
    return m


def _compile_all_on_npu(model, out, sizes=(5, 1, 17)):
    r = compile_onnx(model, out, CompileOptions(target="ascend", symbol_sizes=sizes))
    rep = r.report
    assert rep["verified"], rep.get("failure")
    assert rep["tolerance"] == {"bf16": BF16_TOL}, rep["tolerance"]
    plan = _plan(out)
    assert not plan["host_ops"], plan["host_ops"]
    assert all(s["where"] in ("npu", "view", "const") for s in plan["steps"]), plan["steps"]
    st = r.artifact.stats()
    assert not st["host_ops"], st
    return r, plan, st


def test_bf16_moe_block_runs_entirely_on_the_npu(tmp_path):
    r, plan, st = _compile_all_on_npu(to_bf16(moe_block()), str(tmp_path / "o"))
    steps = {s["op"]: s for s in plan["steps"]}
    assert steps["moe.experts"]["cube_dtype"] == "bf16" and steps["moec.matmul"]["cube_dtype"] == "bf16"
    cube = st["cube"]
    assert cube["mmad_bf16"] > 0 and cube["mmad_f32"] == 0 and cube["mmad_f16"] == 0, cube
    assert all(st["launches"].get(k, 0) > 0 for k in MOE_KERNELS + ("vec_rowwise", "vec_elementwise")), st
    x = np.random.default_rng(0).standard_normal((9, 64)).astype(BF16)
    assert r.artifact([x])[0].dtype == BF16


def test_bf16_ordinary_ops_on_the_vector_kernels(tmp_path):
    """Every elementwise/broadcast/row-wise op of test_ascend_vector's graph, in bf16."""
    r, plan, st = _compile_all_on_npu(to_bf16(ordinary_ops_graph()), str(tmp_path / "o"), (37, 1, 3))
    assert st["launches"].get("vec_elementwise", 0) >= 10 and st["launches"].get("vec_rowwise", 0) >= 5, st


def _ir_bf16(name):
    """test_moe_ops' IR module of a routing family, with every f32 tensor and weight made bf16."""
    from moec.ir import WeightStore, parse_module, print_module
    ra, kw = IR_CASES[name]
    m = ir_module(ra, **kw)
    ws = WeightStore()
    for k, a in m.weights.items():
        ws.set(k, a.astype(BF16) if a.dtype == np.float32 else a)
    return parse_module(re.sub(r"xf32\b", "xbf16", print_module(m)), ws)


@pytest.mark.parametrize("name", ["deepseek_v3", "gpt_oss", "switch_capacity", "qwen2_shared_gate"])
def test_bf16_moe_ops_match_their_semantics(name, tmp_path):
    """route (sigmoid + bias + groups; capacity drops applied by moe_init_routing on bf16 weights), dispatch,
    experts (clamped interleaved SwiGLU with biases, weights at the input), shared experts with a gate and combine,
    built as bf16 IR, run on the emulator with bf16 in and out, against the reference semantics at the bf16
    tolerance."""
    from moec.ir import run
    from moec.verify import compare
    m = _ir_bf16(name)
    art = build_module(m, str(tmp_path / "o"), target="ascend", run_passes=True)
    assert not art.plan["host_ops"], art.plan["host_ops"]
    for T, same in [(7, False), (1, False), (6, True)]:
        x = np.random.default_rng(T).standard_normal((T, 16)).astype(BF16)
        if same:
            x[:] = x[0]
        want = run(m, {"x": x})["y"]
        got = art([x])
        assert got[0].dtype == BF16
        c = compare(["y"], got, [want])
        assert c.ok and c.per_output[0]["dtype"] == "bf16", (name, T, c.message)
    assert art.cube_stats["mmad_bf16"] > 0 and art.cube_stats["mmad_f32"] == 0 and art.cube_stats["mmad_f16"] == 0
    assert not art.host_ops and all(art.launches.get(k, 0) > 0 for k in MOE_KERNELS)


def test_bf16_example_on_the_host_program(tmp_path):
    """The MoE block in bf16: moec_run (bf16 .npy in and out: numpy writes ml_dtypes' bfloat16 as 2-byte void)
    equals the Python artifact bit for bit, at every compile-time plan (symbolic ones too), and the plans launch the
    bf16 kernels."""
    from moec.targets.ascend_backend import build_host_program, run_host_program
    from moec.targets.registry import get_backend
    from test_ascend_host_program import _keys
    out = str(tmp_path / "o")
    r = compile_onnx(to_bf16(moe_block()), out, CompileOptions(target="ascend", symbol_sizes=(3,)))
    assert r.report["verified"] and not r.report["ascend"]["host_ops"], r.report.get("failure")
    assert _keys(out) == ["bf16:1x64", "bf16:4x64", "bf16:{d0=1..16}x64", "bf16:{d0=17..256}x64", "bf16:{d0=257..}x64"]
    exe = build_host_program(out)
    art = get_backend("ascend", "Ascend910B2").load(out)
    for T in (1, 4, 3, 37):  # compile-time sizes, then token counts the symbolic plans cover
        x = np.random.default_rng(T).standard_normal((T, 64)).astype(BF16)
        want = art([x])
        got = run_host_program(exe, out, [x])
        assert len(got) == len(want) == 1 and got[0].dtype == BF16 and got[0].shape == want[0].shape
        np.testing.assert_array_equal(got[0].view(np.uint16), want[0].view(np.uint16))
    assert art.plans_made == 0 and art.cube_stats["mmad_bf16"] > 0 and not art.host_ops


def test_bf16_layout_kernels_against_numpy(tmp_path):
    """vec_transpose and vec_copy (slices with negative steps, expands) move bf16 elements bit for bit."""
    from helpers import make_model
    from moec.codegen.ascend import vector_ops
    from moec.targets.registry import get_backend
    m = make_model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1])], [("x", np.float32, [2, "R", 24])],
                   [("y", np.float32, None)], name="transpose_last2")
    out = str(tmp_path / "out")
    r = compile_onnx(to_bf16(m), out, CompileOptions(target="ascend", symbol_sizes=(37, 1)))
    assert r.report["verified"] and not r.report["ascend"]["host_ops"], r.report.get("failure")
    art = get_backend("ascend", "Ascend910B2").load(out)
    rng = np.random.default_rng(0)
    bits = (lambda a: np.ascontiguousarray(a).view(np.uint16))
    for shp in [(3, 37, 24), (1, 5, 3), (2, 9, 1000)]:
        x = rng.standard_normal(shp).astype(BF16)
        np.testing.assert_array_equal(bits(vector_ops.transpose_last2(art, x)), bits(np.swapaxes(x, -1, -2)))
    x = rng.standard_normal((3, 10, 7)).astype(BF16)
    o = np.zeros((3, 4, 3), BF16)
    vector_ops.copy_strided(art, x, o, [3, 4, 3], [70, -14, -3], [12, 3, 1], soff=8 * 7 + 6)
    np.testing.assert_array_equal(bits(o), bits(x[:, 8:0:-2, ::-3]))
    np.testing.assert_array_equal(bits(vector_ops.expand_to(art, x[:, :1], (3, 5, 7))),
                                  bits(np.broadcast_to(x[:, :1], (3, 5, 7))))
    assert art.launches["vec_transpose"] >= 2 and art.launches.get("vec_copy", 0) >= 1, art.launches


def test_bf16_comparisons_on_vec_mask(tmp_path):
    """Less / LessOrEqual / Greater / Equal / IsNaN on bf16 operands (full, row, per-row and a scalar): vec_mask
    widens bf16 to float before Compare (bfloat16_t is not a Compare type; the emulator refuses it), bit for bit
    against numpy with NaN, +-inf, -0 == +0 and subnormals."""
    from helpers import make_model
    from moec.targets.registry import get_backend
    n = helper.make_node
    nodes = [n("IsNaN", ["x"], ["nan"]), n("Less", ["x", "y"], ["lt"]), n("LessOrEqual", ["x", "z"], ["le"]),
             n("Greater", ["x", "ninf"], ["gt"]), n("Equal", ["x", "y"], ["eq"])]
    outs = ["nan", "lt", "le", "gt", "eq"]
    model = make_model(nodes, [("x", np.float32, [2, "S"]), ("y", np.float32, [1, "S"]), ("z", np.float32, [2, 1])],
                       [(o, np.bool_, None) for o in outs], {"ninf": np.array(-np.inf, np.float32)}, name="compare")
    out = str(tmp_path / "out")
    r = compile_onnx(to_bf16(model), out, CompileOptions(target="ascend", symbol_sizes=(300, 1)))
    assert r.report["verified"] and _plan(out)["host_ops"] == {}, (r.report.get("failure"), _plan(out)["host_ops"])
    art = get_backend("ascend", "Ascend910B2").load(out)
    rng = np.random.default_rng(0)
    fi = ml_dtypes.finfo(BF16)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, float(fi.smallest_subnormal),
                        -float(fi.smallest_subnormal), float(fi.max), 1.0, -1.0], np.float32).astype(BF16)
    S = 2500
    x = rng.choice(special, (2, S)).astype(BF16)
    x[:, ::3] = rng.standard_normal((2, len(range(0, S, 3)))).astype(BF16)
    y = x[1:].copy()
    y[:, ::2] = rng.choice(special, (1, len(range(0, S, 2))))
    z = np.array([[np.nan], [-0.0]], np.float32).astype(BF16)
    got = art([x, y, z])
    xf, yf, zf = (a.astype(np.float32) for a in (x, y, z))
    with np.errstate(invalid="ignore"):
        want = [np.isnan(xf), xf < yf, xf <= zf, xf > -np.inf, xf == yf]
    for name, g, w in zip(outs, got, want):
        assert g.dtype == np.bool_ and g.shape == w.shape, (name, g.dtype, g.shape)
        np.testing.assert_array_equal(g, w, err_msg=name)
    assert all(w.any() and not w.all() for w in want[:2] + want[3:]) and art.launches.get("vec_mask", 0) >= 5


# -- bf16 models with quantised experts (int8, int4, w8a8): bf16 in and out of the MoE kernels ----------------
def _check_quantised(artifact, outdir, mode, x_inputs):
    """The built module keeps bf16 around the quantised experts (no widening casts), every op runs on the NPU,
    the experts dequantise to bf16 for the cube (int8/int4) or quantise rows to int8 (w8a8), and the emulator's
    outputs equal the built module's reference semantics (moec.ir.run) within the derived tolerance: bf16's,
    and for w8a8 the flip criterion (an activation code one step off between the f32 orders flips a token)."""
    from moec.ir import load_module, run
    from moec.tolerances import w8a8_flip_check
    from moec.verify import compare
    plan = _plan(outdir)
    assert not plan["host_ops"], plan["host_ops"]
    m = load_module(os.path.join(outdir, "model.mlir"))
    ex = next(o for o in m.main.ops if o.name == "moe.experts")
    assert ex.attrs["wq"] == ("int8" if mode == "w8a8" else mode) and (ex.attrs["aq"] == "int8") == (mode == "w8a8")
    assert ex.operands[0].type.dtype.mlir == "bf16" and ex.results[0].type.dtype.mlir == "bf16", ex
    assert not any(o.name == "moec.cast" for o in m.main.ops), "the experts' activations were widened"
    step = next(s for s in plan["steps"] if s["op"] == "moe.experts")
    assert step["cube_dtype"] == ("i8" if mode == "w8a8" else "bf16"), step
    pre = {"int8": "moe_dequant_int8", "int4": "moe_dequant_int4", "w8a8": "moe_quant_rows_int8"}[mode]
    for xs in x_inputs:
        got = artifact(xs)
        want = run(m, list(xs))
        want = [want[k] for k in m.main.output_names]
        assert all(g.dtype == BF16 for g in got)
        if mode == "w8a8":
            fc = w8a8_flip_check(got, want)
            assert fc["ok"], fc
        else:
            c = compare([f"o{k}" for k in range(len(got))], got, want)
            assert c.ok, c.message
    st = artifact.stats()
    assert st["launches"].get(pre, 0) > 0 and not st["host_ops"], st
    cube = st["cube"]
    if mode == "w8a8":
        assert cube["mmad_i8"] > 0 and cube["mmad_f32"] == 0, cube
    else:
        assert cube["mmad_bf16"] > 0 and cube["mmad_f32"] == 0 and cube["mmad_i8"] == 0, cube


@pytest.mark.parametrize("mode", ["int8", "int4", "w8a8"])
def test_bf16_block_with_quantised_experts_on_the_npu(mode, tmp_path):
    """The bf16 MoE block (biases, interleaved SwiGLU) with int8 / int4 (groups of 32) / w8a8 experts: verified
    against onnxruntime by the compiler, and equal to its own reference semantics on fresh token counts."""
    out = str(tmp_path / "o")
    r = compile_onnx(to_bf16(moe_block()), out, CompileOptions(target="ascend", symbol_sizes=(5, 1), weights=mode,
                                                                group_size=32))
    assert r.report["verified"], r.report.get("failure")
    rng = np.random.default_rng(1)
    _check_quantised(r.artifact, out, mode, [[rng.standard_normal((T, 64)).astype(BF16)] for T in (7, 1)])


torch = None
try:  # the zoo families from their PyTorch modules (moec.compile)
    import torch
except ImportError:  # pragma: no cover
    pass


def _zoo_cases():
    if torch is None:
        return []
    from zoo import modules
    default = set()  # every case is a point of a cross product of ~30-120 s: -m slow (the bf16 block above runs
    # every mode by default, verified against onnxruntime and equal to its reference semantics)
    return [pytest.param(c.__name__, mode, marks=[] if (c.__name__, mode) in default else [pytest.mark.slow])
            for c in modules.ALL for mode in ("int8", "int4", "w8a8")]


@pytest.mark.parametrize("family,mode", _zoo_cases())
def test_bf16_zoo_family_with_quantised_experts(family, mode, moec_module_cache):
    """Every zoo family as a bf16 PyTorch module with int8 / int4 / w8a8 experts (-m slow): verified against the
    module by moec.compile, bf16 in and out of the MoE kernels, no host op, equal to the built module's reference."""
    import moec
    from zoo import make_inputs, make_module, modules
    cls = {c.__name__: c for c in modules.ALL}[family]
    mod = make_module(cls).to(torch.bfloat16)
    cm = moec.compile(mod, (torch.from_numpy(make_inputs(6)).to(torch.bfloat16),), target="ascend", weights=mode,
                      group_size=16)  # (int4: a divisor of every zoo family's D and F)
    assert cm.stats.verified, cm.stats.report.get("verification")
    assert [lay["family"] for lay in cm.stats.report["moe_layers"]] == [cls.family]
    w = cm.stats.report["moe_layers"][0]["weights"]
    assert w["mode"] == mode and "widened" not in w.get("activations", ""), w  # not widened to f32
    xs = [[make_inputs(T, seed=T).astype(BF16)] for T in (9, 1)]
    _check_quantised(cm.artifact, cm.stats.outdir, mode, xs)
