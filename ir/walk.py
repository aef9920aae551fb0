"""The one IR walker: runs ops in order over an environment of values (id(Value) -> value).

Everything in moec that executes IR is this loop with a hook of its own:

* the reference interpreter (ir/interpreter.py): numpy arrays, a hook that refuses oversized results,
  every result checked against its declared type;
* the recognition passes' probes (passes/moe_util.evaluate): the backward slice of a few values, a hook
  that widens half precision and feeds shapes without data;
* the SPMD reference (ir/spmd.py): a hook that pauses at collectives (``PAUSE``: :func:`steps` yields
  the op and its operands and resumes with the results it is sent);
* the Triton launcher's host segments (codegen/triton/runtime.py): the ops without a Triton kernel,
  run on the host between kernel launches;
* the Ascend planner (targets/ascend_backend.py): a hook that lowers each op to kernel launches.

A hook is ``hook(op, inputs) -> outputs | None | PAUSE``; None falls back to the op's reference semantics
(:func:`reference`).  The walker owns what every executor needs the same way: operands looked up (an
operand used before it is defined is an error naming the op), a constant's value (the module's weight
store for a resource), the result count checked, results stored.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from moec.ir.core import IRError, Operation, ResourceRef, Value


class WalkError(IRError):
    """An op could not be run (its semantics rejected the inputs, a weight is missing, ...): names the op."""


PAUSE = object()  # a hook's answer: hand the op to whoever drives :func:`steps`

Hook = Callable[[Operation, List[Any]], Any]
Check = Callable[[Operation, int, Any, Any], None]


def reference(o: Operation, ins: Sequence, weights: Optional[Mapping] = None, wrap: bool = False) -> list:
    """One op by its reference semantics: a constant's value (a resource from ``weights``), else
    ``o.reference(*ins)``.  ``wrap``: an exception of the semantics becomes a WalkError naming the op."""
    if o.name == "moec.constant":
        val = o.attrs["value"]
        if not isinstance(val, ResourceRef):
            return [val]
        if weights is None or val.key not in weights:
            raise WalkError(f"op {o.describe()}: weight '{val.key}' is not in the module's weight store")
        import numpy as np
        return [np.asarray(weights[val.key])]
    if not wrap:
        return o.reference(*ins)
    try:
        return o.reference(*ins)
    except IRError:
        raise
    except Exception as e:  # an op's semantics rejected its inputs
        raise WalkError(f"op {o.describe()} failed: {type(e).__name__}: {e}") from e


def steps(ops: Iterable[Operation], env: Dict[int, Any], hook: Optional[Hook] = None, *,
          weights: Optional[Mapping] = None, check: Optional[Check] = None, wrap: bool = False):
    """A generator running ``ops`` over ``env`` (filled in place).  Where ``hook`` answers PAUSE it yields
    ``(op, inputs)`` and takes the op's results from ``send``; it returns ``env``.  ``check(op, i, value,
    declared type)`` sees every result before it is stored."""
    for o in ops:
        try:
            ins = [env[id(v)] for v in o.operands]
        except KeyError:
            raise WalkError(f"op {o.describe()}: an operand is used before it is defined") from None
        outs = hook(o, ins) if hook is not None else None
        if outs is PAUSE:
            outs = yield o, ins
        elif outs is None:
            outs = reference(o, ins, weights, wrap)
        if len(outs) != len(o.results):
            raise WalkError(f"op {o.describe()}: gave {len(outs)} results, declared {len(o.results)}")
        for i, (r, a) in enumerate(zip(o.results, outs)):
            if check is not None:
                check(o, i, a, r.type)
            env[id(r)] = a
    return env


def walk(ops: Iterable[Operation], env: Dict[int, Any], hook: Optional[Hook] = None, **kw) -> Dict[int, Any]:
    """Run ``ops`` over ``env`` to the end (see :func:`steps`; a hook here may not PAUSE)."""
    g = steps(ops, env, hook, **kw)
    try:
        o, _ = next(g)
    except StopIteration as s:
        return s.value
    g.close()
    raise WalkError(f"op {o.describe()} paused a walk that nothing drives")


def needed_ops(ops: Sequence[Operation], targets: Sequence[Value], known) -> List[Operation]:
    """The ops of ``ops`` that compute ``targets`` from the values in ``known`` (a container of ids): the
    backward slice, in order; a known value stops the walk up.  KeyError when a function argument (a value
    no op defines) is needed but not known."""
    needed = set()
    stack = list(targets)
    while stack:
        v = stack.pop()
        if id(v) in known or id(v) in needed:
            continue
        needed.add(id(v))
        if v.owner is None:
            raise KeyError(f"argument {v.name} is needed but not fed")
        stack.extend(v.owner.operands)
    return [o for o in ops if any(id(r) in needed and id(r) not in known for r in o.results)]


def run_values(ops: Sequence[Operation], args: Sequence[Value], outputs: Sequence[Value], inputs: Sequence,
               hook: Optional[Hook] = None, **kw) -> list:
    """``outputs`` of ``ops`` given values of ``args`` (a function, or a segment of one)."""
    env: Dict[int, Any] = {id(a): x for a, x in zip(args, inputs)}
    walk(ops, env, hook, **kw)
    try:
        return [env[id(v)] for v in outputs]
    except KeyError:
        raise WalkError("an output is not defined by the ops walked") from None
