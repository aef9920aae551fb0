"""ONNX front end: an onnx.ModelProto -> a moec Module.

Converters are registered per ONNX op type with :func:`converter`; each takes
the :class:`ImportContext`, the node, its input Values (None for omitted
optional inputs) and its attributes as Python values, and returns the output
Values.  Converter modules live beside this one (``onnx_ops_*.py``) and are all
imported by :func:`import_model`.

Shape tensors: exporters compute shapes at run time (Shape -> Gather ->
Concat -> Reshape).  The context keeps, for 1-D integer values derived from
shapes, their *symbolic content* (a list of int | symbol | None) so Reshape,
Expand and friends can give exact symbolic result types even though the
values are computed at run time.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from moec.errors import UnsupportedError, UserInputError, show_name
from moec.ir import DType, Function, Module, TensorType, Value
from moec.ir.core import IRError, ResourceRef
from moec.ir.limits import shape_problem
from moec.ir.opdef import OPS

# Inline constants up to this many elements; larger ones go to the weight store.
INLINE_LIMIT = 64
MIN_OPSET, MAX_OPSET = 1, 28
# The converters implement each op as specified up to this opset.  A model at a newer opset is
# accepted as long as none of its ops changed after it (checked per op against onnx's schemas).
IMPLEMENTED_OPSET = 25
# Ops whose newer versions only add element types (or, for Range, an attribute we handle; for
# Mod, floored float remainders, which moec.mod implements).
IMPLEMENTED_VERSIONS = {"Cast": 28, "OneHot": 28, "Einsum": 28, "Range": 27, "Mod": 28}

ConverterFn = Callable[["ImportContext", object, List[Optional[Value]], Dict], List[Value]]
_CONVERTERS: Dict[Tuple[str, str], List[Tuple[int, ConverterFn]]] = {}


def converter(op_type: str, since: int = 1, domain: str = ""):
    """Register ``fn`` for ONNX ``op_type`` from opset ``since`` on."""

    def wrap(fn):
        lst = _CONVERTERS.setdefault((domain, op_type), [])
        lst.append((since, fn))
        lst.sort(key=lambda x: x[0])
        return fn

    return wrap


def supported_ops(domain: str = "") -> List[str]:
    _load_converters()
    return sorted(op for (d, op) in _CONVERTERS if d == domain)


_loaded = False


def _check_op_version(ctx: "ImportContext", op_type: str) -> None:
    import onnx.defs
    try:
        now = onnx.defs.get_schema(op_type, ctx.opset).since_version
        known = IMPLEMENTED_VERSIONS.get(op_type) or onnx.defs.get_schema(op_type, IMPLEMENTED_OPSET).since_version
    except Exception:
        return
    if now > known:
        raise ctx.unsupported(f"op '{show_name(op_type)}' changed at opset {now}; moec implements it as of opset "
                              f"{IMPLEMENTED_OPSET} (version {known}); convert the model to opset "
                              f"{IMPLEMENTED_OPSET} with onnx.version_converter")


def _load_converters():
    global _loaded
    if _loaded:
        return
    pkg = importlib.import_module(__package__)
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name.startswith("onnx_ops"):
            importlib.import_module(f"{__package__}.{m.name}")
    _loaded = True


_ONNX_TO_DTYPE = {
    1: DType.F32, 2: DType.U8, 3: DType.I8, 5: DType.I16, 6: DType.I32, 7: DType.I64, 9: DType.BOOL,
    10: DType.F16, 11: DType.F64, 16: DType.BF16, 22: DType.I4, 21: DType.U4,
}


def onnx_dtype(code: int, where: str = "") -> DType:
    try:
        return _ONNX_TO_DTYPE[code]
    except KeyError:
        import onnx
        name = onnx.TensorProto.DataType.Name(code) if code in onnx.TensorProto.DataType.values() else code
        raise UnsupportedError(f"{where}element type {name} is not supported "
                               f"(supported: float, double, float16, bfloat16, int64, int32, int16, int8, uint8, bool)")


def dtype_to_onnx(dt: DType) -> int:
    for k, v in _ONNX_TO_DTYPE.items():
        if v == dt:
            return k
    raise KeyError(dt)


class ImportContext:
    def __init__(self, model_name: str, opset: int, module: Module, func: Function):
        self.model_name = model_name
        self.opset = opset
        self.module = module
        self.func = func
        self.values: Dict[str, Value] = {}
        self.symbolic: Dict[int, List] = {}  # id(Value) -> symbolic content of a 1-D shape tensor
        self.node = None  # the node being converted
        self._sym_counter = 0

    # -- errors ----------------------------------------------------------------
    def where(self) -> str:
        n = self.node
        if n is None:
            return f"model '{show_name(self.model_name)}'"
        nm = n.name or "(unnamed)"
        return (f"model '{show_name(self.model_name)}', node '{show_name(nm)}' ({show_name(n.op_type)}, "
                f"opset {self.opset})")

    def unsupported(self, why: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where()}: {why}")

    def error(self, why: str) -> UserInputError:
        return UserInputError(f"{self.where()}: {why}")

    # -- building --------------------------------------------------------------
    @property
    def loc(self) -> Optional[str]:
        return (self.node.name or self.node.op_type) if self.node is not None else None

    def emit(self, op_name: str, operands: Sequence[Value], attrs: Optional[Dict] = None,
             result_types: Optional[Sequence[TensorType]] = None) -> List[Value]:
        """Append an op to the function and return its results."""
        cls = OPS[op_name]
        try:
            o = cls.create(list(operands), attrs or {}, self.loc, result_types)
            if result_types is not None:
                o.verify()
        except IRError as e:
            raise self.error(str(e)) from None
        folded = self._fold(o)
        if folded is not None:
            return folded
        self.func.add(o)
        return o.results

    # as passes/fold_constants.py's "small" folds (which canonicalize would do first anyway)
    FOLD_MAX_ELEMENTS, FOLD_MAX_OPERAND = 4096, 1 << 22

    def _fold(self, o) -> Optional[List[Value]]:
        """Constants for a small pure op of constants, evaluated now (reference semantics) instead of by
        fold-constants later: the values then reach the next op's type inference during import, so a model
        whose constants do not fit its graph (an Expand to a shape cast from weights that does not
        broadcast) is refused here with exit 2, instead of failing IR verification after a pass (exit 3)."""
        from moec.ir.opdef import has_trait
        if o.name == "moec.constant" or not o.operands or not has_trait(o, "pure"):
            return None
        vals = [self.const_value(v) for v in o.operands]
        if any(v is None or np.size(v) > self.FOLD_MAX_OPERAND for v in vals):
            return None
        if not all(r.type.is_static for r in o.results) or \
                sum(r.type.numel() for r in o.results) > self.FOLD_MAX_ELEMENTS:
            return None
        try:
            outs = [np.asarray(x, order="C") for x in o.reference(*vals)]
        except Exception:  # noqa: BLE001 - left for run time (and fold-constants), as before
            return None
        if len(outs) != len(o.results) or any(x.shape != tuple(r.type.shape) or x.dtype != r.type.dtype.np
                                                for x, r in zip(outs, o.results)):
            return None
        return [self.const(x) for x in outs]

    def emit1(self, op_name: str, operands: Sequence[Value], attrs: Optional[Dict] = None,
              result_type: Optional[TensorType] = None) -> Value:
        return self.emit(op_name, operands, attrs, None if result_type is None else [result_type])[0]

    def const(self, array, hint: str = "const") -> Value:
        """A constant Value: small arrays inline, large ones in the weight store."""
        a = np.asarray(array)
        if a.dtype == np.dtype(object):
            raise self.error("string tensors are not supported")
        try:
            dt = DType.from_np(a.dtype)
        except TypeError:  # float8/float4/int2 and other element types onnx reads but moec has no type for
            raise UnsupportedError(f"{self.where()}: constant '{_shown(hint)}' has element type {a.dtype}, which "
                                   "moec does not support") from None
        if a.size <= INLINE_LIMIT:
            return self.emit1("moec.constant", [], {"value": np.asarray(a, order="C")})
        key = self.module.weights.add(a, hint)
        return self.emit1("moec.constant", [], {"value": ResourceRef(key)}, TensorType(dt, a.shape))

    def const_value(self, v: Optional[Value]) -> Optional[np.ndarray]:
        """The array of ``v`` if it is a constant, else None."""
        if v is None or v.owner is None or v.owner.name != "moec.constant":
            return None
        val = v.owner.attrs["value"]
        if isinstance(val, ResourceRef):
            return np.asarray(self.module.weights[val.key])
        return val

    def require_const(self, v: Optional[Value], what: str) -> np.ndarray:
        a = self.const_value(v)
        if a is None:
            raise self.unsupported(f"{what} must be a constant (initializer or Constant node)")
        return a

    def symbolic_content(self, v: Optional[Value]) -> Optional[List]:
        """Symbolic content of a 1-D int shape tensor (constants included), or None."""
        if v is None:
            return None
        c = self.const_value(v)
        if c is not None:
            if c.ndim <= 1 and c.dtype.kind in "iu":
                return [int(x) for x in c.reshape(-1)]
            return None
        return self.symbolic.get(id(v))

    def set_symbolic(self, v: Value, content: Optional[List]) -> None:
        if content is not None:
            self.symbolic[id(v)] = list(content)

    def fresh_symbol(self, hint: str = "d") -> str:
        self._sym_counter += 1
        return f"{hint}{self._sym_counter}"


def _attr_value(a, ctx: ImportContext):
    import onnx
    from onnx import numpy_helper
    t = a.type
    A = onnx.AttributeProto
    if t == A.FLOAT:
        return float(a.f)
    if t == A.INT:
        return int(a.i)
    if t in (A.STRING, A.STRINGS):
        try:
            return a.s.decode("utf-8") if t == A.STRING else [s.decode("utf-8") for s in a.strings]
        except UnicodeDecodeError:
            raise ctx.error(f"attribute '{_shown(a.name)}' holds bytes that are not UTF-8 text") from None
    if t == A.FLOATS:
        return [float(x) for x in a.floats]
    if t == A.INTS:
        return [int(x) for x in a.ints]
    if t == A.TENSOR:
        try:
            return numpy_helper.to_array(a.t)
        except Exception as e:  # noqa: BLE001 - a malformed tensor (size, element type) is the model's fault
            raise ctx.error(f"attribute '{_shown(a.name)}': cannot read its tensor ({_shown(e, 200)})") from None
    raise ctx.unsupported(f"attribute '{show_name(a.name)}' of kind {A.AttributeType.Name(t)} is not supported")


def _value_type(vi, where: str, sym_hint: str, symbols: "SymbolNames") -> TensorType:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise UnsupportedError(f"{where}: only tensor inputs/outputs are supported")
    dt = onnx_dtype(tt.elem_type, f"{where}: ")
    if not tt.HasField("shape"):
        raise UnsupportedError(f"{where}: the input has no shape (rank unknown); give it a shape in the model")
    dims = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise UserInputError(f"{where}: dimension {i} is negative ({d.dim_value})")
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(symbols.param(d.dim_param))
        else:
            dims.append(symbols.fresh(f"{sym_hint}_d{i}"))
    bad = shape_problem(dims)
    if bad:
        raise UserInputError(f"{where}: {bad}")
    return TensorType(dt, tuple(dims))


def _sanitize_symbol(s: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", s)
    if not re.match(r"[A-Za-z_]", s):
        s = "s_" + s
    return s


class SymbolNames:
    """ONNX dim_params -> IR symbols, injectively.

    A dim_param is sanitised to an identifier (``T-1`` -> ``T_1``); when that identifier already
    names another dim_param (``T_1``) or a generated symbol, a suffix ``_2``, ``_3``, ... makes it
    unique.  The same dim_param always maps to the same symbol; two different ones never do.
    ``reserve`` first claims every dim_param's own sanitised name, so generated names (dims with
    neither a value nor a param) and renamed collisions yield to the names the model wrote."""

    def __init__(self):
        self.of: Dict[str, str] = {}
        self.used: set = set()
        self._next: Dict[str, int] = {}  # per base name: the next suffix to try (no quadratic search)

    def reserve(self, raws) -> None:
        for raw in raws:
            s = _sanitize_symbol(raw)
            if s == raw:
                self.param(raw)
        for raw in raws:
            self.param(raw)

    def param(self, raw: str) -> str:
        if raw not in self.of:
            self.of[raw] = self.fresh(_sanitize_symbol(raw))
        return self.of[raw]

    def fresh(self, base: str) -> str:
        base = _sanitize_symbol(base)
        s, k = base, self._next.get(base, 1)
        while s in self.used:
            k += 1
            s = f"{base}_{k}"
        self._next[base] = k
        self.used.add(s)
        return s


# Loading and checking a model (external data read by moec, contained to the model's folder): onnx_load.py
from moec.frontend.onnx_load import _shown, check_model_proto, check_structure as _check_structure, load_onnx  # noqa: E402,F401


def import_model(model, name: Optional[str] = None) -> Module:
    """Convert an onnx.ModelProto into a moec Module (one function, ``@main``)."""
    from onnx import numpy_helper
    _load_converters()
    name = name or (model.graph.name or "model")
    _check_structure(model, f"model '{_shown(name)}'")  # cheap; the onnx checker ran in load_onnx/load_model_proto
    opset = None
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    if opset is None:
        raise UserInputError(f"model '{show_name(name)}' has no default-domain opset import")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedError(f"model '{show_name(name)}' uses opset {opset}; moec supports opsets "
                               f"{MIN_OPSET} to {MAX_OPSET} (convert it with onnx.version_converter)")
    g = model.graph
    init_names = {t.name for t in g.initializer}
    args, arg_names = [], []
    symbols = SymbolNames()
    symbols.reserve([d.dim_param for vi in g.input if vi.name not in init_names
                     for d in vi.type.tensor_type.shape.dim if d.HasField("dim_param") and d.dim_param])
    for vi in g.input:
        if vi.name in init_names:
            continue  # an initializer listed as input (IR version < 4): a constant
        t = _value_type(vi, f"model '{show_name(name)}', input '{show_name(vi.name)}'", _sanitize_symbol(vi.name),
                        symbols)
        args.append(Value(t, _sanitize_symbol(vi.name)))
        arg_names.append(vi.name)
    m = Module()
    m.attrs["moec.source"] = name
    m.attrs["moec.opset"] = opset
    f = Function("main", args, arg_names)
    m.functions.append(f)
    ctx = ImportContext(name, opset, m, f)
    for a, n in zip(args, arg_names):
        ctx.values[n] = a
    for t in g.initializer:
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise UserInputError(f"model '{show_name(name)}': cannot read initializer '{show_name(t.name)}': "
                                 f"{e}") from None
        if arr.dtype == np.dtype(object):
            raise UnsupportedError(f"model '{show_name(name)}': initializer '{show_name(t.name)}' is a string "
                                   "tensor (unsupported)")
        ctx.values[t.name] = ctx.const(arr, hint=t.name)
        ctx.values[t.name].name = _sanitize_symbol(t.name)
    for node in g.node:
        _convert_node(ctx, node)
    for vi in g.output:
        if vi.name not in ctx.values:
            raise UserInputError(f"model '{show_name(name)}': graph output '{show_name(vi.name)}' is not produced by any node")
        f.outputs.append(ctx.values[vi.name])
        f.output_names.append(vi.name)
    return m


def _convert_node(ctx: ImportContext, node) -> None:
    ctx.node = node
    domain = node.domain if node.domain not in ("ai.onnx",) else ""
    key = (domain, node.op_type)
    if key not in _CONVERTERS:
        dom = f" (domain '{show_name(domain)}')" if domain else ""
        raise ctx.unsupported(
            f"op '{show_name(node.op_type)}'{dom} is not supported. Supported ONNX ops: {', '.join(supported_ops())}"
            + (f"; com.microsoft: {', '.join(supported_ops('com.microsoft'))}" if supported_ops('com.microsoft') else ""))
    fn = None
    for since, f in _CONVERTERS[key]:
        if since <= ctx.opset or domain:
            fn = f
    if fn is None:
        raise ctx.unsupported(f"op '{show_name(node.op_type)}' at opset {ctx.opset} is not supported "
                              f"(supported from opset {_CONVERTERS[key][0][0]})")
    if not domain and ctx.opset > IMPLEMENTED_OPSET:
        _check_op_version(ctx, node.op_type)
    inputs: List[Optional[Value]] = []
    for i, n in enumerate(node.input):
        if n == "":
            inputs.append(None)
            continue
        if n not in ctx.values:
            raise ctx.error(f"input #{i} '{show_name(n)}' is not defined before this node (graph not topologically sorted?)")
        inputs.append(ctx.values[n])
    attrs = {a.name: _attr_value(a, ctx) for a in node.attribute}
    outs = fn(ctx, node, inputs, attrs)
    outs = list(outs)
    for i, n in enumerate(node.output):
        if n == "":
            continue
        if i >= len(outs) or outs[i] is None:
            raise ctx.unsupported(f"output #{i} '{show_name(n)}' is not produced by moec's conversion of "
                                  f"{show_name(node.op_type)}")
        v = outs[i]
        bad = shape_problem(v.type.shape) if v.type is not None and hasattr(v.type, "shape") else None
        if bad:  # e.g. ConstantOfShape [0, INT64_MAX]: refused where it enters, not at verification
            raise ctx.error(f"output #{i} '{show_name(n)}': {bad}")
        if v.name is None or v.owner is not None and v.owner.loc == ctx.loc:
            v.name = _sanitize_symbol(n)
        ctx.values[n] = v
    _propagate_symbolic(ctx, node, inputs, outs)
    ctx.node = None


# -- symbolic content of shape tensors ------------------------------------------
# Data-movement ops on shape tensors (Shape -> Gather -> Concat -> Reshape) keep
# the symbolic dims they carry.  We evaluate the node with onnx's reference
# implementation on int64 stand-ins: each symbol (or unknown dim) becomes a
# sentinel value no real dimension has, and sentinels found in the result map
# back.  Only ops that move values (never do arithmetic on them) are used, so a
# sentinel can never turn into a wrong small number.
_MOVE_OPS = {"Gather", "Concat", "Slice", "Squeeze", "Unsqueeze", "Cast", "Identity", "Reshape", "Flatten",
             "Expand", "Tile", "Transpose"}
_SENTINEL = 2_000_000_000


def _propagate_symbolic(ctx: ImportContext, node, inputs, outs) -> None:
    if node.op_type not in _MOVE_OPS or not outs or outs[0] is None:
        return
    out = outs[0]
    if out.type.dtype not in (DType.I64, DType.I32) or out.type.rank > 1 or id(out) in ctx.symbolic:
        return
    if not out.type.is_static or out.type.numel() > 16:
        return
    codes: Dict = {}
    arrays = []
    any_symbolic = False
    for v in inputs:
        if v is None:
            arrays.append(None)
            continue
        c = ctx.const_value(v)
        if c is not None:
            arrays.append(c)
            continue
        content = ctx.symbolic.get(id(v))
        if content is None:
            # a computed shape element (e.g. batch * seq) is an unknown dim: the ones moved next to
            # it stay known (Concat([batch * seq], [32]) is [?, 32])
            if v.type.dtype not in (DType.I64, DType.I32) or v.type.rank > 1 or not v.type.is_static \
                    or v.type.numel() > 16:
                return
            content = [None] * v.type.numel()
        any_symbolic = True
        enc = []
        for d in content:
            if isinstance(d, int):
                enc.append(d)
            else:
                key = d if d is not None else ("?", len(codes))
                codes.setdefault(key, _SENTINEL + len(codes))
                enc.append(codes[key])
        arrays.append(np.asarray(enc, dtype=v.type.dtype.np).reshape(v.type.shape if v.type.is_static else (-1,)))
    if not any_symbolic:
        return
    try:
        from onnx import helper
        from onnx.reference import ReferenceEvaluator
        names = [f"i{k}" if a is not None else "" for k, a in enumerate(arrays)]
        n2 = helper.make_node(node.op_type, names, ["o"], **{a.name: helper.get_attribute_value(a)
                                                            for a in node.attribute})
        feeds = {nm: a for nm, a in zip(names, arrays) if nm}
        res = np.asarray(ReferenceEvaluator(n2).run(None, feeds)[0])
    except Exception:
        return
    decode = {code: (None if isinstance(k, tuple) else k) for k, code in codes.items()}
    content = []
    for x in res.reshape(-1).tolist():
        x = int(x)
        if x in decode:
            content.append(decode[x])
        elif abs(x) < _SENTINEL // 2:
            content.append(x)
        else:
            content.append(None)
    ctx.set_symbolic(out, content)
