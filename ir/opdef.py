"""Declaring ops: one class per op, its operands, attributes, types and semantics.

Example::

    @op("moec.add", operands=("lhs", "rhs"), traits=("elementwise",))
    class AddOp(BinaryOp):
        '''lhs + rhs with numpy broadcasting.'''
        fn = staticmethod(np.add)

Operand names ending in ``?`` are optional (only trailing ones), a name
ending in ``*`` is variadic (zero or more, last).  ``results`` gives the
result count (``None``: decided by :meth:`Operation.infer_types`).  Attribute
specs say the kind of each attribute and its default; :meth:`OpClass.build`
fills defaults and infers result types, which is how front ends and passes
create ops.  The default verifier checks operand count, attribute kinds and
that the declared result types agree with the inferred ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Type

import numpy as np

from moec.ir.core import IRError, Operation, ResourceRef, Value
from moec.ir.types import DType, TensorType

REQUIRED = object()

ATTR_KINDS = ("int", "float", "str", "bool", "ints", "floats", "strs", "dtype", "tensor")


@dataclass
class Attr:
    kind: str
    default: Any = REQUIRED
    choices: Optional[Tuple] = None
    doc: str = ""

    def check(self, op_name: str, key: str, v: Any) -> Any:
        """Validate and normalise an attribute value; raise IRError naming the op."""
        k = self.kind

        def bad(why=""):
            raise IRError(f"op '{op_name}': attribute '{key}' must be {k}{why}, got {v!r}")

        if k == "int":
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad()
            v = int(v)
        elif k == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                bad()
            v = float(v)
        elif k == "str":
            if not isinstance(v, str):
                bad()
        elif k == "bool":
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v in (0, 1):
                v = bool(v)
            if not isinstance(v, (bool, np.bool_)):
                bad()
            v = bool(v)
        elif k == "ints":
            if not isinstance(v, (list, tuple, np.ndarray)) or any(
                    isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in v):
                bad()
            v = tuple(int(x) for x in v)
        elif k == "floats":
            if not isinstance(v, (list, tuple, np.ndarray)):
                bad()
            v = tuple(float(x) for x in v)
        elif k == "strs":
            if not isinstance(v, (list, tuple)) or any(not isinstance(x, str) for x in v):
                bad()
            v = tuple(v)
        elif k == "dtype":
            if not isinstance(v, DType):
                bad()
        elif k == "tensor":
            if not isinstance(v, (np.ndarray, ResourceRef)):
                bad()
        else:  # pragma: no cover - declaration error
            raise AssertionError(f"unknown attribute kind {k}")
        if self.choices is not None and v not in self.choices:
            bad(f" (one of {', '.join(map(str, self.choices))})")
        return v


@dataclass
class OpSpec:
    name: str
    operands: Tuple[str, ...]
    results: Optional[int]
    attrs: Dict[str, Attr]
    traits: Tuple[str, ...] = ()

    @property
    def min_operands(self) -> int:
        return sum(1 for o in self.operands if not o.endswith(("?", "*")))

    @property
    def max_operands(self) -> Optional[int]:
        if any(o.endswith("*") for o in self.operands):
            return None
        return len(self.operands)


OPS: Dict[str, Type[Operation]] = {}


def op(name: str, operands: Sequence[str] = (), results: Optional[int] = 1,
       attrs: Optional[Dict[str, Attr]] = None, traits: Sequence[str] = ()):
    """Class decorator that declares and registers an op."""

    def wrap(cls):
        if name in OPS:
            raise AssertionError(f"op {name} declared twice")
        cls.name = name
        cls._spec = OpSpec(name, tuple(operands), results, dict(attrs or {}), tuple(traits))
        OPS[name] = cls
        return cls

    return wrap


def lookup(name: str) -> Type[Operation]:
    try:
        return OPS[name]
    except KeyError:
        raise IRError(f"unknown op '{name}'") from None


def has_trait(o: Operation, trait: str) -> bool:
    return o._spec is not None and trait in o._spec.traits


def normalise_attrs(cls, attrs: Dict[str, Any]) -> Dict[str, Any]:
    spec: OpSpec = cls._spec
    out = {}
    for key, a in attrs.items():
        if key not in spec.attrs:
            raise IRError(f"op '{spec.name}': unknown attribute '{key}' "
                          f"(known: {', '.join(spec.attrs) or 'none'})")
        if a is None and spec.attrs[key].default is None:
            continue
        out[key] = spec.attrs[key].check(spec.name, key, a)
    for key, a in spec.attrs.items():
        if key not in out:
            if a.default is REQUIRED:
                raise IRError(f"op '{spec.name}': missing required attribute '{key}'")
            if a.default is not None:
                out[key] = a.default
    return out


def build(cls, operands: Sequence[Value], attrs: Optional[Dict[str, Any]] = None,
          loc: Optional[str] = None, result_types: Optional[Sequence[TensorType]] = None) -> Operation:
    """Create an op of class ``cls``: fill default attributes, infer result types."""
    attrs = normalise_attrs(cls, attrs or {})
    o = cls.__new__(cls)
    Operation.__init__(o, operands, [], attrs, loc)
    check_operand_count(o)
    types = list(result_types) if result_types is not None else o.infer_types()
    o.results = [Value(t, None, o, i) for i, t in enumerate(types)]
    return o


def check_operand_count(o: Operation) -> None:
    spec: OpSpec = o._spec
    n = len(o.operands)
    hi = spec.max_operands
    if n < spec.min_operands or (hi is not None and n > hi):
        want = f"{spec.min_operands}" + ("+" if hi is None else ("" if hi == spec.min_operands else f"..{hi}"))
        raise IRError(f"op {o.describe()}: takes {want} operands ({', '.join(spec.operands)}), got {n}")


def types_compatible(declared: TensorType, inferred: TensorType) -> bool:
    if declared.dtype != inferred.dtype or declared.rank != inferred.rank:
        return False
    for d, i in zip(declared.shape, inferred.shape):
        if isinstance(d, int) and isinstance(i, int) and d != i:
            return False
    return True


def default_verify(o: Operation) -> None:
    spec: OpSpec = o._spec
    if spec is None:
        raise IRError(f"op '{o.name}' is not declared")
    check_operand_count(o)
    for key, a in spec.attrs.items():
        if key in o.attrs:
            a.check(spec.name, key, o.attrs[key])
        elif a.default is REQUIRED:
            raise IRError(f"op {o.describe()}: missing required attribute '{key}'")
    for key in o.attrs:
        if key not in spec.attrs:
            raise IRError(f"op {o.describe()}: unknown attribute '{key}'")
    if spec.results is not None and len(o.results) != spec.results:
        raise IRError(f"op {o.describe()}: has {len(o.results)} results, expected {spec.results}")
    try:
        inferred = o.infer_types()
    except IRError:
        raise
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise IRError(f"op {o.describe()}: {e}") from None
    if len(inferred) != len(o.results):
        raise IRError(f"op {o.describe()}: has {len(o.results)} results, its operands give {len(inferred)}")
    for i, (r, t) in enumerate(zip(o.results, inferred)):
        if not types_compatible(r.type, t):
            raise IRError(f"op {o.describe()}: result #{i} is declared {r.type} but its operands give {t}")


def operand_error(o: Operation, msg: str) -> IRError:
    return IRError(f"op {o.describe()}: {msg}")


def norm_axis(o: Operation, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise operand_error(o, f"axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def const_value(v: Value, weights=None) -> Optional[np.ndarray]:
    """The array of a value produced by ``moec.constant`` (None otherwise)."""
    o = v.owner
    if o is None or o.name != "moec.constant":
        return None
    val = o.attrs["value"]
    if isinstance(val, ResourceRef):
        return None if weights is None else weights[val.key]
    return val


Operation._build = staticmethod(build)
Operation._default_verify = staticmethod(default_verify)
