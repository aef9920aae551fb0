"""The SPMD reference: N rank programs (one module per rank) run together in one process, in lockstep.

Each rank runs its main function op by op with the reference semantics (moec.ir.interpreter); at a
collective op (trait ``collective``, ir/ops/ep.py) every rank must have reached its matching collective
(the same op, the n-th collective of each program); their operands are handed together to
``reference_collective``.  This is the test oracle of expert parallelism: the multi-process run with
torch.distributed must give what this gives.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from moec.ir.core import Module
from moec.ir.interpreter import InterpreterError, _check
from moec.ir.opdef import has_trait
from moec.ir.walk import PAUSE, steps


def _rank_steps(m: Module, inputs: Sequence[np.ndarray]):
    """A generator running ``m.main``: yields (op, operands) at each collective, receives its results."""
    f = m.main
    if len(inputs) != len(f.args):
        raise InterpreterError(f"@{f.name} takes {len(f.args)} inputs, got {len(inputs)}")
    env: Dict[int, np.ndarray] = {id(a): np.asarray(x) for a, x in zip(f.args, inputs)}
    bindings: Dict[str, int] = {}
    for a, x, n in zip(f.args, inputs, f.arg_names):
        if not a.type.matches(np.asarray(x).shape, bindings):
            raise InterpreterError(f"input '{n}' has shape {np.asarray(x).shape}, expected {a.type}")
    # the IR walker (ir/walk.py), pausing at each collective: the caller sends back its results
    yield from steps(f.ops, env, lambda o, args: PAUSE if has_trait(o, "collective") else None,
                     weights=m.weights, wrap=True, check=lambda o, i, arr, t: _check(o, i, arr, t, bindings))
    return [env[id(v)] for v in f.outputs]


def run_ranks(modules: Sequence[Module], inputs: Sequence[Sequence[np.ndarray]]) -> List[List[np.ndarray]]:
    """Run rank r's module on ``inputs[r]`` for every r together; return each rank's outputs."""
    W = len(modules)
    gens = [_rank_steps(m, x) for m, x in zip(modules, inputs)]
    results: List = [None] * W
    pending = [None] * W
    for r, g in enumerate(gens):
        try:
            pending[r] = g.send(None)
        except StopIteration as s:
            results[r] = s.value
    while any(p is not None for p in pending):
        if any(p is None for p in pending):
            done = [r for r in range(W) if pending[r] is None]
            raise InterpreterError(f"rank(s) {done} finished while others wait in a collective "
                                   f"({pending[next(r for r in range(W) if pending[r] is not None)][0].describe()})")
        names = {p[0].name for p in pending}
        if len(names) != 1:
            raise InterpreterError(f"the ranks reached different collectives: {sorted(names)}")
        op0 = pending[0][0]
        try:
            outs = op0.reference_collective([p[1] for p in pending])
        except Exception as e:
            raise InterpreterError(f"collective {op0.describe()} failed: {type(e).__name__}: {e}") from e
        for r, g in enumerate(gens):
            try:
                pending[r] = g.send(outs[r])
            except StopIteration as s:
                pending[r] = None
                results[r] = s.value
    return results
