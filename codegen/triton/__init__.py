"""Triton target: @triton.jit kernels for the MoE ops and the ordinary ops, plus a generated launcher.

Without a CUDA GPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1, torch on the
CPU): that variable must be set before triton is first imported, which :func:`ensure_triton` does.
"""
from __future__ import annotations

import os


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def ensure_triton():
    """Import triton (interpreter mode when there is no GPU); return (triton, device string)."""
    import sys
    if os.environ.get("MOEC_TRITON_AOT") == "1":  # compile-only (moec.codegen.triton.aot): real JIT functions,
        import triton  # noqa: F811                 # no interpreter, nothing launched
        return triton, "aot"
    gpu = gpu_available()
    if not gpu:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise ImportError("no CUDA GPU, and triton was imported before moec could select its interpreter: "
                              "set TRITON_INTERPRET=1 in the environment (or import moec's triton target first)")
        os.environ.setdefault("TRITON_INTERPRET", "1")
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise ImportError("the triton target needs torch and triton: pip install 'moec[triton]'") from e
    return triton, ("cuda" if gpu else "cpu")
