"""No silent no-ops, no needless copies (issue 16 item 4).

* ``--weights int8`` says what was quantised (layers, tensors, bytes before/after) on the CLI line and
  in report.json, and warns plainly when nothing was (a model with no recognised MoE layer).
* fold-constants folds slices of a constant whatever the number of uses of the sliced constant (the
  per-expert Gather from a stacked weight), without growing the weights once every use is a slice.
"""
import json

import numpy as np
import onnx

from moec.cli import main
from moec.ir import DType, Module, TensorType, verify_module
from moec.ir.core import Function, ResourceRef, Value
from moec.ir.opdef import OPS
from moec.passes.dce import DeadCodeElimination
from moec.passes.fold_constants import FoldConstants
from moec.passes.base import run_to_fixed_point


def _save(tmp_path, model, name):
    p = tmp_path / f"{name}.onnx"
    onnx.save(model, str(p))
    return p


def test_int8_on_unrecognised_model_warns_that_nothing_was_quantised(tmp_path, capsys):
    from moec.zoo.graphs import near_misses
    why, model = near_misses()["near_tanh_logits"]
    p = _save(tmp_path, model, "near")
    out = tmp_path / "out"
    # (--weights-scope experts: the default, all, would quantise the model's dense matmuls instead)
    assert main(["compile", str(p), "-o", str(out), "--weights", "int8", "--weights-scope", "experts",
                 "--sizes", "3,1"]) == 0
    text = capsys.readouterr().out
    assert "MoE layers recognised: 0" in text
    warn = [ln for ln in text.splitlines() if "warning:" in ln]
    assert warn and "nothing was quantised" in warn[0] and "no MoE layer was recognised" in warn[0], text
    assert "VERIFIED" in text and "nothing was quantised" in text.splitlines()[-1]
    rep = json.load(open(out / "report.json"))
    w = rep["weights"]
    assert w["mode"] == "int8" and w["quantized_layers"] == 0 and w["quantized_tensors"] == 0
    assert w["bytes_before"] == w["bytes_after"] == 0 and "nothing was quantised" in w["warning"]


def test_int8_on_recognised_model_says_what_was_quantised(tmp_path, capsys):
    from moec.zoo.graphs import unrolled
    p = _save(tmp_path, unrolled("mixtral"), "mixtral")
    out = tmp_path / "out"
    assert main(["compile", str(p), "-o", str(out), "--weights", "int8", "--sizes", "3,1"]) == 0
    text = capsys.readouterr().out
    assert "nothing was quantised" not in text
    rep = json.load(open(out / "report.json"))
    w = rep["weights"]
    assert w["quantized_layers"] == 1 and w["quantized_tensors"] == 2 and "warning" not in w
    # int8 weights: a quarter of the f32 bytes, plus one f32 scale per output channel
    L = rep["moe_layers"][0]
    E, D, F = L["E"], L["D"], L["F"]
    assert w["bytes_before"] == 4 * E * (2 * F * D + D * F)
    assert w["bytes_after"] == E * (2 * F * D + D * F) + 4 * E * (2 * F + D)
    assert f"int8 weights (scope all): 1 MoE layer(s) (2 tensors) quantised, {w['bytes_before'] / 1e6:.2f} MB -> " \
           f"{w['bytes_after'] / 1e6:.2f} MB" in text


def test_f32_build_has_no_warning(tmp_path, capsys):
    from moec.zoo.graphs import near_misses
    _, model = near_misses()["near_tanh_logits"]
    p = _save(tmp_path, model, "near")
    assert main(["compile", str(p), "-o", str(tmp_path / "o"), "--no-verify"]) == 0
    assert "warning:" not in capsys.readouterr().out
    assert "warning" not in json.load(open(tmp_path / "o" / "report.json"))["weights"]


def _stacked_gathers(E=4, F=64, D=80, extra_use=False):
    """y_e = x @ W[e] for every expert e, W a stacked [E, D, F] weight in the store, W[e] a Gather with a
    constant index (how a per-expert Python loop over a stacked parameter exports)."""
    m = Module()
    W = np.random.default_rng(0).standard_normal((E, D, F)).astype(np.float32)
    key = m.weights.add(W, "stacked")
    x = TensorType(DType.F32, ("T", D))
    f = Function("main", [Value(x, "x")], ["x"])
    m.functions.append(f)
    c = OPS["moec.constant"].create([], {"value": ResourceRef(key)}, "W", [TensorType(DType.F32, (E, D, F))])
    f.ops.append(c)
    outs = []
    for e in range(E):
        i = OPS["moec.constant"].create([], {"value": np.array(e, np.int64)}, f"idx{e}")
        g = OPS["moec.gather"].create([c.results[0], i.results[0]], {"axis": 0}, f"gather_expert{e}")
        mm = OPS["moec.matmul"].create([f.args[0], g.results[0]], {}, f"expert{e}")
        f.ops += [i, g, mm]
        outs.append(mm.results[0])
    if extra_use:  # the stacked weight itself is also used (here: returned)
        outs.append(c.results[0])
    f.outputs = outs
    f.output_names = [f"y{i}" for i in range(len(outs))]
    verify_module(m)
    return m, W


def test_per_expert_gather_of_a_multi_use_stacked_weight_is_folded():
    m, W = _stacked_gathers()
    before = m.weights.nbytes()
    run_to_fixed_point(m, [FoldConstants(), DeadCodeElimination()])
    verify_module(m)
    names = [o.name for o in m.main.ops]
    assert "moec.gather" not in names, names  # the old pass left all 4 (the stacked weight has 4 uses)
    # every use of the stack was a slice: the stack is dropped, the weights do not grow
    assert m.weights.nbytes() == before
    ws = sorted((np.asarray(m.weights[o.attrs["value"].key]) for o in m.main.ops
                 if o.name == "moec.constant" and isinstance(o.attrs["value"], ResourceRef)),
                key=lambda a: float(a.reshape(-1)[0]))
    assert sorted(float(a.reshape(-1)[0]) for a in ws) == sorted(float(W[e].reshape(-1)[0]) for e in range(4))
    from moec.ir import run
    x = np.random.default_rng(1).standard_normal((3, 80)).astype(np.float32)
    got = list(run(m, [x]).values())
    for e in range(4):
        np.testing.assert_allclose(got[e], x @ W[e], rtol=1e-5, atol=1e-5)


def test_slices_fold_when_the_stack_stays_used_and_growth_is_bounded():
    m, W = _stacked_gathers(extra_use=True)
    before = m.weights.nbytes()
    run_to_fixed_point(m, [FoldConstants(), DeadCodeElimination()])
    assert "moec.gather" not in [o.name for o in m.main.ops]
    # the stack stays (another use) and the slices are stored beside it: at most the stack once more
    assert before < m.weights.nbytes() <= 2 * before


def test_same_size_view_of_a_multi_use_constant_is_not_folded():
    m = Module()
    W = np.random.default_rng(0).standard_normal((64, 80)).astype(np.float32)
    key = m.weights.add(W, "w")
    f = Function("main", [Value(TensorType(DType.F32, ("T", 64)), "x")], ["x"])
    m.functions.append(f)
    c = OPS["moec.constant"].create([], {"value": ResourceRef(key)}, "W", [TensorType(DType.F32, (64, 80))])
    t = OPS["moec.transpose"].create([c.results[0]], {"perm": (1, 0)}, "t")
    mm1 = OPS["moec.matmul"].create([f.args[0], c.results[0]], {}, "a")
    mm2 = OPS["moec.matmul"].create([mm1.results[0], t.results[0]], {}, "b")
    f.ops += [c, t, mm1, mm2]
    f.outputs, f.output_names = [mm2.results[0]], ["y"]
    verify_module(m)
    before = m.weights.nbytes()
    run_to_fixed_point(m, [FoldConstants(), DeadCodeElimination()])
    assert "moec.transpose" in [o.name for o in m.main.ops] and m.weights.nbytes() == before


def test_repeated_slices_of_a_kept_source_are_capped():
    """The same expert slice taken 6 times from a [4, ...] stack that stays used: the folded slices are
    capped at the stack's own size (4 folded, the weights at most double), not 6 copies."""
    m, W = _stacked_gathers(E=4, extra_use=True)
    f = m.main
    gathers = [o for o in f.ops if o.name == "moec.gather"]
    idx0 = gathers[0].operands[1]
    for g in gathers:  # every gather takes expert 0
        g.operands[1] = idx0
    outs = list(f.outputs)
    for j in range(2):  # and two more of it
        g = OPS["moec.gather"].create([gathers[0].operands[0], idx0], {"axis": 0}, f"again{j}")
        mm = OPS["moec.matmul"].create([f.args[0], g.results[0]], {}, f"again_mm{j}")
        f.ops += [g, mm]
        outs.append(mm.results[0])
    f.outputs, f.output_names = outs, [f"y{i}" for i in range(len(outs))]
    verify_module(m)
    before = m.weights.nbytes()
    run_to_fixed_point(m, [FoldConstants(), DeadCodeElimination()])
    verify_module(m)
    assert [o.name for o in m.main.ops].count("moec.gather") == 2
    assert m.weights.nbytes() == 2 * before
