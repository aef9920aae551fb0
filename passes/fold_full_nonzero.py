"""fold-full-nonzero: a NonZero whose every index is demanded is the constant list of all indices.

Rewrites the data operand of
  * ``split(views(nonzero(b)), sizes)`` along the axis of the found indices, where ``sizes`` is a
    constant that adds up to n, and
  * ``gather(views(nonzero(b)), positions)`` along that axis at constant positions that read
    position n-1 (a position p >= 0 needs p + 1 indices, p < 0 needs -p),
where ``b`` has a static shape and n is the number of its elements that can be non-zero (all of
them, less those known to be zero whatever the inputs: a one-hot class that no index can take
(indices bounded by the top-k / argmax that made them, through constant arithmetic and
``select(x >= c, f(x), x)``), seen through transposes, sums over the other axes, ``> c`` with a
constant c >= 0 and casts) and
``views`` is a chain of transposes: the data becomes the constant that chain gives for the indices
of those n elements in row-major order.

Why it is exact: nonzero returns as many indices as ``b`` has non-zero elements, at most n, in
row-major order; the split is defined only when it gets exactly n, and the gather only when it
gets at least n (ONNX Gather fails out of range), i.e. when every element that can be non-zero is,
and then the indices are all of them, in order.  Wherever the original graph computes a value, the
rewritten one computes the same value (elsewhere the original fails).  A Slice proves nothing (its
ends are clamped), so slices are left alone.

Where it comes from: transformers 4.x's eager MoE loop (Mixtral, Qwen2-MoE, Qwen3-MoE...) writes
``expert_hit = (expert_mask.sum(...) > 0).nonzero(); for expert_idx in expert_hit: ...``; a
TorchScript trace unrolls that loop over the experts hit by the trace input and exports it as
``Split(Transpose(NonZero(hit)), [1] * E)``, each piece indexing the expert mask.  The export runs
only while every expert is hit (onnxruntime rejects it at one token); once the pieces are the
constants 0..E-1 the loop is the per-expert form recognize-moe knows, and the compiled layer is
defined at every token count.  transformers 5.x's eager experts write ``one_hot(top_k_index,
num_classes=E + 1)`` (a class for experts of other ranks): the NonZero is over E + 1 classes and
the Split takes E pieces, the class E is never set (top-k's indices are below E; LongCat-Flash
first sends its zero-computation experts' ids to real experts with a select).  Other users of
the nonzero are left alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moec.ir import Module
from moec.ir.opdef import OPS, const_value
from moec.passes.base import Pass, register_pass

VIEW_OPS = ("moec.transpose",)
# ops that move values without changing them (the set of values is the operand's)
VALUE_VIEWS = ("moec.transpose", "moec.reshape", "moec.squeeze", "moec.unsqueeze", "moec.flatten")


def _const(m: Module, v):
    a = const_value(v, m.weights)
    return None if a is None else np.asarray(a)


_CMP = {"moec.greater": (1, 0), "moec.greater_equal": (0, 0), "moec.less": (0, -1), "moec.less_equal": (0, 0)}


def _index_bound(m: Module, v, env=None):
    """[lo, hi] (inclusive) holding every value of the integer tensor ``v``, or None.  Only what is
    certain from the ops that made it: top-k's, argmax's and argmin's indices lie in [0, size of
    the searched axis - 1]; a concatenation's values are its operands'; adding, subtracting,
    multiplying or dividing (truncating) by a constant maps the interval; ``select(x >= c, a, b)``
    (or >, <, <=, ==) bounds ``a`` knowing the condition holds for x and ``b`` knowing it does not
    (``env``: such narrowed intervals of values)."""
    env = env or {}
    if id(v) in env:
        return env[id(v)]
    o = v.owner
    if o is not None and o.name in VALUE_VIEWS + ("moec.concat",):
        env = {}  # (a narrowed interval holds element by element: not across ops that move elements)
    while o is not None and o.name in VALUE_VIEWS:
        v = o.operands[0]
        o = v.owner
    c = _const(m, v)
    if c is not None:
        return (int(c.min()), int(c.max())) if c.size and c.dtype.kind in "iu" else None
    if o is None:
        return None
    if (o.name == "moec.topk" and v is o.results[1]) or o.name in ("moec.argmax", "moec.argmin"):
        x = o.operands[0].type
        if x.rank == 0:
            return None
        d = x.shape[o.attrs["axis"] % x.rank]
        return (0, d - 1) if isinstance(d, int) and d > 0 else None
    if o.name == "moec.concat":
        bounds = [_index_bound(m, u, env) for u in o.operands]
        if not bounds or any(b is None for b in bounds):
            return None
        return min(b[0] for b in bounds), max(b[1] for b in bounds)
    if o.name in ("moec.add", "moec.sub", "moec.mul", "moec.div"):
        a, b = o.operands
        k = _const(m, b)
        if k is None and o.name in ("moec.add", "moec.mul"):
            a, k = b, _const(m, a)
        if k is None or k.size != 1 or k.dtype.kind not in "iu":
            return None
        ba = _index_bound(m, a, env if a.type.shape == v.type.shape else {})
        if ba is None:
            return None
        k = int(k.reshape(-1)[0])
        if o.name == "moec.add":
            return ba[0] + k, ba[1] + k
        if o.name == "moec.sub":
            return ba[0] - k, ba[1] - k
        if o.name == "moec.mul":
            return min(ba[0] * k, ba[1] * k), max(ba[0] * k, ba[1] * k)
        if k == 0:
            return None
        q = [int(x / k) if abs(x) < 2 ** 52 else None for x in ba]  # truncation: monotone in x
        return None if None in q else (min(q), max(q))
    if o.name == "moec.select":
        cond, a, b = o.operands
        co = cond.owner
        if co is None or (co.name not in _CMP and co.name != "moec.equal"):
            return None
        x, k = co.operands
        if co.name == "moec.equal" and _const(m, k) is None:
            x, k = k, x
        kc = _const(m, k)
        if kc is None or kc.size != 1 or kc.dtype.kind not in "iu" or \
                not x.type.shape == cond.type.shape == v.type.shape:
            return None
        bx = _index_bound(m, x, env)
        if bx is None:
            return None
        kk = int(kc.reshape(-1)[0])
        lo_true, hi_true = _CMP.get(co.name, (0, 0))  # x > k: x in [k + 1, ...]; x < k: x in [..., k - 1]
        if co.name == "moec.equal":  # x == k: x is k; else x is in bx less k (at either end: Zaya's skip class)
            t, f = (max(bx[0], kk), min(bx[1], kk)), (bx[0] + (kk == bx[0]), bx[1] - (kk == bx[1]))
        elif co.name in ("moec.greater", "moec.greater_equal"):
            t, f = (max(bx[0], kk + lo_true), bx[1]), (bx[0], min(bx[1], kk - 1 + lo_true))
        else:
            t, f = (bx[0], min(bx[1], kk + hi_true)), (max(bx[0], kk + 1 + hi_true), bx[1])
        parts = []
        for branch, rng in ((a, t), (b, f)):
            if rng[0] > rng[1]:
                continue  # that branch is never taken
            bb = _index_bound(m, branch, {**env, id(x): rng})
            if bb is None:
                return None
            parts.append(bb)
        return (min(p[0] for p in parts), max(p[1] for p in parts)) if parts else None
    return None


def _zero_slab(m: Module, v):
    """(axis, mask): the positions ``mask`` along ``axis`` where ``v`` is zero (false) at every
    other coordinate, whatever the inputs; None when nothing is known.  Follows one-hot of bounded
    indices (a class no index can take is all off), transposes, sums over other axes, a comparison
    ``> c`` with a constant ``c >= 0`` and casts."""
    o = v.owner
    if o is None or v.type.rank == 0:
        return None
    if o.name == "moec.one_hot":
        depth, vals = _const(m, o.operands[1]), _const(m, o.operands[2])
        bound = _index_bound(m, o.operands[0])
        if depth is None or vals is None or bound is None or vals.size != 2 or vals.reshape(-1)[0] != 0:
            return None
        d, (lo, hi) = int(depth.reshape(-1)[0]), bound
        if d <= 0:
            return None
        # classes an index in [lo, hi] sets: itself, or (negative, wrapped) itself + d
        cls = np.arange(d)
        mask = ~(((cls >= lo) & (cls <= hi)) | ((cls - d >= lo) & (cls - d <= hi)))
        return (o.attrs["axis"] % v.type.rank, mask) if mask.any() else None
    if o.name == "moec.transpose":
        inner = _zero_slab(m, o.operands[0])
        if inner is None:
            return None
        return list(o.attrs["perm"]).index(inner[0]), inner[1]
    if o.name == "moec.cast":
        return _zero_slab(m, o.operands[0])
    if o.name == "moec.reduce_sum" and len(o.operands) == 1:
        inner = _zero_slab(m, o.operands[0])
        if inner is None:
            return None
        axes = o._axes()
        a, mask = inner
        if a in axes:
            return None
        return (a if o.attrs["keepdims"] else a - sum(1 for x in axes if x < a)), mask
    if o.name == "moec.greater":
        c = _const(m, o.operands[1])
        x = o.operands[0]
        if c is None or c.size != 1 or not c.reshape(-1)[0] >= 0 or x.type.rank != v.type.rank:
            return None
        return _zero_slab(m, x)
    return None


@register_pass
@dataclass
class FoldFullNonzero(Pass):
    name = "fold-full-nonzero"

    def run(self, m: Module) -> bool:
        changed = False
        const_cls = OPS["moec.constant"]
        for f in m.functions:
            new_ops = []
            for o in f.ops:
                if o.name in ("moec.split", "moec.gather"):
                    c = self._all_indices(m, o)
                    if c is not None:
                        k = const_cls.create([], {"value": c}, o.loc)
                        new_ops.append(k)
                        o.operands = [k.results[0]] + o.operands[1:]
                        changed = True
                new_ops.append(o)
            f.ops = new_ops
        return changed

    @staticmethod
    def _demanded(m: Module, o):
        """How many indices the op needs at least (it fails with fewer), or None."""
        c = _const(m, o.operands[1])
        if c is None or c.dtype.kind not in "iu" or c.size == 0:
            return None
        if o.name == "moec.split":
            return None if np.any(c < 0) else int(np.sum(c))
        c = c.astype(np.int64).reshape(-1)  # gather: position p >= 0 needs p + 1, p < 0 needs -p
        return int(np.max(np.where(c >= 0, c + 1, -c)))

    @classmethod
    def _all_indices(cls, m: Module, op):
        """The constant that replaces the op's data, or None when the rule does not apply."""
        need = cls._demanded(m, op)
        if need is None:
            return None
        chain, v = [], op.operands[0]
        data_rank = v.type.rank
        if not data_rank:
            return None
        axis = op.attrs["axis"] % data_rank
        while v.owner is not None and v.owner.name in VIEW_OPS:
            perm = list(v.owner.attrs["perm"])
            chain.append(v.owner)
            axis = perm[axis]  # the data axis this result axis came from
            v = v.owner.operands[0]
        nz = v.owner
        if nz is None or nz.name != "moec.nonzero" or axis != 1:
            return None
        b = nz.operands[0].type
        if not b.is_static or b.rank == 0:
            return None
        possible = np.ones(b.shape, bool)
        slab = _zero_slab(m, nz.operands[0])
        if slab is not None and slab[1].shape == (b.shape[slab[0]],):
            shape = [1] * b.rank
            shape[slab[0]] = -1
            possible &= ~slab[1].reshape(shape)
        n = int(np.count_nonzero(possible))
        if need != n:
            return None
        val = np.array(np.nonzero(possible), dtype=np.int64).reshape(b.rank, n)
        for op_ in reversed(chain):
            val = op_.reference(val)[0]
        return np.ascontiguousarray(val)
