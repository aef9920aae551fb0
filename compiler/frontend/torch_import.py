"""PyTorch front end: torch.export (ATen FX graph) -> a moec Module, without ONNX export.

``import_torch(module, example_inputs)`` exports the module with a dynamic token dimension,
applies PyTorch's core-ATen decompositions, then walks the FX graph.  Each ATen op is lowered by a
table in this file onto moec's op converters (the same ones the ONNX front end registers, keyed by
the standard ONNX op vocabulary, which serves here as moec's typed op-construction layer: shape
inference, symbolic dims and attribute checks live there once).  No ONNX model is built and
torch.onnx is not used.  Parameters and buffers become weights; symbolic sizes (SymInts, including
the data-dependent sizes of nonzero) become shape computations so the token count stays symbolic.

An ATen op with no lowering raises UnsupportedError naming the op and the user's source line (the
last frame of the FX node's stack trace).
"""
from __future__ import annotations

import json
import operator
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from moec.errors import UnsupportedError, UserInputError
from moec.ir import DType, Function, Module, Value
from moec.frontend.onnx_import import ImportContext, _convert_node, _load_converters, _sanitize_symbol

I64_MAX = 2 ** 63 - 1
_LOWER: Dict[str, Callable] = {}


def lower(*names: str):
    def wrap(fn):
        for n in names:
            _LOWER[n] = fn
        return fn
    return wrap


def _np_dtype(tdt):
    import ml_dtypes
    import torch
    return {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
            torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
            torch.int64: np.int64, torch.int32: np.int32, torch.int8: np.int8, torch.uint8: np.uint8,
            torch.bool: np.bool_, torch.int16: np.int16}.get(tdt)


def tensor_to_numpy(t) -> np.ndarray:
    """A CPU copy of torch tensor ``t`` as numpy; bfloat16 becomes ml_dtypes.bfloat16 (same bits), which
    ``Tensor.numpy()`` cannot produce."""
    import torch
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes
        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def numpy_to_tensor(a: np.ndarray):
    """The inverse of :func:`tensor_to_numpy` (shares memory where torch can)."""
    import ml_dtypes
    import torch
    a = np.ascontiguousarray(a)
    if a.dtype == np.dtype(ml_dtypes.bfloat16):
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _onnx_dtype(tdt) -> int:
    from onnx import TensorProto
    import torch
    return {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE, torch.float16: TensorProto.FLOAT16,
            torch.bfloat16: TensorProto.BFLOAT16, torch.int64: TensorProto.INT64, torch.int32: TensorProto.INT32,
            torch.int8: TensorProto.INT8, torch.uint8: TensorProto.UINT8, torch.bool: TensorProto.BOOL}[tdt]


def source_line(node) -> str:
    st = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in st.strip().splitlines() if ln.strip()]
    frames = [ln for ln in lines if ln.startswith("File ")]
    if frames:
        last = frames[-1]
        i = lines.index(last)
        code = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("File ") else ""
        return f"{last}{': ' + code if code else ''}"
    return "(no source location recorded)"


class _Fx:
    """Lowering state: FX node -> moec Value (or list, or python/Sym value)."""

    def __init__(self, ctx: ImportContext, model_name: str):
        self.ctx = ctx
        self.model = model_name
        self.env: Dict[str, Any] = {}
        self.n = 0
        self.node = None
        self.shape_lists: Dict[tuple, Value] = {}

    # -- emitting ONNX-vocabulary ops through the shared converters ------------------------------
    def op(self, op_type: str, inputs: Sequence[Optional[Value]], n_out: int = 1, **attrs) -> List[Value]:
        from onnx import helper
        names = []
        for v in inputs:
            if v is None:
                names.append("")
                continue
            self.n += 1
            nm = f"__v{self.n}"
            self.ctx.values[nm] = v
            names.append(nm)
        outs = [f"__o{self.n}_{i}" for i in range(n_out)]
        nd = helper.make_node(op_type, names, outs, name=self.node.name if self.node is not None else op_type,
                              **{k: v for k, v in attrs.items() if v is not None})
        try:
            _convert_node(self.ctx, nd)
        except (UnsupportedError, UserInputError) as e:
            raise type(e)(f"{self._where()}: {e}") from None
        return [self.ctx.values[o] for o in outs]

    def op1(self, op_type: str, inputs: Sequence[Optional[Value]], **attrs) -> Value:
        return self.op(op_type, inputs, 1, **attrs)[0]

    def ir1(self, op_name: str, inputs: Sequence[Value], attrs: Optional[dict] = None) -> Value:
        """A moec op with no ONNX spelling (moec.log1p), emitted directly, located at the FX node."""
        from onnx import helper
        self.ctx.node = helper.make_node(op_name, [], [], name=self.node.name if self.node is not None else op_name)
        try:
            return self.ctx.emit1(op_name, list(inputs), attrs)
        except (UnsupportedError, UserInputError) as e:
            raise type(e)(f"{self._where()}: {e}") from None

    def const(self, a, dtype=None) -> Value:
        arr = np.asarray(a, dtype=dtype)
        return self.ctx.const(arr, "c")

    def _where(self) -> str:
        n = self.node
        return (f"model '{self.model}', ATen op {n.target} (FX node '{n.name}') at {source_line(n)}"
                if n is not None else f"model '{self.model}'")

    # -- arguments ------------------------------------------------------------------------------
    def v(self, a, like: Optional[Value] = None) -> Value:
        """A tensor Value for an FX argument (node, python scalar or SymInt)."""
        import torch.fx
        if isinstance(a, _Given):
            return a.value
        if isinstance(a, torch.fx.Node):
            x = self.env[a.name]
            if isinstance(x, _Complex):
                raise UnsupportedError(f"{self._where()}: a complex tensor ({a.name}) used by an op moec lowers only "
                                       "for real tensors (complex values: view_as_complex, polar, mul, unsqueeze, "
                                       "view_as_real)")
            if isinstance(x, _Sym):
                return x.scalar(self)
            return x
        if isinstance(a, bool):
            return self.const(a, np.bool_)
        if isinstance(a, (int, float)):
            dt = like.type.dtype.np if like is not None else (np.int64 if isinstance(a, int) else np.float32)
            return self.const(a, dt)
        raise UnsupportedError(f"{self._where()}: unsupported argument {a!r}")

    def shape_list(self, sizes) -> Value:
        """A 1-D int64 shape tensor from a list of ints / SymInt nodes (one Value per list of the same SymInts:
        JetMoE splits its expert rows and later its activations by the same run-time sizes, and a pass sees
        they are the same sizes only when they are the same Value)."""
        import torch.fx
        key = tuple(s.name if isinstance(s, torch.fx.Node) else int(s) for s in sizes)
        if any(isinstance(s, torch.fx.Node) for s in sizes) and key in self.shape_lists:
            return self.shape_lists[key]
        self.shape_lists[key] = v = self._shape_list(sizes)
        return v

    def _shape_list(self, sizes) -> Value:
        import torch.fx
        parts: List[Value] = []
        static: List[int] = []
        for s in sizes:
            if isinstance(s, torch.fx.Node):
                if static:
                    parts.append(self.const(static, np.int64))
                    static = []
                parts.append(self.env[s.name].vector(self))
            else:
                static.append(int(s))
        if static or not parts:  # (no sizes at all: a 0-d tensor's shape [])
            parts.append(self.const(static, np.int64))
        if len(parts) == 1:
            return parts[0]
        return self.op1("Concat", parts, axis=0)


class _Sym:
    """A SymInt: its value as a 1-element int64 vector Value (shape arithmetic stays in the graph)."""

    def __init__(self, vec: Optional[Value], note: str = ""):
        self.vec = vec
        self.note = note

    def vector(self, fx: _Fx) -> Value:
        if self.vec is None:
            raise UnsupportedError(f"{fx._where()}: a symbolic size ({self.note}) is used as a value")
        return self.vec

    def scalar(self, fx: _Fx) -> Value:
        return fx.op1("Squeeze", [self.vector(fx), fx.const([0], np.int64)])


def _t(fx: _Fx, node) -> "Any":
    return node.meta.get("val")


# ---------------------------------------------------------------------------------------------
@lower("aten.permute.default")
def _permute(fx, n, x, dims):
    xv = fx.v(x)
    r = max(xv.type.rank, 1)  # (torch counts a negative dim from the end: Mamba2's permute(0, -2, -1, 1))
    return fx.op1("Transpose", [xv], perm=[int(d) % r for d in dims])


@lower("aten.t.default")
def _t_(fx, n, x):
    return fx.op1("Transpose", [fx.v(x)], perm=[1, 0])


@lower("aten.transpose.int")
def _transpose(fx, n, x, a, b):
    r = len(_t(fx, n).shape)
    perm = list(range(r))
    perm[a % r], perm[b % r] = perm[b % r], perm[a % r]
    return fx.op1("Transpose", [fx.v(x)], perm=perm)


@lower("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def _mm(fx, n, a, b):
    return fx.op1("MatMul", [fx.v(a), fx.v(b)])


@lower("aten.addmm.default")
def _addmm(fx, n, bias, a, b, beta=1, alpha=1):
    return fx.op1("Gemm", [fx.v(a), fx.v(b), fx.v(bias)], alpha=float(alpha), beta=float(beta))


@lower("aten.linear.default")
def _linear(fx, n, x, w, b=None):
    y = fx.op1("MatMul", [fx.v(x), fx.op1("Transpose", [fx.v(w)], perm=[1, 0])])
    return fx.op1("Add", [y, fx.v(b)]) if b is not None else y


@lower("aten._softmax.default", "aten.softmax.int")
def _softmax(fx, n, x, dim, half_or_dtype=None):
    return fx.op1("Softmax", [fx.v(x)], axis=int(dim))


@lower("aten._log_softmax.default")
def _log_softmax(fx, n, x, dim, half=False):
    return fx.op1("LogSoftmax", [fx.v(x)], axis=int(dim))


@lower("aten.topk.default")
def _topk(fx, n, x, k, dim=-1, largest=True, sorted=True):
    return fx.op("TopK", [fx.v(x), fx.const([int(k)], np.int64)], 2, axis=int(dim), largest=int(largest),
                 sorted=int(sorted))


@lower("aten.sort.default")
def _sort(fx, n, x, dim=-1, descending=False):
    xv = fx.v(x)
    size = fx.op1("Gather", [fx.op1("Shape", [xv]), fx.const([int(dim)], np.int64)], axis=0)
    return fx.op("TopK", [xv, size], 2, axis=int(dim), largest=int(descending), sorted=1)


@lower("aten.sort.stable")
def _sort_stable(fx, n, x, stable=None, dim=-1, descending=False):
    # (TopK puts equal elements in index order: a stable sort)
    return _sort(fx, n, x, dim, descending)


@lower("aten.histc.default")
def _histc(fx, n, x, bins=100, min=0, max=0):
    """torch.histc: ``bins`` equal-width bins over [min, max] (min == max: the data's own range,
    widened by 1 either side when it is one value); elements outside the range (and NaN) are not counted; an
    element equal to max falls in the last bin.  The bin of x is trunc((x - min) * bins / (max - min))
    computed in x's type, as torch's kernel does, then capped at bins - 1.  transformers' grouped_mm
    experts count the tokens per expert with it."""
    xv = fx.op1("Reshape", [fx.v(x), fx.const([-1], np.int64)])
    if float(min) == float(max):  # (torch: then the data's range, whatever the equal pair was)
        lo, hi = fx.op1("ReduceMin", [xv], keepdims=0), fx.op1("ReduceMax", [xv], keepdims=0)
        same = fx.op1("Equal", [lo, hi])
        one = fx.v(1.0, xv)
        lo, hi = fx.op1("Where", [same, fx.op1("Sub", [lo, one]), lo]), fx.op1("Where", [same, fx.op1("Add", [hi, one]), hi])
    else:
        lo, hi = fx.v(float(min), xv), fx.v(float(max), xv)
    pos = fx.op1("Div", [fx.op1("Mul", [fx.op1("Sub", [xv, lo]), fx.v(float(bins), xv)]), fx.op1("Sub", [hi, lo])])
    b = fx.op1("Min", [fx.op1("Cast", [fx.op1("Floor", [pos])], to=7), fx.const(int(bins) - 1, np.int64)])
    inside = fx.op1("And", [fx.op1("GreaterOrEqual", [xv, lo]), fx.op1("LessOrEqual", [xv, hi])])
    hit = fx.op1("And", [fx.op1("Equal", [fx.op1("Unsqueeze", [b, fx.const([1], np.int64)]),
                                          fx.const(np.arange(int(bins), dtype=np.int64))]),
                         fx.op1("Unsqueeze", [inside, fx.const([1], np.int64)])])
    return fx.op1("ReduceSum", [fx.op1("Cast", [hit], to=_onnx_dtype(_t(fx, n).dtype)), fx.const([0], np.int64)],
                  keepdims=0)


def _grouped_rows(fx, n, x, w, offs):
    """out[s] = x[s] @ w[g(s)] for x [S, K], w [G, K, N] and cumulative row ends ``offs`` [G]: row s
    belongs to group g(s) = #{g : offs[g] <= s}; rows at or past offs[-1] belong to no group and are 0
    (transformers' fallback leaves them zero).  Written as a batched matmul of each row with the
    weight gathered by its group, the form transformers' batched_mm experts take."""
    xv, wv = fx.v(x), fx.v(w)
    G = int(_t(fx, w).shape[0])
    rows = fx.op1("Range", [fx.const(0, np.int64),
                            fx.op1("Squeeze", [fx.op1("Gather", [fx.op1("Shape", [xv]), fx.const([0], np.int64)],
                                                      axis=0), fx.const([0], np.int64)]),
                            fx.const(1, np.int64)])
    ends = fx.op1("Unsqueeze", [fx.op1("Cast", [fx.v(offs)], to=7), fx.const([0], np.int64)])
    g = fx.op1("ReduceSum", [fx.op1("Cast", [fx.op1("GreaterOrEqual", [fx.op1("Unsqueeze", [rows, fx.const([1], np.int64)]),
                                                                     ends])], to=7),
                             fx.const([1], np.int64)], keepdims=0)
    sel = fx.op1("Gather", [wv, fx.op1("Min", [g, fx.const(G - 1, np.int64)])], axis=0)
    y = fx.op1("MatMul", [fx.op1("Unsqueeze", [xv, fx.const([1], np.int64)]), sel])
    y = fx.op1("Squeeze", [y, fx.const([1], np.int64)])
    return fx.op1("Where", [fx.op1("Unsqueeze", [fx.op1("Less", [g, fx.const(G, np.int64)]), fx.const([1], np.int64)]),
                            y, fx.v(0.0, y)])


@lower("aten._grouped_mm.default")
def _grouped_mm(fx, n, x, w, offs=None, bias=None, out_dtype=None):
    """torch's grouped matmul: [S, K] x [G, K, N] with cumulative row ends ``offs`` (rows past the last
    end: 0 here, unspecified in torch), or [G, M, K] x [G, K, N] without offsets (a batched matmul)."""
    rx, rw = len(_t(fx, x).shape), len(_t(fx, w).shape)
    if rx == 2 and rw == 3 and offs is not None:
        y = _grouped_rows(fx, n, x, w, offs)
    elif rx == 3 and rw == 3 and offs is None:
        y = fx.op1("MatMul", [fx.v(x), fx.v(w)])
    else:
        raise UnsupportedError(f"{fx._where()}: grouped matmul of a rank-{rx} by a rank-{rw} operand "
                               f"{'with' if offs is not None else 'without'} offsets (moec lowers [S, K] x "
                               "[G, K, N] with offsets and [G, M, K] x [G, K, N] without)")
    if bias is not None:
        raise UnsupportedError(f"{fx._where()}: grouped matmul with a bias")
    val = _t(fx, n)
    if _np_dtype(val.dtype) is not None and DType.from_np(_np_dtype(val.dtype)) != y.type.dtype:
        y = fx.op1("Cast", [y], to=_onnx_dtype(val.dtype))
    return y


# transformers' custom op (integrations/moe.py): the grouped matmul loop that torch.export keeps opaque
lower("transformers.grouped_mm_fallback.default")(
    lambda fx, n, x, w, offs: _grouped_rows(fx, n, x, w, offs))


def _reduce(op_type):
    def fn(fx, n, x, dims=None, keepdim=False, dtype=None):
        xv = _as_result_type(fx, n, fx.v(x))  # (sum(bool) is int64 in torch, sum(x, dtype=) converts first)
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            return fx.op1(op_type, [xv], keepdims=int(keepdim))
        dims = [int(d) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        return fx.op1(op_type, [xv, fx.const(dims, np.int64)], keepdims=int(keepdim))
    return fn


lower("aten.sum.dim_IntList")(_reduce("ReduceSum"))
lower("aten.mean.dim")(_reduce("ReduceMean"))
lower("aten.amax.default")(_reduce("ReduceMax"))
lower("aten.amin.default")(_reduce("ReduceMin"))


@lower("aten.sum.default")
def _sum_all(fx, n, x, dtype=None):
    return fx.op1("ReduceSum", [_as_result_type(fx, n, fx.v(x))], keepdims=0)


@lower("aten.linalg_vector_norm.default")
def _norm(fx, n, x, ord=2, dim=None, keepdim=False, dtype=None):
    op = {1: "ReduceL1", 2: "ReduceL2"}.get(ord)
    if op is None:
        raise UnsupportedError(f"{fx._where()}: vector norm of order {ord}")
    return _reduce(op)(fx, n, x, dim, keepdim)


@lower("aten.any.dims", "aten.any.dim")
def _any(fx, n, x, dims=None, keepdim=False):
    # max of the 0/1 values in f32 (exact), nonzero -> true: the same as in int64, and f32 max and bool <-> f32
    # casts run on the NPU (Ascend vec_rowwise / vec_mask) where int64 reductions stay on the host
    xi = fx.op1("Cast", [fx.v(x)], to=1)
    dims = [dims] if isinstance(dims, int) else dims
    if not dims:
        r = fx.op1("ReduceMax", [xi], keepdims=int(keepdim))
    else:
        r = fx.op1("ReduceMax", [xi, fx.const([int(d) for d in dims], np.int64)], keepdims=int(keepdim))
    return fx.op1("Cast", [r], to=9)


@lower("aten.max.dim")
def _max_dim(fx, n, x, dim, keepdim=False):
    xv = fx.v(x)
    m = fx.op1("ReduceMax", [xv, fx.const([int(dim)], np.int64)], keepdims=int(keepdim))
    i = fx.op1("ArgMax", [xv], axis=int(dim), keepdims=int(keepdim), select_last_index=0)
    return [m, i]


@lower("aten.argmax.default")
def _argmax(fx, n, x, dim=None, keepdim=False):
    return fx.op1("ArgMax", [fx.v(x)], axis=int(dim), keepdims=int(keepdim))


def _promoted_dtype(a, b):
    """torch's type promotion of two operands (FX nodes or python scalars), or None if unknown."""
    import torch
    import torch.fx

    def proxy(x):
        if isinstance(x, torch.fx.Node):
            val = x.meta.get("val")
            if isinstance(val, torch.Tensor):  # (only dtype and "is 0-d" matter to promotion)
                return torch.empty((1,) if val.dim() else (), dtype=val.dtype)
            return {torch.SymInt: 1, torch.SymFloat: 1.0, torch.SymBool: True}.get(type(val), val)
        return x
    try:
        return torch.result_type(proxy(a), proxy(b))
    except Exception:  # noqa: BLE001 - no meta value: leave the operands as they are
        return None


def _promote(fx, vals, tdt):
    """Cast the operand Values (None: a python scalar, made later) to torch dtype ``tdt`` where they
    differ, as torch's mixed-dtype arithmetic does (bf16 * f32 -> f32: without it moec would reject
    the op or compute in the wrong type)."""
    nd = _np_dtype(tdt) if tdt is not None else None
    if nd is None:
        return vals
    want = DType.from_np(nd)
    return [v if v is None or v.type.dtype == want else fx.op1("Cast", [v], to=_onnx_dtype(tdt)) for v in vals]


def _binary_operands(fx, n, op_type, a, b, alpha=1):
    """The two operand Values of an elementwise binary op as torch computes it (promoted to the result's
    type, half tensors with an inexact python scalar widened to f32), and whether they were widened."""
    import torch
    import torch.fx
    av = fx.v(a) if isinstance(a, torch.fx.Node) else None
    bv = fx.v(b) if isinstance(b, torch.fx.Node) else None
    if op_type in _COMPARE:
        av, bv = _promote(fx, [av, bv], _promoted_dtype(a, b))
    elif op_type not in ("And", "Or"):  # arithmetic: in the result's type (int / int -> float in torch)
        val = n.meta.get("val")
        av, bv = _promote(fx, [av, bv], val.dtype if isinstance(val, torch.Tensor) else _promoted_dtype(a, b))
    t = av if av is not None else bv
    # (a comparison is the exception: torch rounds the scalar to the tensor's type and compares there,
    # so bf16 0.10009765625 > 0.1 is False)
    widen = op_type not in _COMPARE and t is not None and t.type.dtype in (DType.F16, DType.BF16) and \
        any(not _exact_in(c, t.type.dtype) for c in (a, b, alpha) if isinstance(c, float))
    if widen:
        # torch computes a half tensor with a python float in f32 (the scalar is not rounded to
        # the tensor's type: 1.702 stays 1.702, not bf16's 1.703125) and rounds the result once
        av, bv = [fx.op1("Cast", [v], to=_onnx_dtype(torch.float32)) if v is not None else None
                  for v in (av, bv)]
    av = av if av is not None else fx.v(a, bv)
    bv = bv if bv is not None else fx.v(b, av)
    return av, bv, widen


def _binary(op_type):
    def fn(fx, n, a, b, alpha=1):
        av, bv, widen = _binary_operands(fx, n, op_type, a, b, alpha)
        if alpha != 1:
            bv = fx.op1("Mul", [bv, fx.v(alpha, bv)])
        r = fx.op1(op_type, [av, bv])
        if widen:
            r = fx.op1("Cast", [r], to=_onnx_dtype(n.meta["val"].dtype))
        return r
    return fn


_COMPARE = ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")


def _exact_in(c: float, dt: DType) -> bool:
    """Whether python float ``c`` is exactly representable in ``dt``."""
    with np.errstate(over="ignore"):
        return float(np.asarray(c, dtype=dt.np)) == c or not np.isfinite(c)


for _a, _o in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div"), ("eq", "Equal"), ("gt", "Greater"),
               ("lt", "Less"), ("ge", "GreaterOrEqual"), ("le", "LessOrEqual"), ("maximum", "Max"),
               ("minimum", "Min"), ("pow", "Pow"), ("logical_and", "And"), ("logical_or", "Or")):
    lower(f"aten.{_a}.Tensor", f"aten.{_a}.Scalar", f"aten.{_a}.default", f"aten.{_a}.Tensor_Scalar")(_binary(_o))


@lower("aten.ne.Tensor", "aten.ne.Scalar")
def _ne(fx, n, a, b):
    return fx.op1("Not", [_binary("Equal")(fx, n, a, b)])


@lower("aten.rsub.Scalar")
def _rsub(fx, n, a, b, alpha=1):
    return _binary("Sub")(fx, n, b, a)


def _unary(op_type):
    def fn(fx, n, x):
        return fx.op1(op_type, [fx.v(x)])
    return fn


for _a, _o in (("relu", "Relu"), ("sigmoid", "Sigmoid"), ("exp", "Exp"), ("log", "Log"), ("neg", "Neg"),
               ("sqrt", "Sqrt"), ("tanh", "Tanh"), ("erf", "Erf"), ("abs", "Abs"), ("reciprocal", "Reciprocal"),
               ("logical_not", "Not"), ("sin", "Sin"), ("cos", "Cos"), ("floor", "Floor"), ("ceil", "Ceil"),
               ("sign", "Sign")):
    lower(f"aten.{_a}.default")(_unary(_o))


def _bool_operand(fx, n, what: str):
    """Bitwise ops on bool tensors are the logical ones; on integers moec has no bitwise op."""
    import torch
    val = n.meta.get("val")
    if not isinstance(val, torch.Tensor) or val.dtype != torch.bool:
        dt = getattr(val, "dtype", "?")
        raise UnsupportedError(f"ATen op '{n.target}' on {dt} tensors ({what} of integers) is not supported by "
                               f"moec's PyTorch front end, only on bool tensors (from {source_line(n)})")


@lower("aten.bitwise_not.default")
def _bitwise_not(fx, n, x):
    _bool_operand(fx, n, "bitwise not")
    return fx.op1("Not", [fx.v(x)])


def _bitwise(kind):
    def fn(fx, n, a, b):
        _bool_operand(fx, n, f"bitwise {kind}")
        av = fx.v(a) if not isinstance(a, (bool, int)) else None
        bv = fx.v(b) if not isinstance(b, (bool, int)) else None
        av = av if av is not None else fx.v(bool(a), bv)
        bv = bv if bv is not None else fx.v(bool(b), av)
        if av.type.dtype != DType.BOOL or bv.type.dtype != DType.BOOL:
            av, bv = [v if v.type.dtype == DType.BOOL else fx.op1("Cast", [v], to=9) for v in (av, bv)]
        if kind == "xor":  # a xor b = (a or b) and not (a and b)
            return fx.op1("And", [fx.op1("Or", [av, bv]), fx.op1("Not", [fx.op1("And", [av, bv])])])
        return fx.op1("And" if kind == "and" else "Or", [av, bv])
    return fn


for _k in ("and", "or", "xor"):
    lower(f"aten.bitwise_{_k}.Tensor", f"aten.bitwise_{_k}.Scalar")(_bitwise(_k))
lower("aten.logical_xor.default")(lambda fx, n, a, b: _bitwise("xor")(fx, n, a, b))


@lower("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def _div_mode(fx, n, a, b, rounding_mode=None):
    """torch.div with rounding_mode: None (true division), "trunc" (toward zero), "floor" (toward
    -inf; python's // on integers)."""
    import torch
    q = _binary("Div")(fx, n, a, b)
    val = n.meta.get("val")
    if rounding_mode is None:
        return q
    is_int = isinstance(val, torch.Tensor) and not val.dtype.is_floating_point
    if not is_int:  # floats: round the true quotient
        if rounding_mode == "floor":
            return fx.op1("Floor", [q])
        # trunc(q) = sign(q) * floor(|q|)
        return fx.op1("Mul", [fx.op1("Sign", [q]), fx.op1("Floor", [fx.op1("Abs", [q])])])
    if rounding_mode == "trunc":  # integer Div truncates toward zero
        return q
    # floor on integers: the truncated quotient minus 1 where the remainder is non-zero and the
    # remainder and the divisor have opposite signs
    # (the operands as the Div read them; not q's defining op, which is gone when the quotient folded)
    av, bv, _ = _binary_operands(fx, n, "Div", a, b)
    r = fx.op1("Sub", [av, fx.op1("Mul", [q, bv])])
    zero = fx.v(0, r)
    nonzero = fx.op1("Not", [fx.op1("Equal", [r, zero])])
    differ = fx.op1("Not", [fx.op1("Equal", [fx.op1("Less", [r, zero]), fx.op1("Less", [bv, fx.v(0, bv)])])])
    adj = fx.op1("Cast", [fx.op1("And", [nonzero, differ])], to=_onnx_dtype(val.dtype))
    return fx.op1("Sub", [q, adj])


@lower("aten.native_layer_norm.default")
def _native_layer_norm(fx, n, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last len(normalized_shape) dims: (y, mean, 1/std), the statistics with the
    normalised dims kept as 1 (PhiMoE's decoder norms)."""
    xv = fx.v(x)
    axis = xv.type.rank - len(normalized_shape)
    w = fx.v(weight) if weight is not None else fx.const(np.ones([int(s) for s in normalized_shape], xv.type.dtype.np))
    return fx.op("LayerNormalization", [xv, w, fx.v(bias) if bias is not None else None], 3, axis=axis,
                 epsilon=float(eps))


@lower("aten.convolution.default")
def _convolution(fx, n, x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    """torch's convolution (conv1d / conv2d / conv3d, e.g. the causal depthwise conv1d of linear-attention
    and Mamba layers): stride, padding (the same at both ends), dilation (one value or one per spatial dim)
    and groups onto ONNX Conv; a transposed convolution is refused."""
    if transposed:
        raise UnsupportedError(f"{fx._where()}: transposed convolution (conv_transpose) is not supported by moec's "
                               "PyTorch front end")
    xv = fx.v(x)
    ns = xv.type.rank - 2
    if ns < 1:
        raise UnsupportedError(f"{fx._where()}: convolution of a rank-{xv.type.rank} input (moec lowers "
                               "[N, C, spatial...] inputs; an unbatched conv1d / conv2d input is batched first)")

    def per_dim(vals, what):
        vals = [int(v) for v in vals]
        if len(vals) == 1:
            vals = vals * ns
        if len(vals) != ns:
            raise UnsupportedError(f"{fx._where()}: convolution {what} {vals} for {ns} spatial dims")
        return vals
    pads = per_dim(padding, "padding")
    ops = [xv, fx.v(w)] + ([fx.v(bias)] if bias is not None else [])
    return fx.op1("Conv", ops, strides=per_dim(stride, "stride"), pads=pads + pads,
                  dilations=per_dim(dilation, "dilation"), group=int(groups))


@lower("aten.log1p.default")
def _log1p(fx, n, x):
    """log(1 + x) (torch's softplus and logsigmoid decompose to it): moec.log1p, no ONNX spelling."""
    return fx.ir1("moec.log1p", [_as_result_type(fx, n, fx.v(x))])


@lower("aten.rsqrt.default")
def _rsqrt(fx, n, x):
    return fx.op1("Reciprocal", [fx.op1("Sqrt", [fx.v(x)])])


@lower("aten.silu.default")
def _silu(fx, n, x):
    xv = fx.v(x)
    return fx.op1("Mul", [xv, fx.op1("Sigmoid", [xv])])


@lower("aten.gelu.default")
def _gelu(fx, n, x, approximate="none"):
    return fx.op1("Gelu", [fx.v(x)], approximate=approximate)


@lower("aten.clamp.default", "aten.clamp.Tensor")
def _clamp(fx, n, x, lo=None, hi=None):
    xv = fx.v(x)
    bounds = [fx.v(b, xv) if b is not None else None for b in (lo, hi)]
    if any(b is not None and b.type.rank > 0 for b in bounds):
        # tensor bounds (PhiMoE: scores.abs().clamp(min=max_scores [T, 1])): Clip takes scalars only, so
        # max(x, lo) then min(., hi), broadcast, in x's type (NaN in x stays NaN, as in torch)
        for b, name in zip(bounds, ("Max", "Min")):
            if b is not None:
                if b.type.dtype != xv.type.dtype:
                    b = fx.op1("Cast", [b], to=_onnx_dtype(_t(fx, n).dtype))
                xv = fx.op1(name, [xv, b])
        return xv
    return fx.op1("Clip", [xv] + bounds)


@lower("aten.clamp_min.default")
def _clamp_min(fx, n, x, lo):
    return _clamp(fx, n, x, lo, None)


@lower("aten.clamp_max.default")
def _clamp_max(fx, n, x, hi):
    return _clamp(fx, n, x, None, hi)


@lower("aten.where.self")
def _where(fx, n, c, a, b):
    av = fx.v(a) if not isinstance(a, (int, float)) else None
    bv = fx.v(b) if not isinstance(b, (int, float)) else None
    av, bv = _promote(fx, [av, bv], _promoted_dtype(a, b))
    av = av if av is not None else fx.v(a, bv)
    bv = bv if bv is not None else fx.v(b, av)
    return fx.op1("Where", [fx.v(c), av, bv])


@lower("aten.clone.default", "aten.alias.default", "aten.lift_fresh_copy.default", "aten.contiguous.default")
def _clone(fx, n, x, **kw):
    return fx.op1("Identity", [fx.v(x)])


@lower("aten.copy.default")
def _copy(fx, n, dst, src, non_blocking=False):
    """copy(dst, src): src broadcast to dst's shape in dst's type (the functional form of
    ``dst.copy_(src)`` / ``dst[...] = src``, DeepSeek-V3's expand_kv)."""
    dv, sv = fx.v(dst), fx.v(src)
    if sv.type.dtype != dv.type.dtype:
        sv = fx.op1("Cast", [sv], to=_onnx_dtype(_t(fx, dst).dtype))
    return fx.op1("Expand", [sv, fx.op1("Shape", [dv])])


@lower("aten._to_copy.default")
def _to_copy(fx, n, x, dtype=None, **kw):
    val = _t(fx, n)
    return fx.op1("Cast", [fx.v(x)], to=_onnx_dtype(val.dtype))


def _same_size(a, b) -> bool:
    """Whether two FX sizes (ints, SymInts or SymInt nodes' values) are the same expression."""
    a, b = (v.meta.get("val") if hasattr(v, "meta") else v for v in (a, b))
    return a is not None and b is not None and str(a) == str(b)


@lower("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default")
def _view(fx, n, x, shape):
    """A size that is a SymInt is written from x itself where it can be: 0 (ONNX: x's own size at that
    position) where it is x's size there, else -1 for one of them (the size the others leave).  The
    reshape then reads no size computed elsewhere in the graph (transformers' ``view(num_tokens, k, D)``
    reuses the batch x sequence product of the model's input_ids), so the layer stays a function of
    its own input, which recognition probes at other token counts."""
    import torch.fx
    in_shape = list(_t(fx, x).shape)
    sizes = list(shape)
    has_minus_one = any(not isinstance(v, torch.fx.Node) and int(v) == -1 for v in sizes)
    for i, v in enumerate(sizes):
        if isinstance(v, torch.fx.Node) and i < len(in_shape) and _same_size(v, in_shape[i]):
            sizes[i] = 0
    if not has_minus_one:
        syms = [i for i, v in enumerate(sizes) if isinstance(v, torch.fx.Node)]
        if syms:
            sizes[syms[0]] = -1
    return fx.op1("Reshape", [fx.v(x), fx.shape_list(sizes)])


@lower("aten.unsqueeze.default")
def _unsqueeze(fx, n, x, d):
    c = _complex_arg(fx, x)
    if c is not None:  # (the pair axis stays last)
        d = int(d) - 1 if int(d) < 0 else int(d)
        return _Complex(fx.op1("Unsqueeze", [c.pair, fx.const([d], np.int64)]))
    return fx.op1("Unsqueeze", [fx.v(x), fx.const([int(d)], np.int64)])


class _Complex:
    """A complex tensor, held as a real tensor ``pair`` with a trailing axis of 2 (real, imaginary): the
    layout of torch's view_as_real.  Only the ops of complex rotary embeddings (DeepSeek-V2) take it."""

    def __init__(self, pair: Value):
        self.pair = pair


def _complex_arg(fx, a) -> Optional[_Complex]:
    if hasattr(a, "name") and hasattr(a, "meta"):
        x = fx.env.get(a.name)
        if isinstance(x, _Complex):
            return x
    return None


def _re_im(fx, c: _Complex):
    return [fx.op1("Gather", [c.pair, fx.const(i, np.int64)], axis=-1) for i in (0, 1)]


def _pair(fx, re: Value, im: Value) -> _Complex:
    last = fx.const([-1], np.int64)
    return _Complex(fx.op1("Concat", [fx.op1("Unsqueeze", [re, last]), fx.op1("Unsqueeze", [im, last])], axis=-1))


@lower("aten.view_as_complex.default")
def _view_as_complex(fx, n, x):
    return _Complex(fx.v(x))


@lower("aten.view_as_real.default")
def _view_as_real(fx, n, x):
    c = _complex_arg(fx, x)
    if c is None:
        raise UnsupportedError(f"{fx._where()}: view_as_real of a tensor moec did not make complex")
    return fx.op1("Identity", [c.pair])


@lower("aten.polar.default")
def _polar(fx, n, r, theta):
    """abs * (cos(angle) + i sin(angle))."""
    rv, tv = fx.v(r), fx.v(theta)
    return _pair(fx, fx.op1("Mul", [rv, fx.op1("Cos", [tv])]), fx.op1("Mul", [rv, fx.op1("Sin", [tv])]))


def _complex_mul(fx, n, a, b):
    """A product with a complex operand: (ar + i ai)(br + i bi); a real scalar or tensor scales both parts."""
    ca, cb = _complex_arg(fx, a), _complex_arg(fx, b)
    if ca is not None and cb is not None:
        (ar, ai), (br, bi) = _re_im(fx, ca), _re_im(fx, cb)
        return _pair(fx, fx.op1("Sub", [fx.op1("Mul", [ar, br]), fx.op1("Mul", [ai, bi])]),
                     fx.op1("Add", [fx.op1("Mul", [ar, bi]), fx.op1("Mul", [ai, br])]))
    c, other = (ca, b) if ca is not None else (cb, a)
    if isinstance(other, (int, float)):
        return _Complex(fx.op1("Mul", [c.pair, fx.v(float(other), c.pair)]))
    ov = fx.op1("Unsqueeze", [fx.v(other), fx.const([-1], np.int64)])
    return _Complex(fx.op1("Mul", [c.pair, ov]))


def _mul(fx, n, a, b, alpha=1):
    if _complex_arg(fx, a) is not None or _complex_arg(fx, b) is not None:
        return _complex_mul(fx, n, a, b)
    return _binary("Mul")(fx, n, a, b)


lower("aten.mul.Tensor", "aten.mul.Scalar")(_mul)


@lower("aten.squeeze.dims", "aten.squeeze.dim")
def _squeeze(fx, n, x, dims):
    """torch.squeeze(x, dims) drops only the listed dims of size 1 and leaves the others (ONNX's
    Squeeze refuses them): dims statically not 1 are not passed on."""
    dims = [dims] if isinstance(dims, int) else list(dims)
    xv = fx.v(x)
    r = xv.type.rank
    dims = [int(d) for d in dims if not (isinstance(xv.type.shape[int(d) % r if r else 0], int)
                                         and xv.type.shape[int(d) % r] != 1)] if r else []
    if not dims:
        return fx.op1("Identity", [xv])
    return fx.op1("Squeeze", [xv, fx.const(dims, np.int64)])


@lower("aten.expand.default")
def _expand(fx, n, x, sizes):
    import torch.fx
    # ONNX's Expand broadcasts: a 1 keeps x's size.  torch's -1 (keep) and a SymInt equal to x's own
    # size at that position are written as 1, so the result reads no size computed elsewhere.
    xv = fx.v(x)
    in_shape = list(_t(fx, x).shape)
    lead = len(sizes) - len(in_shape)
    keep = [(not isinstance(s, torch.fx.Node) and int(s) == -1)
            or (isinstance(s, torch.fx.Node) and i >= lead and _same_size(s, in_shape[i - lead]))
            for i, s in enumerate(sizes)]
    return fx.op1("Expand", [xv, fx.shape_list([1 if k else s for k, s in zip(keep, sizes)])])


@lower("aten.repeat.default")
def _repeat(fx, n, x, repeats):
    """x.repeat(r0, ..., rn): Tile, after unsqueezing x to len(repeats) dims at the front."""
    xv = fx.v(x)
    lead = len(repeats) - xv.type.rank
    if lead < 0:
        raise UnsupportedError(f"ATen op 'aten.repeat' with fewer repeats than dims (from {source_line(n)})")
    if lead:
        xv = fx.op1("Unsqueeze", [xv, fx.const(list(range(lead)), np.int64)])
    return fx.op1("Tile", [xv, fx.shape_list(repeats)])


@lower("aten.cat.default")
def _cat(fx, n, xs, dim=0):
    """torch.cat; a 1-D tensor of size 0 is skipped whatever the other tensors' rank, as torch does (a KV
    cache that starts as ``torch.tensor([])``: DiffusionGemma's encoder)."""
    rank = len(_t(fx, n).shape)
    if rank != 1:
        def empty_1d(x):  # (statically: a size read from a tensor at run time, e.g. an expert's row count, is
            shape = tuple(getattr(x.meta.get("val"), "shape", ())) if hasattr(x, "meta") else ()  # not known)
            return len(shape) == 1 and isinstance(shape[0], int) and shape[0] == 0
        xs = [x for x in xs if not empty_1d(x)]
    if len(xs) == 1:
        return fx.op1("Identity", [fx.v(xs[0])])
    return fx.op1("Concat", [fx.v(x) for x in xs], axis=int(dim))


@lower("aten.stack.default")
def _stack(fx, n, xs, dim=0):
    return fx.op1("Concat", [fx.op1("Unsqueeze", [fx.v(x), fx.const([int(dim)], np.int64)]) for x in xs],
                  axis=int(dim))


@lower("aten.split_with_sizes.default")
def _split(fx, n, x, sizes, dim=0):
    # sizes: ints, or SymInts read from tensors at run time (``expert_size.tolist()``: the split of the
    # sorted token rows into per-expert blocks), which become the Split's run-time sizes vector
    return fx.op("Split", [fx.v(x), fx.shape_list(sizes)], len(sizes), axis=int(dim))


@lower("aten.split.Tensor")
def _split_t(fx, n, x, size, dim=0):
    total = n.args[0].meta["val"].shape[dim]
    sizes = [size] * (int(total) // size) + ([int(total) % size] if int(total) % size else [])
    return _split(fx, n, x, sizes, dim)


def _slice_bound(fx, v, default):
    """A python slice bound (None, an int, or a traced SymInt) as ONNX Slice's 1-element start/end vector."""
    import torch.fx
    if v is None:
        return fx.const([default], np.int64)
    if isinstance(v, torch.fx.Node):
        return fx.env[v.name].vector(fx)
    return fx.const([min(int(v), I64_MAX)], np.int64)


@lower("aten.slice.Tensor")
def _slice(fx, n, x, dim=0, start=None, end=None, step=1):
    return fx.op1("Slice", [fx.v(x), _slice_bound(fx, start, 0), _slice_bound(fx, end, I64_MAX),
                            fx.const([int(dim)], np.int64), fx.const([int(step)], np.int64)])


@lower("aten.slice_scatter.default")
def _slice_scatter(fx, n, x, src, dim=0, start=None, end=None, step=1):
    """x with x[start:end] along ``dim`` replaced by src (``out[..., :4] = y``): the part of x before
    the slice, src, the part after it, concatenated (python's slice bounds, as ONNX's Slice reads them)."""
    xv, axis = fx.v(x), fx.const([int(dim)], np.int64)
    sv = fx.v(src)
    if sv.type.dtype != xv.type.dtype:
        sv = fx.op1("Cast", [sv], to=_onnx_dtype(_t(fx, x).dtype))
    if int(step) != 1:
        return _strided_slice_scatter(fx, n, xv, sv, int(dim), start, int(step))
    pre = fx.op1("Slice", [xv, fx.const([0], np.int64), _slice_bound(fx, start, 0), axis])
    post = fx.op1("Slice", [xv, _slice_bound(fx, end, I64_MAX), fx.const([I64_MAX], np.int64), axis])
    return fx.op1("Concat", [pre, sv, post], axis=int(dim))


@lower("aten.constant_pad_nd.default")
def _constant_pad_nd(fx, n, x, pad, value=0):
    """F.pad(x, pad, value=value): ``pad`` holds (before, after) pairs from the last dim backwards; a
    positive amount adds that many elements of ``value``, a negative one removes elements (torch crops).
    Per dim: a Slice for the crops, then a Concat with constant blocks (the causal conv1d's left padding
    of the sequence in linear-attention layers)."""
    import torch.fx
    from onnx import helper
    xv = fx.v(x)
    r = xv.type.rank
    pad = list(pad)
    if len(pad) % 2 or len(pad) // 2 > r:
        raise UnsupportedError(f"{fx._where()}: constant_pad_nd with {len(pad)} pad values for a rank-{r} tensor")
    if any(isinstance(p, torch.fx.Node) for p in pad):
        raise UnsupportedError(f"{fx._where()}: constant_pad_nd by a symbolic amount")
    fill = helper.make_tensor("v", _onnx_dtype(_t(fx, n).dtype), [1], [value])
    for i in range(len(pad) // 2):
        d, lo, hi = r - 1 - i, int(pad[2 * i]), int(pad[2 * i + 1])
        if lo < 0 or hi < 0:
            xv = fx.op1("Slice", [xv, fx.const([max(-lo, 0)], np.int64), fx.const([hi if hi < 0 else I64_MAX], np.int64),
                                  fx.const([d], np.int64)])
        parts = []
        for amount in (lo, hi):
            if amount > 0:
                shape = fx.op1("Shape", [xv])
                shape = fx.op1("ScatterElements", [shape, fx.const([d], np.int64), fx.const([amount], np.int64)],
                               axis=0)
                parts.append(fx.op1("ConstantOfShape", [shape], value=fill))
            else:
                parts.append(None)
        if parts[0] is not None or parts[1] is not None:
            xv = fx.op1("Concat", [p for p in (parts[0], xv, parts[1]) if p is not None], axis=d)
    return xv if xv is not fx.v(x) else fx.op1("Identity", [xv])


def _strided_slice_scatter(fx, n, xv, sv, dim, start, step):
    """x[start:end:step] along ``dim`` replaced by src (Qwen3-VL's interleaved rotary sections write
    ``freqs[..., 1:n:3] = ...``): ScatterElements of src at positions start + step * i, i < src's size
    along dim (torch checks that src has exactly the slice's length); start as python reads it (negative:
    from the end, clamped at 0)."""
    if step < 1:
        raise UnsupportedError(f"{fx._where()}: slice_scatter with step {step} (torch requires a positive step)")
    r = xv.type.rank
    d = dim % r
    import torch.fx
    if start is None:
        st = fx.const(0, np.int64)
    elif isinstance(start, torch.fx.Node):  # (a SymInt: a size, not negative)
        st = fx.env[start.name].scalar(fx)
    elif int(start) >= 0:
        st = fx.const(int(start), np.int64)
    else:  # max(size + start, 0)
        size = fx.op1("Squeeze", [fx.op1("Gather", [fx.op1("Shape", [xv]), fx.const([d], np.int64)], axis=0),
                                  fx.const([0], np.int64)])
        st = fx.op1("Max", [fx.op1("Add", [size, fx.const(int(start), np.int64)]), fx.const(0, np.int64)])
    count = fx.op1("Squeeze", [fx.op1("Gather", [fx.op1("Shape", [sv]), fx.const([d], np.int64)], axis=0),
                               fx.const([0], np.int64)])
    pos = fx.op1("Add", [fx.op1("Mul", [fx.op1("Range", [fx.const(0, np.int64), count, fx.const(1, np.int64)]),
                                        fx.const(step, np.int64)]), st])
    shape = [1] * r
    shape[d] = -1
    idx = fx.op1("Expand", [fx.op1("Reshape", [pos, fx.const(shape, np.int64)]), fx.op1("Shape", [sv])])
    return fx.op1("ScatterElements", [xv, idx, sv], axis=d)


@lower("aten.select_scatter.default")
def _select_scatter(fx, n, x, src, dim, index):
    """x with x.select(dim, index) replaced by src (``out[:, i] = y``)."""
    size = _t(fx, x).shape[int(dim)]
    i = int(index)
    if i < 0:
        if not isinstance(size, int):
            raise UnsupportedError(f"{fx._where()}: select_scatter at a negative index of a symbolic dim")
        i += size
    src1 = fx.op1("Unsqueeze", [fx.v(src), fx.const([int(dim)], np.int64)])
    return _slice_scatter(fx, n, x, _Given(src1), dim, i, i + 1)


class _Given:
    """An FX-argument stand-in for a Value already made (fx.v passes it through)."""

    def __init__(self, value):
        self.value = value


@lower("aten.select.int")
def _select(fx, n, x, dim, idx):
    return fx.op1("Gather", [fx.v(x), fx.const(int(idx), np.int64)], axis=int(dim))


@lower("aten.index_select.default")
def _index_select(fx, n, x, dim, idx):
    return fx.op1("Gather", [fx.v(x), fx.v(idx)], axis=int(dim))


def _stack_indices(fx, idxs):
    """[i0, i1, ...] (shapes that broadcast together, as torch's advanced indexing allows: a causal
    mask indexes with [B, 1, 1, 1] and [1, 1, S, 1]) -> [..., len] int64 for GatherND/ScatterND."""
    vals = [fx.op1("Cast", [fx.v(i)], to=7) for i in idxs]
    if len(vals) > 1:
        rank = max(v.type.rank for v in vals)
        vals = [v if v.type.rank == rank else
                fx.op1("Unsqueeze", [v, fx.const(list(range(rank - v.type.rank)), np.int64)]) for v in vals]
        if len({v.type.shape for v in vals}) > 1:
            # the broadcast shape: each dim is the size that is not 1 (or 1)
            shp = fx.op1("Shape", [vals[0]])
            one = fx.const([1], np.int64)
            for v in vals[1:]:
                s2 = fx.op1("Shape", [v])
                shp = fx.op1("Where", [fx.op1("Equal", [shp, one]), s2, shp])
            vals = [fx.op1("Expand", [v, shp]) for v in vals]
    parts = [fx.op1("Unsqueeze", [v, fx.const([-1], np.int64)]) for v in vals]
    return parts[0] if len(parts) == 1 else fx.op1("Concat", parts, axis=-1)


@lower("aten.index.Tensor")
def _index(fx, n, x, indices):
    """x[i0, i1, ...] with index tensors on adjacent dims, after leading full slices (None): the
    result is x.shape[:a] + broadcast index shape + the dims after them (torch's advanced indexing)."""
    idx = list(indices)
    while idx and idx[-1] is None:
        idx.pop()
    a = 0
    while a < len(idx) and idx[a] is None:
        a += 1
    tensors = idx[a:]
    if not tensors or any(i is None for i in tensors):
        raise UnsupportedError(f"{fx._where()}: indexing with None between index tensors")
    if any(str(i.meta["val"].dtype) == "torch.bool" for i in tensors):
        raise UnsupportedError(f"{fx._where()}: boolean-mask indexing")
    xv = fx.v(x)
    if len(tensors) == 1:
        return fx.op1("Gather", [xv, fx.v(tensors[0])], axis=a)
    if a == 0:
        return fx.op1("GatherND", [xv, _stack_indices(fx, tensors)], batch_dims=0)
    r, k = xv.type.rank, len(tensors)
    front = fx.op1("Transpose", [xv], perm=list(range(a, a + k)) + list(range(a)) + list(range(a + k, r)))
    g = fx.op1("GatherND", [front, _stack_indices(fx, tensors)], batch_dims=0)
    q = g.type.rank - (r - k)  # (rank of the broadcast index shape)
    return fx.op1("Transpose", [g], perm=list(range(q, q + a)) + list(range(q)) + list(range(q + a, g.type.rank)))


@lower("aten.index_put.default", "aten.index_put_.default")
def _index_put(fx, n, x, indices, values, accumulate=False):
    idx = list(indices)
    if any(i is None for i in idx):
        raise UnsupportedError(f"{fx._where()}: index_put with None indices")
    xv = fx.v(x)
    vals = fx.v(values, xv)
    ind = _stack_indices(fx, idx)
    # broadcast the values to the indexed shape: indices shape [...] + x.shape[len(idx):]
    tgt = fx.op1("Concat", [fx.op1("Slice", [fx.op1("Shape", [ind]), fx.const([0], np.int64),
                                             fx.const([-1], np.int64)]),
                            fx.op1("Slice", [fx.op1("Shape", [xv]), fx.const([len(idx)], np.int64),
                                             fx.const([I64_MAX], np.int64)])], axis=0)
    vals = fx.op1("Expand", [vals, tgt])
    return fx.op1("ScatterND", [xv, ind, vals], reduction="add" if accumulate else None)


@lower("aten.index_add.default")
def _index_add(fx, n, x, dim, index, src, alpha=1):
    if int(dim) != 0:
        raise UnsupportedError(f"{fx._where()}: index_add along dim {dim}")
    return _index_put(fx, n, x, [index], src, True)


@lower("aten.gather.default")
def _gather(fx, n, x, dim, index, sparse_grad=False):
    return fx.op1("GatherElements", [fx.v(x), fx.v(index)], axis=int(dim))


@lower("aten.scatter.src", "aten.scatter.value", "aten.scatter_add.default")
def _scatter(fx, n, x, dim, index, src, reduce=None):
    xv = fx.v(x)
    iv = fx.v(index)
    if not hasattr(src, "meta"):  # a scalar value
        src = fx.op1("Expand", [fx.v(src, xv), fx.op1("Shape", [iv])])
    else:
        src = fx.v(src)
    red = "add" if str(n.target) == "aten.scatter_add.default" else None
    return fx.op1("ScatterElements", [xv, iv, src], axis=int(dim), reduction=red)


@lower("aten.cumsum.default")
def _cumsum(fx, n, x, dim, dtype=None):
    return fx.op1("CumSum", [_as_result_type(fx, n, fx.v(x)), fx.const(int(dim), np.int64)])


def _as_result_type(fx, n, xv: Value) -> Value:
    """``xv`` cast to the type of node ``n``'s result where they differ: a reduction's ``dtype=``
    argument converts its input first (transformers' ``cumsum(float counts, dtype=int32)``)."""
    val = _t(fx, n)
    nd = _np_dtype(getattr(val, "dtype", None))
    if nd is None or DType.from_np(nd) == xv.type.dtype:
        return xv
    return fx.op1("Cast", [xv], to=_onnx_dtype(val.dtype))


@lower("aten.nonzero.default")
def _nonzero(fx, n, x):
    return fx.op1("Transpose", [fx.op1("NonZero", [fx.v(x)])], perm=[1, 0])


@lower("aten.full.default")
def _full(fx, n, size, value, dtype=None, **kw):
    from onnx import helper
    val = _t(fx, n)
    t = helper.make_tensor("v", _onnx_dtype(val.dtype), [1], [value])
    return fx.op1("ConstantOfShape", [fx.shape_list(size)], value=t)


@lower("aten.empty.memory_format", "aten.empty_permuted.default")
def _empty(fx, n, size, *a, **kw):
    # (uninitialised in torch: every element is written before it is read, so zeros are as good)
    return _full(fx, n, size, 0)


@lower("aten.embedding.default")
def _embedding(fx, n, w, ids, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return fx.op1("Gather", [fx.v(w), fx.v(ids)], axis=0)


@lower("aten.full_like.default")
def _full_like(fx, n, x, value, dtype=None, **kw):
    from onnx import helper
    val = _t(fx, n)
    t = helper.make_tensor("v", _onnx_dtype(val.dtype), [1], [value])
    return fx.op1("ConstantOfShape", [fx.op1("Shape", [fx.v(x)])], value=t)


@lower("aten.zeros_like.default")
def _zeros_like(fx, n, x, **kw):
    return _full_like(fx, n, x, 0)


@lower("aten.ones_like.default")
def _ones_like(fx, n, x, **kw):
    return _full_like(fx, n, x, 1)


@lower("aten.zeros.default", "aten.new_zeros.default")
def _zeros(fx, n, *a, **kw):
    size = a[-1] if str(n.target) == "aten.new_zeros.default" else a[0]
    return _full(fx, n, size, 0)


@lower("aten.scalar_tensor.default")
def _scalar_tensor(fx, n, v, dtype=None, **kw):
    return fx.const(v, _np_dtype(_t(fx, n).dtype))


@lower("aten.arange.start_step", "aten.arange.default", "aten.arange.start")
def _arange(fx, n, *a, **kw):
    val = _t(fx, n)
    nd = _np_dtype(val.dtype)
    if str(n.target) == "aten.arange.default":
        start, end, step = 0, a[0], 1
    else:
        start, end = a[0], a[1]
        step = a[2] if len(a) > 2 else 1
    import torch.fx

    def s(v):
        if isinstance(v, torch.fx.Node):
            return fx.op1("Cast", [fx.env[v.name].scalar(fx)], to=_onnx_dtype(val.dtype))
        return fx.const(v, nd)
    return fx.op1("Range", [s(start), s(end), s(step)])


@lower("aten.one_hot.default")
def _one_hot(fx, n, x, num_classes=-1):
    depth = fx.const(int(num_classes), np.int64)
    return fx.op1("OneHot", [fx.v(x), depth, fx.const([0, 1], np.int64)], axis=-1)


@lower("aten.sym_size.int")
def _sym_size(fx, n, x, d):
    vec = fx.op1("Gather", [fx.op1("Shape", [fx.v(x)]), fx.const([int(d)], np.int64)], axis=0)
    return _Sym(vec, f"size {d} of {x.name}")


@lower("aten._local_scalar_dense.default")
def _local_scalar_dense(fx, n, x):
    """``t.item()`` / ``t.tolist()`` of a one-element tensor (torch.export's unbacked SymInt, e.g. JetMoE's
    ``expert_size.tolist()``): the value stays in the graph as a 1-element vector computed at run time, int64
    for an integer (a size or an index, as every moec shape vector), its own type otherwise."""
    import torch
    v = fx.op1("Reshape", [fx.v(x), fx.const([1], np.int64)])
    if isinstance(n.meta.get("val"), (int, torch.SymInt)) and v.type.dtype.np != np.int64:
        v = fx.op1("Cast", [v], to=_onnx_dtype(torch.int64))
    return _Sym(v, f"the value of {x.name}")


# ops that only assert or describe: no IR
_SKIP = {"aten._assert_async.msg", "aten._assert_scalar.default", "aten._assert_tensor_metadata.default",
         "aten.sym_constrain_range_for_size.default", "aten.sym_constrain_range.default"}


def _sym_arith(fx, n, a, b):
    import torch.fx
    ops = {operator.mul: "Mul", operator.add: "Add", operator.sub: "Sub", operator.floordiv: "Div"}
    f = ops.get(n.target, "Sub" if n.target is operator.neg else None)  # (neg: 0 - b)
    if f is None:  # comparisons feed asserts only
        return _Sym(None, str(n.target))

    def vec(x):
        if isinstance(x, torch.fx.Node):
            return fx.env[x.name].vector(fx)
        return fx.const([int(x)], np.int64)
    return _Sym(fx.op1(f, [vec(a), vec(b)]), str(n.target))


# transformers' experts implementations (config._experts_implementation of a class decorated with
# @use_experts_implementation): the one moec exports, the ones it replaces (all compute the same function)
TRACEABLE_EXPERTS = "batched_mm"


def _transformers_experts(module) -> list:
    """The transformers experts modules inside ``module``: those whose forward dispatches on
    ``config._experts_implementation`` (the attributes transformers' decorator sets)."""
    return [m for m in module.modules()
            if hasattr(m, "config") and hasattr(m, "is_concatenated") and hasattr(m, "has_gate")
            and hasattr(m.config, "_experts_implementation")]


class _Swapped:
    """Temporarily set attributes of config objects (restored on exit, even on an error)."""

    def __init__(self, changes):
        self.changes = changes  # [(obj, attr, value)]
        self.saved = []

    def __enter__(self):
        for obj, attr, value in self.changes:
            self.saved.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)
        return self

    def __exit__(self, *exc):
        for obj, attr, value in reversed(self.saved):
            setattr(obj, attr, value)
        return False


def traceable_experts(module, implementation: Optional[str] = TRACEABLE_EXPERTS):
    """A context in which every transformers experts module of ``module`` runs ``implementation``
    (``None``: leave them as they are), and the implementations replaced, {module path: name}.

    transformers' default "eager" experts loop over the experts that were hit (a data-dependent list:
    torch.export cannot trace it); "grouped_mm" sorts the token rows by expert and runs a grouped
    matmul (traceable; recognize-moe recognises its sorted form, so moec.compile's default keeps it and
    swaps to "batched_mm" only where that recognises more layers: compiler/hf_experts.py); "batched_mm"
    gathers each row's expert weights (traceable and recognised; this function's default).  They compute
    the same function; moec.compile verifies the build against the module's own implementation, so a
    swap is checked."""
    if implementation is None:
        return _Swapped([]), {}
    changes, replaced, seen = [], {}, set()
    paths = {id(m): p for p, m in module.named_modules()}
    for m in _transformers_experts(module):
        cur = m.config._experts_implementation
        if cur == implementation:
            continue
        replaced[paths.get(id(m), "?")] = cur or "eager"
        if id(m.config) not in seen:
            seen.add(id(m.config))
            # (the internal field: the public setter also rewrites every sub-config)
            attr = "_experts_implementation_internal" if hasattr(m.config, "_experts_implementation_internal") \
                else "_experts_implementation"
            changes.append((m.config, attr, implementation))
    return _Swapped(changes), replaced


def without_kv_cache(module):
    """A context in which transformers models inside ``module`` run with ``config.use_cache = False``:
    a CausalLM then returns its logits only, not a DynamicCache (which torch.export cannot return);
    and the flag's previous values."""
    changes, seen = [], set()
    for m in module.modules():
        c = getattr(m, "config", None)
        if c is not None and getattr(c, "use_cache", None) and id(c) not in seen:
            seen.add(id(c))
            changes.append((c, "use_cache", False))
    return _Swapped(changes)


def flat_outputs(y) -> list:
    """The tensors of a module's output, in order: a tensor; a tuple / list / dict of them, nested;
    transformers' ModelOutput (its fields that are set, as ``to_tuple()`` gives them)."""
    if hasattr(y, "detach"):
        return [y]
    if hasattr(y, "to_tuple"):
        y = y.to_tuple()
    if isinstance(y, dict):
        y = list(y.values())
    if isinstance(y, (list, tuple)):
        return [t for e in y for t in flat_outputs(e)]
    return []  # (None and other non-tensors)


def _flat_output_module(module, n_inputs: int):
    """``module`` itself, or for a transformers model (one with a ``config``: its output is a
    ModelOutput, which torch.export's pytree does not always know) a wrapper returning
    flat_outputs(module(...)) as a tuple."""
    import torch
    if not hasattr(module, "config"):
        return module
    names = ", ".join(f"a{i}" for i in range(n_inputs))
    ns: Dict[str, Any] = {"flat_outputs": flat_outputs}
    exec(f"def forward(self, {names}):\n    return tuple(flat_outputs(self.m({names})))\n", ns)
    cls = type(type(module).__name__, (torch.nn.Module,), {"forward": ns["forward"]})
    w = cls()
    w.m = module
    return w.eval() if not module.training else w


def import_torch(module, example_inputs: tuple, *, dynamic_dims: Optional[dict] = None,
                 name: Optional[str] = None, experts_implementation: Optional[str] = TRACEABLE_EXPERTS) -> Module:
    """Export ``module`` with torch.export and import its ATen graph into a moec Module.

    By default dimension 0 of every input of rank >= 2 is dynamic (the token count, symbol ``T``);
    ``dynamic_dims`` maps input index -> {dim: symbol name} to choose otherwise ({} = static).
    transformers experts modules are exported with ``experts_implementation`` (default "batched_mm",
    see :func:`traceable_experts`; ``None`` exports them as they are set), transformers models with
    ``use_cache=False``; the module's attributes ``moec.experts_implementation`` records what was
    replaced."""
    import torch
    swap, replaced = traceable_experts(module, experts_implementation)
    name = name or type(module).__name__
    with swap, without_kv_cache(module):
        m = _import_torch(_flat_output_module(module, len(tuple(example_inputs))), example_inputs, dynamic_dims,
                          name)
    if replaced:
        m.attrs["moec.experts_implementation"] = json.dumps(
            {"exported_as": experts_implementation, "replaced": replaced}, sort_keys=True)
    return m


def _import_torch(module, example_inputs, dynamic_dims, name) -> Module:
    import torch
    import torch.fx
    _load_converters()
    name = name or type(module).__name__
    if not isinstance(example_inputs, tuple):
        example_inputs = tuple(example_inputs)
    if dynamic_dims is None:  # the token dimension: dim 0 of rank >= 2 inputs sharing the first's size
        t0 = next((x.shape[0] for x in example_inputs if isinstance(x, torch.Tensor) and x.dim() >= 2), None)
        dynamic_dims = {i: {0: "T"} for i, x in enumerate(example_inputs)
                        if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == t0 and t0 > 1}
    dims = {}
    shapes = []
    for i, x in enumerate(example_inputs):
        spec = {}
        for d, sym in (dynamic_dims.get(i) or {}).items():
            dims.setdefault(sym, torch.export.Dim(sym, min=1, max=1 << 20))
            spec[d] = dims[sym]
        shapes.append(spec or None)
    module = module.eval()
    try:
        try:
            ep = torch.export.export(module, example_inputs, dynamic_shapes=tuple(shapes))
        except Exception as e:  # noqa: BLE001 - specialised dims: export static, and say so
            import warnings
            warnings.warn(f"moec: model '{name}' could not be exported with a dynamic token dimension "
                          f"({str(e).splitlines()[0][:200]}); compiling for the example shapes only")
            ep = torch.export.export(module, example_inputs)
            dims = {}
        ep = ep.run_decompositions()
    except Exception as e:  # noqa: BLE001 - torch.export failures are the user's model's
        hint = ""
        impls = {m.config._experts_implementation or "eager" for m in _transformers_experts(module)}
        if "data-dependent" in str(e) and impls - {TRACEABLE_EXPERTS}:
            # transformers' default "eager" experts loop over the experts hit, a data-dependent list
            hint = ("; this transformers model's experts loop over the experts that were hit, which torch.export "
                    "cannot trace: export it with experts_implementation=\"batched_mm\" (the same function; "
                    "moec.compile's default) or set config._experts_implementation = \"batched_mm\" "
                    "(docs/exporting.md)")
        raise UnsupportedError(f"model '{name}': torch.export failed: {str(e).splitlines()[0][:400]}{hint}") from None
    gm = ep.graph_module
    sig = ep.graph_signature
    params = {**dict(ep.state_dict), **dict(getattr(ep, "constants", {}) or {})}
    m = Module()
    m.attrs["moec.source"] = name
    m.attrs["moec.frontend"] = "torch.export"
    m.attrs["moec.opset"] = 25
    user_inputs = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    by_input = {s.arg.name: s for s in sig.input_specs}
    from moec.ir import TensorType
    args = []
    for k, nm in enumerate(user_inputs):
        node = next(n for n in gm.graph.nodes if n.name == nm)
        val = node.meta["val"]
        shape = []
        for d, s in enumerate(val.shape):
            sym = (dynamic_dims.get(k) or {}).get(d)
            shape.append(sym if (sym and dims) else int(s))
        if _np_dtype(val.dtype) is None:
            raise UnsupportedError(f"model '{name}': input '{nm}' has element type {val.dtype}, which moec does "
                                   "not compile (supported: float32, float64, float16, bfloat16, int64, int32, "
                                   "int16, int8, uint8, bool)")
        args.append(Value(TensorType(DType.from_np(_np_dtype(val.dtype)), tuple(shape)), _sanitize_symbol(nm)))
    f = Function("main", args, user_inputs)
    m.functions.append(f)
    ctx = ImportContext(name, 25, m, f)
    fx = _Fx(ctx, name)
    for a, nm in zip(args, user_inputs):
        fx.env[nm] = a
    for node in gm.graph.nodes:
        fx.node = node
        if node.op == "placeholder":
            if node.name in fx.env:
                continue
            spec = by_input.get(node.name)
            target = spec.target if spec is not None else None
            if target not in params:
                raise UnsupportedError(f"model '{name}': input '{node.name}' is neither a user input nor a "
                                       "parameter/buffer/constant")
            arr = params[target].detach().cpu()
            fx.env[node.name] = ctx.const(tensor_to_numpy(arr), hint=target)
            continue
        if node.op == "output":
            outs = node.args[0]
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            for i, o in enumerate(outs):
                f.outputs.append(fx.v(o))
                f.output_names.append(f"output{i}" if len(outs) > 1 else "output")
            continue
        if node.op != "call_function":
            raise UnsupportedError(f"model '{name}': FX node kind '{node.op}' ({node.name}) is not supported")
        tgt = str(node.target)
        if tgt in _SKIP:
            continue
        if node.target is operator.getitem:
            src, i = node.args
            fx.env[node.name] = fx.env[src.name][i]
            continue
        if node.target in (operator.mul, operator.add, operator.sub, operator.floordiv, operator.ge, operator.le,
                           operator.lt, operator.gt, operator.eq):
            fx.env[node.name] = _sym_arith(fx, node, *node.args)
            continue
        if node.target is operator.neg:  # -s of a symbolic size (Zaya's router_states[:, -seq_length:])
            fx.env[node.name] = _sym_arith(fx, node, 0, node.args[0])
            continue
        fn = _LOWER.get(tgt)
        if fn is None:
            raise UnsupportedError(
                f"model '{name}': ATen op '{tgt}' is not supported by moec's PyTorch front end "
                f"(from {source_line(node)}). Supported ATen ops: {', '.join(sorted(_LOWER))}")
        res = fn(fx, node, *node.args, **node.kwargs)
        fx.env[node.name] = res
        if isinstance(res, Value) and res.name is None:
            res.name = _sanitize_symbol(node.name)
    fx.node = None
    return m


__all__ = ["import_torch", "source_line"]
