"""onnx's own backend conformance tests (node cases generated in memory by the onnx package),
run through moec's C target via moec.onnx_backend.

Selection: a node test runs when every op in its model is in moec's op set (SCOPE in
backend_exclusions.py) and it matches no exclusion pattern (each has a reason there).
`python tests/backend_report.py` prints the pass/fail/excluded counts."""
import re
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
globals().update(backend_test.test_cases)


def test_selection_is_not_empty():
    runnable = [n for n, why in CASES if why is None]
    assert len(runnable) > 400, len(runnable)
