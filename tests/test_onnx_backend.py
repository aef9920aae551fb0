"""onnx's own backend conformance tests (node cases generated in memory by the onnx package),
run through moec's C target via moec.onnx_backend.

Selection: a node test runs when every op in its model is in moec's op set (SCOPE in
backend_exclusions.py) and it matches no exclusion pattern (each has a reason there).
`python tests/backend_report.py` prints the pass/fail/excluded counts."""
import re
import unittest
import warnings

import onnx.backend.test

from backend_exclusions import EXCLUDE, SCOPE
from moec.onnx_backend import MoecBackend


def in_scope_cases():
    """(name, excluded-reason-or-None) for every node case whose ops are all in SCOPE."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    out = []
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        if not ops or not ops <= SCOPE:
            continue
        reason = next((why for pat, why in EXCLUDE if re.search(pat, c.name)), None)
        out.append((c.name, reason))
    return out


CASES = in_scope_cases()

class CheckedBackend(MoecBackend):
    """moec's backend plus, for every model, the IR text round trip and MLIR parse."""

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        import os
        from helpers import check_ir_text
        from moec.ir import load_module
        rep = super().prepare(model, device, **kwargs)
        check_ir_text(load_module(os.path.join(rep.outdir, "model.mlir")))
        return rep


backend_test = onnx.backend.test.BackendTest(CheckedBackend, __name__)
backend_test.include(r"^(" + "|".join(re.escape(n) for n, why in CASES if why is None) + r")_cpu$")


def _in_scope_only(test_cases):
    """onnx's classes hold every case on every device, those not included wrapped in a skip: ~3300 of them
    outside moec's op set (or on CUDA), collected and reported for nothing (a few seconds of every run).  Keep
    the in-scope cases on the CPU: those that run, and the excluded ones as skips with their reasons."""
    reasons = {n + "_cpu": why for n, why in CASES}
    for name, cls in list(test_cases.items()):
        for attr in [a for a in vars(cls) if a.startswith("test_")]:
            if attr not in reasons:
                delattr(cls, attr)
            elif reasons[attr] is not None:
                setattr(cls, attr, unittest.skip(reasons[attr])(getattr(cls, attr)))
        if not any(a.startswith("test_") for a in vars(cls)):
            del test_cases[name]
    return test_cases


globals().update(_in_scope_only(backend_test.test_cases))


def test_selection_is_not_empty():
    runnable = [n for n, why in CASES if why is None]
    assert len(runnable) > 400, len(runnable)
