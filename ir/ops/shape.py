"""Shape and data-movement ops.

Shape-carrying operands (reshape's shape, slice's starts, ...) are tensors, so they may be
computed at run time; result types are exact when those operands are constants, and front
ends may declare more precise (symbolic) result types than ``infer_types`` can see.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, const_value, norm_axis, op, operand_error
from moec.ir.types import DType, TensorType, broadcast_shapes
from moec.ir.ops.base import alloc_guard, require_int


def _ints(o: Operation, i: int) -> Optional[List[int]]:
    """The values of operand i if it is an inline constant, else None."""
    if i >= len(o.operands):
        return None
    c = const_value(o.operands[i])
    return None if c is None else [int(x) for x in np.asarray(c).reshape(-1)]


def _vec_len(o: Operation, i: int):
    t = o.operands[i].type
    if t.rank != 1:
        raise operand_error(o, f"operand #{i} must be a 1-D integer tensor, got {t}")
    require_int(o, i)
    return t.shape[0]


def reshape_dims(in_shape, target, allowzero: bool):
    """Apply ONNX Reshape's 0 / -1 rules to (possibly symbolic) dims; None where unknowable."""
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            out.append(in_shape[i] if i < len(in_shape) else None)
        else:
            out.append(d)
    if -1 in out:
        j = out.index(-1)
        known = [d for k, d in enumerate(out) if k != j]
        out[j] = _divide_dims(in_shape, known)
    return [d if (d is None or isinstance(d, str) or d >= 0) else None for d in out]


def _divide_dims(num, den):
    """prod(num) / prod(den) symbolically (ints and symbol names); None if not exact."""
    if any(d is None for d in list(num) + list(den)):
        return None
    syms = [d for d in num if isinstance(d, str)]
    n = int(np.prod([d for d in num if isinstance(d, int)], dtype=np.int64))
    m = 1
    for d in den:
        if isinstance(d, str):
            if d not in syms:
                return None
            syms.remove(d)
        else:
            m *= d
    if m == 0 or n % m:
        return None
    q = n // m
    if not syms:
        return q
    if len(syms) == 1 and q == 1:
        return syms[0]
    return None


@op("moec.shape", operands=("x",), attrs={"start": Attr("int", 0), "end": Attr("int", None)}, traits=("pure",))
class ShapeOp(Operation):
    """The shape of x as an i64 vector, dims [start, end) (ONNX clamping of negative/out-of-range)."""

    def _range(self):
        r = self.operands[0].type.rank
        s, e = self.attrs.get("start", 0), self.attrs.get("end", r)
        s = min(max(s + r if s < 0 else s, 0), r)
        e = min(max(e + r if e < 0 else e, 0), r)
        return s, max(e, s)

    def infer_types(self):
        s, e = self._range()
        return [TensorType(DType.I64, (e - s,))]

    def reference(self, x):
        s, e = self._range()
        return [np.asarray(x.shape[s:e], np.int64)]


@op("moec.reshape", operands=("x", "shape"), attrs={"allowzero": Attr("bool", False)}, traits=("pure",))
class ReshapeOp(Operation):
    """x with a new shape (ONNX rules: 0 copies the input dim unless allowzero, -1 is inferred)."""

    def infer_types(self):
        x = self.operands[0].type
        n = _vec_len(self, 1)
        vals = _ints(self, 1)
        if vals is not None:
            return [TensorType(x.dtype, tuple(reshape_dims(x.shape, vals, self.attrs["allowzero"])))]
        if not isinstance(n, int):
            raise operand_error(self, "the rank of the new shape must be static")
        return [TensorType(x.dtype, (None,) * n)]

    def reference(self, x, shape):
        target = [int(v) for v in shape]
        dims = reshape_dims(list(x.shape), target, self.attrs["allowzero"])
        if any(d is None for d in dims):
            raise ValueError(f"cannot reshape {list(x.shape)} to {target}")
        return [x.reshape(dims)]


@op("moec.flatten", operands=("x",), attrs={"axis": Attr("int", 1)}, traits=("pure",))
class FlattenOp(Operation):
    """x as a matrix [prod(dims[:axis]), prod(dims[axis:])]."""

    def infer_types(self):
        x = self.operands[0].type
        a = self.attrs["axis"]
        a = a + x.rank if a < 0 else a
        if not 0 <= a <= x.rank:
            raise operand_error(self, f"axis {self.attrs['axis']} out of range for rank {x.rank}")

        def prod(ds):
            if len(ds) == 1:
                return ds[0]
            return int(np.prod(ds, dtype=np.int64)) if all(isinstance(d, int) for d in ds) else None
        return [TensorType(x.dtype, (prod(x.shape[:a]) if a else 1, prod(x.shape[a:]) if a < x.rank else 1))]

    def reference(self, x):
        a = self.attrs["axis"]
        a = a + x.ndim if a < 0 else a
        return [x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1) if x.size else
                x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), int(np.prod(x.shape[a:], dtype=np.int64)))]


@op("moec.squeeze", operands=("x", "axes?"), attrs={"axes": Attr("ints", ())}, traits=("pure",))
class SqueezeOp(Operation):
    """Remove the listed size-1 dims (from the attribute, or from the optional ``axes``
    operand when they are only known at run time: then only the result rank is static)."""

    def _axes(self, runtime=None):
        r = self.operands[0].type.rank
        axes = self.attrs["axes"] if runtime is None else [int(a) for a in runtime]
        return sorted({norm_axis(self, a, r) for a in axes})

    def infer_types(self):
        x = self.operands[0].type
        if len(self.operands) > 1:
            n = self.operands[1].type.shape[0] if self.operands[1].type.rank == 1 else None
            if not isinstance(n, int):
                raise operand_error(self, "the number of axes must be static")
            return [TensorType(x.dtype, (None,) * (x.rank - n))]
        axes = self._axes()
        for a in axes:
            if isinstance(x.shape[a], int) and x.shape[a] != 1:
                raise operand_error(self, f"cannot squeeze dim {a} of size {x.shape[a]}")
        return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]

    def reference(self, x, axes=None):
        return [np.squeeze(x, axis=tuple(self._axes(None if axes is None else np.asarray(axes).reshape(-1))))]


@op("moec.unsqueeze", operands=("x", "axes?"), attrs={"axes": Attr("ints", ())}, traits=("pure",))
class UnsqueezeOp(Operation):
    """Insert size-1 dims at the listed positions of the output (axes from the attribute, or from
    the optional ``axes`` operand when only known at run time)."""

    def _axes(self, runtime=None):
        src = self.attrs["axes"] if runtime is None else [int(a) for a in runtime]
        r = self.operands[0].type.rank + len(src)
        axes = sorted(norm_axis(self, a, r) for a in src)
        if len(set(axes)) != len(axes):
            raise operand_error(self, "repeated axes")
        return axes

    def infer_types(self):
        x = self.operands[0].type
        if len(self.operands) > 1:
            n = self.operands[1].type.shape[0] if self.operands[1].type.rank == 1 else None
            if not isinstance(n, int):
                raise operand_error(self, "the number of axes must be static")
            return [TensorType(x.dtype, (None,) * (x.rank + n))]
        axes = self._axes()
        dims = list(x.shape)
        for a in axes:
            dims.insert(a, 1)
        return [TensorType(x.dtype, tuple(dims))]

    def reference(self, x, axes=None):
        return [np.expand_dims(x, tuple(self._axes(None if axes is None else np.asarray(axes).reshape(-1))))]


@op("moec.transpose", operands=("x",), attrs={"perm": Attr("ints")}, traits=("pure",))
class TransposeOp(Operation):
    """Permute dims: out.shape[i] = x.shape[perm[i]]."""

    def infer_types(self):
        x = self.operands[0].type
        p = self.attrs["perm"]
        if sorted(p) != list(range(x.rank)):
            raise operand_error(self, f"perm {list(p)} is not a permutation of rank {x.rank}")
        return [TensorType(x.dtype, tuple(x.shape[i] for i in p))]

    def reference(self, x):
        return [np.asarray(np.transpose(x, self.attrs["perm"]), order="C")]


@op("moec.expand", operands=("x", "shape"), traits=("pure",))
class ExpandOp(Operation):
    """Broadcast x to the shape (bidirectional, as ONNX Expand)."""

    def infer_types(self):
        x = self.operands[0].type
        n = _vec_len(self, 1)
        vals = _ints(self, 1)
        if vals is None:
            if not isinstance(n, int):
                raise operand_error(self, "the rank of the target shape must be static")
            vals = [None] * n
        try:
            return [TensorType(x.dtype, broadcast_shapes(x.shape, vals))]
        except ValueError as e:
            raise operand_error(self, str(e)) from None

    def reference(self, x, shape):
        out = np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))
        alloc_guard(self, out, x.itemsize)
        return [np.asarray(np.broadcast_to(x, out), order="C")]


@op("moec.tile", operands=("x", "repeats"), traits=("pure",))
class TileOp(Operation):
    """Repeat x along each dim repeats[i] times."""

    def infer_types(self):
        x = self.operands[0].type
        n = _vec_len(self, 1)
        if isinstance(n, int) and n != x.rank:
            raise operand_error(self, f"repeats has {n} values, x has rank {x.rank}")
        vals = _ints(self, 1)
        if vals is None:
            return [TensorType(x.dtype, (None,) * x.rank)]
        dims = []
        for d, r in zip(x.shape, vals):
            dims.append(d * r if isinstance(d, int) else (d if r == 1 else None))
        return [TensorType(x.dtype, tuple(dims))]

    def reference(self, x, reps):
        reps = [int(r) for r in reps]
        if len(reps) == x.ndim:
            alloc_guard(self, [d * r for d, r in zip(x.shape, reps)], x.itemsize)
        return [np.tile(x, reps)]


@op("moec.constant_of_shape", operands=("shape",), attrs={"value": Attr("tensor")}, traits=("pure",))
class ConstantOfShapeOp(Operation):
    """A tensor of the given shape filled with the one-element ``value``."""

    def infer_types(self):
        n = _vec_len(self, 0)
        v = self.attrs["value"]
        dt = DType.from_np(np.asarray(v).dtype)
        vals = _ints(self, 0)
        if vals is not None:
            return [TensorType(dt, tuple(vals))]
        if not isinstance(n, int):
            raise operand_error(self, "the rank of the shape must be static")
        return [TensorType(dt, (None,) * n)]

    def reference(self, shape):
        v = np.asarray(self.attrs["value"]).reshape(-1)
        return [np.full(alloc_guard(self, shape, v.dtype.itemsize), v[0], dtype=v.dtype)]


@op("moec.range", operands=("start", "limit", "delta"), traits=("pure",))
class RangeOp(Operation):
    """[start, start+delta, ...) below limit: max(ceil((limit-start)/delta), 0) values."""

    def infer_types(self):
        ts = [v.type for v in self.operands]
        if any(t.rank != 0 for t in ts) or len({t.dtype for t in ts}) != 1:
            raise operand_error(self, "start, limit, delta must be scalars of one type")
        vals = [const_value(v) for v in self.operands]
        if all(v is not None for v in vals):
            return [TensorType(ts[0].dtype, (len(self.reference(*vals)[0]),))]
        return [TensorType(ts[0].dtype, (None,))]

    def reference(self, start, limit, delta):
        s, l_, d = (np.asarray(v).item() for v in (start, limit, delta))
        if d == 0:
            raise ValueError("range delta is zero")
        if isinstance(s, int) and isinstance(l_, int) and isinstance(d, int):
            n = max(-((s - l_) // d), 0)  # exact ceil((l - s) / d) for any int64 values
        else:
            q = np.ceil((l_ - s) / d)
            if not np.isfinite(q):
                raise ValueError(f"range({s}, {l_}, {d}) has no finite length")
            n = max(int(q), 0)
        dt = np.asarray(start).dtype
        alloc_guard(self, (n,), dt.itemsize)
        if dt.kind == "f" and n:  # accumulated in the element type, as onnxruntime (and moec_k_range) do
            steps = np.full(n, d, dt)
            steps[0] = s
            return [np.add.accumulate(steps, dtype=dt)]
        return [(s + np.arange(n) * d).astype(dt)]  # (exact mod 2^64; every value lies between s and l)


@op("moec.concat", operands=("inputs*",), attrs={"axis": Attr("int")}, traits=("pure",))
class ConcatOp(Operation):
    """Join tensors along an axis."""

    def infer_types(self):
        ts = [v.type for v in self.operands]
        if not ts:
            raise operand_error(self, "needs at least one operand")
        r = ts[0].rank
        a = norm_axis(self, self.attrs["axis"], r)
        if any(t.rank != r or t.dtype != ts[0].dtype for t in ts):
            raise operand_error(self, "operands must have the same rank and element type")
        dims = list(ts[0].shape)
        for t in ts[1:]:
            for i in range(r):
                if i != a and isinstance(dims[i], int) and isinstance(t.shape[i], int) and dims[i] != t.shape[i]:
                    raise operand_error(self, f"dim {i} differs: {dims[i]} vs {t.shape[i]}")
                if i != a and not isinstance(dims[i], int):
                    dims[i] = t.shape[i] if isinstance(t.shape[i], int) else dims[i]
        along = [t.shape[a] for t in ts]
        dims[a] = sum(along) if all(isinstance(d, int) for d in along) else (
            [d for d in along if d != 0][0] if sum(1 for d in along if d != 0) == 1 else None)
        return [TensorType(ts[0].dtype, tuple(dims))]

    def reference(self, *xs):
        return [np.concatenate(xs, axis=self.attrs["axis"])]


@op("moec.split", operands=("x", "sizes"), results=None, attrs={"axis": Attr("int", 0)}, traits=("pure",))
class SplitOp(Operation):
    """Split x along axis into len(sizes) parts of the given sizes."""

    def infer_types(self):
        x = self.operands[0].type
        a = norm_axis(self, self.attrs["axis"], x.rank)
        n = _vec_len(self, 1)
        vals = _ints(self, 1)
        if not isinstance(n, int):
            raise operand_error(self, "the number of parts must be static")
        outs = []
        for i in range(n):
            dims = list(x.shape)
            dims[a] = vals[i] if vals is not None else None
            outs.append(TensorType(x.dtype, tuple(dims)))
        return outs

    def reference(self, x, sizes):
        a = self.attrs["axis"]
        cuts = np.cumsum([int(s) for s in sizes])[:-1]
        if int(np.sum(sizes)) != x.shape[a]:
            raise ValueError(f"split sizes {list(sizes)} do not add up to {x.shape[a]}")
        return [np.asarray(p, order="C") for p in np.split(x, cuts, axis=a)]


def slice_params(shape, starts, ends, axes, steps):
    """Per-dim (start, count, step) after clamping as onnxruntime does (the reference for extreme
    values; the C runtime's moec_k_slice does the same): a dimension of 0 gives nothing; the step is
    clamped to [-d, d] (one element either way); a start to [0, d] ([0, d-1] stepping backwards); an
    end of INT32_MAX or INT64_MAX means "to the end" (-1 stepping backwards), any other end is
    clamped to [0, d] ([-1, d] stepping backwards)."""
    r = len(shape)
    out = [(0, shape[i], 1) for i in range(r)]
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a + r if a < 0 else a
        d = shape[a]
        if st == 0:
            raise ValueError("slice step 0")
        if d == 0:
            out[a] = (0, 0, 1)
            continue
        st = max(min(st, d), -d)
        s = s + d if s < 0 else s
        s = min(max(s, 0), d - 1 if st < 0 else d)
        if e in (2**31 - 1, 2**63 - 1):
            e = -1 if st < 0 else d
        else:
            e = e + d if e < 0 else e
            e = min(max(e, -1 if st < 0 else 0), d)
        n = max(0, -(-(e - s) // st)) if st > 0 else max(0, -(-(s - e) // -st))
        out[a] = (s, n, st)
    return out


@op("moec.slice", operands=("x", "starts", "ends", "axes", "steps"), traits=("pure",))
class SliceOp(Operation):
    """ONNX Slice: per listed axis take start:end:step with ONNX clamping."""

    def infer_types(self):
        x = self.operands[0].type
        for i in range(1, 5):
            _vec_len(self, i)
        vals = [_ints(self, i) for i in range(1, 5)]
        if vals[2] is None:  # axes known only at run time: any dim may change
            return [TensorType(x.dtype, (None,) * x.rank)]
        dims = list(x.shape)
        r = x.rank
        for a in vals[2]:
            if not -r <= a < r:
                raise operand_error(self, f"axis {a} out of range for rank {r}")
        if all(v is not None for v in vals):
            static = [d if isinstance(d, int) else 1 << 62 for d in x.shape]
            params = slice_params(static, *vals)
            for a in vals[2]:
                a = a + r if a < 0 else a
                s, n, st = params[a]
                full = not isinstance(x.shape[a], int) and s == 0 and st == 1 and n >= (1 << 62)
                dims[a] = x.shape[a] if full else (n if isinstance(x.shape[a], int) else None)
        else:
            for a in vals[2]:
                dims[a + r if a < 0 else a] = None
        return [TensorType(x.dtype, tuple(dims))]

    def reference(self, x, starts, ends, axes, steps):
        p = slice_params(list(x.shape), *[[int(v) for v in t] for t in (starts, ends, axes, steps)])
        idx = tuple(slice(s, s + n * st if s + n * st >= 0 else None, st) for s, n, st in p)
        return [np.asarray(x[idx], order="C")]


@op("moec.trilu", operands=("x", "k"), attrs={"upper": Attr("bool", True)}, traits=("pure",))
class TriluOp(Operation):
    """Keep the upper (or lower) triangle of the last two dims, offset by diagonal k (scalar)."""

    def infer_types(self):
        x = self.operands[0].type
        if x.rank < 2:
            raise operand_error(self, "x must have rank >= 2")
        return [x]

    def reference(self, x, k):
        k = int(np.asarray(k).reshape(-1)[0])
        return [(np.triu(x, k) if self.attrs["upper"] else np.tril(x, k)).astype(x.dtype)]
