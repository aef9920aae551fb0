"""The MoE model zoo: moec's tests and `moec conformance` run it.

Every family of shared/design/moe-routing.md as a PyTorch module (moec/zoo/modules.py) exported
with both torch.onnx exporters, plus graphs built with onnx.helper (moec/zoo/graphs.py) and
com.microsoft.MoE models.  Exports are cached on disk, keyed by a hash of the zoo's source.

    ZOO: list of ZooEntry(name, family, shape, exporter, build, torch_module, expect)
    zoo_inputs(entry, T, kind)   kind: "random", "identical" (every token the same), "single"
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
D = 64


def _source_hash() -> str:
    h = hashlib.sha256()
    for f in sorted(os.listdir(HERE)):
        if f.endswith(".py"):
            with open(os.path.join(HERE, f), "rb") as fh:
                h.update(fh.read())
    try:
        import torch
        h.update(torch.__version__.encode())
    except ImportError:
        pass
    return h.hexdigest()[:16]


def cache_dir() -> str:
    base = os.environ.get("MOEC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "moec")
    d = os.path.join(base, "zoo", _source_hash())
    os.makedirs(d, exist_ok=True)
    return d


@dataclass
class ZooEntry:
    name: str
    family: str
    shape: str            # torch_loop, torch_fused3d, torch_dense, onnx_unrolled, onnx_gathered_bmm, onnx_dense, ort_moe
    exporter: Optional[str]
    builder: Callable
    module_cls: Optional[type] = None
    expect: Dict = field(default_factory=dict)

    def build(self):
        """The ONNX ModelProto (exported once and cached)."""
        import onnx
        path = os.path.join(cache_dir(), f"{self.name}.onnx")
        if not os.path.exists(path):
            model = self.builder()
            tmp = path + f".tmp{os.getpid()}"
            onnx.save(model, tmp)
            os.replace(tmp, path)
        return onnx.load(path)

    def torch_module(self):
        return make_module(self.module_cls) if self.module_cls is not None else None


def make_module(cls, seed: int = 0):
    """A module with seeded weights whose router separates its top-k (no near-ties on the
    zoo inputs), so routing is well defined for every oracle."""
    import torch
    for s in range(seed, seed + 50):
        torch.manual_seed(s)
        m = cls().eval()
        for name, p in m.named_parameters():
            if name.split(".")[0] in ("gate", "router") and name.endswith("weight"):
                with torch.no_grad():
                    p.mul_(4.0)
        if _no_ties(m):
            return m
    raise RuntimeError(f"could not seed {cls.__name__} without top-k near-ties")


def _no_ties(m) -> bool:
    import torch
    lin = getattr(m, "gate", None) or getattr(m, "router", None)
    k = getattr(m, "k", 1)
    for T, kind in ((9, "random"), (1, "single"), (6, "identical")):
        x = torch.from_numpy(make_inputs(T, kind))
        with torch.no_grad():
            logits = lin(x).float()
        scores = torch.sort(logits, dim=-1, descending=True).values
        if scores.shape[-1] > k and torch.min(scores[:, k - 1] - scores[:, k]) < 1e-3:
            return False
        if torch.min(scores[:, :-1] - scores[:, 1:]) < 1e-4:  # any tie also upsets group selection
            return False
    return True


def make_inputs(T: int, kind: str = "random", seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "identical":
        return np.repeat(rng.standard_normal((1, D)), T, axis=0).astype(np.float32)
    return rng.standard_normal((T, D)).astype(np.float32)


def zoo_inputs(entry: ZooEntry, T: int, kind: str = "random") -> Dict[str, np.ndarray]:
    if kind == "single":
        T = 1
    x = make_inputs(T, kind)
    if entry.shape == "ort_moe":
        from moec.zoo.graphs import ort_router_input
        return {"x": x, "r": ort_router_input(x, entry)}
    return {"x": x}


def _export(cls, exporter: str):
    import torch

    def build():
        import onnx
        m = make_module(cls)
        x = torch.from_numpy(make_inputs(5))
        path = os.path.join(cache_dir(), f"_export_{cls.__name__}_{exporter}_{os.getpid()}.onnx")
        if exporter == "torchscript":
            torch.onnx.export(m, (x,), path, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "T"}, "y": {0: "T"}})
        else:
            torch.onnx.export(m, (x,), path, dynamo=True, opset_version=18, input_names=["x"], output_names=["y"],
                              dynamic_shapes={"x": {0: torch.export.Dim("T", min=1, max=4096)}}, verbose=False)
        model = onnx.load(path)
        for f in os.listdir(os.path.dirname(path)):
            if f.startswith(os.path.basename(path)):
                os.remove(os.path.join(os.path.dirname(path), f))
        model.ir_version = min(model.ir_version, 10)
        return model
    return build


def _torch_entries() -> List[ZooEntry]:
    from moec.zoo import modules as M
    out = []
    for cls in M.ALL:
        shape = {"MixtralFused": "torch_fused3d", "MixtralDense": "torch_dense"}.get(cls.__name__, "torch_loop")
        for exporter in ("torchscript", "dynamo"):
            out.append(ZooEntry(f"{cls.__name__.lower()}_{exporter}", cls.family, shape, exporter,
                                _export(cls, exporter), cls))
    return out


def _graph_entries() -> List[ZooEntry]:
    from moec.zoo.graphs import GRAPHS
    return [ZooEntry(name, fam, shape, None, fn) for name, (fam, shape, fn) in GRAPHS.items()]


def all_entries() -> List[ZooEntry]:
    entries = _graph_entries()
    try:
        import torch  # noqa: F401
        entries = _torch_entries() + entries
    except ImportError:
        pass
    return entries


ZOO = all_entries()
