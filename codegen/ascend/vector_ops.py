"""The Ascend vector kernels for the ordinary ops of a graph (kernels/vector_kernels.cpp).

`vector_reason(m, o)` says whether an op runs there (None) or why it stays on the host; `launch(dev,
o, args)` (``dev``: a launch_plan.Recorder, or an AscendArtifact to run at once) maps the op's operands
onto the kernels' [rows, cols] view, sizes the tiles from the Unified Buffer of the target description and
plans the launches; `estimate(o, desc)` is the cost-model entry (an
ESTIMATE: bytes over HBM bandwidth vs vector element operations over the AIV lanes).

Shapes: the output is viewed as [rows, cols] with cols its last dimension.  A binary operand is
full (same shape), a scalar, one row broadcast over the rows ([..1.., cols]) or one value per row
([rows..., 1]); other broadcasts stay on the host.  Row-wise ops (reduce over the last axis, softmax,
log-softmax, RMS norm, layer norm) need one whole row in the Unified Buffer.

Types: f32 and f16 tensors (``dt`` in the tiling); an f16 op is computed in f32 in the Unified Buffer and
rounded to f16 once on the way out.  The tile sizes are recomputed per type from the buffers each kernel
holds (``elementwise_tile``, ``rowwise_max_cols``).
"""
from __future__ import annotations

import struct
from typing import List, Optional, Sequence, Tuple

import ml_dtypes
import numpy as np

from moec.ir.opdef import const_value
from moec.codegen.ascend.launch_plan import PlanError, Sym, device_op, shape_of, smax, smin, sprod

UNARY = {"moec.neg": 0, "moec.abs": 1, "moec.sqrt": 2, "moec.reciprocal": 3, "moec.exp": 4, "moec.log": 5,
         "moec.relu": 6, "moec.sigmoid": 7, "moec.tanh": 8, "moec.clip": 9}
V_SQUARE, V_COPY = 10, 11
# more unary ops (codes after V_COPY): log1p (softplus, logsigmoid), floor/ceil (Cast float -> float with its
# rounding mode), sign (clip(x * 2^126, -1, 1) twice, NaN kept by Compare x == x and Select)
UNARY.update({"moec.log1p": 12, "moec.floor": 13, "moec.ceil": 14, "moec.sign": 15})
# erf and gelu (erf form) from Abramowitz & Stegun 7.1.26 (erf's absolute error below 1.5e-7; gelu as
# x ((1 + s) - s erfc|z|) / 2, no cancellation for x < 0), gelu_tanh as x / (1 + exp(-2y)); sign(NaN) = NaN
UNARY.update({"moec.erf": 16, "moec.gelu": 17, "moec.gelu_tanh": 18})
V_RSQRT = 19  # pow(x, -0.5) (Muse Spark's RMSNorm): 1 / sqrt(x), two roundings
BINARY = {"moec.add": 32, "moec.sub": 33, "moec.mul": 34, "moec.div": 35, "moec.max": 36, "moec.min": 37}
ROWWISE = {"moec.reduce_sum": 64, "moec.reduce_mean": 65, "moec.reduce_max": 66, "moec.reduce_min": 67,
           "moec.softmax": 68, "moec.log_softmax": 69, "moec.rms_norm": 70, "moec.layer_norm": 71,
           "moec.reduce_l2": 72, "moec.reduce_l1": 73}
# vector instructions per element (for the cost model)
_INSTR = {7: 5, 8: 6, 9: 2, 3: 2, 35: 2, 68: 5, 69: 5, 70: 4, 71: 6, 72: 2, 73: 2}
_INSTR.update({12: 10, 15: 8, 16: 22, 17: 24, 18: 9})
FULL, SCALAR, ROW, COL = 0, 1, 2, 3
POW_AS = {2.0: V_SQUARE, 0.5: UNARY["moec.sqrt"], 1.0: V_COPY, -0.5: V_RSQRT, -1.0: UNARY["moec.reciprocal"]}
# ops that only relabel a contiguous tensor: no kernel, no data movement
VIEWS = ("moec.reshape", "moec.squeeze", "moec.unsqueeze", "moec.flatten")
TILE_FIELDS = ("rows", "cols", "op", "amode", "bmode", "tile", "s0", "s1", "has_bias", "dt")
DT_CODE = {"f32": 0, "bf16": 1, "f16": 2}          # VecTiling.dt
DT_BYTES = {"f32": 4, "bf16": 2, "f16": 2}
NP_DT = {"f32": np.float32, "bf16": np.dtype(ml_dtypes.bfloat16), "f16": np.float16}
ROW_TILE = 1024  # per-row results staged per copy (reductions, layer-norm statistics)


def tiling_bytes(**kw):
    """VecTiling's bytes, or a launch-plan Tiling when a field is an expression of a symbolic dim."""
    if any(isinstance(v, Sym) for v in kw.values()):
        from moec.codegen.ascend.launch_plan import Tiling
        return Tiling([("f" if f in ("s0", "s1") else "i", kw.get(f, 0)) for f in TILE_FIELDS])
    return b"".join(struct.pack("<f" if f in ("s0", "s1") else "<i", kw.get(f, 0)) for f in TILE_FIELDS)


UB_SCRATCH = 8 * 1024  # the top of the Unified Buffer is scratch for some instructions: 184 of 192 KiB usable


def usable_ub(desc) -> int:
    """The Unified Buffer the kernels may use: UB_SCRATCH below its physical size."""
    return int(desc.ub_bytes) - UB_SCRATCH


def elementwise_tile(ub_bytes: int, dt: str = "f32") -> int:
    """Elements per tile buffer of vec_elementwise, a whole number of 32-byte blocks of the type.
    f32: 7 float buffers (a, b, c double-buffered + tmp) = 28 bytes per element.  f16: the queues hold
    half (a, b, c double-buffered: 12 bytes) and the math needs float copies of a, b, c plus tmp (16 bytes):
    again 28 bytes per element, so the same tile.  Rounded to 64 elements: a whole number of 256-byte float repeats,
    so an op that Compares (sign's NaN) can pad its count to whole repeats inside the tile; the unary ops' Compare
    bits (an eighth of a byte per element) fit in what the 28 bytes leave."""
    return max(64, min(8192, ub_bytes // 4 // 8 // 64 * 64))  # whole 256-byte float repeats (Compare's unit)


def rowwise_max_cols(ub_bytes: int, dt: str = "f32") -> int:
    """Longest row vec_rowwise holds: 8 float rows (x, y double-buffered, work, tmp, scale, bias) plus the
    staged per-row results.  f16: x, y double-buffered in half (the size of 2 float rows) and the float
    copies of x and y (2) replace them: 8 float rows again, a row padded to 16 elements (32 bytes)."""
    blk = 32 // DT_BYTES[dt]
    return (ub_bytes // 4 - 2 * ROW_TILE - 16) // 8 // blk * blk


def _bmode(shape: Sequence, out: Sequence) -> Optional[int]:  # (concrete shapes, at launch)
    """Broadcast class of an operand shape against the output shape (ints, symbols or None)."""
    if any(d is None for d in shape) or any(d is None for d in out):
        return None
    if all(d == 1 for d in shape):  # one value (rank 0 or all ones)
        return SCALAR
    pad = (1,) * (len(out) - len(shape)) + tuple(shape)
    if len(pad) != len(out):
        return None
    if pad == tuple(out):
        return FULL
    if len(out) and all(d == 1 for d in pad[:-1]) and pad[-1] == out[-1]:
        return ROW
    if len(out) and pad[-1] == 1 and pad[:-1] == tuple(out[:-1]):
        return COL
    return None


def _scalar(m, v) -> Optional[float]:
    c = const_value(v, m.weights) if m is not None else None
    if c is None:
        return None
    c = np.asarray(c)
    return float(c.reshape(-1)[0]) if c.size == 1 else None


def _data(o) -> list:
    """The tensors of o that the kernels move in the op's type: the operands they stream or read (not the
    constants read on the host: reduction axes, pow's exponent, clip's bounds) and the results (layer norm:
    y only; its mean and 1/std are f32 for f16 input as well)."""
    if o.name in BINARY:
        ins = list(o.operands[:2])
    elif o.name in ROWWISE:
        ins = [o.operands[0]] + (list(o.operands[1:]) if o.name in ("moec.rms_norm", "moec.layer_norm") else [])
    else:
        ins = [o.operands[0]]
    return ins + ([o.results[0]] if o.name == "moec.layer_norm" else list(o.results))


def op_dtype(o) -> str:
    return o.results[0].type.dtype.mlir


def _dtype_reason(o) -> Optional[str]:
    dts = sorted({v.type.dtype.mlir for v in _data(o)})
    if len(dts) != 1 or dts[0] not in DT_CODE:
        return f"the vector kernels take f32, f16 or bf16 tensors of one type (operands/results are {', '.join(dts)})"
    if o.name == "moec.layer_norm" and any(r.type.dtype.mlir != "f32" for r in o.results[1:]):
        return "layer norm statistics (mean, 1/std) that are not f32"
    return None


def vector_reason(m, o) -> Optional[str]:
    """None when `o` runs on the vector kernels, else why it stays on the host."""
    name = o.name
    if name in LAYOUT or name in ("moec.gather", "moec.scatter_nd"):
        return layout_reason(o)
    if name in MASK_OPS:
        return mask_reason(o)
    if name not in UNARY and name not in BINARY and name not in ROWWISE and name != "moec.pow":
        return f"no AscendC kernel for {name} yet"
    if name.startswith("moec.reduce_") and len(o.operands) > 1:
        if const_value(o.operands[1], m.weights) is None:
            return "reduction axes known only at run time"
    why = _dtype_reason(o)
    if why:
        return why
    out = o.results[0].type
    if name == "moec.pow":
        e = _scalar(m, o.operands[1])
        if e not in POW_AS:
            return "pow with an exponent other than a constant 2, 1, 0.5, -0.5 or -1"
    if name == "moec.clip" and (_scalar(m, o.operands[1]) is None or _scalar(m, o.operands[2]) is None):
        return "clip bounds are not constants"
    # binary ops: any broadcast runs -- full / scalar / row / per-row operands directly, any other one
    # materialised first by vec_copy (a stride-0 copy) into a full-size GM workspace
    if name in ROWWISE:
        x = o.operands[0].type
        if x.rank == 0:
            return "row-wise op on a scalar"
        last = x.rank - 1
        if name.startswith("moec.reduce_"):
            axes = o.attrs["axes"] if len(o.operands) == 1 else \
                [int(a) for a in np.asarray(const_value(o.operands[1], m.weights)).reshape(-1)]
            if not axes and (o.attrs["noop_with_empty_axes"] or x.rank != 1):
                return "reduction over all axes (or none)" if x.rank != 1 else "no-op reduction"
            if axes and sorted({a % x.rank for a in axes}) != [last]:
                return None  # moved last by a copy: device_ops asks reduce_ops.moved_reason
        elif o.attrs["axis"] % x.rank != last:
            return "normalises over axes other than the last one"
        for v in o.operands[1:]:
            if v.type.rank and not all(d == 1 for d in v.type.shape[:-1]):
                return "scale/bias that are not one row over the last axis"
    return None


def max_cols_reason(o, desc) -> Optional[str]:
    """Compile-time check of the row length against the Unified Buffer (when the length is static)."""
    if o.name not in ROWWISE:
        return None
    cols = o.operands[0].type.shape[-1]
    lim = rowwise_max_cols(usable_ub(desc), op_dtype(o))
    if isinstance(cols, int) and cols > lim:
        return f"rows of {cols} elements exceed the Unified Buffer's {lim}-element row limit"
    return None


def _geometry(out_shape: Tuple[int, ...]):
    """(rows, cols) of a shape: rows may be an expression of a symbolic dim (symbolic plans); cols is known."""
    if not out_shape:
        return 1, 1
    if isinstance(out_shape[-1], Sym):
        raise PlanError("a row length known only at run time (vector tiles are chosen per row length)")
    cols = int(out_shape[-1])
    return sprod(out_shape[:-1]), cols


def _nonempty(n) -> bool:
    """A size is not 0 (a symbolic dim's expression is >= 1: symbolic plans cover dims >= 1)."""
    return True if isinstance(n, Sym) else bool(n)


def _bd(cores: int, items):
    return smax(1, smin(cores, items))


def broadcast_shapes(*shapes) -> tuple:
    """numpy's broadcast of shapes whose dims may be symbolic (Sym): a symbolic dim broadcasts with 1 or itself."""
    if all(isinstance(d, (int, np.integer)) for sh in shapes for d in sh):
        return tuple(np.broadcast_shapes(*shapes))
    n = max(len(sh) for sh in shapes)
    out = []
    for i in range(n):
        ds = [sh[len(sh) - n + i] for sh in shapes if len(sh) - n + i >= 0]
        ds = [d for d in ds if not (isinstance(d, (int, np.integer)) and d == 1)] or [1]
        if any(d != ds[0] for d in ds[1:]):
            raise PlanError(f"shapes {shapes} do not broadcast for every value of their symbolic dims")
        out.append(ds[0])
    return tuple(out)


@device_op
def launch(dev, o, args: List) -> List:
    """Plan `o` on the vector kernels (``dev``: a launch_plan.Recorder) and return its result buffers."""
    from moec.errors import RuntimeFailure
    name = o.name
    ub = usable_ub(dev.desc)
    cores = dev.cores
    if name in LAYOUT:  # any element type of 1, 2, 4 or 8 bytes
        r = layout_launch(dev, o, args)
        return r if name == "moec.split" else [r]
    if name == "moec.gather":
        return [gather_launch(dev, o, args)]
    if name == "moec.scatter_nd":
        return [scatter_nd_launch(dev, o, args)]
    if name in MASK_OPS:
        return [mask_launch(dev, o, args)]
    dt = op_dtype(o)
    npt = NP_DT[dt]
    if name in ROWWISE:
        x = dev.buf(args[0], npt)
        R, C = _geometry(x.shape)
        lim = rowwise_max_cols(ub, dt)
        if C > lim:
            raise RuntimeFailure(f"{name}: rows of {C} elements exceed the Unified Buffer's {lim}-element row limit "
                                 f"of the Ascend vector kernel")
        op = ROWWISE[name]
        reduce = name.startswith("moec.reduce_")
        ln = name == "moec.layer_norm"
        y = dev.new((R,) if reduce else (R, C), npt)
        y2 = dev.new((R,), np.float32) if ln else None   # layer norm statistics: f32 for both types
        y3 = dev.new((R,), np.float32) if ln else None
        scale = dev.buf(args[1], npt).reshape(-1) if name in ("moec.rms_norm", "moec.layer_norm") else None
        bias = dev.buf(args[2], npt).reshape(-1) if ln and len(args) > 2 and args[2] is not None else None
        for v in (scale, bias):
            if v is not None and v.size != C:
                raise RuntimeFailure(f"{name}: scale/bias of {v.size} elements for rows of {C}")
        if _nonempty(R) and C:
            eps = float(o.attrs.get("epsilon", 0.0)) if name in ("moec.rms_norm", "moec.layer_norm") else 0.0
            dev.launch("vec_rowwise", _bd(cores, R),
                        [x, scale if scale is not None else x, bias if bias is not None else x, y,
                         y2 if ln else y, y3 if ln else y],
                        tiling_bytes(rows=R, cols=C, op=op, tile=ROW_TILE, s0=eps, has_bias=int(bias is not None),
                                     dt=DT_CODE[dt]))
        if reduce:
            return [y.reshape(_reduced_shape(o, x.shape))]
        if ln:
            stat = x.shape[:-1] + (1,)
            return [y.reshape(x.shape), y2.reshape(stat), y3.reshape(stat)]
        return [y.reshape(x.shape)]
    return [elementwise(dev, name, args, dt)]


def _moved(o, args) -> bool:
    """A reduction whose axes are not just the last one (reduce_ops.moved_launch moves them last first)."""
    r = len(shape_of(args[0]))
    axes = [int(v) for v in np.asarray(args[1]).reshape(-1)] if len(args) > 1 and args[1] is not None \
        else list(o.attrs["axes"])
    return bool(axes) and sorted({a % r for a in axes}) != [r - 1]


def elementwise(dev, name: str, args: List, dt: str):
    """An elementwise op (UNARY, BINARY, pow, clip) of type ``dt`` on vec_elementwise: its result buffer."""
    npt = NP_DT[dt]
    ub = usable_ub(dev.desc)
    out_shape = broadcast_shapes(*[shape_of(a) for a in args[:2 if name in BINARY else 1]])
    R, C = _geometry(out_shape)
    c = dev.new(out_shape, npt)
    if not _nonempty(c.size):
        return c
    s0 = s1 = 0.0
    if name in BINARY:
        op = BINARY[name]
        a, b = (dev.buf(v, npt) for v in args[:2])
        am, bm = _bmode(a.shape, out_shape), _bmode(b.shape, out_shape)
        if am is None:  # another broadcast: vec_copy expands the operand first (stride 0 where it repeats)
            a, am = expand_to(dev, a, out_shape), FULL
        if bm is None:
            b, bm = expand_to(dev, b, out_shape), FULL
    else:
        a = dev.buf(args[0], npt)
        b, am, bm = None, FULL, FULL
        if name == "moec.pow":
            op = POW_AS[float(np.asarray(args[1]).reshape(-1)[0])]
        else:
            op = UNARY[name]
        if name == "moec.clip":
            s0, s1 = (float(np.asarray(v).reshape(-1)[0]) for v in args[1:3])
    TL = elementwise_tile(ub, dt)
    blk = 32 // np.dtype(npt).itemsize  # a row's stride in the Unified Buffer: whole 32-byte blocks
    items = -(-R // (TL // ((C + blk - 1) // blk * blk))) if C <= TL else R * -(-C // TL)
    dev.launch("vec_elementwise", _bd(dev.cores, items), [a, b if b is not None else a, c],
               tiling_bytes(rows=R, cols=C, op=op, amode=am, bmode=bm, tile=TL, s0=s0, s1=s1, dt=DT_CODE[dt]))
    return c


def _reduced_shape(o, shape):
    if o.attrs.get("keepdims", True):
        return tuple(shape[:-1]) + (1,)
    return tuple(shape[:-1])


def estimate(o, T: int, hw: dict, clock_hz: float, lanes: int, launch_s: float) -> dict:
    """Cost-model ESTIMATE of one vector-kernel op at T tokens (symbolic dimensions taken as T):
    max(HBM bytes / bandwidth, element instructions / (AIV cores x lanes x clock)) + launch."""
    def numel(v):
        return int(np.prod([d if isinstance(d, int) else T for d in v.type.shape], dtype=np.int64))
    n_out = sum(numel(r) for r in o.results)
    n_in = sum(numel(v) for v in o.operands if not (o.name == "moec.pow" or o.name == "moec.clip") or v is o.operands[0])
    op = ROWWISE.get(o.name, BINARY.get(o.name, UNARY.get(o.name, V_SQUARE)))
    elems = max(n_in, n_out) * _INSTR.get(op, 1)
    x = o.operands[0].type
    rows = max(1, numel(o.results[0]) // max(1, x.shape[-1] if x.rank and isinstance(x.shape[-1], int) else 1))
    cores = max(1, min(hw["aiv"], rows))
    t_vec = elems / (cores * lanes * clock_hz)
    t_hbm = DT_BYTES.get(op_dtype(o), 4) * (n_in + n_out) / hw["hbm"]
    t = max(t_vec, t_hbm) + launch_s
    bound = max((t_vec, "vector"), (t_hbm, "HBM"), (launch_s, "launch"))[1]
    if o.name in LAYOUT or o.name in ("moec.gather", "moec.scatter_nd"):
        # a copy: bytes in and out over HBM, one DataCopyPad each way per row chunk (issue cost), scalar
        # accesses for rows with a strided innermost source (transposes of the last axis)
        esize = o.results[0].type.dtype.itemsize
        inner = o.results[0].type.shape[-1] if o.results[0].type.rank else 1
        inner = inner if isinstance(inner, int) else T
        rows = max(1, n_out // max(1, inner))
        r = o.operands[0].type.rank
        last2 = r >= 2 and list(o.attrs.get("perm", [])) == list(range(r - 2)) + [r - 1, r - 2]
        scalar = n_out if o.name == "moec.transpose" and o.attrs["perm"][-1] != r - 1 and not last2 else 0
        cores = max(1, min(hw["aiv"], rows))
        t_hbm = 2 * esize * n_out / hw["hbm"]
        t_issue = (2 * rows * 0.5e-6 + scalar * 4 / clock_hz) / cores
        t = max(t_hbm, t_issue) + launch_s
        bound = max((t_hbm, "HBM"), (t_issue, "copy issue/scalar"), (launch_s, "launch"))[1]
        kern = "vec_gather" if o.name in ("moec.gather", "moec.scatter_nd") else ("vec_transpose" if o.name == "moec.transpose" and last2
                                                             else "vec_copy")
        return {"kernel": kern, "tokens": T, "blockDim": cores,
                "estimate_us": round(t * 1e6, 2), "bound": bound, "hbm_fraction": round(t_hbm / t, 4)}
    kern = "vec_rowwise" if o.name in ROWWISE else "vec_mask" if o.name in MASK_OPS else "vec_elementwise"
    return {"kernel": kern, "tokens": T, "blockDim": cores,
            "estimate_us": round(t * 1e6, 2), "bound": bound, "hbm_fraction": round(t_hbm / t, 4)}


# -- layout ops and gather: vec_copy / vec_gather (kernels/vector_kernels.cpp) ------------------------------
LAYOUT = ("moec.transpose", "moec.slice", "moec.expand", "moec.concat", "moec.split", "moec.tile")
COPY_FIELDS = ("ndim", "esize", "tile", "srcN", "dstN", "soff", "doff")
MAX_COPY_DIMS = 8
ESIZES = (1, 2, 4, 8)


def layout_reason(o) -> Optional[str]:
    """None when a layout op or gather runs on vec_copy / vec_gather, else why not."""
    dts = {v.type.dtype for v in ([o.operands[0]] if o.name != "moec.concat" else list(o.operands))} | \
        {o.results[0].type.dtype}
    if len(dts) != 1 or next(iter(dts)).itemsize not in ESIZES:
        return f"the layout kernels (vec_copy, vec_gather) move 1-, 2-, 4- or 8-byte elements of one type " \
               f"({', '.join(sorted(d.mlir for d in dts))})"
    if o.name in ("moec.gather", "moec.scatter_nd") and o.operands[1].type.dtype.mlir not in ("i64", "i32"):
        return "indices that are not i64 or i32"
    if o.name == "moec.scatter_nd":
        if o.operands[2].type.dtype != o.operands[0].type.dtype:
            return "updates of another type than the data"
        q = o.operands[1].type.shape[-1] if o.operands[1].type.rank else None
        if not isinstance(q, int) or not 1 <= q <= MAX_COPY_DIMS:
            return "index tuples whose length is not known at compile time (or longer than 8)"
    return None


def _contig(shape) -> List[int]:
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= int(d)
    return st[::-1]


def _merge(dims, sstr, dstr):
    """Drop unit dims and merge neighbours that are contiguous on both sides (fewer, longer rows)."""
    out = [(int(d), int(a), int(b)) for d, a, b in zip(dims, sstr, dstr) if int(d) != 1]
    if not out:
        return [1], [0], [0]
    m = [out[0]]
    for d, a, b in out[1:]:
        pd, pa, pb = m[-1]
        if pa == a * d and pb == b * d:
            m[-1] = (pd * d, a, b)
        else:
            m.append((d, a, b))
    return [x[0] for x in m], [x[1] for x in m], [x[2] for x in m]


def copy_tile(ub_bytes: int, esize: int) -> int:
    """Elements per UB chunk of vec_copy / vec_gather: 4 buffers (in, out, double-buffered) in half the UB."""
    blk = 32 // esize
    return max(blk, min(8192, ub_bytes // 2 // 4 // esize // blk * blk))


@device_op
def copy_strided(dev, src, dst, dims, sstr, dstr, soff: int = 0, doff: int = 0) -> None:
    """One vec_copy launch: dst.flat[doff + idx . dstr] = src.flat[soff + idx . sstr] over ``dims``."""
    from moec.errors import RuntimeFailure
    if int(np.prod(dims, dtype=np.int64)) == 0:
        return
    dims, sstr, dstr = _merge(dims, sstr, dstr)
    if len(dims) > MAX_COPY_DIMS:
        raise RuntimeFailure(f"vec_copy: {len(dims)} dimensions after merging (at most {MAX_COPY_DIMS})")
    esize = src.dtype.itemsize
    if esize not in ESIZES or dst.dtype.itemsize != esize:
        raise RuntimeFailure(f"vec_copy: {src.dtype} -> {dst.dtype} elements")
    tl = copy_tile(usable_ub(dev.desc), esize)
    pad = MAX_COPY_DIMS - len(dims)
    vals = dict(ndim=len(dims), esize=esize, tile=tl, srcN=src.size, dstN=dst.size, soff=soff, doff=doff)
    tb = struct.pack("<" + "i" * (len(COPY_FIELDS) + 3 * MAX_COPY_DIMS), *[vals[f] for f in COPY_FIELDS],
                     *(dims + [0] * pad), *(sstr + [0] * pad), *(dstr + [0] * pad))
    items = int(np.prod(dims[:-1], dtype=np.int64)) * -(-dims[-1] // tl)
    dev.launch("vec_copy", max(1, min(dev.cores, items)), [dev.buf(src), dev.buf(dst)], tb)


@device_op
def expand_to(dev, x, shape):
    """x broadcast to ``shape`` (numpy rules) by vec_copy: stride 0 along the repeated dims."""
    shape = tuple(int(d) for d in shape)
    xs = (1,) * (len(shape) - x.ndim) + tuple(x.shape)
    st = _contig(xs)
    sstr = [0 if d == 1 and n != 1 else s for d, n, s in zip(xs, shape, st)]
    out = dev.new(shape, x.dtype)
    copy_strided(dev, dev.buf(x), out, list(shape), sstr, _contig(shape))
    return out


def transpose_rows(esize: int, R: int, C: int, ub_bytes: int) -> int:
    """vec_transpose's rows per block for [R, C] blocks (0: C too long for a block of one 32-byte row group)."""
    tl = copy_tile(ub_bytes, esize)
    blk = 32 // esize
    rr = min((tl // max(C, 1)) // blk * blk, -(-R // blk) * blk)
    return rr if rr >= blk else 0


@device_op
def transpose_last2(dev, x):
    """x with its last two dims swapped (the cube's B^T operand of a batched matmul): vec_transpose (a block of
    rows in, vector Gathers per column, one strided copy out) for 2-/4-byte elements whose rows fit a block,
    else vec_copy with a strided innermost read (scalar accesses)."""
    x = dev.buf(x)
    shp = x.shape[:-2] + (x.shape[-1], x.shape[-2])
    out = dev.new(shp, x.dtype)
    if out.size == 0:
        return out
    R, C = x.shape[-2], x.shape[-1]
    ub = usable_ub(dev.desc)
    rr = transpose_rows(x.dtype.itemsize, R, C, ub) if x.dtype.itemsize in (2, 4) else 0
    if rr:
        B = int(np.prod(x.shape[:-2], dtype=np.int64))
        tb = struct.pack("<6i", B, R, C, x.dtype.itemsize, rr, copy_tile(ub, x.dtype.itemsize))
        dev.launch("vec_transpose", max(1, min(dev.cores, B * -(-R // rr))), [x, out], tb)
        return out
    st = _contig(x.shape)
    copy_strided(dev, x, out, list(shp), st[:-2] + [st[-1], st[-2]], _contig(shp))
    return out


@device_op
def layout_launch(dev, o, args: List):
    """transpose / slice / expand / concat as vec_copy launches (concat: one per input, into its offset)."""
    from moec.errors import RuntimeFailure
    from moec.ir.ops.shape import slice_params
    name = o.name
    if name == "moec.concat":
        xs = [dev.buf(a) for a in args]
        ax = o.attrs["axis"] % xs[0].ndim
        shp = list(xs[0].shape)
        shp[ax] = sum(a.shape[ax] for a in xs)
        out = dev.new(shp, xs[0].dtype)
        ost = _contig(out.shape)
        at = 0
        for a in xs:
            copy_strided(dev, a, out, list(a.shape), _contig(a.shape), ost, 0, at * ost[ax])
            at += a.shape[ax]
        return out
    x = dev.buf(args[0])
    st = _contig(x.shape)
    if name == "moec.split":  # one copy per part, from its offset along the axis
        ax = o.attrs["axis"] % x.ndim
        sizes = [int(v) for v in np.asarray(args[1]).reshape(-1)]
        if sum(sizes) != x.shape[ax] or min(sizes, default=0) < 0:
            raise RuntimeFailure(f"split sizes {sizes} do not add up to {x.shape[ax]}")
        outs, at = [], 0
        for n in sizes:
            shp = list(x.shape)
            shp[ax] = n
            part = dev.new(shp, x.dtype)
            copy_strided(dev, x, part, shp, st, _contig(shp), at * st[ax])
            outs.append(part)
            at += n
        return outs
    if name == "moec.transpose":
        p = list(o.attrs["perm"])
        if len(p) >= 2 and p == list(range(len(p) - 2)) + [len(p) - 1, len(p) - 2]:
            return transpose_last2(dev, x)
        shp = [x.shape[i] for i in p]
        out = dev.new(shp, x.dtype)
        copy_strided(dev, x, out, shp, [st[i] for i in p], _contig(shp))
        return out
    if name == "moec.expand":
        shp = np.broadcast_shapes(x.shape, tuple(int(s) for s in np.asarray(args[1]).reshape(-1)))
        return expand_to(dev, x, shp)
    if name == "moec.tile":  # out viewed as [r0, d0, r1, d1, ...]: the repeats read x with stride 0
        reps = [int(r) for r in np.asarray(args[1]).reshape(-1)]
        shp = [int(d) * r for d, r in zip(x.shape, reps)]
        out = dev.new(shp, x.dtype)
        ost = _contig(shp)
        dims, sstr, dstr = [], [], []
        for d, r, s_, o_ in zip(x.shape, reps, st, ost):
            dims += [r, int(d)]
            sstr += [0, s_]
            dstr += [int(d) * o_, o_]
        copy_strided(dev, x, out, dims, sstr, dstr)
        return out
    # slice: per-dim (start, count, step) as the reference clamps them; the tiling carries offset and strides
    prm = slice_params(list(x.shape), *[[int(v) for v in np.asarray(t).reshape(-1)] for t in args[1:5]])
    shp = [n for _, n, _ in prm]
    out = dev.new(shp, x.dtype)
    soff = sum(s * t for (s, _, _), t in zip(prm, st))
    copy_strided(dev, x, out, shp, [t * step for (_, _, step), t in zip(prm, st)], _contig(shp), soff)
    return out


GATHER_FIELDS = ("outer", "V", "inner", "n", "esize", "tile", "idx64", "scatter", "q")


def _gather_tiling(**kw) -> bytes:
    qd = list(kw.pop("qdims", []))
    return struct.pack("<" + "i" * (len(GATHER_FIELDS) + MAX_COPY_DIMS), *[int(kw.get(f, 0)) for f in GATHER_FIELDS],
                       *(qd + [0] * (MAX_COPY_DIMS - len(qd))))


@device_op
def gather_launch(dev, o, args: List):
    """ONNX Gather on vec_gather: data viewed as [outer, V, inner]; an index outside [-V, V) is refused."""
    from moec.errors import RuntimeFailure
    data = dev.buf(args[0])
    idx = args[1]
    a = o.attrs["axis"] % data.ndim
    outer = int(np.prod(data.shape[:a], dtype=np.int64))
    V, inner = data.shape[a], int(np.prod(data.shape[a + 1:], dtype=np.int64))
    out = dev.new(data.shape[:a] + tuple(np.shape(idx)) + data.shape[a + 1:], data.dtype)
    if out.size == 0:
        if np.size(idx) and V == 0:
            raise RuntimeFailure("gather: an index is out of range [0, 0)")
        return out
    i64 = np.dtype(idx.dtype) == np.int64
    ids = dev.buf(idx, np.int64 if i64 else np.int32).reshape(-1)
    status = dev.new((8,), np.int32)
    tl = copy_tile(usable_ub(dev.desc), data.dtype.itemsize)
    tb = _gather_tiling(outer=outer, V=V, inner=inner, n=ids.size, esize=data.dtype.itemsize, tile=tl, idx64=int(i64),
                        q=1)
    items = outer * ids.size * -(-inner // tl)
    dev.launch("vec_gather", max(1, min(dev.cores, items)), [data, ids, out, status], tb)
    dev.check(status, f"gather: index {{}} out of range [{-V}, {V})", ids, -V, V)
    return out


@device_op
def scatter_nd_launch(dev, o, args: List):
    """ONNX ScatterND without reduction: vec_copy copies the data, then vec_gather (scatter = 1) writes each update
    row at its index tuple (q components over the data's first q dims); an index out of range is refused."""
    from moec.errors import RuntimeFailure
    data, idx = dev.buf(args[0]), args[1]
    upd = dev.buf(args[2], data.dtype)
    q = np.shape(idx)[-1]
    out = dev.new(data.shape, data.dtype)
    if out.size:
        copy_strided(dev, data, out, [data.size], [1], [1])
    n = int(np.prod(np.shape(idx)[:-1], dtype=np.int64))
    inner = int(np.prod(data.shape[q:], dtype=np.int64))
    if n == 0 or inner == 0:
        return out
    V = int(np.prod(data.shape[:q], dtype=np.int64))
    i64 = np.dtype(idx.dtype) == np.int64
    ids = dev.buf(idx, np.int64 if i64 else np.int32).reshape(-1)
    status = dev.new((8,), np.int32)
    tl = copy_tile(usable_ub(dev.desc), data.dtype.itemsize)
    tb = _gather_tiling(outer=1, V=V, inner=inner, n=n, esize=data.dtype.itemsize, tile=tl, idx64=int(i64), scatter=1,
                        q=q, qdims=data.shape[:q])
    dev.launch("vec_gather", max(1, min(dev.cores, n * -(-inner // tl))), [upd.reshape(-1), ids, out, status], tb)
    dev.check(status, f"scatter_nd: an index tuple is out of range for dims {list(data.shape[:q])}")
    return out


# -- the boolean side: vec_mask (Cast to bool, and / or / not, Where, float comparisons) ----------------------
MASK_OPS = {"moec.cast": 0, "moec.and": 1, "moec.or": 2, "moec.not": 3, "moec.select": 4,
            "moec.equal": 5, "moec.less": 6, "moec.less_equal": 7, "moec.greater": 8, "moec.greater_equal": 9}
MASK_CMP = 5  # op codes from here on: a (cmp) b on f32 / f16 operands, a 0/1 byte out
MASK_AIN = {"i64": 8, "i32": 4, "i1": 1}
MASK_FIELDS = ("n", "op", "ain", "vdt", "amode", "bmode", "tile")
MASK_TILE = 2048  # elements per chunk: about 66 bytes of Unified Buffer each (the kernel's buffers)


def mask_reason(o) -> Optional[str]:
    if o.name == "moec.cast":
        src = o.operands[0].type.dtype.mlir
        if (src == "i1" and o.attrs["to"].mlir in DT_CODE) or (src in DT_CODE and o.attrs["to"].mlir == "i1"):
            return None  # bool <-> float: a Where of 1 and 0, or not(x == 0) (bool_cast_launch)
        if o.attrs["to"].mlir != "i1" or src not in MASK_AIN:
            return f"cast from {src} to {o.attrs['to'].mlir} (vec_mask casts i64/i32/i1 to i1)"
        return None
    if o.name == "moec.select":
        v = o.results[0].type.dtype.mlir
        return None if v in DT_CODE else f"select of {v} values (vec_mask selects f32, f16 or bf16)"
    if MASK_OPS[o.name] >= MASK_CMP:
        v = o.operands[0].type.dtype.mlir
        if v in DT_CODE:
            return None
        # Compare works on float/half (bf16 is widened to float first); an int32 or int64 ordering would need an
        # exact integer path (float loses integers past 2^24; int64 is two words)
        return f"comparison of {v} operands (vec_mask compares f32, f16 or bf16; integer comparisons stay on the " \
               f"host)"
    return None  # and / or / not: i1 by the IR's rules


@device_op
def mask_launch(dev, o, args: List):
    """vec_mask: operands broadcast to the output by vec_copy first (the scalar values of Where and of the
    comparisons are passed as such)."""
    op = MASK_OPS[o.name]
    if o.name == "moec.cast" and (o.operands[0].type.dtype.mlir in DT_CODE or o.attrs["to"].mlir in DT_CODE):
        return bool_cast_launch(dev, o, args)
    out_shape = tuple(np.broadcast_shapes(*[np.shape(a) for a in args]))
    full = lambda a, dt: expand_to(dev, dev.buf(a, dt), out_shape) if np.shape(a) != out_shape \
        else dev.buf(a, dt)  # noqa: E731
    kw = dict(op=op, tile=MASK_TILE, n=int(np.prod(out_shape, dtype=np.int64)))
    if op >= 4:  # Where (cond, a, b) or a comparison (a, b): float / half values, full or one scalar each
        dt = op_dtype(o) if op == 4 else o.operands[0].type.dtype.mlir
        npt = NP_DT[dt]
        out = dev.new(out_shape, npt if op == 4 else np.bool_)
        vals = []
        for key, v in (("amode", args[-2]), ("bmode", args[-1])):
            sc = np.size(v) == 1
            kw[key] = int(sc)
            vals.append(dev.buf(v, npt).reshape(-1) if sc else full(v, npt))
        kw["vdt"] = DT_CODE[dt]
        arrays = [vals[0], vals[1], full(args[0], np.bool_) if op == 4 else vals[0], out]
    else:
        out = dev.new(out_shape, np.bool_)
        a = args[0] if hasattr(args[0], "dtype") else np.asarray(args[0])
        kw["ain"] = {np.dtype(np.int64): 8, np.dtype(np.int32): 4}.get(np.dtype(a.dtype), 1) if op == 0 else 1
        a = full(a, a.dtype)
        b = full(args[1], np.bool_) if op in (1, 2) else a
        arrays = [a, b, a, out]
    if out.size:
        items = -(-out.size // MASK_TILE)
        dev.launch("vec_mask", max(1, min(dev.cores, items)), arrays,
                    struct.pack("<" + "i" * len(MASK_FIELDS), *[int(kw.get(f, 0)) for f in MASK_FIELDS]))
    return out


def bool_cast_launch(dev, o, args: List):
    """Casts between bool and float on vec_mask: i1 -> float as Where(x, 1, 0) (op 4, scalar values); float -> i1
    as not(x == 0) (ONNX's rule: nonzero and NaN are true), a comparison with a scalar 0 then a not."""
    src, dst = o.operands[0].type.dtype.mlir, o.attrs["to"].mlir
    shape = tuple(np.shape(args[0]))
    n = int(np.prod(shape, dtype=np.int64))
    bd = max(1, min(dev.cores, -(-n // MASK_TILE)))

    def tb(**kw):
        kw.update(tile=MASK_TILE, n=n)
        return struct.pack("<" + "i" * len(MASK_FIELDS), *[int(kw.get(f, 0)) for f in MASK_FIELDS])
    if src == "i1":
        npt = NP_DT[dst]
        out = dev.new(shape, npt)
        if n:
            one, zero = dev.buf(np.ones(1, npt)), dev.buf(np.zeros(1, npt))
            dev.launch("vec_mask", bd, [one, zero, dev.buf(args[0], np.bool_), out],
                       tb(op=MASK_OPS["moec.select"], amode=1, bmode=1, vdt=DT_CODE[dst]))
        return out
    npt = NP_DT[src]
    x = dev.buf(args[0], npt)
    eq, out = dev.new(shape, np.bool_), dev.new(shape, np.bool_)
    if n:
        dev.launch("vec_mask", bd, [x, dev.buf(np.zeros(1, npt)), x, eq],
                   tb(op=MASK_OPS["moec.equal"], amode=0, bmode=1, vdt=DT_CODE[src]))
        dev.launch("vec_mask", bd, [eq, eq, eq, out], tb(op=MASK_OPS["moec.not"], ain=1))
    return out


__all__ = ["vector_reason", "max_cols_reason", "launch", "estimate", "VIEWS", "tiling_bytes"]
