"""The moec IR: types, ops, modules, text form, verifier and reference interpreter.

This package never imports onnx or torch.
"""
from . import ops as _ops  # noqa: F401  (registers the op set)
from .core import Function, IRError, Module, Operation, ResourceRef, Value
from .interpreter import InterpreterError, run
from .opdef import OPS, Attr, build, op
from .parser import IRParseError, parse_module, parse_type
from .printer import print_module
from .types import DType, TensorType
from .verifier import verify_module
from .weights import WeightStore
from .io import load_module, save_module

__all__ = [
    "Function", "IRError", "Module", "Operation", "ResourceRef", "Value", "InterpreterError", "run",
    "OPS", "Attr", "build", "op", "IRParseError", "parse_module", "parse_type", "print_module", "DType", "TensorType",
    "verify_module", "WeightStore", "load_module", "save_module",
]
