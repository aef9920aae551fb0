"""fold-full-nonzero: a NonZero whose every index is demanded is the constant list of all indices.

Rewrites:
  * ``split(views(nonzero(b)), sizes)`` along the axis of the found indices, where ``b`` has a
    static shape of N elements, ``sizes`` is a constant that adds up to N, and ``views`` is a chain
    of transposes: the split's data operand becomes the constant that chain gives for
    ``nonzero(ones(b.shape))`` (every index of ``b`` in row-major order).

Why it is exact: nonzero returns as many indices as ``b`` has non-zero elements, at most N, in
row-major order; the split is defined only when it gets exactly N, i.e. when every element is
non-zero, and then the indices are all of them, in order.  Wherever the original graph computes a
value, the rewritten one computes the same value (elsewhere the original fails: the split's sizes
do not add up).

Where it comes from: transformers 4.x's eager MoE loop (Mixtral, Qwen2-MoE, Qwen3-MoE...) writes
``expert_hit = (expert_mask.sum(...) > 0).nonzero(); for expert_idx in expert_hit: ...``; a
TorchScript trace unrolls that loop over the experts hit by the trace input and exports it as
``Split(Transpose(NonZero(hit)), [1] * E)``, each piece indexing the expert mask.  The export runs
only while every expert is hit (onnxruntime rejects it at one token); once the pieces are the
constants 0..E-1 the loop is the per-expert form recognize-moe knows, and the compiled layer is
defined at every token count.  Other users of the nonzero are left alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Module
from ..ir.core import ResourceRef
from ..ir.opdef import OPS
from .base import Pass

VIEW_OPS = ("moec.transpose",)


def _const(m: Module, v):
    o = v.owner
    if o is None or o.name != "moec.constant":
        return None
    val = o.attrs["value"]
    return np.asarray(m.weights[val.key]) if isinstance(val, ResourceRef) else np.asarray(val)


@dataclass
class FoldFullNonzero(Pass):
    name = "fold-full-nonzero"

    def run(self, m: Module) -> bool:
        changed = False
        const_cls = OPS["moec.constant"]
        for f in m.functions:
            new_ops = []
            for o in f.ops:
                if o.name == "moec.split":
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
    def _all_indices(m: Module, split):
        """The constant that replaces the split's data, or None when the rule does not apply."""
        sizes = _const(m, split.operands[1])
        if sizes is None or sizes.dtype.kind not in "iu":
            return None
        chain, v, axis = [], split.operands[0], None
        data_rank = v.type.rank
        axis = split.attrs["axis"] % data_rank if data_rank else None
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
        n = int(np.prod(b.shape))
        if int(np.sum(sizes)) != n or np.any(sizes < 0):
            return None
        val = np.array(np.nonzero(np.ones(b.shape, bool)), dtype=np.int64).reshape(b.rank, n)
        for op in reversed(chain):
            val = op.reference(val)[0]
        return np.ascontiguousarray(val)
