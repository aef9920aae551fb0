"""Names kept for code written before the registry moved to ``moec.targets`` (one registry: there)."""
from moec.targets import backend as get_backend  # noqa: F401
from moec.targets.cpu_backend import CpuArtifact, CpuBackend  # noqa: F401
