"""Module verifier: SSA order, per-op declarations, weight references."""
from __future__ import annotations

from moec.ir.core import IRError, Module, ResourceRef
from moec.ir.opdef import types_compatible
from moec.ir.types import DType, TensorType


def verify_module(m: Module) -> None:
    """Raise IRError, naming the function and op, on the first problem found."""
    for f in m.functions:
        defined = {id(a) for a in f.args}
        for o in f.ops:
            for i, v in enumerate(o.operands):
                if id(v) not in defined:
                    raise IRError(f"@{f.name}: op {o.describe()} operand #{i} ({v.name or 'unnamed'}) "
                                  "is used before it is defined")
            try:
                o.verify()
            except IRError as e:
                raise IRError(f"@{f.name}: {e}") from None
            except Exception as e:  # an op's verifier tripped over a malformed operand or attribute
                raise IRError(f"@{f.name}: op {o.describe()}: {type(e).__name__}: {e}") from None
            if o.name == "moec.constant" and isinstance(o.attrs["value"], ResourceRef):
                key = o.attrs["value"].key
                if key not in m.weights:
                    raise IRError(f"@{f.name}: op {o.describe()} references missing weight '{key}'")
                a = m.weights[key]
                t = TensorType(DType.from_np(a.dtype), a.shape)
                if not types_compatible(o.results[0].type, t) or not o.results[0].type.is_static:
                    raise IRError(f"@{f.name}: op {o.describe()} declares {o.results[0].type} "
                                  f"but weight '{key}' is {t}")
            for r in o.results:
                defined.add(id(r))
        for i, v in enumerate(f.outputs):
            if id(v) not in defined:
                raise IRError(f"@{f.name}: output #{i} is not defined in the function")
        if f.output_names and len(f.output_names) != len(f.outputs):
            raise IRError(f"@{f.name}: {len(f.outputs)} outputs but {len(f.output_names)} output names")
