"""Fuzzing names (issue 15 items 2, 3, 22): random hostile names in every place a model can carry one.

ONNX: input, output, initializer, node and graph names and dim_params, compiled for the C target and
verified against onnxruntime.  IR text: symbol names, argument/output names, locations and module
attributes, built for the C target (and, in the long run, the Triton launcher under TRITON_INTERPRET)
and compared with moec's interpreter.  Each name is assembled from pieces that break out of C, Python,
shell and CMake syntax; a payload would create a marker file.  Counted: crashes, tracebacks
(non-MoecError exceptions), exit-3-like BuildErrors, wrong results, marker files: all must be 0.

Quick subset by default; `MOEC_FUZZ_LONG=1 python -m pytest -q -m slow tests/fuzz` runs the long one."""
from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, build_module, compile_onnx
from moec.errors import MoecError
from moec.ir import DType, TensorType, parse_module
from moec.ir.interpreter import run_function
from moec.ir.printer import quote

LONG = bool(os.environ.get("MOEC_FUZZ_LONG"))


def _pieces(marker):
    return ['"', "'", "\\", "\n", "\r", "\t", "*/", "/*", "//", '"""', "'''", "%n", "%s", "%%", "%lld", "{}", "{0}",
            "${X}", "@X@", ";", "#", "`", "??/", "??=", f"$(touch {marker})", f"`touch {marker}`",
            f"__import__('os').system('touch {marker}')", f'system("touch {marker}");', "\u00e9", "\u4e2d",
            "\U0001F600", "\u2028", "\u202e", "\x1b[31m", "\x7f", "VERIFIED", "a", "Z", "_", "0", " ", "-", "."]


def _name(rng, marker, i, allow_comma=True):
    ps = _pieces(marker)
    n = int(rng.integers(1, 12))
    s = "".join(ps[int(rng.integers(len(ps)))] for _ in range(n))
    if rng.random() < 0.05:
        s += "L" * int(rng.integers(1000, 20000))
    if not allow_comma:
        s = s.replace(",", ";")
    return f"{s}#{i}"  # distinct per slot


def _onnx_case(rng, marker):
    nm = [_name(rng, marker, i) for i in range(11)]
    nx, ny, nw, na, nb, nc, ng, sym = nm[:8]
    d = [sym, 4]
    nodes = [helper.make_node("Add", [nx, ny], [na], name=nm[8]),
             helper.make_node("Mul", [na, nw], [nb], name=nm[9]),
             helper.make_node("Softmax", [nb], [nc], name=nm[10], axis=-1)]
    return make_model(nodes, [(nx, np.float32, d), (ny, np.float32, d)], [(nc, np.float32, d), (na, np.float32, d)],
                      initializers={nw: np.linspace(-1, 1, 4, dtype=np.float32)}, name=ng)


def _ir_case(rng, marker):
    nm = [_name(rng, marker, i, allow_comma=False) for i in range(9)]
    s1, s2 = nm[0], nm[1]
    ty = str(TensorType(DType.F32, (s1, s2)))
    text = (f"module attributes {{moec.model = {quote(nm[2])}, moec.source = {quote(nm[3])}}} {{\n"
            f"  func.func @main(%x: {ty}, %y: {ty}) -> ({ty}, {ty}) attributes "
            f"{{moec.inputs = [{quote(nm[4])}, {quote(nm[5])}], moec.outputs = [{quote(nm[6])}, {quote(nm[7])}]}} {{\n"
            f"    %a = \"moec.sub\"(%x, %y) : ({ty}, {ty}) -> {ty} loc({quote(nm[8])})\n"
            f"    %b = \"moec.mul\"(%a, %x) : ({ty}, {ty}) -> {ty}\n"
            f"    func.return %b, %a : {ty}, {ty}\n  }}\n}}\n")
    m = parse_module(text)
    assert m.main.args[0].type.shape == (s1, s2)
    return m


def _fuzz(kind, n, tmp_path, targets=("cpu",)):
    rng = np.random.default_rng(15 if kind == "onnx" else 16)
    marker = str(tmp_path / "pwned")
    counts = dict(cases=0, ok=0, tracebacks=0, exit3=0, wrong=0, markers=0)  # a crash would end the run
    for i in range(n):
        target = targets[i % len(targets)]
        out = str(tmp_path / f"c{i}")
        counts["cases"] += 1
        try:
            if kind == "onnx":
                rep = compile_onnx(_onnx_case(rng, marker), out, CompileOptions(target=target, symbol_sizes=(3, 1))).report
                if not (rep["verified"] and rep["oracle"] == "onnxruntime"):
                    counts["wrong"] += 1
            else:
                m = _ir_case(rng, marker)
                art = build_module(m, out, target=target)
                xs = [rng.standard_normal((3, 2)).astype(np.float32) for _ in range(2)]
                for got, want in zip(art(xs), run_function(m, m.main, xs)):
                    if not np.allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6):
                        counts["wrong"] += 1
            counts["ok"] += 1
        except MoecError as e:
            counts["exit3" if e.exit_code == 3 else "wrong"] += 1  # every case is a valid model
            print(f"case {i}: {type(e).__name__}: {str(e)[:300]!r}")
        except Exception as e:  # noqa: BLE001 - counted, the assertion below reports it
            counts["tracebacks"] += 1
            print(f"case {i}: {type(e).__name__}: {str(e)[:300]!r}")
        if os.path.exists(marker):
            counts["markers"] += 1
            os.unlink(marker)
    print(f"fuzz names ({kind}, {'/'.join(targets)}): {counts}")
    assert counts["ok"] == counts["cases"] and counts["markers"] == 0, counts


def test_fuzz_onnx_names_quick(tmp_path):
    _fuzz("onnx", 3, tmp_path)


def test_fuzz_ir_names_quick(tmp_path):
    _fuzz("ir", 3, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long fuzz run: MOEC_FUZZ_LONG=1")
def test_fuzz_onnx_names_long(tmp_path):
    _fuzz("onnx", 500, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long fuzz run: MOEC_FUZZ_LONG=1")
def test_fuzz_ir_names_long(tmp_path):
    targets = ("cpu",)
    try:
        import torch  # noqa: F401
        import triton  # noqa: F401
        targets = ("cpu", "triton")
    except ImportError:
        pass
    _fuzz("ir", 500, tmp_path, targets)
