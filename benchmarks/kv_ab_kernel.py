"""A/B of the decode attention kernel (moec.kv_step_attention) between two moec versions, fair to each: every
artifact reads its own inputs (no warm-up by the other's calls) and the order is shuffled per round.

Build each version's artifact with that version's moec (its own venv / worktree), the benchmark geometry
(8 query heads, 8 kv heads, head 128, capacity ctx + 32):

    python -c "import sys; sys.path.insert(0, 'tests'); from test_decode_attention import _step_module; \
from moec.driver import build_module; build_module(_step_module(1, 8, 8, 128, 128, 1056, 128 ** -0.5), 'OUT', threads=2)"

then time them in one process (layout ``t``: the K cache [B, Hkv, D, M] of moec before the row layout, ``rows``:
[B, Hkv, M, D], ``rows16``: rows of an f16 cache, built from ``_step_module`` of tests/test_kv_f16.py, whose
result is compared with the f32 one within the rounding's bound and whose GB/s count 2-byte elements):

    python benchmarks/kv_ab_kernel.py THREADS CTX CALLS base:DIR_A:t new:DIR_B:rows

BLOCK=n in the environment: n calls in a row per artifact, the first dropped (the cache warm in the caches);
BLOCK=1 (default): one call each per round, every artifact's inputs evicted by the others' (from memory).
COLD=1: a 256 MB array read before each call."""
import os
import sys
import time

import numpy as np
from moec.targets.cpu_backend import CpuArtifact
# argv: threads ctx calls name:dir:layout ...
th, ctx, calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
arts = []
for spec in sys.argv[4:]:
    name, d, lay = spec.split(":")
    arts.append((name, CpuArtifact(d, threads=th), lay))
M = ctx + 32
r = np.random.default_rng(0)
q = r.standard_normal((1, 8, 1, 128)).astype(np.float32)
kr = r.standard_normal((1, 8, M, 128)).astype(np.float32)
vc = r.standard_normal((1, 8, M, 128)).astype(np.float32)
kt = np.ascontiguousarray(kr.transpose(0, 1, 3, 2))
kn = r.standard_normal((1, 8, 1, 128)).astype(np.float32)
vn = r.standard_normal((1, 8, 1, 128)).astype(np.float32)
pos = np.array([ctx], np.int64)
flush = np.ones(64 << 20, np.float32) if os.environ.get("COLD") else None
xs = {"rows": [q, kr, vc, kn, vn, pos], "t": [q, kt, vc, kn, vn, pos],
      "rows16": [q, kr.astype(np.float16), vc.astype(np.float16), kn, vn, pos]}
outs = [a(xs[l])[0] for _, a, l in arts]
for o, (_, _, l) in zip(outs[1:], arts[1:]):  # (an f16 cache: within its rounding's effect, ~1e-2 here)
    np.testing.assert_allclose(o, outs[0], rtol=1e-4, atol=5e-2 if "rows16" in (l, arts[0][2]) else 1e-5)
ts = [[] for _ in arts]
own = [[np.array(v, copy=True) for v in xs[l]] for _, _, l in arts]  # (each its own inputs: no warm-up by another)
rng = np.random.default_rng(1)
blk = int(os.environ.get("BLOCK", "1"))  # (BLOCK=n: n calls in a row per variant, the first dropped: warm)
for _ in range(calls // blk):
  for i in rng.permutation(len(arts)):
    _, a, l = arts[i]
    x = own[i]
    for c in range(blk):
        if flush is not None:
            flush.sum()
        t0 = time.perf_counter(); a(x); t1 = time.perf_counter()
        if blk == 1 or c > 0:
            ts[i].append(t1 - t0)
base = np.median(ts[0])
for (n, _, l), t in zip(arts, ts):
    by = 2 * 8 * ctx * 128 * (2 if l == "rows16" else 4)  # (the K and V rows read)
    md = np.median(t)
    print(f"th={th} ctx={ctx} {n}: {md*1e3:.4f} ms  {by/md/1e9:.1f} GB/s  ratio vs first {md/base:.3f}")
