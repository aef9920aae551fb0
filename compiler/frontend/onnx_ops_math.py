"""ONNX converters: matrix products, reductions, normalisations."""
from __future__ import annotations

from .onnx_import import converter


@converter("MatMul", since=1)
def _matmul(ctx, node, ins, attrs):
    return [ctx.emit1("moec.matmul", [ins[0], ins[1]])]
