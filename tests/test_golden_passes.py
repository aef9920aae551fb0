"""Golden pass tests: each tests/golden/<pass>__<case>.mlir holds an input module, a line
'// ----- expected', and the module the pass must produce (compared as printed text, after the
verifier).  MOEC_UPDATE_GOLDEN=1 rewrites the expected halves (review the diff!)."""
import glob
import os

import pytest

from moec.ir import parse_module, print_module, verify_module
from moec.passes.registry import make_pass

HERE = os.path.join(os.path.dirname(__file__), "golden")
SEP = "// ----- expected\n"
CASES = sorted(glob.glob(os.path.join(HERE, "*.mlir")))


@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[:-5] for p in CASES])
def test_golden(path):
    text = open(path).read()
    src, _, expected = text.partition(SEP)
    pass_name = os.path.basename(path).split("__")[0]
    options = {}
    first = src.splitlines()[0]
    if first.startswith("// target:"):  # e.g. "// target: cpu cores=2 l2_bytes=1048576"
        from dataclasses import replace
        from moec.targets import target_for
        name, *kv = first.split(":", 1)[1].split()
        desc = target_for(name, "generic" if name == "cpu" else "native")
        desc = replace(desc, **{k: int(v) for k, v in (x.split("=") for x in kv)})
        options["target"] = desc
    m = parse_module(src, source=path)
    verify_module(m)
    make_pass(pass_name, **options).run(m)
    verify_module(m)
    got = print_module(m)
    if os.environ.get("MOEC_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(src + SEP + got)
        return
    assert got == expected, f"{pass_name} output differs from {path}"


def test_every_pass_has_a_golden_test():
    from moec.passes.registry import PASSES
    have = {os.path.basename(p).split("__")[0] for p in CASES}
    assert set(PASSES) <= have, f"passes without golden tests: {sorted(set(PASSES) - have)}"
