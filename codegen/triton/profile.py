"""Timing of the Triton MoE layer, whole and per stage, for the GPU bench and the tile search.

The device queries live here, one class per device: :class:`CudaHost` (a real GPU: CUDA events,
``torch.cuda.mem_get_info``, ...) and :class:`InterpreterHost` (the CPU under Triton's interpreter, the
bench's ``--smoke`` run and the tests: wall-clock events; its times mean nothing, they only show that
the code that fills the fields runs).  Nothing here imports triton: the caller has selected the device.

Per-stage times: :class:`StageTimer` is installed as ``runtime.PROFILE``; the runtime calls
``mark(label)`` after the launches of each stage (align, gemm1, gemm2, combine; the bench marks the
routing), which records an event (on a GPU nothing waits); after a sync each interval between two
events is added to the label of the event that ends it.  Launch overhead between stages is part of
the following stage, as it is of the layer.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, List

STAGES = ("routing", "align", "gemm1", "gemm2", "combine")


class CudaHost:
    """The CUDA device queries the bench and the tile search make (tests fake torch.cuda, not these)."""
    device = "cuda"

    @staticmethod
    def available() -> bool:
        import torch
        return torch.cuda.is_available()

    @staticmethod
    def name() -> str:
        import torch
        return torch.cuda.get_device_name()

    @staticmethod
    def free_bytes() -> int:
        """Free device memory in bytes (what the dense peer's activations must fit in)."""
        import torch
        free, _total = torch.cuda.mem_get_info()
        return int(free)

    @staticmethod
    def sync() -> None:
        import torch
        torch.cuda.synchronize()

    @staticmethod
    def event():
        import torch
        return torch.cuda.Event(enable_timing=True)

    @staticmethod
    def empty_cache() -> None:
        import torch
        torch.cuda.empty_cache()


class WallEvent:
    """A CUDA-event look-alike on the host clock (record, elapsed_time in ms)."""

    def __init__(self):
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "WallEvent") -> float:
        return (end.t - self.t) * 1e3


class InterpreterHost:
    """The CPU under Triton's interpreter: the same bench code, wall-clock times (meaningless)."""
    device = "cpu"

    @staticmethod
    def available() -> bool:
        return os.environ.get("TRITON_INTERPRET") == "1"

    @staticmethod
    def name() -> str:
        return "interpreter (CPU, TRITON_INTERPRET=1: times are not GPU times)"

    @staticmethod
    def free_bytes() -> int:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))

    @staticmethod
    def sync() -> None:
        pass

    @staticmethod
    def event():
        return WallEvent()

    @staticmethod
    def empty_cache() -> None:
        pass


def host_for(device: str):
    return CudaHost if device == "cuda" else InterpreterHost


def time_fn(fn: Callable, host, reps: int = 20, warmup: int = 3) -> float:
    """Median seconds of fn() over reps runs, each between two events (after warmup runs)."""
    for _ in range(warmup):
        fn()
    host.sync()
    ts = []
    for _ in range(reps):
        a, b = host.event(), host.event()
        a.record()
        fn()
        b.record()
        host.sync()
        ts.append(a.elapsed_time(b) / 1e3)
    return statistics.median(ts)


class StageTimer:
    """runtime.PROFILE during one run: events at each mark, summed per label after a sync."""

    def __init__(self, host):
        self.host = host
        self.events: List[tuple] = []

    def start(self) -> None:
        e = self.host.event()
        e.record()
        self.events = [("start", e)]

    def mark(self, label: str) -> None:
        e = self.host.event()
        e.record()
        self.events.append((label, e))

    def stages_ms(self) -> Dict[str, float]:
        """After host.sync(): ms per label (intervals ending at that label's marks, summed)."""
        out: Dict[str, float] = {}
        for (_, a), (label, b) in zip(self.events, self.events[1:]):
            out[label] = out.get(label, 0.0) + a.elapsed_time(b)
        return out


def time_stages(fn: Callable, host, reps: int = 10, warmup: int = 1) -> Dict[str, float]:
    """Median ms per stage of fn() (which runs the runtime's MoE calls; fn may mark stages of its own),
    the runtime's marks recorded by a StageTimer installed as runtime.PROFILE for these runs only."""
    from moec.codegen.triton import runtime as rt
    for _ in range(warmup):
        fn()
    host.sync()
    timer = StageTimer(host)
    runs: List[Dict[str, float]] = []
    prev = rt.PROFILE
    rt.PROFILE = timer
    try:
        for _ in range(reps):
            timer.start()
            fn()
            host.sync()
            runs.append(timer.stages_ms())
    finally:
        rt.PROFILE = prev
    labels = sorted({k for r in runs for k in r}, key=lambda s: (STAGES.index(s) if s in STAGES else 99, s))
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in labels}


def mark(label: str) -> None:
    """A stage boundary of the caller's own (the bench's routing), when a timer is installed."""
    from moec.codegen.triton import runtime as rt
    if rt.PROFILE is not None:
        rt.PROFILE.mark(label)
