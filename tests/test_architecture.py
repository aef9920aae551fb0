"""The structure issue 18 asks for, checked: moec's modules import each other without cycles (the graph
built from every module's AST, imports inside functions included: only ``if TYPE_CHECKING:`` blocks are
left out), ir/ and passes/ import neither onnx, torch, codegen nor targets, the driver, the CLI and the
passes name no target, and a target added through the registry alone (``reference``) compiles, verifies
and runs through the same driver and CLI."""
import ast
import json
import os
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def _package_dirs():
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def _modules():
    """{module name: file} for every moec module (the package-dir mapping of pyproject.toml)."""
    mods = {}
    seen = set()
    for pkg, d in sorted(_package_dirs().items(), key=lambda kv: -len(kv[1])):  # (deepest folders first)
        base = os.path.join(ROOT, d)
        for dp, dns, fns in os.walk(base):
            dns[:] = sorted(x for x in dns if x != "__pycache__")
            rel = os.path.relpath(dp, base)
            parts = [] if rel == "." else rel.split(os.sep)
            if not os.path.exists(os.path.join(dp, "__init__.py")):
                continue
            for fn in sorted(fns):
                path = os.path.realpath(os.path.join(dp, fn))
                if fn.endswith(".py") and path not in seen:
                    seen.add(path)
                    mods[".".join([pkg] + parts + ([] if fn == "__init__.py" else [fn[:-3]]))] = path
    return mods


def _imports(name, path, mods):
    """The moec modules ``name`` imports (anywhere in the file except under ``if TYPE_CHECKING:``), and the
    outside top-level packages it imports."""
    with open(path) as f:
        tree = ast.parse(f.read())
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    inside, outside = set(), set()

    def visit(node):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                for x in ch.orelse:
                    visit(x)
                continue
            if isinstance(ch, ast.Import):
                for a in ch.names:
                    (inside if a.name.split(".")[0] == "moec" else outside).add(a.name)
            elif isinstance(ch, ast.ImportFrom):
                if ch.level:
                    base = pkg.split(".")
                    base = base[:len(base) - (ch.level - 1)]
                    mod = ".".join(base + ([ch.module] if ch.module else []))
                else:
                    mod = ch.module or ""
                if mod.split(".")[0] != "moec":
                    outside.add(mod)
                    continue
                for a in ch.names:  # `from pkg import submodule` depends on the submodule
                    inside.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod)
            visit(ch)
    visit(tree)
    return {m for m in inside if m in mods and m != name}, outside


def _graph():
    mods = _modules()
    return mods, {n: _imports(n, p, mods) for n, p in mods.items()}


def import_cycles(graph):
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        for v in sorted(graph):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(old)
    return out


def test_the_cycle_finder_finds_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .x import T\n"
                 "def f():\n    from ..y import z\n    import numpy\n")
    inside, outside = _imports("moec.pkg.m", str(p), {"moec.pkg.x", "moec.y", "moec.y.z", "moec.pkg.m"})
    assert inside == {"moec.y.z"} and outside == {"typing", "numpy"}


def test_no_import_cycles():
    mods, g = _graph()
    assert len(mods) > 50 and "moec.driver" in mods and "moec.targets.base" in mods
    cycles = import_cycles({n: inside for n, (inside, _) in g.items()})
    assert not cycles, f"import cycles among moec's modules: {cycles}"


def test_imports_are_absolute():
    """The folders are mapped onto packages (pyproject's package-dir), so a relative import names no folder a
    reader can see: every moec module imports moec modules by their package names."""
    mods = _modules()
    rel = []
    for name, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        rel += [f"{name}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    assert not rel, f"relative imports: {rel[:10]}"


def test_ir_and_passes_import_no_frontend_codegen_or_target():
    _, g = _graph()
    bad = []
    for n, (inside, outside) in g.items():
        if n.startswith(("moec.ir.", "moec.passes.")) or n in ("moec.ir", "moec.passes"):
            bad += [(n, m) for m in inside if m.startswith(("moec.codegen", "moec.targets", "moec.frontend"))]
            bad += [(n, m) for m in outside if m.split(".")[0] in ("onnx", "torch", "onnxruntime", "triton")]
    assert not bad, bad


def _target_names():
    from moec import targets
    return targets.names()


def _named_targets(path):
    """(line, text) of every string constant in ``path`` equal to a target's name, and every comparison or
    membership test against one (``t.name == "cpu"``): the code-level ways of naming a target."""
    names = set(_target_names())
    with open(path) as f:
        tree = ast.parse(f.read())
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            hits.append((node.lineno, node.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # a list of targets in one string ("cpu,ascend,triton")
            parts = [x.strip() for x in node.value.split(",")]
            if len(parts) > 1 and all(x in names for x in parts):
                hits.append((node.lineno, node.value))
    return hits


def test_driver_cli_and_passes_name_no_target():
    files = [os.path.join(ROOT, "compiler", "driver.py"), os.path.join(ROOT, "compiler", "cli.py")]
    files += sorted(os.path.join(ROOT, "passes", f) for f in os.listdir(os.path.join(ROOT, "passes"))
                    if f.endswith(".py"))
    found = {os.path.relpath(p, ROOT): _named_targets(p) for p in files}
    found = {k: v for k, v in found.items() if v}
    assert not found, f"target names in the driver / CLI / passes: {found}"


def test_the_grep_finds_a_target_name(tmp_path):
    p = tmp_path / "x.py"
    p.write_text('if t.name == "ascend":\n    pass\nx = "cpu,triton"\ny = "a cpu word"\n')
    assert sorted(h[0] for h in _named_targets(str(p))) == [1, 3]


def test_one_registry_and_typed_descriptions():
    from moec import targets
    from moec.targets.base import Backend, TargetDesc
    for name in targets.names():
        b = targets.backend(name)
        assert isinstance(b, Backend) and b.name == name and b.desc.name == name
        assert isinstance(b.desc, TargetDesc) and "f32" in b.desc.weight_modes
        assert targets.target_for(name) == b.desc
    assert not hasattr(TargetDesc, "extra") and not hasattr(TargetDesc, "get")  # typed fields only
    # the two former factories agree now: one description per (target, arch)
    from moec.targets.registry import get_backend
    assert get_backend("triton").desc == targets.target_for("triton")
    with pytest.raises(Exception, match="unknown target 'nope'"):
        targets.backend("nope")


# -- the reference target: added through the registry alone ------------------------------------------

def test_reference_target_compiles_verifies_and_runs(tmp_path, capsys):
    import numpy as np

    from moec.cli import main
    example = os.path.join(ROOT, "examples", "mixtral_like.onnx")
    out = tmp_path / "ref"
    assert main(["compile", example, "--target", "reference", "-o", str(out), "--sizes", "3,1"]) == 0
    assert "VERIFIED against onnxruntime" in capsys.readouterr().out
    rep = json.load(open(out / "report.json"))
    assert rep["target"] == "reference" and rep["verified"] and rep["oracle"] == "onnxruntime"
    assert rep["target_desc"]["arch"] == "interpreter" and len(rep["moe_layers"]) >= 1
    man = json.load(open(out / "manifest.json"))
    assert man["target"] == "reference" and sorted(os.listdir(out)) == sorted(
        ["manifest.json", "model.mlir", "model.weights.bin", "model.weights.json", "report.json"])
    # moec run loads it through its manifest's target
    from moec.ir import parse_type
    t = parse_type(man["inputs"][0]["type"])
    x = np.random.default_rng(0).standard_normal([2 if not isinstance(d, int) else d for d in t.shape]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = tmp_path / "res"
    assert main(["run", str(out), "-i", f"{man['inputs'][0]['name']}=" + str(tmp_path / "x.npy"), "-o", str(res)]) == 0
    from moec.ir.io import load_module
    from moec.ir import run
    want = list(run(load_module(str(out / "model.mlir")), [x]).values())[0]
    got = np.load(res / os.listdir(res)[0])
    np.testing.assert_array_equal(got, want)


def test_reference_target_refuses_quantised_weights(tmp_path, capsys):
    from moec.cli import main
    example = os.path.join(ROOT, "examples", "mixtral_like.onnx")
    assert main(["compile", example, "--target", "reference", "--weights", "int8", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "target reference: --weights int8 is not implemented (f32 is)" in err and "\n" not in err.strip()


def test_schedule_dispatch_follows_the_description_not_the_name():
    from dataclasses import replace

    from moec import targets
    from moec.passes.schedule_dispatch import ScheduleDispatch
    gpu = targets.triton_target("H100")
    d = ScheduleDispatch(gpu).decide(E=8, k=2, D=64, F=128, itemsize=4, capacity=0)
    assert (d["block"], d["gemv_max_slots"], d["cores"]) == (64, 32, 132)
    # the same fields under another name decide the same; other fields decide otherwise
    assert ScheduleDispatch(replace(gpu, name="cpu")).decide(8, 2, 64, 128, 4, 0) == d
    mine = replace(gpu, name="new", dispatch_block=32, gemv_max_slots=0, tile_budget_level=2, l2_bytes=3 * 64 * 4 * 32 * 2)
    d2 = ScheduleDispatch(mine).decide(E=8, k=2, D=64, F=128, itemsize=4, capacity=5)
    assert d2 == {"strategy": "capacity", "block": 32, "gemv_max_slots": 8, "col_block": 32, "cores": 132}


# -- one IR walker ------------------------------------------------------------------------------------------
_EXECUTES = {"reference", "eval_op", "reference_collective"}  # an op's semantics (or a helper that applies them)


def _walker_loops(source: str):
    """Line numbers of the loops in ``source`` that execute IR themselves: a ``for`` loop whose body both
    runs ops (a call of ``reference`` / ``eval_op`` / ``reference_collective``, or a dispatch by a computed
    name, ``getattr(obj, "_k_" + op)``) and stores values by identity (``env[id(v)] = ...``): the loop of
    an interpreter.  Only ir/walk.py may hold one; everything else passes a hook to it."""
    def runs_ops(n):
        if not isinstance(n, ast.Call):
            return False
        f = n.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name == "getattr":  # a name computed from a string: "_k_" + op, f"_k_{op}"
            return len(n.args) >= 2 and isinstance(n.args[1], (ast.BinOp, ast.JoinedStr))
        return name in _EXECUTES

    def stores_by_id(n):
        return isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Call) and isinstance(t.slice.func, ast.Name)
            and t.slice.func.id == "id" for t in n.targets)
    out = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, (ast.For, ast.While)):
            inner = [x for st in n.body for x in ast.walk(st)]
            if any(runs_ops(x) for x in inner) and any(stores_by_id(x) for x in inner):
                out.append(n.lineno)
    return out


def test_one_ir_walker():
    """ir/walk.py is the only loop that executes IR: the interpreter, the recognition probes, the SPMD
    reference, the Triton host segments and the Ascend planner are hooks on it."""
    offenders = []
    for name, path in _modules().items():
        if name == "moec.ir.walk":
            continue
        with open(path) as f:
            offenders += [f"{name}:{ln}" for ln in _walker_loops(f.read())]
    assert not offenders, f"loops that execute IR outside ir/walk.py (give ir.walk.walk a hook): {offenders}"
    with open(os.path.join(ROOT, "ir", "walk.py")) as f:
        assert _walker_loops(f.read()), "the walker itself is what the check looks for"


def test_the_walker_check_finds_an_interpreter_loop():
    old_interpreter = '''
def run_function(m, f, inputs):
    env = {id(a): x for a, x in zip(f.args, inputs)}
    for o in f.ops:
        outs = o.reference(*[env[id(v)] for v in o.operands])
        for r, a in zip(o.results, outs):
            env[id(r)] = a
'''
    old_ascend = '''
def make(self, f, env):
    for i, o in enumerate(f.ops):
        outs = getattr(self, "_k_" + o.name.replace(".", "_"))(o, i, [env[id(v)] for v in o.operands])
        for r, v in zip(o.results, outs):
            env[id(r)] = v
'''
    assert _walker_loops(old_interpreter) == [4] and _walker_loops(old_ascend) == [3]
    assert _walker_loops("for o in ops:\n    x = getattr(o, 'name')\n    env[id(o)] = x\n") == []


def test_triton_launcher_parses_no_ir():
    """Loading a Triton artifact reads the generated launcher, its constants and the weights, never model.mlir:
    the artifact's loader and the launcher's host segments call no IR parser (tests/test_triton_launcher.py
    loads an artifact whose model.mlir was deleted)."""
    parsers = {"load_module", "parse_module", "parse_type"}
    for name in ("moec.targets.triton_backend", "moec.codegen.triton.host", "moec.codegen.triton.runtime"):
        with open(_modules()[name]) as f:
            tree = ast.parse(f.read())
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
            {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not used & parsers, (name, used & parsers)


def test_bench_and_conformance_compile_through_the_driver():
    """`moec bench` and `moec conformance` build through the driver's entry points (compile_onnx, the JIT's
    compile_module) and check options with the driver's own check: they import no pass and no code generator,
    and call no backend's emit or build (bench_triton times the kernels themselves: no compile)."""
    mods, g = _graph()
    for name in ("moec.bench", "moec.conformance"):
        inside, _ = g[name]
        assert not {m for m in inside if m.startswith(("moec.passes", "moec.codegen"))}, (name, inside)
        with open(mods[name]) as f:
            tree = ast.parse(f.read())
        calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Attribute) and (n.func.attr in ("emit", "build") and
                                                            "backend" in ast.unparse(n.func.value).lower()
                                                            or n.func.attr == "run_pipeline")]
        assert not calls, (name, calls)
        assert {"compile_onnx", "jit_compile"} & {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
