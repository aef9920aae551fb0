"""All passes by name (for tests, tools and `--dump-ir` listings).

A pass registers itself with the ``@register_pass`` decorator (passes/base.py) on its class; this module
imports every module of the package once, so a new pass is listed by writing its module alone.
``tests/test_golden_passes.py`` checks that every Pass subclass in the package is registered and has a
golden test."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Dict, Type

from moec.passes.base import REGISTERED, Pass


def _load() -> Dict[str, Type[Pass]]:
    pkg = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules(importlib.import_module(pkg).__path__):
        if info.name != "registry":
            importlib.import_module(f"{pkg}.{info.name}")
    return dict(sorted(REGISTERED.items()))


PASSES: Dict[str, Type[Pass]] = _load()


def make_pass(name: str, **options) -> Pass:
    if name not in PASSES:
        raise KeyError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
    return PASSES[name](**options)
