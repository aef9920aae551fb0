"""split-of-concat: splitting rows that were concatenated from pieces of the same sizes gives the pieces.

Rewrites:
  * ``split(f(concat(a_0..a_n-1), ...), S)`` along the rows (axis 0), where ``f`` is a tree of
    row-wise ops (elementwise ops, matmul / gemm of the rows by a weight, slices or splits along
    another axis) and each piece ``a_i`` has, by construction, ``S[i]`` rows: part ``i`` of the
    split becomes ``f(a_i, ...)`` (the same ops applied to the pieces).

"By construction": ``a_i`` is part ``i`` of a split of some rows by the same sizes value ``S`` (the
same SSA value, or equal constants), carried through row-preserving ops (the same list as ``f``).
Row-wise ops act on each row alone, so ``f(concat(a_i))`` is ``concat(f(a_i))``, and splitting that
by the pieces' own row counts gives the ``f(a_i)`` back.  An operand of ``f`` that is not a concat
must be the same for every row (no row dim: lower rank or a row dim of 1).

Where it comes from: transformers 4.x's GraniteMoE / JetMoE ``ParallelExperts`` sort the token rows
by expert, ``split`` them by the per-expert counts, run each expert's linear, ``cat`` the results,
apply the activation to the whole, and ``split`` again for the next linear.  After this rewrite each
expert is an FFN of its own rows (up projections, activation, down projection), the per-expert form
recognize-moe knows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from moec.ir import Function, Module, Operation, Value
from moec.ir.opdef import OPS, const_value, has_trait
from moec.passes.base import Pass, register_pass


def _const(m: Module, v: Value):
    a = const_value(v, m.weights)
    return None if a is None else np.asarray(a)


def _axis(o: Operation, rank: int) -> int:
    return o.attrs["axis"] % rank if rank else 0


def _row_inputs(o: Operation) -> Optional[List[int]]:
    """The operands whose rows o's result rows are, row for row (row-preserving ops), or None."""
    if o.name == "moec.matmul":
        a, b = (v.type for v in o.operands)
        return [0] if a.rank == 2 and b.rank == 2 else None
    if o.name == "moec.gemm":
        if o.attrs["trans_a"] or (len(o.operands) > 2 and not _row_free(o.operands[2], 2)):
            return None
        return [0]
    if o.name == "moec.split" and o.operands[0].type.rank >= 2 and _axis(o, o.operands[0].type.rank) != 0:
        return [0]
    if has_trait(o, "elementwise") and o.results[0].type.rank >= 1:
        r = o.results[0].type.rank
        rows = [i for i, v in enumerate(o.operands) if not _row_free(v, r)]
        # a row-carrying operand of lower rank would broadcast along another axis
        return rows if rows and all(o.operands[i].type.rank == r for i in rows) else None
    return None


def _row_free(v: Value, rank: int) -> bool:
    """v broadcasts the same values to every row of a rank-``rank`` result."""
    t = v.type
    return t.rank < rank or (t.rank == rank and t.shape[0] == 1)


@register_pass
@dataclass
class SplitOfConcat(Pass):
    name = "split-of-concat"

    def run(self, m: Module) -> bool:
        changed = False
        for f in m.functions:
            for o in list(f.ops):
                if o.name == "moec.split" and o in f.ops and o.operands[0].type.rank >= 1 \
                        and _axis(o, o.operands[0].type.rank) == 0:
                    changed |= self._distribute(m, f, o)
        return changed

    # ------------------------------------------------------------------------------------------
    def _same_sizes(self, m: Module, a: Value, b: Value) -> bool:
        if a is b:
            return True
        ca, cb = _const(m, a), _const(m, b)
        return ca is not None and cb is not None and ca.shape == cb.shape and bool(np.all(ca == cb))

    def _rows_of(self, v: Value, depth: int = 0) -> Optional[Tuple[Value, int]]:
        """(sizes, i) when v's rows are, by construction, part i of a row split by ``sizes``."""
        o = v.owner
        if o is None or depth > 32:
            return None
        if o.name == "moec.split" and _axis(o, o.operands[0].type.rank) == 0:
            return o.operands[1], v.index
        ins = _row_inputs(o)
        if ins is None:
            return None
        srcs = [self._rows_of(o.operands[k], depth + 1) for k in ins]
        # every row-carrying operand from the same part (else one could broadcast a single row)
        if srcs[0] is None or any(s is None or s[0] is not srcs[0][0] or s[1] != srcs[0][1] for s in srcs):
            return None
        return srcs[0]

    def _distribute(self, m: Module, f: Function, split: Operation) -> bool:
        sizes, n = split.operands[1], len(split.results)
        new_ops: List[Operation] = []
        memo: Dict[Tuple[int, int], Optional[Value]] = {}
        made: Dict[Tuple[int, int], Optional[Operation]] = {}  # (op, i) -> its copy on the pieces

        def piece(v: Value, i: int, depth: int) -> Optional[Value]:
            """f(a_i): the part of v made from the i-th pieces of the concats it is built from."""
            key = (id(v), i)
            if key in memo:
                return memo[key]
            memo[key] = None
            o = v.owner
            r = None
            if o is None or depth > 16:
                return None
            if o.name == "moec.concat" and _axis(o, v.type.rank) == 0 and len(o.operands) == n:
                a = o.operands[i]
                src = self._rows_of(a)
                if src is not None and src[1] == i and self._same_sizes(m, src[0], sizes):
                    r = a
            elif _row_inputs(o) is not None:
                if (id(o), i) not in made:  # one copy per op and piece (a split's results share it)
                    made[(id(o), i)] = None
                    subs = {k: piece(o.operands[k], i, depth + 1) for k in _row_inputs(o)}
                    if all(s is not None for s in subs.values()):
                        q = OPS[o.name].create([subs.get(k, x) for k, x in enumerate(o.operands)], dict(o.attrs),
                                               o.loc)
                        new_ops.append(q)
                        made[(id(o), i)] = q
                q = made[(id(o), i)]
                r = q.results[v.index] if q is not None else None
            memo[key] = r
            return r

        parts = [piece(split.operands[0], i, 0) for i in range(n)]
        if any(p is None for p in parts) or any(p.type.rank != r.type.rank for p, r in zip(parts, split.results)):
            return False
        at = f.ops.index(split)
        f.ops[at:at] = new_ops
        for p, r in zip(parts, split.results):
            f.replace_all_uses(r, p)
        return True
