"""The Ascend target's launch plans and its host program (issue 20, "A CANN project that runs without Python").

The compiler writes launch plans (ascend/launch/) for the shapes it knows; the Python artifact executes them and
the C++ host program moec_run (host/moec_run.cpp, built here with g++ against the emulator library and moec's ACL
stand-in) executes the same files: their outputs must be equal, bit for bit, with routing that differs per input.
"""
import os
import re
import subprocess

import numpy as np
import pytest
from onnx import helper

from helpers import make_model
from moec.driver import CompileOptions, compile_onnx
from moec.targets.registry import get_backend
from zoo import ZOO

ROOT = os.path.join(os.path.dirname(__file__), "..")
EXAMPLE = os.path.join(ROOT, "examples", "mixtral_like.onnx")
INC = os.path.join(ROOT, "targets", "ascend_emu", "include")
KERNELS = os.path.join(ROOT, "codegen", "ascend", "kernels")
HOST = os.path.join(ROOT, "codegen", "ascend", "host")

pytestmark = pytest.mark.skipif(not __import__("shutil").which("g++"), reason="no g++ for the emulator build")


def _keys(out):
    with open(os.path.join(out, "ascend", "launch", "index.txt")) as f:
        return [line.rsplit(" ", 1)[0] for line in f if line.strip()]


# the token counts a symbolic plan is run at (each symbolic key: the samples inside its range); none of them is a
# compile-time size, and 3 / 37 lie in the first two ranges of SYMBOLIC_RANGES
SYMBOLIC_SAMPLES = (3, 37)


def _concrete_keys(key, samples=SYMBOLIC_SAMPLES):
    """A symbolic plan's key ({d0=lo..hi}) as concrete keys at the samples inside its range; a concrete key as is."""
    if "{" not in key:
        return [key]
    out = []
    for v in samples:
        ok = True

        def sub(mt):
            nonlocal ok
            lo, hi = mt.group(2), mt.group(3)
            ok = ok and v >= int(lo) and (not hi or v <= int(hi))
            return str(v)
        k = re.sub(r"\{(\w+)=(\d+)\.\.(\d*)\}", sub, key)
        if ok:
            out.append(k)
    return out


def _inputs(key, seed, int_range=(0, 1)):
    rng = np.random.default_rng(seed)
    xs = []
    for part in key.split(","):
        dt, dims = part.split(":")
        shape = tuple(int(d) for d in dims.split("x")) if dims else ()
        npt = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32}[dt]
        xs.append((rng.standard_normal(shape) * 2).astype(npt) if dt[0] == "f" else
                  rng.integers(*int_range, shape).astype(npt))
    return xs


def _moec_run(exe, out, xs, tmp):
    os.makedirs(tmp, exist_ok=True)
    paths = []
    for i, x in enumerate(xs):
        paths.append(os.path.join(tmp, f"in{i}.npy"))
        np.save(paths[-1], x)
    p = subprocess.run([exe, os.path.join(out, "ascend"), tmp] + paths, capture_output=True, text=True, timeout=600)
    return p


def _check_host_program(out, tmp_path, soc="Ascend910B2", seeds=(0, 1), int_range=(0, 1)):
    """moec_run at every compile-time plan, for several inputs, equal to the Python artifact bit for bit; the
    artifact ran the emitted plans without making any (no planning, no IR walk, at run time)."""
    from moec.targets.ascend_backend import build_host_program
    exe = build_host_program(out)
    art = get_backend("ascend", soc).load(out)

    def no_planning(*a, **k):
        raise AssertionError("the artifact planned at run time although a compile-time plan exists")
    art.planner.make = no_planning
    keys = [k for key in _keys(out) for k in _concrete_keys(key)]
    assert len(keys) >= 1
    ran = 0
    for key in keys:
        for seed in seeds:
            xs = _inputs(key, seed, int_range)
            want = art(xs)
            d = str(tmp_path / f"run_{ran}")
            p = _moec_run(exe, out, xs, d)
            assert p.returncode == 0, p.stderr
            for k, w in enumerate(want):
                got = np.load(os.path.join(d, f"output{k}.npy"))
                assert got.dtype == w.dtype and got.shape == w.shape, (got.dtype, got.shape, w.dtype, w.shape)
                np.testing.assert_array_equal(got, w)
            ran += 1
    assert art.plans_made == 0 and ran == len(keys) * len(seeds)
    return art, exe


def _check_weights_stored_once(out):
    """The plans read the weights they use as they are from model.weights.bin ('weights' const steps); consts.bin
    holds only what the weights file does not (transposed weights, offsets): no weight's bytes in it."""
    import json
    launch = os.path.join(out, "ascend", "launch")
    blob = open(os.path.join(launch, "consts.bin"), "rb").read()
    wbin = open(os.path.join(out, "model.weights.bin"), "rb").read()
    index = json.load(open(os.path.join(out, "model.weights.json")))
    refs = set()
    for name in os.listdir(launch):
        if name.startswith("plan"):
            for line in open(os.path.join(launch, name)):
                t = line.split()
                if t[0] == "const" and t[-1] == "weights":
                    refs.add((int(t[4]), int(t[5])))
    assert refs and refs <= {(e["offset"], e["nbytes"]) for e in index.values()}, refs
    for off, nb in refs:
        assert nb >= 64 and wbin[off:off + nb] not in blob
    assert len(blob) < sum(nb for _, nb in refs)


def test_host_program_matches_python_on_the_example(tmp_path):
    out = str(tmp_path / "o")
    r = compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(3,)))
    assert r.report["verified"], r.report.get("failure")
    # the symbolic token count bound to 1 and 4 at compile time, and a symbolic plan per range of it
    assert _keys(out) == ["f32:1x64", "f32:4x64", "f32:{d0=1..16}x64", "f32:{d0=17..256}x64", "f32:{d0=257..}x64"]
    assert r.report["ascend"]["launch_plans"] == _keys(out) and "not_planned" not in r.report["ascend"]
    _check_weights_stored_once(out)
    art, exe = _check_host_program(out, tmp_path)
    assert art.launches["moe_gather_rows"] >= 4 and art.launches["grouped_matmul"] >= 12
    # the plan reads the routed row count back after moe_init_routing: the expert kernels' sizes are run-time
    text = open(os.path.join(out, "ascend", "launch", "plan1.txt")).read()
    assert re.search(r"^sym s0 read b\d+ 8$", text, re.M) and "$s0" in text
    # a shape no plan covers (no token: symbolic plans take 1 and more): moec_run says so (exit 2) and lists them
    p = _moec_run(exe, out, [np.zeros((0, 64), np.float32)], str(tmp_path / "other"))
    assert p.returncode == 2 and "no launch plan for inputs f32:0x64" in p.stderr and "f32:4x64" in p.stderr
    # the plans need the artifact's weights file: without it moec_run says so (exit 2)
    os.rename(os.path.join(out, "model.weights.bin"), os.path.join(out, "w.moved"))
    p = _moec_run(exe, out, [np.zeros((4, 64), np.float32)], str(tmp_path / "noweights"))
    assert p.returncode == 2 and "cannot read" in p.stderr and "model.weights.bin" in p.stderr, p.stderr
    os.rename(os.path.join(out, "w.moved"), os.path.join(out, "model.weights.bin"))
    # the Python artifact plans that shape once, then reuses it
    art2 = get_backend("ascend", "Ascend910B2").load(out)
    x = np.zeros((0, 64), np.float32)
    a, b = art2([x])[0], art2([x])[0]
    np.testing.assert_array_equal(a, b)
    assert art2.plans_made == 1


@pytest.mark.slow
def test_host_program_runs_an_attention_block(tmp_path):
    """A decoder block with token-id input: embedding gather, rotary tables and the causal mask as plan constants
    (computed from the shape), batched attention matmuls with K^T read in place, V^T transposed: moec_run equals
    the Python artifact; an id out of range is refused by both with the same message."""
    from test_ascend_decoder import V, _attention_block
    out = str(tmp_path / "o")
    r = compile_onnx(_attention_block(), out, CompileOptions(target="ascend", symbol_sizes=(7, 1)))
    assert r.report["verified"], r.report.get("failure")
    assert _keys(out) == ["i64:1x1", "i64:1x4"]
    art, exe = _check_host_program(out, tmp_path, int_range=(-V, V))
    assert art.launches["vec_gather"] and art.launches["vec_transpose"] and art.launches["grouped_matmul"]
    bad = [np.array([[1, V, 2, 3]], np.int64)]
    with pytest.raises(Exception, match=rf"gather: index {V} out of range \[-{V}, {V}\)"):
        art(bad)
    p = _moec_run(exe, out, bad, str(tmp_path / "bad"))
    assert p.returncode == 1 and f"gather: index {V} out of range [-{V}, {V})" in p.stderr, p.stderr


def test_symbolic_plans_run_any_token_count(tmp_path):
    """Launch plans for any value of the symbolic token count (issue 20): one plan per range of it, its sizes, block
    dims and tiling fields expressions of $d0 (bound from the input's shape when the plan runs), group offsets set
    from the host (seti).  Token counts that no compile-time size names -- 3, 37, 129 and 300, one in each range and
    a second in the middle one -- run from these plans in the Python artifact (no planning at run time) and in
    moec_run, bit for bit alike, and equal the reference semantics within the f32 tolerance."""
    from moec.ir import load_module, run
    from moec.targets.ascend_backend import build_host_program
    from moec.verify import compare
    out = str(tmp_path / "o")
    r = compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(5, 1)))
    assert r.report["verified"], r.report.get("failure")
    sym = [k for k in _keys(out) if "{" in k]
    assert sym == ["f32:{d0=1..16}x64", "f32:{d0=17..256}x64", "f32:{d0=257..}x64"], _keys(out)
    text = open(os.path.join(out, "ascend", "launch", "plan3.txt")).read()
    assert re.search(r"^bind d0 0 0$", text, re.M) and re.search(r"^input 0 b\d+ f32 \* \$d0 64$", text, re.M)
    assert re.search(r"^launch moe_gating .* bd max 1 min \d+ \$d0 ", text, re.M), text[:2000]
    assert re.search(r"^seti b\d+ 1 ", text, re.M)  # the router matmul's group offsets [0, T]
    exe = build_host_program(out)
    art = get_backend("ascend", "Ascend910B2").load(out)

    def no_planning(*a, **k):
        raise AssertionError("the artifact planned at run time although a symbolic plan covers the shape")
    art.planner.make = no_planning
    m = load_module(os.path.join(out, "model.mlir"))
    for T in (3, 37, 129, 300):
        x = np.random.default_rng(T).standard_normal((T, 64)).astype(np.float32)
        want = art([x])
        d = str(tmp_path / f"t{T}")
        p = _moec_run(exe, out, [x], d)
        assert p.returncode == 0, p.stderr
        got = np.load(os.path.join(d, "output0.npy"))
        np.testing.assert_array_equal(got, want[0])
        ref = run(m, [x])
        c = compare(m.main.output_names, want, [ref[k] for k in m.main.output_names])
        assert c.ok, (T, c.message)
    assert art.plans_made == 0


def test_symbolic_plan_keys():
    """The index key of a symbolic plan and what it covers (moec_run reads the same text: match_key)."""
    from moec.codegen.ascend.launch_plan import Sym, match_key, symbolic_key
    t = Sym(("$", "d0"))
    k = symbolic_key([(t, 64), (2, t)], [np.float32, np.int64], {"d0": (17, 256)})
    assert k == "f32:{d0=17..256}x64,i64:2x{d0=17..256}"
    assert match_key(k, "f32:37x64,i64:2x37") == {"d0": 37}
    assert match_key(k, "f32:37x64,i64:2x38") is None      # one value per symbol
    assert match_key(k, "f32:16x64,i64:2x16") is None      # below the range
    assert match_key(k, "f32:37x32,i64:2x37") is None      # a fixed dim differs
    assert match_key(k, "f16:37x64,i64:2x37") is None      # another type
    assert match_key(symbolic_key([(t,)], [np.float32], {"d0": (257, None)}), "f32:100000") == {"d0": 100000}


def test_launch_plan_text_round_trip(tmp_path):
    """dump -> load -> dump is the identity; the loaded plan runs to the same outputs as the one in memory."""
    from moec.codegen.ascend.launch_plan import Plan
    out = str(tmp_path / "o")
    assert compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(2,))).report["verified"]
    art = get_backend("ascend", "Ascend910B2").load(out)
    p = art.planner.make([(6, 64)], [np.float32])
    text, blob = p.dump()
    q = Plan.load(text, blob)
    assert q.dump() == (text, blob)
    # every buffer but the outputs' is released after its last use (device memory holds what is live)
    made = {s[1] for s in q.steps if s[0] in ("alloc", "const")} | {s[2] for s in q.steps if s[0] == "input"}
    freed = [s[1] for s in q.steps if s[0] == "free"]
    outs = {s[2] for s in q.steps if s[0] == "output"}
    assert len(freed) == len(set(freed)) and set(freed) == made - outs and outs
    from moec.codegen.ascend.launch_plan import execute
    x = np.random.default_rng(3).standard_normal((6, 64)).astype(np.float32)
    np.testing.assert_array_equal(execute(p, [x], art._run_kernel)[0], execute(q, [x], art._run_kernel)[0])


@pytest.mark.parametrize("name", ["deepseekv3_dynamo", pytest.param("gptoss_dynamo", marks=pytest.mark.slow),
                                  pytest.param("qwen2moe_torchscript", marks=pytest.mark.slow),
                                  pytest.param("llama4_torchscript", marks=pytest.mark.slow)])
def test_host_program_matches_python_on_zoo_models(name, tmp_path):
    e = next(z for z in ZOO if z.name == name)
    out = str(tmp_path / "o")
    r = compile_onnx(e.build(), out, CompileOptions(target="ascend", symbol_sizes=(3,)))
    assert r.report["verified"], r.report.get("failure")
    _check_host_program(out, tmp_path, seeds=(0,))


def test_host_ops_are_refused_by_the_host_program(tmp_path):
    """A plan with a host-fallback op (sin has no AscendC kernel): the Python artifact runs it on the host,
    moec_run refuses the plan naming the op, and the CMake project refuses to build, naming it."""
    from moec.targets.ascend_backend import build_host_program
    m = make_model([helper.make_node("Sin", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])],
                   [("x", np.float32, ["T", 16])], [("y", np.float32, None)], name="host_sin")
    out = str(tmp_path / "o")
    r = compile_onnx(m, out, CompileOptions(target="ascend", symbol_sizes=(2,)))
    assert r.report["verified"], r.report.get("failure")
    assert "moec.sin" in r.report["ascend"]["host_ops"]
    art = get_backend("ascend", "Ascend910B2").load(out)
    x = _inputs(_keys(out)[0], 0)
    np.testing.assert_allclose(art(x)[0], np.sin(x[0]) * x[0], rtol=1e-6)
    assert art.host_ops == {"moec.sin": 1} and art.launches.get("vec_elementwise", 0) == 1
    exe = build_host_program(out)
    p = _moec_run(exe, out, x, str(tmp_path / "r"))
    assert p.returncode == 2 and "moec.sin" in p.stderr and "on the host" in p.stderr, p.stderr
    cm = open(os.path.join(out, "ascend", "CMakeLists.txt")).read()
    assert re.search(r'message\(FATAL_ERROR "moec_run cannot be built: these ops run on the host: moec.sin"\)', cm)


def _kernel_entries():
    """{kernel: number of GM_ADDR parameters} of the AscendC entry points in kernels/*.cpp."""
    out = {}
    for f in ("moe_kernels.cpp", "cube_kernels.cpp", "vector_kernels.cpp"):
        src = open(os.path.join(KERNELS, f)).read()
        for name, params in re.findall(r'extern "C" __global__ __aicore__ void (\w+)\(([^)]*)\)', src):
            out[name] = params.count("GM_ADDR")
    return out


def test_cann_branch_of_launch_cpp_compiles_against_generated_launch_headers(tmp_path):
    """The non-emulator branch of host/launch.cpp is plain host C++: no <<<>>>, one ACLRT_LAUNCH_KERNEL per kernel
    through the aclrtlaunch_<kernel>.h header CANN's ascendc_library generates.  Without CANN, those headers are
    written here with the documented form (aclrtlaunch_<kernel>(blockDim, stream, one void* per kernel
    parameter) and ACLRT_LAUNCH_KERNEL(kernel) naming it), one per kernel entry point found in kernels/*.cpp, so
    g++ checks that every launch passes each kernel's parameter count."""
    src = open(os.path.join(HOST, "launch.cpp")).read()
    cann = src.split("#else", 1)[1].split("#endif", 1)[0]
    assert "<<<" not in cann and "kernel_operator.h" not in cann
    entries = _kernel_entries()
    assert len(entries) >= 16
    gen = tmp_path / "gen"
    gen.mkdir()
    for k, n in entries.items():
        assert f"aclrtlaunch_{k}.h" in cann, k
        params = ", ".join(["void *"] * n)
        (gen / f"aclrtlaunch_{k}.h").write_text(
            "#pragma once\n#include <cstdint>\n#include \"acl/acl.h\"\n"
            "#ifndef ACLRT_LAUNCH_KERNEL\n#define ACLRT_LAUNCH_KERNEL(kernel) aclrtlaunch_##kernel\n#endif\n"
            f"extern \"C\" uint32_t aclrtlaunch_{k}(uint32_t blockDim, aclrtStream stream, {params});\n")
    p = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-DMOEC_ACL_DECLARE_ONLY", "-I", str(gen), "-I", INC,
                        os.path.join(HOST, "launch.cpp")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    # a launch with a wrong argument count must not compile: drop one parameter of one kernel's header
    k = "moe_finalize"
    h = gen / f"aclrtlaunch_{k}.h"
    h.write_text(h.read_text().replace("void *, ", "", 1))
    p = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", "-DMOEC_ACL_DECLARE_ONLY", "-I", str(gen), "-I", INC,
                        os.path.join(HOST, "launch.cpp")], capture_output=True, text=True)
    assert p.returncode != 0 and k in p.stderr


def test_cmake_project_links_a_pic_kernel_library_into_the_shared_host_library(tmp_path):
    out = str(tmp_path / "o")
    assert compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(2,))).report["verified"]
    cm = open(os.path.join(out, "ascend", "CMakeLists.txt")).read()
    assert cm.index("set(CMAKE_POSITION_INDEPENDENT_CODE ON)") < cm.index("ascendc_library(moec_kernels STATIC")
    assert "add_library(moec_host SHARED host/launch.cpp)" in cm and "add_executable(moec_run host/moec_run.cpp)" in cm
    assert re.search(r"target_link_libraries\(moec_run PRIVATE moec_host ascendcl\)", cm)
    assert "FATAL_ERROR \"moec_run cannot be built" not in cm  # no host ops in the example
    readme = open(os.path.join(out, "ascend", "README.md")).read()
    assert "./build/moec_run . out/ input0.npy" in readme and "`f32:1x64`" in readme


@pytest.mark.skipif(not os.environ.get("ASCEND_HOME_PATH"),
                    reason="ASCEND_HOME_PATH does not point at a CANN toolkit: the emitted CMake project (ascendc_library,"
                           " bisheng, libascendcl) cannot be built here")
def test_cmake_project_builds_with_cann(tmp_path):
    """Where CANN is installed: the emitted project configures and builds (kernels, libmoec_host.so, moec_run)."""
    out = str(tmp_path / "o")
    assert compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(2,))).report["verified"]
    d = os.path.join(out, "ascend")
    for cmd in (["cmake", "-B", "build", f"-DASCEND_CANN_PACKAGE_PATH={os.environ['ASCEND_HOME_PATH']}"],
                ["cmake", "--build", "build", "-j"]):
        p = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert os.path.exists(os.path.join(d, "build", "moec_run"))


@pytest.mark.skipif(not os.environ.get("ASCEND_HOME_PATH"),
                    reason="ASCEND_HOME_PATH does not point at a CANN toolkit: CANN's CPU-debug mode (tikicpulib, "
                           "ASCENDC_CPU_DEBUG) is not available here")
def test_cann_cpu_debug_build_matches_the_emulator(tmp_path):
    """Where CANN is installed: the emitted kernels built in CANN's CPU-debug mode (-DMOEC_CPU_DEBUG=ON) run every
    compile-time plan through moec_run; the outputs agree with the emulator's (the Python artifact)."""
    out = str(tmp_path / "o")
    assert compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(2,))).report["verified"]
    d = os.path.join(out, "ascend")
    for cmd in (["cmake", "-B", "build-cpu", "-DMOEC_CPU_DEBUG=ON",
                 f"-DASCEND_CANN_PACKAGE_PATH={os.environ['ASCEND_HOME_PATH']}"],
                ["cmake", "--build", "build-cpu", "-j"]):
        p = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    exe = os.path.join(d, "build-cpu", "moec_run")
    art = get_backend("ascend", "Ascend910B2").load(out)
    for i, key in enumerate(_keys(out)):
        xs = _inputs(key, i)
        run = str(tmp_path / f"cpu{i}")
        p = _moec_run(exe, out, xs, run)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        for k, w in enumerate(art(xs)):
            np.testing.assert_allclose(np.load(os.path.join(run, f"output{k}.npy")), w, rtol=1e-5, atol=1e-5)


def test_data_dependent_host_shapes_are_planned_while_they_run(tmp_path):
    """NonZero (on the host) has a result length that depends on the data: no plan can be written ahead for it
    (ascend/launch/not_planned.txt says why); the artifact plans such calls while they run, the host op's real
    result feeding the planning of the NPU ops after it."""
    m = make_model([helper.make_node("Greater", ["x", "zero"], ["b"]), helper.make_node("NonZero", ["b"], ["nz"]),
                    helper.make_node("Cast", ["nz"], ["nzf"], to=1), helper.make_node("Mul", ["nzf", "two"], ["y"])],
                   [("x", np.float32, ["T", 6])], [("y", np.float32, None)],
                   {"zero": np.zeros(1, np.float32), "two": np.full(1, 2.0, np.float32)}, name="nonzero")
    out = str(tmp_path / "o")
    r = compile_onnx(m, out, CompileOptions(target="ascend", symbol_sizes=(3,)))
    assert r.report["verified"], r.report.get("failure")
    assert _keys(out) == [] and "depends on tensor data" in open(os.path.join(out, "ascend", "launch",
                                                                                "not_planned.txt")).read()
    art = get_backend("ascend", "Ascend910B2").load(out)
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((5, 6)).astype(np.float32)
        np.testing.assert_array_equal(art([x])[0], np.stack(np.nonzero(x > 0)).astype(np.float32) * 2)
    assert art.live_calls == 2 and art.host_ops.get("moec.nonzero") == 2, art.stats()
    assert art.launches.get("vec_elementwise", 0) >= 2


def test_moec_run_uses_the_built_host_program(tmp_path, capsys):
    """`moec run OUTDIR` on an Ascend artifact: with moec_run built and a compile-time plan for the inputs (for those
    shapes or a symbolic one), the outputs come from the host program (it says so on stderr) and equal the Python
    artifact's; for a shape no plan covers, or before moec_run is built, the Python artifact runs them."""
    from moec.cli import main
    from moec.targets.ascend_backend import build_host_program
    out = str(tmp_path / "o")
    assert compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(3,))).report["verified"]
    art = get_backend("ascend", "Ascend910B2").load(out)
    name = art.input_names[0]

    def cli_run(x, tag):
        np.save(str(tmp_path / f"{tag}.npy"), x)
        res = tmp_path / f"res_{tag}"
        assert main(["run", out, "-i", f"{name}={tmp_path / f'{tag}.npy'}", "-o", str(res)]) == 0
        err = capsys.readouterr().err
        return np.load(str(res / os.listdir(res)[0])), "from the host program ascend/moec_run" in err

    x4 = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    got, via_exe = cli_run(x4, "before")
    assert not via_exe  # not built yet: the Python artifact
    np.testing.assert_array_equal(got, art([x4])[0])
    build_host_program(out)
    got, via_exe = cli_run(x4, "planned")
    assert via_exe
    np.testing.assert_array_equal(got, art([x4])[0])
    x3 = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    got, via_exe = cli_run(x3, "symbolic")  # 3 tokens: a symbolic plan covers it
    assert via_exe
    np.testing.assert_array_equal(got, art([x3])[0])
    x0 = np.zeros((0, 64), np.float32)
    got, via_exe = cli_run(x0, "unplanned")  # no plan covers 0 tokens: Python plans it
    assert not via_exe and got.shape == (0, 64)


def test_report_says_where_ascend_runs_and_what_tensors_it_takes(monkeypatch):
    """report.json "ascend.device": without torch_npu (this machine) moec.compile takes CPU tensors and says so;
    with torch_npu importable (faked: only the package lookup is), NPU tensors are taken through host copies."""
    import importlib.util
    from moec.targets.ascend_backend import device_support
    here = device_support()
    assert here["python_runs_on"] == "moec's AscendC emulator"
    if importlib.util.find_spec("torch_npu") is None:
        assert here["torch_npu"] is False and "not importable" in here["tensors"]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torch_npu" else real(name, *a))
    faked = device_support()
    assert faked["torch_npu"] is True and "takes NPU tensors" in faked["tensors"]
