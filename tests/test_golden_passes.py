"""Golden pass tests: each tests/golden/<pass>__<case>.mlir holds an input module, a line
'// ----- expected', and what the pass must produce (after the verifier), either

* the module, printed with the attributes that equal their op's default left out (so a case shows what
  the pass decided, not every knob of every op; files written with all attributes compare the same), or
* CHECK lines (FileCheck-style, for outputs too long to review whole): ``// CHECK: text`` -- the next
  line at or after the previous match that contains ``text``; ``// CHECK-NEXT: text`` -- the line right
  after the previous match; ``// CHECK-NOT: text`` -- no line between the matches around it contains it.
  Checks run on the same default-less print.

Options for the pass come from header lines of the input: ``// target: cpu cores=2 l2_bytes=1048576``
(a target description, fields replaced) and ``// options: mode=int4 group=4 zero_point=true``
(keyword arguments; ints, floats, true/false, else strings).
MOEC_UPDATE_GOLDEN=1 rewrites the expected module halves (review the diff!); CHECK halves are kept."""
import glob
import inspect
import os

import pytest

from moec.ir import parse_module, print_module, verify_module
from moec.ir.opdef import OPS, REQUIRED
from moec.passes.registry import PASSES, make_pass

HERE = os.path.join(os.path.dirname(__file__), "golden")
SEP = "// ----- expected\n"
CASES = sorted(glob.glob(os.path.join(HERE, "*.mlir")))


def _value(v: str):
    if v in ("true", "false"):
        return v == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def _options(src: str) -> dict:
    options = {}
    for line in src.splitlines():
        if not line.startswith("//"):
            break
        if line.startswith("// target:"):  # e.g. "// target: cpu cores=2 l2_bytes=1048576"
            from dataclasses import replace
            from moec.targets import target_for
            name, *kv = line.split(":", 1)[1].split()
            desc = target_for(name, "generic" if name == "cpu" else "native")
            desc = replace(desc, **{k: int(v) for k, v in (x.split("=") for x in kv)})
            options["target"] = desc
        elif line.startswith("// options:"):
            options.update((k, _value(v)) for k, v in (x.split("=", 1) for x in line.split(":", 1)[1].split()))
    return options


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


def without_defaults(text: str, weights=None) -> str:
    """The module ``text`` printed again with every attribute that equals its op's default left out
    (``weights``: the store its constants name)."""
    m = parse_module(text, weights)
    for o in m.ops():
        spec = getattr(OPS.get(o.name), "_spec", None)
        if spec is None:
            continue
        for key, a in spec.attrs.items():
            if key in o.attrs and a.default not in (REQUIRED, None) and _same(o.attrs[key], a.default):
                del o.attrs[key]
    return print_module(m)


def check_lines(checks, got: str) -> None:
    """FileCheck-style CHECK / CHECK-NEXT / CHECK-NOT lines against ``got``; AssertionError naming the first
    that fails."""
    lines = got.splitlines()
    pos, nots = 0, []      # pos: the line after the last match; nots: CHECK-NOTs waiting for the next match
    for c in checks:
        kind, _, text = c[3:].partition(":")
        text = text.strip()
        if kind == "CHECK-NOT":
            nots.append(text)
            continue
        if kind == "CHECK":
            at = next((i for i in range(pos, len(lines)) if text in lines[i]), None)
        elif kind == "CHECK-NEXT":
            at = pos if pos < len(lines) and text in lines[pos] and pos > 0 else None
        else:
            raise AssertionError(f"unknown check line {c!r}")
        assert at is not None, f"{c!r}: not found after line {pos}"
        for t in nots:
            bad = [i for i in range(pos, at) if t in lines[i]]
            assert not bad, f"CHECK-NOT: {t!r} found at line {bad[0] + 1}: {lines[bad[0]]}"
        nots, pos = [], at + 1
    for t in nots:
        bad = [i for i in range(pos, len(lines)) if t in lines[i]]
        assert not bad, f"CHECK-NOT: {t!r} found at line {bad[0] + 1}: {lines[bad[0]]}"


@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[:-5] for p in CASES])
def test_golden(path):
    text = open(path).read()
    src, _, expected = text.partition(SEP)
    pass_name = os.path.basename(path).split("__")[0]
    m = parse_module(src, source=path)
    verify_module(m)
    make_pass(pass_name, **_options(src)).run(m)
    verify_module(m)
    got = without_defaults(print_module(m), m.weights)
    checks = [ln.strip() for ln in expected.splitlines() if ln.strip().startswith("// CHECK")]
    if checks:
        check_lines(checks, got)
        return
    if os.environ.get("MOEC_UPDATE_GOLDEN"):
        with open(path, "w") as f:
            f.write(src + SEP + got)
        return
    assert got == without_defaults(expected, m.weights), f"{pass_name} output differs from {path}"


def test_check_lines_can_fail():
    text = "a one\nb two\nc three\n"
    check_lines(["// CHECK: one", "// CHECK-NEXT: two", "// CHECK-NOT: one", "// CHECK: three"], text)
    for bad in (["// CHECK: four"], ["// CHECK: one", "// CHECK-NEXT: three"],
                ["// CHECK: one", "// CHECK-NOT: two", "// CHECK: three"], ["// CHECK: two", "// CHECK: one"]):
        with pytest.raises(AssertionError):
            check_lines(bad, text)


def test_defaults_left_out_of_the_print():
    src = ('module {\n  func.func @main(%x: tensor<2x3xf32>) -> (tensor<2x1xf32>, tensor<2x1xi64>) {\n'
           '    %r:2 = "moe.route"(%x) {k = 1 : i64, scoring = "sigmoid"} : (tensor<2x3xf32>) -> '
           '(tensor<2x1xf32>, tensor<2x1xi64>)\n    func.return %r#0, %r#1 : tensor<2x1xf32>, tensor<2x1xi64>\n  }\n}\n')
    m = parse_module(src)
    verify_module(m)
    full = print_module(m)
    assert "tie = " in full                        # (the verifier filled the defaults)
    short = without_defaults(full)
    assert "tie = " not in short and 'scoring = "sigmoid"' in short and "k = 1" in short


def test_every_pass_is_registered_and_has_a_golden_test():
    """Every Pass subclass defined in moec.passes carries @register_pass, and every registered pass has a
    golden case."""
    import sys
    from moec.passes.base import Pass
    mods = [mod for n, mod in sys.modules.items() if n.startswith("moec.passes.")]
    classes = {c for mod in mods for _, c in inspect.getmembers(mod, inspect.isclass)
               if issubclass(c, Pass) and c is not Pass and c.__module__ == mod.__name__}
    assert {"quantize-weights", "expert-parallel"} <= set(PASSES)
    missing = sorted(c.__qualname__ for c in classes if PASSES.get(c.name) is not c)
    assert not missing, f"Pass classes without @register_pass: {missing}"
    have = {os.path.basename(p).split("__")[0] for p in CASES}
    assert set(PASSES) <= have, f"passes without golden tests: {sorted(set(PASSES) - have)}"
