"""Verification: run compiled code and onnxruntime on the same seeded inputs and compare.

Inputs: floats ~ N(0, 1); integer inputs drawn in a valid range (when an
input feeds an op as indices, [0, that dimension); otherwise [0, 4)); bools
uniform.  Dynamic dimensions are tried at several sizes (the default size,
1, and one more) so a dynamic token count is exercised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .ir import DType, Function, TensorType
from .tolerances import Tolerance, tolerance_for

DEFAULT_SYMBOL_SIZES = (5, 1, 3)


def symbols_of(f: Function) -> List[str]:
    out: List[str] = []
    for a in f.args:
        for d in a.type.shape:
            if isinstance(d, str) and d not in out:
                out.append(d)
    return out


def shape_trials(f: Function, sizes: Sequence[int] = DEFAULT_SYMBOL_SIZES,
                 fixed: Optional[Dict[str, int]] = None) -> List[Dict[str, int]]:
    """Symbol bindings to try: one per size in ``sizes`` (just one when static)."""
    syms = symbols_of(f)
    if not syms:
        return [{}]
    trials = []
    for s in sizes:
        b = {k: s for k in syms}
        if fixed:
            b.update({k: v for k, v in fixed.items() if k in syms})
        if b not in trials:
            trials.append(b)
    return trials


def concrete_shape(t: TensorType, binding: Dict[str, int]) -> tuple:
    out = []
    for d in t.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, str):
            out.append(binding[d])
        else:
            out.append(1)
    return tuple(out)


def _index_ranges(f: Function) -> Dict[int, int]:
    """id(arg) -> exclusive upper bound for inputs used as indices."""
    args = {id(a) for a in f.args}
    out: Dict[int, int] = {}
    for o in f.ops:
        # ops declare `index_operand = (index operand, data operand, axis attribute or None)`
        spec = getattr(type(o), "index_operand", None)
        if spec is None:
            continue
        ii, di, axis_attr = spec
        idx = o.operands[ii]
        if id(idx) not in args:
            continue
        data_t = o.operands[di].type
        axis = o.attrs.get(axis_attr, 0) if axis_attr else 0
        if data_t.rank:
            d = data_t.shape[axis % data_t.rank]
            if isinstance(d, int) and d > 0:
                out[id(idx)] = min(out.get(id(idx), d), d)
    return out


def make_inputs(f: Function, binding: Dict[str, int], seed: int = 0, identical: bool = False) -> List[np.ndarray]:
    """Seeded inputs; ``identical`` repeats the first row along dim 0 of float inputs (every token
    the same: in an MoE layer most experts then get no tokens and capacity limits are hit)."""
    rng = np.random.default_rng(seed)
    ranges = _index_ranges(f)
    xs = []
    for a in f.args:
        t = a.type
        shape = concrete_shape(t, binding)
        dt = t.dtype
        if dt.is_float:
            x = rng.standard_normal(shape).astype(dt.np)
            if identical and x.ndim >= 2 and x.shape[0] > 1:
                x[:] = x[:1]
        elif dt == DType.BOOL:
            x = rng.random(shape) < 0.5
        else:
            hi = ranges.get(id(a), 4)
            x = rng.integers(0, hi, size=shape).astype(dt.np)
        xs.append(x)
    return xs


@dataclass
class Comparison:
    ok: bool
    max_abs_err: float
    max_rel_err: float
    worst_output: Optional[str]
    message: str = ""
    per_output: List[dict] = field(default_factory=list)


def compare(names: Sequence[str], got: Sequence[np.ndarray], want: Sequence[np.ndarray],
            tol_override: Optional[Tolerance] = None) -> Comparison:
    ok = True
    max_abs = max_rel = 0.0
    worst, worst_excess, msg = None, -1.0, ""
    per = []
    for n, g, w in zip(names, got, want):
        w = np.asarray(w)
        g = np.asarray(g)
        dname = DType.from_np(w.dtype).mlir if w.dtype != np.dtype(object) else "?"
        tol = tol_override or tolerance_for(dname)
        entry = {"name": n, "dtype": dname, "shape": list(w.shape), "tolerance": tol.to_json()}
        if g.shape != w.shape:
            ok = False
            entry.update(ok=False, error=f"shape {list(g.shape)} != expected {list(w.shape)}")
            per.append(entry)
            if worst_excess < float("inf"):
                worst, worst_excess, msg = n, float("inf"), entry["error"]
            continue
        if g.dtype != w.dtype:
            ok = False
            entry.update(ok=False, error=f"dtype {g.dtype} != expected {w.dtype}")
            per.append(entry)
            worst, worst_excess, msg = n, float("inf"), entry["error"]
            continue
        if w.size == 0:
            entry.update(ok=True, max_abs_err=0.0, max_rel_err=0.0)
            per.append(entry)
            continue
        gf = g.astype(np.float64)
        wf = w.astype(np.float64)
        nan_g, nan_w = np.isnan(gf), np.isnan(wf)
        bad_nan = np.any(nan_g != nan_w)
        inf_mismatch = np.any((np.isinf(wf) | np.isinf(gf)) & ~(gf == wf) & ~(nan_g | nan_w))
        both = ~(nan_g | nan_w) & ~(np.isinf(wf) & (gf == wf))
        with np.errstate(all="ignore"):
            diff = np.where(both, np.abs(gf - wf), 0.0)
            rel = np.where(both, diff / np.maximum(np.abs(wf), 1e-30), 0.0)
            allowed = tol.atol + tol.rtol * np.abs(wf)
            excess = np.where(both, diff - allowed, -1.0)
        a = float(np.nanmax(np.where(np.isfinite(diff), diff, 0))) if diff.size else 0.0
        r = float(np.nanmax(np.where(np.isfinite(rel) & (diff > tol.atol), rel, 0))) if rel.size else 0.0
        this_ok = not bad_nan and not inf_mismatch and not np.any(excess > 0)
        entry.update(ok=bool(this_ok), max_abs_err=a, max_rel_err=r)
        per.append(entry)
        max_abs, max_rel = max(max_abs, a), max(max_rel, r)
        if not this_ok:
            ok = False
            ex = float(np.max(excess)) if not (bad_nan or inf_mismatch) else float("inf")
            if ex > worst_excess:
                worst_excess = ex
                worst = n
                if bad_nan:
                    msg = f"output '{n}': NaN in different positions"
                elif inf_mismatch:
                    msg = f"output '{n}': infinities differ"
                else:
                    pos = np.unravel_index(int(np.argmax(excess)), w.shape)
                    msg = (f"output '{n}': max abs error {a:.3g} (at index {tuple(int(p) for p in pos)}: got "
                           f"{gf[pos]:.6g}, expected {wf[pos]:.6g}); tolerance atol={tol.atol:g} rtol={tol.rtol:g}")
    return Comparison(ok, max_abs, max_rel, worst, msg, per)


def run_onnxruntime(model_bytes: bytes, input_names: Sequence[str], inputs: Sequence[np.ndarray],
                    threads: int = 2) -> List[np.ndarray]:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 4  # (a kernel it lacks is raised as an exception; its error log is noise)
    try:
        sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        # a newer onnx package may stamp an IR version this onnxruntime does not know yet;
        # the ops are unchanged, so retry with the newest IR version it supports
        import re
        m = re.search(r"max supported IR version: (\d+)", str(e))
        if not m:
            raise
        import onnx
        proto = onnx.load_from_string(model_bytes)
        proto.ir_version = int(m.group(1))
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ro = ort.RunOptions()
    ro.log_severity_level = 4
    return sess.run(None, dict(zip(input_names, inputs)), ro)


# slack for half-precision verification: one rounding of the output (2^-8 bf16, 2^-11 f16), relative
HALF_EPS = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}


def half_trial(got, want, ref, dtype: str, others: Sequence = ()) -> dict:
    """moec's half-precision outputs ``got`` against the f32 model's ``ref``, next to the model's own
    half-precision outputs ``want`` (PyTorch eager, onnxruntime on the model, or moec's interpreter
    running it op by op; ``others``: more such runs, the worst per token counts, since each is a
    faithful execution and onnxruntime may fuse away roundings the model's ops specify).  Per token
    (first axis), the relative L2 error to ``ref``; it passes when moec's mean is at most 1.25x the
    model's own + eps/4 and its max at most 2x + eps (eps: one rounding to the type).  moec computes
    inside its fused ops in f32 and rounds once, so it is usually better than the model's own run; a
    wrong routing weight, a dropped renormalisation or a wrong expert moves whole tokens by 1e-2..1
    relative and fails."""
    eps = HALF_EPS[dtype]
    em, ee, max_abs = [], [], 0.0
    for i, (g, w, r) in enumerate(zip(got, want, ref)):
        g, w, r = (np.asarray(a, np.float64) for a in (g, w, r))
        if g.shape != r.shape:
            return {"ok": False, "failure": f"shape {list(g.shape)} != expected {list(r.shape)}",
                    "max_abs_err_vs_eager": float("inf")}
        if r.size == 0:
            continue
        g2, w2, r2 = (a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1) for a in (g, w, r))
        nr = np.linalg.norm(r2, axis=1)
        # (a token whose f32 output is ~0, e.g. every expert dropped, is measured against the batch's scale)
        den = np.maximum(nr, max(1e-3 * float(nr.max(initial=0.0)), 1e-30))
        em += list(np.linalg.norm(g2 - r2, axis=1) / den)
        base = np.linalg.norm(w2 - r2, axis=1) / den
        for o in others:
            o2 = np.asarray(o[i], np.float64).reshape(r2.shape)
            base = np.maximum(base, np.linalg.norm(o2 - r2, axis=1) / den)
        ee += list(base)
        max_abs = max(max_abs, float(np.max(np.abs(g - w))) if g.size else 0.0)
    if not em:
        return {"ok": True, "max_abs_err_vs_eager": max_abs}
    em, ee = np.array(em), np.array(ee)
    if not np.all(np.isfinite(em)):
        return {"ok": False, "failure": "non-finite outputs", "max_abs_err_vs_eager": max_abs}
    t = {"moec_token_rel_err": {"mean": float(em.mean()), "max": float(em.max())},
         "eager_token_rel_err": {"mean": float(ee.mean()), "max": float(ee.max())},
         "max_abs_err_vs_eager": max_abs}
    lim_mean, lim_max = 1.25 * ee.mean() + eps / 4, 2 * ee.max() + eps
    t["ok"] = bool(em.mean() <= lim_mean and em.max() <= lim_max)
    if not t["ok"]:
        t["failure"] = (f"{dtype} error against the f32 model: moec mean {em.mean():.3g} / max {em.max():.3g} "
                        f"per token, the model's own {dtype} run {ee.mean():.3g} / {ee.max():.3g} (allowed "
                        f"{lim_mean:.3g} / {lim_max:.3g}; a token within {dtype} rounding of a routing tie may "
                        "legitimately route differently: check it, or skip verification with --no-verify / verify=False)")
    return t


_HALF_ONNX = (16, 10)  # TensorProto.BFLOAT16, TensorProto.FLOAT16


def widen_half_model(proto):
    """A copy of ONNX model ``proto`` with every bf16/f16 tensor, type and cast made float32: the model's
    f32 analogue, which onnxruntime's CPU provider can run where it has no bf16 kernels.  None if the
    model holds no half-precision type."""
    import onnx
    from onnx import AttributeProto, TensorProto, numpy_helper
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    changed = [False]

    def tensor(t):
        if t.data_type in _HALF_ONNX:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
            changed[0] = True

    def vtype(tp):
        if tp.HasField("tensor_type") and tp.tensor_type.elem_type in _HALF_ONNX:
            tp.tensor_type.elem_type = TensorProto.FLOAT
            changed[0] = True
        for f in ("sequence_type", "optional_type"):
            if tp.HasField(f):
                vtype(getattr(tp, f).elem_type)

    def graph(g):
        for t in g.initializer:
            tensor(t)
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            vtype(vi.type)
        for n in g.node:
            for a in n.attribute:
                if a.type == AttributeProto.INT and a.name in ("to", "dtype", "output_datatype") \
                        and a.i in _HALF_ONNX:
                    a.i = TensorProto.FLOAT
                    changed[0] = True
                elif a.type == AttributeProto.TENSOR:
                    tensor(a.t)
                elif a.type == AttributeProto.GRAPH:
                    graph(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        graph(sg)
    graph(p.graph)
    return p if changed[0] else None
