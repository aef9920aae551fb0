"""Hostile names (issue 15 items 2, 3, 17, 22).

Names from the model (ONNX input/output/initializer/node/graph names, dim_params) and from IR text
(symbol names, argument/output names, locations, module attributes) reach generated C, Python and
CMake only through moec.codegen.escape.  Every name here is hostile (quotes, backslashes, newlines,
``*/``, triple quotes, printf conversions, braces, shell and Python payloads that would create a
marker file, unicode, a 100k-character name); each artifact must build, run, equal the reference,
keep every such name inside a string literal of what it generated, and never create the marker.
"""
from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tokenize

import numpy as np
import onnx
import pytest
from helpers import check_model, make_model
from onnx import helper

from moec.codegen.escape import c_string, cmake_string, ident, py_string, py_value
from moec.driver import CompileOptions, build_module, compile_onnx
from moec.errors import RuntimeFailure, one_line, show_name
from moec.ir import DType, TensorType, parse_module, print_module
from moec.ir.interpreter import run_function
from moec.ir.printer import quote


def hostile(marker: str):
    """Hostile texts; each one, if pasted raw into C, Python, a shell or CMake, would break out."""
    sh = f"$(touch {marker})"
    py = f"__import__('os').system('touch {marker}')"
    return [
        f'q"); system("touch {marker}"); (void)("',               # C: closes the literal
        f'%s%n%n%s%lld {sh}',                                     # printf conversions
        f'x"""+{py}+"""',                                         # Python: closes a docstring
        f"y'''+{py}+'''",
        f"back\\slash\\\\ \\n \\x41 \\",                          # backslashes (and a trailing one)
        f"new\nline\r\n{py}\n#",                                  # newlines
        f"c */ {sh} /* // ??/",                                   # comment ends, a trigraph
        "brace {} {0} {x!r} %% ${HOME} @ONE@ ;",                  # format / cmake syntax
        f"`touch {marker}`",
        "uni \u00e9\u4e2d\U0001F600 \u2028\u2029 \u202e \x1b[31mVERIFIED\x1b[0m \x7f",
        "A" * 100_000 + '"',                                      # 100k characters
    ]


def _no_marker(marker):
    assert not os.path.exists(marker), "generated code ran an injected command"


# -- generated source: hostile text only inside string literals -------------------------------------

_C_LIT = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')


def _c_outside_literals(src: str) -> str:
    return _C_LIT.sub('""', src)


def _assert_c_clean(src: str, names):
    """No fragment of any name outside a C string literal, and no raw control character at all."""
    outside = _c_outside_literals(src)
    for bad in ("touch", "system", "VERIFIED", "__import__", "*/ ", "uni "):
        assert bad not in outside, f"{bad!r} outside a C string literal"
    assert not re.search(r"[^\x20-\x7e\n]", src), "raw non-ASCII/control character in the C source"
    for lit in re.findall(r'"(?:\\.|[^"\\\n])*"', src):
        assert "??" not in lit
    # every line is a complete statement/declaration fragment: no literal spans lines
    for line in src.splitlines():
        assert len(_C_LIT.sub("", line).split('"')) == 1, f"unterminated literal in: {line[:200]}"


def _assert_py_clean(src: str, names):
    """The launcher parses; every token holding a payload fragment is a STRING token."""
    ast.parse(src)
    assert src.isascii()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type != tokenize.STRING:
            for bad in ("touch", "system", "__import__", "VERIFIED"):
                assert bad not in tok.string, (bad, tok)


def _assert_ascend_clean(d: str):
    """The AscendC project (kernels, host code, CMake) holds no name from the model."""
    for root, _, files in os.walk(d):
        for f in files:
            if f.endswith((".cpp", ".h", ".txt")):
                text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
                for bad in ("touch", "__import__", "VERIFIED"):
                    assert bad not in text, (f, bad)
    assert 'set(SOC_VERSION "Ascend910B2"' in open(os.path.join(d, "CMakeLists.txt")).read()


# -- the escaping functions themselves ----------------------------------------------------------------

def _c_unescape(lit: str) -> bytes:
    """Decode a C string literal as made by c_string (simple escapes and octal)."""
    assert lit[0] == lit[-1] == '"'
    body, out, i = lit[1:-1], bytearray(), 0
    while i < len(body):
        if body[i] == "\\":
            if body[i + 1] in '"\\':
                out.append(ord(body[i + 1]))
                i += 2
            else:
                assert re.fullmatch(r"[0-7]{3}", body[i + 1:i + 4]), body[i:i + 4]
                out.append(int(body[i + 1:i + 4], 8))
                i += 4
        else:
            assert body[i] != '"'
            out.append(ord(body[i]))
            i += 1
    return bytes(out)


def test_escape_functions_round_trip(tmp_path):
    marker = str(tmp_path / "pwned")
    for s in hostile(marker) + ["", "?", "\x00", "\ud800", "123abc"]:
        lit = c_string(s)
        assert lit.isascii() and "\n" not in lit and "??" not in lit
        assert _c_unescape(lit) == s.encode("utf-8", "surrogatepass")
        p = py_string(s)
        assert p.isascii() and "\n" not in p and ast.literal_eval(p) == s
        assert ast.literal_eval(py_value(s)) == s
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident(s) if s else ident(s, "m"))
        if not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", s):
            c = cmake_string(s)
            assert "\n" not in c and "${" not in c.replace("\\${", "")
            assert not re.search(r'(?<!\\)"', c[1:-1])
    for v in (float("nan"), float("inf"), -float("inf"), 1.5, -0.0, 3, True, None, ("a", 1, 2.5), ["x'\""]):
        back = eval(py_value(v))  # noqa: S307 (a literal we just made)
        assert back == v or (v != v and back != back)
    with pytest.raises(TypeError):
        py_value(object())
    with pytest.raises(ValueError):
        cmake_string("a\x01b")


def test_emitters_use_the_escape_module_only():
    """No emitter formats input text itself: no ``!r`` / ``repr(`` / ``ascii(`` in the generated-source
    builders, no private string-literal helpers (the escape module is the one place)."""
    root = os.path.join(os.path.dirname(__file__), "..")
    files = ["codegen/triton/emitter.py", "codegen/c/emitter.py", "targets/ascend_backend.py"] + \
        [os.path.join("codegen/c", f) for f in os.listdir(os.path.join(root, "codegen/c")) if f.startswith("kernels")]
    for rel in files:
        src = open(os.path.join(root, rel)).read()
        assert "!r}" not in src and "repr(" not in src and "ascii(" not in src, rel
        assert "def c_string" not in src and "def py_string" not in src, rel


# -- C target from ONNX: every name hostile ----------------------------------------------------------

def _hostile_onnx(names, dims=("T", 4)):
    nx, ny, nw, na, nb, nc, ng = names[:7]
    nodes = [helper.make_node("Add", [nx, ny], [na], name=names[7]),
             helper.make_node("Mul", [na, nw], [nb], name=names[8]),
             helper.make_node("Relu", [nb], [nc], name=names[9])]
    m = make_model(nodes, [(nx, np.float32, list(dims)), (ny, np.float32, list(dims))],
                   [(nc, np.float32, list(dims)), (na, np.float32, list(dims))],
                   initializers={nw: np.linspace(-1, 1, 4, dtype=np.float32)}, name=ng)
    return m


@pytest.mark.parametrize("target", ["cpu", "triton", "ascend"])
def test_onnx_hostile_names(target, tmp_path):
    if target == "triton":
        pytest.importorskip("torch")
        pytest.importorskip("triton")
    marker = str(tmp_path / "pwned")
    names = hostile(marker)
    if target != "cpu":
        names = names[:-1]  # the 100k-character name once is enough (cpu)
    names = names + [n + "#2" for n in names]  # distinct names for the 11 places
    # dim_params are hostile too (sanitised on import, and must still work)
    m = _hostile_onnx(names, dims=(names[1], 4))
    out = str(tmp_path / "art")
    rep = compile_onnx(m, out, CompileOptions(target=target, symbol_sizes=(5, 1, 3))).report
    assert rep["verified"] and rep["oracle"] == "onnxruntime", rep.get("failure")
    _no_marker(marker)
    if target == "triton":
        src = open(os.path.join(out, "model_triton.py")).read()
        _assert_py_clean(src, names)
        assert names[6] in ast.get_docstring(ast.parse(src))  # the graph name, intact inside the literal
        return
    if target == "ascend":
        _assert_ascend_clean(os.path.join(out, "ascend"))
        return
    src = open(os.path.join(out, "model.c")).read()
    _assert_c_clean(src, names)
    for n in names[:2]:  # the input names travel as exact literals
        assert c_string(n) in src
    # the input checks name the hostile input exactly (through "%s": its %n are not conversions)
    from moec.targets.registry import CpuArtifact
    art = CpuArtifact(out)
    with pytest.raises(RuntimeFailure) as e:
        art([np.ones((3, 4), np.float32), np.ones((2, 4), np.float32)])
    assert f"input '{names[1]}' dimension 0 is 2" in str(e.value), str(e.value)[:300]
    _no_marker(marker)


# -- IR text: hostile symbols, names, locations and module attributes, on every target ----------------

def _hostile_ir(marker: str, long_name: bool = True) -> tuple:
    hs = [h.replace(",", ";") for h in hostile(marker)]  # a symbol name cannot hold ',' (the list separator)
    if not long_name:
        hs = hs[:-1]
    s1, s2 = hs[0], hs[2]
    ty = str(TensorType(DType.F32, (s1, s2)))
    mattr = hs[2]
    text = (f"module attributes {{moec.model = {quote(mattr)}, moec.source = {quote(hs[3])}}} {{\n"
            f"  func.func @main(%x: {ty}, %y: {ty}) -> ({ty}, {ty}) attributes "
            f"{{moec.inputs = [{quote(hs[-1])}, {quote(hs[5])}], moec.outputs = [{quote(hs[6])}, {quote(hs[7])}]}} {{\n"
            f"    %a = \"moec.add\"(%x, %y) : ({ty}, {ty}) -> {ty} loc({quote(hs[8])})\n"
            f"    %b = \"moec.mul\"(%a, %x) : ({ty}, {ty}) -> {ty} loc({quote(hs[9])})\n"
            f"    func.return %b, %a : {ty}, {ty}\n  }}\n}}\n")
    m = parse_module(text)
    assert m.main.args[0].type.shape == (s1, s2)  # the parser kept the hostile symbols
    assert parse_module(print_module(m)).main.args[0].type.shape == (s1, s2)  # and the printer round-trips them
    return m, hs, s1, s2


def _inputs(rows=3, cols=2):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((rows, cols)).astype(np.float32) for _ in range(2)]


def test_cpu_ir_hostile_symbols(tmp_path):
    marker = str(tmp_path / "pwned")
    m, hs, s1, s2 = _hostile_ir(marker)
    out = str(tmp_path / "art")
    art = build_module(m, out)
    _no_marker(marker)
    src = open(os.path.join(out, "model.c")).read()
    _assert_c_clean(src, hs)
    assert c_string(s1) in src
    xs = _inputs()
    for got, want in zip(art(xs), run_function(m, m.main, xs)):
        np.testing.assert_array_equal(got, want)
    # mismatched symbol: the message names the symbol exactly, printf conversions in it not expanded
    with pytest.raises(RuntimeFailure) as e:
        art([xs[0], np.ones((4, 2), np.float32)])
    msg = str(e.value)
    assert f"symbol {s1} is 3" in msg, msg[:500]
    _no_marker(marker)


def test_triton_ir_hostile_names(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    marker = str(tmp_path / "pwned")
    m, hs, s1, s2 = _hostile_ir(marker, long_name=False)
    out = str(tmp_path / "art")
    art = build_module(m, out, target="triton")
    _no_marker(marker)
    src = open(os.path.join(out, "model_triton.py")).read()
    _assert_py_clean(src, hs)
    doc = ast.get_docstring(ast.parse(src))
    assert hs[3] in doc  # the model name, intact, inside the one docstring literal
    xs = _inputs()
    for got, want in zip(art(xs), run_function(m, m.main, xs)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    _no_marker(marker)


def test_ascend_ir_hostile_names(tmp_path):
    marker = str(tmp_path / "pwned")
    m, hs, s1, s2 = _hostile_ir(marker, long_name=False)
    out = str(tmp_path / "art")
    art = build_module(m, out, target="ascend")
    _no_marker(marker)
    _assert_ascend_clean(os.path.join(out, "ascend"))
    xs = _inputs()
    for got, want in zip(art(xs), run_function(m, m.main, xs)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    _no_marker(marker)


# -- item 17: symbolic dims are mapped injectively ------------------------------------------------------

def test_dim_params_that_sanitise_alike_stay_distinct(tmp_path):
    from moec.frontend.onnx_import import import_model
    m = make_model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["y"], ["b"]),
                    helper.make_node("Relu", ["z"], ["c"])],
                   [("x", np.float32, ["T-1", 4]), ("y", np.float32, ["T_1", None]), ("z", np.float32, ["T-1", "y_d1"])],
                   [("a", np.float32, ["T-1", 4]), ("b", np.float32, ["T_1", None]), ("c", np.float32, ["T-1", "y_d1"])],
                   name="syms")
    f = import_model(m).main
    (tx, _), (ty, uy), (tz, yd1) = (a.type.shape for a in f.args)
    assert tx == tz and ty == "T_1" and tx != ty  # T-1 and T_1 are two symbols; T-1 is one symbol twice
    assert yd1 == "y_d1" and uy != yd1            # a generated name yields to the model's own dim_param
    check_model(m, tmp_path)                       # verification draws different sizes per symbol
    from moec.targets.registry import CpuArtifact
    out = [d for d in os.listdir(tmp_path) if d.startswith("out_")][0]
    art = CpuArtifact(os.path.join(tmp_path, out))
    xs = [np.ones((3, 4), np.float32), -np.ones((5, 2), np.float32), np.ones((3, 7), np.float32)]
    got = art(xs)  # before: "symbol T_1 is 3 from an earlier input" for y's 5 rows
    assert [g.shape for g in got] == [(3, 4), (5, 2), (3, 7)]


# -- item 22: names cannot forge lines in messages ------------------------------------------------------

def test_show_name_and_one_line():
    s = "x\n\x1b[31mVERIFIED\r\u2028\u0085\x00"
    for f in (show_name, one_line):
        t = f(s)
        assert t.isprintable() and "\x1b" not in t and "\n" not in t
        assert "VERIFIED" in t
    long = show_name("A" * 100_000)
    assert len(long) < 300 and "100000 characters" in long


EVIL = "x\n\x1b[31mVERIFIED"


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "moec", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.mark.parametrize("where", ["node", "output"])
def test_cli_error_naming_a_hostile_name_is_one_line(tmp_path, where):
    if where == "node":  # an op moec does not convert, on a node with a hostile name
        nodes = [helper.make_node("Det", ["x"], ["y"], name=EVIL)]
        outs = [("y", np.float32, [])]
        ins = [("x", np.float32, [3, 3])]
    else:  # a graph output nothing produces, with a hostile name (and a hostile input name)
        nodes = [helper.make_node("Relu", [EVIL + "in"], ["y"], name="n")]
        ins = [(EVIL + "in", np.float32, [3, 3])]
        outs = [("y", np.float32, [3, 3]), (EVIL, np.float32, [3, 3])]
    m = make_model(nodes, ins, outs, name=EVIL)
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    r = _cli("compile", str(p), "-o", str(tmp_path / "out"), cwd=str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "\x1b" not in r.stderr and "\x1b" not in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n") and r.stderr.count("\n") == 1, r.stderr
    assert "VERIFIED" not in r.stdout


def test_symbol_names_stay_injective_for_many_clashes():
    from moec.frontend.onnx_import import SymbolNames
    sn = SymbolNames()
    raws = ["T" + chr(0x100 + i) for i in range(5000)] + ["T_", "T__2", "T-"]  # all sanitise to T_...
    sn.reserve(raws)
    got = [sn.param(r) for r in raws]
    assert len(set(got)) == len(raws) and sn.param("T_") == "T_" and sn.param("T__2") == "T__2"
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", g) for g in got)
