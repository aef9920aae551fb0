"""sink-rows: compute only the rows an output needs.

A row selection -- ``moec.slice`` with constant starts / ends / steps on one axis, or ``moec.gather``
by a constant index (a scalar, or one index in a [1] vector) -- moves toward the inputs through ops
that are independent along that axis, so the ops above it run on the selected rows only.  The
typical case: a causal LM exported for last-position logits (transformers' ``logits_to_keep=1``)
slices the final norm's output to its last row before the output layer; sunk, the whole last
decoder layer after its attention's keys / values (q projection, attention's query rows, o_proj,
residuals, norms, the router, the experts, the combine) runs on one row instead of N.

Rewrites, each ``sel(op(a, b, ...)) -> op'(sel(a), b, ...)`` where every use of every result of
``op`` is the same selection (identical selections of one value are first merged into one; a value
with any other use, or a function output, stays whole: selecting it is then cheaper than
recomputing its rows):
  * elementwise ops (every operand: selected where it has the axis at the result's size, kept where
    it broadcasts a static 1; an operand whose size there is unknown is selected only by a prefix or
    a suffix, which give the same rows from a broadcast single row);
  * ``rms_norm`` / ``layer_norm`` / ``softmax`` / ``log_softmax`` / ``reduce_*`` over other axes (the
    decomposed norms of targets without the fused ones), ``rotary`` (x and
    cos / sin as elementwise operands) on an axis other than the rotated one;
  * ``reshape`` whose every other output dim is static and maps the axis onto one input axis with
    the same static products on both sides, ``transpose``, ``unsqueeze`` / ``squeeze`` (attribute axes);
  * ``matmul`` (the row axis of ``a``), ``linear`` / ``linear_q`` (x and a residual ``c``), ``gemm``
    (``a``'s row axis and a per-row ``c``);
  * ``attention``'s query rows (axis 2): q and the mask's query rows, never k / v; with
    ``causal=True`` only a suffix of the rows (the op's causal alignment is bottom-right, so the kept
    rows see the same keys); without, any selection;
  * the MoE block, which is per token on axis 0: ``moe.combine`` (y, weights and its per-token
    extras), ``moe.experts`` (x, ids, the routing weights; the dispatch plan is rebuilt by a copy of
    its ``moe.dispatch`` -- same scheduling attributes -- on the selected ids), ``moe.route`` without a
    capacity (the capacity makes routing depend on the other tokens), ``moe.shared_experts``;
  * a slice of a slice on the same axis (two suffixes, or two step-1 ranges from non-negative starts)
    becomes one slice.
A gather selection becomes ``squeeze(slice(...))`` when it moves.  Anything else stops the
selection: reductions or scans over the axis, attention's keys / values, a non-suffix selection
through causal attention, ops not listed.  The values computed are the same as without the pass: every
op listed computes each row from the same row of its operands, in the same order.

Runs after recognition (the patterns of recognize-moe / recognize-decoder see the whole graph) and
before quantisation, epilogue fusion and dispatch scheduling, so those see the pruned graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from moec.ir import Module, Operation, Value
from moec.ir.opdef import OPS, const_value, has_trait
from moec.passes.base import Pass, register_pass
from moec.passes.dce import DeadCodeElimination

_END = (1 << 63) - 1  # ONNX's "to the end" (INT64_MAX); any end >= _BIG means that
_BIG = 1 << 62


@dataclass(frozen=True)
class Sel:
    """Rows start:stop:step of one axis (python slice semantics, ONNX clamping); stop >= _BIG: to the end."""
    axis: int
    start: int
    stop: int
    step: int

    @property
    def suffix(self) -> bool:
        return self.start < 0 and self.stop >= _BIG and self.step == 1

    @property
    def prefix(self) -> bool:
        return self.start == 0 and self.step == 1 and self.stop >= 0

    def on(self, axis: int) -> "Sel":
        return Sel(axis, self.start, self.stop, self.step)


def _ints(m: Module, v: Value) -> Optional[List[int]]:
    a = const_value(v, m.weights)
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        return None
    return [int(x) for x in a.reshape(-1)]


def selection(m: Module, o: Operation) -> Optional[Tuple[Sel, bool]]:
    """(the selection, whether the op drops the axis) for a row-selection op, else None."""
    if o.name == "moec.slice":
        x = o.operands[0].type
        vals = [_ints(m, v) for v in o.operands[1:5]]
        if any(v is None or len(v) != 1 for v in vals) or x.rank == 0:
            return None
        (s,), (e,), (a,), (st,) = vals
        if not -x.rank <= a < x.rank or st < 1:
            return None
        return Sel(a % x.rank, s, _END if e >= _BIG else e, st), False
    if o.name == "moec.gather":
        x, idx = o.operands[0].type, o.operands[1].type
        vals = _ints(m, o.operands[1])
        if vals is None or len(vals) != 1 or idx.rank > 1 or x.rank == 0:
            return None
        i = vals[0]
        a = o.attrs["axis"] % x.rank
        return Sel(a, i, _END if i == -1 else i + 1, 1), idx.rank == 0
    return None


def _static(d) -> bool:
    return isinstance(d, int)


def _prod(ds) -> Optional[int]:
    p = 1
    for d in ds:
        if not _static(d):
            return None
        p *= d
    return p


class _Rewriter:
    """Builds the replacement ops of one rewrite, in order, to go before the op at index ``at`` of ``f``;
    integer vectors reuse a constant defined before that point, or a new one at the function's start."""

    def __init__(self, m: Module, f, at: int, loc):
        self.m, self.f, self.loc, self.ops, self.top = m, f, loc, [], []
        self.consts = {}
        for o in f.ops[:at]:
            val = o.attrs.get("value") if o.name == "moec.constant" else None
            if isinstance(val, np.ndarray) and val.dtype == np.int64 and val.ndim == 1:
                self.consts.setdefault(tuple(int(x) for x in val), o.result)

    def emit(self, name: str, operands, attrs=None, loc=None) -> Operation:
        op = OPS[name].create(list(operands), dict(attrs or {}), self.loc if loc is None else loc)
        self.ops.append(op)
        return op

    def const(self, vals) -> Value:
        key = tuple(int(x) for x in vals)
        if key not in self.consts:
            op = OPS["moec.constant"].create([], {"value": np.asarray(key, np.int64)}, self.loc)
            self.top.append(op)
            self.consts[key] = op.result
        return self.consts[key]

    def take(self, v: Value, sel: Sel) -> Value:
        return self.emit("moec.slice", [v, self.const([sel.start]), self.const([sel.stop]),
                                        self.const([sel.axis]), self.const([sel.step])]).result


def _operand_axis(v: Value, rtype, axis: int, sel: Sel):
    """How an operand broadcast (numpy rules) against a result of type ``rtype`` is selected:
    ("keep",) when it has no such axis or a static 1 there, ("take", its axis), or None: unknown."""
    t = v.type
    oa = axis - (rtype.rank - t.rank)
    if oa < 0:
        return ("keep",)
    d, r = t.shape[oa], rtype.shape[axis]
    if d == 1:
        return ("keep",)
    if (_static(d) and (not _static(r) or d == r)) or (isinstance(d, str) and d == r):
        return ("take", oa)
    if sel.prefix or sel.suffix:  # (a run-time 1 gives its one row either way)
        return ("take", oa)
    return None


def _broadcast_plan(o: Operation, idx, axis: int, sel: Sel, rtype):
    """Per-operand plan for the operands ``idx`` of ``o`` broadcast against the result, or None."""
    plan = {}
    for i in idx:
        p = _operand_axis(o.operands[i], rtype, axis, sel)
        if p is None:
            return None
        plan[i] = p
    return plan


def _reshape_axis(m: Module, o: Operation, axis: int):
    """(input axis, new shape vector) for a reshape whose output axis maps onto one input axis."""
    x, y = o.operands[0].type, o.result.type
    if any(not (_static(d) and d > 0) for i, d in enumerate(y.shape) if i != axis):
        return None
    before, after = _prod(y.shape[:axis]), _prod(y.shape[axis + 1:])
    for b in range(x.rank):
        if any(not _static(d) for i, d in enumerate(x.shape) if i != b):
            continue
        if _prod(x.shape[:b]) == before and _prod(x.shape[b + 1:]) == after:
            if _static(x.shape[b]) and _static(y.shape[axis]) and x.shape[b] != y.shape[axis]:
                return None
            return b, [-1 if i == axis else d for i, d in enumerate(y.shape)]
    return None


def _axes_attr(m: Module, o: Operation, rank: int) -> Optional[List[int]]:
    if len(o.operands) > 1:
        vals = _ints(m, o.operands[1])
        if vals is None:
            return None
    else:
        vals = list(o.attrs["axes"])
    if not vals:
        return None
    return sorted({a % rank for a in vals})


def _with_rows_of(o: Operation, i: Optional[int], p: dict, axis: int, sel: Sel) -> Optional[dict]:
    """Plan ``p`` with ``o``'s optional operand ``i`` (a linear's / gemm's residual, attention's mask) selected
    as broadcast against the result, or None where that cannot be told."""
    if i is None or len(o.operands) <= i or o.operands[i] is None:
        return p
    how = _operand_axis(o.operands[i], o.results[0].type, axis, sel)
    return None if how is None else {**p, i: how}


def plan(m: Module, o: Operation, sel: Sel, uses) -> Optional[dict]:
    """How to run ``o`` on the rows ``sel`` (on its results' axis ``sel.axis``): {operand index: ("take",
    axis) | ("keep",)} plus special entries, or None when ``o`` mixes rows along that axis (or is unknown)."""
    n, a = o.name, sel.axis
    r = o.results[0].type
    keep_rest = lambda p: {**{i: ("keep",) for i in range(len(o.operands))}, **p}  # noqa: E731
    if has_trait(o, "elementwise") and len(o.results) == 1:
        return _broadcast_plan(o, range(len(o.operands)), a, sel, r)
    if n in ("moec.rms_norm", "moec.layer_norm", "moec.softmax", "moec.log_softmax"):
        k = o.attrs["axis"] % r.rank
        start = k if n in ("moec.rms_norm", "moec.layer_norm") else None
        if (start is not None and a >= start) or (start is None and a == k):
            return None
        if n == "moec.layer_norm" and any(uses.get(id(v)) for v in o.results[1:]):
            return None  # (the statistics: rows too, but only the normalised result is taken)
        if start is not None and any(v.type.rank > r.rank - start for v in o.operands[1:]):
            return None
        return keep_rest({0: ("take", a)})
    if n.startswith("moec.reduce_") and hasattr(o, "_axes"):
        x = o.operands[0].type
        if len(o.operands) > 1:
            vals = _ints(m, o.operands[1])
            if vals is None:
                return None
            axes = o._axes(vals)
        else:
            axes = o._axes()
        kept = list(range(x.rank)) if o.attrs["keepdims"] else [i for i in range(x.rank) if i not in axes]
        if a >= len(kept) or kept[a] in axes:
            return None
        return keep_rest({0: ("take", kept[a])})
    if n == "moec.rotary":
        if a == r.rank - 1:
            return None
        return _broadcast_plan(o, (0, 1, 2), a, sel, r)
    if n == "moec.transpose":
        return {0: ("take", list(o.attrs["perm"])[a])}
    if n == "moec.reshape":
        rs = _reshape_axis(m, o, a)
        if rs is None:
            return None
        return {0: ("take", rs[0]), "shape": rs[1]}
    if n == "moec.unsqueeze":
        axes = _axes_attr(m, o, r.rank)
        if axes is None or a in axes:
            return None
        return keep_rest({0: ("take", a - sum(1 for x in axes if x < a))})
    if n == "moec.squeeze":
        x = o.operands[0].type
        axes = _axes_attr(m, o, x.rank)
        if axes is None:
            return None
        kept = [i for i in range(x.rank) if i not in axes]
        return keep_rest({0: ("take", kept[a])})
    if n == "moec.matmul":
        at, bt = o.operands[0].type, o.operands[1].type
        if at.rank < 2 or bt.rank < 2 or a != r.rank - 2:
            return None
        return {0: ("take", at.rank - 2), 1: ("keep",)}
    if n in ("moec.linear", "moec.linear_q"):
        if a >= r.rank - 1 or o.operands[0].type.rank != r.rank:
            return None
        return _with_rows_of(o, 2 if n == "moec.linear" else None, keep_rest({0: ("take", a)}), a, sel)
    if n == "moec.gemm":
        if a != 0:
            return None
        return _with_rows_of(o, 2, keep_rest({0: ("take", 1 if o.attrs["trans_a"] else 0)}), a, sel)
    if n == "moec.attention":
        if a != 2 or not (sel.suffix or not o.attrs["causal"]):
            return None
        return _with_rows_of(o, 3, keep_rest({0: ("take", 2)}), a, sel)
    if n == "moe.combine":
        return None if a != 0 else {i: ("take", 0) for i in range(len(o.operands))}
    if n == "moe.route":
        if a != 0 or o.attrs.get("capacity", 0):
            return None
        return keep_rest({0: ("take", 0)})
    if n == "moe.shared_experts":
        return None if a != 0 else keep_rest({0: ("take", 0)})
    if n == "moe.experts":
        d = o.operands[2].owner
        if a != 0 or d is None or d.name != "moe.dispatch" or d.results[0] is not o.operands[2] \
                or d.results[1] is not o.operands[3] or d.operands[0] is not o.operands[1]:
            return None
        p = keep_rest({0: ("take", 0), 1: ("take", 0), "dispatch": d})
        if o.attrs.get("weights_at", "none") != "none":
            p[6 + int(o.attrs["has_b_in"]) + int(o.attrs["has_b_out"])] = ("take", 0)
        return p
    if n == "moec.slice":
        inner = selection(m, o)
        if inner is None or inner[0].axis != a:
            return None
        s1 = inner[0]
        if s1.suffix and sel.suffix:
            return {"compose": Sel(a, max(s1.start, sel.start), _END, 1)}
        if s1.step == sel.step == 1 and s1.start >= 0 and sel.start >= 0 and 0 <= sel.stop and 0 <= s1.stop:
            start = s1.start + sel.start
            stop = min(s1.stop, s1.start + sel.stop) if sel.stop < _BIG else s1.stop
            return {"compose": Sel(a, start, stop, 1)}
        return None
    return None


def _whole(t, sel: Sel) -> bool:
    """The selection keeps every row of a static dim (a slice of a size-1 batch axis, say)."""
    d = t.shape[sel.axis]
    if not _static(d):
        return False
    return range(d)[slice(sel.start, None if sel.stop >= _BIG else sel.stop, sel.step)] == range(d)


def _same_type(old, new) -> bool:
    return old.dtype == new.dtype and old.rank == new.rank and \
        all(not _static(d) or d == e for d, e in zip(old.shape, new.shape))


@register_pass
@dataclass
class SinkRows(Pass):
    name = "sink-rows"

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            for _ in range(100000):
                if not self._step(m, f):
                    break
                changed = True
                DeadCodeElimination().run(m)
        return changed

    def _step(self, m: Module, f) -> bool:
        uses = f.uses()
        outs = {id(v) for v in f.outputs}
        for s in reversed(f.ops):
            got = selection(m, s)
            if got is None:
                continue
            v = s.operands[0]
            if _whole(v.type, got[0]):
                continue  # (every row of a static dim: nothing to save, and nothing to move)
            if self._merge(m, f, s, v, uses):
                return True
            p = v.owner
            if p is None or any(id(r) in outs for r in p.results):
                continue
            sels, ok = [], True
            for r in p.results:
                for u in uses.get(id(r), []):
                    g = selection(m, u)
                    if g is None or u.operands[0] is not r or g[0] != got[0]:
                        ok = False
                        break
                    sels.append((u, r, g[1]))
            if ok and self._sink(m, f, p, got[0], sels, uses):
                return True
        return False

    def _merge(self, m: Module, f, s: Operation, v: Value, uses) -> bool:
        """Identical selections of one value become the first of them."""
        key = (s.name, selection(m, s))
        same = [u for u in uses.get(id(v), []) if u.operands[0] is v and (u.name, selection(m, u)) == key]
        if len(same) < 2:
            return False
        first = min(same, key=f.ops.index)
        for u in same:
            if u is not first:
                f.replace_all_uses(u.result, first.result)
        return True

    def _sink(self, m: Module, f, p: Operation, sel: Sel, sels, uses) -> bool:
        pl = plan(m, p, sel, uses)
        if pl is None:
            return False
        first = min((u for u, _, _ in sels), key=f.ops.index)
        rw = _Rewriter(m, f, f.ops.index(first), first.loc)
        if "compose" in pl:
            new_results = [rw.take(p.operands[0], pl["compose"])]
        else:
            ops = list(p.operands)
            for i, how in pl.items():
                if isinstance(i, int) and how[0] == "take":
                    ops[i] = rw.take(ops[i], sel.on(how[1]))
            if "shape" in pl:
                ops[1] = rw.const(pl["shape"])
            if "dispatch" in pl:
                d = pl["dispatch"]
                nd = rw.emit(d.name, [ops[1]], d.attrs, d.loc)
                ops[2], ops[3] = nd.results[0], nd.results[1]
            np_ = rw.emit(p.name, ops, p.attrs, p.loc)
            new_results = list(np_.results)
        old_index = {id(r): i for i, r in enumerate(p.results)}
        repl = []
        for u, r, drops in sels:
            nv = new_results[old_index[id(r)]]
            if drops:
                nv = rw.emit("moec.squeeze", [nv], {"axes": (sel.axis,)}, u.loc).result
            if not _same_type(u.result.type, nv.type):
                return False
            repl.append((u, nv))
        i = f.ops.index(first)
        f.ops[i:i] = rw.ops
        f.ops[0:0] = rw.top
        for u, nv in repl:
            f.replace_all_uses(u.result, nv)
        return True
