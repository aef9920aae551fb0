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
