"""Pass infrastructure: a pass is a small object with a kebab-case name and a run() that
says whether it changed the module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Type

from moec.ir import Module


@dataclass
class Pass:
    name: ClassVar[str] = "pass"

    def run(self, m: Module) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


REGISTERED: Dict[str, Type[Pass]] = {}


def register_pass(cls: Type[Pass]) -> Type[Pass]:
    """Class decorator: put a pass in the registry (``moec.passes.registry.PASSES``) under its name."""
    if not (isinstance(cls, type) and issubclass(cls, Pass)) or cls.name == Pass.name:
        raise TypeError(f"register_pass: {cls!r} is not a Pass subclass with its own name")
    old = REGISTERED.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"two passes named '{cls.name}': {old.__module__}.{old.__qualname__} and "
                         f"{cls.__module__}.{cls.__qualname__}")
    REGISTERED[cls.name] = cls
    return cls


def run_to_fixed_point(m: Module, passes, max_iters: int = 10) -> int:
    """Run the passes in order until none changes anything; return the iteration count."""
    for i in range(max_iters):
        changed = False
        for p in passes:
            changed |= bool(p.run(m))
        if not changed:
            return i + 1
    return max_iters
