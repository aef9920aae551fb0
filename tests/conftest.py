import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Triton reads TRITON_INTERPRET when it is first imported, and PyTorch's exporters may import it
# early: without a CUDA GPU, select the interpreter before anything else runs.
try:
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:
    pass

# The bundled example model is generated (examples/*.onnx is not committed): build it once if a
# clean checkout runs the tests before the README's first command.
_EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "mixtral_like.onnx")
if not os.path.exists(_EXAMPLE):
    import subprocess

    subprocess.run([sys.executable, os.path.join(os.path.dirname(_EXAMPLE), "build_mixtral_like.py")], check=True)
