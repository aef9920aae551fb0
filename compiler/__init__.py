"""moec: a compiler for Mixture-of-Experts models.

ONNX (and PyTorch) models in; C for CPUs, Triton for NVIDIA GPUs and AscendC
for Ascend NPUs out, every build verifiable against onnxruntime.
"""
from moec._version import __version__

__all__ = ["__version__", "compile", "jit", "generate"]


def compile(*args, **kwargs):  # noqa: A001 - the public name mirrors torch.compile
    from moec.jit_api import compile as _compile
    return _compile(*args, **kwargs)


def jit(*args, **kwargs):
    from moec.jit_api import jit as _jit
    return _jit(*args, **kwargs)


def generate(*args, **kwargs):
    from moec.decode import generate as _generate
    return _generate(*args, **kwargs)


def _doc():
    from moec.jit_api import compile as c, jit as j
    compile.__doc__, jit.__doc__ = c.__doc__, j.__doc__
    compile.__annotations__, jit.__annotations__ = c.__annotations__, j.__annotations__
    from moec.decode import generate as g
    generate.__doc__ = g.__doc__


try:  # help(moec.compile) shows the real signature and docstring
    import inspect as _inspect

    from moec import jit_api as _jitmod  # noqa: F401  (cheap: no torch import at module level)
    _doc()
    compile.__signature__ = _inspect.signature(_jitmod.compile)
    jit.__signature__ = _inspect.signature(_jitmod.jit)
except Exception:  # noqa: BLE001
    pass
