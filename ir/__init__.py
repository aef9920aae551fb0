"""The moec IR: types, ops, modules, text form, verifier and reference interpreter.

This package never imports onnx or torch.
"""
from moec.ir import ops as _ops  # noqa: F401  (registers the op set)
from moec.ir.core import Function, IRError, Module, Operation, ResourceRef, Value
from moec.ir.interpreter import InterpreterError, run
from moec.ir.opdef import OPS, Attr, build, op
from moec.ir.parser import IRParseError, parse_module, parse_type
from moec.ir.printer import print_module
from moec.ir.types import DType, TensorType
from moec.ir.verifier import verify_module
from moec.ir.weights import WeightStore
from moec.ir.io import load_module, save_module

__all__ = [
    "Function", "IRError", "Module", "Operation", "ResourceRef", "Value", "InterpreterError", "run",
    "OPS", "Attr", "build", "op", "IRParseError", "parse_module", "parse_type", "print_module", "DType", "TensorType",
    "verify_module", "WeightStore", "load_module", "save_module",
]
