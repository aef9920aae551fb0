"""CUDA-graph capture of a whole Triton MoE layer (or a compiled model's launcher) for decode.

A decode step launches ~10 small kernels (router GEMV, route, align, two grouped GEMMs, combine), each
a few microseconds of work: the CPU launch overhead is a large part of the step.  The MoE path issues no
host synchronisation (tests/test_triton.py: test_moe_path_has_no_host_synchronisation), so the whole
sequence can be captured once per input signature (shapes, dtypes) and replayed as one graph.

:class:`GraphRunner` wraps ``fn(inputs) -> outputs`` (lists of tensors): the first call with a new
signature runs ``fn`` eagerly on a side stream (Triton compiles its kernels there, outside the capture),
then captures it into a graph with static input buffers; later calls copy the inputs into those buffers,
replay, and return clones of the static outputs.  Needs a CUDA device: :func:`unavailable` says why not
(the interpreter, a CPU tensor, host ops in the launcher).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence


def unavailable(device: str, host_ops: int = 0) -> Optional[str]:
    """Why a CUDA graph cannot be captured here, or None."""
    if device != "cuda":
        return f"CUDA graphs need a CUDA GPU (the device is {device!r}: Triton's interpreter runs on the CPU)"
    if host_ops:
        return f"the launcher runs {host_ops} op(s) on the host (numpy): a graph cannot capture them"
    return None


class GraphRunner:
    """fn captured per input signature and replayed (module docstring).  max_graphs bounds the graphs kept
    (each holds its static inputs, outputs and the memory pool of its intermediates): past it, calls run
    eagerly."""

    def __init__(self, fn: Callable[[List], List], max_graphs: int = 8):
        self.fn = fn
        self.max_graphs = max_graphs
        self.graphs: Dict[tuple, tuple] = {}
        self.replays = 0
        self.eager_calls = 0

    @staticmethod
    def signature(inputs: Sequence) -> tuple:
        return tuple((tuple(x.shape), x.dtype, x.device) for x in inputs)

    def _capture(self, inputs: Sequence) -> tuple:
        import torch
        static_in = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: Triton's JIT compiles and autotunes outside the capture
            self.fn(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return graph, static_in, list(static_out)

    def __call__(self, inputs: Sequence) -> List:
        key = self.signature(inputs)
        hit = self.graphs.get(key)
        if hit is None:
            if len(self.graphs) >= self.max_graphs:
                self.eager_calls += 1
                return list(self.fn(list(inputs)))
            hit = self.graphs[key] = self._capture(inputs)
        graph, static_in, static_out = hit
        for dst, src in zip(static_in, inputs):
            dst.copy_(src)
        graph.replay()
        self.replays += 1
        return [o.clone() for o in static_out]
