"""Saving and loading a module: ``NAME.mlir`` plus its weights beside it."""
from __future__ import annotations

import os

from moec.ir.core import Module
from moec.ir.parser import IRParseError, parse_module, printable
from moec.ir.printer import print_module
from moec.ir.weights import WeightStore


def weight_paths(mlir_path: str):
    stem = mlir_path[:-5] if mlir_path.endswith(".mlir") else mlir_path
    return stem + ".weights.bin", stem + ".weights.json"


def save_module(m: Module, path: str) -> None:
    text = print_module(m)
    b, j = weight_paths(path)
    m.weights.save(b, j)
    with open(path, "w") as f:
        f.write(text)


def load_module(path: str) -> Module:
    """Load ``path`` and its weights; damaged or hostile contents raise IRParseError (never another error)."""
    b, j = weight_paths(path)
    try:
        ws = WeightStore.load(b, j) if os.path.exists(j) else WeightStore()
    except Exception as e:  # a damaged index or weights file
        raise IRParseError(f"{printable(path, 200)}: cannot load its weights: {type(e).__name__}: "
                           f"{printable(str(e), 200)}") from None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise IRParseError(f"cannot read IR file {printable(path, 200)}: {e.strerror or e}") from None
    return parse_module(data, ws, source=path)
