"""Matrix products."""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, op, operand_error
from moec.ir.types import TensorType, broadcast_shapes
from moec.ir.ops.base import same_dtype
from moec.ir.ops.elementwise import _UNARY  # (moec.linear's activations: the unary ops' own semantics)


@op("moec.matmul", operands=("a", "b"), traits=("pure",))
class MatMulOp(Operation):
    """numpy.matmul semantics: 1-D operands are promoted and the added dim removed;
    leading (batch) dims broadcast.  Floats accumulate in at least f32."""

    def infer_types(self):
        dt = same_dtype(self, 0, 1)
        a, b = (v.type.shape for v in self.operands)
        if len(a) == 0 or len(b) == 0:
            raise operand_error(self, "matmul operands must have rank >= 1")
        a2 = (1,) + a if len(a) == 1 else a
        b2 = b + (1,) if len(b) == 1 else b
        ka, kb = a2[-1], b2[-2]
        if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
            raise operand_error(self, f"contraction dims differ: {ka} vs {kb}")
        try:
            batch = broadcast_shapes(a2[:-2], b2[:-2])
        except ValueError as e:
            raise operand_error(self, f"batch dims do not broadcast: {e}") from None
        out = batch + (a2[-2], b2[-1])
        if len(a) == 1:
            out = out[:-2] + out[-1:]
        if len(b) == 1:
            out = out[:-1]
        return [TensorType(dt, out)]

    def reference(self, a, b):
        if a.dtype.kind == "f" and a.dtype.itemsize < 4 or a.dtype.name == "bfloat16":
            r = np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(a.dtype)
        else:
            r = np.matmul(a, b)
        return [np.asarray(r)]


@op("moec.gemm", operands=("a", "b", "c?"), attrs={"alpha": Attr("float", 1.0), "beta": Attr("float", 1.0),
                                                   "trans_a": Attr("bool", False), "trans_b": Attr("bool", False)},
    traits=("pure",))
class GemmOp(Operation):
    """alpha * op(a) @ op(b) + beta * c, op = optional transpose; a, b 2-D; c broadcasts to [M, N]."""

    def infer_types(self):
        dt = same_dtype(self, 0, 1)
        a, b = (v.type for v in self.operands[:2])
        if a.rank != 2 or b.rank != 2:
            raise operand_error(self, "a and b must be 2-D")
        M, K = (a.shape[1], a.shape[0]) if self.attrs["trans_a"] else a.shape
        K2, N = (b.shape[1], b.shape[0]) if self.attrs["trans_b"] else b.shape
        if isinstance(K, int) and isinstance(K2, int) and K != K2:
            raise operand_error(self, f"contraction dims differ: {K} vs {K2}")
        if len(self.operands) > 2:
            c = self.operands[2].type
            try:
                broadcast_shapes(c.shape, (M, N))
            except ValueError as e:
                raise operand_error(self, f"c does not broadcast to [M, N]: {e}") from None
        return [TensorType(dt, (M, N))]

    def reference(self, a, b, c=None):
        acc = np.float64 if a.dtype == np.float64 else (np.float32 if a.dtype.kind == "f" or str(a.dtype) == "bfloat16"
                                                        else np.int64)
        A = a.T if self.attrs["trans_a"] else a
        B = b.T if self.attrs["trans_b"] else b
        r = self.attrs["alpha"] * (A.astype(acc) @ B.astype(acc))
        if c is not None:
            r = r + self.attrs["beta"] * c.astype(acc)
        return [np.asarray(r).astype(a.dtype)]



LINEAR_ACTIVATIONS = ("none", "relu", "silu", "gelu", "gelu_tanh")  # (index = the C kernel's code)


@op("moec.linear", operands=("x", "w", "c?"), attrs={"activation": Attr("str", "none")}, traits=("pure",))
class LinearOp(Operation):
    """A matmul by a 2-D weight with its epilogue fused: ``act(x @ w + c)``.  x [..., K], w [K, N] ->
    [..., N]; c (a bias [N], a residual [..., N], or any shape whose leading dims are all 1 or all the
    result's, its last N or 1) broadcasts to the result without changing its shape.  ``activation``:
    none, relu, silu (y * sigmoid(y)), gelu (erf form), gelu_tanh.  Numerically the matmul rounded to
    x's type, then the addition, then the activation, each rounded as the separate ops round it."""

    def infer_types(self):
        dt = same_dtype(self, 0, 1)
        x, w = (v.type for v in self.operands[:2])
        if x.rank < 1 or w.rank != 2:
            raise operand_error(self, "x must have rank >= 1 and w must be 2-D")
        K, N = w.shape
        if isinstance(K, int) and isinstance(x.shape[-1], int) and K != x.shape[-1]:
            raise operand_error(self, f"contraction dims differ: {x.shape[-1]} vs {K}")
        out = tuple(x.shape[:-1]) + (N,)
        if self.attrs["activation"] not in LINEAR_ACTIVATIONS:
            raise operand_error(self, f"activation {self.attrs['activation']!r} is not one of {LINEAR_ACTIVATIONS}")
        if len(self.operands) > 2:
            c = self.operands[2].type
            if c.dtype != dt:
                raise operand_error(self, f"c is {c.dtype}, x is {dt}")
            lead = c.shape[:-1]
            if c.rank > len(out) or (c.rank and c.shape[-1] not in (1, N)) or \
                    not (all(d == 1 for d in lead) or (c.rank == len(out) and tuple(lead) == tuple(out[:-1]))):
                raise operand_error(self, f"c {list(c.shape)} must broadcast to the result {list(out)} as a bias "
                                          "(leading dims 1) or a residual (the result's leading dims)")
        return [TensorType(dt, out)]

    def reference(self, x, w, c=None):
        acc = np.float64 if x.dtype == np.float64 else np.float32
        r = np.matmul(x.astype(acc), w.astype(acc)).astype(x.dtype)
        if c is not None:
            r = (r.astype(acc) + c.astype(acc)).astype(x.dtype)
        act = self.attrs["activation"]
        if act != "none":
            if act == "silu":
                r = (r * np.asarray(_UNARY["sigmoid"][0](r)).astype(x.dtype)).astype(x.dtype)
            else:
                r = np.asarray(_UNARY[act][0](r)).astype(x.dtype)
        return [np.asarray(r)]


def parse_einsum(eq: str, n_inputs: int):
    """'ij,jk->ik' -> ([['i','j'], ['j','k']], ['i','k']).  '...' becomes the label '.'+digit per
    broadcast dim and is expanded by the caller; implicit output = sorted labels used once."""
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_inputs:
        raise ValueError(f"equation has {len(terms)} operands, got {n_inputs}")
    if not arrow:
        counts = {}
        for t in terms:
            for ch in t.replace("...", ""):
                counts[ch] = counts.get(ch, 0) + 1
        rhs = ("..." if any("..." in t for t in terms) else "") + "".join(sorted(c for c, n in counts.items() if n == 1))
    return terms, rhs


def expand_einsum(eq: str, ranks):
    """Labels per operand and for the output, with '...' expanded to explicit labels."""
    terms, rhs = parse_einsum(eq, len(ranks))
    ell = 0
    for t, r in zip(terms, ranks):
        if "..." in t:
            ell = max(ell, r - len(t.replace("...", "")))
    ell_labels = [chr(0x100 + i) for i in range(ell)]  # private labels, never letters
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            n = r - len(t.replace("...", ""))
            pre, post = t.split("...")
            out_terms.append(list(pre) + ell_labels[ell - n:] + list(post))
        else:
            if len(t) != r:
                raise ValueError(f"term '{t}' has {len(t)} labels for an operand of rank {r}")
            out_terms.append(list(t))
    if "..." in rhs:
        pre, post = rhs.split("...")
        out = list(pre) + ell_labels + list(post)
    else:
        out = list(rhs)
    if len(set(out)) != len(out):
        raise ValueError("repeated labels in the output")
    return out_terms, out


@op("moec.einsum", operands=("inputs*",), attrs={"equation": Attr("str")}, traits=("pure",))
class EinsumOp(Operation):
    """numpy.einsum(equation, *inputs): products and sums over labels (ellipsis broadcast and
    repeated labels within an operand, i.e. diagonals, supported).  Accumulates in f32 or wider."""

    def infer_types(self):
        ts = [v.type for v in self.operands]
        if not ts or len({t.dtype for t in ts}) != 1:
            raise operand_error(self, "operands must share one element type")
        try:
            terms, out = expand_einsum(self.attrs["equation"], [t.rank for t in ts])
        except ValueError as e:
            raise operand_error(self, str(e)) from None
        size = {}
        for t, labels in zip(ts, terms):
            for lab, d in zip(labels, t.shape):
                prev = size.get(lab)
                if prev is None or prev == 1 or (not isinstance(prev, int) and isinstance(d, int) and d != 1):
                    size[lab] = d
        for lab in out:
            if lab not in size:
                raise operand_error(self, f"output label '{lab}' does not appear in the inputs")
        return [TensorType(ts[0].dtype, tuple(size[lab] for lab in out))]

    def reference(self, *xs):
        acc = np.float64 if xs[0].dtype == np.float64 else (np.int64 if xs[0].dtype.kind in "iu" else np.float32)
        return [np.asarray(np.einsum(self.attrs["equation"], *[x.astype(acc) for x in xs])).astype(xs[0].dtype)]
