"""NPU tensors through moec.compile(..., target="ascend") (issue 20, torch_npu): tensors of the NPU run on the NPU
through the compiled folder's device library (host/moec_run.cpp's moec_run_device: the launch plans on device
memory, the inputs used in place, the outputs allocated as tensors on the inputs' device and written by the device),
with no host copy; CPU tensors run on the emulator; tensors of another device are refused, saying why.

Without CANN there is no NPU: the tests fake only the device query (``npu_device_type``), answering "cpu" -- the
emulator's ACL stand-in, whose device memory is host memory, so CPU tensors are its device tensors -- and run the
real device path (the library built against the emulator) on them."""
import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import moec  # noqa: E402
from moec.errors import UserInputError  # noqa: E402
from moec.targets import ascend_backend as ab  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
EXAMPLE = os.path.join(ROOT, "examples", "mixtral_like.onnx")

pytestmark = pytest.mark.skipif(not __import__("shutil").which("g++"), reason="no g++ for the emulator build")


@pytest.fixture(scope="module")
def compiled(moec_module_cache):
    """The example through moec.compile (an ONNX path), in this module's cache (verified elsewhere: not here)."""
    return moec.compile(EXAMPLE, target="ascend", verify=False)


def _x(T, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((T, 64)).astype(np.float32))


def test_device_tensors_run_on_the_device_library(compiled, monkeypatch):
    """The device query says these tensors live in ACL device memory: the call goes to moec_run_device (the
    Python executor is not used), on the tensors' memory, and its outputs -- tensors on the same device, allocated
    for the plan's output shapes -- equal the emulator run bit for bit, at token counts with a compile-time plan (4)
    and with a symbolic one (3, 37)."""
    cm = compiled
    art = cm.artifact
    want = {T: art([_x(T, T).numpy()])[0] for T in (4, 3, 37)}
    ab.build_device_library(cm.stats.outdir)
    monkeypatch.setattr(ab, "npu_device_type", lambda: "cpu")   # the ACL stand-in: device memory is host memory

    def no_host_path(*a, **k):
        raise AssertionError("device tensors went through the Python executor (a host round trip)")
    monkeypatch.setattr(ab.AscendArtifact, "__call__", no_host_path)
    for T, w in want.items():
        x = _x(T, T)
        y = cm(x)
        assert isinstance(y, torch.Tensor) and y.device == x.device and y.dtype == torch.float32
        assert tuple(y.shape) == w.shape
        np.testing.assert_array_equal(y.numpy(), w)
    # a shape no compile-time plan covers (no token) is refused with the reason, not run through the host
    with pytest.raises(UserInputError, match="no compile-time launch plan covers device inputs f32:0x64"):
        cm(torch.zeros((0, 64)))


def test_device_tensors_need_the_device_library(tmp_path, monkeypatch):
    """NPU tensors but no libmoec_run.so in the compiled folder (the CMake project not built): a clear error."""
    from moec.driver import CompileOptions, compile_onnx
    out = str(tmp_path / "o")
    r = compile_onnx(EXAMPLE, out, CompileOptions(target="ascend", symbol_sizes=(1,)))
    monkeypatch.setattr(ab, "npu_device_type", lambda: "cpu")
    with pytest.raises(UserInputError, match="libmoec_run.so: build the CMake project"):
        r.artifact.call_torch([_x(4)])


def test_without_torch_npu_cpu_tensors_run_on_the_emulator_and_others_are_refused(compiled, monkeypatch):
    """No NPU (the query answers None): CPU tensors run on the emulator and come back as CPU tensors; tensors on
    another device are refused with one line naming torch_npu."""
    monkeypatch.setattr(ab, "npu_device_type", lambda: None)
    cm = compiled
    x = _x(5, 1)
    y = cm(x)
    assert isinstance(y, torch.Tensor) and y.device.type == "cpu"
    np.testing.assert_array_equal(y.numpy(), cm.artifact([x.numpy()])[0])
    with pytest.raises(UserInputError, match="inputs on device meta: torch_npu is not importable"):
        cm.artifact.call_torch([torch.empty((4, 64), device="meta")])


@pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None, reason="torch_npu is installed here")
def test_device_query_without_torch_npu():
    """The real query, here (torch_npu not installed): no NPU tensor device; report.json says so."""
    ab.npu_device_type.cache_clear()
    assert ab.npu_device_type() is None
    dev = ab.device_support()
    assert dev["torch_npu"] is False and "NPU tensors need torch_npu" in dev["tensors"]
