"""Reference interpreter: runs a module on numpy arrays with each op's reference semantics (the IR
walker of ir/walk.py with no hook of its own but a size bound).

It checks as it goes that every result has the element type and rank its op
declares and that symbolic dimensions bind consistently, so it is also a
dynamic verifier of the passes.
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from moec.ir.core import Function, Module, ResourceRef
from moec.ir.types import DType
from moec.ir.walk import WalkError, walk


InterpreterError = WalkError  # (the name moec.ir exports)


def _check(o, i, arr, t, bindings):
    if not isinstance(arr, np.ndarray):
        raise InterpreterError(f"op {o.describe()}: reference result #{i} is not an array")
    try:
        dt = DType.from_np(arr.dtype).mlir
    except TypeError:
        dt = str(arr.dtype)
    if dt != t.dtype.mlir:
        raise InterpreterError(f"op {o.describe()}: result #{i} has element type {dt}, declared {t.dtype.mlir}")
    if not t.matches(arr.shape, bindings):
        raise InterpreterError(f"op {o.describe()}: result #{i} has shape {arr.shape}, declared {t} "
                               f"(symbols bound so far: {bindings})")


def max_result_bytes() -> int:
    """The largest result one op may produce (env ``MOEC_INTERP_MAX_BYTES``, default 8 GiB)."""
    try:
        return int(os.environ.get("MOEC_INTERP_MAX_BYTES", 8 << 30))
    except ValueError:
        return 8 << 30


def _bytes_bound(t, bindings) -> Optional[int]:
    """Bytes of a result of type ``t`` when every dimension is known (static or bound), else None."""
    n = t.dtype.itemsize
    for d in t.shape:
        d = bindings.get(d) if isinstance(d, str) else d
        if d is None:
            return None
        n *= d
    return n


def _check_size(o, bindings, limit):
    """Refuse, before it runs, an op whose declared or inferred result is larger than ``limit`` bytes
    (hostile IR text must not make the interpreter allocate without bound)."""
    types = [r.type for r in o.results]
    try:
        types += o.infer_types()
    except Exception:  # the op's own semantics will report it
        pass
    for t in types:
        n = _bytes_bound(t, bindings)
        if n is not None and n > limit:
            raise InterpreterError(f"op {o.describe()}: result {t} would take {n} bytes, more than the "
                                   f"interpreter's limit of {limit} (MOEC_INTERP_MAX_BYTES)")


def run_function(m: Module, f: Function, inputs: Sequence[np.ndarray], check: bool = True) -> List[np.ndarray]:
    """``f``'s outputs for ``inputs``: the IR walker (ir/walk.py) with every op's reference semantics, each
    op's result size bounded before it runs and (``check``) every value checked against its declared type."""
    if len(inputs) != len(f.args):
        raise InterpreterError(f"@{f.name} takes {len(f.args)} inputs, got {len(inputs)}")
    env: Dict[int, np.ndarray] = {}
    bindings: Dict[str, int] = {}
    limit = max_result_bytes()
    for a, x, n in zip(f.args, inputs, f.arg_names):
        x = np.asarray(x)
        if check:
            try:
                dt = DType.from_np(x.dtype)
            except TypeError:
                dt = None
            if dt != a.type.dtype or not a.type.matches(x.shape, bindings):
                raise InterpreterError(f"input '{n}' has {x.dtype}{list(x.shape)}, expected {a.type}")
        env[id(a)] = x

    def bounded(o, ins):  # refuse an oversized result before it is made; the semantics are the walker's default
        if not (o.name == "moec.constant" and isinstance(o.attrs.get("value"), ResourceRef)):
            _check_size(o, bindings, limit)
        return None

    walk(f.ops, env, bounded, weights=m.weights, wrap=True,
         check=(lambda o, i, arr, t: _check(o, i, arr, t, bindings)) if check else None)
    if any(id(v) not in env for v in f.outputs):
        raise InterpreterError(f"@{f.name}: an output is not defined in the function")
    return [env[id(v)] for v in f.outputs]


def run(m: Module, inputs: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]],
        func: Optional[str] = None, check: bool = True) -> Dict[str, np.ndarray]:
    """Run ``m`` (its main function) and return outputs by name."""
    f = m.main if func is None else next((x for x in m.functions if x.name == func), None)
    if f is None:
        raise InterpreterError(f"module has no function @{func}")
    if isinstance(inputs, Mapping):
        missing = [n for n in f.arg_names if n not in inputs]
        if missing:
            raise InterpreterError(f"missing inputs: {', '.join(missing)}")
        seq = [inputs[n] for n in f.arg_names]
    else:
        seq = list(inputs)
    outs = run_function(m, f, seq, check)
    names = f.output_names or [f"out{i}" for i in range(len(outs))]
    return dict(zip(names, outs))
