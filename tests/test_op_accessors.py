"""Typed accessors on ops (issue 18 item 6): ``moe.experts``' optional ``extra*`` operands named once
(``ExpertsOp.extras()`` / ``experts_extras``) for the reference semantics and every code generator, and
the kernels' enum codes derived from ir/ops/moe.py's choice tuples."""
import itertools

import pytest

from moec.ir import DType, TensorType
from moec.ir.core import Value
from moec.ir.opdef import OPS
from moec.ir.ops import moe


def _experts(has_b_in, has_b_out, weights_at, wq, zp, pn=False):
    """A moe.experts with every optional operand it can have for these attributes, each a distinct
    named Value; returns the op and {name: Value}."""
    E, D, F, T, k = 2, 4, 2, 3, 1
    f32, i64 = DType.F32, DType.I64
    x, ids = Value(TensorType(f32, (T, D)), "x"), Value(TensorType(i64, (T, k)), "ids")
    d = OPS["moe.dispatch"].create([ids], {"num_experts": E})
    wdt = {"none": f32, "int8": DType.I8, "int4": DType.U8}[wq]
    kd = D // 2 if wq == "int4" else D
    kf = F // 2 if wq == "int4" else F
    named = {"w_in": Value(TensorType(wdt, (E, 2 * F, kd)), "w_in"), "w_out": Value(TensorType(wdt, (E, D, kf)), "w_out")}
    extra = []
    if has_b_in:
        extra.append(("b_in", TensorType(f32, (E, 2 * F))))
    if has_b_out:
        extra.append(("b_out", TensorType(f32, (E, D))))
    if weights_at != "none":
        extra.append(("rw", TensorType(f32, (T, k))))
    if pn:  # the post-expert RMSNorm's per-expert weight (Ergo), after the routing weights
        extra.append(("pn_w", TensorType(f32, (E, D))))
    if wq != "none":
        sh = (lambda rows: (E, rows)) if wq == "int8" else (lambda rows: (E, rows, 1))
        extra += [("s_in", TensorType(f32, sh(2 * F))), ("s_out", TensorType(f32, sh(D)))]
        if zp:
            extra += [("z_in", TensorType(f32, sh(2 * F))), ("z_out", TensorType(f32, sh(D)))]
    named.update({n: Value(t, n) for n, t in extra})
    attrs = {"has_b_in": has_b_in, "has_b_out": has_b_out, "weights_at": weights_at, "wq": wq, "wq_zp": zp}
    if pn:
        attrs.update(post_norm_eps=1e-6, has_post_norm_w=True)
    if wq == "int4":
        attrs["wq_group"] = 0
    ops = [x, ids, d.results[0], d.results[1], named["w_in"], named["w_out"]] + [named[n] for n, _ in extra]
    o = OPS["moe.experts"].create(ops, attrs)
    return o, {n: named[n] for n, _ in extra}


CASES = [c for c in itertools.product((False, True), (False, True), ("none", "input", "output"),
                                      ("none", "int8", "int4"), (False, True)) if c[4] <= (c[3] == "int4")]
# the post-norm weight with every other operand, and alone
CASES += [(True, True, "output", "int4", True, True), (False, False, "none", "none", False, True),
          (True, False, "input", "int8", False, True)]


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_extras_name_every_optional_operand(case):
    o, named = _experts(*case)
    e = o.extras()
    assert e._fields == ("b_in", "b_out", "rw", "s_in", "s_out", "z_in", "z_out", "pn_w")
    for field in e._fields:
        assert getattr(e, field) is named.get(field), field
    # the same split over any sequence (buffer names in code generators)
    names = moe.experts_extras(o.attrs, [v.name for v in o.operands[6:]])
    assert names == tuple(v.name if v is not None else None for v in e)
    assert o._extras() == (e.b_in, e.b_out, e.rw) and o.quant_operands() == (e.s_in, e.s_out, e.z_in, e.z_out)


def test_extras_count_mismatch_is_an_error():
    attrs = {"has_b_in": True, "has_b_out": False, "weights_at": "output", "wq": "int8", "wq_zp": False}
    with pytest.raises(ValueError, match="expected, got 1"):
        moe.experts_extras(attrs, ["b_in", "s_in", "s_out"])
    with pytest.raises(ValueError, match="1 unexpected"):
        moe.experts_extras(attrs, ["b_in", "rw", "extra", "s_in", "s_out"])
    with pytest.raises(ValueError, match="needs 2"):
        moe.experts_extras(attrs, ["s_in"])


def test_enum_codes_are_the_ir_tuples_and_the_kernel_tables_read_them():
    assert moe.SCORING_CODES == {s: i for i, s in enumerate(moe.SCORING)}
    assert moe.POST_CODES["sparsemixer"] == moe.POST.index("sparsemixer")
    assert moe.WEIGHTS_AT_CODES == {"none": 0, "input": 1, "output": 2}
    pytest.importorskip("triton")
    from moec.codegen.triton import runtime as rt
    from moec.targets import ascend_backend as ab
    for table in (rt.SCORING, rt.POST, rt.NORM, ab.SCORING, ab.POST, ab.NORM):
        assert table in (moe.SCORING_CODES, moe.POST_CODES, moe.NORM_CODES)
    for table in (rt.ACT, ab.ACT):
        assert table and all(moe.ACTIVATION_CODES[a] == c for a, c in table.items())
