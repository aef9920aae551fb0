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
    so.log_severity_level = 3
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
    return sess.run(None, dict(zip(input_names, inputs)))
