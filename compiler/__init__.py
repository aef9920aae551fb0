"""moec: a compiler for Mixture-of-Experts models.

ONNX (and PyTorch) models in; C for CPUs, Triton for NVIDIA GPUs and AscendC
for Ascend NPUs out, every build verifiable against onnxruntime.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]
