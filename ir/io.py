"""Saving and loading a module: ``NAME.mlir`` plus its weights beside it."""
from __future__ import annotations

import os

from .core import Module
from .parser import parse_module
from .printer import print_module
from .weights import WeightStore


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
    b, j = weight_paths(path)
    ws = WeightStore.load(b, j) if os.path.exists(j) else WeightStore()
    with open(path) as f:
        return parse_module(f.read(), ws, source=path)
