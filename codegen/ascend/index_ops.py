"""Integer and index ops on the NPU (issue 16 item 6): vec_index (kernels/vector_kernels.cpp), a kernel of the AI
core's scalar unit, where int64 is a native type, so every result is exact:

    comparisons of int64 / int32 tensors (longcat_flash's zero-computation experts: ``topk_indices >= E``),
    Where of integer (or bool) values, integer cumsum (position ids from a padding mask), GatherElements, and
    top-k outside the fused router (sorted, ties to the lowest index, NaN ranked as +inf: the reference's rule),
    integer arithmetic (add, sub, mul wrapping like numpy; div truncating, a zero divisor refused; max, min, neg,
    abs, clip: doge's and ergo's index math), integer / bool casts between widths (i32 -> i64 ids), and
    ScatterElements (the DSA indexers' top-k mask: one core, in index order), also with a reduction (add, mul,
    max, min of f32 / f16 / bf16 / i64 / i32 values: a repeated index accumulates in index order).

The vector unit cannot do these exactly: its Compare takes half/float (integers past 2^24 collide) and it has no
int64 arithmetic.  The scalar unit does one element per few cycles, so these are for the index-sized tensors of a
decoder ([tokens, k] ids, a [batch, seq] mask), not for activations: the cost model says so (``estimate``).
A cast to the tensor's own type is a copy (vec_copy).
"""
from __future__ import annotations

import struct
from typing import List, Optional

import numpy as np

from moec.ir.opdef import const_value
from moec.codegen.ascend.launch_plan import Sym, device_op, shape_of, smax, smin, sprod

CMP = {"moec.equal": 0, "moec.less": 1, "moec.less_equal": 2, "moec.greater": 3, "moec.greater_equal": 4}
X_CMP, X_SELECT, X_CUMSUM, X_GATHER_EL, X_TOPK, X_ARITH, X_IUNARY, X_CAST, X_SCATTER_EL, X_TOPK_K = range(10)
ARITH = {"moec.add": 0, "moec.sub": 1, "moec.mul": 2, "moec.div": 3, "moec.max": 4, "moec.min": 5}
IUNARY = {"moec.neg": 0, "moec.abs": 1, "moec.clip": 2}
CAST_FROM = {"i1": 1, "ui8": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8}   # integer / bool sources: bytes
CAST_TO = {"i8": 1, "i16": 2, "i32": 4, "i64": 8}
FIELDS = ("op", "n", "esize", "amode", "bmode", "cmp", "outer", "L", "inner", "k", "flags", "vdt", "tile")
INDEX_TILE = 4096      # output elements staged per copy out (at most 48 KiB of Unified Buffer: topk's values + ids)
INT_DTYPES = ("i64", "i32")
REDUCE = {"none": 0, "add": 1, "mul": 2, "max": 3, "min": 4}   # scatter_elements' reduction (IndexTiling.cmp)
REDUCE_VDT = {"f32": 0, "bf16": 1, "f16": 2, "i64": 3, "i32": 4}  # the types a reducing scatter takes (vdt)
FLOAT_CODE = {"f32": 0, "bf16": 1, "f16": 2}
SCALAR_CYCLES = 8      # cost model: scalar-unit cycles per element visited (an ESTIMATE, not measured)


def _tiling(**kw):
    if any(isinstance(v, Sym) for v in kw.values()):
        from moec.codegen.ascend.launch_plan import Tiling
        return Tiling([("i", kw.get(f, 0)) for f in FIELDS])
    return struct.pack("<" + "i" * len(FIELDS), *[int(kw.get(f, 0)) for f in FIELDS])


def handles(o) -> bool:
    """Whether `o` belongs to vec_index (or is a same-type cast): index_reason decides if it runs there."""
    n = o.name
    if n in CMP:
        return o.operands[0].type.dtype.mlir in INT_DTYPES
    if n == "moec.select":
        return o.results[0].type.dtype.mlir not in FLOAT_CODE
    if n == "moec.cumsum":
        return o.results[0].type.dtype.mlir in INT_DTYPES
    if n == "moec.cast":
        src, dst = o.operands[0].type.dtype, o.attrs["to"]
        return src == dst or (src.mlir in CAST_FROM and dst.mlir in CAST_TO)
    if n in ARITH or n in IUNARY:
        return o.results[0].type.dtype.mlir in INT_DTYPES
    if n == "moec.scatter_nd":  # the reducing ScatterND (index_add); the plain one is a copy (vector_ops)
        return o.attrs["reduction"] != "none"
    return n in ("moec.gather_elements", "moec.topk", "moec.scatter_elements")


def index_reason(m, o) -> Optional[str]:
    """None when `o` runs on vec_index (or as a copy), else why it stays on the host."""
    n = o.name
    if n == "moec.cast":
        return None
    if n in ARITH or n in IUNARY:
        dts = {v.type.dtype.mlir for v in o.operands} | {o.results[0].type.dtype.mlir}
        if len(dts) != 1:
            return f"integer {n[5:]} of several types ({', '.join(sorted(dts))})"
        if n == "moec.clip" and any(v.type.rank for v in o.operands[1:]):
            return "clip bounds that are not scalars"
        return None
    if n == "moec.scatter_elements":
        d, i = o.operands[0].type, o.operands[1].type
        if o.attrs["reduction"] != "none" and d.dtype.mlir not in REDUCE_VDT:
            return f"scatter_elements reducing ({o.attrs['reduction']}) {d.dtype.mlir} values (vec_index reduces " \
                   f"{', '.join(REDUCE_VDT)})"
        if d.dtype.itemsize not in (1, 2, 4, 8) or i.dtype.mlir not in INT_DTYPES:
            return f"scatter_elements of {d.dtype.mlir} data with {i.dtype.mlir} indices"
        return None
    if n == "moec.scatter_nd":
        d, i, u = (v.type for v in o.operands[:3])
        q = i.shape[-1] if i.rank else None
        if i.dtype.mlir not in ("i64", "i32"):
            return "indices that are not i64 or i32"
        if u.dtype != d.dtype:
            return "updates of another type than the data"
        if q != 1 or d.dtype.mlir not in REDUCE_VDT:
            return f"scatter_nd with reduction '{o.attrs['reduction']}' of {d.dtype.mlir} values and index tuples " \
                   f"of {q} elements (vec_index reduces rows at 1-element tuples of {', '.join(REDUCE_VDT)} values)"
        return None
    if n in CMP:
        a, b = (v.type.dtype.mlir for v in o.operands[:2])
        return None if a == b else f"comparison of {a} with {b}"
    if n == "moec.select":
        dts = {v.type.dtype for v in o.operands[1:3]} | {o.results[0].type.dtype}
        if len(dts) != 1 or next(iter(dts)).itemsize not in (1, 2, 4, 8):
            return f"select of values of several types or widths ({', '.join(sorted(d.mlir for d in dts))})"
        return None
    if n == "moec.cumsum":
        if const_value(o.operands[1], m.weights) is None:
            return "cumsum axis known only at run time"
        return "cumsum of a scalar" if o.operands[0].type.rank == 0 else None
    if n == "moec.gather_elements":
        d, i = o.operands[0].type, o.operands[1].type
        if d.dtype.itemsize not in (1, 2, 4, 8):
            return f"gather_elements of {d.dtype.mlir} elements"
        if i.dtype.mlir not in INT_DTYPES:
            return "indices that are not i64 or i32"
        a = o.attrs["axis"] % d.rank
        for k, (dd, ii) in enumerate(zip(d.shape, i.shape)):
            if k != a and dd != ii and dd != 1:
                return "indices that differ from the data in a dimension other than the axis (data not 1 there)"
        return None
    if n == "moec.topk":
        x = o.operands[0].type
        if x.dtype.mlir not in FLOAT_CODE:
            return f"top-k of {x.dtype.mlir} values (vec_index ranks f32, f16 or bf16)"
        c = const_value(o.operands[1], m.weights)
        if c is None:  # read back at run time (X_TOPK_K), checked against the axis' length
            if x.rank == 0:
                return "top-k of a scalar"
            if any(d != 1 for d in x.shape[o.attrs["axis"] % x.rank + 1:]):
                return "k known only at run time along an axis other than the last (the results' layout would " \
                       "need a copy of run-time size)"
            return None
        k = int(np.asarray(c).reshape(-1)[0])
        if k < 0:
            return f"k = {k}"
        if x.rank == 0:
            return "top-k of a scalar"
        return None
    return f"no AscendC kernel for {n}"


def _bd(cores, items):
    return smax(1, smin(cores, items))


def _cdiv(a, b):
    return (a + b - 1) // b if isinstance(a, Sym) else -(-int(a) // int(b))


@device_op
def launch(dev, o, args: List) -> List:
    """Plan `o` on vec_index (``dev``: a launch_plan.Recorder): its result buffers."""
    from moec.codegen.ascend.vector_ops import _contig, broadcast_shapes, copy_strided, expand_to
    from moec.codegen.ascend.launch_plan import np_dtype
    n = o.name
    if n == "moec.scatter_nd":
        return [scatter_rows_reduce(dev, o, args)]
    if n == "moec.cast":
        src, dst = o.operands[0].type.dtype, o.attrs["to"]
        x = dev.buf(args[0], src.np)
        out = dev.new(x.shape, dst.np)
        if src == dst:
            copy_strided(dev, x, out, [x.size], [1], [1])
        elif sprod(x.shape):
            dev.launch("vec_index", _bd(dev.cores, _cdiv(x.size, INDEX_TILE)), [x, x, x, out],
                       _tiling(op=X_CAST, n=x.size, esize=CAST_FROM[src.mlir], k=CAST_TO[dst.mlir],
                               flags=int(src.mlir in ("i1", "ui8")), tile=INDEX_TILE))
        return [out]
    if n in ARITH or (n in IUNARY and n != "moec.clip"):
        vdt = o.results[0].type.dtype.np
        vals = args[:2] if n in ARITH else args[:1]
        out_shape = broadcast_shapes(*[shape_of(a) for a in vals])
        out = dev.new(out_shape, vdt)
        total = sprod(out_shape)
        ops, kw = [], dict(op=X_ARITH if n in ARITH else X_IUNARY, n=total, esize=np.dtype(vdt).itemsize,
                            tile=INDEX_TILE, cmp=ARITH.get(n, IUNARY.get(n, 0)))
        for key, v in zip(("amode", "bmode"), vals):
            sc = not isinstance(sprod(shape_of(v)), Sym) and int(sprod(shape_of(v))) == 1
            kw[key] = int(sc)
            b = dev.buf(v, vdt)
            ops.append(b.reshape(-1) if sc else (b if tuple(b.shape) == tuple(out_shape) else expand_to(dev, b, out_shape)))
        status = dev.new((8,), np.int32)
        if total:
            dev.launch("vec_index", _bd(dev.cores, _cdiv(total, INDEX_TILE)), [ops[0], ops[-1], status, out],
                       _tiling(**kw))
            if n == "moec.div":
                dev.check(status, "integer division by zero")
        return [out]
    if n == "moec.clip":
        vdt = o.results[0].type.dtype.np
        x = dev.buf(args[0], vdt)
        info = np.iinfo(vdt)
        lo = dev.buf(args[1] if args[1] is not None else np.array(info.min, vdt), vdt).reshape(-1)
        hi = dev.buf(args[2] if len(args) > 2 and args[2] is not None else np.array(info.max, vdt), vdt).reshape(-1)
        out = dev.new(x.shape, vdt)
        if sprod(x.shape):
            dev.launch("vec_index", _bd(dev.cores, _cdiv(x.size, INDEX_TILE)), [x, lo, hi, out],
                       _tiling(op=X_IUNARY, cmp=2, n=x.size, esize=np.dtype(vdt).itemsize, tile=INDEX_TILE))
        return [out]
    if n == "moec.scatter_elements":
        data, idx = dev.buf(args[0]), args[1]
        upd = dev.buf(args[2], data.dtype)
        a = o.attrs["axis"] % data.ndim
        out = dev.new(data.shape, data.dtype)
        if sprod(data.shape):
            copy_strided(dev, data, out, [data.size], [1], [1])
        ishape = tuple(shape_of(idx))
        total = sprod(ishape)
        if total:
            if tuple(upd.shape) != ishape:
                upd = expand_to(dev, upd, ishape)
            want = tuple(data.shape[k] if k == a else ishape[k] for k in range(data.ndim))
            if tuple(want) != tuple(data.shape):
                from moec.codegen.ascend.launch_plan import PlanError
                raise PlanError("scatter_elements: indices smaller than the data off the axis")
            i64 = np.dtype(getattr(idx, "dtype", np.int64)) == np.int64
            ids = dev.buf(idx, np.int64 if i64 else np.int32)
            status = dev.new((8,), np.int32)
            L = data.shape[a]
            dev.launch("vec_index", 1, [status, ids, upd, out],
                       _tiling(op=X_SCATTER_EL, n=total, esize=data.dtype.itemsize, outer=sprod(ishape[:a]), L=L,
                               inner=sprod(ishape[a + 1:]), k=ishape[a], flags=int(i64), tile=INDEX_TILE,
                               cmp=REDUCE[o.attrs["reduction"]],
                               vdt=REDUCE_VDT.get(o.operands[0].type.dtype.mlir, 0)))
            dev.check(status, f"scatter_elements: index {{}} out of range [{-L}, {L})", ids.reshape(-1), -L, L)
        return [out]
    if n in CMP or n == "moec.select":
        vals = args[:2] if n in CMP else args[1:3]
        vdt = np_dtype(o.operands[0 if n in CMP else 1].type.dtype.mlir)
        out_shape = broadcast_shapes(*[shape_of(a) for a in args])
        out = dev.new(out_shape, np.bool_ if n in CMP else vdt)
        total = sprod(out_shape)
        kw = dict(op=X_CMP if n in CMP else X_SELECT, n=total, esize=np.dtype(vdt).itemsize, tile=INDEX_TILE,
                  cmp=CMP.get(n, 0))
        ops = []
        for key, v in (("amode", vals[0]), ("bmode", vals[1])):
            sc = not isinstance(sprod(shape_of(v)), Sym) and int(sprod(shape_of(v))) == 1
            kw[key] = int(sc)
            b = dev.buf(v, vdt)
            ops.append(b.reshape(-1) if sc else (b if tuple(b.shape) == tuple(out_shape) else expand_to(dev, b, out_shape)))
        if n in CMP:
            arrays = [ops[0], ops[1], ops[0], out]
        else:
            c = dev.buf(args[0], np.bool_)
            c = c if tuple(c.shape) == tuple(out_shape) else expand_to(dev, c, out_shape)
            arrays = [ops[0], ops[1], c, out]
        if total:
            dev.launch("vec_index", _bd(dev.cores, _cdiv(total, INDEX_TILE)), arrays, _tiling(**kw))
        return [out]
    if n == "moec.cumsum":
        x = dev.buf(args[0])
        shp = tuple(x.shape)
        a = int(np.asarray(args[1]).reshape(-1)[0]) % len(shp)
        outer, L, inner = sprod(shp[:a]), shp[a], sprod(shp[a + 1:])
        out = dev.new(shp, x.dtype)
        flags = (1 if o.attrs["reverse"] else 0) | (2 if o.attrs["exclusive"] else 0)
        if sprod(shp):
            W = inner if not isinstance(inner, Sym) and int(inner) < INDEX_TILE // 2 else None
            nch = 1 if W is not None else _cdiv(inner, INDEX_TILE // 2)
            dev.launch("vec_index", _bd(dev.cores, outer * nch), [x, x, x, out],
                       _tiling(op=X_CUMSUM, esize=x.dtype.itemsize, outer=outer, L=L, inner=inner, flags=flags,
                               tile=INDEX_TILE))
        return [out]
    if n == "moec.gather_elements":
        data = dev.buf(args[0])
        idx = args[1]
        ishape = tuple(shape_of(idx))
        a = o.attrs["axis"] % data.ndim
        want = tuple(data.shape[k] if k == a else ishape[k] for k in range(data.ndim))
        if tuple(data.shape) != want:  # data broadcast (dims of 1) to the indices' shape off the axis
            st = _contig(data.shape)
            sstr = [0 if k != a and data.shape[k] == 1 and want[k] != 1 else st[k] for k in range(data.ndim)]
            d2 = dev.new(want, data.dtype)
            copy_strided(dev, data, d2, list(want), sstr, _contig(want))
            data = d2
        i64 = np.dtype(getattr(idx, "dtype", np.int64)) == np.int64
        ids = dev.buf(idx, np.int64 if i64 else np.int32)
        out = dev.new(ishape, data.dtype)
        total = sprod(ishape)
        if total:
            status = dev.new((8,), np.int32)
            L = data.shape[a]
            dev.launch("vec_index", _bd(dev.cores, _cdiv(total, INDEX_TILE)), [data, ids, status, out],
                       _tiling(op=X_GATHER_EL, n=total, esize=data.dtype.itemsize, outer=sprod(want[:a]), L=L,
                               inner=sprod(want[a + 1:]), k=ishape[a], flags=int(i64), tile=INDEX_TILE))
            dev.check(status, f"gather_elements: index {{}} out of range [{-L}, {L})", ids.reshape(-1), -L, L)
        return [out]
    # top-k: the axis moved last by a copy when it is not, the results moved back
    x = dev.buf(args[0])
    shp = tuple(x.shape)
    r = len(shp)
    a = o.attrs["axis"] % r
    L = shp[a]
    from moec.codegen.ascend.launch_plan import Buf
    if isinstance(args[1], Buf):  # k known at run time: checked and read back (the results' size) before the launch
        kb = dev.buf(args[1], np.int64).reshape(-1)
        kv, status = dev.new((8,), np.int32), dev.new((8,), np.int32)
        dev.launch("vec_index", 1, [kb, kb, status, kv], _tiling(op=X_TOPK_K, L=L, tile=INDEX_TILE))
        if isinstance(L, Sym):  # (an axis of run-time length: the bound is not named)
            dev.check(status, "top-k: k out of range for the axis")
        else:
            dev.check(status, f"top-k: k = {{}} out of range [0, {L}]", kb, 0, int(L) + 1)
        k = dev.read(kv, 0)
    else:
        k = int(np.asarray(args[1]).reshape(-1)[0])
    if a != r - 1:
        perm = [i for i in range(r) if i != a] + [a]
        pshape = [shp[i] for i in perm]
        st = _contig(shp)
        xt = dev.new(tuple(pshape), x.dtype)
        copy_strided(dev, x, xt, pshape, [st[i] for i in perm], _contig(pshape))
        x = xt
    outer = sprod(x.shape[:-1])
    kshape = tuple(x.shape[:-1]) + (k,)
    vals, ids = dev.new(kshape, x.dtype), dev.new(kshape, np.int64)
    tl = _tiling(op=X_TOPK, outer=outer, L=L, k=k, flags=int(bool(o.attrs["largest"])), inner=1,
                 vdt=FLOAT_CODE[o.operands[0].type.dtype.mlir], tile=INDEX_TILE)
    if isinstance(k, Sym):  # (the kernel stages TILE // k rows per copy out; k = 0: no launch)
        if sprod(x.shape[:-1]):
            with dev.when(k):
                dev.launch("vec_index", _bd(dev.cores, outer), [x, x, ids, vals], tl)
    elif k and sprod(kshape):
        G = max(1, INDEX_TILE // k)  # rows per copy out (k > the tile: one row, its picks in chunks)
        dev.launch("vec_index", _bd(dev.cores, _cdiv(outer, G)), [x, x, ids, vals], tl)
    if a != r - 1:  # [.., k] back to the axis' place
        oshape = list(shp)
        oshape[a] = k
        inv = [i for i in range(r) if i != a] + [a]        # the moved layout's dims, in original dim numbers
        kst = _scontig(kshape)  # (k may be a run-time value)
        sstr = [0] * r
        for pos, dim in enumerate(inv):
            sstr[dim] = kst[pos]
        res = []
        for b in (vals, ids):
            ob = dev.new(tuple(oshape), b.dtype)
            copy_strided(dev, b, ob, oshape, sstr, _scontig(oshape))
            res.append(ob)
        return res
    return [vals, ids]


@device_op
def scatter_rows_reduce(dev, o, args: List):
    """ONNX ScatterND with 1-element index tuples and a reduction (transformers' index_add: rows of updates added
    at token rows): data [L, ...] as [L, inner], updates [n, inner]; vec_index's reducing scatter with one index per
    row (flags 2), in index order, an index outside [-L, L) refused."""
    from moec.codegen.ascend.vector_ops import copy_strided
    data, idx = dev.buf(args[0]), args[1]
    upd = dev.buf(args[2], data.dtype)
    out = dev.new(data.shape, data.dtype)
    if sprod(data.shape):
        copy_strided(dev, data, out, [data.size], [1], [1])
    n = sprod(tuple(shape_of(idx))[:-1])
    L, inner = data.shape[0], sprod(data.shape[1:])
    if isinstance(n, Sym) or int(n) * int(inner):
        i64 = np.dtype(getattr(idx, "dtype", np.int64)) == np.int64
        ids = dev.buf(idx, np.int64 if i64 else np.int32).reshape(-1)
        status = dev.new((8,), np.int32)
        dev.launch("vec_index", 1, [status, ids, upd.reshape(-1), out],
                   _tiling(op=X_SCATTER_EL, n=n * inner, esize=data.dtype.itemsize, outer=1, L=L, inner=inner, k=n,
                           flags=int(i64) | 2, tile=INDEX_TILE, cmp=REDUCE[o.attrs["reduction"]],
                           vdt=REDUCE_VDT[o.operands[0].type.dtype.mlir]))
        if isinstance(L, Sym):  # (a run-time first dim: the refused index is not named)
            dev.check(status, "scatter_nd: an index out of range for the data's first dim")
        else:
            dev.check(status, f"scatter_nd: index {{}} out of range [{-L}, {L})", ids, -L, L)
    return out


def _scontig(shape) -> list:
    """Row-major strides of ``shape``, whose dims may be run-time values (Sym)."""
    st, acc = [], 1
    for d in reversed(tuple(shape)):
        st.insert(0, acc)
        acc = acc * d
    return st


def estimate(o, T: int, hw: dict, clock_hz: float, launch_s: float) -> dict:
    """Cost-model ESTIMATE: elements visited by the scalar unit (top-k: k passes over each row) at
    SCALAR_CYCLES each, over the AIV cores the work spreads to, against the bytes over HBM."""
    def numel(v):
        return int(np.prod([d if isinstance(d, int) else T for d in v.type.shape], dtype=np.int64))
    n_out = sum(numel(r) for r in o.results)
    n_in = numel(o.operands[0])
    if o.name == "moec.topk":
        x = o.operands[0].type
        L = x.shape[o.attrs["axis"] % x.rank]
        L = L if isinstance(L, int) else T
        k = max(1, numel(o.results[0]) * max(1, L) // max(1, n_in))
        visits = n_in * k
        items = max(1, n_in // max(1, L))
    else:
        visits = max(n_in, n_out)
        items = max(1, -(-n_out // INDEX_TILE))
    cores = max(1, min(hw["aiv"], items))
    if o.name in ("moec.scatter_nd", "moec.scatter_elements"):
        cores = 1  # the scatters apply their updates in index order on one core
    kern = "vec_copy" if o.name == "moec.cast" and o.operands[0].type.dtype == o.attrs["to"] else "vec_index"
    t_s = 0.0 if kern == "vec_copy" else visits * SCALAR_CYCLES / (cores * clock_hz)
    t_hbm = 8 * (n_in + n_out) / hw["hbm"]
    t = max(t_s, t_hbm) + launch_s
    bound = max((t_s, "scalar unit"), (t_hbm, "HBM"), (launch_s, "launch"))[1]
    return {"kernel": kern, "tokens": T, "blockDim": cores, "estimate_us": round(t * 1e6, 2), "bound": bound,
            "hbm_fraction": round(t_hbm / t, 4)}
