"""benchmarks/bench_dense.py's settle step (issue 17): each timed call starts only when no other thread of the
process is runnable, so one engine's leftover threads (onnxruntime's spinning pool) do not share the cores with the
next engine's call.  The busy thread here works outside the GIL, as a native pool thread does."""
import os
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_dense  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread states from /proc")


def _busy(seconds, started, done):
    a = np.ones(1 << 20, np.float32)
    out = np.empty_like(a)
    started.set()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(8):
            np.multiply(a, 1.0001, out=out)  # (numpy releases the GIL: the thread stays runnable)
    done.set()


def test_settle_waits_for_a_busy_thread_and_reports_its_cpu():
    started, done = threading.Event(), threading.Event()
    th = threading.Thread(target=_busy, args=(0.3, started, done), daemon=True)
    th.start()
    started.wait()
    assert bench_dense._other_threads_running() >= 1
    t0 = time.perf_counter()
    cpu = bench_dense.settle(10.0)
    assert done.is_set()  # it returned only after the busy thread stopped
    assert time.perf_counter() - t0 >= 0.2 and cpu > 0.05
    th.join()


def test_settle_returns_at_once_beside_parked_threads():
    stop = threading.Event()
    ths = [threading.Thread(target=stop.wait, daemon=True) for _ in range(3)]
    for t in ths:
        t.start()
    try:
        t0 = time.perf_counter()
        bench_dense.settle(10.0)
        assert time.perf_counter() - t0 < 2.0  # 5 quiet polls of 2 ms; generous for a loaded host
    finally:
        stop.set()
