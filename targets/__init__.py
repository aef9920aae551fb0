"""Target descriptions (data) and how each target's artifact is built and run."""
from .description import TargetDesc, cpu_target, generic_cpu, host_cpu

__all__ = ["TargetDesc", "cpu_target", "generic_cpu", "host_cpu"]
