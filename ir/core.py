"""The data model of the moec IR: SSA values, operations, functions, modules.

A module holds functions and a :class:`~moec.ir.weights.WeightStore`; large
constants live in the store and are referenced by name from ``moec.constant``
ops (printed as MLIR ``dense_resource``), so the text form stays small.

Every operation class declares, in one place (see :mod:`moec.ir.opdef`), its
operands, results, attributes, type inference / verifier and numpy reference
semantics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from moec.ir.types import TensorType


class IRError(Exception):
    """Ill-formed IR.  The message names the op (and function) at fault."""


class Value:
    """An SSA value: a function argument or an op result."""

    __slots__ = ("type", "name", "owner", "index")

    def __init__(self, type: TensorType, name: Optional[str] = None, owner=None, index: int = 0):
        self.type = type
        self.name = name  # a hint for the printer; not semantics
        self.owner = owner  # the Operation, or None for a function argument
        self.index = index

    def __repr__(self) -> str:
        return f"Value({self.name}: {self.type})"


@dataclass(frozen=True)
class ResourceRef:
    """A reference to a tensor in the module's weight store."""

    key: str


class Operation:
    """Base class of all ops.  Subclasses are declared with :func:`moec.ir.opdef.op`."""

    name: str = "<abstract>"
    # filled by the @op decorator
    _spec = None

    def __init__(self, operands: Sequence[Value], result_types: Sequence[TensorType],
                 attrs: Optional[Dict[str, Any]] = None, loc: Optional[str] = None):
        self.operands: List[Value] = list(operands)
        self.results: List[Value] = [Value(t, None, self, i) for i, t in enumerate(result_types)]
        self.attrs: Dict[str, Any] = dict(attrs or {})
        self.loc = loc  # where it came from (ONNX node name, FX node)

    @classmethod
    def create(cls, operands: Sequence[Value] = (), attrs: Optional[Dict[str, Any]] = None,
               loc: Optional[str] = None, result_types: Optional[Sequence[TensorType]] = None):
        """Build an op: default attributes filled, result types inferred (or given)."""
        return Operation._build(cls, operands, attrs, loc, result_types)

    # -- convenience -------------------------------------------------------
    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise IRError(f"'{self.name}' has {len(self.results)} results, not one")
        return self.results[0]

    def attr(self, key: str):
        return self.attrs[key]

    def describe(self) -> str:
        # names from the model/IR text: escaped for one-line messages (moec.errors.show_name)
        from moec.errors import show_name
        where = f" (from {show_name(self.loc)})" if self.loc else ""
        return f"'{show_name(self.name)}'{where}"

    def __repr__(self) -> str:
        return f"<{self.name} {self.loc or ''}>"

    # -- the op's declaration hooks (overridden by op classes) ---------------
    def infer_types(self) -> List[TensorType]:
        """Result types computed from the operand types and the attributes."""
        raise NotImplementedError(self.name)

    def verify(self) -> None:
        """Raise IRError naming this op if it is ill-formed."""
        Operation._default_verify(self)

    # how ops are built and checked by default: installed by opdef.py, the op-definition layer built on
    # this module (so that this module does not import it back)
    _build = None
    _default_verify = None

    def reference(self, *inputs: np.ndarray) -> List[np.ndarray]:
        """Numpy reference semantics."""
        raise NotImplementedError(self.name)


class Function:
    def __init__(self, name: str, args: Sequence[Value], arg_names: Sequence[str] = ()):
        self.name = name
        self.args: List[Value] = list(args)
        # names of the graph inputs/outputs as the user knows them (ONNX names)
        self.arg_names: List[str] = list(arg_names) or [a.name or f"arg{i}" for i, a in enumerate(args)]
        self.ops: List[Operation] = []
        self.outputs: List[Value] = []
        self.output_names: List[str] = []

    def add(self, op: Operation) -> Operation:
        self.ops.append(op)
        return op

    def walk(self) -> Iterator[Operation]:
        return iter(list(self.ops))

    def uses(self) -> Dict[int, List[Operation]]:
        """id(value) -> ops using it (outputs are not counted)."""
        u: Dict[int, List[Operation]] = {}
        for o in self.ops:
            for v in o.operands:
                u.setdefault(id(v), []).append(o)
        return u

    def replace_all_uses(self, old: Value, new: Value) -> None:
        for o in self.ops:
            o.operands = [new if v is old else v for v in o.operands]
        self.outputs = [new if v is old else v for v in self.outputs]


class Module:
    def __init__(self, weights=None, attrs: Optional[Dict[str, Any]] = None):
        from moec.ir.weights import WeightStore
        self.functions: List[Function] = []
        self.weights = weights if weights is not None else WeightStore()
        self.attrs: Dict[str, Any] = dict(attrs or {})

    @property
    def main(self) -> Function:
        for f in self.functions:
            if f.name == "main":
                return f
        if not self.functions:
            raise IRError("module has no functions")
        return self.functions[0]

    def ops(self) -> Iterable[Operation]:
        for f in self.functions:
            yield from f.ops
