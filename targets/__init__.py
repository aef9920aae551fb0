"""Target descriptions (data) and how each target's artifact is built and run."""
from .description import TargetDesc, ascend_target, cpu_target, generic_cpu, host_cpu, target_for, triton_target

__all__ = ["TargetDesc", "ascend_target", "cpu_target", "generic_cpu", "host_cpu", "target_for", "triton_target"]
