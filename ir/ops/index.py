"""Indexing ops: gathers, scatters, nonzero, one-hot, cumulative sum, top-k, arg-max/min.

Index operands may be negative (counted from the end, as in ONNX); an index out of range is an
error, never an out-of-bounds access.
"""
from __future__ import annotations

import numpy as np

from moec.ir.core import Operation
from moec.ir.opdef import Attr, const_value, norm_axis, op, operand_error
from moec.ir.types import DType, TensorType
from moec.ir.ops.base import alloc_guard, require_int

REDUCTIONS = ("none", "add", "mul", "max", "min")


def _wrap(idx: np.ndarray, n: int, what="index") -> np.ndarray:
    idx = idx.astype(np.int64)
    if np.any((idx < -n) | (idx >= n)):
        bad = idx[(idx < -n) | (idx >= n)].reshape(-1)[0]
        raise IndexError(f"{what} {bad} out of range [{-n}, {n})")
    return np.where(idx < 0, idx + n, idx)


@op("moec.gather", operands=("data", "indices"), attrs={"axis": Attr("int", 0)}, traits=("pure",))
class GatherOp(Operation):
    """out = take(data, indices, axis): data.shape[:axis] + indices.shape + data.shape[axis+1:]."""
    index_operand = (1, 0, "axis")

    def infer_types(self):
        d, i = (v.type for v in self.operands)
        require_int(self, 1)
        a = norm_axis(self, self.attrs["axis"], d.rank)
        return [TensorType(d.dtype, d.shape[:a] + i.shape + d.shape[a + 1:])]

    def reference(self, data, idx):
        a = self.attrs["axis"] % data.ndim
        return [np.asarray(np.take(data, _wrap(idx, data.shape[a]), axis=a))]  # (a 0-d index gives a scalar)


@op("moec.gather_elements", operands=("data", "indices"), attrs={"axis": Attr("int", 0)}, traits=("pure",))
class GatherElementsOp(Operation):
    """out[i][j][k] = data[index[i][j][k]][j][k] (for axis 0), out has the indices' shape."""
    index_operand = (1, 0, "axis")

    def infer_types(self):
        d, i = (v.type for v in self.operands)
        require_int(self, 1)
        norm_axis(self, self.attrs["axis"], d.rank)
        if i.rank != d.rank:
            raise operand_error(self, "indices must have data's rank")
        return [TensorType(d.dtype, i.shape)]

    def reference(self, data, idx):
        a = self.attrs["axis"] % data.ndim
        return [np.take_along_axis(data, _wrap(idx, data.shape[a]), axis=a)]


@op("moec.gather_nd", operands=("data", "indices"), attrs={"batch_dims": Attr("int", 0)}, traits=("pure",))
class GatherNDOp(Operation):
    """ONNX GatherND: the last indices dim indexes the leading data dims (after batch_dims)."""

    def infer_types(self):
        d, i = (v.type for v in self.operands)
        require_int(self, 1)
        b = self.attrs["batch_dims"]
        q = i.shape[-1] if i.rank else None
        if not isinstance(q, int):
            raise operand_error(self, "the last dim of indices must be static")
        if i.rank < 1 or b + q > d.rank:
            raise operand_error(self, f"indices last dim {q} + batch_dims {b} exceeds data rank {d.rank}")
        return [TensorType(d.dtype, i.shape[:-1] + d.shape[b + q:])]

    def reference(self, data, idx):
        b = self.attrs["batch_dims"]
        q = idx.shape[-1]
        bshape = data.shape[:b]
        nb = int(np.prod(bshape, dtype=np.int64))
        dd = data.reshape((nb,) + data.shape[b:])
        ii = idx.reshape((nb, int(np.prod(idx.shape[b:-1], dtype=np.int64)), q))  # (-1 is ambiguous at q == 0)
        out = []
        for bi in range(nb):
            for row in ii[bi]:
                sel = tuple(int(_wrap(np.asarray(v), dd.shape[1 + k])) for k, v in enumerate(row))
                out.append(dd[bi][sel])
        res = np.array(out, dtype=data.dtype).reshape(idx.shape[:-1] + data.shape[b + q:])
        return [res]


def _reduce(red, a, b):
    if red == "none":
        return b
    if red == "add":
        return a + b
    if red == "mul":
        return a * b
    if red == "max":
        return np.maximum(a, b)
    return np.minimum(a, b)


@op("moec.scatter_elements", operands=("data", "indices", "updates"),
    attrs={"axis": Attr("int", 0), "reduction": Attr("str", "none", REDUCTIONS)}, traits=("pure",))
class ScatterElementsOp(Operation):
    """Copy of data with updates written (or reduced) at data[..., indices[i], ...] along axis;
    repeated indices apply in order."""
    index_operand = (1, 0, "axis")

    def infer_types(self):
        d, i, u = (v.type for v in self.operands)
        require_int(self, 1)
        norm_axis(self, self.attrs["axis"], d.rank)
        if i.rank != d.rank or u.rank != d.rank or u.dtype != d.dtype:
            raise operand_error(self, "indices/updates must have data's rank (and updates its type)")
        return [d]

    def reference(self, data, idx, upd):
        a = self.attrs["axis"] % data.ndim
        out = data.copy()
        idx = _wrap(idx, data.shape[a])
        red = self.attrs["reduction"]
        for pos in np.ndindex(*idx.shape):
            tgt = list(pos)
            tgt[a] = idx[pos]
            tgt = tuple(tgt)
            out[tgt] = _reduce(red, out[tgt], upd[pos])
        return [out]


@op("moec.scatter_nd", operands=("data", "indices", "updates"),
    attrs={"reduction": Attr("str", "none", REDUCTIONS)}, traits=("pure",))
class ScatterNDOp(Operation):
    """Copy of data with updates written (or reduced) at the index tuples in indices' last dim;
    repeated indices apply in order."""

    def infer_types(self):
        d, i, u = (v.type for v in self.operands)
        require_int(self, 1)
        if u.dtype != d.dtype:
            raise operand_error(self, "updates must have data's type")
        return [d]

    def reference(self, data, idx, upd):
        out = data.copy()
        q = idx.shape[-1]
        red = self.attrs["reduction"]
        flat_i = idx.reshape(-1, q)
        flat_u = upd.reshape((flat_i.shape[0],) + data.shape[q:])
        for row, u in zip(flat_i, flat_u):
            sel = tuple(int(_wrap(np.asarray(v), data.shape[k])) for k, v in enumerate(row))
            out[sel] = _reduce(red, out[sel], u)
        return [out]


@op("moec.nonzero", operands=("x",), traits=("pure",))
class NonZeroOp(Operation):
    """Indices of the non-zero elements, [rank, N] i64, in row-major order (N data dependent)."""

    def infer_types(self):
        return [TensorType(DType.I64, (self.operands[0].type.rank, None))]

    def reference(self, x):
        if x.ndim == 0:
            return [np.zeros((0, int(bool(x))), np.int64)]
        return [np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)]


@op("moec.one_hot", operands=("indices", "depth", "values"), attrs={"axis": Attr("int", -1)}, traits=("pure",))
class OneHotOp(Operation):
    """values[1] where the (wrapped) index equals the position along the new axis, else values[0];
    indices outside [-depth, depth) give an all-off row."""

    def infer_types(self):
        i, dep, val = (v.type for v in self.operands)
        r = i.rank + 1
        a = norm_axis(self, self.attrs["axis"], r)
        c = const_value(self.operands[1])
        depth = int(np.asarray(c).reshape(-1)[0]) if c is not None else None
        dims = list(i.shape)
        dims.insert(a, depth)
        return [TensorType(val.dtype, tuple(dims))]

    def reference(self, idx, depth, values):
        d = int(np.asarray(depth).reshape(-1)[0])
        r = idx.ndim + 1
        a = self.attrs["axis"] % r
        alloc_guard(self, idx.shape[:a] + (max(d, 0),) + idx.shape[a:], max(values.itemsize, 8))
        ii = idx.astype(np.int64)
        ii = np.where(ii < 0, ii + d, ii)
        onehot = (np.expand_dims(ii, a) == np.arange(d).reshape([-1 if k == a else 1 for k in range(r)]))
        return [np.where(onehot, values[1], values[0]).astype(values.dtype)]


@op("moec.cumsum", operands=("x", "axis"), attrs={"exclusive": Attr("bool", False),
                                                   "reverse": Attr("bool", False)}, traits=("pure",))
class CumSumOp(Operation):
    """Cumulative sum along the axis given by a scalar integer tensor (optionally exclusive
    and/or reversed)."""

    def infer_types(self):
        require_int(self, 1)
        if self.operands[1].type.rank > 1:
            raise operand_error(self, "axis must be a scalar")
        return [self.operands[0].type]

    def reference(self, x, axis):
        a = int(np.asarray(axis).reshape(-1)[0])
        if not -x.ndim <= a < x.ndim:
            raise ValueError(f"axis {a} out of range for rank {x.ndim}")
        a %= x.ndim
        y = np.flip(x, a) if self.attrs["reverse"] else x
        c = np.cumsum(y, axis=a, dtype=x.dtype)
        if self.attrs["exclusive"]:
            c = c - y
        if self.attrs["reverse"]:
            c = np.flip(c, a)
        return [np.asarray(c, order="C").astype(x.dtype)]


def topk_indices(x: np.ndarray, k: int, axis: int, largest: bool) -> np.ndarray:
    """Stable top-k (ties -> lowest index); NaN is treated as +inf (ranked like the largest value)."""
    key = x.astype(np.float64) if x.dtype.kind == "f" or str(x.dtype) == "bfloat16" else x.astype(np.int64)
    if key.dtype.kind == "f":
        nan = np.isnan(key)
        key = np.where(nan, np.inf, key)
        order = np.argsort(-key if largest else key, axis=axis, kind="stable")
        return np.take(order, np.arange(k), axis=axis)
    order = np.argsort(-key if largest else key, axis=axis, kind="stable")
    return np.take(order, np.arange(k), axis=axis)


@op("moec.topk", operands=("x", "k"), results=2, attrs={"axis": Attr("int", -1), "largest": Attr("bool", True),
                                                         "sorted": Attr("bool", True)}, traits=("pure",))
class TopKOp(Operation):
    """(values, indices i64) of the k largest (or smallest) along axis, sorted, ties -> lowest index.
    k is a 1-element i64 tensor; the result dim is static when k is a constant."""

    def infer_types(self):
        x = self.operands[0].type
        a = norm_axis(self, self.attrs["axis"], x.rank)
        c = const_value(self.operands[1])
        k = int(np.asarray(c).reshape(-1)[0]) if c is not None else None
        if k is not None and isinstance(x.shape[a], int) and not 0 <= k <= x.shape[a]:
            raise operand_error(self, f"k={k} out of range for dimension {x.shape[a]}")
        dims = list(x.shape)
        dims[a] = k
        return [TensorType(x.dtype, tuple(dims)), TensorType(DType.I64, tuple(dims))]

    def reference(self, x, k):
        k = int(np.asarray(k).reshape(-1)[0])
        a = self.attrs["axis"] % x.ndim
        if not 0 <= k <= x.shape[a]:
            raise ValueError(f"k={k} out of range for dimension {x.shape[a]}")
        idx = topk_indices(x, k, a, self.attrs["largest"])
        return [np.take_along_axis(x, idx, axis=a), idx.astype(np.int64)]


class _ArgOp(Operation):
    largest = True

    def infer_types(self):
        x = self.operands[0].type
        a = norm_axis(self, self.attrs["axis"], x.rank)
        dims = list(x.shape)
        if self.attrs["keepdims"]:
            dims[a] = 1
        else:
            del dims[a]
        return [TensorType(DType.I64, tuple(dims))]

    def reference(self, x):
        """As onnxruntime's (and the C runtime's) scan: best = x[0], then each x[i] > best (>= with
        select_last_index; < / <= for argmin) takes over.  So a NaN at index 0 wins, a NaN elsewhere
        never does; ties give the first (last) index."""
        a = self.attrs["axis"] % x.ndim
        if x.shape[a] == 0:
            raise ValueError("arg max/min over an empty axis")
        isf = x.dtype.kind == "f" or x.dtype.name == "bfloat16"
        if isf:
            nan = np.isnan(x)
            xv = np.where(nan, np.array(-np.inf if self.largest else np.inf, x.dtype), x)
        else:
            xv = x
        m = (np.max if self.largest else np.min)(xv, axis=a, keepdims=True)
        hit = xv == m
        if isf:
            hit &= ~nan
        if self.attrs["select_last_index"]:
            r = x.shape[a] - 1 - np.argmax(np.flip(hit, a), axis=a)
        else:
            r = np.argmax(hit, axis=a)
        if isf:
            r = np.where(np.take(nan, 0, axis=a), 0, r)
        r = np.asarray(r).astype(np.int64)
        return [np.expand_dims(r, a) if self.attrs["keepdims"] else r]


_ARG_ATTRS = {"axis": Attr("int", 0), "keepdims": Attr("bool", True), "select_last_index": Attr("bool", False)}


@op("moec.argmax", operands=("x",), attrs=_ARG_ATTRS, traits=("pure",))
class ArgMaxOp(_ArgOp):
    """Index (i64) of the maximum along axis; first occurrence unless select_last_index."""
    largest = True


@op("moec.argmin", operands=("x",), attrs=_ARG_ATTRS, traits=("pure",))
class ArgMinOp(_ArgOp):
    """Index (i64) of the minimum along axis; first occurrence unless select_last_index."""
    largest = False
