"""ONNX converters: elementwise ops."""
from __future__ import annotations

from .onnx_import import converter


@converter("Add", since=7)
def _add(ctx, node, ins, attrs):
    return [ctx.emit1("moec.add", [ins[0], ins[1]])]


@converter("Relu", since=6)
def _relu(ctx, node, ins, attrs):
    return [ctx.emit1("moec.relu", [ins[0]])]


