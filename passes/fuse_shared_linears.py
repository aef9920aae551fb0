"""fuse-shared-linears: linear layers that read the same input become one linear (horizontal fusion).

An attention block's q, k and v projections (and a gated MLP's gate and up, where the model keeps them
separate) each multiply the same activations by their own constant weight.  At decode a step runs each as
its own GEMV: one pass over each weight and one fork/join of the thread pool per projection.  Fused, they
are one ``moec.matmul`` over the weights concatenated along N at compile time (one pass, one fork/join),
followed by one ``moec.split`` of its columns back into the parts the consumers read.

Matched, per function: ``moec.matmul(x, W_i)`` ops, two or more, where

* each ``W_i`` is a ``moec.constant`` from the weight store (a ``ResourceRef``), 2-D [K, N_i] of static shape,
  all of one dtype and one K, the activations of that dtype too;
* the ``x`` are the same value, or ``moec.reshape``s of the same value by equal constant shapes (what
  torch.export writes: one ``view`` per projection);
* no result feeds a ``moe.route`` (the router's matmul keeps its own weight and type: quantize-weights keeps
  it in the model's type) nor is a function output;
* either none or every one of them has a bias: a result whose only use is ``moec.add`` of a constant [N] (or
  [1, N]) vector (Qwen2's q/k/v).  Fused, the biases are concatenated too and the add stays right behind the
  fused matmul, before the split (where quantize-weights / fuse-epilogues fold it into the linear); a
  member's add is replaced by its part.  A bias that is not a constant keeps its linear out.

The pass runs before quantize-weights (passes/pipeline.py): the fused weight is then quantised as one
matrix, and every weight format moec has (bf16, int8, int4 by groups along K, w8a8, w4a8, fp8) quantises
each output column on its own, so every column's codes and scales are the ones the separate layer gets;
the kernels compute each output column from its weight column alone, so the results are bit-identical
(tests/test_fuse_shared_linears.py checks each format).  Only targets whose description sets
``fuse_shared_linears`` (the C target: its split is a copy of T x N values) run it.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from moec.ir import Module, TensorType
from moec.ir.core import ResourceRef
from moec.ir.opdef import OPS, const_value
from moec.passes.base import Pass, register_pass
from moec.passes.quantize import _bias_add, _feeds_router


def _weight(o):
    """The matmul's weight operand when it is a constant 2-D matrix of static shape in the activations' dtype."""
    w = o.operands[1]
    c = w.owner
    if c is None or c.name != "moec.constant":
        return None
    t = w.type
    if t.rank != 2 or not all(isinstance(d, int) for d in t.shape) or o.operands[0].type.dtype != t.dtype:
        return None
    return w


def _input_key(x) -> tuple:
    """What a matmul's input is, up to the reshapes torch.export writes per projection: (the value reshaped,
    its constant target shape, allowzero) or (the value itself,)."""
    r = x.owner
    if r is not None and r.name == "moec.reshape":
        shape = const_value(r.operands[1])
        if shape is not None:
            return (id(r.operands[0]), tuple(int(s) for s in np.asarray(shape).reshape(-1)),
                    bool(r.attrs.get("allowzero", False)), x.type)
    return (id(x),)


@register_pass
class FuseSharedLinears(Pass):
    name = "fuse-shared-linears"

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.fused: List[List[str]] = []  # the weight keys of each group fused (tests, inspection)

    def run(self, m: Module) -> bool:
        if not self.enabled:
            return False
        changed = False
        for f in m.functions:
            uses = f.uses()
            outs = {id(v) for v in f.outputs}
            groups: Dict[tuple, list] = {}
            for o in f.ops:
                if o.name != "moec.matmul" or len(o.operands) != 2:
                    continue
                w = _weight(o)
                if w is None:
                    continue
                r = o.results[0]
                if id(r) in outs or _feeds_router(r, uses):
                    continue
                add = _bias_add(f, o, w.type.shape[1], uses)
                bias = None
                if add is not None:
                    bias = const_value(add[1], m.weights)
                    if bias is None or id(add[0].results[0]) in outs:
                        continue  # (a bias computed at run time; or the add is an output)
                key = (_input_key(o.operands[0]), w.type.dtype, w.type.shape[0], add is not None)
                groups.setdefault(key, []).append((o, add, bias))
            for members in groups.values():
                if len(members) >= 2:
                    self._fuse(m, f, members)
                    changed = True
        return changed

    def _fuse(self, m: Module, f, group) -> None:
        members = [o for o, _, _ in group]
        first = members[0]
        x = first.operands[0]
        ws = [o.operands[1] for o in members]
        parts = [np.asarray(const_value(w, m.weights)) for w in ws]
        sizes = [int(p.shape[1]) for p in parts]
        names = [w.owner.attrs["value"].key if isinstance(w.owner.attrs["value"], ResourceRef) else w.name
                 for w in ws]
        key = m.weights.add(np.concatenate(parts, axis=1), "fused_" + str(names[0]))
        wc = OPS["moec.constant"].create([], {"value": ResourceRef(key)}, first.loc,
                                         [TensorType(ws[0].type.dtype, (parts[0].shape[0], sum(sizes)))])
        wc.results[0].name = key
        mm = OPS["moec.matmul"].create([x, wc.results[0]], {}, first.loc)
        new = [wc, mm]
        y = mm.results[0]
        if group[0][1] is not None:  # the biases, concatenated: one add before the split
            b = np.concatenate([np.asarray(bv).reshape(-1) for _, _, bv in group])
            bkey = m.weights.add(b, key + "_bias")
            bc = OPS["moec.constant"].create([], {"value": ResourceRef(bkey)}, first.loc,
                                             [TensorType(group[0][1][1].type.dtype, b.shape)])
            bc.results[0].name = bkey
            add = OPS["moec.add"].create([y, bc.results[0]], {}, group[0][1][0].loc)
            new += [bc, add]
            y = add.results[0]
        sz = OPS["moec.constant"].create([], {"value": np.asarray(sizes, np.int64)}, first.loc)
        split = OPS["moec.split"].create([y, sz.results[0]], {"axis": -1}, first.loc)
        at = f.ops.index(first)
        f.ops[at:at] = new + [sz, split]
        for (o, add, _), part in zip(group, split.results):
            last = add[0] if add is not None else o
            part.name = last.results[0].name
            f.replace_all_uses(last.results[0], part)
            f.ops.remove(o)
            if add is not None:
                f.ops.remove(add[0])
        self.fused.append(names)
