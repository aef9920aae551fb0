"""Pass infrastructure: a pass is a small object with a kebab-case name and a run() that
says whether it changed the module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..ir import Module


@dataclass
class Pass:
    name: ClassVar[str] = "pass"

    def run(self, m: Module) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


def run_to_fixed_point(m: Module, passes, max_iters: int = 10) -> int:
    """Run the passes in order until none changes anything; return the iteration count."""
    for i in range(max_iters):
        changed = False
        for p in passes:
            changed |= bool(p.run(m))
        if not changed:
            return i + 1
    return max_iters
