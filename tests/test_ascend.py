"""Ascend target: the emulator's rules each fire on a bad kernel and stay quiet on a good one; every
zoo model and the example compile with --target ascend, run block by block on the emulator with no
rule violated, and verify against onnxruntime; the emitted folder is a CANN project."""
import json
import os
import subprocess

import pytest

from moec.driver import CompileOptions, compile_onnx
from zoo import ZOO

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INC = os.path.join(ROOT, "targets", "ascend_emu", "include")
EXAMPLE = os.path.join(ROOT, "examples", "mixtral_like.onnx")

RULES = {
    1: "capacity of VECCALC exceeded",
    2: "is not a multiple of 32 (DataCopy moves whole 32-byte blocks",
    3: "kernel end: a tensor of a VECIN queue is still allocated or enqueued (missing FreeTensor: leak)",
    4: "DeQue before EnQue",
    5: "use of a LocalTensor after FreeTensor",
    6: "out-of-bounds GM access",
    7: "all 2 buffers of the queue are in use",
    8: "more than 64 buffers in one kernel",
    9: "blockDim 64 exceeds the 48 cores of Ascend910B2",
    10: "vector instruction on a tensor in position A2",
    11: "Mmad: m, n, k must be <= 4095",
    12: "Compare: count*sizeof(T)=160 bytes is not a multiple of 256",
}


@pytest.fixture(scope="module")
def rules_exe(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("emu") / "rules")
    subprocess.run(["g++", "-std=c++17", "-O1", "-I", INC, os.path.join(HERE, "ascend_kernels", "rules.cpp"),
                    "-o", exe], check=True)
    return exe


def test_good_kernels_pass(rules_exe):
    for case in (0, 13):  # double-buffered vector add over 8 blocks; Compare on whole repeats
        p = subprocess.run([rules_exe, str(case)], capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.strip() == "OK", p.stdout


@pytest.mark.parametrize("case", sorted(RULES))
def test_each_rule_fires(rules_exe, case):
    p = subprocess.run([rules_exe, str(case)], capture_output=True, text=True)
    assert p.returncode == 1, p.stdout
    assert "[moec-ascend-emu] kernel '" in p.stdout and "block " in p.stdout
    assert RULES[case] in p.stdout, p.stdout


@pytest.mark.parametrize("name", [e.name for e in ZOO])
def test_zoo_on_ascend(name, tmp_path):
    e = next(z for z in ZOO if z.name == name)
    out = tmp_path / "out"
    r = compile_onnx(e.build(), str(out), CompileOptions(target="ascend", symbol_sizes=(5, 1)))
    assert r.report["verified"] and r.report["oracle"] == "onnxruntime", r.report.get("failure")
    plan = json.load(open(out / "ascend" / "plan.json"))
    npu = {s["op"] for s in plan["steps"] if s["where"] == "npu"}
    assert {"moe.route", "moe.dispatch", "moe.experts", "moe.combine"} <= npu | {"moe.dispatch"}
    assert not any(op.startswith("moe.") for op in plan["host_ops"]), plan["host_ops"]


def test_emitted_project_and_socs(tmp_path):
    for soc in ("Ascend910B1", "Ascend910B3", "Ascend910_93"):
        out = tmp_path / soc
        r = compile_onnx(EXAMPLE, str(out), CompileOptions(target="ascend", arch=soc, symbol_sizes=(4,)))
        assert r.report["verified"]
        d = out / "ascend"
        for f in ("CMakeLists.txt", "README.md", "kernels/moe_kernels.cpp", "host/launch.cpp", "plan.json"):
            assert (d / f).exists(), f
        cm = (d / "CMakeLists.txt").read_text()
        assert f'set(SOC_VERSION "{soc}"' in cm and "ascendc_library" in cm
        assert "<<<blockDim, nullptr, g_stream>>>" in (d / "host" / "launch.cpp").read_text()
        plan = json.load(open(d / "plan.json"))
        assert plan["soc"] == soc and "estimates" in plan["estimates_are"]
        ffn = [e for e in plan["estimates"] if e["kernel"] == "moe_expert_ffn"]
        assert ffn and all(e["estimate_us"] > 0 and e["bound"] in ("vector", "HBM", "copy-issue/launch") for e in ffn)


def test_rule_violation_in_generated_code_is_reported(tmp_path, monkeypatch):
    """A kernel that breaks a rule at run time surfaces as a clear verification failure."""
    from moec.errors import VerificationError
    from moec.targets import ascend_backend
    real = ascend_backend.tiling_bytes

    def bad_tiling(**kw):  # a DataCopyPad row longer than the UB buffer it lands in
        if "Kd" in kw and kw.get("kt"):
            kw["kt"] = kw["kt"] * 100000
        return real(**kw)
    monkeypatch.setattr(ascend_backend, "tiling_bytes", bad_tiling)
    with pytest.raises(VerificationError, match="moec-ascend-emu"):
        compile_onnx(EXAMPLE, str(tmp_path / "o"), CompileOptions(target="ascend", symbol_sizes=(3,)))
